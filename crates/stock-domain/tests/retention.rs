//! Retention: what the sweep deletes once its retention has passed (settled reservations,
//! ordered or emptied carts, idempotency records, inbound-event markers), what it keeps
//! (history, open carts, pending reservations), and that the store therefore does not
//! grow with the business done, only with the products and their history.

mod common;

use common::*;
use stock_domain::Config;
use stock_domain::indexes::{self, DueDay, DueMark};
use stock_domain::models::*;
use stock_domain::service::*;
use stock_domain::storage::keys;

const HOUR: u64 = 60 * 60 * 1000;
const DAY: u64 = 24 * HOUR;

fn stocked(w: &World, product: &str, units: u64) {
    w.svc().update_stock(update(product, units)).unwrap();
}

fn event(id: &str, kind: InboundKind) -> InboundEvent {
    InboundEvent {
        id: id.to_owned(),
        source: "urn:shop:cart-service".to_owned(),
        kind,
    }
}

fn added(id: &str, cart_id: &str, product: &str, quantity: u64) -> InboundEvent {
    event(
        id,
        InboundKind::CartItemAdded {
            cart_id: CartId::parse(cart_id).unwrap(),
            product_id: pid(product),
            quantity: qty(quantity),
            warehouse_id: None,
        },
    )
}

fn abandoned(id: &str, cart_id: &str) -> InboundEvent {
    event(
        id,
        InboundKind::CartAbandoned {
            cart_id: CartId::parse(cart_id).unwrap(),
        },
    )
}

fn keys_with(w: &World, prefix: &str) -> Vec<String> {
    w.kv.snapshot()
        .into_keys()
        .filter(|k| k.starts_with(prefix))
        .collect()
}

/// Sweeps as cron would, once a minute, from now until `until` has passed; returns how
/// many records were deleted.
fn sweep_every_minute_for(w: &World, span: u64) -> u64 {
    let end = w.now() + span;
    let mut deleted = 0;
    while w.now() < end {
        w.clock.advance(60_000);
        deleted += w.sweep().iter().map(|p| p.deleted).sum::<u64>();
    }
    deleted
}

#[test]
fn settled_reservations_are_kept_for_their_retention_then_deleted() {
    let mut w = World::new();
    stocked(&w, "p", 20);
    stocked(&w, "q", 20);
    let svc = w.svc();
    let committed = svc.reserve(reserve(&[("p", 1)])).unwrap().reservation_id;
    svc.commit(&committed, &order("o-1")).unwrap();
    let released = svc.reserve(reserve(&[("p", 1)])).unwrap().reservation_id;
    svc.release(&released).unwrap();
    let lapsing = svc.reserve(reserve(&[("p", 1)])).unwrap().reservation_id;
    let several = svc
        .reserve(reserve(&[("p", 1), ("q", 1)]))
        .unwrap()
        .reservation_id;
    svc.commit(&several, &order("o-2")).unwrap();
    let mut refused = reserve(&[("q", 99)]);
    refused.idempotency_key = key("too-many");
    assert!(svc.reserve(refused.clone()).is_err());
    let pending = {
        let mut long = reserve(&[("q", 1)]);
        long.ttl_ms = Some(2 * HOUR);
        svc.reserve(long).unwrap().reservation_id
    };
    let history_before = w.svc().history(&pid("p"), 0, 100).unwrap().entries.len();

    // A day on: the expiry is recorded, the refused answer has outlived its key.
    sweep_every_minute_for(&w, DAY + 60_000);
    let lapsed = svc.get_reservation(&lapsing).unwrap();
    assert_eq!(lapsed.status, ReservationStatus::Expired);
    assert!(matches!(
        svc.reserve(refused.clone()),
        Err(ReserveError::InsufficientStock { .. })
    ));
    for id in [&committed, &released, &several, &pending] {
        assert!(svc.get_reservation(id).is_ok(), "{id} deleted too early");
    }

    // Thirty days after they settled, every settled reservation is gone.
    let deleted = sweep_every_minute_for(&w, 30 * DAY);
    assert!(deleted >= 5, "{deleted} deleted");
    for id in [&committed, &released, &several, &lapsing, &pending] {
        assert!(
            matches!(
                svc.get_reservation(id),
                Err(GetReservationError::NotFound(_))
            ),
            "{id} outlived its retention"
        );
    }
    assert!(keys_with(&w, keys::RESERVATION_PREFIX).is_empty());
    // History is the audit trail: kept whole.
    let history = w.svc().history(&pid("p"), 0, 100).unwrap().entries;
    assert!(history.len() > history_before, "the expiry is recorded");
    assert!(
        history
            .iter()
            .any(|e| e.kind == EventKind::ReservationExpired
                && e.reservation_id.as_ref() == Some(&lapsing))
    );
    w.check();
}

#[test]
fn idempotency_records_answer_retries_for_a_day_then_are_deleted() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = adjust("p", 1, AdjustmentReason::Restock);
    cmd.idempotency_key = key("restock-1");
    let first = w.svc().adjust_stock(cmd.clone()).unwrap();
    w.clock.advance(23 * HOUR);
    w.sweep();
    assert_eq!(w.svc().adjust_stock(cmd.clone()).unwrap(), first);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 11);
    assert_eq!(keys_with(&w, "idem/").len(), 1);
    sweep_every_minute_for(&w, 2 * HOUR);
    assert!(keys_with(&w, "idem/").is_empty());
    // After its retention the key is forgotten: a retry is still recognised while the
    // product's ring of recent operations holds it, but after enough other writes the
    // same request applies again.
    for _ in 0..100 {
        w.svc()
            .adjust_stock(adjust("p", 1, AdjustmentReason::Restock))
            .unwrap();
    }
    assert_eq!(w.svc().adjust_stock(cmd).unwrap().on_hand, 112);
    w.check();
}

#[test]
fn inbound_markers_are_kept_a_week_and_closed_carts_thirty_days() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let svc = w.svc();
    svc.ingest(added("e1", "ordered", "p", 2)).unwrap();
    svc.ingest(event(
        "e2",
        InboundKind::OrderConfirmed {
            cart_id: CartId::parse("ordered").unwrap(),
            order_id: order("o-1"),
        },
    ))
    .unwrap();
    svc.ingest(added("e3", "emptied", "p", 1)).unwrap();
    svc.ingest(abandoned("e4", "emptied")).unwrap();
    svc.ingest(added("e5", "open", "p", 1)).unwrap();
    assert_eq!(keys_with(&w, "idem/ingest/").len(), 5);

    sweep_every_minute_for(&w, 7 * DAY + HOUR);
    assert!(keys_with(&w, "idem/ingest/").is_empty());
    assert_eq!(keys_with(&w, keys::CART_PREFIX).len(), 3);

    sweep_every_minute_for(&w, 23 * DAY);
    // The open cart is kept, whatever its age; the ordered and the emptied are gone.
    assert_eq!(
        keys_with(&w, keys::CART_PREFIX),
        vec![format!("{}open", keys::CART_PREFIX)]
    );
    assert!(keys_with(&w, "birth/cart/").len() <= 1);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().committed_quantity, 2);
    w.check();
}

#[test]
fn an_emptied_cart_that_gets_lines_again_is_kept() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let svc = w.svc();
    svc.ingest(added("e1", "c", "p", 1)).unwrap();
    svc.ingest(abandoned("e2", "c")).unwrap();
    w.clock.advance(DAY);
    svc.ingest(added("e3", "c", "p", 1)).unwrap();
    sweep_every_minute_for(&w, 31 * DAY);
    assert_eq!(keys_with(&w, keys::CART_PREFIX).len(), 1);
    w.check();
}

#[test]
fn the_store_holds_products_and_history_whatever_the_business_done() {
    let mut w = World::new();
    for p in ["a", "b", "c"] {
        stocked(&w, p, 1_000);
    }
    let baseline = |w: &World| {
        w.kv.snapshot()
            .into_keys()
            .filter(|k| !k.starts_with("hist/"))
            .count()
    };
    // Ten days of trade: every hour, reservations committed, released and left to lapse,
    // idempotent adjustments and cart events.
    let mut hour = 0;
    let mut peak = 0;
    while hour < 240 {
        let svc = w.svc();
        for p in ["a", "b", "c"] {
            let r = svc.reserve(reserve(&[(p, 1)])).unwrap().reservation_id;
            svc.commit(&r, &order(&format!("o-{hour}-{p}"))).unwrap();
            let r = svc.reserve(reserve(&[(p, 1)])).unwrap().reservation_id;
            svc.release(&r).unwrap();
            svc.reserve(reserve(&[(p, 1)])).unwrap();
            let mut restock = adjust(p, 2, AdjustmentReason::Restock);
            restock.idempotency_key = key(&format!("restock-{hour}-{p}"));
            svc.adjust_stock(restock).unwrap();
        }
        svc.ingest(added(&format!("e-{hour}"), &format!("cart-{hour}"), "a", 1))
            .unwrap();
        svc.ingest(abandoned(&format!("x-{hour}"), &format!("cart-{hour}")))
            .unwrap();
        sweep_every_minute_for(&w, HOUR);
        peak = peak.max(baseline(&w));
        // The sweep reads the mark's day list: it lists only what lies ahead.
        let snapshot = w.kv.snapshot();
        let mark: DueMark = serde_json::from_slice(&snapshot[indexes::keys::DUE_MARK]).unwrap();
        for (k, v) in snapshot.range("due/day/".to_owned()..) {
            if !k.starts_with("due/day/") {
                break;
            }
            let day: DueDay = serde_json::from_slice(v).unwrap();
            assert!(
                day.buckets.iter().all(|b| *b >= mark.bucket),
                "{k} still lists minutes behind the mark"
            );
        }
        hour += 1;
    }
    // Then a quiet stretch longer than every retention.
    sweep_every_minute_for(&w, 31 * DAY);
    let left: Vec<String> =
        w.kv.snapshot()
            .into_keys()
            // History, and the feed pages that list its slots, are kept for ever.
            .filter(|k| {
                let feed_page = k.starts_with("feed/") && !k.ends_with("/head");
                !k.starts_with("hist/") && !feed_page
            })
            .collect();
    for prefix in ["res/", "idem/", "cart/", "birth/cart/", "birth/idem/"] {
        assert!(
            left.iter().all(|k| !k.starts_with(prefix)),
            "{prefix} records outlived their retention: {left:?}"
        );
    }
    // Products, their directory and birth counters, the alert shards, the due mark and
    // the feed partitions' heads.
    let kept = [
        "stock/",
        "birth/stock/",
        "dir/",
        "birth/dir/",
        "dirseq/",
        "alert/",
        "birth/alert/",
        "due/mark",
        "birth/due/mark",
        "feed/",
        "birth/feed/",
    ];
    for k in &left {
        assert!(kept.iter().any(|p| k.starts_with(p)), "{k} is left");
    }
    assert!(peak < 10_000, "peak {peak}");
    w.check();
}

#[test]
fn a_month_of_quiet_costs_the_sweep_a_read_a_day() {
    let w = World::new();
    stocked(&w, "p", 10);
    w.svc().reserve(reserve(&[("p", 1)])).unwrap();
    w.clock.advance(60 * DAY);
    let reads_before = w.kv.calls();
    let pages = w.sweep();
    let reads = w.kv.calls() - reads_before;
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert!(reads < 200, "{reads} store calls for 60 quiet days");
}

#[test]
fn retention_is_configurable() {
    let w = World::new();
    let svc = stock_domain::StockService::new(
        w.kv.instance(Default::default()),
        w.clock.clone(),
        w.ids.clone(),
        Config {
            settled_retention_ms: HOUR,
            ..Config::default()
        },
    );
    svc.update_stock(update("p", 5)).unwrap();
    let r = svc.reserve(reserve(&[("p", 1)])).unwrap().reservation_id;
    svc.release(&r).unwrap();
    w.clock.advance(16 * 60_000);
    svc.expire_due(None, 100).unwrap();
    w.clock.advance(HOUR);
    let deleted: u64 = (0..3)
        .map(|_| svc.expire_due(None, 100).unwrap().deleted)
        .sum();
    assert_eq!(deleted, 1);
    assert!(matches!(
        svc.get_reservation(&r),
        Err(GetReservationError::NotFound(_))
    ));
}

#[test]
fn writes_alone_record_expiries_and_apply_retention() {
    let w = World::new();
    let svc = stock_domain::StockService::new(
        w.kv.instance(Default::default()),
        w.clock.clone(),
        w.ids.clone(),
        Config {
            settled_retention_ms: HOUR,
            sweep_every_writes: 4,
            ..Config::default()
        },
    );
    svc.update_stock(update("p", 1_000)).unwrap();
    let mut first = reserve(&[("p", 1)]);
    first.ttl_ms = Some(1_000);
    let lapsing = svc.reserve(first).unwrap().reservation_id;
    // Two hours of trade, one reserve and release a minute, and no call to the sweep.
    for _ in 0..120 {
        w.clock.advance(60_000);
        let r = svc.reserve(reserve(&[("p", 1)])).unwrap().reservation_id;
        svc.release(&r).unwrap();
    }
    let expired = w
        .svc()
        .history(&pid("p"), 0, 500)
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.kind == EventKind::ReservationExpired)
        .count();
    assert_eq!(expired, 1);
    assert!(matches!(
        svc.get_reservation(&lapsing),
        Err(GetReservationError::NotFound(_))
    ));
    let left = keys_with(&w, keys::RESERVATION_PREFIX).len();
    assert!(
        left < 70,
        "{left} reservations kept after an hour's retention"
    );
}
