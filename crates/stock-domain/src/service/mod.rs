//! The stock service: every operation of SPEC §3 as a method, each with its own error
//! enum. All writes go through [`StockService::write_product`] or the reservation
//! helpers, which keep the invariants:
//! - `available = on_hand − reserved ≥ 0` in every warehouse at every instant;
//! - `on_hand` changes only by updates, adjustments and commits, each recorded once;
//! - every change appends history entries with a gap-free per-product sequence.

mod api;
mod feed;
mod index;
mod ingest;
mod reservations;
mod stock;

pub use api::StockApi;
pub use feed::{
    FEED_DELAY_MS, FEED_SETTLE_MS, FeedCursor, FeedError, FeedPage, InvalidCursor,
    PartitionPosition,
};
pub use index::{AlertPage, AlertsError, ListProductsError, ProductPage};
pub use ingest::{InboundEvent, InboundKind, IngestError, IngestOutcome};
pub use reservations::{
    CommitError, ExpireError, ExpireReport, GetReservationError, ReleaseError, Reserve,
    ReserveError, ReserveLine,
};
pub use stock::{
    AdjustStock, AdjustStockError, AdjustmentReason, AlertView, Availability, BatchStock,
    CheckAvailabilityError, GetStockError, HistoryError, HistoryPage, UpdateStock,
    UpdateStockError,
};

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::indexes::{self, Due};
use crate::models::{
    EventKind, FeedFiling, HistoryEntry, LineEffect, OpId, OrderId, ProductId, ProductRecord,
    ReservationId, ReservationRecord, ReservationState, StockStatus, WarehouseId,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{
    self, Decision, Engine, EngineError, Outcome, RetryPolicy, keys, versioned_record,
};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// Tunables, read by the adapters from configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub max_lines: usize,
    /// History entries kept inside the product record; one more makes the write that
    /// adds it write them all out under their own keys, in one batch.
    pub outbox_len: usize,
    pub retry: RetryPolicy,
    /// How long an update's or adjustment's idempotency record answers a retry, and a
    /// refused reservation's record under its key (ms): 24 h by default.
    pub idempotency_retention_ms: u64,
    /// How long an inbound event's marker keeps a redelivery from applying again (ms): 7
    /// days by default, Kafka's default topic retention, so a replay of a whole topic
    /// applies nothing twice.
    pub inbound_retention_ms: u64,
    /// How long a settled (released, committed, expired) reservation and an ordered or
    /// emptied cart are kept (ms): 30 days by default. History is kept for ever.
    pub settled_retention_ms: u64,
    /// One successful write in this many (chosen at random) then runs one small step of
    /// the expiry sweep, so that expiries are recorded and records deleted without any
    /// scheduler; 0 never does. 0 here (embedders and tests call the sweep themselves);
    /// the Spin components default to 100.
    pub sweep_every_writes: u32,
    /// The number of event-feed partitions (see `indexes`): 16 by default. A product's
    /// partition is a hash of its id modulo this, so changing it moves most products to
    /// another partition from their next slot on; see the README before changing it.
    pub feed_partitions: u64,
}

impl Config {
    /// `max_ttl_ms` in the whole seconds the API speaks (adapters configure it in
    /// seconds, so nothing is lost).
    pub fn max_ttl_seconds(&self) -> u64 {
        self.max_ttl_ms / 1000
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_ttl_ms: 15 * 60 * 1000,
            max_ttl_ms: 2 * 60 * 60 * 1000,
            max_lines: 100,
            outbox_len: 4,
            retry: RetryPolicy::default(),
            idempotency_retention_ms: 24 * HOUR_MS,
            inbound_retention_ms: 7 * 24 * HOUR_MS,
            settled_retention_ms: 30 * 24 * HOUR_MS,
            sweep_every_writes: 0,
            feed_partitions: indexes::FEED_PARTITIONS,
        }
    }
}

versioned_record!(ProductRecord, 64);
versioned_record!(ReservationRecord, 16);

/// A history entry before it gets its sequence number, time and levels.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub kind: EventKind,
    pub warehouse_id: Option<WarehouseId>,
    pub quantity: i64,
    pub reason: Option<String>,
    pub reservation_id: Option<ReservationId>,
    pub order_id: Option<OrderId>,
    pub idempotency_key: Option<String>,
    /// For a one-line reservation's `StockReserved`: when its hold lapses, so the product
    /// write files the entry for the sweep (`ProductRecord::due`). Not part of the entry.
    pub lapses_at: Option<u64>,
}

impl NewEvent {
    pub fn new(kind: EventKind, quantity: i64) -> Self {
        Self {
            kind,
            warehouse_id: None,
            quantity,
            reason: None,
            reservation_id: None,
            order_id: None,
            idempotency_key: None,
            lapses_at: None,
        }
    }
}

/// What a product mutation wants to do in one attempt.
pub(crate) enum Step<R> {
    Write {
        record: Box<ProductRecord>,
        events: Vec<NewEvent>,
        result: R,
    },
    Keep(R),
}

fn released_event(reservation_id: &ReservationId, units: u64, reason: Option<&str>) -> NewEvent {
    let mut e = NewEvent::new(EventKind::StockReleased, units as i64);
    e.reservation_id = Some(reservation_id.clone());
    e.reason = reason.map(str::to_owned);
    e
}

/// Due entries a sweep step run by a write deals with at most.
pub const WRITE_SWEEP_LIMIT: usize = 16;

/// How many in-flight reservation lines one product write looks at, so that settling
/// costs a bounded number of reads per request.
const SETTLE_PER_WRITE: usize = 2;

pub struct StockService<K, C, I> {
    kv: K,
    clock: C,
    ids: I,
    config: Config,
    /// `LowStockAlert` and `OutOfStock` entries appended by this service's writes that
    /// landed, until [`StockService::take_alerts`] drains them (see there).
    alerts: Mutex<Vec<HistoryEntry>>,
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    pub fn new(kv: K, clock: C, ids: I, config: Config) -> Self {
        Self {
            kv,
            clock,
            ids,
            config,
            alerts: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The `LowStockAlert` and `OutOfStock` entries that this service's writes have
    /// appended since the last call, oldest first, each once: an entry is collected only
    /// by the attempt whose write landed. Adapters drain it after each request to notify
    /// an admin webhook; the history and the feed stay the reliable record.
    pub fn take_alerts(&self) -> Vec<HistoryEntry> {
        std::mem::take(&mut *self.alerts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Passes a write's result through, first running, one time in
    /// `sweep_every_writes`, one step of the expiry sweep of at most [`WRITE_SWEEP_LIMIT`]
    /// entries. Best effort: the write has landed, and what the step leaves is done by a
    /// later one.
    fn then_sweep<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        let every = u64::from(self.config.sweep_every_writes);
        if result.is_ok()
            && every > 0
            && storage::digest(&[&self.ids.new_id()]).is_multiple_of(every)
        {
            self.expire_due(None, WRITE_SWEEP_LIMIT).ok();
        }
        result
    }

    fn engine(&self) -> Engine<'_, K, C, I> {
        Engine {
            kv: &self.kv,
            clock: &self.clock,
            ids: &self.ids,
            policy: &self.config.retry,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A fresh operation id, short because every record keeps a ring of them.
    fn fresh_op(&self) -> OpId {
        OpId::new(format!("{:016x}", storage::digest(&[&self.ids.new_id()])))
    }

    fn read_product(&self, id: &ProductId) -> Result<Option<ProductRecord>, EngineError> {
        storage::read(&self.kv, &keys::product(id))
    }

    fn read_reservation(
        &self,
        id: &ReservationId,
    ) -> Result<Option<ReservationRecord>, EngineError> {
        storage::read(&self.kv, &keys::reservation(id))
    }

    /// Entry `seq` (at most `record.seq`) of a product's history: from the record's
    /// outbox, or else from its own key, where it was written before leaving the outbox.
    fn history_entry(
        &self,
        id: &ProductId,
        record: &ProductRecord,
        seq: u64,
    ) -> anyhow::Result<HistoryEntry> {
        if let Some(entry) = record.outbox.iter().find(|e| e.seq == seq) {
            return Ok(entry.clone());
        }
        storage::read(&self.kv, &keys::history(id, seq))?
            .ok_or_else(|| anyhow::anyhow!("history entry {seq} of {id} is missing from the store"))
    }

    /// The one path by which a product record changes. Around the caller's decision it
    /// prunes expired holds, settles a few in-flight reservation lines, appends the
    /// history entries (with alerts when the product crosses its threshold) and writes
    /// out the history entries that leave the record's outbox.
    pub(crate) fn write_product<R, E>(
        &self,
        id: &ProductId,
        op: &OpId,
        mut decide: impl FnMut(Option<&ProductRecord>, u64) -> Result<Step<R>, E>,
    ) -> Result<Outcome<ProductRecord, R>, E>
    where
        E: From<EngineError>,
    {
        // The alerts of the latest attempt: the one that landed, if any did.
        let mut alerts = Vec::new();
        // Keys this call has written out already: an attempt that lost a race does not
        // write them again (they are decided, so the retry would store the same bytes).
        let mut written_out = HashSet::new();
        // The directory slot and the alert entry this call has added, once it has: a
        // retry after a lost race reuses them rather than adding more.
        let mut dir_slot = None;
        let mut alert_added = false;
        // The due buckets this call has filed the product in, likewise.
        let mut filed = HashSet::new();
        // The feed slot this call has filed, with the first sequence number it names: a
        // retry whose entries start there, while the slot is open, puts them in it.
        let mut feed_slot: Option<(FeedFiling, u64)> = None;
        // The alert token the latest attempt cleared, to remove once its write lands.
        let mut cleared = None;
        let outcome = self.engine().update::<_, _, E>(
            &keys::product(id),
            op,
            |current: Option<&ProductRecord>, now| {
                alerts.clear();
                let (mut record, mut events, result) = match decide(current, now)? {
                    Step::Keep(result) => return Ok(Decision::Keep(result)),
                    Step::Write {
                        record,
                        events,
                        result,
                    } => (*record, events, result),
                };
                record.prune(now);
                self.settle(id, &mut record, &mut events, now)?;
                let before = current.map(|c| c.levels(now)).unwrap_or_default();
                let before_status = current.map(|c| c.status(now));
                let after = record.levels(now);
                let after_status = record.status(now);
                match (before_status, after_status) {
                    (Some(b), StockStatus::OutOfStock) if b != StockStatus::OutOfStock => {
                        events.push(NewEvent::new(EventKind::OutOfStock, 0));
                    }
                    (Some(StockStatus::InStock), StockStatus::LowStock) => {
                        events.push(NewEvent::new(EventKind::LowStockAlert, 0));
                    }
                    _ => {}
                }
                // Indexes first, so they may hold more than the records, never less.
                if record.dir.is_none() {
                    let slot = match dir_slot {
                        Some(slot) => slot,
                        None => *dir_slot.insert(self.directory_add(id)?),
                    };
                    record.dir = Some(slot);
                }
                cleared = None;
                let low = after_status != StockStatus::InStock;
                if low && record.alert.is_none() {
                    if !alert_added {
                        self.alert_add(id, op, current.and_then(|c| c.alert.as_ref()))?;
                        alert_added = true;
                    }
                    record.alert = Some(op.clone());
                } else if !low {
                    cleared = record.alert.take();
                }
                if !events.is_empty() {
                    let first = record.seq + 1;
                    record.feed =
                        Some(self.feed_filing(id, &record, first, now, &mut feed_slot)?);
                }
                let slot = record.feed.map(|f| f.slot);
                for e in events {
                    record.seq += 1;
                    if let Some(lapses_at) = e.lapses_at {
                        let bucket = indexes::due_bucket(lapses_at);
                        let span = record.due.entry(bucket).or_insert((record.seq, record.seq));
                        span.1 = record.seq;
                    }
                    let entry = HistoryEntry {
                        seq: record.seq,
                        kind: e.kind,
                        product_id: id.clone(),
                        warehouse_id: e.warehouse_id,
                        time: now,
                        quantity: e.quantity,
                        before,
                        after,
                        reason: e.reason,
                        reservation_id: e.reservation_id,
                        order_id: e.order_id,
                        idempotency_key: e.idempotency_key,
                        op: op.clone(),
                        feed: slot,
                    };
                    if entry.kind.is_alert() {
                        alerts.push(entry.clone());
                    }
                    record.outbox.push_back(entry);
                }
                // The product is filed where its earliest due bucket starts, and only
                // when that bucket changes: a first reserve, an earlier expiry, or the
                // sweep done with the earliest (it files the next as it drops it). A
                // product that keeps trading is filed by the sweep, never by a reserve.
                // Never before now, where the sweep may have passed already.
                let earliest = record.due.keys().next().copied();
                if let Some(bucket) = earliest
                    && earliest != current.and_then(|c| c.due.keys().next().copied())
                    && filed.insert(bucket)
                {
                    let due = (bucket * indexes::DUE_BUCKET_MS).max(now);
                    self.due_add(&Due::Product(id.clone()), due)?;
                }
                // Entries leaving the outbox are written out before the swap, so an
                // entry is always either in the record or under its own key. Only
                // entries of the stored record leave: they are immutable, so racing
                // writers store the same bytes, whereas this attempt's own entries may
                // never land. They leave together, in one store call (one transaction
                // on SQLite) rather than one per entry.
                if record.outbox.len() > self.config.outbox_len {
                    let stored = current.map_or(0, |c| c.seq);
                    let leaving = record.outbox.iter().take_while(|e| e.seq <= stored).count();
                    let mut batch: Vec<(String, Vec<u8>)> = record
                        .outbox
                        .drain(..leaving)
                        .map(|e| (keys::history(id, e.seq), storage::encode(&e)))
                        .collect();
                    if let Some(current) = current {
                        batch.extend(self.finished_records(current, &mut record)?);
                    }
                    batch.retain(|(key, _)| !written_out.contains(key));
                    if !batch.is_empty() {
                        self.kv.set_many(&batch).map_err(EngineError::from)?;
                        written_out.extend(batch.into_iter().map(|(key, _)| key));
                    }
                }
                Ok(Decision::Write(record, result))
            },
        )?;
        if let Outcome::Written { .. } = outcome {
            self.alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut alerts);
            // The record no longer holds the token, so its entry may go. Best effort: the
            // change has landed, and an entry left behind only makes readers look at one
            // product more.
            if let Some(token) = cleared {
                self.alert_remove(id, &token).ok();
            }
        }
        Ok(outcome)
    }

    /// The settled records of the one-line reservations that the stored product record
    /// says are released or committed while their own records still say pending, to be
    /// written in the same batch as the history; their entries leave `record`. Only
    /// stored steps qualify: they are decided, whereas this attempt may never land.
    fn finished_records(
        &self,
        current: &ProductRecord,
        record: &mut ProductRecord,
    ) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let mut batch = Vec::new();
        for (rid, entry) in &current.inflight {
            if entry.effect == LineEffect::Held || record.inflight.get(rid) != Some(entry) {
                continue;
            }
            let Some(reservation) = self.read_reservation(rid)? else {
                continue;
            };
            let recorded = match entry.effect {
                LineEffect::Committed => ReservationState::Committed,
                _ => ReservationState::Released,
            };
            if reservation.state == recorded {
                record.inflight.remove(rid);
                continue;
            }
            if !reservation.is_one_line_pending() {
                continue;
            }
            let (units, order_id) = (entry.committed.unwrap_or(0), entry.order_id.clone());
            let done = reservation.finished(entry.effect, units, order_id, entry.since);
            batch.push((keys::reservation(rid), storage::encode(&done)));
            record.inflight.remove(rid);
        }
        Ok(batch)
    }

    /// Looks at the oldest in-flight reservation lines of a product and finishes what
    /// their reservation's state makes unambiguous (see `service::reservations` for the
    /// protocol). Lines of reservations still in a transitional state are left alone:
    /// their own request, a retry, or a later read of the reservation finishes them.
    fn settle(
        &self,
        product_id: &ProductId,
        record: &mut ProductRecord,
        events: &mut Vec<NewEvent>,
        now: u64,
    ) -> Result<(), EngineError> {
        let mut oldest: Vec<(u64, ReservationId)> = record
            .inflight
            .iter()
            .map(|(rid, line)| (line.since, rid.clone()))
            .collect();
        oldest.sort();
        for (_, rid) in oldest.into_iter().take(SETTLE_PER_WRITE) {
            let Some(reservation) = self.read_reservation(&rid)? else {
                // A one-line reservation whose record is not written yet, or never will
                // be (its request died): look again later, behind the others, until a
                // retry records it or its hold lapses (`ProductRecord::prune`).
                if let Some(line) = record.inflight.get_mut(&rid) {
                    line.since = now;
                }
                continue;
            };
            let entry = &record.inflight[&rid];
            let placement = reservation
                .lines
                .iter()
                .find(|l| l.product_id == *product_id)
                .and_then(|l| l.placement.as_ref());
            let recorded = placement == Some(&entry.op);
            let state = reservation.state;
            use ReservationState as S;
            match (entry.effect, state) {
                (LineEffect::Held, S::Reserving) => {}
                // The reservation record now carries this hold.
                (LineEffect::Held, S::Pending | S::Committing | S::Committed) if recorded => {
                    record.inflight.remove(&rid);
                }
                // Recorded hold of a reservation being released: give the units back and
                // remember it, so the releaser does not release them twice.
                (LineEffect::Held, S::Releasing) if recorded => {
                    let line = record.inflight.get_mut(&rid).expect("present");
                    let released = reservations::unhold(&mut record.warehouses, line, now);
                    line.effect = LineEffect::Released;
                    events.push(released_event(&rid, released, Some("reservation released")));
                }
                // A hold the reservation does not record (a racing duplicate placement, or
                // one placed for a reservation that was then rejected, released or
                // expired): give it back and forget it.
                (LineEffect::Held, _) => {
                    let line = record.inflight.remove(&rid).expect("present");
                    let released = reservations::unhold(&mut record.warehouses, &line, now);
                    events.push(released_event(
                        &rid,
                        released,
                        Some("hold not recorded by its reservation"),
                    ));
                }
                (LineEffect::Released, S::Released | S::Rejected | S::Expired)
                | (LineEffect::Committed, S::Committed) => {
                    record.inflight.remove(&rid);
                }
                _ => {}
            }
        }
        events.retain(|e| e.kind != EventKind::StockReleased || e.quantity > 0);
        Ok(())
    }
}
