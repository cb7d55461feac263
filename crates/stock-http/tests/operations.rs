//! Every operation end to end over the in-memory store: requests in, status codes,
//! headers and JSON bodies out, as a client sees them.

use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use stock_domain::memory::{FaultPlan, MemoryKv, SeqIds};

mod common;
use common::*;

impl Harness {
    fn put_stock(&self, id: &str, body: Value) -> Response<Vec<u8>> {
        let req = request(Method::PUT, &format!("/v1/stock/{id}"), Some(ADMIN), body);
        stock_http::update_stock(&self.svc, &req, &self.admin)
    }

    fn stock(&self, id: &str, quantity: u64, threshold: u64) {
        let body = json!({"quantity": quantity, "low_stock_threshold": threshold});
        assert_eq!(self.put_stock(id, body).status(), StatusCode::OK);
    }

    fn reserve(&self, body: Value) -> Response<Vec<u8>> {
        let req = request(Method::POST, "/v1/reservations", Some(SERVICE), body);
        stock_http::reserve_stock(&self.svc, &req, &self.service)
    }

    fn reserved_id(&self, product: &str, quantity: u64) -> String {
        let response = self.reserve(json!({"product_id": product, "quantity": quantity}));
        assert_eq!(response.status(), StatusCode::CREATED);
        body(&response)["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn get(&self, uri: &str) -> Response<Vec<u8>> {
        let req = request(Method::GET, uri, None, Value::Null);
        stock_http::get_stock(&self.svc, &req)
    }
}

fn raw(method: Method, uri: &str, token: &str, body: &str) -> Request<Vec<u8>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(body.as_bytes().to_vec())
        .unwrap()
}

#[test]
fn putting_stock_creates_the_product_with_every_field_of_the_spec() {
    let h = Harness::new();
    let response = h.put_stock("SKU-1", json!({"quantity": 10, "low_stock_threshold": 3}));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let got = body(&h.get("/v1/stock/SKU-1"));
    for field in [
        "product_id",
        "on_hand",
        "reserved_quantity",
        "available_quantity",
        "committed_quantity",
        "low_stock_threshold",
        "status",
        "updated_at",
        "version",
        "warehouses",
    ] {
        assert!(got.get(field).is_some(), "missing {field} in {got}");
    }
    assert_eq!(got["on_hand"], 10);
    assert_eq!(got["status"], "IN_STOCK");
    assert_eq!(got["updated_at"], T0);
    assert_eq!(got["warehouses"][0]["warehouse_id"], "default");
}

#[test]
fn an_unknown_product_is_not_found() {
    let h = Harness::new();
    let response = h.get("/v1/stock/nope");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response), "product_not_found");
    assert_eq!(body(&response)["product_id"], "nope");
}

#[test]
fn a_malformed_product_id_in_the_path_is_a_bad_request() {
    let h = Harness::new();
    let response = h.get("/v1/stock/bad%20id");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(&response), "invalid_product_id");
}

#[test]
fn stock_updates_need_the_admin_token() {
    let h = Harness::new();
    let body = json!({"quantity": 1});
    let none = request(Method::PUT, "/v1/stock/A", None, body.clone());
    let response = stock_http::update_stock(&h.svc, &none, &h.admin);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let service = request(Method::PUT, "/v1/stock/A", Some(SERVICE), body);
    let response = stock_http::update_stock(&h.svc, &service, &h.admin);
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(&response), "forbidden");
    assert_eq!(h.get("/v1/stock/A").status(), StatusCode::NOT_FOUND);
}

#[test]
fn bad_stock_updates_are_refused_with_their_codes_and_change_nothing() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let cases = [
        (json!({"quantity": -1}), "invalid_quantity"),
        (json!({"quantity": 1e20}), "invalid_quantity"),
        (json!({"quantity": 1.5}), "invalid_quantity"),
        (
            json!({"quantity": 1, "low_stock_threshold": -2}),
            "invalid_threshold",
        ),
        (
            json!({"quantity": 1, "warehouse_id": "a b"}),
            "invalid_warehouse_id",
        ),
        (json!({"quantity": 1, "colour": "red"}), "invalid_body"),
        (json!({"low_stock_threshold": 1}), "invalid_body"),
        (json!({"quantity": "1"}), "invalid_body"),
    ];
    for (bad, code) in cases {
        let response = h.put_stock("A", bad.clone());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem_code(&response), code, "{bad}");
    }
    let response = stock_http::update_stock(
        &h.svc,
        &raw(Method::PUT, "/v1/stock/A", ADMIN, "{\"quantity\": "),
        &h.admin,
    );
    assert_eq!(problem_code(&response), "malformed_json");
    assert_eq!(body(&h.get("/v1/stock/A"))["on_hand"], 5);
    assert_eq!(body(&h.get("/v1/stock/A"))["version"], 1);
}

#[test]
fn an_update_below_the_reserved_units_is_a_conflict() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    h.reserved_id("A", 3);
    let response = h.put_stock("A", json!({"quantity": 2}));
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem_code(&response), "below_reserved");
    assert_eq!(body(&response)["reserved_quantity"], 3);
}

#[test]
fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request() {
    let h = Harness::new();
    let put = |quantity: u64| {
        let mut req = request(
            Method::PUT,
            "/v1/stock/A",
            Some(ADMIN),
            json!({"quantity": quantity}),
        );
        req.headers_mut()
            .insert("idempotency-key", "count-1".parse().unwrap());
        stock_http::update_stock(&h.svc, &req, &h.admin)
    };
    let first = put(7);
    assert_eq!(put(7).body(), first.body());
    let reused = put(8);
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_code(&reused), "idempotency_key_reused");
}

#[test]
fn a_bad_idempotency_key_is_refused() {
    let h = Harness::new();
    let mut req = request(
        Method::PUT,
        "/v1/stock/A",
        Some(ADMIN),
        json!({"quantity": 1}),
    );
    req.headers_mut()
        .insert("idempotency-key", "has space".parse().unwrap());
    let response = stock_http::update_stock(&h.svc, &req, &h.admin);
    assert_eq!(problem_code(&response), "invalid_idempotency_key");
}

#[test]
fn adjustments_apply_signed_deltas_with_a_fitting_reason() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let adjust = |body: Value| {
        let req = request(Method::POST, "/v1/stock/A/adjustments", Some(ADMIN), body);
        stock_http::adjust_stock(&h.svc, &req, &h.admin)
    };
    let response = adjust(json!({"adjustment": 3, "reason": "RESTOCK"}));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(&response)["on_hand"], 8);
    let cases = [
        (
            json!({"adjustment": 0, "reason": "RESTOCK"}),
            400,
            "invalid_adjustment",
        ),
        (
            json!({"adjustment": -1e12, "reason": "LOSS"}),
            400,
            "invalid_adjustment",
        ),
        (
            json!({"adjustment": 1, "reason": "GIFT"}),
            400,
            "invalid_reason",
        ),
        (
            json!({"adjustment": 1, "reason": "DAMAGE"}),
            400,
            "reason_mismatch",
        ),
        (
            json!({"adjustment": -9, "reason": "DAMAGE"}),
            409,
            "insufficient_stock",
        ),
        (json!({"adjustment": 1}), 400, "invalid_body"),
    ];
    for (bad, status, code) in cases {
        let response = adjust(bad.clone());
        assert_eq!(response.status().as_u16(), status, "{bad}");
        assert_eq!(problem_code(&response), code, "{bad}");
    }
    let short = adjust(json!({"adjustment": -9, "reason": "DAMAGE"}));
    assert_eq!(body(&short)["available_quantity"], 8);
}

#[test]
fn adjusting_an_unknown_product_is_not_found() {
    let h = Harness::new();
    let req = request(
        Method::POST,
        "/v1/stock/ghost/adjustments",
        Some(ADMIN),
        json!({"adjustment": 1, "reason": "RESTOCK"}),
    );
    let response = stock_http::adjust_stock(&h.svc, &req, &h.admin);
    assert_eq!(problem_code(&response), "product_not_found");
}

#[test]
fn availability_answers_whether_the_quantity_can_be_had() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let check = |uri: &str| {
        let req = request(Method::GET, uri, None, Value::Null);
        stock_http::check_availability(&h.svc, &req)
    };
    let ok = check("/v1/stock/A/availability?quantity=5");
    assert_eq!(
        body(&ok),
        json!({"product_id": "A", "quantity": 5, "available_quantity": 5, "available": true})
    );
    assert_eq!(
        body(&check("/v1/stock/A/availability?quantity=6"))["available"],
        false
    );
    assert_eq!(
        body(&check(
            "/v1/stock/A/availability?quantity=1&warehouse_id=other"
        ))["available_quantity"],
        0
    );
    for (uri, code) in [
        ("/v1/stock/A/availability", "invalid_quantity"),
        ("/v1/stock/A/availability?quantity=0", "invalid_quantity"),
        ("/v1/stock/A/availability?quantity=-2", "invalid_quantity"),
        ("/v1/stock/A/availability?quantity=abc", "invalid_quantity"),
        (
            "/v1/stock/A/availability?quantity=99999999999999999999999999",
            "invalid_quantity",
        ),
        ("/v1/stock/A/availability?quantity=1&x=2", "invalid_query"),
        (
            "/v1/stock/A/availability?quantity=1&warehouse_id=",
            "invalid_warehouse_id",
        ),
        ("/v1/stock/B/availability?quantity=1", "product_not_found"),
    ] {
        assert_eq!(problem_code(&check(uri)), code, "{uri}");
    }
}

#[test]
fn a_batch_read_lists_found_and_unknown_products() {
    let h = Harness::new();
    h.stock("A", 1, 0);
    h.stock("B", 2, 0);
    let batch = |uri: &str| {
        let req = request(Method::GET, uri, None, Value::Null);
        stock_http::get_stock_batch(&h.svc, &req)
    };
    let got = body(&batch("/v1/stock?ids=A,ghost,B,A"));
    let items: Vec<&str> = got["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(items, ["A", "B"]);
    assert_eq!(got["not_found"], json!(["ghost"]));
    assert_eq!(
        body(&batch("/v1/stock?ids=A%2CB"))["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let too_many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    for (uri, code) in [
        ("/v1/stock?ids=A&limit=2".to_owned(), "invalid_query"),
        ("/v1/stock?after=x".to_owned(), "invalid_cursor"),
        ("/v1/stock?limit=0".to_owned(), "invalid_query"),
        ("/v1/stock?ids=A,,B".to_owned(), "invalid_product_id"),
        (
            format!("/v1/stock?ids={}", too_many.join(",")),
            "invalid_query",
        ),
    ] {
        assert_eq!(problem_code(&batch(&uri)), code, "{uri}");
    }
}

#[test]
fn a_single_line_reservation_is_created_and_echoes_its_line() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let response = h.reserve(json!({"product_id": "A", "quantity": 2, "ttl_seconds": 60}));
    assert_eq!(response.status(), StatusCode::CREATED);
    let got = body(&response);
    let id = got["reservation_id"].as_str().unwrap();
    assert_eq!(
        response.headers()[LOCATION],
        format!("/v1/reservations/{id}")
    );
    assert_eq!(got["status"], "PENDING");
    assert_eq!(got["product_id"], "A");
    assert_eq!(got["quantity"], 2);
    assert_eq!(got["expires_at"], T0 + 60_000);
    assert_eq!(got["lines"][0]["allocations"][0]["warehouse_id"], "default");
    assert!(!response_text(&response).contains("placement"));
    assert_eq!(body(&h.get("/v1/stock/A"))["available_quantity"], 3);
}

fn response_text(response: &Response<Vec<u8>>) -> String {
    String::from_utf8(response.body().clone()).unwrap()
}

#[test]
fn a_multi_line_reservation_is_all_or_nothing() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    h.stock("B", 1, 0);
    let response = h.reserve(json!({"lines": [
        {"product_id": "A", "quantity": 2},
        {"product_id": "B", "quantity": 2}
    ]}));
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem_code(&response), "insufficient_stock");
    let got = body(&response);
    assert_eq!(got["product_id"], "B");
    assert_eq!(got["available_quantity"], 1);
    assert_eq!(body(&h.get("/v1/stock/A"))["available_quantity"], 5);

    let response = h.reserve(json!({"lines": [
        {"product_id": "A", "quantity": 2},
        {"product_id": "B", "quantity": 1, "warehouse_id": "default"}
    ]}));
    assert_eq!(response.status(), StatusCode::CREATED);
    let got = body(&response);
    assert_eq!(got["lines"].as_array().unwrap().len(), 2);
    assert!(got.get("product_id").is_none());
}

#[test]
fn bad_reservation_requests_get_their_codes() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"product_id": format!("p{i}"), "quantity": 1}))
        .collect();
    let cases = [
        (
            json!({"product_id": "A", "quantity": 0}),
            "invalid_quantity",
        ),
        (
            json!({"product_id": "A", "quantity": -3}),
            "invalid_quantity",
        ),
        (
            json!({"product_id": "A", "quantity": 1e30}),
            "invalid_quantity",
        ),
        (
            json!({"product_id": "A b", "quantity": 1}),
            "invalid_product_id",
        ),
        (
            json!({"product_id": "A", "quantity": 1, "warehouse_id": ""}),
            "invalid_warehouse_id",
        ),
        (
            json!({"product_id": "A", "quantity": 1, "ttl_seconds": 0}),
            "invalid_ttl",
        ),
        (
            json!({"product_id": "A", "quantity": 1, "ttl_seconds": 7201}),
            "invalid_ttl",
        ),
        (
            json!({"product_id": "A", "quantity": 1, "ttl_seconds": 1e40}),
            "invalid_ttl",
        ),
        (
            json!({"product_id": "A", "quantity": 1, "ttl_seconds": 1.5}),
            "invalid_ttl",
        ),
        (json!({"product_id": "A"}), "invalid_body"),
        (json!({"quantity": 1}), "invalid_body"),
        (
            json!({"product_id": "A", "quantity": 1, "lines": []}),
            "invalid_body",
        ),
        (
            json!({"lines": [{"product_id": "A", "quantity": 1, "x": 1}]}),
            "invalid_body",
        ),
        (json!({"lines": []}), "no_lines"),
        (json!({"lines": many}), "too_many_lines"),
        (
            json!({"lines": [{"product_id": "A", "quantity": 1}, {"product_id": "A", "quantity": 2}]}),
            "duplicate_line",
        ),
        (
            json!({"lines": [{"product_id": "A", "quantity": 0}]}),
            "invalid_quantity",
        ),
    ];
    for (bad, code) in cases {
        let response = h.reserve(bad.clone());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem_code(&response), code, "{bad}");
    }
    let response = h.reserve(json!({"product_id": "ghost", "quantity": 1}));
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response), "product_not_found");
    assert_eq!(body(&h.get("/v1/stock/A"))["reserved_quantity"], 0);
}

#[test]
fn a_line_error_names_its_position() {
    let h = Harness::new();
    let response = h.reserve(json!({"lines": [
        {"product_id": "A", "quantity": 1},
        {"product_id": "B", "quantity": -1}
    ]}));
    let detail = body(&response)["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("lines[1]."), "{detail}");
}

#[test]
fn reservations_need_the_service_token() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let req = request(
        Method::POST,
        "/v1/reservations",
        Some(ADMIN),
        json!({"product_id": "A", "quantity": 1}),
    );
    let response = stock_http::reserve_stock(&h.svc, &req, &h.service);
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[test]
fn a_reservation_is_committed_once_and_idempotently() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let id = h.reserved_id("A", 2);
    let commit = |order: &str| {
        let uri = format!("/v1/reservations/{id}/commit");
        let req = request(
            Method::POST,
            &uri,
            Some(SERVICE),
            json!({"order_id": order}),
        );
        stock_http::commit_reservation(&h.svc, &req, &h.service)
    };
    let first = commit("order-1");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(body(&first)["status"], "COMMITTED");
    assert_eq!(body(&first)["order_id"], "order-1");
    assert_eq!(commit("order-1").status(), StatusCode::OK);
    let other = commit("order-2");
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(problem_code(&other), "order_mismatch");
    let stock = body(&h.get("/v1/stock/A"));
    assert_eq!(stock["on_hand"], 3);
    assert_eq!(stock["committed_quantity"], 2);
    assert_eq!(problem_code(&commit("bad order")), "invalid_order_id");
}

#[test]
fn a_released_reservation_frees_its_units_and_cannot_be_committed() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let id = h.reserved_id("A", 2);
    let release = || {
        let uri = format!("/v1/reservations/{id}/release");
        let req = request(Method::POST, &uri, Some(SERVICE), Value::Null);
        stock_http::release_reservation(&h.svc, &req, &h.service)
    };
    assert_eq!(body(&release())["status"], "RELEASED");
    assert_eq!(body(&release())["status"], "RELEASED");
    assert_eq!(body(&h.get("/v1/stock/A"))["available_quantity"], 5);
    let uri = format!("/v1/reservations/{id}/commit");
    let req = request(Method::POST, &uri, Some(SERVICE), json!({"order_id": "o"}));
    let response = stock_http::commit_reservation(&h.svc, &req, &h.service);
    assert_eq!(problem_code(&response), "reservation_released");
    let with_body = raw(
        Method::POST,
        &format!("/v1/reservations/{id}/release"),
        SERVICE,
        "{\"why\":1}",
    );
    let response = stock_http::release_reservation(&h.svc, &with_body, &h.service);
    assert_eq!(problem_code(&response), "invalid_body");
}

#[test]
fn releasing_a_committed_reservation_is_a_conflict() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let id = h.reserved_id("A", 1);
    let uri = format!("/v1/reservations/{id}/commit");
    let req = request(Method::POST, &uri, Some(SERVICE), json!({"order_id": "o"}));
    stock_http::commit_reservation(&h.svc, &req, &h.service);
    let uri = format!("/v1/reservations/{id}/release");
    let req = request(Method::POST, &uri, Some(SERVICE), Value::Null);
    let response = stock_http::release_reservation(&h.svc, &req, &h.service);
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem_code(&response), "reservation_committed");
}

#[test]
fn committing_an_expired_reservation_is_gone() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let response = h.reserve(json!({"product_id": "A", "quantity": 2, "ttl_seconds": 1}));
    let id = body(&response)["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.clock.advance(2_000);
    let req = request(
        Method::GET,
        &format!("/v1/reservations/{id}"),
        None,
        Value::Null,
    );
    assert_eq!(
        body(&stock_http::get_reservation(&h.svc, &req))["status"],
        "EXPIRED"
    );
    let uri = format!("/v1/reservations/{id}/commit");
    let req = request(Method::POST, &uri, Some(SERVICE), json!({"order_id": "o"}));
    let response = stock_http::commit_reservation(&h.svc, &req, &h.service);
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(problem_code(&response), "reservation_expired");
    assert_eq!(body(&h.get("/v1/stock/A"))["available_quantity"], 5);
}

#[test]
fn an_unknown_reservation_is_not_found() {
    let h = Harness::new();
    let req = request(Method::GET, "/v1/reservations/nope", None, Value::Null);
    let response = stock_http::get_reservation(&h.svc, &req);
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response), "reservation_not_found");
    let req = request(Method::GET, "/v1/reservations/a%20b", None, Value::Null);
    let response = stock_http::get_reservation(&h.svc, &req);
    assert_eq!(problem_code(&response), "invalid_reservation_id");
}

#[test]
fn history_is_served_as_cloudevents_with_a_cursor() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    h.reserved_id("A", 1);
    h.reserved_id("A", 1);
    let history = |uri: &str| {
        let req = request(Method::GET, uri, None, Value::Null);
        stock_http::stock_history(&h.svc, &req)
    };
    let page = body(&history("/v1/stock/A/history?limit=2"));
    assert_eq!(page["product_id"], "A");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["specversion"], "1.0");
    assert_eq!(events[0]["type"], "StockUpdated");
    assert_eq!(events[0]["id"], "A:1");
    assert_eq!(events[0]["time"], "2023-11-14T22:13:20.000Z");
    assert_eq!(events[1]["type"], "StockReserved");
    assert_eq!(page["next_after"], 2);
    let rest = body(&history("/v1/stock/A/history?after=2"));
    assert_eq!(rest["events"][0]["data"]["seq"], 3);
    assert_eq!(rest["next_after"], Value::Null);
    for uri in [
        "/v1/stock/A/history?limit=0",
        "/v1/stock/A/history?limit=501",
        "/v1/stock/A/history?after=-1",
        "/v1/stock/A/history?after=x",
    ] {
        assert_eq!(problem_code(&history(uri)), "invalid_query", "{uri}");
    }
    assert_eq!(
        problem_code(&history("/v1/stock/ghost/history")),
        "product_not_found"
    );
}

#[test]
fn alerts_list_low_and_out_of_stock_products_for_admins() {
    let h = Harness::new();
    h.stock("low", 2, 5);
    h.stock("out", 0, 0);
    h.stock("fine", 50, 5);
    let req = request(Method::GET, "/v1/admin/alerts", Some(ADMIN), Value::Null);
    let got = body(&stock_http::stock_alerts(&h.svc, &req, &h.admin));
    let ids: Vec<&str> = got["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["product_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["low", "out"]);
    assert_eq!(got["next"], Value::Null);
    // One entry per page: the cursor walks the set, each alert once.
    let mut paged = Vec::new();
    let mut uri = "/v1/admin/alerts?limit=1".to_owned();
    loop {
        let req = request(Method::GET, &uri, Some(ADMIN), Value::Null);
        let page = body(&stock_http::stock_alerts(&h.svc, &req, &h.admin));
        for a in page["alerts"].as_array().unwrap() {
            paged.push(a["product_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/admin/alerts?limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    let bad = request(
        Method::GET,
        "/v1/admin/alerts?after=99.x",
        Some(ADMIN),
        Value::Null,
    );
    assert_eq!(
        problem_code(&stock_http::stock_alerts(&h.svc, &bad, &h.admin)),
        "invalid_cursor"
    );
    let anonymous = request(Method::GET, "/v1/admin/alerts", None, Value::Null);
    assert_eq!(
        stock_http::stock_alerts(&h.svc, &anonymous, &h.admin).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn the_expiry_sweep_reports_what_it_expired() {
    let h = Harness::new();
    h.stock("A", 5, 0);
    let response = h.reserve(json!({"product_id": "A", "quantity": 2, "ttl_seconds": 1}));
    let id = body(&response)["reservation_id"].clone();
    h.clock.advance(2_000);
    let req = request(Method::POST, "/v1/admin/expire", Some(ADMIN), Value::Null);
    let got = body(&stock_http::expire_reservations(&h.svc, &req, &h.admin));
    assert_eq!(
        got,
        json!({"expired": [id], "repaired": [], "deleted": 0, "next": null, "done": true})
    );
}

#[test]
fn oversized_and_non_json_bodies_are_refused_before_anything_changes() {
    let h = Harness::new();
    let big = format!(
        "{{\"product_id\": \"A\", \"quantity\": 1, \"pad\": \"{}\"}}",
        "x".repeat(70_000)
    );
    let response = stock_http::reserve_stock(
        &h.svc,
        &raw(Method::POST, "/v1/reservations", SERVICE, &big),
        &h.service,
    );
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_code(&response), "payload_too_large");
    let mut form = raw(Method::POST, "/v1/reservations", SERVICE, "product_id=A");
    form.headers_mut()
        .insert(CONTENT_TYPE, "text/plain".parse().unwrap());
    let response = stock_http::reserve_stock(&h.svc, &form, &h.service);
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn contention_that_outlasts_the_retries_is_service_busy() {
    let (kv, ids) = (MemoryKv::new(), SeqIds::default());
    let h = Harness::over(kv.clone(), ids.clone());
    h.stock("A", 5, 0);
    let contended = Harness::over(
        kv.instance(FaultPlan {
            conflict: 1.0,
            ..FaultPlan::default()
        }),
        ids,
    );
    let response = contended.put_stock("A", json!({"quantity": 6}));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert_eq!(problem_code(&response), "service_busy");
    assert_eq!(body(&h.get("/v1/stock/A"))["on_hand"], 5);
}

#[test]
fn a_store_failure_is_a_generic_internal_error() {
    let crashed = Harness::over(
        MemoryKv::new().instance(FaultPlan {
            crash_after: Some(0),
            ..FaultPlan::default()
        }),
        SeqIds::default(),
    );
    let response = crashed.get("/v1/stock/A");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(problem_code(&response), "internal_error");
    assert!(!response_text(&response).contains("injected"));
}

#[test]
fn wrong_methods_and_unknown_routes_have_their_own_problems() {
    let response = stock_http::method_not_allowed(&[Method::GET, Method::PUT]);
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[ALLOW], "GET, PUT");
    let req = request(Method::GET, "/v2/whatever", None, Value::Null);
    let response = stock_http::not_found(&req);
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response), "not_found");
}

/// The id `SKU:42` written as is, then read and changed through every route with a product
/// or reservation id in its path, percent-encoded as `encodeURIComponent` sends it; the
/// links the service hands out are encoded the same way.
#[test]
fn ids_in_paths_are_percent_decoded_on_every_route() {
    let h = Harness::new();
    h.stock("SKU:42", 10, 2);
    let product = "SKU%3A42";
    let got = body(&h.get(&format!("/v1/stock/{product}")));
    assert_eq!(got["product_id"], "SKU:42");
    let req = request(
        Method::PUT,
        &format!("/v1/stock/{product}"),
        Some(ADMIN),
        json!({"quantity": 12}),
    );
    let response = stock_http::update_stock(&h.svc, &req, &h.admin);
    assert_eq!(body(&response)["on_hand"], 12);
    let req = request(
        Method::GET,
        &format!("/v1/stock/{product}/availability?quantity=3"),
        None,
        Value::Null,
    );
    assert_eq!(
        body(&stock_http::check_availability(&h.svc, &req))["available"],
        true
    );
    let req = request(
        Method::POST,
        &format!("/v1/stock/{product}/adjustments"),
        Some(ADMIN),
        json!({"adjustment": -2, "reason": "DAMAGE"}),
    );
    let response = stock_http::adjust_stock(&h.svc, &req, &h.admin);
    assert_eq!(body(&response)["on_hand"], 10);

    let response = h.reserve(json!({"product_id": "SKU:42", "quantity": 3}));
    let id = body(&response)["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded: String = id.bytes().map(|b| format!("%{b:02x}")).collect();
    assert_eq!(
        response.headers()[LOCATION],
        format!("/v1/reservations/{id}").as_str()
    );
    let req = request(
        Method::GET,
        &format!("/v1/reservations/{encoded}"),
        None,
        Value::Null,
    );
    assert_eq!(
        body(&stock_http::get_reservation(&h.svc, &req))["reservation_id"],
        id.as_str()
    );
    let req = request(
        Method::POST,
        &format!("/v1/reservations/{encoded}/commit"),
        Some(SERVICE),
        json!({"order_id": "order:1"}),
    );
    let response = stock_http::commit_reservation(&h.svc, &req, &h.service);
    assert_eq!(body(&response)["status"], "COMMITTED");
    let response = h.reserve(json!({"product_id": "SKU:42", "quantity": 1}));
    let other = body(&response)["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = request(
        Method::POST,
        &format!("/v1/reservations/{}/release", other.replace('-', "%2D")),
        Some(SERVICE),
        Value::Null,
    );
    let response = stock_http::release_reservation(&h.svc, &req, &h.service);
    assert_eq!(body(&response)["status"], "RELEASED");

    let req = request(
        Method::GET,
        &format!("/v1/stock/{product}/history"),
        None,
        Value::Null,
    );
    let history = body(&stock_http::stock_history(&h.svc, &req));
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 7, "{history}");
    for event in events {
        assert_eq!(event["subject"], "SKU:42");
        assert_eq!(event["source"], "/stock-service/products/SKU%3A42");
    }
}

#[test]
fn bad_escapes_in_path_ids_are_invalid_ids_and_change_nothing() {
    let h = Harness::new();
    h.stock("a", 5, 0);
    for raw in ["%ZZ", "a%2", "a%2Fb", "caf%E9", "%61%20"] {
        assert_eq!(
            problem_code(&h.get(&format!("/v1/stock/{raw}"))),
            "invalid_product_id",
            "{raw}"
        );
        let response = h.put_stock(raw, json!({"quantity": 1}));
        assert_eq!(problem_code(&response), "invalid_product_id", "{raw}");
        let req = request(
            Method::GET,
            &format!("/v1/reservations/{raw}"),
            None,
            Value::Null,
        );
        assert_eq!(
            problem_code(&stock_http::get_reservation(&h.svc, &req)),
            "invalid_reservation_id",
            "{raw}"
        );
    }
    assert_eq!(body(&h.get("/v1/stock/%61"))["on_hand"], 5);
}
