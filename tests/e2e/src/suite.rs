//! The tests themselves. Each uses its own product ids (with a per-run, per-call
//! suffix), so they run in parallel against one shared application, on every target at
//! once, and can be re-run against the same store.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use cloudevents::{AttributesReader, Data, Event};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use crate::client::{As, Client, Reply};
use crate::receiver::HOOK_PATH;
use crate::targets;

/// How long after it is written an entry may still be unserved by the feed (the domain's
/// `FEED_DELAY_MS`: a slot's 5 s open window plus 2 s of settling).
const FEED_DELAY_MS: u64 = 7_000;

pub type Test = fn(&Client) -> Result<()>;

/// Every test of the suite, by name.
pub fn all() -> Vec<(&'static str, Test)> {
    vec![
        (
            "order_lifecycle_update_check_reserve_commit",
            order_lifecycle,
        ),
        ("reserve_then_release_gives_units_back", reserve_release),
        (
            "a_short_ttl_reservation_expires_without_a_scheduler",
            reserve_expire,
        ),
        ("multi_line_reservations_are_all_or_nothing", multi_line),
        ("batch_read_and_availability", batch_and_availability),
        ("adjustments_follow_their_reason", adjustments),
        ("history_is_complete_and_paged", history),
        ("alerts_list_low_and_out_of_stock_products", alerts),
        ("product_list_pages_every_product_once", product_list),
        ("expiry_sweep_records_expired_reservations", sweep),
        ("idempotency_keys_replay_across_components", idempotency),
        ("malformed_and_invalid_bodies_are_problems", bad_bodies),
        (
            "bad_ids_and_quantities_are_problems",
            bad_ids_and_quantities,
        ),
        (
            "path_ids_are_percent_decoded_on_every_route",
            percent_encoded_ids,
        ),
        (
            "bad_escapes_in_path_ids_are_invalid_ids",
            bad_escapes_in_ids,
        ),
        (
            "a_header_that_is_not_utf8_is_a_500_before_any_component_runs",
            non_utf8_header,
        ),
        ("oversized_bodies_are_refused", oversized),
        ("tokens_guard_mutations", tokens),
        (
            "unknown_routes_methods_and_resources",
            not_found_and_methods,
        ),
        ("conflicts_and_gone", conflicts_and_gone),
        ("sixty_four_clients_never_oversell", concurrency),
        (
            "feed_pages_every_entry_once_in_order_under_writes",
            feed_under_writes,
        ),
        (
            "inbound_events_move_stock_as_their_type_says",
            inbound_events,
        ),
        ("redelivered_events_change_nothing", redelivery),
        ("bad_events_are_refused_and_change_nothing", bad_events),
        ("alert_webhook_receives_low_and_out_of_stock", alert_webhook),
    ]
}

/// A product id unique to this call: the suite runs on several targets in one process
/// and they share one webhook receiver, so no two targets may use the same id.
fn product(name: &str) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let run = match RUN.load(Ordering::Relaxed) {
        0 => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            RUN.store(t, Ordering::Relaxed);
            t
        }
        t => t,
    };
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("{name}-{run}-{call}")
}

fn expect(reply: &Reply, status: u16) -> Result<()> {
    ensure!(
        reply.status == status,
        "expected {status}, got {}: {}",
        reply.status,
        reply.raw
    );
    Ok(())
}

fn expect_problem(reply: &Reply, status: u16, code: &str) -> Result<()> {
    expect(reply, status)?;
    ensure!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json")),
        "not problem+json: {:?}",
        reply.headers
    );
    ensure!(reply.code() == code, "expected code {code}: {}", reply.raw);
    ensure!(
        reply.body["status"] == status && reply.body["title"].is_string(),
        "incomplete problem: {}",
        reply.raw
    );
    Ok(())
}

fn stocked(c: &Client, id: &str, quantity: u64) -> Result<()> {
    expect(&c.put_stock(id, json!({ "quantity": quantity })), 200)
}

fn order_lifecycle(c: &Client) -> Result<()> {
    let p = product("life");
    let r = c.put_stock(&p, json!({"quantity": 10, "low_stock_threshold": 2}));
    expect(&r, 200)?;
    ensure!(r.u64("on_hand") == 10 && r.u64("available_quantity") == 10);
    let a = c.get(&format!("/v1/stock/{p}/availability?quantity=4"));
    expect(&a, 200)?;
    ensure!(a.body["available"] == true && a.u64("available_quantity") == 10);
    let res = c.reserve(json!({"product_id": p, "quantity": 4}));
    expect(&res, 201)?;
    ensure!(res.body["status"] == "PENDING" && res.u64("quantity") == 4);
    ensure!(res.body["product_id"] == p.as_str());
    let id = res.body["reservation_id"].as_str().unwrap().to_owned();
    let s = c.stock(&p);
    ensure!(s.u64("reserved_quantity") == 4 && s.u64("available_quantity") == 6);
    let commit = c.post(
        &format!("/v1/reservations/{id}/commit"),
        As::Service,
        json!({"order_id": "order-1"}),
    );
    expect(&commit, 200)?;
    ensure!(commit.body["status"] == "COMMITTED");
    let s = c.stock(&p);
    ensure!(
        (
            s.u64("on_hand"),
            s.u64("reserved_quantity"),
            s.u64("committed_quantity")
        ) == (6, 0, 4),
        "{}",
        s.raw
    );
    let lookup = c.get(&format!("/v1/reservations/{id}"));
    expect(&lookup, 200)?;
    ensure!(lookup.body["order_id"] == "order-1");
    Ok(())
}

fn reserve_release(c: &Client) -> Result<()> {
    let p = product("rel");
    stocked(c, &p, 5)?;
    let res = c.reserve(json!({"product_id": p, "quantity": 5}));
    expect(&res, 201)?;
    let id = res.body["reservation_id"].as_str().unwrap().to_owned();
    ensure!(c.stock(&p).u64("available_quantity") == 0);
    for _ in 0..2 {
        let r = c.call(
            "POST",
            &format!("/v1/reservations/{id}/release"),
            As::Service,
            None,
            &[],
        );
        expect(&r, 200)?;
        ensure!(r.body["status"] == "RELEASED");
    }
    ensure!(c.stock(&p).u64("available_quantity") == 5);
    Ok(())
}

fn reserve_expire(c: &Client) -> Result<()> {
    let p = product("ttl");
    stocked(c, &p, 3)?;
    let res = c.reserve(json!({"product_id": p, "quantity": 2, "ttl_seconds": 1}));
    expect(&res, 201)?;
    let expires_at = res.u64("expires_at");
    ensure!(c.stock(&p).u64("available_quantity") == 1);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    std::thread::sleep(Duration::from_millis(expires_at.saturating_sub(now) + 200));
    let s = c.stock(&p);
    ensure!(s.u64("available_quantity") == 3, "{}", s.raw);
    let id = res.body["reservation_id"].as_str().unwrap();
    ensure!(c.get(&format!("/v1/reservations/{id}")).body["status"] == "EXPIRED");
    let commit = c.post(
        &format!("/v1/reservations/{id}/commit"),
        As::Service,
        json!({"order_id": "late"}),
    );
    expect_problem(&commit, 410, "reservation_expired")
}

fn multi_line(c: &Client) -> Result<()> {
    let (a, b) = (product("ml-a"), product("ml-b"));
    stocked(c, &a, 5)?;
    stocked(c, &b, 1)?;
    let refused = c.reserve(json!({"lines": [
        {"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 2}
    ]}));
    expect_problem(&refused, 409, "insufficient_stock")?;
    ensure!(refused.u64("available_quantity") == 1);
    ensure!(c.stock(&a).u64("available_quantity") == 5);
    let ok = c.reserve(json!({"lines": [
        {"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 1}
    ], "ttl_seconds": 60}));
    expect(&ok, 201)?;
    ensure!(ok.body["lines"].as_array().map(Vec::len) == Some(2));
    ensure!(c.stock(&a).u64("available_quantity") == 3);
    ensure!(c.stock(&b).u64("available_quantity") == 0);
    Ok(())
}

fn batch_and_availability(c: &Client) -> Result<()> {
    let (a, b) = (product("batch-a"), product("batch-b"));
    stocked(c, &a, 1)?;
    stocked(c, &b, 2)?;
    let r = c.get(&format!("/v1/stock?ids={a},{b},batch-missing-x"));
    expect(&r, 200)?;
    ensure!(
        r.body["items"].as_array().map(Vec::len) == Some(2),
        "{}",
        r.raw
    );
    ensure!(
        r.body["not_found"] == json!(["batch-missing-x"]),
        "{}",
        r.raw
    );
    let no = c.get(&format!("/v1/stock/{b}/availability?quantity=3"));
    expect(&no, 200)?;
    ensure!(no.body["available"] == false && no.u64("available_quantity") == 2);
    Ok(())
}

fn adjustments(c: &Client) -> Result<()> {
    let p = product("adj");
    stocked(c, &p, 10)?;
    let path = format!("/v1/stock/{p}/adjustments");
    let r = c.post(
        &path,
        As::Admin,
        json!({"adjustment": 5, "reason": "RESTOCK"}),
    );
    expect(&r, 200)?;
    ensure!(r.u64("on_hand") == 15);
    let r = c.post(
        &path,
        As::Admin,
        json!({"adjustment": -2, "reason": "DAMAGE"}),
    );
    ensure!(r.u64("on_hand") == 13, "{}", r.raw);
    let r = c.post(
        &path,
        As::Admin,
        json!({"adjustment": -20, "reason": "LOSS"}),
    );
    expect_problem(&r, 409, "insufficient_stock")?;
    let r = c.post(
        &path,
        As::Admin,
        json!({"adjustment": 1, "reason": "DAMAGE"}),
    );
    expect_problem(&r, 400, "reason_mismatch")?;
    let r = c.post(&path, As::Admin, json!({"adjustment": 1, "reason": "WHIM"}));
    expect_problem(&r, 400, "invalid_reason")?;
    let r = c.post(
        &path,
        As::Admin,
        json!({"adjustment": 0, "reason": "CORRECTION"}),
    );
    expect_problem(&r, 400, "invalid_adjustment")?;
    let ghost = c.post(
        "/v1/stock/adj-ghost-product/adjustments",
        As::Admin,
        json!({"adjustment": 1, "reason": "RESTOCK"}),
    );
    expect_problem(&ghost, 404, "product_not_found")
}

fn history(c: &Client) -> Result<()> {
    let p = product("hist");
    stocked(c, &p, 10)?;
    for _ in 0..11 {
        c.post(
            &format!("/v1/stock/{p}/adjustments"),
            As::Admin,
            json!({"adjustment": 1, "reason": "RESTOCK"}),
        );
    }
    let res = c.reserve(json!({"product_id": p, "quantity": 3}));
    let id = res.body["reservation_id"].as_str().unwrap().to_owned();
    c.post(
        &format!("/v1/reservations/{id}/commit"),
        As::Service,
        json!({"order_id": "o-h"}),
    );
    let mut events: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let page = c.get(&format!("/v1/stock/{p}/history?after={after}&limit=5"));
        expect(&page, 200)?;
        let batch = page.body["events"].as_array().cloned().unwrap_or_default();
        ensure!(batch.len() <= 5);
        events.extend(batch);
        match page.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    ensure!(types.len() == 14, "{types:?}");
    ensure!(types[0] == "StockUpdated" && types[12] == "StockReserved");
    ensure!(types[13] == "StockCommitted");
    for e in &events {
        ensure!(check_cloudevent(e)?.subject() == Some(p.as_str()), "{e}");
    }
    ensure!(events[13]["data"]["order_id"] == "o-h");
    Ok(())
}

fn alerts(c: &Client) -> Result<()> {
    let (low, out) = (product("al-low"), product("al-out"));
    expect(
        &c.put_stock(&low, json!({"quantity": 3, "low_stock_threshold": 5})),
        200,
    )?;
    stocked(c, &out, 0)?;
    // Other tests share the store: page through the whole set, small pages.
    let mut list = Vec::new();
    let mut path = "/v1/admin/alerts?limit=3".to_owned();
    for _ in 0..10_000 {
        let r = c.call("GET", &path, As::Admin, None, &[]);
        expect(&r, 200)?;
        list.extend(r.body["alerts"].as_array().cloned().unwrap_or_default());
        match r.body["next"].as_str() {
            Some(next) => path = format!("/v1/admin/alerts?limit=3&after={next}"),
            None => break,
        }
    }
    let status_of = |id: &str| {
        list.iter()
            .find(|a| a["product_id"] == id)
            .map(|a| a["status"].clone())
    };
    ensure!(status_of(&low) == Some(json!("LOW_STOCK")), "{list:?}");
    ensure!(status_of(&out) == Some(json!("OUT_OF_STOCK")), "{list:?}");
    let ids: Vec<&Value> = list.iter().map(|a| &a["product_id"]).collect();
    for (i, id) in ids.iter().enumerate() {
        ensure!(!ids[..i].contains(id), "{id} served twice: {list:?}");
    }
    expect_problem(
        &c.call("GET", "/v1/admin/alerts?after=nope", As::Admin, None, &[]),
        400,
        "invalid_cursor",
    )?;
    expect_problem(&c.get("/v1/admin/alerts"), 401, "unauthorized")
}

fn product_list(c: &Client) -> Result<()> {
    let created: Vec<String> = (0..5).map(|i| product(&format!("list-{i}"))).collect();
    for p in &created {
        stocked(c, p, 3)?;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut path = "/v1/stock?limit=4".to_owned();
    for _ in 0..100_000 {
        let r = c.get(&path);
        expect(&r, 200)?;
        for item in r.body["items"].as_array().cloned().unwrap_or_default() {
            let id = item["product_id"].as_str().unwrap_or_default().to_owned();
            ensure!(!seen.contains(&id), "{id} served twice");
            seen.push(id);
        }
        match r.body["next"].as_str() {
            Some(next) => path = format!("/v1/stock?limit=4&after={next}"),
            None => break,
        }
    }
    for p in &created {
        ensure!(seen.contains(p), "{p} missing from the product list");
    }
    expect_problem(&c.get("/v1/stock?after=1.2.3"), 400, "invalid_cursor")
}

fn sweep(c: &Client) -> Result<()> {
    let p = product("sweep");
    stocked(c, &p, 2)?;
    let res = c.reserve(json!({"product_id": p, "quantity": 1, "ttl_seconds": 1}));
    let expires_at = res.u64("expires_at");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    std::thread::sleep(Duration::from_millis(expires_at.saturating_sub(now) + 200));
    let id = res.body["reservation_id"].clone();
    let mut expired = Vec::new();
    let mut path = "/v1/admin/expire?limit=5".to_owned();
    for _ in 0..10_000 {
        let r = c.call("POST", &path, As::Admin, None, &[]);
        expect(&r, 200)?;
        expired.extend(r.body["expired"].as_array().cloned().unwrap_or_default());
        if r.body["done"] == json!(true) {
            break;
        }
        let next = r.body["next"].as_str().unwrap_or_default();
        path = format!("/v1/admin/expire?limit=5&after={next}");
    }
    // Recorded once: by this sweep, or by the step of it that some write ran before.
    let h = c.get(&format!("/v1/stock/{p}/history"));
    let recorded = h.body["events"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["type"] == "ReservationExpired" && e["data"]["reservation_id"] == id)
                .count()
        })
        .unwrap_or_default();
    ensure!(recorded == 1, "expiry recorded {recorded} times: {}", h.raw);
    ensure!(expired.contains(&id) || recorded == 1, "{expired:?}");
    Ok(())
}

fn idempotency(c: &Client) -> Result<()> {
    let p = product("idem");
    stocked(c, &p, 10)?;
    let key = format!("key-{p}");
    let body = json!({"product_id": p, "quantity": 3}).to_string();
    let reserve = |body: &str| {
        c.call(
            "POST",
            "/v1/reservations",
            As::Service,
            Some(body),
            &[("idempotency-key", key.as_str())],
        )
    };
    let first = reserve(&body);
    expect(&first, 201)?;
    let again = reserve(&body);
    ensure!(again.status == 201 || again.status == 200, "{}", again.raw);
    ensure!(first.body["reservation_id"] == again.body["reservation_id"]);
    ensure!(c.stock(&p).u64("reserved_quantity") == 3);
    let other = reserve(&json!({"product_id": p, "quantity": 4}).to_string());
    expect_problem(&other, 422, "idempotency_key_reused")?;
    let id = first.body["reservation_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let r = c.call(
            "POST",
            &format!("/v1/reservations/{id}/commit"),
            As::Service,
            Some(r#"{"order_id":"o-idem"}"#),
            &[("idempotency-key", "commit-1")],
        );
        expect(&r, 200)?;
    }
    ensure!(c.stock(&p).u64("on_hand") == 7);
    // A reserve retried after its reservation moved on answers with it as it is now.
    let late = reserve(&body);
    ensure!(late.status == 201 || late.status == 200, "{}", late.raw);
    ensure!(late.body["status"] == "COMMITTED", "{}", late.raw);
    ensure!(c.stock(&p).u64("reserved_quantity") == 0);
    let adj = |n: i64| {
        c.call(
            "POST",
            &format!("/v1/stock/{p}/adjustments"),
            As::Admin,
            Some(&json!({"adjustment": n, "reason": "RESTOCK"}).to_string()),
            &[("idempotency-key", "adj-1")],
        )
    };
    expect(&adj(5), 200)?;
    expect(&adj(5), 200)?;
    ensure!(c.stock(&p).u64("on_hand") == 12);
    expect_problem(&adj(6), 422, "idempotency_key_reused")
}

fn bad_bodies(c: &Client) -> Result<()> {
    let p = product("bad");
    stocked(c, &p, 1)?;
    let send = |path: &str, who: As, body: &str| c.call("POST", path, who, Some(body), &[]);
    expect_problem(
        &send("/v1/reservations", As::Service, "{not json"),
        400,
        "malformed_json",
    )?;
    expect_problem(
        &send(
            "/v1/reservations",
            As::Service,
            &json!({"product_id": p, "quantity": 1, "colour": "red"}).to_string(),
        ),
        400,
        "invalid_body",
    )?;
    expect_problem(
        &send("/v1/reservations", As::Service, r#"{"quantity": 1}"#),
        400,
        "invalid_body",
    )?;
    expect_problem(
        &c.call("PUT", &format!("/v1/stock/{p}"), As::Admin, Some("[]"), &[]),
        400,
        "invalid_body",
    )?;
    ensure!(c.stock(&p).u64("on_hand") == 1, "nothing changed");
    Ok(())
}

fn bad_ids_and_quantities(c: &Client) -> Result<()> {
    let p = product("badq");
    stocked(c, &p, 1)?;
    let long = "x".repeat(129);
    expect_problem(&c.stock(&long), 400, "invalid_product_id")?;
    expect_problem(&c.stock("bad%20id"), 400, "invalid_product_id")?;
    expect_problem(
        &c.put_stock(&long, json!({"quantity": 1})),
        400,
        "invalid_product_id",
    )?;
    for q in [json!(0), json!(-1), json!(1_000_000_000_001u64), json!(1.5)] {
        let r = c.reserve(json!({"product_id": p, "quantity": q}));
        expect_problem(&r, 400, "invalid_quantity")?;
    }
    expect_problem(
        &c.put_stock(&p, json!({"quantity": -3})),
        400,
        "invalid_quantity",
    )?;
    expect_problem(
        &c.get(&format!("/v1/stock/{p}/availability?quantity=0")),
        400,
        "invalid_quantity",
    )?;
    expect_problem(
        &c.get(&format!("/v1/stock/{p}/availability")),
        400,
        "invalid_quantity",
    )?;
    expect_problem(
        &c.get(&format!("/v1/stock/{p}/history?limit=many")),
        400,
        "invalid_query",
    )?;
    expect_problem(
        &c.reserve(json!({"product_id": p, "quantity": 1, "ttl_seconds": 0})),
        400,
        "invalid_ttl",
    )?;
    ensure!(c.stock(&p).u64("reserved_quantity") == 0, "nothing changed");
    Ok(())
}

/// Every byte of `id` as a `%XX` escape, in upper or lower case hex.
fn escaped(id: &str, upper: bool) -> String {
    id.bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// The failing input (`PUT /v1/stock/SKU:42`, then `GET /v1/stock/SKU%3A42`) and its whole
/// kind: ids made of every character of the id alphabet, written as is and read, changed
/// and looked up encoded (and the other way round), on every route with an id in its
/// path; the `Location` of a reservation and the `source` of its events are links a
/// client can follow.
fn percent_encoded_ids(c: &Client) -> Result<()> {
    let suffix = product("");
    let sku = format!("SKU:42{suffix}");
    expect(&c.put_stock(&sku, json!({"quantity": 5})), 200)?;
    let r = c.stock(&sku.replace(':', "%3A"));
    expect(&r, 200)?;
    ensure!(r.body["product_id"] == sku.as_str(), "{}", r.raw);

    let alphabet: String = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain("._:-".chars())
        .collect();
    for half in [&alphabet[..33], &alphabet[33..]] {
        let id = format!("{half}{suffix}");
        for (write, read) in [
            (id.clone(), escaped(&id, true)),
            (escaped(&id, false), id.clone()),
        ] {
            expect(&c.put_stock(&write, json!({"quantity": 10})), 200)?;
            let r = c.stock(&read);
            expect(&r, 200)?;
            ensure!(r.body["product_id"] == id.as_str(), "{read}: {}", r.raw);
            let r = c.get(&format!("/v1/stock/{read}/availability?quantity=10"));
            expect(&r, 200)?;
            ensure!(r.body["available"] == true, "{}", r.raw);
            let r = c.post(
                &format!("/v1/stock/{read}/adjustments"),
                As::Admin,
                json!({"adjustment": 2, "reason": "RESTOCK"}),
            );
            expect(&r, 200)?;
            ensure!(r.u64("on_hand") == 12, "{}", r.raw);
            let r = c.get(&format!("/v1/stock/{read}/history"));
            expect(&r, 200)?;
            let events = r.body["events"].as_array().context("events")?;
            ensure!(!events.is_empty(), "{}", r.raw);
            for event in events {
                ensure!(event["subject"] == id.as_str(), "{event}");
                let source = event["source"].as_str().unwrap_or_default();
                let path = source
                    .strip_prefix("/stock-service/products/")
                    .context("source")?;
                ensure!(
                    path == id.replace(':', "%3A"),
                    "source {source} is the id as one path segment"
                );
            }
        }
    }

    let r = c.reserve(json!({"product_id": sku, "quantity": 2}));
    expect(&r, 201)?;
    let id = r.body["reservation_id"].as_str().context("id")?.to_owned();
    ensure!(
        r.header("location") == Some(format!("/v1/reservations/{id}").as_str()),
        "{:?}",
        r.headers
    );
    for read in [escaped(&id, true), escaped(&id, false)] {
        let r = c.get(&format!("/v1/reservations/{read}"));
        expect(&r, 200)?;
        ensure!(r.body["reservation_id"] == id.as_str(), "{}", r.raw);
    }
    let r = c.post(
        &format!("/v1/reservations/{}/commit", escaped(&id, true)),
        As::Service,
        json!({"order_id": format!("order:{suffix}")}),
    );
    expect(&r, 200)?;
    ensure!(r.body["status"] == "COMMITTED", "{}", r.raw);
    let r = c.reserve(json!({"product_id": sku, "quantity": 1}));
    expect(&r, 201)?;
    let other = r.body["reservation_id"].as_str().context("id")?.to_owned();
    let r = c.call(
        "POST",
        &format!("/v1/reservations/{}/release", escaped(&other, false)),
        As::Service,
        None,
        &[],
    );
    expect(&r, 200)?;
    ensure!(r.body["status"] == "RELEASED", "{}", r.raw);
    let r = c.stock(&sku);
    ensure!(
        (r.u64("on_hand"), r.u64("reserved_quantity")) == (3, 0),
        "{}",
        r.raw
    );
    Ok(())
}

/// Escapes that are malformed, that are not UTF-8, or that decode to a character outside
/// the id alphabet are the id's own 400 on every route, and change nothing.
fn bad_escapes_in_ids(c: &Client) -> Result<()> {
    let p = product("esc");
    stocked(c, &p, 4)?;
    for bad in [
        "%ZZ",
        "a%2",
        "a%2Fb",
        "a%2fb",
        "caf%E9",
        "caf%C3%A9",
        "a%20b",
        "%25",
    ] {
        for (method, path, who, code) in [
            (
                "GET",
                format!("/v1/stock/{bad}"),
                As::Anonymous,
                "invalid_product_id",
            ),
            (
                "PUT",
                format!("/v1/stock/{bad}"),
                As::Admin,
                "invalid_product_id",
            ),
            (
                "GET",
                format!("/v1/stock/{bad}/availability?quantity=1"),
                As::Anonymous,
                "invalid_product_id",
            ),
            (
                "POST",
                format!("/v1/stock/{bad}/adjustments"),
                As::Admin,
                "invalid_product_id",
            ),
            (
                "GET",
                format!("/v1/stock/{bad}/history"),
                As::Anonymous,
                "invalid_product_id",
            ),
            (
                "GET",
                format!("/v1/reservations/{bad}"),
                As::Anonymous,
                "invalid_reservation_id",
            ),
            (
                "POST",
                format!("/v1/reservations/{bad}/release"),
                As::Service,
                "invalid_reservation_id",
            ),
            (
                "POST",
                format!("/v1/reservations/{bad}/commit"),
                As::Service,
                "invalid_reservation_id",
            ),
        ] {
            let body = match method {
                "PUT" => Some(r#"{"quantity": 1}"#),
                "POST" if path.ends_with("adjustments") => {
                    Some(r#"{"adjustment": 1, "reason": "RESTOCK"}"#)
                }
                "POST" if path.ends_with("commit") => Some(r#"{"order_id": "o-1"}"#),
                _ => None,
            };
            let r = c.call(method, &path, who, body, &[]);
            expect_problem(&r, 400, code).with_context(|| format!("{method} {path}"))?;
        }
    }
    ensure!(c.stock(&p).u64("on_hand") == 4, "nothing changed");
    Ok(())
}

/// Sends one request as raw bytes (so a test controls every byte of a header) on its own
/// connection; returns the status and whatever followed the response's header block.
fn raw_request(c: &Client, head: &[u8], body: &[u8]) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let addr = c
        .base()
        .strip_prefix("http://")
        .context("an http base URL")?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = head.to_vec();
    request.extend_from_slice(
        format!(
            "\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header block")?;
    let status = std::str::from_utf8(&response[..end])?
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, response[end + 4..].to_vec()))
}

/// Spin reads every request header as UTF-8 and answers 500 with an empty body, before
/// any component runs, when one is not (here an `Idempotency-Key` with the byte 0xE9);
/// a key that is UTF-8 but not visible ASCII reaches the service and is its 400.
fn non_utf8_header(c: &Client) -> Result<()> {
    let p = product("latin1");
    stocked(c, &p, 3)?;
    let body = json!({"product_id": p, "quantity": 1}).to_string();
    let mut head = format!(
        "POST /v1/reservations HTTP/1.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: caf",
        crate::client::SERVICE_TOKEN
    )
    .into_bytes();
    head.push(0xE9);
    let (status, rest) = raw_request(c, &head, body.as_bytes())?;
    ensure!(
        status == 500 && rest.is_empty(),
        "{status} {}",
        String::from_utf8_lossy(&rest)
    );
    let r = c.call(
        "POST",
        "/v1/reservations",
        As::Service,
        Some(&body),
        &[("idempotency-key", "caf\u{e9}")],
    );
    expect_problem(&r, 400, "invalid_idempotency_key")?;
    ensure!(c.stock(&p).u64("reserved_quantity") == 0, "nothing changed");
    Ok(())
}

fn oversized(c: &Client) -> Result<()> {
    let p = product("big");
    let padding = "x".repeat(70 * 1024);
    let body = format!(r#"{{"quantity": 1, "pad": "{padding}"}}"#);
    let r = c.call(
        "PUT",
        &format!("/v1/stock/{p}"),
        As::Admin,
        Some(&body),
        &[],
    );
    expect_problem(&r, 413, "payload_too_large")?;
    expect_problem(&c.stock(&p), 404, "product_not_found")
}

fn tokens(c: &Client) -> Result<()> {
    let p = product("auth");
    let body = json!({"quantity": 5}).to_string();
    let path = format!("/v1/stock/{p}");
    let r = c.call("PUT", &path, As::Anonymous, Some(&body), &[]);
    expect_problem(&r, 401, "unauthorized")?;
    ensure!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer"))
    );
    let r = c.call("PUT", &path, As::Token("wrong"), Some(&body), &[]);
    expect_problem(&r, 403, "forbidden")?;
    // The service token does not open admin routes, nor the admin token service routes.
    let r = c.call("PUT", &path, As::Service, Some(&body), &[]);
    expect_problem(&r, 403, "forbidden")?;
    stocked(c, &p, 5)?;
    let r = c.post(
        "/v1/reservations",
        As::Admin,
        json!({"product_id": p, "quantity": 1}),
    );
    expect_problem(&r, 403, "forbidden")?;
    let r = c.post(
        "/v1/reservations",
        As::Anonymous,
        json!({"product_id": p, "quantity": 1}),
    );
    expect_problem(&r, 401, "unauthorized")?;
    ensure!(
        !r.raw.contains(crate::client::SERVICE_TOKEN)
            && !r.raw.contains(crate::client::ADMIN_TOKEN)
    );
    ensure!(c.stock(&p).u64("reserved_quantity") == 0);
    Ok(())
}

fn not_found_and_methods(c: &Client) -> Result<()> {
    expect_problem(&c.get("/v1/nothing-here"), 404, "not_found")?;
    expect_problem(&c.get("/"), 404, "not_found")?;
    expect_problem(&c.stock("no-such-product-e2e"), 404, "product_not_found")?;
    expect_problem(
        &c.get("/v1/reservations/00000000-0000-4000-8000-000000000000"),
        404,
        "reservation_not_found",
    )?;
    let r = c.call("DELETE", "/v1/stock/whatever", As::Admin, None, &[]);
    expect_problem(&r, 405, "method_not_allowed")?;
    ensure!(r.header("allow").is_some(), "{:?}", r.headers);
    let r = c.call("GET", "/v1/reservations", As::Service, None, &[]);
    expect_problem(&r, 405, "method_not_allowed")
}

fn conflicts_and_gone(c: &Client) -> Result<()> {
    let p = product("conf");
    stocked(c, &p, 4)?;
    let r = c.reserve(json!({"product_id": p, "quantity": 5}));
    expect_problem(&r, 409, "insufficient_stock")?;
    ensure!(r.u64("available_quantity") == 4);
    let res = c.reserve(json!({"product_id": p, "quantity": 2}));
    let id = res.body["reservation_id"].as_str().unwrap().to_owned();
    expect_problem(
        &c.put_stock(&p, json!({"quantity": 1})),
        409,
        "below_reserved",
    )?;
    let commit = |order: &str| {
        c.post(
            &format!("/v1/reservations/{id}/commit"),
            As::Service,
            json!({ "order_id": order }),
        )
    };
    expect(&commit("o-1"), 200)?;
    expect_problem(&commit("o-2"), 409, "order_mismatch")?;
    let release = c.call(
        "POST",
        &format!("/v1/reservations/{id}/release"),
        As::Service,
        None,
        &[],
    );
    expect_problem(&release, 409, "reservation_committed")
}

fn concurrency(c: &Client) -> Result<()> {
    let p = product("flash");
    stocked(c, &p, 500)?;
    let granted = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| {
                let client = Client::new(c.base());
                loop {
                    let r = client.reserve(json!({"product_id": p, "quantity": 1}));
                    match r.status {
                        201 => {
                            granted.fetch_add(1, Ordering::SeqCst);
                        }
                        409 => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        503 => continue,
                        other => panic!("unexpected {other}: {}", r.raw),
                    }
                }
            });
        }
    });
    let granted = granted.into_inner();
    ensure!(
        granted == 500,
        "{granted} reservations granted for 500 units"
    );
    let s = c.stock(&p);
    ensure!(
        s.u64("available_quantity") == 0 && s.u64("reserved_quantity") == 500,
        "{}",
        s.raw
    );
    Ok(())
}

/// Parses one served event with the CloudEvents SDK and checks every attribute the
/// service sets; returns the parsed event.
fn check_cloudevent(json: &Value) -> Result<Event> {
    let event: Event = serde_json::from_value(json.clone())
        .with_context(|| format!("not a CloudEvent: {json}"))?;
    ensure!(event.specversion().as_str() == "1.0", "{json}");
    let subject = event.subject().context("no subject")?.to_owned();
    ensure!(event.id().starts_with(&format!("{subject}:")), "{json}");
    // The source names the product as one path segment: RFC 3986 unreserved characters
    // and percent escapes only (so `SKU:42` is `SKU%3A42`), decoding to the subject.
    let segment = event
        .source()
        .strip_prefix("/stock-service/products/")
        .with_context(|| format!("source is not a product's: {json}"))?;
    ensure!(
        segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
        "source is not one escaped path segment: {json}"
    );
    ensure!(
        percent_decode_str(segment).decode_utf8().ok().as_deref() == Some(subject.as_str()),
        "source does not decode to the subject: {json}"
    );
    const TYPES: [&str; 8] = [
        "StockUpdated",
        "StockAdjusted",
        "StockReserved",
        "StockReleased",
        "StockCommitted",
        "ReservationExpired",
        "LowStockAlert",
        "OutOfStock",
    ];
    ensure!(TYPES.contains(&event.ty()), "{json}");
    ensure!(
        event.datacontenttype() == Some("application/json"),
        "{json}"
    );
    let time = event.time().context("no time")?;
    ensure!(
        Some(time.timestamp_millis()) == json["data"]["time"].as_i64(),
        "time and data.time disagree: {json}"
    );
    let Some(Data::Json(data)) = event.data() else {
        bail!("data is not JSON: {json}");
    };
    ensure!(data["product_id"] == subject.as_str(), "{json}");
    Ok(event)
}

/// Trades on `products` in turn until `stop` is set, through the service at `base_url`: a
/// one-unit reserve each round, every third reservation released, every fifth round a
/// one-unit restock. Returns the number of rounds.
pub fn trade_until(base_url: &str, products: &[String], stop: &AtomicBool) -> u64 {
    let client = Client::new(base_url);
    let mut rounds = 0u64;
    while !stop.load(Ordering::SeqCst) {
        rounds += 1;
        let p = &products[rounds as usize % products.len()];
        let r = client.reserve(json!({"product_id": p, "quantity": 1}));
        if rounds.is_multiple_of(3)
            && let Some(id) = r.body["reservation_id"].as_str()
        {
            client.call(
                "POST",
                &format!("/v1/reservations/{id}/release"),
                As::Service,
                None,
                &[],
            );
        }
        if rounds.is_multiple_of(5) {
            client.post(
                &format!("/v1/stock/{p}/adjustments"),
                As::Admin,
                json!({"adjustment": 1, "reason": "RESTOCK"}),
            );
        }
    }
    rounds
}

/// Raises its flag when dropped. Made inside a `std::thread::scope` beside a writer that
/// runs until the flag is up (`trade_until`), it stops the writer however the scope is
/// left, an early `?` included: otherwise a failed check would leave the scope waiting
/// for the writer for ever instead of failing.
pub struct RaiseOnDrop<'a>(pub &'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Every history event of a product, oldest first.
pub fn history_of(c: &Client, p: &str) -> Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = c.get(&format!("/v1/stock/{p}/history?after={after}&limit=500"));
        expect(&page, 200)?;
        events.extend(page.body["events"].as_array().cloned().unwrap_or_default());
        match page.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => return Ok(events),
        }
    }
}

/// One page of the whole feed (or of one partition) after `cursor`; moves the cursor
/// and returns the events.
fn feed_page(
    c: &Client,
    partition: Option<u64>,
    cursor: &mut Option<String>,
    limit: usize,
) -> Result<Vec<Value>> {
    let mut path = format!("/v1/events?limit={limit}");
    if let Some(p) = partition {
        path.push_str(&format!("&partition={p}"));
    }
    if let Some(after) = cursor {
        path.push_str(&format!("&after={after}"));
    }
    let page = c.get(&path);
    expect(&page, 200)?;
    let events = page.body["events"].as_array().cloned().unwrap_or_default();
    ensure!(events.len() <= limit, "{}", page.raw);
    match &page.body["next_after"] {
        // An empty page may still move the cursor: past slots whose product write died
        // (seen on two Spin nodes over DynamoDB), which serve nothing.
        Value::String(next) => *cursor = Some(next.clone()),
        other => bail!("next_after is {other}"),
    }
    Ok(events)
}

fn feed_under_writes(c: &Client) -> Result<()> {
    const LIMIT: usize = 7;
    let (a, b) = (product("feed-a"), product("feed-b"));
    // The end of the feed as it stands: everything after it is newer than this test.
    let mut cursor = None;
    while feed_page(c, None, &mut cursor, 500)?.len() == 500 {}
    expect(
        &c.put_stock(&a, json!({"quantity": 1000, "low_stock_threshold": 995})),
        200,
    )?;
    stocked(c, &b, 1000)?;
    let stop = AtomicBool::new(false);
    let products = [a.clone(), b.clone()];
    let mut served: Vec<Value> = Vec::new();
    let writes = std::thread::scope(|s| -> Result<u64> {
        let stop_writing = RaiseOnDrop(&stop);
        let writer = s.spawn(|| trade_until(c.base(), &products, &stop));
        // Long enough for the first writes to become final while writes go on.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(FEED_DELAY_MS + 3_000) {
            served.extend(feed_page(c, None, &mut cursor, LIMIT)?);
        }
        ensure!(
            served
                .iter()
                .any(|e| e["subject"] == a.as_str() || e["subject"] == b.as_str()),
            "none of the writes was served while they went on"
        );
        drop(stop_writing);
        let writes = writer.join().expect("the writer thread panicked");
        // Every write has returned: once they are final and a page comes back short,
        // the feed has served them all.
        let stopped = Instant::now();
        let settled = Duration::from_millis(FEED_DELAY_MS + 300);
        loop {
            let page = feed_page(c, None, &mut cursor, LIMIT)?;
            let short = page.len() < LIMIT;
            served.extend(page);
            if short && stopped.elapsed() > settled {
                return Ok(writes);
            }
            ensure!(
                stopped.elapsed() < Duration::from_secs(120),
                "the feed did not catch up"
            );
            if short {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })?;
    ensure!(writes >= 10, "the writer hardly wrote");
    let mut ids = BTreeSet::new();
    for e in &served {
        check_cloudevent(e)?;
        let id = e["id"].as_str().unwrap_or_default().to_owned();
        ensure!(ids.insert(id), "served twice: {e}");
    }
    // Each partition read alone from its start: a and b each in one of them.
    let partitions = c.get("/v1/events?limit=1").body["partitions"]
        .as_u64()
        .unwrap_or_default();
    ensure!(partitions >= 1, "no partition count");
    let mut by_partition: Vec<(u64, Value)> = Vec::new();
    for partition in 0..partitions {
        let mut cursor = None;
        loop {
            let page = feed_page(c, Some(partition), &mut cursor, 500)?;
            let short = page.len() < 500;
            by_partition.extend(
                page.into_iter()
                    .filter(|e| e["subject"] == a.as_str() || e["subject"] == b.as_str())
                    .map(|e| (partition, e)),
            );
            if short {
                break;
            }
        }
    }
    for p in [&a, &b] {
        let history: Vec<Value> = history_of(c, p)?.iter().map(|e| e["id"].clone()).collect();
        let fed: Vec<Value> = served
            .iter()
            .filter(|e| e["subject"] == p.as_str())
            .map(|e| e["id"].clone())
            .collect();
        ensure!(history.len() > 5, "{p}: {history:?}");
        ensure!(
            fed == history,
            "{p}: the feed served {} entries in order, the history has {}",
            fed.len(),
            history.len()
        );
        let of_p: Vec<&(u64, Value)> = by_partition
            .iter()
            .filter(|(_, e)| e["subject"] == p.as_str())
            .collect();
        ensure!(
            of_p.iter().all(|(partition, _)| *partition == of_p[0].0),
            "{p} is served by more than one partition"
        );
        let fed: Vec<Value> = of_p.iter().map(|(_, e)| e["id"].clone()).collect();
        ensure!(
            fed == history,
            "{p}: its partition served {} entries in order, the history has {}",
            fed.len(),
            history.len()
        );
    }
    Ok(())
}

/// A structured-mode CloudEvent from the cart service.
fn cart_event(id: &str, kind: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/e2e/cart-service",
        "type": kind,
        "time": "2026-01-01T12:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn post_event(c: &Client, event: &Value) -> Reply {
    c.call(
        "POST",
        "/v1/events",
        As::Service,
        Some(&event.to_string()),
        &[("content-type", "application/cloudevents+json")],
    )
}

/// `(available, reserved, on_hand)`.
fn levels(c: &Client, p: &str) -> (u64, u64, u64) {
    let s = c.stock(p);
    (
        s.u64("available_quantity"),
        s.u64("reserved_quantity"),
        s.u64("on_hand"),
    )
}

fn inbound_events(c: &Client) -> Result<()> {
    let p = product("ce-in");
    let (cart, abandoned, ordered) = (product("cart-a"), product("cart-b"), product("cart-c"));
    stocked(c, &p, 10)?;
    let id = |n: &str| format!("{p}-{n}");

    let r = post_event(
        c,
        &cart_event(
            &id("1"),
            "CartItemAdded",
            json!({"cart_id": cart, "product_id": p, "quantity": 3}),
        ),
    );
    expect(&r, 200)?;
    ensure!(r.body["duplicate"] == false && r.body["type"] == "CartItemAdded");
    ensure!(r.body["reserved"][0]["status"] == "PENDING", "{}", r.raw);
    ensure!(levels(c, &p) == (7, 3, 10), "{:?}", levels(c, &p));

    let r = post_event(
        c,
        &cart_event(
            &id("2"),
            "com.example.cart.CartItemUpdated",
            json!({"cart_id": cart, "product_id": p, "quantity": 5}),
        ),
    );
    expect(&r, 200)?;
    ensure!(levels(c, &p) == (5, 5, 10), "{:?}", levels(c, &p));

    let r = post_event(
        c,
        &cart_event(
            &id("3"),
            "CartItemRemoved",
            json!({"cart_id": cart, "product_id": p}),
        ),
    );
    expect(&r, 200)?;
    ensure!(levels(c, &p) == (10, 0, 10), "{:?}", levels(c, &p));

    // Binary mode: the attributes as headers, the data as the body (through the
    // forwarding front component, which passes the `ce-*` headers on).
    let data = json!({"cart_id": abandoned, "product_id": p, "quantity": 4}).to_string();
    let r = c.call(
        "POST",
        "/v1/events",
        As::Service,
        Some(&data),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", &id("4")),
            ("ce-source", "%2Fe2e%2Fcart-service"),
            ("ce-type", "CartItemAdded"),
        ],
    );
    expect(&r, 200)?;
    ensure!(r.body["source"] == "/e2e/cart-service", "{}", r.raw);
    ensure!(levels(c, &p) == (6, 4, 10), "{:?}", levels(c, &p));

    let r = post_event(
        c,
        &cart_event(&id("5"), "CartAbandoned", json!({"cart_id": abandoned})),
    );
    expect(&r, 200)?;
    ensure!(r.body["released"][0]["status"] == "RELEASED", "{}", r.raw);
    ensure!(levels(c, &p) == (10, 0, 10), "{:?}", levels(c, &p));

    let r = post_event(
        c,
        &cart_event(
            &id("6"),
            "CartItemAdded",
            json!({"cart_id": ordered, "product_id": p, "quantity": 2}),
        ),
    );
    expect(&r, 200)?;
    let r = post_event(
        c,
        &cart_event(
            &id("7"),
            "OrderConfirmed",
            json!({"cart_id": ordered, "order_id": format!("order-{p}")}),
        ),
    );
    expect(&r, 200)?;
    ensure!(r.body["committed"][0]["status"] == "COMMITTED", "{}", r.raw);
    let s = c.stock(&p);
    ensure!(
        (
            s.u64("on_hand"),
            s.u64("reserved_quantity"),
            s.u64("committed_quantity")
        ) == (8, 0, 2),
        "{}",
        s.raw
    );
    let types: Vec<String> = history_of(c, &p)?
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        types.last().map(String::as_str) == Some("StockCommitted"),
        "{types:?}"
    );
    Ok(())
}

fn redelivery(c: &Client) -> Result<()> {
    let p = product("ce-dup");
    stocked(c, &p, 10)?;
    let event = cart_event(
        &format!("{p}-1"),
        "CartItemAdded",
        json!({"cart_id": product("cart-dup"), "product_id": p, "quantity": 3}),
    );
    expect(&post_event(c, &event), 200)?;
    let history = history_of(c, &p)?.len();
    for _ in 0..2 {
        let r = post_event(c, &event);
        expect(&r, 200)?;
        ensure!(r.body["duplicate"] == true, "{}", r.raw);
    }
    // The same event in binary mode is the same event.
    let r = c.call(
        "POST",
        "/v1/events",
        As::Service,
        Some(&event["data"].to_string()),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", event["id"].as_str().unwrap_or_default()),
            ("ce-source", "/e2e/cart-service"),
            ("ce-type", "CartItemAdded"),
        ],
    );
    expect(&r, 200)?;
    ensure!(r.body["duplicate"] == true, "{}", r.raw);
    ensure!(levels(c, &p) == (7, 3, 10), "{:?}", levels(c, &p));
    ensure!(history_of(c, &p)?.len() == history, "the history grew");
    Ok(())
}

fn bad_events(c: &Client) -> Result<()> {
    let p = product("ce-bad");
    stocked(c, &p, 10)?;
    let cart = product("cart-bad");
    let good = cart_event(
        &format!("{p}-1"),
        "CartItemAdded",
        json!({"cart_id": cart, "product_id": p, "quantity": 1}),
    );
    let with = |name: &str, value: Value| {
        let mut e = good.clone();
        e[name] = value;
        e
    };
    let without = |name: &str| {
        let mut e = good.clone();
        e.as_object_mut().map(|o| o.remove(name));
        e
    };
    expect_problem(
        &post_event(c, &with("type", json!("CartCheckedOut"))),
        400,
        "unknown_event_type",
    )?;
    for bad in [
        without("id"),
        without("source"),
        without("type"),
        without("specversion"),
        with("specversion", json!("0.3")),
        with("data", json!("not an object")),
        without("data"),
    ] {
        expect_problem(&post_event(c, &bad), 400, "invalid_event")?;
    }
    expect_problem(
        &post_event(
            c,
            &with(
                "data",
                json!({"cart_id": cart, "product_id": p, "quantity": 0}),
            ),
        ),
        400,
        "invalid_quantity",
    )?;
    let malformed = c.call(
        "POST",
        "/v1/events",
        As::Service,
        Some("{\"specversion\": \"1.0\", "),
        &[("content-type", "application/cloudevents+json")],
    );
    expect_problem(&malformed, 400, "malformed_json")?;
    let batch = c.call(
        "POST",
        "/v1/events",
        As::Service,
        Some(&format!("[{good}]")),
        &[("content-type", "application/cloudevents-batch+json")],
    );
    expect_problem(&batch, 415, "unsupported_media_type")?;
    let ghost = cart_event(
        &format!("{p}-ghost"),
        "CartItemAdded",
        json!({"cart_id": cart, "product_id": product("ce-ghost"), "quantity": 1}),
    );
    expect_problem(&post_event(c, &ghost), 404, "product_not_found")?;
    let greedy = |quantity: u64| {
        cart_event(
            &format!("{p}-greedy"),
            "CartItemAdded",
            json!({"cart_id": cart, "product_id": p, "quantity": quantity}),
        )
    };
    expect_problem(&post_event(c, &greedy(11)), 409, "insufficient_stock")?;
    // Its id was taken by the refused attempt: sending other content under it is refused.
    expect_problem(&post_event(c, &greedy(1)), 409, "event_id_reused")?;
    let unknown_cart = cart_event(
        &format!("{p}-order"),
        "OrderConfirmed",
        json!({"cart_id": product("cart-none"), "order_id": "o-1"}),
    );
    expect_problem(&post_event(c, &unknown_cart), 404, "cart_not_found")?;
    let send = |who: As| {
        c.call(
            "POST",
            "/v1/events",
            who,
            Some(&good.to_string()),
            &[("content-type", "application/cloudevents+json")],
        )
    };
    expect_problem(&send(As::Anonymous), 401, "unauthorized")?;
    expect_problem(&send(As::Admin), 403, "forbidden")?;
    expect_problem(&c.get("/v1/events?after=bogus"), 400, "invalid_cursor")?;
    expect_problem(&c.get("/v1/events?limit=0"), 400, "invalid_query")?;
    let r = c.call("DELETE", "/v1/events", As::Service, None, &[]);
    expect_problem(&r, 405, "method_not_allowed")?;
    ensure!(r.header("allow") == Some("GET, POST"), "{:?}", r.headers);
    ensure!(levels(c, &p) == (10, 0, 10), "{:?}", levels(c, &p));
    ensure!(history_of(c, &p)?.len() == 1, "only the stock update");
    // Nothing above was recorded as received: the good event applies as new.
    let r = send(As::Service);
    expect(&r, 200)?;
    ensure!(r.body["duplicate"] == false, "{}", r.raw);
    ensure!(levels(c, &p) == (9, 1, 10), "{:?}", levels(c, &p));
    Ok(())
}

/// The webhook deliveries of one product's alerts, parsed, once `count` have arrived.
fn alerts_delivered(p: &str, count: usize) -> Result<Vec<Event>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut events = Vec::new();
        for d in targets::webhook().deliveries() {
            let json: Value = serde_json::from_slice(&d.body)
                .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&d.body)))?;
            if json["subject"] != p {
                continue;
            }
            ensure!(d.method == "POST" && d.path == HOOK_PATH, "{d:?}");
            ensure!(
                d.header("content-type")
                    .is_some_and(|t| t.starts_with("application/cloudevents+json")),
                "{d:?}"
            );
            events.push(check_cloudevent(&json)?);
        }
        if events.len() >= count || Instant::now() > deadline {
            return Ok(events);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alert_webhook(c: &Client) -> Result<()> {
    // Through reserve-stock: low, then out of stock.
    let p = product("hook");
    expect(
        &c.put_stock(&p, json!({"quantity": 5, "low_stock_threshold": 2})),
        200,
    )?;
    expect(&c.reserve(json!({"product_id": p, "quantity": 3})), 201)?;
    expect(&c.reserve(json!({"product_id": p, "quantity": 2})), 201)?;
    let delivered = alerts_delivered(&p, 2)?;
    let alerts: Vec<(String, String)> = history_of(c, &p)?
        .iter()
        .filter(|e| e["type"] == "LowStockAlert" || e["type"] == "OutOfStock")
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default().to_owned(),
                e["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let got: Vec<(String, String)> = delivered
        .iter()
        .map(|e| (e.id().to_owned(), e.ty().to_owned()))
        .collect();
    ensure!(
        alerts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>()
            == ["LowStockAlert", "OutOfStock"],
        "{alerts:?}"
    );
    ensure!(got == alerts, "delivered {got:?}, history has {alerts:?}");

    // Through the chained ingest-events component: a cart takes the last units.
    let q = product("hook-cart");
    stocked(c, &q, 2)?;
    let r = post_event(
        c,
        &cart_event(
            &format!("{q}-1"),
            "CartItemAdded",
            json!({"cart_id": product("cart-hook"), "product_id": q, "quantity": 2}),
        ),
    );
    expect(&r, 200)?;
    let delivered = alerts_delivered(&q, 1)?;
    ensure!(
        delivered.iter().map(|e| e.ty()).collect::<Vec<_>>() == ["OutOfStock"],
        "{delivered:?}"
    );
    Ok(())
}
