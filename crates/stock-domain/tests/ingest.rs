//! Cart and order events: each event's effect on stock, redelivery as a no-op, and a
//! crash after every store call of every event followed by its redelivery.

mod common;

use common::*;
use stock_domain::memory::FaultPlan;
use stock_domain::models::*;
use stock_domain::service::*;
use stock_domain::storage::{self, keys};

const SOURCE: &str = "urn:shop:cart-service";

fn event(id: &str, kind: InboundKind) -> InboundEvent {
    InboundEvent {
        id: id.to_owned(),
        source: SOURCE.to_owned(),
        kind,
    }
}

fn cart(id: &str) -> CartId {
    CartId::parse(id).unwrap()
}

fn added(id: &str, cart_id: &str, product: &str, quantity: u64) -> InboundEvent {
    event(
        id,
        InboundKind::CartItemAdded {
            cart_id: cart(cart_id),
            product_id: pid(product),
            quantity: qty(quantity),
            warehouse_id: None,
        },
    )
}

fn updated(id: &str, cart_id: &str, product: &str, quantity: u64) -> InboundEvent {
    event(
        id,
        InboundKind::CartItemUpdated {
            cart_id: cart(cart_id),
            product_id: pid(product),
            quantity,
        },
    )
}

fn removed(id: &str, cart_id: &str, product: &str) -> InboundEvent {
    event(
        id,
        InboundKind::CartItemRemoved {
            cart_id: cart(cart_id),
            product_id: pid(product),
        },
    )
}

fn abandoned(id: &str, cart_id: &str) -> InboundEvent {
    event(
        id,
        InboundKind::CartAbandoned {
            cart_id: cart(cart_id),
        },
    )
}

fn confirmed(id: &str, cart_id: &str, order_id: &str) -> InboundEvent {
    event(
        id,
        InboundKind::OrderConfirmed {
            cart_id: cart(cart_id),
            order_id: order(order_id),
        },
    )
}

fn stocked(w: &World, product: &str, units: u64) {
    w.svc().update_stock(update(product, units)).unwrap();
}

fn stock(w: &World, product: &str) -> StockView {
    w.svc().get_stock(&pid(product)).unwrap()
}

fn held(w: &World, product: &str) -> u64 {
    stock(w, product).reserved_quantity
}

fn cart_record(w: &World, cart_id: &str) -> Option<CartRecord> {
    storage::read(&w.kv, &keys::cart(&cart(cart_id))).unwrap()
}

fn line_quantity(w: &World, cart_id: &str, product: &str) -> Option<u64> {
    cart_record(w, cart_id)?
        .lines
        .get(&pid(product))
        .map(CartLine::quantity)
}

// ---- Each event's effect ----

#[test]
fn an_added_item_holds_its_units_for_the_default_ttl() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    let outcome = w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    assert!(!outcome.duplicate);
    assert_eq!(outcome.reserved.len(), 1);
    let r = &outcome.reserved[0];
    assert_eq!(r.status, ReservationStatus::Pending);
    assert_eq!(r.expires_at, T0 + 15 * 60 * 1000);
    assert_eq!(held(&w, "a"), 3);
    assert_eq!(line_quantity(&w, "c1", "a"), Some(3));
    w.check_settled();
    w.clock.advance(15 * 60 * 1000);
    assert_eq!(held(&w, "a"), 0);
}

#[test]
fn adding_a_product_already_in_the_cart_raises_its_line_to_the_sum() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(added("e2", "c1", "a", 2)).unwrap();
    assert_eq!(held(&w, "a"), 5);
    assert_eq!(line_quantity(&w, "c1", "a"), Some(5));
    w.check_settled();
}

#[test]
fn an_added_item_names_its_warehouse_and_its_line_keeps_it() {
    let w = World::new();
    stocked(&w, "a", 10);
    let mut other = update("a", 4);
    other.warehouse_id = wid("lyon");
    w.svc().update_stock(other).unwrap();
    let mut e = added("e1", "c1", "a", 1);
    if let InboundKind::CartItemAdded { warehouse_id, .. } = &mut e.kind {
        *warehouse_id = Some(wid("lyon"));
    }
    w.svc().ingest(e).unwrap();
    let outcome = w.svc().ingest(updated("e2", "c1", "a", 3)).unwrap();
    let allocations = &outcome.reserved[0].lines[0].allocations;
    assert_eq!(allocations.len(), 1);
    assert_eq!(allocations[0].warehouse_id, wid("lyon"));
}

#[test]
fn an_added_item_beyond_the_stock_or_of_an_unknown_product_is_refused_and_holds_nothing() {
    let mut w = World::new();
    stocked(&w, "a", 2);
    assert!(matches!(
        w.svc().ingest(added("e1", "c1", "a", 3)),
        Err(IngestError::InsufficientStock {
            requested: 3,
            available: 2,
            ..
        })
    ));
    assert!(matches!(
        w.svc().ingest(added("e2", "c1", "ghost", 1)),
        Err(IngestError::ProductNotFound(p)) if p == pid("ghost")
    ));
    assert_eq!(held(&w, "a"), 0);
    assert_eq!(cart_record(&w, "c1"), None);
    w.check_settled();
}

#[test]
fn an_updated_item_replaces_its_holds_with_one_of_the_new_total() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    let first = w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(added("e2", "c1", "a", 1)).unwrap();
    let outcome = w.svc().ingest(updated("e3", "c1", "a", 2)).unwrap();
    assert_eq!(held(&w, "a"), 2);
    assert_eq!(outcome.reserved.len(), 1);
    assert_eq!(outcome.released.len(), 2);
    assert!(
        outcome
            .released
            .iter()
            .all(|r| r.status == ReservationStatus::Released)
    );
    assert!(
        outcome
            .released
            .iter()
            .any(|r| r.reservation_id == first.reserved[0].reservation_id)
    );
    let record = cart_record(&w, "c1").unwrap();
    assert_eq!(record.lines[&pid("a")].holds.len(), 1);
    assert!(record.superseded.is_empty(), "released holds are pruned");
    w.check_settled();
}

#[test]
fn an_update_of_a_product_not_in_the_cart_adds_the_line() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    w.svc().ingest(updated("e1", "c1", "a", 4)).unwrap();
    assert_eq!(held(&w, "a"), 4);
    assert_eq!(line_quantity(&w, "c1", "a"), Some(4));
    w.check_settled();
}

#[test]
fn an_update_that_cannot_be_served_is_refused_and_keeps_the_old_hold() {
    let mut w = World::new();
    stocked(&w, "a", 6);
    let first = w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    // The new total is reserved before the old hold is released: 4 more are not there.
    assert!(matches!(
        w.svc().ingest(updated("e2", "c1", "a", 4)),
        Err(IngestError::InsufficientStock {
            requested: 4,
            available: 3,
            ..
        })
    ));
    assert_eq!(held(&w, "a"), 3);
    let record = cart_record(&w, "c1").unwrap();
    assert_eq!(
        record.lines[&pid("a")].holds[0].reservation_id,
        first.reserved[0].reservation_id
    );
    w.check_settled();
}

#[test]
fn an_update_to_zero_removes_the_line() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    let outcome = w.svc().ingest(updated("e2", "c1", "a", 0)).unwrap();
    assert_eq!(outcome.released.len(), 1);
    assert_eq!(held(&w, "a"), 0);
    assert_eq!(line_quantity(&w, "c1", "a"), None);
    w.check_settled();
}

#[test]
fn an_update_beyond_the_maximum_quantity_is_invalid() {
    let w = World::new();
    stocked(&w, "a", 10);
    assert!(matches!(
        w.svc().ingest(updated("e1", "c1", "a", MAX_UNITS + 1)),
        Err(IngestError::InvalidQuantity(QuantityError::TooLarge))
    ));
}

#[test]
fn a_removed_item_gives_its_units_back_and_leaves_the_other_lines() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    stocked(&w, "b", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(added("e2", "c1", "b", 2)).unwrap();
    let outcome = w.svc().ingest(removed("e3", "c1", "a")).unwrap();
    assert_eq!(outcome.released.len(), 1);
    assert_eq!((held(&w, "a"), held(&w, "b")), (0, 2));
    assert_eq!(line_quantity(&w, "c1", "a"), None);
    assert_eq!(line_quantity(&w, "c1", "b"), Some(2));
    w.check_settled();
}

#[test]
fn removing_a_product_not_in_the_cart_changes_nothing() {
    let w = World::new();
    stocked(&w, "a", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    let before = cart_record(&w, "c1");
    let outcome = w.svc().ingest(removed("e2", "c1", "b")).unwrap();
    assert_eq!(outcome, IngestOutcome::default());
    assert_eq!(cart_record(&w, "c1"), before);
}

#[test]
fn removing_from_or_abandoning_a_cart_never_seen_changes_nothing() {
    let w = World::new();
    assert_eq!(
        w.svc().ingest(removed("e1", "c9", "a")).unwrap(),
        IngestOutcome::default()
    );
    assert_eq!(
        w.svc().ingest(abandoned("e2", "c9")).unwrap(),
        IngestOutcome::default()
    );
    assert_eq!(cart_record(&w, "c9"), None);
}

#[test]
fn an_abandoned_cart_gives_every_line_back() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    stocked(&w, "b", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(added("e2", "c1", "a", 1)).unwrap();
    w.svc().ingest(added("e3", "c1", "b", 2)).unwrap();
    let outcome = w.svc().ingest(abandoned("e4", "c1")).unwrap();
    assert_eq!(outcome.released.len(), 3);
    assert_eq!((held(&w, "a"), held(&w, "b")), (0, 0));
    let record = cart_record(&w, "c1").unwrap();
    assert!(record.lines.is_empty() && record.superseded.is_empty());
    w.check_settled();
}

#[test]
fn a_confirmed_order_commits_every_line_of_the_cart() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    stocked(&w, "b", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(added("e2", "c1", "a", 1)).unwrap();
    w.svc().ingest(added("e3", "c1", "b", 2)).unwrap();
    let outcome = w.svc().ingest(confirmed("e4", "c1", "o-1")).unwrap();
    assert_eq!(outcome.committed.len(), 3);
    assert!(
        outcome.committed.iter().all(|r| {
            r.status == ReservationStatus::Committed && r.order_id == Some(order("o-1"))
        })
    );
    assert!(outcome.uncommitted.is_empty());
    let (a, b) = (stock(&w, "a"), stock(&w, "b"));
    assert_eq!(
        (a.on_hand, a.reserved_quantity, a.committed_quantity),
        (6, 0, 4)
    );
    assert_eq!(
        (b.on_hand, b.reserved_quantity, b.committed_quantity),
        (8, 0, 2)
    );
    assert_eq!(cart_record(&w, "c1").unwrap().order_id, Some(order("o-1")));
    w.check_settled();
}

#[test]
fn a_confirmed_order_for_a_cart_never_seen_is_cart_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc().ingest(confirmed("e1", "c9", "o-1")),
        Err(IngestError::CartNotFound(c)) if c == cart("c9")
    ));
}

#[test]
fn an_ordered_cart_refuses_changes_and_other_orders_but_accepts_abandonment() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(confirmed("e2", "c1", "o-1")).unwrap();
    let closed = |r: Result<IngestOutcome, IngestError>| match r {
        Err(IngestError::CartClosed { order_id, .. }) => order_id == order("o-1"),
        _ => false,
    };
    assert!(closed(w.svc().ingest(added("e3", "c1", "a", 1))));
    assert!(closed(w.svc().ingest(updated("e4", "c1", "a", 1))));
    assert!(closed(w.svc().ingest(removed("e5", "c1", "a"))));
    assert!(closed(w.svc().ingest(confirmed("e6", "c1", "o-2"))));
    let outcome = w.svc().ingest(abandoned("e7", "c1")).unwrap();
    assert!(outcome.released.is_empty());
    let a = stock(&w, "a");
    assert_eq!(
        (a.on_hand, a.reserved_quantity, a.committed_quantity),
        (7, 0, 3)
    );
    w.check_settled();
}

#[test]
fn a_confirmed_order_reports_holds_that_lapsed_as_uncommitted() {
    let mut w = World::new();
    stocked(&w, "a", 10);
    stocked(&w, "b", 10);
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.clock.advance(10 * 60 * 1000);
    w.svc().ingest(added("e2", "c1", "b", 2)).unwrap();
    w.clock.advance(6 * 60 * 1000);
    let outcome = w.svc().ingest(confirmed("e3", "c1", "o-1")).unwrap();
    assert_eq!(outcome.committed.len(), 1);
    assert_eq!(outcome.uncommitted.len(), 1);
    assert_eq!(outcome.uncommitted[0].status, ReservationStatus::Expired);
    assert_eq!(stock(&w, "a").on_hand, 10);
    assert_eq!(stock(&w, "b").on_hand, 8);
    w.check_settled();
}

#[test]
fn an_event_without_an_id_or_a_source_is_refused() {
    let w = World::new();
    let mut e = abandoned("", "c1");
    assert!(matches!(
        w.svc().ingest(e.clone()),
        Err(IngestError::MissingEventId)
    ));
    e.id = "e1".into();
    e.source = String::new();
    assert!(matches!(
        w.svc().ingest(e),
        Err(IngestError::MissingEventId)
    ));
}

// ---- Redelivery ----

/// A cart `c1` holding 2 of `a` and 1 of `b`, out of 10 and 5.
fn prepare() -> World {
    let w = World::new();
    stocked(&w, "a", 10);
    stocked(&w, "b", 5);
    w.svc().ingest(added("prep-a", "c1", "a", 2)).unwrap();
    w.svc().ingest(added("prep-b", "c1", "b", 1)).unwrap();
    w
}

/// One event of each kind, applied to `prepare`'s world.
#[derive(Debug, Clone, Copy)]
enum Ev {
    AddMore,
    AddToNewCart,
    Update,
    Remove,
    Abandon,
    Confirm,
}

const EVENTS: [Ev; 6] = [
    Ev::AddMore,
    Ev::AddToNewCart,
    Ev::Update,
    Ev::Remove,
    Ev::Abandon,
    Ev::Confirm,
];

fn the_event(ev: Ev) -> InboundEvent {
    match ev {
        Ev::AddMore => added("ev", "c1", "a", 3),
        Ev::AddToNewCart => added("ev", "c2", "b", 2),
        Ev::Update => updated("ev", "c1", "a", 4),
        Ev::Remove => removed("ev", "c1", "a"),
        Ev::Abandon => abandoned("ev", "c1"),
        Ev::Confirm => confirmed("ev", "c1", "o-1"),
    }
}

/// The event took effect exactly once, and the cart has nothing left to finish.
fn assert_effect_once(ev: Ev, w: &World) {
    let (a, b) = (stock(w, "a"), stock(w, "b"));
    let expected_held = match ev {
        Ev::AddMore => (5, 1),
        Ev::AddToNewCart => (2, 3),
        Ev::Update => (4, 1),
        Ev::Remove => (0, 1),
        Ev::Abandon | Ev::Confirm => (0, 0),
    };
    assert_eq!(
        (a.reserved_quantity, b.reserved_quantity),
        expected_held,
        "{ev:?}"
    );
    let committed = match ev {
        Ev::Confirm => (2, 1),
        _ => (0, 0),
    };
    assert_eq!(
        (a.committed_quantity, b.committed_quantity),
        committed,
        "{ev:?}"
    );
    assert_eq!((a.on_hand, b.on_hand), (10 - committed.0, 5 - committed.1));
    let c1 = cart_record(w, "c1").unwrap();
    assert!(c1.superseded.is_empty(), "{ev:?}: {c1:?}");
    let lines = |c: &CartRecord| -> Vec<(String, u64)> {
        c.lines
            .iter()
            .map(|(p, l)| (p.to_string(), l.quantity()))
            .collect()
    };
    let expected_lines: &[(&str, u64)] = match ev {
        Ev::AddMore => &[("a", 5), ("b", 1)],
        Ev::AddToNewCart | Ev::Confirm => &[("a", 2), ("b", 1)],
        Ev::Update => &[("a", 4), ("b", 1)],
        Ev::Remove => &[("b", 1)],
        Ev::Abandon => &[],
    };
    let expected_lines: Vec<(String, u64)> = expected_lines
        .iter()
        .map(|(p, q)| (p.to_string(), *q))
        .collect();
    assert_eq!(lines(&c1), expected_lines, "{ev:?}");
    if let Ev::AddToNewCart = ev {
        let c2 = cart_record(w, "c2").unwrap();
        assert_eq!(lines(&c2), vec![("b".to_owned(), 2)]);
    }
}

#[test]
fn redelivering_any_event_changes_nothing_in_the_store() {
    for ev in EVENTS {
        let w = prepare();
        let first = w.svc().ingest(the_event(ev)).unwrap();
        assert!(!first.duplicate, "{ev:?}");
        let before = w.kv.snapshot();
        let again = w.svc().ingest(the_event(ev)).unwrap();
        assert!(again.duplicate, "{ev:?}");
        assert_eq!(w.kv.snapshot(), before, "{ev:?} changed the store again");
        assert_effect_once(ev, &w);
    }
}

#[test]
fn a_redelivery_after_later_events_of_the_cart_is_still_a_no_op() {
    let mut w = prepare();
    w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    w.svc().ingest(removed("e2", "c1", "a")).unwrap();
    w.svc().ingest(added("e3", "c1", "a", 1)).unwrap();
    let again = w.svc().ingest(added("e1", "c1", "a", 3)).unwrap();
    assert!(again.duplicate);
    let again = w.svc().ingest(removed("e2", "c1", "a")).unwrap();
    assert!(again.duplicate);
    assert_eq!(held(&w, "a"), 1);
    assert_eq!(line_quantity(&w, "c1", "a"), Some(1));
    w.check_settled();
}

#[test]
fn the_same_event_id_from_another_source_is_another_event() {
    let w = prepare();
    let mut e = added("prep-a", "c1", "a", 2);
    e.source = "urn:shop:other-cart-service".into();
    let outcome = w.svc().ingest(e).unwrap();
    assert!(!outcome.duplicate);
    assert_eq!(held(&w, "a"), 4);
}

#[test]
fn a_redelivered_refusal_is_refused_again_even_once_stock_is_back() {
    let w = World::new();
    stocked(&w, "a", 1);
    let e = added("e1", "c1", "a", 2);
    assert!(matches!(
        w.svc().ingest(e.clone()),
        Err(IngestError::InsufficientStock { available: 1, .. })
    ));
    stocked(&w, "a", 10);
    assert!(matches!(
        w.svc().ingest(e),
        Err(IngestError::InsufficientStock { available: 1, .. })
    ));
    assert_eq!(held(&w, "a"), 0);
}

#[test]
fn a_redelivery_with_another_content_than_the_first_delivery_is_refused() {
    // The first delivery dies once its reservation is placed, before the cart records it.
    for crash_after in 0.. {
        let w = prepare();
        let dying = w.svc_with(FaultPlan {
            crash_after: Some(crash_after),
            ..Default::default()
        });
        if dying.ingest(added("e1", "c1", "a", 3)).is_ok() {
            panic!("never crashed between reserving and recording");
        }
        let placed = w
            .reservations()
            .iter()
            .any(|r| r.state == ReservationState::Pending && r.lines[0].quantity == 3);
        if !placed {
            continue;
        }
        assert!(matches!(
            w.svc().ingest(added("e1", "c1", "a", 4)),
            Err(IngestError::EventIdReused(_))
        ));
        return;
    }
}

// ---- Faults ----

/// How many store calls an event makes on a healthy instance (the crash points to try).
fn calls_budget(ev: Ev) -> u64 {
    let w = prepare();
    let counting = w.kv.instance(FaultPlan::default());
    let svc = stock_domain::StockService::new(
        counting.clone(),
        w.clock.clone(),
        w.ids.clone(),
        stock_domain::Config::default(),
    );
    svc.ingest(the_event(ev)).unwrap();
    counting.calls() + 1
}

#[test]
fn a_crash_after_any_store_call_then_redelivery_applies_each_event_once() {
    let mut cases = 0;
    for ev in EVENTS {
        for crash_after in 0..calls_budget(ev) {
            let mut w = prepare();
            let dying = w.svc_with(FaultPlan {
                crash_after: Some(crash_after),
                ..Default::default()
            });
            let _ = dying.ingest(the_event(ev));
            w.check();
            let redelivered = w.svc().ingest(the_event(ev));
            assert!(
                redelivered.is_ok(),
                "{ev:?} crashed after {crash_after} calls, redelivery gave {redelivered:?}"
            );
            w.repair();
            w.check_settled();
            assert_effect_once(ev, &w);
            cases += 1;
        }
    }
    eprintln!("crash cases run: {cases}");
    assert!(cases > 100, "only {cases} crash cases");
}

#[test]
fn a_crash_without_redelivery_leaves_stock_consistent_and_the_event_still_applicable() {
    for ev in EVENTS {
        for crash_after in 0..calls_budget(ev) {
            let mut w = prepare();
            let dying = w.svc_with(FaultPlan {
                crash_after: Some(crash_after),
                ..Default::default()
            });
            let _ = dying.ingest(the_event(ev));
            w.repair();
            w.check_settled();
            w.svc().ingest(the_event(ev)).unwrap();
            w.check_settled();
            assert_effect_once(ev, &w);
        }
    }
}

#[test]
fn swaps_misreported_by_the_store_still_apply_each_event_once() {
    for (seed, ev) in EVENTS.into_iter().enumerate() {
        for plan in [
            FaultPlan {
                false_failure: 1.0,
                ..Default::default()
            },
            FaultPlan {
                seed: seed as u64,
                false_success: 0.5,
                conflict: 0.2,
                ..Default::default()
            },
        ] {
            let mut w = prepare();
            let liar = w.svc_with(plan.clone());
            let outcome = liar.ingest(the_event(ev));
            assert!(outcome.is_ok(), "{ev:?} under {plan:?}: {outcome:?}");
            w.repair();
            w.check_settled();
            assert_effect_once(ev, &w);
        }
    }
}

#[test]
fn an_event_under_endless_contention_reports_busy_and_its_redelivery_applies_it() {
    let mut w = prepare();
    let svc = w.svc_with(FaultPlan {
        conflict: 1.0,
        ..Default::default()
    });
    assert!(matches!(
        svc.ingest(the_event(Ev::Update)),
        Err(IngestError::Busy)
    ));
    w.svc().ingest(the_event(Ev::Update)).unwrap();
    w.repair();
    w.check_settled();
    assert_effect_once(Ev::Update, &w);
}

#[test]
fn concurrent_events_on_one_cart_keep_its_lines_and_the_holds_in_step() {
    let mut w = World::new();
    stocked(&w, "a", 1_000);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let svc = w.svc_with(FaultPlan::noisy(200 + t));
            s.spawn(move || {
                for i in 0..12u64 {
                    let id = format!("t{t}-{i}");
                    let e = if i % 4 == 3 {
                        updated(&id, "c1", "a", 2)
                    } else {
                        added(&id, "c1", "a", 1)
                    };
                    // A relay redelivers until the event is acknowledged.
                    while let Err(err) = svc.ingest(e.clone()) {
                        assert!(matches!(err, IngestError::Busy), "{id}: {err}");
                    }
                }
            });
        }
    });
    let record = cart_record(&w, "c1").unwrap();
    assert!(record.superseded.is_empty(), "{record:?}");
    assert_eq!(line_quantity(&w, "c1", "a"), Some(held(&w, "a")));
    w.repair();
    w.check_settled();
}
