//! The event endpoints end to end over the in-memory store: the global feed
//! (`GET /v1/events`) and the consumed cart and order CloudEvents (`POST /v1/events`).

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use stock_domain::service::FEED_DELAY_MS;

mod common;
use common::*;

impl Harness {
    fn stock(&self, id: &str, quantity: u64) {
        let req = request(
            Method::PUT,
            &format!("/v1/stock/{id}"),
            Some(ADMIN),
            json!({"quantity": quantity, "low_stock_threshold": 1}),
        );
        let response = stock_http::update_stock(&self.svc, &req, &self.admin);
        assert_eq!(response.status(), StatusCode::OK);
    }

    fn reserve(&self, id: &str, quantity: u64) {
        let req = request(
            Method::POST,
            "/v1/reservations",
            Some(SERVICE),
            json!({"product_id": id, "quantity": quantity}),
        );
        let response = stock_http::reserve_stock(&self.svc, &req, &self.service);
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// `(available, reserved, on_hand)` of a product.
    fn levels(&self, id: &str) -> (u64, u64, u64) {
        let req = request(Method::GET, &format!("/v1/stock/{id}"), None, Value::Null);
        let s = body(&stock_http::get_stock(&self.svc, &req));
        let n = |f: &str| s[f].as_u64().unwrap();
        (
            n("available_quantity"),
            n("reserved_quantity"),
            n("on_hand"),
        )
    }

    fn feed(&self, query: &str) -> Response<Vec<u8>> {
        let req = request(
            Method::GET,
            &format!("/v1/events{query}"),
            None,
            Value::Null,
        );
        stock_http::events_feed(&self.svc, &req)
    }

    fn history_ids(&self, id: &str) -> Vec<String> {
        let req = request(
            Method::GET,
            &format!("/v1/stock/{id}/history?limit=500"),
            None,
            Value::Null,
        );
        let h = body(&stock_http::stock_history(&self.svc, &req));
        h["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn post_event(&self, event: &Value) -> Response<Vec<u8>> {
        self.post_raw(&event.to_string(), "application/cloudevents+json", SERVICE)
    }

    fn post_raw(&self, body: &str, content_type: &str, token: &str) -> Response<Vec<u8>> {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/events")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, content_type)
            .body(body.as_bytes().to_vec())
            .unwrap();
        stock_http::ingest_event(&self.svc, &req, &self.service)
    }
}

fn cloud_event(id: &str, kind: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/cart-service",
        "type": kind,
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn added(id: &str, cart: &str, product: &str, quantity: u64) -> Value {
    cloud_event(
        id,
        "CartItemAdded",
        json!({"cart_id": cart, "product_id": product, "quantity": quantity}),
    )
}

#[test]
fn the_feed_serves_every_final_entry_once_per_partition_and_in_the_whole_feed_with_a_cursor() {
    let h = Harness::new();
    h.stock("a", 10);
    h.clock.advance(5);
    h.stock("b", 10);
    h.clock.advance(5);
    h.reserve("a", 2);
    h.reserve("b", 9);
    // Nothing is served before it is final.
    let early = body(&h.feed(""));
    assert_eq!(early["events"], json!([]));
    assert_eq!(early["partitions"], 16);
    assert!(early.get("partition").is_none());
    h.clock.advance(FEED_DELAY_MS);

    // Pages with `next_after` until an empty page, which keeps the cursor.
    let drain = |base: &str| -> Vec<Value> {
        let mut served = Vec::new();
        let mut query = base.to_owned();
        loop {
            let response = h.feed(&query);
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let page = body(&response);
            let events = page["events"].as_array().unwrap().clone();
            assert!(events.len() <= 2);
            let cursor = page["next_after"].as_str().unwrap().to_owned();
            if events.is_empty() {
                assert!(
                    query.ends_with(&cursor) || !query.contains("after"),
                    "{query} vs {cursor}"
                );
                return served;
            }
            served.extend(events);
            query = format!("{base}&after={cursor}");
        }
    };
    let served = drain("?limit=2");
    let ids: Vec<&str> = served.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut by_partition = Vec::new();
    for partition in 0..16 {
        let page = body(&h.feed(&format!("?partition={partition}&limit=1")));
        assert_eq!(page["partition"], partition);
        by_partition.extend(drain(&format!("?partition={partition}&limit=2")));
    }
    assert_eq!(by_partition.len(), served.len());
    for product in ["a", "b"] {
        for events in [&served, &by_partition] {
            let of_product: Vec<String> = events
                .iter()
                .filter(|e| e["subject"] == product)
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(of_product, h.history_ids(product), "{ids:?}");
        }
    }
    // b went low (threshold 1 with 1 left): its alert is in the feed too.
    assert!(ids.contains(&"b:3"), "{ids:?}");
    assert_eq!(served.len(), 5, "{ids:?}");
    for e in &served {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["partitionkey"], e["subject"]);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn bad_feed_queries_are_problems() {
    let h = Harness::new();
    for (query, code) in [
        ("?after=nope", "invalid_cursor"),
        ("?after=", "invalid_cursor"),
        ("?after=1.2.bad%20id", "invalid_cursor"),
        ("?after=0.0", "invalid_cursor"),
        ("?partition=2&after=0.0-0.0", "invalid_cursor"),
        ("?partition=2&after=1.0", "invalid_cursor"),
        ("?partition=16", "invalid_partition"),
        ("?partition=-1", "invalid_partition"),
        ("?partition=x", "invalid_partition"),
        ("?partition=", "invalid_partition"),
        ("?limit=0", "invalid_query"),
        ("?limit=501", "invalid_query"),
        ("?since=1", "invalid_query"),
    ] {
        let response = h.feed(query);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(problem_code(&response), code, "{query}");
    }
    assert_eq!(
        h.feed("?partition=2&after=0.0&limit=500").status(),
        StatusCode::OK
    );
    let all = vec!["0.0"; 16].join("-");
    assert_eq!(h.feed(&format!("?after={all}")).status(), StatusCode::OK);
}

#[test]
fn each_cart_and_order_event_moves_the_stock_it_should() {
    let h = Harness::new();
    h.stock("p", 10);
    let response = h.post_event(&added("e1", "c1", "p", 3));
    assert_eq!(response.status(), StatusCode::OK);
    let got = body(&response);
    assert_eq!(got["duplicate"], false);
    assert_eq!(got["type"], "CartItemAdded");
    assert_eq!(got["id"], "e1");
    assert_eq!(got["source"], "/cart-service");
    assert_eq!(got["reserved"][0]["status"], "PENDING");
    assert_eq!(got["reserved"][0]["lines"][0]["quantity"], 3);
    assert_eq!(h.levels("p"), (7, 3, 10));

    let updated = cloud_event(
        "e2",
        "com.acme.cart.CartItemUpdated",
        json!({"cart_id": "c1", "product_id": "p", "quantity": 5}),
    );
    let got = body(&h.post_event(&updated));
    assert_eq!(got["type"], "com.acme.cart.CartItemUpdated");
    assert_eq!(got["released"].as_array().unwrap().len(), 1);
    assert_eq!(h.levels("p"), (5, 5, 10));

    let removed = cloud_event(
        "e3",
        "CartItemRemoved",
        json!({"cart_id": "c1", "product_id": "p"}),
    );
    assert_eq!(h.post_event(&removed).status(), StatusCode::OK);
    assert_eq!(h.levels("p"), (10, 0, 10));

    assert_eq!(
        h.post_event(&added("e4", "c2", "p", 4)).status(),
        StatusCode::OK
    );
    let abandoned = cloud_event("e5", "CartAbandoned", json!({"cart_id": "c2"}));
    let got = body(&h.post_event(&abandoned));
    assert_eq!(got["released"][0]["status"], "RELEASED");
    assert_eq!(h.levels("p"), (10, 0, 10));

    assert_eq!(
        h.post_event(&added("e6", "c3", "p", 2)).status(),
        StatusCode::OK
    );
    let ordered = cloud_event(
        "e7",
        "OrderConfirmed",
        json!({"cart_id": "c3", "order_id": "o-1"}),
    );
    let got = body(&h.post_event(&ordered));
    assert_eq!(got["committed"][0]["status"], "COMMITTED");
    assert_eq!(got["committed"][0]["order_id"], "o-1");
    assert_eq!(h.levels("p"), (8, 0, 8));
}

#[test]
fn a_redelivered_event_is_a_duplicate_that_changes_nothing() {
    let h = Harness::new();
    h.stock("p", 10);
    let event = added("e1", "c1", "p", 3);
    assert_eq!(body(&h.post_event(&event))["duplicate"], false);
    for _ in 0..2 {
        let response = h.post_event(&event);
        assert_eq!(response.status(), StatusCode::OK);
        let got = body(&response);
        assert_eq!(got["duplicate"], true);
        assert_eq!(got["reserved"], json!([]));
    }
    assert_eq!(h.levels("p"), (7, 3, 10));
}

#[test]
fn binary_mode_is_the_same_event_as_structured_mode() {
    let h = Harness::new();
    h.stock("p", 10);
    let event = added("e1", "c1", "p", 3);
    assert_eq!(h.post_event(&event).status(), StatusCode::OK);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/events")
        .header(AUTHORIZATION, format!("Bearer {SERVICE}"))
        .header(CONTENT_TYPE, "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "e1")
        .header("ce-source", "%2Fcart-service")
        .header("ce-type", "CartItemAdded")
        .body(event["data"].to_string().into_bytes())
        .unwrap();
    let response = stock_http::ingest_event(&h.svc, &req, &h.service);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(&response)["duplicate"], true);
    assert_eq!(h.levels("p"), (7, 3, 10));
}

#[test]
fn bad_events_are_refused_before_anything_changes() {
    let h = Harness::new();
    h.stock("p", 10);
    let good = added("e1", "c1", "p", 3).to_string();
    let cases = [
        (
            cloud_event("x1", "CartCheckedOut", json!({"cart_id": "c1"})).to_string(),
            "application/cloudevents+json",
            400,
            "unknown_event_type",
        ),
        (
            "{not json".to_owned(),
            "application/cloudevents+json",
            400,
            "malformed_json",
        ),
        (
            good.replace("\"1.0\"", "\"0.3\""),
            "application/cloudevents+json",
            400,
            "invalid_event",
        ),
        (
            good.replace("\"id\"", "\"ident\""),
            "application/json",
            400,
            "invalid_event",
        ),
        (
            good.replace("\"quantity\":3", "\"quantity\":0"),
            "application/json",
            400,
            "invalid_quantity",
        ),
        (good.clone(), "text/plain", 415, "unsupported_media_type"),
        (
            format!("[{good}]"),
            "application/cloudevents-batch+json",
            415,
            "unsupported_media_type",
        ),
    ];
    for (body_text, content_type, status, code) in cases {
        let response = h.post_raw(&body_text, content_type, SERVICE);
        assert_eq!(response.status().as_u16(), status, "{body_text}");
        assert_eq!(problem_code(&response), code, "{body_text}");
    }
    let unauthenticated = Request::builder()
        .method(Method::POST)
        .uri("/v1/events")
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .body(good.clone().into_bytes())
        .unwrap();
    let response = stock_http::ingest_event(&h.svc, &unauthenticated, &h.service);
    assert_eq!(problem_code(&response), "unauthorized");
    let response = h.post_raw(&good, "application/cloudevents+json", ADMIN);
    assert_eq!(problem_code(&response), "forbidden");
    assert_eq!(h.levels("p"), (10, 0, 10));
    // None of them was recorded: the good event is applied as new.
    assert_eq!(
        body(&h.post_raw(&good, "application/cloudevents+json", SERVICE))["duplicate"],
        false
    );
}

#[test]
fn events_the_stock_cannot_serve_get_the_domain_problems() {
    let h = Harness::new();
    h.stock("p", 2);
    let response = h.post_event(&added("e1", "c1", "ghost", 1));
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response), "product_not_found");

    let response = h.post_event(&added("e2", "c1", "p", 3));
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem_code(&response), "insufficient_stock");
    assert_eq!(body(&response)["available_quantity"], 2);

    let ordered = |id: &str, cart: &str, order: &str| {
        cloud_event(
            id,
            "OrderConfirmed",
            json!({"cart_id": cart, "order_id": order}),
        )
    };
    let response = h.post_event(&ordered("e3", "no-cart", "o-1"));
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response), "cart_not_found");

    assert_eq!(
        h.post_event(&added("e4", "c2", "p", 1)).status(),
        StatusCode::OK
    );
    assert_eq!(
        h.post_event(&ordered("e5", "c2", "o-1")).status(),
        StatusCode::OK
    );
    let response = h.post_event(&added("e6", "c2", "p", 1));
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem_code(&response), "cart_closed");
    assert_eq!(body(&response)["order_id"], "o-1");

    // An event is known by its source and id: the same pair again is a redelivery,
    // whatever it carries, and changes nothing.
    assert_eq!(
        h.post_event(&added("e7", "c3", "p", 1)).status(),
        StatusCode::OK
    );
    let before = h.levels("p");
    let response = h.post_event(&cloud_event(
        "e7",
        "CartItemUpdated",
        json!({"cart_id": "c3", "product_id": "p", "quantity": 2}),
    ));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(&response)["duplicate"], true);
    assert_eq!(h.levels("p"), before);
}
