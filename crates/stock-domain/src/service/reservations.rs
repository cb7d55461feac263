//! Reservations: reserve (one or many lines, all or nothing), release, commit, lookup,
//! and the expiry sweep.
//!
//! # Protocol
//! A reservation touches its own record (`res/{id}`) and one product record per line,
//! with no multi-key transaction. Correctness rests on three rules:
//!
//! 1. **Intent first.** The reservation record is written (state `Reserving`, under a
//!    fresh or idempotency-derived id) before any product is touched, so every product
//!    step can be traced back to it. A one-line reservation skips this: its one product
//!    step is its decision, and its record is written once, after it (see
//!    `StockService::reserve_one`).
//! 2. **One decision point.** Every outcome is decided by a compare-and-swap on the
//!    reservation record (`Reserving → Pending | Rejected`, `Pending → Releasing`,
//!    `Pending → Committing`) *before* the corresponding product steps, and finished
//!    (`→ Released | Committed`) after them. Whoever finds a reservation in a
//!    transitional state finishes the job the same way (a retry, a lookup, a commit,
//!    the sweep).
//! 3. **Product steps are idempotent.** Each product record keeps an in-flight entry per
//!    reservation it has acted on (`Held`, `Released`, `Committed`, plus the id of the
//!    placing operation) until the reservation's state makes the entry redundant.
//!    An absent entry therefore means "never placed" while the reservation is not yet
//!    confirmed, and "held as recorded in the reservation" once it is: the two are told
//!    apart by the line's recorded placement. Once the reservation has settled it also
//!    means "released or committed already", so a finisher that finds no entry re-reads
//!    the reservation before touching the recorded hold.
//!
//! A reservation of **one line** needs no separate decision: its product's
//! compare-and-swap decides everything. Reserving places the hold and only then writes
//! the record, already `Pending`; releasing and committing go straight to the product
//! step, whose in-flight entry (`Released`, or `Committed` with the order) is the
//! decision until the record, written next, says the same. A request that dies in
//! between is finished by a retry, by the next lookup or sweep that finds the record
//! stale (`adopt_finished`), or, for a hold no record knows, by the hold's expiry.
//!
//! Holds carry their expiry, so a reservation abandoned by a crashed request holds its
//! units at most until its TTL, and reads are exact without any scheduler.

use super::stock::engine_errors;
use super::{NewEvent, Step, StockService};
use crate::indexes::{self, Cursor, Due, DueDay, DueMark, DueShard};
use crate::models::{
    Allocation, EventKind, IdempotencyKey, InflightLine, LineEffect, OrderId, ProductId,
    ProductRecord, Quantity, ReservationId, ReservationLine, ReservationRecord, ReservationState,
    ReservationView, Shortage, WarehouseId, WarehouseStock,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{self, Decision, EngineError, Outcome, keys};

use std::collections::{BTreeMap, HashSet};

/// A reservation left in a transitional state this long is presumed abandoned by its
/// request and finished by whoever reads it next.
const STALE_AFTER_MS: u64 = 2_000;

#[derive(Debug, Clone)]
pub struct ReserveLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub warehouse_id: Option<WarehouseId>,
}

/// `POST /v1/reservations`.
#[derive(Debug, Clone)]
pub struct Reserve {
    pub lines: Vec<ReserveLine>,
    pub ttl_ms: Option<u64>,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("a reservation needs at least one line")]
    NoLines,
    #[error("a reservation has at most {max} lines")]
    TooManyLines { max: usize },
    #[error("product {0} appears on more than one line for the same warehouse")]
    DuplicateLine(ProductId),
    #[error("ttl must be between 1 second and {max_ms} ms")]
    TtlOutOfRange { max_ms: u64 },
    #[error("product {0} does not exist")]
    ProductNotFound(ProductId),
    #[error("only {available} units of {product_id} are available, {requested} requested")]
    InsufficientStock {
        product_id: ProductId,
        requested: u64,
        available: u64,
    },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    #[error("the stock records are too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("reservation {0} does not exist")]
    NotFound(ReservationId),
    #[error("reservation is already committed")]
    AlreadyCommitted,
    #[error("reservation was rejected and holds nothing")]
    Rejected,
    #[error("the stock records are too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("reservation {0} does not exist")]
    NotFound(ReservationId),
    #[error("reservation expired at {expires_at}")]
    Expired { expires_at: u64 },
    #[error("reservation was released")]
    AlreadyReleased,
    #[error("reservation was rejected and holds nothing")]
    Rejected,
    #[error("reservation is already committed to order {committed_to}")]
    OrderMismatch { committed_to: OrderId },
    #[error("the stock records are too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum GetReservationError {
    #[error("reservation {0} does not exist")]
    NotFound(ReservationId),
    #[error("the stock records are too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error(transparent)]
    InvalidCursor(#[from] super::InvalidCursor),
    #[error("the stock records are too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// What one call of the expiry sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpireReport {
    /// Reservations recorded as expired by this call.
    pub expired: Vec<ReservationId>,
    /// Reservations found abandoned mid-change and finished.
    pub repaired: Vec<ReservationId>,
    /// Records deleted because their retention had ended (settled reservations, ordered
    /// or emptied carts, idempotency records, inbound-event markers).
    pub deleted: u64,
    /// Pass as `after` to go on where this call stopped; `None` when it is `done`.
    pub next: Option<String>,
    /// Every reservation due by the time of this call has been dealt with (those still
    /// mid-change and not yet abandoned are looked at again by a later call).
    pub done: bool,
}

/// Store reads one sweep call makes at most (due shards, products, history entries,
/// reservations), so that a sweep after a long pause goes on in later calls.
const MAX_SWEEP_READS: usize = 512;

/// What one sweep call may still do.
struct Budget {
    limit: usize,
    handled: usize,
    reads: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.handled >= self.limit || self.reads >= MAX_SWEEP_READS
    }
}

engine_errors!(
    ReserveError,
    ReleaseError,
    CommitError,
    GetReservationError,
    ExpireError
);

/// What placing one line on its product found.
enum Placement {
    Placed {
        allocations: Vec<Allocation>,
        op: String,
        /// When the hold lapses: the reservation's, or that of the placement found.
        expires_at: u64,
    },
    Short(Shortage),
    /// The reservation was released before this line could be placed.
    Cancelled,
}

/// What the product step of a one-line release or commit found.
enum LineOutcome {
    /// Committed, by this call or an earlier one (the product record says so).
    Committed {
        units: u64,
        order_id: Option<OrderId>,
    },
    /// Released, by this call or an earlier one.
    Released,
    /// The hold had lapsed before anything was done.
    Lapsed,
    /// The reservation record is no longer pending: answer from it.
    Recorded,
}

/// Where the units of a line come from: the named warehouse, or else the warehouses
/// with the most available units first (ties by id), splitting across them if needed.
fn allocate(
    warehouses: &BTreeMap<WarehouseId, WarehouseStock>,
    wanted: Option<&WarehouseId>,
    quantity: u64,
    now: u64,
) -> Result<Vec<Allocation>, u64> {
    let mut candidates: Vec<(&WarehouseId, u64)> = warehouses
        .iter()
        .filter(|(id, _)| wanted.is_none_or(|w| w == *id))
        .map(|(id, w)| (id, w.available(now)))
        .filter(|(_, available)| *available > 0)
        .collect();
    let total: u64 = candidates.iter().map(|(_, a)| a).sum();
    if total < quantity {
        return Err(total);
    }
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut left = quantity;
    let mut allocations = Vec::new();
    for (id, available) in candidates {
        if left == 0 {
            break;
        }
        let take = available.min(left);
        allocations.push(Allocation {
            warehouse_id: id.clone(),
            quantity: take,
        });
        left -= take;
    }
    Ok(allocations)
}

/// Releases a line's live holds; returns the units released.
pub(crate) fn unhold(
    warehouses: &mut BTreeMap<WarehouseId, WarehouseStock>,
    line: &InflightLine,
    now: u64,
) -> u64 {
    release_allocations(warehouses, &line.allocations, line.expires_at, now)
}

fn release_allocations(
    warehouses: &mut BTreeMap<WarehouseId, WarehouseStock>,
    allocations: &[Allocation],
    expires_at: u64,
    now: u64,
) -> u64 {
    let mut released = 0;
    for a in allocations {
        if let Some(w) = warehouses.get_mut(&a.warehouse_id)
            && w.remove_hold(expires_at, a.quantity, now)
        {
            released += a.quantity;
        }
    }
    released
}

/// Commits allocations: live holds are consumed; units whose hold expired meanwhile are
/// taken from what is available, never more. Returns the units committed.
fn commit_allocations(
    warehouses: &mut BTreeMap<WarehouseId, WarehouseStock>,
    allocations: &[Allocation],
    expires_at: u64,
    now: u64,
) -> u64 {
    let mut committed = 0;
    for a in allocations {
        let Some(w) = warehouses.get_mut(&a.warehouse_id) else {
            continue;
        };
        let units = if w.remove_hold(expires_at, a.quantity, now) {
            a.quantity
        } else {
            a.quantity.min(w.available(now))
        };
        w.on_hand -= units;
        w.committed += units;
        committed += units;
    }
    committed
}

/// Rounds an expiry up to the whole second, so holds aggregate into few buckets.
fn expiry(now: u64, ttl_ms: u64) -> u64 {
    (now + ttl_ms).div_ceil(1000) * 1000
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    pub fn reserve(&self, cmd: Reserve) -> Result<ReservationView, ReserveError> {
        self.then_sweep(self.reserve_now(cmd))
    }

    fn reserve_now(&self, cmd: Reserve) -> Result<ReservationView, ReserveError> {
        if cmd.lines.is_empty() {
            return Err(ReserveError::NoLines);
        }
        if cmd.lines.len() > self.config.max_lines {
            return Err(ReserveError::TooManyLines {
                max: self.config.max_lines,
            });
        }
        for (i, line) in cmd.lines.iter().enumerate() {
            if cmd.lines[..i].iter().any(|other| {
                other.product_id == line.product_id && other.warehouse_id == line.warehouse_id
            }) {
                return Err(ReserveError::DuplicateLine(line.product_id.clone()));
            }
        }
        let ttl = cmd.ttl_ms.unwrap_or(self.config.default_ttl_ms);
        if !(1000..=self.config.max_ttl_ms).contains(&ttl) {
            return Err(ReserveError::TtlOutOfRange {
                max_ms: self.config.max_ttl_ms,
            });
        }
        let request: String = cmd
            .lines
            .iter()
            .map(|l| {
                format!(
                    "{}|{}|{};",
                    l.product_id,
                    l.quantity.get(),
                    l.warehouse_id.as_ref().map_or("", |w| w.as_str())
                )
            })
            .chain([format!("ttl={ttl}")])
            .collect();
        let (id, fingerprint) = match &cmd.idempotency_key {
            Some(key) => {
                let a = storage::digest(&["reservation", key.as_str()]);
                let b = storage::digest(&["reservation-id", key.as_str()]);
                let id = format!(
                    "{:08x}-{:04x}-5{:03x}-8{:03x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xfff,
                    (b >> 48) & 0xfff,
                    b & 0xffff_ffff_ffff
                );
                let fingerprint = format!("{:016x}", storage::digest(&[&request]));
                (id, Some(fingerprint))
            }
            None => (self.ids.new_id(), None),
        };
        let id = ReservationId::parse(id).map_err(anyhow::Error::from)?;
        if cmd.idempotency_key.is_some()
            && let Some(existing) = self.read_reservation(&id)?
        {
            if existing.fingerprint != fingerprint {
                return Err(ReserveError::IdempotencyMismatch);
            }
            return self.reserve_outcome(self.drive(existing)?);
        }
        let now = self.now();
        let record = ReservationRecord {
            id: id.clone(),
            state: ReservationState::Reserving,
            lines: cmd
                .lines
                .iter()
                .map(|l| ReservationLine {
                    product_id: l.product_id.clone(),
                    warehouse_id: l.warehouse_id.clone(),
                    quantity: l.quantity.get(),
                    allocations: Vec::new(),
                    placement: None,
                    committed: None,
                })
                .collect(),
            created_at: now,
            updated_at: now,
            expires_at: expiry(now, ttl),
            order_id: None,
            fingerprint,
            idempotency_key: cmd.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            shortage: None,
            version: 1,
            ops: Default::default(),
        };
        if record.lines.len() == 1 {
            return self.reserve_one(record);
        }
        // Filed for the sweep before the intent exists, so that an intent abandoned
        // half-way is found and finished.
        self.due_add(
            &Due::Reservation(id.clone()),
            (now + STALE_AFTER_MS).min(record.expires_at),
        )?;
        self.kv
            .set(&keys::reservation(&id), &storage::encode(&record))
            .map_err(EngineError::from)?;
        self.reserve_outcome(self.drive(record)?)
    }

    /// A one-line reservation has a single product step, so that step's
    /// compare-and-swap is its decision: no intent is written first, and the reservation
    /// record is written once, settled, after it (rule 1 of the protocol is for several
    /// lines). A request that dies in between leaves a hold that no reservation records:
    /// its in-flight entry lets a retry under the same idempotency key finish the job, and
    /// otherwise the hold lapses at its expiry, like that of a client that walked away.
    fn reserve_one(&self, mut record: ReservationRecord) -> Result<ReservationView, ReserveError> {
        let line = record.lines[0].clone();
        match self.place_line(&record, &line)? {
            Placement::Placed {
                allocations,
                op,
                expires_at,
            } => {
                // A placement left by a request that died under the same idempotency key
                // is this request's only if it holds what this one asks for.
                let units: u64 = allocations.iter().map(|a| a.quantity).sum();
                if units != line.quantity {
                    return Err(ReserveError::IdempotencyMismatch);
                }
                record.state = ReservationState::Pending;
                record.expires_at = expires_at;
                record.lines[0].allocations = allocations;
                record.lines[0].placement = Some(op);
            }
            Placement::Short(shortage) => {
                record.state = ReservationState::Rejected;
                record.shortage = Some(shortage);
                // Recorded only when a retry must get the same answer, and for as long
                // as an idempotency record.
                if record.idempotency_key.is_none() {
                    return self.reserve_outcome(record);
                }
                self.due_add(
                    &Due::Reservation(record.id.clone()),
                    record.updated_at + self.config.idempotency_retention_ms,
                )?;
            }
            // A request under the same idempotency key got there first and its
            // reservation has moved on: answer with what it recorded.
            Placement::Cancelled => {
                let settled = self
                    .read_reservation(&record.id)?
                    .ok_or(ReserveError::Busy)?;
                return self.reserve_outcome(self.drive(settled)?);
            }
        }
        self.kv
            .set(&keys::reservation(&record.id), &storage::encode(&record))
            .map_err(EngineError::from)?;
        self.reserve_outcome(record)
    }

    fn reserve_outcome(&self, record: ReservationRecord) -> Result<ReservationView, ReserveError> {
        match (record.state, record.shortage.clone()) {
            (ReservationState::Rejecting | ReservationState::Rejected, Some(s))
                if s.unknown_product =>
            {
                Err(ReserveError::ProductNotFound(s.product_id))
            }
            (ReservationState::Rejecting | ReservationState::Rejected, Some(s)) => {
                Err(ReserveError::InsufficientStock {
                    product_id: s.product_id,
                    requested: s.requested,
                    available: s.available,
                })
            }
            _ => Ok(record.view(self.now())),
        }
    }

    pub fn get_reservation(
        &self,
        id: &ReservationId,
    ) -> Result<ReservationView, GetReservationError> {
        let record = self
            .read_reservation(id)?
            .ok_or_else(|| GetReservationError::NotFound(id.clone()))?;
        let stale = record.updated_at + STALE_AFTER_MS <= self.now();
        let record = if record.is_one_line_pending() {
            self.with_product_step(record)?
        } else if !record.state.is_settled() && stale {
            self.drive(record)?
        } else {
            record
        };
        Ok(record.view(self.now()))
    }

    pub fn release(&self, id: &ReservationId) -> Result<ReservationView, ReleaseError> {
        self.then_sweep(self.release_now(id))
    }

    fn release_now(&self, id: &ReservationId) -> Result<ReservationView, ReleaseError> {
        let current = self
            .read_reservation(id)?
            .ok_or_else(|| ReleaseError::NotFound(id.clone()))?;
        if current.is_one_line_pending() {
            match self.finish_one(&current, LineEffect::Released, None)? {
                LineOutcome::Released => {
                    let now = self.now();
                    let done = current.finished(LineEffect::Released, 0, None, now);
                    return Ok(done.view(now));
                }
                LineOutcome::Committed { .. } => return Err(ReleaseError::AlreadyCommitted),
                // Lapsed: nothing is held any more, and the reservation shows as expired.
                LineOutcome::Lapsed => return Ok(current.view(self.now())),
                // Its record moved on meanwhile: answer from it, below.
                LineOutcome::Recorded => {}
            }
        }
        self.file_change(&current)?;
        let missing = || ReleaseError::NotFound(id.clone());
        let decided = self.transition(id, missing, |r, now| match r.state {
            ReservationState::Committing | ReservationState::Committed => {
                Err(ReleaseError::AlreadyCommitted)
            }
            ReservationState::Rejecting | ReservationState::Rejected => Err(ReleaseError::Rejected),
            ReservationState::Releasing
            | ReservationState::Released
            | ReservationState::Expired => Ok(None),
            ReservationState::Reserving | ReservationState::Pending if now >= r.expires_at => {
                Ok(None)
            }
            ReservationState::Reserving | ReservationState::Pending => {
                let mut next = r.clone();
                next.state = ReservationState::Releasing;
                Ok(Some(next))
            }
        })?;
        Ok(self.drive(decided)?.view(self.now()))
    }

    pub fn commit(
        &self,
        id: &ReservationId,
        order_id: &OrderId,
    ) -> Result<ReservationView, CommitError> {
        self.then_sweep(self.commit_now(id, order_id))
    }

    fn commit_now(
        &self,
        id: &ReservationId,
        order_id: &OrderId,
    ) -> Result<ReservationView, CommitError> {
        let current = self
            .read_reservation(id)?
            .ok_or_else(|| CommitError::NotFound(id.clone()))?;
        if current.is_one_line_pending() {
            if self.now() >= current.expires_at {
                return Err(CommitError::Expired {
                    expires_at: current.expires_at,
                });
            }
            match self.finish_one(&current, LineEffect::Committed, Some(order_id))? {
                LineOutcome::Committed {
                    units,
                    order_id: to,
                } => {
                    return match to {
                        Some(to) if &to != order_id => {
                            Err(CommitError::OrderMismatch { committed_to: to })
                        }
                        to => {
                            let now = self.now();
                            let done = current.finished(LineEffect::Committed, units, to, now);
                            Ok(done.view(now))
                        }
                    };
                }
                LineOutcome::Released => return Err(CommitError::AlreadyReleased),
                LineOutcome::Lapsed => {
                    return Err(CommitError::Expired {
                        expires_at: current.expires_at,
                    });
                }
                LineOutcome::Recorded => {}
            }
        }
        // A commit may arrive while the reservation is still being placed (its request
        // died): finish placing it first.
        if current.state == ReservationState::Reserving {
            self.drive(current.clone())?;
        }
        self.file_change(&current)?;
        let missing = || CommitError::NotFound(id.clone());
        let decided = self.transition(id, missing, |r, now| match r.state {
            ReservationState::Committing | ReservationState::Committed => match &r.order_id {
                Some(o) if o != order_id => Err(CommitError::OrderMismatch {
                    committed_to: o.clone(),
                }),
                _ => Ok(None),
            },
            ReservationState::Releasing | ReservationState::Released => {
                Err(CommitError::AlreadyReleased)
            }
            ReservationState::Rejecting | ReservationState::Rejected => Err(CommitError::Rejected),
            ReservationState::Expired => Err(CommitError::Expired {
                expires_at: r.expires_at,
            }),
            ReservationState::Reserving | ReservationState::Pending if now >= r.expires_at => {
                Err(CommitError::Expired {
                    expires_at: r.expires_at,
                })
            }
            ReservationState::Reserving => Err(CommitError::Busy),
            ReservationState::Pending => {
                let mut next = r.clone();
                next.state = ReservationState::Committing;
                next.order_id = Some(order_id.clone());
                Ok(Some(next))
            }
        })?;
        Ok(self.drive(decided)?.view(self.now()))
    }

    /// Files a reservation of several lines that may be about to change state, so that the
    /// sweep finishes the change if its request dies half-way.
    fn file_change(&self, record: &ReservationRecord) -> Result<(), EngineError> {
        let changeable = matches!(
            record.state,
            ReservationState::Reserving | ReservationState::Pending
        );
        let now = self.now();
        if changeable && record.lines.len() > 1 && now < record.expires_at {
            self.due_add(
                &Due::Reservation(record.id.clone()),
                (now + STALE_AFTER_MS).min(record.expires_at),
            )?;
        }
        Ok(())
    }

    /// One call of the sweep: reads the due work from the mark (or from `after`, the
    /// `next` of the previous call) on, dealing with at most `limit` reservations and
    /// records. Records each lapsed reservation as expired (with a `ReservationExpired`
    /// entry in each product's history), finishes those abandoned mid-change, files
    /// pending ones again at their expiry and settled ones at the end of their retention,
    /// and deletes what has outlived its retention (see [`crate::indexes`]). Walks the
    /// days' lists of buckets, so empty stretches cost one read a day; the mark moves
    /// past buckets found empty, and their shards and day lists are deleted.
    pub fn expire_due(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ExpireReport, ExpireError> {
        let mut report = ExpireReport::default();
        let Some(mark) = storage::read::<K, DueMark>(&self.kv, crate::indexes::keys::DUE_MARK)?
        else {
            report.done = true;
            return Ok(report);
        };
        let cursor = after
            .map(|raw| {
                Cursor::parse(raw, u64::MAX, |s| {
                    super::index::digits(s).filter(|n| *n < indexes::DUE_SHARDS)
                })
            })
            .transpose()?;
        let now = self.now();
        let last = indexes::due_bucket(now);
        // Buckets before this one have ended long enough ago that nothing files into them.
        let first_open = now.saturating_sub(indexes::DUE_GRACE_MS) / indexes::DUE_BUCKET_MS;
        let ended = |bucket: u64| bucket < first_open;
        // A cursor names (bucket, shard): its `shard` field carries the bucket.
        let (mut bucket, mut shard) = match &cursor {
            Some(c) if c.shard >= mark.bucket => (c.shard, c.last),
            _ => (mark.bucket, 0),
        };
        // Only a call that starts at the mark knows that nothing lies before it.
        let from_mark = cursor.is_none();
        // The first bucket seen that still holds entries: the mark may move up to it.
        let mut blocked = None;
        let mut budget = Budget {
            limit,
            handled: 0,
            reads: 0,
        };
        // Shards and day lists that nothing will file into any more, found empty.
        let mut gone = Vec::new();
        let mut stop = None;
        'days: while bucket <= last {
            if budget.spent() {
                stop = Some((bucket, shard));
                break;
            }
            let day = bucket / indexes::DUE_BUCKETS_PER_DAY;
            let next_day = (day + 1) * indexes::DUE_BUCKETS_PER_DAY;
            budget.reads += 1;
            let day_key = indexes::keys::due_day(day);
            // Exact reads: what they find absent is taken as empty, and deleted.
            let listed = storage::read_exact::<K, DueDay>(&self.kv, &day_key)?;
            let buckets: Vec<u64> = listed
                .as_ref()
                .map(|d| d.buckets.range(bucket..next_day).copied().collect())
                .unwrap_or_default();
            let mut day_clear = true;
            for b in buckets {
                if b > last {
                    break;
                }
                if b != bucket {
                    (bucket, shard) = (b, 0);
                }
                while shard < indexes::DUE_SHARDS {
                    if budget.spent() {
                        stop = Some((bucket, shard));
                        break 'days;
                    }
                    budget.reads += 1;
                    let key = indexes::keys::due(bucket, shard);
                    if let Some(filed) = storage::read_exact::<K, DueShard>(&self.kv, &key)? {
                        let mut left = false;
                        let mut done = Vec::new();
                        for (entry, due) in &filed.entries {
                            if *due > now || budget.spent() {
                                left = true;
                                continue;
                            }
                            if self.sweep_entry(entry, bucket, now, &mut budget, &mut report)? {
                                done.push((entry.clone(), *due));
                            } else {
                                left = true;
                            }
                        }
                        if !done.is_empty() {
                            self.due_remove(&key, &done)?;
                        }
                        if left {
                            blocked.get_or_insert(bucket);
                            day_clear = false;
                            // Stopped inside this shard: the next call starts with it.
                            if budget.spent() {
                                stop = Some((bucket, shard));
                                break 'days;
                            }
                        } else if ended(bucket) {
                            gone.push(keys::birth(&key));
                            gone.push(key);
                        }
                    }
                    shard += 1;
                }
            }
            if listed.is_some() && day_clear && from_mark && ended(next_day - 1) {
                gone.push(keys::birth(&day_key));
                gone.push(day_key);
            }
            (bucket, shard) = (next_day, 0);
        }
        if !gone.is_empty() {
            self.kv.delete_many(&gone).map_err(EngineError::from)?;
        }
        let reached = stop.map_or(last + 1, |(b, _)| b);
        let to = blocked.unwrap_or(reached).min(reached).min(first_open);
        if from_mark && to > mark.bucket {
            self.advance_due_mark(mark.bucket, to)?;
            // The day list of the new mark keeps only what lies ahead, so that reading it
            // costs what is still to come, not the whole day so far.
            self.unlist_due_buckets_before(to)?;
        }
        report.done = stop.is_none();
        report.next = stop.map(|(bucket, shard)| {
            Cursor {
                shard: bucket,
                last: shard,
            }
            .to_string()
        });
        Ok(report)
    }

    /// Deals with one due entry of `bucket`; returns whether it can go.
    fn sweep_entry(
        &self,
        entry: &str,
        bucket: u64,
        now: u64,
        budget: &mut Budget,
        report: &mut ExpireReport,
    ) -> Result<bool, ExpireError> {
        // An entry no version of the service wrote: nothing to do.
        let Some(due) = Due::parse(entry) else {
            return Ok(true);
        };
        match due {
            Due::Product(id) => self.sweep_product(&id, bucket, now, budget, report),
            Due::Reservation(id) => {
                budget.handled += 1;
                budget.reads += 1;
                self.sweep_reservation(&id, now, report)
            }
            Due::Cart(id) => {
                budget.handled += 1;
                budget.reads += 1;
                self.sweep_cart(&id, now, report)?;
                Ok(true)
            }
            Due::Record(key) => {
                budget.handled += 1;
                self.delete_record(&key)?;
                report.deleted += 1;
                Ok(true)
            }
        }
    }

    /// Deletes a record and the counter that elected its creator, if it had one.
    fn delete_record(&self, key: &str) -> Result<(), EngineError> {
        self.kv
            .delete_many(&[key.to_owned(), keys::birth(key)])
            .map_err(EngineError::from)
    }

    /// How long a reservation settled in `state` is kept: a rejection is only an answer
    /// kept for retries under its idempotency key.
    fn retention_of(&self, state: ReservationState) -> u64 {
        match state {
            ReservationState::Rejected => self.config.idempotency_retention_ms,
            _ => self.config.settled_retention_ms,
        }
    }

    /// When a settled record's retention ends: `settled_at` plus `retention`, and never in
    /// the past, where the mark may already be.
    fn retained_until(settled_at: u64, retention: u64, now: u64) -> u64 {
        (settled_at + retention).max(now + 1)
    }

    /// The one-line reservations of `product` that have lapsed, span after span (one per
    /// due bucket), each read from the part of its history that the product record
    /// names, up to the first whose hold has not lapsed yet; returns whether the product
    /// has no span left up to `bucket`, where it is filed (dropping a span files the
    /// product at the next, in `write_product`, so its later spans need no entry here).
    fn sweep_product(
        &self,
        id: &ProductId,
        bucket: u64,
        now: u64,
        budget: &mut Budget,
        report: &mut ExpireReport,
    ) -> Result<bool, ExpireError> {
        loop {
            let swept = self.sweep_span(id, bucket, now, budget, report)?;
            if !swept.go_on || budget.spent() {
                return Ok(swept.settled);
            }
        }
    }

    /// One step of [`Self::sweep_product`]: the earliest span up to `bucket`.
    fn sweep_span(
        &self,
        id: &ProductId,
        bucket: u64,
        now: u64,
        budget: &mut Budget,
        report: &mut ExpireReport,
    ) -> Result<Swept, ExpireError> {
        let gone = Swept {
            settled: true,
            go_on: false,
        };
        budget.reads += 1;
        let Some(product) = self.read_product(id)? else {
            return Ok(gone);
        };
        // Every span that may have lapsed by now, not only up to `bucket`: a product filed
        // late (by a sweep that was behind) is filed after the spans it has to catch up.
        let Some((&span, &(first, last))) = product.due.range(..=indexes::due_bucket(now)).next()
        else {
            return Ok(gone);
        };
        let retention = self.config.settled_retention_ms;
        let mut seq = first;
        let mut seen = HashSet::new();
        let mut retained = Vec::new();
        while seq <= last && !budget.spent() {
            budget.reads += 1;
            let entry = self.history_entry(id, &product, seq)?;
            seq += 1;
            let rid = match (&entry.kind, &entry.reservation_id) {
                (EventKind::StockReserved, Some(rid)) if seen.insert(rid.clone()) => rid,
                _ => continue,
            };
            let Ok(rid) = ReservationId::parse(rid) else {
                continue;
            };
            budget.handled += 1;
            budget.reads += 1;
            // Absent: its request died before recording it, and its hold has lapsed.
            let Some(record) =
                storage::read_exact::<K, ReservationRecord>(&self.kv, &keys::reservation(&rid))?
            else {
                continue;
            };
            // Reservations of several lines, and holds of another bucket, are filed on
            // their own.
            if record.lines.len() > 1 || indexes::due_bucket(record.expires_at) != span {
                continue;
            }
            let settled_at = if record.state.is_final() {
                record.updated_at
            } else if now >= record.expires_at {
                if self.record_expiry(record)? {
                    report.expired.push(rid.clone());
                } else {
                    report.repaired.push(rid.clone());
                }
                now
            } else {
                // Holds lapse in about the order they were placed: the rest of the span
                // is for a later call (by the bucket's end, all of it has lapsed).
                seq -= 1;
                break;
            };
            retained.push((
                Due::Reservation(rid).encode(),
                Self::retained_until(settled_at, retention, now),
            ));
        }
        self.due_add_many(retained)?;
        // Progress is kept in the product record, so the next call starts where this one
        // stopped; the bucket goes once its span is done (a reserve that extended the
        // span meanwhile keeps it).
        let op = format!(
            "s{:016x}",
            storage::digest(&["sweep", id.as_str(), &span.to_string(), &seq.to_string()])
        );
        let outcome = self.write_product(id, &op, |current, _| {
            let Some(current) = current else {
                return Ok::<_, ExpireError>(Step::Keep(gone));
            };
            let Some(&(from, to)) = current.due.get(&span) else {
                return Ok(Step::Keep(Swept::after(current, bucket, now)));
            };
            if from >= seq {
                return Ok(Step::Keep(Swept {
                    settled: false,
                    go_on: false,
                }));
            }
            let mut record = current.clone();
            if to < seq {
                record.due.remove(&span);
            } else {
                record.due.insert(span, (seq, to));
            }
            let result = if to < seq {
                Swept::after(&record, bucket, now)
            } else {
                Swept {
                    settled: false,
                    go_on: false,
                }
            };
            Ok(Step::Write {
                record: Box::new(record),
                events: Vec::new(),
                result,
            })
        })?;
        Ok(match outcome {
            Outcome::Written { result, .. } | Outcome::Kept(result) => result,
            Outcome::AlreadyApplied(record) if !record.due.contains_key(&span) => {
                Swept::after(&record, bucket, now)
            }
            Outcome::AlreadyApplied(_) => Swept {
                settled: false,
                go_on: false,
            },
        })
    }

    /// Deals with one due reservation; returns whether its entry can go.
    fn sweep_reservation(
        &self,
        id: &ReservationId,
        now: u64,
        report: &mut ExpireReport,
    ) -> Result<bool, ExpireError> {
        // Filed before its record was written, by a request that then died or was refused.
        // (The sweep reads exactly what it acts on, deletions included.)
        let Some(record) =
            storage::read_exact::<K, ReservationRecord>(&self.kv, &keys::reservation(id))?
        else {
            return Ok(true);
        };
        let lapsed = matches!(
            record.state,
            ReservationState::Reserving | ReservationState::Pending
        ) && now >= record.expires_at;
        let stale = record.updated_at + STALE_AFTER_MS <= now;
        if lapsed {
            if self.record_expiry(record)? {
                report.expired.push(id.clone());
            } else {
                report.repaired.push(id.clone());
            }
            self.due_add(
                &Due::Reservation(id.clone()),
                Self::retained_until(now, self.config.settled_retention_ms, now),
            )?;
            return Ok(true);
        }
        let record = if record.is_one_line_pending() && stale {
            let seen = self.adopt_finished(record)?;
            if seen.state != ReservationState::Pending {
                report.repaired.push(id.clone());
            }
            seen
        } else if !record.state.is_settled() && stale {
            report.repaired.push(id.clone());
            self.drive(record)?
        } else {
            record
        };
        match record.state {
            // Still to be recorded as expired: filed again at its expiry.
            ReservationState::Pending if now < record.expires_at => {
                self.due_add(&Due::Reservation(id.clone()), record.expires_at)?;
                Ok(true)
            }
            ReservationState::Released
            | ReservationState::Committed
            | ReservationState::Rejected
            | ReservationState::Expired => {
                let retention = self.retention_of(record.state);
                if record.updated_at + retention <= now {
                    self.delete_record(&keys::reservation(id))?;
                    report.deleted += 1;
                } else {
                    self.due_add(
                        &Due::Reservation(id.clone()),
                        Self::retained_until(record.updated_at, retention, now),
                    )?;
                }
                Ok(true)
            }
            // Mid-change and not yet abandoned, or lapsed just now: next time.
            _ => Ok(false),
        }
    }

    /// Returns false when the reservation turns out to have been committed or released
    /// before its expiry (a one-line step whose request died before recording it): its
    /// record is then finished instead.
    fn record_expiry(&self, record: ReservationRecord) -> Result<bool, ExpireError> {
        if record.is_one_line_pending()
            && self.adopt_finished(record.clone())?.state != ReservationState::Pending
        {
            return Ok(false);
        }
        // History first, keyed by an operation id derived from the reservation, so a
        // sweep that dies half-way and runs again does not record an expiry twice.
        let op = format!("x{:016x}", storage::digest(&["expire", record.id.as_str()]));
        for line in &record.lines {
            self.write_product(&line.product_id, &op, |current, _| {
                let Some(current) = current else {
                    return Ok::<_, ExpireError>(Step::Keep(()));
                };
                // A one-line step finished meanwhile: not an expiry (the record is
                // finished by the next read of it).
                if current
                    .inflight
                    .get(record.id.as_str())
                    .is_some_and(|e| e.effect != LineEffect::Held)
                {
                    return Ok(Step::Keep(()));
                }
                let mut e = NewEvent::new(EventKind::ReservationExpired, line.quantity as i64);
                e.reservation_id = Some(record.id.to_string());
                Ok(Step::Write {
                    record: Box::new(current.clone()),
                    events: vec![e],
                    result: (),
                })
            })?;
        }
        let missing = || ExpireError::Unknown(anyhow::anyhow!("reservation vanished"));
        self.transition(&record.id, missing, |r, _| {
            Ok(matches!(
                r.state,
                ReservationState::Reserving | ReservationState::Pending
            )
            .then(|| {
                let mut next = r.clone();
                next.state = ReservationState::Expired;
                next
            }))
        })?;
        Ok(true)
    }

    /// A pending one-line reservation as its product record says it is: released or
    /// committed already if the product step is done (its record is written later, with
    /// the product's next batch of history).
    fn with_product_step(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationRecord, EngineError> {
        let Some(product) = self.read_product(&record.lines[0].product_id)? else {
            return Ok(record);
        };
        Ok(match product.inflight.get(record.id.as_str()) {
            Some(e) if e.effect != LineEffect::Held => {
                let (units, order_id) = (e.committed.unwrap_or(0), e.order_id.clone());
                // Stamped with the time of the step, so every lookup shows the same record.
                record.finished(e.effect, units, order_id, e.since)
            }
            _ => record,
        })
    }

    /// Writes the record of a one-line reservation whose product step is done but not yet
    /// recorded; returns the record as it ends up. Every writer writes the outcome the
    /// product record holds, so a plain write is enough.
    fn adopt_finished(&self, record: ReservationRecord) -> Result<ReservationRecord, EngineError> {
        let seen = self.with_product_step(record)?;
        if seen.state != ReservationState::Pending {
            self.kv
                .set(&keys::reservation(&seen.id), &storage::encode(&seen))?;
        }
        Ok(seen)
    }

    /// The product step of a one-line release or commit: the decision point of both.
    /// The in-flight entry it leaves says what was done until the record says it too.
    fn finish_one(
        &self,
        record: &ReservationRecord,
        target: LineEffect,
        order_id: Option<&OrderId>,
    ) -> Result<LineOutcome, EngineError> {
        let line = &record.lines[0];
        let rid = record.id.as_str();
        let op = self.fresh_op();
        let key = keys::product(&line.product_id);
        let outcome = self.write_product(&line.product_id, &op, |current, now| {
            let Some(current) = current else {
                return Ok::<_, EngineError>(Step::Keep(LineOutcome::Lapsed));
            };
            let entry = current.inflight.get(rid);
            match entry {
                Some(e) if e.effect == LineEffect::Committed => {
                    return Ok(Step::Keep(LineOutcome::Committed {
                        units: e.committed.unwrap_or(0),
                        order_id: e.order_id.clone(),
                    }));
                }
                Some(e) if e.effect == LineEffect::Released => {
                    return Ok(Step::Keep(LineOutcome::Released));
                }
                _ => {}
            }
            // Decided at the time of this compare-and-swap, so an expiry sweep and a
            // finisher never both win.
            if now >= record.expires_at {
                return Ok(Step::Keep(LineOutcome::Lapsed));
            }
            // "No entry" also means "finished, recorded, and the entry dropped", which
            // happens only once the record says so: its state tells the two apart.
            if entry.is_none()
                && self
                    .read_reservation(&record.id)?
                    .is_none_or(|r| r.state != ReservationState::Pending)
            {
                return Ok(Step::Keep(LineOutcome::Recorded));
            }
            let mut next = current.clone();
            let mut released = 0;
            // A hold placed by another operation than the recorded one is a racing
            // duplicate: give it back whatever the target.
            if let Some(stray) = entry.filter(|e| line.placement.as_deref() != Some(e.op.as_str()))
            {
                released += unhold(&mut next.warehouses, stray, now);
            }
            let mut units = 0;
            if target == LineEffect::Committed {
                units = commit_allocations(
                    &mut next.warehouses,
                    &line.allocations,
                    record.expires_at,
                    now,
                );
            } else {
                released += release_allocations(
                    &mut next.warehouses,
                    &line.allocations,
                    record.expires_at,
                    now,
                );
            }
            next.inflight.insert(
                rid.to_owned(),
                InflightLine {
                    effect: target,
                    allocations: Vec::new(),
                    expires_at: record.expires_at,
                    since: now,
                    op: op.clone(),
                    committed: (target == LineEffect::Committed).then_some(units),
                    order_id: order_id.cloned(),
                },
            );
            let mut events = Vec::new();
            if released > 0 {
                let mut e = NewEvent::new(EventKind::StockReleased, released as i64);
                e.reservation_id = Some(rid.to_owned());
                events.push(e);
            }
            let result = if target == LineEffect::Committed {
                let mut e = NewEvent::new(EventKind::StockCommitted, units as i64);
                e.reservation_id = Some(rid.to_owned());
                e.order_id = order_id.map(|o| o.to_string());
                events.push(e);
                LineOutcome::Committed {
                    units,
                    order_id: order_id.cloned(),
                }
            } else {
                LineOutcome::Released
            };
            Ok(Step::Write {
                record: Box::new(next),
                events,
                result,
            })
        })?;
        Ok(match outcome {
            Outcome::Written { result, .. } | Outcome::Kept(result) => result,
            Outcome::AlreadyApplied(_) => return Err(EngineError::Unaccounted { key, op }),
        })
    }

    /// Compare-and-swap on a reservation record. `decide` returns the next record, or
    /// `None` to leave it as it is; the record as it ends up is returned.
    fn transition<E>(
        &self,
        id: &ReservationId,
        missing: impl Fn() -> E,
        mut decide: impl FnMut(&ReservationRecord, u64) -> Result<Option<ReservationRecord>, E>,
    ) -> Result<ReservationRecord, E>
    where
        E: From<EngineError>,
    {
        let op = self.fresh_op();
        let outcome = self
            .engine()
            .update(&keys::reservation(id), &op, |current, now| {
                let Some(current) = current else {
                    return Err(missing());
                };
                Ok(match decide(current, now)? {
                    Some(next) => Decision::Write(next, None),
                    None => Decision::Keep(Some(current.clone())),
                })
            })?;
        Ok(match outcome {
            Outcome::Written { record, .. } | Outcome::AlreadyApplied(record) => record,
            Outcome::Kept(record) => record.expect("kept records are returned"),
        })
    }

    /// Finishes whatever a reservation's state calls for, from any point a request may
    /// have stopped at, and returns the settled record.
    fn drive(&self, record: ReservationRecord) -> Result<ReservationRecord, EngineError> {
        match record.state {
            ReservationState::Reserving => self.place(record),
            ReservationState::Releasing | ReservationState::Rejecting => {
                self.finish(record, LineEffect::Released)
            }
            ReservationState::Committing => self.finish(record, LineEffect::Committed),
            _ => Ok(record),
        }
    }

    /// Places every line, then decides `Pending` or `Rejected`.
    fn place(&self, record: ReservationRecord) -> Result<ReservationRecord, EngineError> {
        let mut placed = Vec::with_capacity(record.lines.len());
        let mut shortage = None;
        for line in &record.lines {
            match self.place_line(&record, line)? {
                Placement::Placed {
                    allocations, op, ..
                } => placed.push((allocations, op)),
                Placement::Short(s) => {
                    shortage = Some(s);
                    break;
                }
                Placement::Cancelled => break,
            }
        }
        let complete = placed.len() == record.lines.len();
        let missing = || EngineError::Kv(anyhow::anyhow!("reservation vanished").into());
        let decided = self.transition(&record.id, missing, |r, _| {
            if r.state != ReservationState::Reserving {
                return Ok(None);
            }
            let mut next = r.clone();
            if complete {
                next.state = ReservationState::Pending;
                for (line, (allocations, op)) in next.lines.iter_mut().zip(&placed) {
                    line.allocations = allocations.clone();
                    line.placement = Some(op.clone());
                }
            } else {
                next.state = ReservationState::Rejecting;
                next.shortage = shortage.clone();
            }
            Ok(Some(next))
        })?;
        // Gives back what was placed if the reservation is rejected or being released;
        // holds placed by this call that another call's decision does not record are
        // strays, returned by the product's next write (see `settle`).
        self.drive(decided)
    }

    fn place_line(
        &self,
        record: &ReservationRecord,
        line: &ReservationLine,
    ) -> Result<Placement, EngineError> {
        let rid = record.id.as_str();
        let op = self.fresh_op();
        let key = keys::product(&line.product_id);
        let outcome = self.write_product(&line.product_id, &op, |current, now| {
            let Some(current) = current else {
                return Ok::<_, EngineError>(Step::Keep(Placement::Short(Shortage {
                    product_id: line.product_id.clone(),
                    requested: line.quantity,
                    available: 0,
                    unknown_product: true,
                })));
            };
            if let Some(entry) = current.inflight.get(rid) {
                return Ok(Step::Keep(match entry.effect {
                    LineEffect::Held => Placement::Placed {
                        allocations: entry.allocations.clone(),
                        op: entry.op.clone(),
                        expires_at: entry.expires_at,
                    },
                    LineEffect::Released | LineEffect::Committed => Placement::Cancelled,
                }));
            }
            let allocations = match allocate(
                &current.warehouses,
                line.warehouse_id.as_ref(),
                line.quantity,
                now,
            ) {
                Ok(a) => a,
                Err(available) => {
                    return Ok(Step::Keep(Placement::Short(Shortage {
                        product_id: line.product_id.clone(),
                        requested: line.quantity,
                        available,
                        unknown_product: false,
                    })));
                }
            };
            let mut next = current.clone();
            let mut events = Vec::new();
            for a in &allocations {
                next.warehouses
                    .get_mut(&a.warehouse_id)
                    .expect("allocated from an existing warehouse")
                    .add_hold(record.expires_at, a.quantity);
                let mut e = NewEvent::new(EventKind::StockReserved, a.quantity as i64);
                e.warehouse_id = Some(a.warehouse_id.clone());
                e.reservation_id = Some(rid.to_owned());
                e.idempotency_key = record.idempotency_key.clone();
                // A one-line reservation is found by the sweep through its product.
                if record.lines.len() == 1 {
                    e.lapses_at = Some(record.expires_at);
                }
                events.push(e);
            }
            next.inflight.insert(
                rid.to_owned(),
                InflightLine {
                    effect: LineEffect::Held,
                    allocations: allocations.clone(),
                    expires_at: record.expires_at,
                    since: now,
                    op: op.clone(),
                    committed: None,
                    order_id: None,
                },
            );
            Ok(Step::Write {
                record: Box::new(next),
                events,
                result: Placement::Placed {
                    allocations,
                    op: op.clone(),
                    expires_at: record.expires_at,
                },
            })
        })?;
        Ok(match outcome {
            Outcome::Written { result, .. } | Outcome::Kept(result) => result,
            Outcome::AlreadyApplied(_) => return Err(EngineError::Unaccounted { key, op }),
        })
    }

    /// Applies a decided release or commit to every line, then settles the reservation.
    fn finish(
        &self,
        record: ReservationRecord,
        target: LineEffect,
    ) -> Result<ReservationRecord, EngineError> {
        let mut committed = Vec::with_capacity(record.lines.len());
        for line in &record.lines {
            committed.push(self.finish_line(&record, line, target)?);
        }
        let missing = || EngineError::Kv(anyhow::anyhow!("reservation vanished").into());
        self.transition(&record.id, missing, |r, _| {
            let settled = match r.state {
                ReservationState::Releasing => ReservationState::Released,
                ReservationState::Rejecting => ReservationState::Rejected,
                ReservationState::Committing => ReservationState::Committed,
                _ => return Ok(None),
            };
            let mut next = r.clone();
            next.state = settled;
            if settled == ReservationState::Committed {
                for (line, units) in next.lines.iter_mut().zip(&committed) {
                    line.committed = Some(*units);
                }
            }
            Ok(Some(next))
        })
    }

    /// One product step of a decided release or commit; returns units committed.
    fn finish_line(
        &self,
        record: &ReservationRecord,
        line: &ReservationLine,
        target: LineEffect,
    ) -> Result<u64, EngineError> {
        let rid = record.id.as_str();
        let op = self.fresh_op();
        let key = keys::product(&line.product_id);
        let outcome = self.write_product(&line.product_id, &op, |current, now| {
            let Some(current) = current else {
                return Ok::<_, EngineError>(Step::Keep(0));
            };
            let entry = current.inflight.get(rid);
            if let Some(e) = entry
                && e.effect != LineEffect::Held
            {
                return Ok(Step::Keep(e.committed.unwrap_or(0)));
            }
            // A hold placed by an operation other than the recorded placement is a
            // duplicate from a racing retry: give it back whatever the target.
            let stray = entry.filter(|e| line.placement.as_deref() != Some(e.op.as_str()));
            let confirmed = line.placement.is_some();
            let recorded_hold_live = confirmed && (entry.is_none() || stray.is_some());
            // "No entry" also means "step done" once another finisher has settled the
            // reservation and a later write dropped the entry: this call may have read
            // the reservation before that. It settles before the drop and is read after
            // this record, so its state tells the two apart.
            if recorded_hold_live
                && let Some(now_stored) = self.read_reservation(&record.id)?
                // A read older than the record this call holds (an eventually
                // consistent `get` that does not show this call's own transition yet)
                // tells nothing new.
                && now_stored.version >= record.version
                && !matches!(
                    now_stored.state,
                    ReservationState::Releasing
                        | ReservationState::Rejecting
                        | ReservationState::Committing
                )
            {
                let committed = now_stored
                    .lines
                    .iter()
                    .find(|l| l.product_id == line.product_id)
                    .and_then(|l| l.committed);
                return Ok(Step::Keep(committed.unwrap_or(0)));
            }
            let mut next = current.clone();
            let mut released = 0;
            if let Some(e) = entry
                && (stray.is_some() || target == LineEffect::Released)
            {
                released += unhold(&mut next.warehouses, e, now);
            }
            let mut units_committed = 0;
            match target {
                LineEffect::Released if recorded_hold_live => {
                    released += release_allocations(
                        &mut next.warehouses,
                        &line.allocations,
                        record.expires_at,
                        now,
                    );
                }
                LineEffect::Committed => {
                    let allocations = match entry {
                        Some(e) if stray.is_none() => e.allocations.clone(),
                        _ => line.allocations.clone(),
                    };
                    units_committed = commit_allocations(
                        &mut next.warehouses,
                        &allocations,
                        record.expires_at,
                        now,
                    );
                }
                _ => {}
            }
            next.inflight.insert(
                rid.to_owned(),
                InflightLine {
                    effect: target,
                    allocations: Vec::new(),
                    expires_at: record.expires_at,
                    since: now,
                    op: op.clone(),
                    committed: (target == LineEffect::Committed).then_some(units_committed),
                    order_id: record.order_id.clone(),
                },
            );
            let mut events = Vec::new();
            if released > 0 {
                let mut e = NewEvent::new(EventKind::StockReleased, released as i64);
                e.reservation_id = Some(rid.to_owned());
                events.push(e);
            }
            if target == LineEffect::Committed {
                let mut e = NewEvent::new(EventKind::StockCommitted, units_committed as i64);
                e.reservation_id = Some(rid.to_owned());
                e.order_id = record.order_id.as_ref().map(|o| o.to_string());
                if units_committed < line.quantity {
                    e.reason = Some(format!(
                        "hold expired before the commit was applied: {} of {} units committed",
                        units_committed, line.quantity
                    ));
                }
                events.push(e);
            }
            Ok(Step::Write {
                record: Box::new(next),
                events,
                result: units_committed,
            })
        })?;
        Ok(match outcome {
            Outcome::Written { result, .. } | Outcome::Kept(result) => result,
            Outcome::AlreadyApplied(_) => return Err(EngineError::Unaccounted { key, op }),
        })
    }
}

/// What one step of the sweep over a product's spans left.
#[derive(Debug, Clone, Copy)]
struct Swept {
    /// No span is left up to the bucket where the product is filed, so its entry there
    /// can go (a later span was filed when it became the earliest).
    settled: bool,
    /// The span looked at is done and another may have lapsed: the next step looks.
    go_on: bool,
}

impl Swept {
    /// After the span looked at is done, as `product` now stands.
    fn after(product: &ProductRecord, bucket: u64, now: u64) -> Self {
        Self {
            settled: product.due.range(..=bucket).next().is_none(),
            go_on: product
                .due
                .range(..=indexes::due_bucket(now))
                .next()
                .is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ReservationStatus;

    fn warehouses(levels: &[(&str, u64)]) -> BTreeMap<WarehouseId, WarehouseStock> {
        levels
            .iter()
            .map(|(id, on_hand)| {
                (
                    WarehouseId::parse(*id).unwrap(),
                    WarehouseStock {
                        on_hand: *on_hand,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn allocation_takes_from_the_fullest_warehouse_first_and_splits() {
        let w = warehouses(&[("a", 3), ("b", 5)]);
        let got = allocate(&w, None, 7, 0).unwrap();
        let got: Vec<(&str, u64)> = got
            .iter()
            .map(|a| (a.warehouse_id.as_str(), a.quantity))
            .collect();
        assert_eq!(got, vec![("b", 5), ("a", 2)]);
    }

    #[test]
    fn allocation_in_a_named_warehouse_ignores_the_others() {
        let w = warehouses(&[("a", 3), ("b", 5)]);
        let a = WarehouseId::parse("a").unwrap();
        assert_eq!(allocate(&w, Some(&a), 4, 0).unwrap_err(), 3);
    }

    #[test]
    fn expiry_rounds_up_to_the_second() {
        assert_eq!(expiry(1_500, 1_000), 3_000);
        assert_eq!(expiry(2_000, 1_000), 3_000);
    }

    #[test]
    fn status_of_a_pending_reservation_turns_expired_at_its_expiry() {
        let r = ReservationRecord {
            id: ReservationId::parse("r").unwrap(),
            state: ReservationState::Pending,
            lines: vec![],
            created_at: 0,
            updated_at: 0,
            expires_at: 1_000,
            order_id: None,
            fingerprint: None,
            idempotency_key: None,
            shortage: None,
            version: 1,
            ops: Default::default(),
        };
        assert_eq!(r.status(999), ReservationStatus::Pending);
        assert_eq!(r.status(1_000), ReservationStatus::Expired);
    }

    #[test]
    fn committing_an_expired_hold_takes_at_most_what_is_available() {
        let mut w = warehouses(&[("a", 5)]);
        let a = WarehouseId::parse("a").unwrap();
        w.get_mut(&a).unwrap().add_hold(10_000, 4);
        let allocations = vec![Allocation {
            warehouse_id: a.clone(),
            quantity: 3,
        }];
        // The line's own hold (expiring at 1_000) is gone; another live hold keeps 4.
        assert_eq!(commit_allocations(&mut w, &allocations, 1_000, 2_000), 1);
        assert_eq!(w[&a].on_hand, 4);
        assert_eq!(w[&a].available(2_000), 0);
    }
}
