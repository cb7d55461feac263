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
//!
//! # Layout
//! One file per command (`reserve`, `lookup`, `release`, `commit`, `expire`), on top of
//! the two protocols they share (`one_line`, `multi_line`) and of `allocation`, which
//! moves units between the holds and the levels of a product record.

mod allocation;
mod commit;
mod expire;
mod lookup;
mod multi_line;
mod one_line;
mod release;
mod reserve;

pub(crate) use allocation::unhold;

use super::stock::engine_errors;
use super::{Step, StockService};
use crate::models::{
    Allocation, IdempotencyKey, OpId, OrderId, ProductId, ProductRecord, Quantity, ReservationId,
    Shortage, WarehouseId,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{EngineError, Outcome, keys};

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
    /// The requested hold is under a second or over the configured maximum, given in
    /// the whole seconds the API speaks.
    #[error("ttl must be between 1 and {max_seconds} seconds")]
    TtlOutOfRange { max_seconds: u64 },
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
        op: OpId,
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

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// A product step of a reservation line, under a fresh operation id that `decide`
    /// gets to record in the line's in-flight entry. No record holds that id before this
    /// call writes it, so finding it applied already is a write this call has no account
    /// of.
    fn fresh_product_step<R>(
        &self,
        id: &ProductId,
        mut decide: impl FnMut(Option<&ProductRecord>, u64, &OpId) -> Result<Step<R>, EngineError>,
    ) -> Result<R, EngineError> {
        let op = self.fresh_op();
        match self.write_product(id, &op, |current, now| decide(current, now, &op))? {
            Outcome::Written { result, .. } | Outcome::Kept(result) => Ok(result),
            Outcome::AlreadyApplied(_) => Err(EngineError::Unaccounted {
                key: keys::product(id),
                op,
            }),
        }
    }
}
