//! Every operation's success path and each of its errors, against the in-memory store.

mod common;

use common::*;
use stock_domain::memory::FaultPlan;
use stock_domain::models::*;
use stock_domain::service::*;

fn stocked(world: &World, product: &str, units: u64) {
    world.svc().update_stock(update(product, units)).unwrap();
}

// ---- UpdateStock ----

#[test]
fn update_creates_the_product_with_its_on_hand_and_threshold() {
    let mut w = World::new();
    let mut cmd = update("sku-1", 40);
    cmd.low_stock_threshold = Some(StockLevel::new(5).unwrap());
    let view = w.svc().update_stock(cmd).unwrap();
    assert_eq!(view.on_hand, 40);
    assert_eq!(view.available_quantity, 40);
    assert_eq!(view.low_stock_threshold, 5);
    assert_eq!(view.status, StockStatus::InStock);
    assert_eq!(view.version, 1);
    assert_eq!(view.updated_at, T0);
    assert_eq!(view.warehouses[0].warehouse_id.as_str(), "default");
    w.check();
}

#[test]
fn update_of_a_second_warehouse_adds_to_the_product_totals() {
    let w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = update("p", 5);
    cmd.warehouse_id = wid("lyon");
    let view = w.svc().update_stock(cmd).unwrap();
    assert_eq!(view.on_hand, 15);
    assert_eq!(view.warehouses.len(), 2);
}

#[test]
fn update_below_the_reserved_units_is_refused_and_changes_nothing() {
    let w = World::new();
    stocked(&w, "p", 10);
    w.svc().reserve(reserve(&[("p", 6)])).unwrap();
    let err = w.svc().update_stock(update("p", 5)).unwrap_err();
    assert!(matches!(
        err,
        UpdateStockError::BelowReserved {
            requested: 5,
            reserved: 6
        }
    ));
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 10);
}

#[test]
fn update_retried_with_the_same_idempotency_key_applies_once_and_replays_the_answer() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = update("p", 20);
    cmd.idempotency_key = key("k1");
    let first = w.svc().update_stock(cmd.clone()).unwrap();
    w.svc()
        .adjust_stock(adjust("p", 5, AdjustmentReason::Restock))
        .unwrap();
    let again = w.svc().update_stock(cmd).unwrap();
    assert_eq!(first, again);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 25);
    w.check();
}

#[test]
fn update_reusing_an_idempotency_key_for_another_request_is_refused() {
    let w = World::new();
    let mut cmd = update("p", 20);
    cmd.idempotency_key = key("k1");
    w.svc().update_stock(cmd.clone()).unwrap();
    cmd.quantity = StockLevel::new(21).unwrap();
    assert!(matches!(
        w.svc().update_stock(cmd),
        Err(UpdateStockError::IdempotencyMismatch)
    ));
}

#[test]
fn update_under_endless_contention_reports_busy_and_writes_nothing() {
    let w = World::new();
    let svc = w.svc_with(FaultPlan {
        conflict: 1.0,
        ..Default::default()
    });
    stocked(&w, "p", 1);
    assert!(matches!(
        svc.update_stock(update("p", 9)),
        Err(UpdateStockError::Busy)
    ));
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 1);
}

// ---- AdjustStock ----

#[test]
fn adjust_adds_restocked_units_and_removes_damaged_ones() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let v = w
        .svc()
        .adjust_stock(adjust("p", 7, AdjustmentReason::Restock))
        .unwrap();
    assert_eq!(v.on_hand, 17);
    let v = w
        .svc()
        .adjust_stock(adjust("p", -3, AdjustmentReason::Damage))
        .unwrap();
    assert_eq!(v.on_hand, 14);
    let h = w.svc().history(&pid("p"), 0, 10).unwrap();
    let last = h.entries.last().unwrap();
    assert_eq!(last.kind, EventKind::StockAdjusted);
    assert_eq!(last.quantity, -3);
    assert_eq!(last.reason.as_deref(), Some("DAMAGE"));
    assert_eq!((last.before.on_hand, last.after.on_hand), (17, 14));
    w.check();
}

#[test]
fn adjust_of_an_unknown_product_is_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc()
            .adjust_stock(adjust("nope", 1, AdjustmentReason::Restock)),
        Err(AdjustStockError::ProductNotFound(_))
    ));
}

#[test]
fn adjust_cannot_remove_units_that_are_reserved_or_absent() {
    let w = World::new();
    stocked(&w, "p", 10);
    w.svc().reserve(reserve(&[("p", 8)])).unwrap();
    let err = w
        .svc()
        .adjust_stock(adjust("p", -3, AdjustmentReason::Loss))
        .unwrap_err();
    assert!(matches!(
        err,
        AdjustStockError::InsufficientStock { available: 2 }
    ));
}

#[test]
fn adjust_with_a_reason_of_the_wrong_sign_is_refused() {
    let w = World::new();
    stocked(&w, "p", 10);
    assert!(matches!(
        w.svc()
            .adjust_stock(adjust("p", -1, AdjustmentReason::Restock)),
        Err(AdjustStockError::ReasonMismatch { .. })
    ));
    assert!(matches!(
        w.svc()
            .adjust_stock(adjust("p", 1, AdjustmentReason::Theft)),
        Err(AdjustStockError::ReasonMismatch { .. })
    ));
}

#[test]
fn adjust_beyond_the_maximum_on_hand_is_refused() {
    let w = World::new();
    stocked(&w, "p", MAX_UNITS);
    assert!(matches!(
        w.svc()
            .adjust_stock(adjust("p", 1, AdjustmentReason::Restock)),
        Err(AdjustStockError::TooLarge)
    ));
}

#[test]
fn adjust_retried_with_the_same_key_applies_once_and_a_changed_request_is_refused() {
    let w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = adjust("p", 4, AdjustmentReason::Return);
    cmd.idempotency_key = key("ret-1");
    let a = w.svc().adjust_stock(cmd.clone()).unwrap();
    let b = w.svc().adjust_stock(cmd.clone()).unwrap();
    assert_eq!(a, b);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 14);
    cmd.adjustment = Adjustment::new(5).unwrap();
    assert!(matches!(
        w.svc().adjust_stock(cmd),
        Err(AdjustStockError::IdempotencyMismatch)
    ));
}

#[test]
fn adjust_under_endless_contention_reports_busy() {
    let w = World::new();
    stocked(&w, "p", 1);
    let svc = w.svc_with(FaultPlan {
        conflict: 1.0,
        ..Default::default()
    });
    assert!(matches!(
        svc.adjust_stock(adjust("p", 1, AdjustmentReason::Restock)),
        Err(AdjustStockError::Busy)
    ));
}

// ---- CheckAvailability / GetStock ----

#[test]
fn availability_says_yes_up_to_the_available_quantity() {
    let w = World::new();
    stocked(&w, "p", 10);
    w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    let a = w.svc().check_availability(&pid("p"), qty(6), None).unwrap();
    assert!(a.available);
    assert_eq!(a.available_quantity, 6);
    let a = w.svc().check_availability(&pid("p"), qty(7), None).unwrap();
    assert!(!a.available);
}

#[test]
fn availability_can_be_asked_of_one_warehouse() {
    let w = World::new();
    stocked(&w, "p", 10);
    let a = w
        .svc()
        .check_availability(&pid("p"), qty(1), Some(&wid("elsewhere")))
        .unwrap();
    assert_eq!(a.available_quantity, 0);
}

#[test]
fn availability_of_an_unknown_product_is_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc().check_availability(&pid("x"), qty(1), None),
        Err(CheckAvailabilityError::ProductNotFound(_))
    ));
}

#[test]
fn get_stock_of_an_unknown_product_is_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc().get_stock(&pid("x")),
        Err(GetStockError::ProductNotFound(_))
    ));
}

#[test]
fn batch_read_returns_known_products_and_lists_the_unknown() {
    let w = World::new();
    stocked(&w, "a", 1);
    stocked(&w, "b", 2);
    let batch = w
        .svc()
        .get_stocks(&[pid("a"), pid("zz"), pid("b")])
        .unwrap();
    assert_eq!(batch.items.len(), 2);
    assert_eq!(batch.not_found, vec![pid("zz")]);
}

// ---- ReserveStock ----

#[test]
fn reserve_holds_units_until_the_default_ttl() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let r = w.svc().reserve(reserve(&[("p", 3)])).unwrap();
    assert_eq!(r.status, ReservationStatus::Pending);
    assert_eq!(r.expires_at, T0 + 15 * 60 * 1000);
    assert_eq!(r.lines[0].allocations[0].quantity, 3);
    let s = w.svc().get_stock(&pid("p")).unwrap();
    assert_eq!((s.reserved_quantity, s.available_quantity), (3, 7));
    w.check_settled();
    w.clock.advance(15 * 60 * 1000);
    let s = w.svc().get_stock(&pid("p")).unwrap();
    assert_eq!((s.reserved_quantity, s.available_quantity), (0, 10));
    w.check_settled();
}

#[test]
fn reserve_of_several_lines_is_all_or_nothing() {
    let mut w = World::new();
    stocked(&w, "a", 5);
    stocked(&w, "b", 1);
    let err = w.svc().reserve(reserve(&[("a", 2), ("b", 3)])).unwrap_err();
    assert!(matches!(
        err,
        ReserveError::InsufficientStock { ref product_id, requested: 3, available: 1 }
            if product_id.as_str() == "b"
    ));
    assert_eq!(w.svc().get_stock(&pid("a")).unwrap().available_quantity, 5);
    w.check_settled();
    let ok = w.svc().reserve(reserve(&[("a", 2), ("b", 1)])).unwrap();
    assert_eq!(ok.lines.len(), 2);
    assert_eq!(w.svc().get_stock(&pid("b")).unwrap().available_quantity, 0);
    w.check_settled();
}

#[test]
fn reserve_of_an_unknown_product_is_not_found_and_holds_nothing() {
    let mut w = World::new();
    stocked(&w, "a", 5);
    assert!(matches!(
        w.svc().reserve(reserve(&[("a", 1), ("ghost", 1)])),
        Err(ReserveError::ProductNotFound(p)) if p.as_str() == "ghost"
    ));
    assert_eq!(w.svc().get_stock(&pid("a")).unwrap().reserved_quantity, 0);
    w.check_settled();
}

#[test]
fn reserve_refuses_empty_oversized_and_duplicate_line_lists() {
    let w = World::new();
    stocked(&w, "a", 5);
    assert!(matches!(
        w.svc().reserve(reserve(&[])),
        Err(ReserveError::NoLines)
    ));
    let many: Vec<(String, u64)> = (0..101).map(|i| (format!("p{i}"), 1)).collect();
    let many: Vec<(&str, u64)> = many.iter().map(|(p, q)| (p.as_str(), *q)).collect();
    assert!(matches!(
        w.svc().reserve(reserve(&many)),
        Err(ReserveError::TooManyLines { max: 100 })
    ));
    assert!(matches!(
        w.svc().reserve(reserve(&[("a", 1), ("a", 2)])),
        Err(ReserveError::DuplicateLine(_))
    ));
}

#[test]
fn reserve_refuses_a_ttl_outside_one_second_to_the_maximum() {
    let w = World::new();
    stocked(&w, "a", 5);
    for ttl in [0, 999, 2 * 60 * 60 * 1000 + 1] {
        let mut cmd = reserve(&[("a", 1)]);
        cmd.ttl_ms = Some(ttl);
        assert!(matches!(
            w.svc().reserve(cmd),
            Err(ReserveError::TtlOutOfRange { .. })
        ));
    }
}

#[test]
fn reserve_splits_across_warehouses_fullest_first() {
    let mut w = World::new();
    stocked(&w, "p", 2);
    let mut cmd = update("p", 3);
    cmd.warehouse_id = wid("b");
    w.svc().update_stock(cmd).unwrap();
    let r = w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    let got: Vec<(&str, u64)> = r.lines[0]
        .allocations
        .iter()
        .map(|a| (a.warehouse_id.as_str(), a.quantity))
        .collect();
    assert_eq!(got, vec![("b", 3), ("default", 1)]);
    w.check_settled();
}

#[test]
fn reserve_in_a_named_warehouse_only_uses_that_warehouse() {
    let w = World::new();
    stocked(&w, "p", 5);
    let mut cmd = reserve(&[("p", 1)]);
    cmd.lines[0].warehouse_id = Some(wid("b"));
    assert!(matches!(
        w.svc().reserve(cmd),
        Err(ReserveError::InsufficientStock { available: 0, .. })
    ));
}

#[test]
fn reserve_retried_with_the_same_key_returns_the_same_reservation_once() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = reserve(&[("p", 4)]);
    cmd.idempotency_key = key("cart-7");
    let a = w.svc().reserve(cmd.clone()).unwrap();
    let b = w.svc().reserve(cmd.clone()).unwrap();
    assert_eq!(a.reservation_id, b.reservation_id);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().reserved_quantity, 4);
    cmd.lines[0].quantity = qty(5);
    assert!(matches!(
        w.svc().reserve(cmd),
        Err(ReserveError::IdempotencyMismatch)
    ));
    w.check_settled();
}

#[test]
fn reserve_retried_after_a_refusal_gives_the_same_refusal() {
    let w = World::new();
    stocked(&w, "p", 1);
    let mut cmd = reserve(&[("p", 4)]);
    cmd.idempotency_key = key("k");
    assert!(matches!(
        w.svc().reserve(cmd.clone()),
        Err(ReserveError::InsufficientStock { available: 1, .. })
    ));
    w.svc().update_stock(update("p", 10)).unwrap();
    assert!(matches!(
        w.svc().reserve(cmd),
        Err(ReserveError::InsufficientStock { available: 1, .. })
    ));
}

#[test]
fn reserve_under_endless_contention_reports_busy_and_holds_nothing() {
    let mut w = World::new();
    stocked(&w, "p", 5);
    let svc = w.svc_with(FaultPlan {
        conflict: 1.0,
        ..Default::default()
    });
    assert!(matches!(
        svc.reserve(reserve(&[("p", 1)])),
        Err(ReserveError::Busy)
    ));
    w.repair();
    w.check_settled();
}

// ---- ReleaseReservation ----

#[test]
fn release_gives_units_back_at_once_and_is_idempotent() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let r = w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    let a = w.svc().release(&r.reservation_id).unwrap();
    assert_eq!(a.status, ReservationStatus::Released);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().available_quantity, 10);
    let b = w.svc().release(&r.reservation_id).unwrap();
    assert_eq!(b.status, ReservationStatus::Released);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().available_quantity, 10);
    w.check_settled();
}

#[test]
fn release_of_an_unknown_reservation_is_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc().release(&ReservationId::parse("nope").unwrap()),
        Err(ReleaseError::NotFound(_))
    ));
}

#[test]
fn release_after_commit_is_refused() {
    let w = World::new();
    stocked(&w, "p", 10);
    let r = w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    w.svc().commit(&r.reservation_id, &order("o1")).unwrap();
    assert!(matches!(
        w.svc().release(&r.reservation_id),
        Err(ReleaseError::AlreadyCommitted)
    ));
}

#[test]
fn release_of_a_rejected_reservation_is_refused() {
    let w = World::new();
    stocked(&w, "p", 1);
    let mut cmd = reserve(&[("p", 2)]);
    cmd.idempotency_key = key("k");
    w.svc().reserve(cmd).unwrap_err();
    let id = w.reservations()[0].id.clone();
    assert!(matches!(w.svc().release(&id), Err(ReleaseError::Rejected)));
}

#[test]
fn release_of_an_expired_reservation_changes_nothing() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = reserve(&[("p", 4)]);
    cmd.ttl_ms = Some(1_000);
    let r = w.svc().reserve(cmd).unwrap();
    w.clock.advance(1_000);
    w.svc().reserve(reserve(&[("p", 10)])).unwrap();
    let v = w.svc().release(&r.reservation_id).unwrap();
    assert_eq!(v.status, ReservationStatus::Expired);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().available_quantity, 0);
    w.check_settled();
}

// ---- CommitStock ----

#[test]
fn commit_takes_units_for_good_and_is_idempotent_for_the_same_order() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let r = w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    let c = w.svc().commit(&r.reservation_id, &order("o1")).unwrap();
    assert_eq!(c.status, ReservationStatus::Committed);
    assert_eq!(c.order_id, Some(order("o1")));
    assert_eq!(c.lines[0].committed, Some(4));
    let s = w.svc().get_stock(&pid("p")).unwrap();
    assert_eq!(
        (
            s.on_hand,
            s.reserved_quantity,
            s.available_quantity,
            s.committed_quantity
        ),
        (6, 0, 6, 4)
    );
    let again = w.svc().commit(&r.reservation_id, &order("o1")).unwrap();
    assert_eq!(again.status, ReservationStatus::Committed);
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 6);
    w.check_settled();
}

#[test]
fn one_line_releases_and_commits_are_recorded_with_the_products_next_history_batch() {
    let mut w = World::new();
    stocked(&w, "p", 100);
    let svc = w.svc();
    let committed = svc.reserve(reserve(&[("p", 2)])).unwrap().reservation_id;
    let released = svc.reserve(reserve(&[("p", 3)])).unwrap().reservation_id;
    svc.commit(&committed, &order("o1")).unwrap();
    svc.release(&released).unwrap();
    // Lookups see the outcome at once, before the records are written.
    let seen = svc.get_reservation(&committed).unwrap();
    assert_eq!(
        (seen.status, seen.order_id),
        (ReservationStatus::Committed, Some(order("o1")))
    );
    assert_eq!(
        svc.get_reservation(&released).unwrap().status,
        ReservationStatus::Released
    );
    // A few more writes on the product flush its history, and the records with it.
    for _ in 0..Config::default().outbox_len + 1 {
        let r = svc.reserve(reserve(&[("p", 1)])).unwrap();
        svc.release(&r.reservation_id).unwrap();
    }
    let stored = |id: &ReservationId| {
        w.reservations()
            .into_iter()
            .find(|r| &r.id == id)
            .expect("reservation record")
    };
    let c = stored(&committed);
    assert_eq!(
        (c.state, c.order_id, c.lines[0].committed),
        (ReservationState::Committed, Some(order("o1")), Some(2))
    );
    assert_eq!(stored(&released).state, ReservationState::Released);
    let product: ProductRecord =
        serde_json::from_slice(&w.kv.snapshot()[&stock_domain::storage::keys::product(&pid("p"))])
            .unwrap();
    assert!(
        !product.inflight.contains_key(&committed) && !product.inflight.contains_key(&released),
        "entries of recorded reservations leave the product record: {:?}",
        product.inflight.keys()
    );
    w.check_settled();
}

#[test]
fn commit_to_another_order_is_refused() {
    let w = World::new();
    stocked(&w, "p", 10);
    let r = w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    w.svc().commit(&r.reservation_id, &order("o1")).unwrap();
    assert!(matches!(
        w.svc().commit(&r.reservation_id, &order("o2")),
        Err(CommitError::OrderMismatch { committed_to }) if committed_to == order("o1")
    ));
}

#[test]
fn commit_of_an_expired_reservation_is_gone() {
    let w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = reserve(&[("p", 4)]);
    cmd.ttl_ms = Some(5_000);
    let r = w.svc().reserve(cmd).unwrap();
    w.clock.advance(5_000);
    assert!(matches!(
        w.svc().commit(&r.reservation_id, &order("o")),
        Err(CommitError::Expired { .. })
    ));
    assert_eq!(w.svc().get_stock(&pid("p")).unwrap().on_hand, 10);
}

#[test]
fn commit_after_release_is_refused() {
    let w = World::new();
    stocked(&w, "p", 10);
    let r = w.svc().reserve(reserve(&[("p", 4)])).unwrap();
    w.svc().release(&r.reservation_id).unwrap();
    assert!(matches!(
        w.svc().commit(&r.reservation_id, &order("o")),
        Err(CommitError::AlreadyReleased)
    ));
}

#[test]
fn commit_of_an_unknown_or_rejected_reservation_is_refused() {
    let w = World::new();
    assert!(matches!(
        w.svc()
            .commit(&ReservationId::parse("nope").unwrap(), &order("o")),
        Err(CommitError::NotFound(_))
    ));
    stocked(&w, "p", 1);
    let mut cmd = reserve(&[("p", 2)]);
    cmd.idempotency_key = key("k");
    w.svc().reserve(cmd).unwrap_err();
    let id = w.reservations()[0].id.clone();
    assert!(matches!(
        w.svc().commit(&id, &order("o")),
        Err(CommitError::Rejected)
    ));
}

#[test]
fn commit_of_several_lines_commits_each_product() {
    let mut w = World::new();
    stocked(&w, "a", 3);
    stocked(&w, "b", 3);
    let r = w.svc().reserve(reserve(&[("a", 1), ("b", 2)])).unwrap();
    w.svc().commit(&r.reservation_id, &order("o")).unwrap();
    assert_eq!(w.svc().get_stock(&pid("a")).unwrap().on_hand, 2);
    assert_eq!(w.svc().get_stock(&pid("b")).unwrap().on_hand, 1);
    w.check_settled();
}

// ---- GetReservation ----

#[test]
fn lookup_shows_a_reservation_and_its_expiry() {
    let w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = reserve(&[("p", 1)]);
    cmd.ttl_ms = Some(2_000);
    let r = w.svc().reserve(cmd).unwrap();
    let v = w.svc().get_reservation(&r.reservation_id).unwrap();
    assert_eq!(v.status, ReservationStatus::Pending);
    w.clock.advance(2_000);
    let v = w.svc().get_reservation(&r.reservation_id).unwrap();
    assert_eq!(v.status, ReservationStatus::Expired);
}

#[test]
fn lookup_of_an_unknown_reservation_is_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc().get_reservation(&ReservationId::parse("x").unwrap()),
        Err(GetReservationError::NotFound(_))
    ));
}

#[test]
fn a_reservation_under_an_idempotency_key_is_named_by_a_version_5_uuid_of_the_key() {
    let w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = reserve(&[("p", 1)]);
    cmd.idempotency_key = key("order-7-line-1");
    let first = w.svc().reserve(cmd.clone()).unwrap().reservation_id;
    let again = w.svc().reserve(cmd.clone()).unwrap().reservation_id;
    assert_eq!(first, again);
    let uuid = uuid::Uuid::parse_str(first.as_str()).unwrap();
    assert_eq!(uuid.get_version_num(), 5);
    cmd.idempotency_key = key("order-7-line-2");
    assert_ne!(w.svc().reserve(cmd).unwrap().reservation_id, first);
}

#[test]
fn a_reserve_retried_after_its_reservation_moved_on_answers_with_it_as_it_is_now() {
    let w = World::new();
    stocked(&w, "p", 10);
    stocked(&w, "q", 10);
    for lines in [&[("p", 2)][..], &[("p", 1), ("q", 1)][..]] {
        let mut cmd = reserve(lines);
        cmd.idempotency_key = key(&format!("retry-after-commit-{}", lines.len()));
        let id = w.svc().reserve(cmd.clone()).unwrap().reservation_id;
        w.svc().commit(&id, &order("o-retry")).unwrap();
        let again = w.svc().reserve(cmd.clone()).unwrap();
        assert_eq!(again.reservation_id, id);
        assert_eq!(again.status, ReservationStatus::Committed, "{lines:?}");
        let mut cmd = reserve(lines);
        cmd.idempotency_key = key(&format!("retry-after-release-{}", lines.len()));
        let id = w.svc().reserve(cmd.clone()).unwrap().reservation_id;
        w.svc().release(&id).unwrap();
        assert_eq!(
            w.svc().reserve(cmd).unwrap().status,
            ReservationStatus::Released,
            "{lines:?}"
        );
    }
}

// ---- Expiry sweep ----

#[test]
fn the_sweep_records_each_expiry_once() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let mut cmd = reserve(&[("p", 3)]);
    cmd.ttl_ms = Some(1_000);
    let r = w.svc().reserve(cmd).unwrap();
    assert!(w.svc().expire_due(None, 100).unwrap().expired.is_empty());
    w.clock.advance(1_000);
    let report = w.svc().expire_due(None, 100).unwrap();
    assert_eq!(report.expired, vec![r.reservation_id.clone()]);
    assert!(w.svc().expire_due(None, 100).unwrap().expired.is_empty());
    let h = w.svc().history(&pid("p"), 0, 100).unwrap();
    let expired: Vec<_> = h
        .entries
        .iter()
        .filter(|e| e.kind == EventKind::ReservationExpired)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].reservation_id.as_ref(), Some(&r.reservation_id));
    w.check_settled();
}

/// The due buckets in which `product` is filed for the sweep.
fn filed_buckets(w: &World, product: &str) -> Vec<u64> {
    let entry = stock_domain::indexes::Due::Product(pid(product)).encode();
    w.kv.snapshot()
        .into_iter()
        .filter_map(|(k, v)| {
            let (bucket, _) = k.strip_prefix("due/")?.split_once('/')?;
            let bucket = bucket.parse().ok()?;
            let shard: stock_domain::indexes::DueShard = serde_json::from_slice(&v).ok()?;
            shard.entries.contains_key(&entry).then_some(bucket)
        })
        .collect()
}

#[test]
fn a_product_that_keeps_trading_is_filed_by_its_first_reserve_then_by_the_sweep() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let minute = stock_domain::indexes::DUE_BUCKET_MS;
    let bucket = |at: u64| stock_domain::indexes::due_bucket(at);
    let reserve_for_a_minute = |w: &World| {
        let mut cmd = reserve(&[("p", 1)]);
        cmd.ttl_ms = Some(minute);
        w.svc().reserve(cmd).unwrap().reservation_id
    };
    let first = reserve_for_a_minute(&w);
    let first_lapses = bucket(w.now() + minute);
    assert_eq!(filed_buckets(&w, "p"), vec![first_lapses]);
    w.clock.advance(minute);
    // The product is filed already, from an earlier bucket: this reserve files nothing.
    let second = reserve_for_a_minute(&w);
    let second_lapses = bucket(w.now() + minute);
    assert_ne!(first_lapses, second_lapses);
    assert_eq!(filed_buckets(&w, "p"), vec![first_lapses]);
    w.check();
    w.clock.advance(minute / 2);
    let expired: Vec<_> = w.sweep().into_iter().flat_map(|p| p.expired).collect();
    assert_eq!(expired, vec![first]);
    // Done with the first span, the sweep filed the product at the next.
    assert_eq!(filed_buckets(&w, "p"), vec![second_lapses]);
    w.check();
    w.clock.advance(minute);
    let expired: Vec<_> = w.sweep().into_iter().flat_map(|p| p.expired).collect();
    assert_eq!(expired, vec![second]);
    assert!(filed_buckets(&w, "p").is_empty());
    w.check_settled();
}

#[test]
fn a_sweep_that_was_behind_records_every_lapsed_span_of_a_product_in_one_call() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    let minute = stock_domain::indexes::DUE_BUCKET_MS;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let mut cmd = reserve(&[("p", 1)]);
        cmd.ttl_ms = Some(minute);
        ids.push(w.svc().reserve(cmd).unwrap().reservation_id);
        w.clock.advance(minute);
    }
    // One more, still held when the sweep comes.
    let mut held = reserve(&[("p", 1)]);
    held.ttl_ms = Some(10 * minute);
    let held = w.svc().reserve(held).unwrap().reservation_id;
    w.clock.advance(5 * minute);
    let report = w.svc().expire_due(None, 100).unwrap();
    let mut expired = report.expired.clone();
    expired.sort();
    ids.sort();
    assert_eq!(expired, ids, "{report:?}");
    w.check();
    assert_eq!(
        w.svc().get_reservation(&held).unwrap().status,
        ReservationStatus::Pending
    );
    w.clock.advance(10 * minute);
    let expired: Vec<_> = w.sweep().into_iter().flat_map(|p| p.expired).collect();
    assert_eq!(expired, vec![held]);
    assert!(filed_buckets(&w, "p").is_empty());
    w.check_settled();
}

// ---- History and alerts ----

#[test]
fn history_lists_every_change_in_order_with_paging() {
    let mut w = World::new();
    stocked(&w, "p", 10);
    for _ in 0..12 {
        w.svc()
            .adjust_stock(adjust("p", 1, AdjustmentReason::Restock))
            .unwrap();
    }
    let r = w.svc().reserve(reserve(&[("p", 2)])).unwrap();
    w.svc().commit(&r.reservation_id, &order("o9")).unwrap();
    let first = w.svc().history(&pid("p"), 0, 5).unwrap();
    assert_eq!(first.entries.len(), 5);
    assert_eq!(first.next_after, Some(5));
    let all = w.svc().history(&pid("p"), 0, 100).unwrap();
    let kinds: Vec<EventKind> = all.entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds[0], EventKind::StockUpdated);
    assert_eq!(kinds[13], EventKind::StockReserved);
    assert_eq!(kinds[14], EventKind::StockCommitted);
    assert_eq!(
        all.entries[14].order_id.as_ref().map(OrderId::as_str),
        Some("o9")
    );
    assert_eq!(all.next_after, None);
    w.check_settled();
}

#[test]
fn history_after_the_largest_sequence_is_an_empty_last_page() {
    let w = World::new();
    stocked(&w, "p", 1);
    let page = w.svc().history(&pid("p"), u64::MAX, 10).unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.next_after, None);
}

#[test]
fn history_of_an_unknown_product_is_not_found() {
    let w = World::new();
    assert!(matches!(
        w.svc().history(&pid("x"), 0, 10),
        Err(HistoryError::ProductNotFound(_))
    ));
}

#[test]
fn crossing_the_threshold_and_zero_appends_alert_entries() {
    let w = World::new();
    let mut cmd = update("p", 10);
    cmd.low_stock_threshold = Some(StockLevel::new(3).unwrap());
    w.svc().update_stock(cmd).unwrap();
    w.svc().reserve(reserve(&[("p", 7)])).unwrap();
    w.svc().reserve(reserve(&[("p", 3)])).unwrap();
    let kinds: Vec<EventKind> = w
        .svc()
        .history(&pid("p"), 0, 100)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::StockUpdated,
            EventKind::StockReserved,
            EventKind::LowStockAlert,
            EventKind::StockReserved,
            EventKind::OutOfStock
        ]
    );
}

#[test]
fn the_service_hands_over_each_alert_entry_its_writes_appended_once() {
    let w = World::new();
    let svc = w.svc();
    let mut cmd = update("p", 10);
    cmd.low_stock_threshold = Some(StockLevel::new(3).unwrap());
    svc.update_stock(cmd).unwrap();
    assert!(svc.take_alerts().is_empty());
    svc.reserve(reserve(&[("p", 7)])).unwrap();
    svc.reserve(reserve(&[("p", 3)])).unwrap();
    let alerts = svc.take_alerts();
    let history = svc.history(&pid("p"), 0, 100).unwrap().entries;
    let expected: Vec<HistoryEntry> = history.into_iter().filter(|e| e.kind.is_alert()).collect();
    assert_eq!(alerts, expected);
    assert_eq!(
        alerts.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::LowStockAlert, EventKind::OutOfStock]
    );
    assert!(svc.take_alerts().is_empty(), "drained");
}

#[test]
fn alerts_of_writes_that_did_not_land_or_landed_unseen_are_handed_over_once() {
    for seed in 0..20 {
        let w = World::new();
        let mut cmd = update("p", 4);
        cmd.low_stock_threshold = Some(StockLevel::new(3).unwrap());
        w.svc().update_stock(cmd).unwrap();
        // Lost races, false failures and false successes: whatever the attempts, the
        // one write that landed is the one whose alert is handed over.
        let svc = w.svc_with(FaultPlan {
            seed,
            conflict: 0.3,
            false_failure: 0.3,
            false_success: 0.2,
            ..Default::default()
        });
        loop {
            match svc.reserve(reserve(&[("p", 2)])) {
                Ok(_) => break,
                Err(ReserveError::Busy) => continue,
                Err(e) => panic!("seed {seed}: unexpected {e}"),
            }
        }
        let alerts = svc.take_alerts();
        let expected: Vec<HistoryEntry> = w
            .svc()
            .history(&pid("p"), 0, 100)
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| e.kind.is_alert())
            .collect();
        assert_eq!(expected.len(), 1, "seed {seed}: {expected:?}");
        assert_eq!(alerts, expected, "seed {seed}");
    }
}

#[test]
fn alerts_list_low_and_out_of_stock_products_and_follow_expiries() {
    let w = World::new();
    let mut cmd = update("low", 10);
    cmd.low_stock_threshold = Some(StockLevel::new(5).unwrap());
    w.svc().update_stock(cmd).unwrap();
    stocked(&w, "out", 0);
    stocked(&w, "fine", 100);
    let mut r = reserve(&[("low", 6)]);
    r.ttl_ms = Some(1_000);
    w.svc().reserve(r).unwrap();
    let page = w.svc().alerts(None, 100).unwrap();
    assert_eq!(page.next, None);
    let mut got: Vec<(&str, StockStatus)> = page
        .alerts
        .iter()
        .map(|a| (a.product_id.as_str(), a.status))
        .collect();
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(
        got,
        vec![
            ("low", StockStatus::LowStock),
            ("out", StockStatus::OutOfStock)
        ]
    );
    w.clock.advance(1_000);
    // "low" left its threshold through an expiry alone: still in the set, filtered out.
    let alerts = w.svc().alerts(None, 100).unwrap().alerts;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].product_id.as_str(), "out");
}

// ---- Indexes: product directory, alert pages, sweep pages ----

/// Every page of the product list, from `after` on.
fn all_products(w: &World, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = w.svc().list_products(after.as_deref(), limit).unwrap();
        assert!(page.items.len() <= limit);
        ids.extend(page.items.into_iter().map(|v| v.product_id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

#[test]
fn the_product_list_pages_every_product_once_while_products_are_created() {
    let mut w = World::new();
    let before: Vec<String> = (0..150).map(|i| format!("p{i}")).collect();
    for p in &before {
        stocked(&w, p, 1);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut created = 0;
    loop {
        let page = w.svc().list_products(after.as_deref(), 7).unwrap();
        seen.extend(page.items.iter().map(|v| v.product_id.to_string()));
        // Products created while paging may or may not appear.
        stocked(&w, &format!("new{created}"), 1);
        created += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for p in &before {
        assert_eq!(seen.iter().filter(|s| *s == p).count(), 1, "{p}");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a product was served twice");
    assert_eq!(all_products(&w, 500).len(), 150 + created);
    for bad in ["", "x", "16.0", "01.3", "3.-1", "3"] {
        assert!(
            matches!(
                w.svc().list_products(Some(bad), 10),
                Err(ListProductsError::InvalidCursor(_))
            ),
            "{bad:?}"
        );
    }
    w.check();
}

#[test]
fn a_product_whose_creation_died_after_its_directory_entry_is_listed_once_created() {
    let mut w = World::new();
    stocked(&w, "a", 1);
    // Crash after the directory slot and page are written, before the product record.
    for crash_after in 0..12 {
        let dying = w.svc_with(stock_domain::memory::FaultPlan {
            crash_after: Some(crash_after),
            ..Default::default()
        });
        let _ = dying.update_stock(update("b", 2));
        w.check();
    }
    w.svc().update_stock(update("b", 2)).unwrap();
    let listed = all_products(&w, 1);
    assert_eq!(listed.iter().filter(|p| *p == "b").count(), 1, "{listed:?}");
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[test]
fn alerts_page_through_the_alert_set_and_leave_it_when_restocked() {
    let mut w = World::new();
    for i in 0..20 {
        stocked(&w, &format!("out{i}"), 0);
        stocked(&w, &format!("fine{i}"), 5);
    }
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = w.svc().alerts(after.as_deref(), 3).unwrap();
        ids.extend(page.alerts.iter().map(|a| a.product_id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    ids.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("out{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    // A restock takes the product out of the set itself, not just out of the answer.
    w.svc().update_stock(update("out3", 9)).unwrap();
    let snapshot = w.kv.snapshot();
    let still_filed = snapshot
        .iter()
        .filter(|(k, _)| k.starts_with("alert/"))
        .any(|(_, v)| String::from_utf8_lossy(v).contains("\"out3\""));
    assert!(!still_filed, "out3 is still in the alert set");
    assert_eq!(w.svc().alerts(None, 100).unwrap().alerts.len(), 19);
    w.check();
}

#[test]
fn the_sweep_goes_on_page_by_page_and_says_when_it_is_done() {
    let mut w = World::new();
    stocked(&w, "p", 100);
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut cmd = reserve(&[("p", 1)]);
        cmd.ttl_ms = Some(1_000);
        ids.push(w.svc().reserve(cmd).unwrap().reservation_id);
    }
    let first = w.svc().expire_due(None, 3).unwrap();
    assert!(first.done && first.expired.is_empty(), "{first:?}");
    w.clock.advance(1_000);
    let pages = w.sweep();
    assert!(pages.len() >= 2, "{} pages", pages.len());
    let mut expired: Vec<ReservationId> = pages.iter().flat_map(|p| p.expired.clone()).collect();
    expired.sort();
    ids.sort();
    assert_eq!(expired, ids);
    assert!(matches!(
        w.svc().expire_due(Some("nope"), 3),
        Err(ExpireError::InvalidCursor(_))
    ));
    // Everything dealt with is gone from the index: the next sweep reads nothing due.
    let again = w.svc().expire_due(None, 3).unwrap();
    assert!(again.done && again.expired.is_empty(), "{again:?}");
    w.check_settled();
}
