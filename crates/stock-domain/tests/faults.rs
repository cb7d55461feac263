//! SPEC §5 as tested properties: a crash after every store call of every mutating
//! operation, false compare-and-swap reports, and many concurrent clients — followed by
//! the invariant checks of `common::World`.

mod common;

use common::*;
use stock_domain::memory::FaultPlan;
use stock_domain::models::*;
use stock_domain::service::*;

/// One mutating operation, run against a prepared world by one instance.
#[derive(Debug, Clone, Copy)]
enum Op {
    Update,
    Adjust,
    ReserveOne,
    ReserveMany,
    ReserveRejected,
    Release,
    Commit,
    ReleaseOne,
    CommitOne,
    Sweep,
    /// Creates a product out of stock: a directory entry and an alert entry.
    CreateOut,
    /// Restocks the product `prepare` left out of stock: it leaves the alert set.
    Restock,
    /// Records every reservation as expired, then, a month on, deletes them all.
    Purge,
}

const OPS: [Op; 13] = [
    Op::Update,
    Op::Adjust,
    Op::ReserveOne,
    Op::ReserveMany,
    Op::ReserveRejected,
    Op::Release,
    Op::Commit,
    Op::ReleaseOne,
    Op::CommitOne,
    Op::Sweep,
    Op::CreateOut,
    Op::Restock,
    Op::Purge,
];

/// The pending reservations `prepare` makes: one of two lines, one of one line (their
/// release and commit take different paths).
struct Held {
    many: ReservationId,
    one: ReservationId,
}

/// Two products with stock, two pending reservations, one reservation about to expire.
fn prepare() -> (World, Held) {
    let w = World::new();
    let svc = w.svc();
    svc.update_stock(update("a", 10)).unwrap();
    svc.update_stock(update("b", 4)).unwrap();
    svc.update_stock(update("z", 0)).unwrap();
    let many = svc.reserve(reserve(&[("a", 2), ("b", 1)])).unwrap();
    // Swept once it is settled: from then on it is filed at its expiry only, so a release
    // or commit that dies half-way is found by what that change files itself.
    w.clock.advance(2_500);
    w.sweep();
    let one = svc.reserve(reserve(&[("b", 1)])).unwrap();
    let mut short = reserve(&[("a", 1)]);
    short.ttl_ms = Some(1_000);
    svc.reserve(short).unwrap();
    let held = Held {
        many: many.reservation_id,
        one: one.reservation_id,
    };
    (w, held)
}

/// Runs `op` with an idempotency key, so that running it again is a client's retry.
fn run(op: Op, svc: &Service, held: &Held, w: &World) -> Result<(), String> {
    let k = key(&format!("{op:?}"));
    match op {
        Op::Update => {
            let mut c = update("a", 12);
            c.idempotency_key = k;
            svc.update_stock(c).map(drop).map_err(|e| e.to_string())
        }
        Op::CreateOut | Op::Restock => {
            let (product, units) = if matches!(op, Op::CreateOut) {
                ("c", 0)
            } else {
                ("z", 5)
            };
            let mut c = update(product, units);
            c.idempotency_key = k;
            svc.update_stock(c).map(drop).map_err(|e| e.to_string())
        }
        Op::Adjust => {
            let mut c = adjust("b", -1, AdjustmentReason::Damage);
            c.idempotency_key = k;
            svc.adjust_stock(c).map(drop).map_err(|e| e.to_string())
        }
        Op::ReserveOne | Op::ReserveMany | Op::ReserveRejected => {
            let lines: &[(&str, u64)] = match op {
                Op::ReserveOne => &[("a", 3)],
                Op::ReserveMany => &[("a", 1), ("b", 2)],
                _ => &[("a", 2), ("b", 9)],
            };
            let mut c = reserve(lines);
            c.idempotency_key = k;
            svc.reserve(c).map(drop).map_err(|e| e.to_string())
        }
        Op::Release => svc.release(&held.many).map(drop).map_err(|e| e.to_string()),
        Op::Commit => svc
            .commit(&held.many, &order("o-1"))
            .map(drop)
            .map_err(|e| e.to_string()),
        Op::ReleaseOne => svc.release(&held.one).map(drop).map_err(|e| e.to_string()),
        Op::CommitOne => svc
            .commit(&held.one, &order("o-1"))
            .map(drop)
            .map_err(|e| e.to_string()),
        Op::Sweep => {
            w.clock.advance(1_000);
            svc.expire_due(None, 100)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Op::Purge => {
            w.clock.advance(16 * 60_000);
            svc.expire_due(None, 100).map_err(|e| e.to_string())?;
            w.clock.advance(31 * 24 * 60 * 60_000);
            svc.expire_due(None, 100)
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

#[test]
fn a_crash_after_any_store_call_loses_nothing_and_the_next_requests_repair() {
    let mut cases = 0;
    for op in OPS {
        let budget = calls_budget(op);
        for crash_after in 0..budget {
            let (mut w, held) = prepare();
            let dying = w.svc_with(FaultPlan {
                crash_after: Some(crash_after),
                ..Default::default()
            });
            let _ = run(op, &dying, &held, &w);
            w.check();
            // The client retries on a healthy instance (same idempotency key), then the
            // sweep finishes whatever was left mid-change.
            let retried = run(op, &w.svc(), &held, &w);
            w.repair();
            w.check_settled();
            w.check_records_agree();
            // The retry adopts whatever the dying request placed.
            assert_eq!(
                w.orphaned_units(&pid("a")) + w.orphaned_units(&pid("b")),
                0,
                "{op:?} crashed after {crash_after} calls: a hold was left behind"
            );
            assert_eq!(
                retried.is_ok(),
                !matches!(op, Op::ReserveRejected),
                "{op:?} crashed after {crash_after} calls, retry gave {retried:?}"
            );
            assert_effect_once(op, &w, &held);
            cases += 1;
        }
    }
    eprintln!("crash cases run: {cases}");
    assert!(cases > 100, "only {cases} crash cases");
}

/// How many store calls `op` makes on a healthy instance (the crash points to try).
fn calls_budget(op: Op) -> u64 {
    let (w, held) = prepare();
    let counting = w.kv.instance(FaultPlan::default());
    let svc = stock_domain::StockService::new(
        counting.clone(),
        w.clock.clone(),
        w.ids.clone(),
        stock_domain::Config::default(),
    );
    run(op, &svc, &held, &w).ok();
    counting.calls() + 1
}

/// The retried operation took effect exactly once. (By then the one-second reservation
/// of `prepare` has expired.)
fn assert_effect_once(op: Op, w: &World, held: &Held) {
    let svc = w.svc();
    let a = svc.get_stock(&pid("a")).unwrap();
    let b = svc.get_stock(&pid("b")).unwrap();
    match op {
        Op::Update => assert_eq!(a.on_hand, 12),
        Op::Adjust => assert_eq!(b.on_hand, 3),
        Op::ReserveOne => assert_eq!(a.reserved_quantity, 2 + 3),
        Op::ReserveMany => {
            assert_eq!(a.reserved_quantity, 2 + 1);
            assert_eq!(b.reserved_quantity, 1 + 1 + 2);
        }
        Op::ReserveRejected => {
            assert_eq!(a.reserved_quantity, 2);
            assert_eq!(b.reserved_quantity, 1 + 1);
        }
        Op::Release => {
            assert_eq!(a.reserved_quantity, 0);
            assert_eq!(b.reserved_quantity, 1);
            let r = svc.get_reservation(&held.many).unwrap();
            assert_eq!(r.status, ReservationStatus::Released);
        }
        Op::Commit => {
            assert_eq!((a.on_hand, a.committed_quantity), (8, 2));
            assert_eq!((b.on_hand, b.committed_quantity), (3, 1));
            let r = svc.get_reservation(&held.many).unwrap();
            assert_eq!(r.status, ReservationStatus::Committed);
        }
        Op::ReleaseOne => {
            assert_eq!((a.reserved_quantity, b.reserved_quantity), (2, 1));
            let r = svc.get_reservation(&held.one).unwrap();
            assert_eq!(r.status, ReservationStatus::Released);
        }
        Op::CommitOne => {
            assert_eq!(
                (b.on_hand, b.committed_quantity, b.reserved_quantity),
                (3, 1, 1)
            );
            assert_eq!(a.committed_quantity, 0);
            let r = svc.get_reservation(&held.one).unwrap();
            assert_eq!(r.status, ReservationStatus::Committed);
            assert_eq!(r.order_id, Some(order("o-1")));
        }
        Op::CreateOut | Op::Restock => {
            let alerts = svc.alerts(None, 100).unwrap().alerts;
            let low: Vec<&str> = alerts.iter().map(|a| a.product_id.as_str()).collect();
            if matches!(op, Op::CreateOut) {
                assert_eq!(svc.get_stock(&pid("c")).unwrap().on_hand, 0);
                let listed = svc.list_products(None, 100).unwrap().items;
                assert_eq!(listed.len(), 4, "a, b, c and z, once each");
                assert!(low.contains(&"c") && low.contains(&"z"), "{low:?}");
            } else {
                assert_eq!(svc.get_stock(&pid("z")).unwrap().on_hand, 5);
                assert!(!low.contains(&"z"), "{low:?}");
            }
        }
        Op::Purge => {
            for id in [&held.many, &held.one] {
                assert!(
                    matches!(
                        svc.get_reservation(id),
                        Err(GetReservationError::NotFound(_))
                    ),
                    "{id} outlived its retention"
                );
            }
            assert!(w.reservations().is_empty(), "{:?}", w.reservations());
            for (p, n) in [("a", 2), ("b", 2)] {
                let expired = svc
                    .history(&pid(p), 0, 100)
                    .unwrap()
                    .entries
                    .iter()
                    .filter(|e| e.kind == EventKind::ReservationExpired)
                    .count();
                assert_eq!(expired, n, "expiries of {p} recorded once each");
            }
        }
        Op::Sweep => {
            let expired = svc
                .history(&pid("a"), 0, 100)
                .unwrap()
                .entries
                .iter()
                .filter(|e| e.kind == EventKind::ReservationExpired)
                .count();
            assert_eq!(expired, 1, "one expiry recorded once");
        }
    }
}

#[test]
fn a_crash_with_no_retry_is_repaired_by_later_requests_alone() {
    for op in OPS {
        for crash_after in 0..calls_budget(op) {
            let (mut w, held) = prepare();
            let dying = w.svc_with(FaultPlan {
                crash_after: Some(crash_after),
                ..Default::default()
            });
            let _ = run(op, &dying, &held, &w);
            w.check();
            w.repair();
            w.check_settled();
            w.check_records_agree();
            // Only a one-line reserve can die leaving a hold no reservation records,
            // and only its own units.
            let orphaned = w.orphaned_units(&pid("a")) + w.orphaned_units(&pid("b"));
            let bound = if matches!(op, Op::ReserveOne) { 3 } else { 0 };
            assert!(
                orphaned <= bound,
                "{op:?} crashed after {crash_after} calls: {orphaned} units orphaned"
            );
        }
    }
}

/// Runs every operation on an instance whose store misreports swaps, then checks it
/// took effect exactly once and everything settles.
fn every_operation_applies_once_on(plan: impl Fn(u64) -> FaultPlan) {
    for (seed, op) in OPS.into_iter().enumerate() {
        let (mut w, held) = prepare();
        let liar = w.svc_with(plan(seed as u64));
        let result = run(op, &liar, &held, &w);
        assert_eq!(
            result.is_ok(),
            !matches!(op, Op::ReserveRejected),
            "{op:?}: {result:?}"
        );
        w.repair();
        w.check_settled();
        w.check_records_agree();
        assert_effect_once(op, &w, &held);
    }
}

#[test]
fn swaps_reported_failed_although_written_apply_exactly_once() {
    every_operation_applies_once_on(|_| FaultPlan {
        false_failure: 1.0,
        ..Default::default()
    });
}

#[test]
fn swaps_reported_written_although_lost_are_caught_and_retried() {
    every_operation_applies_once_on(|seed| FaultPlan {
        seed,
        false_success: 0.5,
        conflict: 0.2,
        ..Default::default()
    });
}

#[test]
fn landed_writes_that_reads_show_only_later_apply_exactly_once() {
    every_operation_applies_once_on(|seed| FaultPlan {
        seed,
        stale_write: 1.0,
        stale_reads: 3,
        ..Default::default()
    });
}

#[test]
fn swaps_reported_failed_although_written_and_read_late_apply_exactly_once() {
    every_operation_applies_once_on(|seed| FaultPlan {
        seed,
        false_failure: 1.0,
        stale_write: 1.0,
        stale_reads: 2,
        ..Default::default()
    });
}

#[test]
fn every_operation_applies_once_on_what_the_dynamodb_store_answers() {
    for round in 0..8 {
        every_operation_applies_once_on(|seed| FaultPlan::dynamo(round * 100 + seed));
    }
}

#[test]
fn a_record_is_created_although_its_birth_increment_fails_or_counts_twice() {
    for seed in 0..32 {
        let mut w = World::new();
        let plan = FaultPlan {
            seed,
            increment_error: 0.5,
            increment_twice: if seed % 2 == 0 { 1.0 } else { 0.0 },
            ..Default::default()
        };
        let created = w.svc_with(plan).update_stock(update("new", 5));
        assert!(created.is_ok(), "seed {seed}: {created:?}");
        assert_eq!(w.svc().get_stock(&pid("new")).unwrap().on_hand, 5);
        w.check_settled();
    }
}

#[test]
fn a_record_whose_creating_swaps_are_misreported_is_still_created_by_its_elected_creator() {
    for seed in 0..32 {
        let mut w = World::new();
        let liar = w.svc_with(FaultPlan {
            seed,
            false_success: 0.5,
            conflict: 0.2,
            ..Default::default()
        });
        let created = liar.update_stock(update("new", 5));
        assert!(created.is_ok(), "seed {seed}: {created:?}");
        assert_eq!(w.svc().get_stock(&pid("new")).unwrap().on_hand, 5);
        w.check_settled();
    }
}

#[test]
fn many_threads_reserving_one_product_never_oversell() {
    reserving_one_product_from_many_threads_grants_exactly_the_stock(|t| FaultPlan {
        seed: t,
        conflict: 0.1,
        false_failure: 0.1,
        ..Default::default()
    });
}

/// The two-node DynamoDB run of the README, in the domain: every grant holds a unit.
#[test]
fn many_threads_reserving_one_product_on_dynamodb_answers_never_oversell() {
    reserving_one_product_from_many_threads_grants_exactly_the_stock(|t| FaultPlan::dynamo(50 + t));
}

fn reserving_one_product_from_many_threads_grants_exactly_the_stock(
    plan: impl Fn(u64) -> FaultPlan,
) {
    let mut w = World::new();
    w.svc().update_stock(update("hot", 100)).unwrap();
    let granted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..16u64 {
            let svc = w.svc_with(plan(t));
            let granted = &granted;
            s.spawn(move || {
                loop {
                    match svc.reserve(reserve(&[("hot", 1)])) {
                        Ok(_) => {
                            granted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(ReserveError::InsufficientStock { .. }) => return,
                        Err(ReserveError::Busy) => continue,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            });
        }
    });
    assert_eq!(granted.into_inner(), 100);
    let s = w.svc().get_stock(&pid("hot")).unwrap();
    assert_eq!((s.available_quantity, s.reserved_quantity), (0, 100));
    w.check_settled();
}

#[test]
fn many_threads_reserving_committing_and_releasing_conserve_stock() {
    let mut w = World::new();
    w.svc().update_stock(update("a", 60)).unwrap();
    w.svc().update_stock(update("b", 60)).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let svc = w.svc_with(FaultPlan::noisy(100 + t));
            s.spawn(move || {
                for i in 0..40u64 {
                    let lines: &[(&str, u64)] = if i % 3 == 0 {
                        &[("a", 1), ("b", 2)]
                    } else {
                        &[("a", 2)]
                    };
                    let Ok(r) = svc.reserve(reserve(lines)) else {
                        continue;
                    };
                    if (i + t) % 2 == 0 {
                        let _ = svc.commit(&r.reservation_id, &order(&format!("o-{t}-{i}")));
                    } else {
                        let _ = svc.release(&r.reservation_id);
                    }
                }
            });
        }
    });
    w.repair();
    w.check_settled();
}

#[test]
fn many_threads_releasing_or_committing_the_same_reservations_apply_each_once() {
    for round in 0..4u64 {
        let mut w = World::new();
        w.svc().update_stock(update("a", 100)).unwrap();
        let ids: Vec<ReservationId> = (0..24)
            .map(|_| {
                w.svc()
                    .reserve(reserve(&[("a", 1)]))
                    .unwrap()
                    .reservation_id
            })
            .collect();
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let svc = w.svc_with(FaultPlan::noisy(1_000 * round + t));
                let ids = &ids;
                s.spawn(move || {
                    for (i, id) in ids.iter().enumerate() {
                        // A third is released by every thread at once, a third committed,
                        // a third left pending; products keep being written meanwhile.
                        let _ = match i % 3 {
                            0 => svc.release(id).map(drop).map_err(drop),
                            1 => svc.commit(id, &order("o")).map(drop).map_err(drop),
                            _ => svc
                                .adjust_stock(adjust("a", 1, AdjustmentReason::Restock))
                                .map(drop)
                                .map_err(drop),
                        };
                    }
                });
            }
        });
        w.repair();
        w.check_settled();
        let committed: u64 = w
            .reservations()
            .iter()
            .filter(|r| r.state == ReservationState::Committed)
            .map(|r| r.lines[0].committed.unwrap_or(0))
            .sum();
        let a = w.svc().get_stock(&pid("a")).unwrap();
        assert_eq!(a.committed_quantity, committed, "round {round}");
    }
}

mod interleavings {
    //! Random interleavings of several clients over a few products, with random faults
    //! and crashes, checking the invariants after every step.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Update {
            product: usize,
            units: u64,
        },
        Adjust {
            product: usize,
            delta: i64,
        },
        Reserve {
            lines: Vec<(usize, u64)>,
            ttl_s: u64,
            key: Option<u8>,
        },
        Release {
            pick: usize,
        },
        Commit {
            pick: usize,
        },
        Lookup {
            pick: usize,
        },
        Sweep,
        Wait {
            ms: u64,
        },
    }

    const PRODUCTS: [&str; 3] = ["p0", "p1", "p2"];

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, 0..20u64).prop_map(|(product, units)| Step::Update { product, units }),
            (0..3usize, -5..6i64)
                .prop_filter("non-zero", |(_, d)| *d != 0)
                .prop_map(|(product, delta)| Step::Adjust { product, delta }),
            (
                prop::collection::vec((0..3usize, 1..5u64), 1..3),
                1..30u64,
                prop::option::of(0..4u8)
            )
                .prop_map(|(lines, ttl_s, key)| Step::Reserve { lines, ttl_s, key }),
            (0..8usize).prop_map(|pick| Step::Release { pick }),
            (0..8usize).prop_map(|pick| Step::Commit { pick }),
            (0..8usize).prop_map(|pick| Step::Lookup { pick }),
            Just(Step::Sweep),
            (1..5_000u64).prop_map(|ms| Step::Wait { ms }),
        ]
    }

    #[derive(Debug, Clone)]
    struct Fault {
        crash_after: Option<u64>,
        conflict: bool,
        liar: bool,
        /// Reads that lag behind writes, increments that fail or count twice.
        dynamo: bool,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        (
            prop::option::weighted(0.3, 0..12u64),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(crash_after, conflict, liar, dynamo)| Fault {
                crash_after,
                conflict,
                liar,
                dynamo,
            })
    }

    fn apply(w: &World, ids: &mut Vec<ReservationId>, step: &Step, fault: &Fault, seed: u64) {
        let svc = w.svc_with(FaultPlan {
            seed,
            crash_after: fault.crash_after,
            conflict: if fault.conflict { 0.3 } else { 0.0 },
            false_failure: if fault.liar { 0.3 } else { 0.0 },
            false_success: if fault.liar { 0.1 } else { 0.0 },
            stale_write: if fault.dynamo { 0.5 } else { 0.0 },
            stale_reads: 2,
            increment_twice: if fault.dynamo { 0.3 } else { 0.0 },
            increment_error: if fault.dynamo { 0.3 } else { 0.0 },
        });
        let pick = |i: usize| ids.get(i % ids.len().max(1)).cloned();
        match step {
            Step::Update { product, units } => {
                let _ = svc.update_stock(update(PRODUCTS[*product], *units));
            }
            Step::Adjust { product, delta } => {
                let reason = if *delta > 0 {
                    AdjustmentReason::Restock
                } else {
                    AdjustmentReason::Loss
                };
                let _ = svc.adjust_stock(adjust(PRODUCTS[*product], *delta, reason));
            }
            Step::Reserve {
                lines,
                ttl_s,
                key: k,
            } => {
                let mut seen = std::collections::BTreeSet::new();
                let lines: Vec<(&str, u64)> = lines
                    .iter()
                    .filter(|(p, _)| seen.insert(*p))
                    .map(|(p, q)| (PRODUCTS[*p], *q))
                    .collect();
                let mut cmd = reserve(&lines);
                cmd.ttl_ms = Some(ttl_s * 1000);
                cmd.idempotency_key = k.and_then(|k| key(&format!("k{k}-{}", lines.len())));
                if let Ok(r) = svc.reserve(cmd) {
                    ids.push(r.reservation_id);
                }
            }
            Step::Release { pick: i } => {
                if let Some(id) = pick(*i) {
                    let _ = svc.release(&id);
                }
            }
            Step::Commit { pick: i } => {
                if let Some(id) = pick(*i) {
                    let _ = svc.commit(&id, &order("o"));
                }
            }
            Step::Lookup { pick: i } => {
                if let Some(id) = pick(*i) {
                    let _ = svc.get_reservation(&id);
                }
            }
            Step::Sweep => {
                let _ = svc.expire_due(None, 100);
            }
            Step::Wait { ms } => w.clock.advance(*ms),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold_after_every_step_and_everything_settles(
            steps in prop::collection::vec((step(), fault()), 1..40)
        ) {
            let mut w = World::new();
            for p in PRODUCTS {
                w.svc().update_stock(update(p, 10)).unwrap();
            }
            let mut ids = Vec::new();
            for (i, (step, fault)) in steps.iter().enumerate() {
                apply(&w, &mut ids, step, fault, i as u64);
                w.check();
            }
            w.repair();
            w.check_settled();
            w.check_records_agree();
        }
    }
}
