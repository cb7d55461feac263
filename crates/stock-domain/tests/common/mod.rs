//! Test harness for the domain: a service over the in-memory store, and the SPEC §5
//! invariants checked against everything the store holds.

#![allow(dead_code)]

use std::collections::BTreeMap;

use stock_domain::indexes::{
    self, AlertShard, DirPage, Due, DueDay, DueMark, DueShard, FeedHead, FeedSlot,
};
use stock_domain::memory::{FaultPlan, ManualClock, MemoryKv, SeqIds};
use stock_domain::models::*;
use stock_domain::service::*;
use stock_domain::storage::keys;
use stock_domain::{Config, StockService};

pub type Service = StockService<MemoryKv, ManualClock, SeqIds>;

pub const T0: u64 = 1_700_000_000_000;

pub struct World {
    pub kv: MemoryKv,
    pub clock: ManualClock,
    pub ids: SeqIds,
    /// The configuration of every service instance the world makes.
    pub config: Config,
    /// History already seen, to prove entries are never rewritten.
    seen: BTreeMap<(String, u64), HistoryEntry>,
}

impl World {
    pub fn new() -> Self {
        Self {
            kv: MemoryKv::new(),
            clock: ManualClock::at(T0),
            ids: SeqIds::default(),
            config: Config::default(),
            seen: BTreeMap::new(),
        }
    }

    /// A service instance with no faults.
    pub fn svc(&self) -> Service {
        self.svc_with(FaultPlan::default())
    }

    /// A service instance (one "component instance") with its own faults.
    pub fn svc_with(&self, plan: FaultPlan) -> Service {
        StockService::new(
            self.kv.instance(plan),
            self.clock.clone(),
            self.ids.clone(),
            self.config.clone(),
        )
    }

    pub fn now(&self) -> u64 {
        use stock_domain::ports::Clock;
        self.clock.now_ms()
    }

    /// Lets time pass beyond the "abandoned" threshold and runs the sweep, as later
    /// requests would: every reservation left mid-change is finished.
    pub fn repair(&self) {
        self.clock.advance(2_500);
        self.sweep();
    }

    /// Runs the sweep, page after page, until it says it is done; returns every page.
    pub fn sweep(&self) -> Vec<ExpireReport> {
        let svc = self.svc();
        let mut pages = Vec::new();
        let mut after = None;
        for _ in 0..1_000 {
            let page = svc.expire_due(after.as_deref(), 7).expect("sweep");
            after = page.next.clone();
            let done = page.done;
            pages.push(page);
            if done {
                return pages;
            }
        }
        panic!("the sweep never finished");
    }

    /// The indexes agree with the records, whatever crashed (they may hold more, never
    /// less): every product is in the directory under the slot its record names, in a
    /// shard whose pages are `0..n`; every product at or below its threshold is in the
    /// alert set under the token its record holds; every reservation is filed in the due
    /// work at or after the mark, on its own or (one line) through its product, and one
    /// of several lines that is not settled no later than its expiry; every idempotency
    /// record and inbound-event marker, and every ordered or emptied cart, is filed to be
    /// deleted.
    pub fn check_indexes(&self) {
        let now = self.now();
        let snapshot = self.kv.snapshot();
        let read = |key: &str| snapshot.get(key).map(|b| b.as_slice());
        for (id, record) in self.products() {
            let shard = indexes::dir_shard(&id);
            let slot = record
                .dir
                .unwrap_or_else(|| panic!("{id} has no directory slot"));
            let page: DirPage = serde_json::from_slice(
                read(&indexes::keys::dir_page(shard, slot / indexes::DIR_PAGE))
                    .unwrap_or_else(|| panic!("directory page of {id} is missing")),
            )
            .unwrap();
            assert!(
                page.entries.contains(&(slot, id.clone())),
                "{id} is not in the directory under slot {slot}"
            );
            for p in 0..slot / indexes::DIR_PAGE {
                assert!(
                    read(&indexes::keys::dir_page(shard, p)).is_some(),
                    "directory shard {shard} misses page {p}"
                );
            }
            if record.status(now) != StockStatus::InStock {
                let token = record
                    .alert
                    .clone()
                    .unwrap_or_else(|| panic!("{id} is low without an alert token"));
                let set: AlertShard = serde_json::from_slice(
                    read(&indexes::keys::alert(indexes::alert_shard(&id)))
                        .unwrap_or_else(|| panic!("alert shard of {id} is missing")),
                )
                .unwrap();
                assert!(
                    set.entries
                        .get(&id)
                        .is_some_and(|ts| ts.iter().any(|t| t.token == token)),
                    "{id} is low but not in the alert set under {token}"
                );
            }
        }
        let mark: Option<DueMark> =
            read(indexes::keys::DUE_MARK).map(|b| serde_json::from_slice(b).unwrap());
        // Every entry filed at or after the mark (an entry behind it would never be read),
        // with the buckets it is filed in.
        let mut filed: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for (k, v) in &snapshot {
            let Some((bucket, _)) = k
                .strip_prefix("due/")
                .filter(|r| !r.starts_with("day/"))
                .and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let Ok(bucket) = bucket.parse::<u64>() else {
                continue;
            };
            let mark = mark
                .as_ref()
                .expect("a due mark exists once anything is filed");
            let day: Option<DueDay> = read(&indexes::keys::due_day(
                bucket / indexes::DUE_BUCKETS_PER_DAY,
            ))
            .map(|b| serde_json::from_slice(b).unwrap());
            assert!(
                day.is_some_and(|d| d.buckets.contains(&bucket)),
                "due bucket {bucket} is not listed in its day"
            );
            let shard: DueShard = serde_json::from_slice(v).expect("due shard");
            for (entry, due) in shard.entries {
                assert!(bucket >= mark.bucket, "{entry} is filed behind the mark");
                filed.entry(entry).or_default().push((bucket, due));
            }
        }
        let is_filed = |due: &Due| filed.contains_key(&due.encode());
        let products: BTreeMap<ProductId, ProductRecord> = self.products().into_iter().collect();
        // A product with due spans is filed from its earliest on (where that starts, or
        // when a sweep that was behind dropped the one before), so the sweep reaches it
        // by then and goes from span to span.
        let now_bucket = indexes::due_bucket(now);
        for (id, record) in &products {
            let Some(&earliest) = record.due.keys().next() else {
                continue;
            };
            let at = filed.get(&Due::Product(id.clone()).encode());
            assert!(
                at.is_some_and(|at| at
                    .iter()
                    .any(|(b, _)| (earliest..=earliest.max(now_bucket)).contains(b))),
                "{id} has due spans from bucket {earliest} on but is filed at {at:?}"
            );
        }
        // A one-line reservation is reachable through its product while the product names
        // the bucket of its expiry (and so is filed, as above).
        let through_product = |r: &ReservationRecord| {
            let line = &r.lines[0];
            let bucket = indexes::due_bucket(r.expires_at);
            r.lines.len() == 1
                && products
                    .get(&line.product_id)
                    .is_some_and(|p| p.due.contains_key(&bucket))
        };
        for r in self.reservations() {
            let own = filed.get(&Due::Reservation(r.id.clone()).encode());
            let reachable = own.is_some() || through_product(&r);
            assert!(
                reachable,
                "reservation {} ({:?}, {} lines) is not filed",
                r.id,
                r.state,
                r.lines.len()
            );
            if r.lines.len() > 1 && !r.state.is_final() {
                let own = own.unwrap_or_else(|| panic!("{} is not filed on its own", r.id));
                assert!(
                    own.iter().any(|(_, due)| *due <= r.expires_at),
                    "{} is filed after its expiry",
                    r.id
                );
            }
        }
        for (k, v) in &snapshot {
            if k.starts_with("idem/") {
                assert!(is_filed(&Due::Record(k.clone())), "{k} is not filed");
            }
            if let Some(id) = k.strip_prefix(keys::CART_PREFIX) {
                let cart: CartRecord = serde_json::from_slice(v).expect("cart record");
                if cart.order_id.is_some() || cart.lines.is_empty() {
                    let id = CartId::parse(id).expect("cart id");
                    assert!(is_filed(&Due::Cart(id)), "closed cart {k} is not filed");
                }
            }
        }
    }

    fn products(&self) -> Vec<(ProductId, ProductRecord)> {
        self.kv
            .snapshot()
            .into_iter()
            .filter_map(|(k, v)| {
                let id = ProductId::parse(k.strip_prefix(keys::PRODUCT_PREFIX)?).ok()?;
                Some((id, serde_json::from_slice(&v).expect("product record")))
            })
            .collect()
    }

    pub fn reservations(&self) -> Vec<ReservationRecord> {
        self.kv
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with(keys::RESERVATION_PREFIX))
            .map(|(_, v)| serde_json::from_slice(&v).expect("reservation record"))
            .collect()
    }

    fn full_history(&self, id: &ProductId) -> Vec<HistoryEntry> {
        let svc = self.svc();
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let page = svc.history(id, after, 50).expect("history is complete");
            all.extend(page.entries);
            match page.next_after {
                Some(n) => after = n,
                None => return all,
            }
        }
    }

    /// Invariants that hold at every instant, whatever crashed:
    /// no oversell, conservation of on-hand, a gap-free and immutable history, and
    /// every pending reservation backed by holds.
    pub fn check(&mut self) {
        self.check_indexes();
        self.check_feed();
        let now = self.now();
        let reservations = self.reservations();
        for (id, record) in self.products() {
            for (wid, w) in &record.warehouses {
                assert!(
                    w.on_hand >= w.reserved(now),
                    "oversold {id}/{wid}: {w:?} at {now}"
                );
            }
            let history = self.full_history(&id);
            assert_eq!(history.len() as u64, record.seq, "history of {id} has gaps");
            for (i, e) in history.iter().enumerate() {
                assert_eq!(e.seq, i as u64 + 1);
                let previous = self
                    .seen
                    .entry((id.to_string(), e.seq))
                    .or_insert(e.clone());
                assert_eq!(previous, e, "history entry {} of {id} was rewritten", e.seq);
            }
            let sum = |kind: EventKind| -> i64 {
                history
                    .iter()
                    .filter(|e| e.kind == kind)
                    .map(|e| e.quantity)
                    .sum()
            };
            let levels = record.levels(now);
            let committed = sum(EventKind::StockCommitted);
            assert_eq!(
                levels.on_hand as i64,
                sum(EventKind::StockUpdated) + sum(EventKind::StockAdjusted) - committed,
                "on-hand of {id} is not conserved"
            );
            assert_eq!(levels.committed as i64, committed, "committed of {id}");
            let pending: u64 = pending_units(&reservations, &id, &record, now);
            assert!(
                levels.reserved >= pending,
                "{id}: {pending} units promised by pending reservations but only {} held",
                levels.reserved
            );
        }
    }

    /// The feed partitions, whatever crashed: every history entry names a slot of its
    /// product's partition that exists, names the product and starts the entry's run of
    /// entries of that slot, and was still open when the entry was stamped; a
    /// product's slots come in its history's order; and reading every partition from the
    /// start, once all is final, serves each entry exactly once, in product order.
    pub fn check_feed(&self) {
        let snapshot = self.kv.snapshot();
        let partitions = self.config.feed_partitions;
        let slot_of = |id: FeedSlotId| -> FeedSlot {
            let head: FeedHead = serde_json::from_slice(
                snapshot
                    .get(&indexes::keys::feed_head(id.partition))
                    .expect("the partition of a filed entry has a head"),
            )
            .unwrap();
            assert!(id.slot < head.len, "{id:?} is beyond its partition's head");
            if let Some(slot) = head.recent_slot(id.slot) {
                return slot.clone();
            }
            let page: indexes::FeedPage = serde_json::from_slice(
                snapshot
                    .get(&indexes::keys::feed_page(
                        id.partition,
                        id.slot / indexes::FEED_PAGE,
                    ))
                    .unwrap_or_else(|| panic!("the page of {id:?} is missing")),
            )
            .unwrap();
            page.slots[(id.slot % indexes::FEED_PAGE) as usize].clone()
        };
        let mut expected: BTreeMap<ProductId, Vec<u64>> = BTreeMap::new();
        for (id, _) in self.products() {
            let history = self.full_history(&id);
            let mut previous: Option<FeedSlotId> = None;
            for e in &history {
                let filed = e
                    .feed
                    .unwrap_or_else(|| panic!("entry {} of {id} is in no feed slot", e.seq));
                assert_eq!(
                    filed.partition,
                    indexes::feed_partition(&id, partitions),
                    "entry {} of {id} is in another product's partition",
                    e.seq
                );
                let slot = slot_of(filed);
                assert_eq!(slot.product_id, id, "{filed:?} names another product");
                assert!(
                    e.time < slot.open_until && slot.open_until == slot.at + indexes::FEED_OPEN_MS,
                    "entry {} of {id} joined {filed:?} after it closed",
                    e.seq
                );
                if previous != Some(filed) {
                    assert_eq!(
                        slot.from, e.seq,
                        "{filed:?} does not start at entry {}",
                        e.seq
                    );
                    assert!(
                        previous.is_none_or(|p| p.slot < filed.slot),
                        "{id}'s slots are out of order at entry {}",
                        e.seq
                    );
                }
                previous = Some(filed);
            }
            if !history.is_empty() {
                expected.insert(id, history.iter().map(|e| e.seq).collect());
            }
        }
        // A reader for whom everything written so far is final.
        let reader = StockService::new(
            self.kv.instance(FaultPlan::default()),
            ManualClock::at(self.now() + FEED_DELAY_MS),
            self.ids.clone(),
            self.config.clone(),
        );
        let mut served: BTreeMap<ProductId, Vec<u64>> = BTreeMap::new();
        let mut after = None;
        loop {
            let page = reader.feed(None, after.as_ref(), 7).expect("feed page");
            if page.entries.is_empty() {
                break;
            }
            for e in page.entries {
                served.entry(e.product_id.clone()).or_default().push(e.seq);
            }
            after = Some(page.next);
        }
        assert_eq!(
            served, expected,
            "the feed does not serve every entry once, in order"
        );
    }

    /// After repair: every reservation is settled, and holds are exactly the pending
    /// reservations plus the unexpired holds of one-line reserves whose request died
    /// before writing the reservation (see [`World::orphaned_units`]).
    pub fn check_settled(&mut self) {
        self.check();
        let now = self.now();
        let reservations = self.reservations();
        for r in &reservations {
            assert!(
                r.state.is_settled(),
                "reservation {} left in {:?}",
                r.id,
                r.state
            );
        }
        for (id, record) in self.products() {
            assert_eq!(
                record.levels(now).reserved,
                pending_units(&reservations, &id, &record, now) + self.orphaned_units(&id),
                "{id}: holds differ from pending reservations; record {record:?}"
            );
        }
    }

    /// After a repair: a reservation record that still says pending when its product
    /// step is done is one whose request died before recording it. Lookups see through it
    /// at once; the sweep records it once it has lapsed, and the holds placed on its
    /// product before it in the same due bucket too (by the bucket's end, all of them),
    /// and the product's next batch of history before that.
    pub fn check_records_agree(&self) {
        let now = self.now();
        let reservations = self.reservations();
        let svc = self.svc();
        for (id, record) in self.products() {
            for r in reservations
                .iter()
                .filter(|r| r.state == ReservationState::Pending)
            {
                let Some(e) = record.inflight.get(&r.id) else {
                    continue;
                };
                if e.effect == LineEffect::Held {
                    continue;
                }
                let bucket_end = (indexes::due_bucket(r.expires_at) + 1) * indexes::DUE_BUCKET_MS;
                assert!(
                    now < bucket_end,
                    "reservation {} still pending after its due bucket although {id} says {:?}",
                    r.id,
                    e.effect
                );
                let seen = svc.get_reservation(&r.id).expect("lookup").status;
                let expected = match e.effect {
                    LineEffect::Committed => ReservationStatus::Committed,
                    _ => ReservationStatus::Released,
                };
                assert_eq!(seen, expected, "lookup of {} disagrees with {id}", r.id);
            }
        }
    }

    /// Units held by in-flight entries that no reservation record accounts for: a
    /// one-line reserve that died between its product step and its record and was never
    /// retried (or was retried under the same idempotency key for another product). The
    /// next write of the product gives back such a hold once a record shows it is not
    /// its own; otherwise it lapses at its expiry.
    pub fn orphaned_units(&self, id: &ProductId) -> u64 {
        let now = self.now();
        let snapshot = self.kv.snapshot();
        let Some(bytes) = snapshot.get(&keys::product(id)) else {
            return 0;
        };
        let record: ProductRecord = serde_json::from_slice(bytes).expect("product record");
        record
            .inflight
            .iter()
            .filter(|(rid, line)| {
                let key = format!("{}{rid}", keys::RESERVATION_PREFIX);
                let reservation: Option<ReservationRecord> = snapshot
                    .get(&key)
                    .map(|b| serde_json::from_slice(b).expect("reservation record"));
                let recorded = reservation.is_some_and(|r| {
                    !r.state.is_settled()
                        || r.lines
                            .iter()
                            .any(|l| &l.product_id == id && l.placement.as_ref() == Some(&line.op))
                });
                line.effect == LineEffect::Held && line.expires_at > now && !recorded
            })
            .flat_map(|(_, line)| &line.allocations)
            .map(|a| a.quantity)
            .sum()
    }
}

/// Units promised by pending reservations on product `id`. A one-line reservation is
/// pending until its product step is done, even before its record says so (the product
/// record is its decision point).
fn pending_units(
    reservations: &[ReservationRecord],
    id: &ProductId,
    record: &ProductRecord,
    now: u64,
) -> u64 {
    reservations
        .iter()
        .filter(|r| {
            r.status(now) == ReservationStatus::Pending
                && r.state == ReservationState::Pending
                && record
                    .inflight
                    .get(&r.id)
                    .is_none_or(|e| e.effect == LineEffect::Held)
        })
        .flat_map(|r| &r.lines)
        .filter(|l| &l.product_id == id)
        .map(|l| l.quantity)
        .sum()
}

pub fn pid(s: &str) -> ProductId {
    ProductId::parse(s).unwrap()
}

pub fn wid(s: &str) -> WarehouseId {
    WarehouseId::parse(s).unwrap()
}

pub fn qty(n: u64) -> Quantity {
    Quantity::new(n as i128).unwrap()
}

pub fn key(s: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(s).unwrap())
}

pub fn update(product: &str, quantity: u64) -> UpdateStock {
    UpdateStock {
        product_id: pid(product),
        warehouse_id: WarehouseId::default_warehouse(),
        quantity: StockLevel::new(quantity as i128).unwrap(),
        low_stock_threshold: None,
        idempotency_key: None,
    }
}

pub fn adjust(product: &str, delta: i64, reason: AdjustmentReason) -> AdjustStock {
    AdjustStock {
        product_id: pid(product),
        warehouse_id: WarehouseId::default_warehouse(),
        adjustment: Adjustment::new(delta as i128).unwrap(),
        reason,
        idempotency_key: None,
    }
}

pub fn reserve(lines: &[(&str, u64)]) -> Reserve {
    Reserve {
        lines: lines
            .iter()
            .map(|(p, q)| ReserveLine {
                product_id: pid(p),
                quantity: qty(*q),
                warehouse_id: None,
            })
            .collect(),
        ttl_ms: None,
        idempotency_key: None,
    }
}

pub fn order(s: &str) -> OrderId {
    OrderId::parse(s).unwrap()
}
