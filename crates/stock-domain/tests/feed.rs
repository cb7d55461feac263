//! The global event feed: one order over every product's history, a settling horizon,
//! and a cursor that pages through it without skipping or repeating while writes go on.

mod common;

use common::*;
use stock_domain::memory::FaultPlan;
use stock_domain::models::*;
use stock_domain::ports::Clock;
use stock_domain::service::*;

type Position = (u64, String, u64);

fn position(e: &HistoryEntry) -> Position {
    (e.time, e.product_id.to_string(), e.seq)
}

/// Every entry of every product, in feed order, read through the per-product history.
fn all_entries(svc: &Service, products: &[&str]) -> Vec<Position> {
    let mut all = Vec::new();
    for p in products {
        let mut after = 0;
        loop {
            let Ok(page) = svc.history(&pid(p), after, 50) else {
                break;
            };
            all.extend(page.entries.iter().map(position));
            match page.next_after {
                Some(n) => after = n,
                None => break,
            }
        }
    }
    all.sort();
    all
}

/// Pages from `after` until a page comes back empty.
fn drain(svc: &Service, mut after: Option<FeedCursor>, limit: usize) -> Vec<Position> {
    let mut served = Vec::new();
    loop {
        let page = svc.feed(after.as_ref(), limit).unwrap();
        if page.entries.is_empty() {
            assert_eq!(page.next, after, "an empty page keeps the cursor");
            return served;
        }
        served.extend(page.entries.iter().map(position));
        after = page.next;
    }
}

#[test]
fn the_feed_orders_entries_of_every_product_by_time_then_product_then_sequence() {
    let w = World::new();
    let svc = w.svc();
    svc.update_stock(update("b", 10)).unwrap();
    svc.update_stock(update("a", 10)).unwrap();
    w.clock.advance(10);
    svc.reserve(reserve(&[("b", 2), ("a", 1)])).unwrap();
    w.clock.advance(10);
    svc.adjust_stock(adjust("a", 1, AdjustmentReason::Restock))
        .unwrap();
    w.clock.advance(FEED_SETTLE_MS + 1);

    let page = svc.feed(None, 100).unwrap();
    let got: Vec<(u64, &str, u64, EventKind)> = page
        .entries
        .iter()
        .map(|e| (e.time - T0, e.product_id.as_str(), e.seq, e.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "a", 1, EventKind::StockUpdated),
            (0, "b", 1, EventKind::StockUpdated),
            (10, "a", 2, EventKind::StockReserved),
            (10, "b", 2, EventKind::StockReserved),
            (20, "a", 3, EventKind::StockAdjusted),
        ]
    );
    assert_eq!(
        page.next.map(|c| c.to_string()),
        Some(format!("{}.3.a", T0 + 20))
    );
}

#[test]
fn entries_are_served_only_once_older_than_the_settling_horizon() {
    let w = World::new();
    let svc = w.svc();
    svc.update_stock(update("p", 10)).unwrap();
    let page = svc.feed(None, 10).unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.next, None);

    w.clock.advance(FEED_SETTLE_MS);
    assert!(svc.feed(None, 10).unwrap().entries.is_empty());
    w.clock.advance(1);
    let page = svc.feed(None, 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    let cursor = page.next.unwrap();

    svc.adjust_stock(adjust("p", 2, AdjustmentReason::Restock))
        .unwrap();
    let page = svc.feed(Some(&cursor), 10).unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(
        page.next,
        Some(cursor.clone()),
        "nothing new keeps the cursor"
    );

    w.clock.advance(FEED_SETTLE_MS + 1);
    let page = svc.feed(Some(&cursor), 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].kind, EventKind::StockAdjusted);
}

#[test]
fn a_cursor_string_that_the_feed_did_not_issue_is_refused_when_parsed() {
    for bad in [
        "",
        "garbage",
        "12.3",
        "12..p",
        ".3.p",
        "x.3.p",
        "12.x.p",
        "-12.3.p",
        "+12.3.p",
        "12.3.not/a/product",
        "99999999999999999999999.3.p",
    ] {
        assert_eq!(FeedCursor::parse(bad), Err(InvalidCursor), "{bad:?}");
    }
    let issued = FeedCursor::parse("1700000000000.7.sku.1").unwrap();
    assert_eq!(issued.to_string(), "1700000000000.7.sku.1");
}

#[test]
fn a_page_after_a_recent_cursor_reads_a_few_keys_however_long_the_history() {
    let w = World::new();
    let svc = w.svc();
    svc.update_stock(update("quiet", 10)).unwrap();
    svc.update_stock(update("long", 10)).unwrap();
    for _ in 0..300 {
        w.clock.advance(1_000);
        svc.adjust_stock(adjust("long", 1, AdjustmentReason::Restock))
            .unwrap();
    }
    w.clock.advance(FEED_SETTLE_MS + 1);
    let cursor = svc.feed(None, 295).unwrap().next;

    let counting = w.kv.instance(FaultPlan::default());
    let reader = stock_domain::StockService::new(
        counting.clone(),
        w.clock.clone(),
        w.ids.clone(),
        stock_domain::Config::default(),
    );
    let page = reader.feed(cursor.as_ref(), 3).unwrap();
    assert_eq!(page.entries.len(), 3);
    assert!(
        counting.calls() < 20,
        "{} store calls for a page of 3",
        counting.calls()
    );
}

mod paging_while_writing {
    //! Random interleavings of writes, clock advances and page reads.

    use super::*;
    use proptest::prelude::*;

    const PRODUCTS: [&str; 4] = ["p0", "p1", "p.2", "p3"];

    #[derive(Debug, Clone)]
    enum Step {
        Write { product: usize, action: u8 },
        Wait { ms: u64 },
        Page { limit: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => (0..4usize, 0..5u8).prop_map(|(product, action)| Step::Write { product, action }),
            2 => (0..3_000u64).prop_map(|ms| Step::Wait { ms }),
            2 => (1..5usize).prop_map(|limit| Step::Page { limit }),
        ]
    }

    fn write(svc: &Service, product: usize, action: u8) {
        let p = PRODUCTS[product];
        let _ = match action {
            0 => svc.update_stock(update(p, 20)).map(drop).map_err(drop),
            1 => svc
                .adjust_stock(adjust(p, 1, AdjustmentReason::Restock))
                .map(drop)
                .map_err(drop),
            2 => {
                let mut cmd = reserve(&[(p, 1)]);
                cmd.ttl_ms = Some(1_000);
                svc.reserve(cmd).map(drop).map_err(drop)
            }
            3 => svc
                .reserve(reserve(&[(p, 1), (PRODUCTS[(product + 1) % 4], 1)]))
                .map(drop)
                .map_err(drop),
            _ => svc.expire_due(None, 100).map(drop).map_err(drop),
        };
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn pages_read_between_writes_serve_every_entry_exactly_once_in_order(
            steps in prop::collection::vec(step(), 1..120)
        ) {
            let w = World::new();
            let svc = w.svc();
            let mut cursor: Option<FeedCursor> = None;
            let mut served: Vec<Position> = Vec::new();
            for step in &steps {
                match step {
                    Step::Write { product, action } => write(&svc, *product, *action),
                    Step::Wait { ms } => w.clock.advance(*ms),
                    Step::Page { limit } => {
                        let page = svc.feed(cursor.as_ref(), *limit).unwrap();
                        prop_assert!(page.entries.len() <= *limit);
                        let horizon = w.clock.now_ms() - FEED_SETTLE_MS;
                        prop_assert!(page.entries.iter().all(|e| e.time < horizon));
                        served.extend(page.entries.iter().map(position));
                        cursor = page.next;
                    }
                }
            }
            w.clock.advance(FEED_SETTLE_MS + 1);
            served.extend(drain(&svc, cursor, 7));
            prop_assert!(
                served.windows(2).all(|p| p[0] < p[1]),
                "served out of order or twice: {served:?}"
            );
            prop_assert_eq!(served, all_entries(&svc, &PRODUCTS));
        }
    }
}
