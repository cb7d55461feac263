//! The partitioned event feed: each product's entries in one partition, in its order;
//! slots filed once per open window, not once per write; entries served once final; and
//! cursors that page without skipping or repeating while writes go on, at a cost bounded
//! by the page size.

mod common;

use std::collections::BTreeMap;

use common::*;
use stock_domain::indexes::{self, FeedHead};
use stock_domain::memory::FaultPlan;
use stock_domain::models::*;
use stock_domain::service::*;
use stock_domain::{Config, StockService};

/// A product's entries as served: (product, seq).
type Served = BTreeMap<String, Vec<u64>>;

fn with_partitions(partitions: u64) -> World {
    let mut w = World::new();
    w.config.feed_partitions = partitions;
    w
}

/// Pages one read (a partition, or all) from `after` until a page comes back empty.
fn drain(
    svc: &Service,
    partition: Option<u64>,
    mut after: Option<FeedCursor>,
    limit: usize,
) -> (Vec<HistoryEntry>, FeedCursor) {
    let mut served = Vec::new();
    loop {
        let page = svc.feed(partition, after.as_ref(), limit).unwrap();
        assert!(page.entries.len() <= limit);
        if page.entries.is_empty() {
            if let Some(after) = &after {
                assert_eq!(&page.next, after, "an empty page keeps the cursor");
            }
            return (served, page.next);
        }
        served.extend(page.entries);
        after = Some(page.next);
    }
}

fn by_product(entries: &[HistoryEntry]) -> Served {
    let mut served = Served::new();
    for e in entries {
        served
            .entry(e.product_id.to_string())
            .or_default()
            .push(e.seq);
    }
    served
}

fn head(w: &World, partition: u64) -> FeedHead {
    w.kv.snapshot()
        .get(&indexes::keys::feed_head(partition))
        .map(|b| serde_json::from_slice(b).unwrap())
        .unwrap_or_default()
}

#[test]
fn each_product_is_served_by_one_partition_in_its_order_and_the_whole_feed_serves_every_entry_once()
{
    let mut w = with_partitions(4);
    let svc = w.svc();
    let products = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for p in products {
        svc.update_stock(update(p, 10)).unwrap();
    }
    for (i, p) in products.iter().enumerate() {
        w.clock.advance(400 * i as u64);
        svc.reserve(reserve(&[(p, 1), (products[(i + 1) % 8], 2)]))
            .unwrap();
        svc.adjust_stock(adjust(p, -1, AdjustmentReason::Damage))
            .unwrap();
    }
    w.clock.advance(FEED_DELAY_MS);

    let mut per_partition = Served::new();
    for partition in 0..4 {
        let (entries, _) = drain(&svc, Some(partition), None, 3);
        for e in &entries {
            assert_eq!(
                indexes::feed_partition(&e.product_id, 4),
                partition,
                "{} served by partition {partition}",
                e.product_id
            );
        }
        for (product, seqs) in by_product(&entries) {
            assert!(per_partition.insert(product, seqs).is_none());
        }
    }
    let (all, _) = drain(&svc, None, None, 5);
    let expected: Served = products
        .iter()
        .map(|p| (p.to_string(), (1..=4).collect()))
        .collect();
    assert_eq!(by_product(&all), expected);
    assert_eq!(per_partition, expected);
    w.check();
}

#[test]
fn entries_are_served_once_final_and_a_page_with_nothing_final_keeps_the_cursor() {
    let w = World::new();
    let svc = w.svc();
    let partition = indexes::feed_partition(&pid("p"), indexes::FEED_PARTITIONS);
    svc.update_stock(update("p", 10)).unwrap();
    let page = svc.feed(Some(partition), None, 10).unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.next.to_string(), "0.0");

    w.clock.advance(FEED_DELAY_MS - 1);
    assert!(
        svc.feed(Some(partition), None, 10)
            .unwrap()
            .entries
            .is_empty()
    );
    w.clock.advance(1);
    let page = svc.feed(Some(partition), None, 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.next.to_string(), "1.0", "the slot was seen to its end");

    svc.adjust_stock(adjust("p", 2, AdjustmentReason::Restock))
        .unwrap();
    let again = svc.feed(Some(partition), Some(&page.next), 10).unwrap();
    assert!(again.entries.is_empty());
    assert_eq!(again.next, page.next, "nothing final keeps the cursor");

    w.clock.advance(FEED_DELAY_MS);
    let page = svc.feed(Some(partition), Some(&page.next), 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].kind, EventKind::StockAdjusted);
    assert_eq!(page.next.to_string(), "2.0", "both slots seen to their end");
}

#[test]
fn a_busy_product_files_one_slot_per_open_window_not_one_per_write() {
    let w = World::new();
    let svc = w.svc();
    let partition = indexes::feed_partition(&pid("hot"), indexes::FEED_PARTITIONS);
    svc.update_stock(update("hot", 1_000)).unwrap();
    for _ in 0..40 {
        w.clock.advance(20);
        svc.reserve(reserve(&[("hot", 1)])).unwrap();
    }
    // 40 writes in 800 ms: all in the first slot.
    assert_eq!(head(&w, partition).len, 1);
    w.clock.advance(indexes::FEED_OPEN_MS);
    svc.reserve(reserve(&[("hot", 1)])).unwrap();
    svc.reserve(reserve(&[("hot", 1)])).unwrap();
    assert_eq!(head(&w, partition).len, 2);

    w.clock.advance(FEED_DELAY_MS);
    let (entries, next) = drain(&svc, Some(partition), None, 100);
    assert_eq!(entries.len(), 43);
    assert!(entries.windows(2).all(|p| p[0].seq + 1 == p[1].seq));
    assert_eq!(next.to_string(), "2.0");
}

#[test]
fn a_long_partition_writes_out_whole_pages_and_is_still_read_from_its_start() {
    let mut w = with_partitions(1);
    let svc = w.svc();
    for i in 0..3 * indexes::FEED_PAGE + 5 {
        svc.update_stock(update(&format!("p{i}"), 1)).unwrap();
    }
    let head = head(&w, 0);
    assert_eq!(head.len, 3 * indexes::FEED_PAGE + 5);
    assert!(head.recent.len() as u64 <= indexes::FEED_PAGE);
    assert_eq!(head.first_recent() % indexes::FEED_PAGE, 0);
    for page in 0..head.first_recent() / indexes::FEED_PAGE {
        assert!(
            w.kv.snapshot()
                .contains_key(&indexes::keys::feed_page(0, page)),
            "page {page} was not written out"
        );
    }
    w.clock.advance(FEED_DELAY_MS);
    let (entries, _) = drain(&svc, Some(0), None, 10);
    assert_eq!(entries.len() as u64, 3 * indexes::FEED_PAGE + 5);
    let (entries, _) = drain(&svc, None, None, 10);
    assert_eq!(entries.len() as u64, 3 * indexes::FEED_PAGE + 5);
    w.check();
}

#[test]
fn a_slot_whose_product_write_died_serves_nothing_and_the_feed_reads_past_it() {
    let mut w = with_partitions(1);
    let svc = w.svc();
    svc.update_stock(update("a", 10)).unwrap();
    w.clock.advance(indexes::FEED_OPEN_MS);
    // Dies after filing a slot, before the product record that names it: the store
    // calls of an adjustment are the product read, then the partition head's.
    for crash_after in 1..12 {
        let dying = StockService::new(
            w.kv.instance(FaultPlan {
                crash_after: Some(crash_after),
                ..FaultPlan::default()
            }),
            w.clock.clone(),
            w.ids.clone(),
            w.config.clone(),
        );
        if dying
            .adjust_stock(adjust("a", 1, AdjustmentReason::Restock))
            .is_err()
            && head(&w, 0).len == 2
        {
            break;
        }
    }
    assert_eq!(head(&w, 0).len, 2, "no crash left a slot behind");
    assert_eq!(svc.get_stock(&pid("a")).unwrap().on_hand, 10);
    svc.update_stock(update("b", 5)).unwrap();
    w.clock.advance(FEED_DELAY_MS);
    let (entries, next) = drain(&svc, Some(0), None, 10);
    let got: Vec<(&str, u64)> = entries
        .iter()
        .map(|e| (e.product_id.as_str(), e.seq))
        .collect();
    assert_eq!(got, vec![("a", 1), ("b", 1)]);
    assert_eq!(next.to_string(), "3.0");
    w.check();
}

#[test]
fn a_page_costs_store_calls_bounded_by_its_limit_however_long_the_history() {
    let w = World::new();
    let svc = w.svc();
    for p in 0..40 {
        svc.update_stock(update(&format!("p{p}"), 10)).unwrap();
    }
    for _ in 0..300 {
        w.clock.advance(700);
        svc.adjust_stock(adjust("p7", 1, AdjustmentReason::Restock))
            .unwrap();
    }
    w.clock.advance(FEED_DELAY_MS);
    let partition = indexes::feed_partition(&pid("p7"), indexes::FEED_PARTITIONS);
    let (_, cursor) = drain(&svc, Some(partition), None, 50);
    let (_, all) = drain(&svc, None, None, 50);
    for _ in 0..12 {
        w.clock.advance(indexes::FEED_OPEN_MS);
        svc.adjust_stock(adjust("p7", 1, AdjustmentReason::Restock))
            .unwrap();
    }
    for p in 0..40 {
        svc.adjust_stock(adjust(&format!("p{p}"), 1, AdjustmentReason::Restock))
            .unwrap();
    }
    w.clock.advance(FEED_DELAY_MS);

    let counting = w.kv.instance(FaultPlan::default());
    let reader = StockService::new(
        counting.clone(),
        w.clock.clone(),
        w.ids.clone(),
        Config::default(),
    );
    for limit in [1, 3, 10] {
        let before = counting.calls();
        let page = reader.feed(Some(partition), Some(&cursor), limit).unwrap();
        assert_eq!(page.entries.len(), limit);
        let calls = counting.calls() - before;
        assert!(
            calls <= 4 * limit as u64 + 2,
            "{calls} store calls for a page of {limit} of one partition"
        );
        let before = counting.calls();
        let page = reader.feed(None, Some(&all), limit).unwrap();
        assert_eq!(page.entries.len(), limit);
        let calls = counting.calls() - before;
        assert!(
            calls <= 4 * limit as u64 + 2 * indexes::FEED_PARTITIONS,
            "{calls} store calls for a page of {limit} of the whole feed"
        );
    }
}

#[test]
fn a_cursor_issued_for_another_read_and_a_partition_that_does_not_exist_are_refused() {
    let w = World::new();
    let svc = w.svc();
    svc.update_stock(update("p", 10)).unwrap();
    w.clock.advance(FEED_DELAY_MS);
    let one = svc.feed(Some(3), None, 10).unwrap().next;
    let all = svc.feed(None, None, 10).unwrap().next;
    assert!(matches!(
        svc.feed(None, Some(&one), 10),
        Err(FeedError::InvalidCursor(_))
    ));
    assert!(matches!(
        svc.feed(Some(3), Some(&all), 10),
        Err(FeedError::InvalidCursor(_))
    ));
    let beyond = FeedCursor::parse("5.0").unwrap();
    assert!(matches!(
        svc.feed(Some(3), Some(&beyond), 10),
        Err(FeedError::InvalidCursor(_))
    ));
    assert!(matches!(
        svc.feed(Some(indexes::FEED_PARTITIONS), None, 10),
        Err(FeedError::InvalidPartition {
            partition: 16,
            partitions: 16
        })
    ));
}

mod paging_while_writing {
    //! Random interleavings of writes, clock advances and page reads, by one reader of
    //! the whole feed and one reader per partition.

    use super::*;
    use proptest::prelude::*;

    const PRODUCTS: [&str; 4] = ["p0", "p1", "p.2", "p3"];
    const PARTITIONS: u64 = 3;

    #[derive(Debug, Clone)]
    enum Step {
        Write {
            product: usize,
            action: u8,
        },
        Wait {
            ms: u64,
        },
        Page {
            partition: Option<u64>,
            limit: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => (0..4usize, 0..5u8).prop_map(|(product, action)| Step::Write { product, action }),
            2 => (0..3_000u64).prop_map(|ms| Step::Wait { ms }),
            3 => (prop::option::of(0..PARTITIONS), 1..5usize)
                .prop_map(|(partition, limit)| Step::Page { partition, limit }),
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
        fn pages_read_between_writes_serve_every_entry_exactly_once_in_product_order(
            steps in prop::collection::vec(step(), 1..120)
        ) {
            let w = with_partitions(PARTITIONS);
            let svc = w.svc();
            // Index 0: the whole feed; 1 + p: partition p.
            let mut cursors: Vec<Option<FeedCursor>> = vec![None; 1 + PARTITIONS as usize];
            let mut served: Vec<Vec<HistoryEntry>> = vec![Vec::new(); 1 + PARTITIONS as usize];
            for step in &steps {
                match step {
                    Step::Write { product, action } => write(&svc, *product, *action),
                    Step::Wait { ms } => w.clock.advance(*ms),
                    Step::Page { partition, limit } => {
                        let i = partition.map_or(0, |p| 1 + p as usize);
                        let page = svc.feed(*partition, cursors[i].as_ref(), *limit).unwrap();
                        prop_assert!(page.entries.len() <= *limit);
                        served[i].extend(page.entries);
                        cursors[i] = Some(page.next);
                    }
                }
            }
            w.clock.advance(FEED_DELAY_MS);
            let mut expected = Served::new();
            for p in PRODUCTS {
                let history = svc.history(&pid(p), 0, 500).map(|h| h.entries).unwrap_or_default();
                if !history.is_empty() {
                    expected.insert(p.to_string(), history.iter().map(|e| e.seq).collect());
                }
            }
            let mut per_partition = Served::new();
            for (i, cursor) in cursors.into_iter().enumerate() {
                let partition = (i > 0).then(|| i as u64 - 1);
                served[i].extend(drain(&svc, partition, cursor, 7).0);
                let got = by_product(&served[i]);
                if partition.is_none() {
                    prop_assert_eq!(&got, &expected, "the whole feed");
                } else {
                    per_partition.extend(got);
                }
            }
            prop_assert_eq!(per_partition, expected, "the partitions");
        }
    }
}
