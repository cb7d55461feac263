//! Stock-level operations: update (absolute on-hand), adjust (signed delta with a
//! reason), availability, single and batch reads, history, and low-stock alerts.

use serde::{Deserialize, Serialize};

use super::{NewEvent, Step, StockService};
use crate::indexes::Due;
use crate::models::{
    Adjustment, EventKind, HistoryEntry, IdempotencyKey, OpId, ProductId, ProductRecord, Quantity,
    StockLevel, StockStatus, StockView, WarehouseId, WarehouseStock,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{self, EngineError, Outcome, keys};

/// Maps the storage engine's failures into an operation's error enum: contention that
/// outlasted the retries is `Busy` (503), anything else `Unknown` (500).
macro_rules! engine_errors {
    ($($error:ty),+ $(,)?) => {$(
        impl From<EngineError> for $error {
            fn from(e: EngineError) -> Self {
                match e {
                    EngineError::Contention => Self::Busy,
                    other => Self::Unknown(other.into()),
                }
            }
        }
    )+};
}
pub(crate) use engine_errors;

/// Maps the storage engine's failures for read-only operations, which never contend.
macro_rules! read_errors {
    ($($error:ty),+ $(,)?) => {$(
        impl From<EngineError> for $error {
            fn from(e: EngineError) -> Self {
                Self::Unknown(e.into())
            }
        }
    )+};
}
pub(crate) use read_errors;

/// `PUT /v1/stock/{id}`: set a warehouse's on-hand count (receipts, stock counts) and
/// optionally its low-stock threshold. Creates the product and the warehouse.
#[derive(Debug, Clone)]
pub struct UpdateStock {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub quantity: StockLevel,
    pub low_stock_threshold: Option<StockLevel>,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateStockError {
    #[error("on-hand {requested} would be below the {reserved} units held by reservations")]
    BelowReserved { requested: u64, reserved: u64 },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    #[error("the stock record is too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Why units are added or removed. Receipts and returns add, damage, loss and theft
/// remove; corrections and transfers go either way.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum AdjustmentReason {
    Restock,
    Return,
    Damage,
    Loss,
    Theft,
    Correction,
    Transfer,
}

impl AdjustmentReason {
    /// Every reason, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The reason named exactly (`RESTOCK`, …), or `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether a change of this sign makes sense for the reason.
    pub fn allows(self, adjustment: Adjustment) -> bool {
        match self {
            Self::Restock | Self::Return => adjustment.get() > 0,
            Self::Damage | Self::Loss | Self::Theft => adjustment.get() < 0,
            Self::Correction | Self::Transfer => true,
        }
    }
}

/// `POST /v1/stock/{id}/adjustments`.
#[derive(Debug, Clone)]
pub struct AdjustStock {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub adjustment: Adjustment,
    pub reason: AdjustmentReason,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdjustStockError {
    #[error("product {0} does not exist")]
    ProductNotFound(ProductId),
    #[error("reason {} does not allow an adjustment of {adjustment}", reason.as_str())]
    ReasonMismatch {
        reason: AdjustmentReason,
        adjustment: i64,
    },
    #[error("only {available} units can be removed")]
    InsufficientStock { available: u64 },
    #[error("on-hand would exceed the maximum quantity")]
    TooLarge,
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    #[error("the stock record is too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// The answer to "can I have N of this?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub product_id: ProductId,
    pub quantity: u64,
    pub available_quantity: u64,
    pub available: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckAvailabilityError {
    #[error("product {0} does not exist")]
    ProductNotFound(ProductId),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum GetStockError {
    #[error("product {0} does not exist")]
    ProductNotFound(ProductId),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Several products read at once; unknown ids are listed, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStock {
    pub items: Vec<StockView>,
    pub not_found: Vec<ProductId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next_after: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("product {0} does not exist")]
    ProductNotFound(ProductId),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub product_id: ProductId,
    pub status: StockStatus,
    pub available_quantity: u64,
    pub low_stock_threshold: u64,
    pub on_hand: u64,
    pub reserved_quantity: u64,
    pub updated_at: u64,
}

impl AlertView {
    pub fn of(view: StockView) -> Self {
        Self {
            product_id: view.product_id,
            status: view.status,
            available_quantity: view.available_quantity,
            low_stock_threshold: view.low_stock_threshold,
            on_hand: view.on_hand,
            reserved_quantity: view.reserved_quantity,
            updated_at: view.updated_at,
        }
    }
}

engine_errors!(UpdateStockError, AdjustStockError);

read_errors!(CheckAvailabilityError, GetStockError, HistoryError);

/// A stored answer to an idempotent stock request.
#[derive(Serialize, Deserialize)]
struct Replay {
    fingerprint: String,
    view: StockView,
}

/// Where an idempotent request's answer is kept and the operation id it writes under.
struct Idempotency {
    key: String,
    op: OpId,
    fingerprint: String,
    raw: String,
}

impl Idempotency {
    fn new(scope: &str, product: &ProductId, key: &IdempotencyKey, request: String) -> Self {
        let d = storage::digest(&[scope, product.as_str(), key.as_str()]);
        Self {
            key: keys::idempotency(scope, &format!("{d:016x}")),
            op: OpId::new(format!("k{d:016x}")),
            fingerprint: format!("{:016x}", storage::digest(&[&request])),
            raw: key.as_str().to_owned(),
        }
    }
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// Runs a stock mutation with `Idempotency-Key` semantics: a retry returns the stored
    /// answer; a retry whose first attempt died after writing gets the current view.
    fn idempotent<E>(
        &self,
        product: &ProductId,
        idem: Option<Idempotency>,
        mismatch: E,
        run: impl FnOnce(&OpId) -> Result<Outcome<ProductRecord, ()>, E>,
    ) -> Result<StockView, E>
    where
        E: From<EngineError>,
    {
        let view = |outcome: Outcome<ProductRecord, ()>| match outcome {
            Outcome::Written { record, .. } | Outcome::AlreadyApplied(record) => {
                record.view(product, self.now())
            }
            Outcome::Kept(()) => unreachable!("stock mutations always write or fail"),
        };
        let Some(idem) = idem else {
            return Ok(view(run(&self.fresh_op())?));
        };
        if let Some(replay) = storage::read::<K, Replay>(&self.kv, &idem.key)? {
            return if replay.fingerprint == idem.fingerprint {
                Ok(replay.view)
            } else {
                Err(mismatch)
            };
        }
        let replay = Replay {
            fingerprint: idem.fingerprint,
            view: view(run(&idem.op)?),
        };
        // Filed for deletion before it exists, so no record outlives its retention.
        self.due_add(
            &Due::Record(idem.key.clone()),
            self.now() + self.config.idempotency_retention_ms,
        )?;
        self.kv
            .set(&idem.key, &storage::encode(&replay))
            .map_err(EngineError::from)?;
        Ok(replay.view)
    }

    pub fn update_stock(&self, cmd: UpdateStock) -> Result<StockView, UpdateStockError> {
        self.then_sweep(self.update_stock_now(cmd))
    }

    fn update_stock_now(&self, cmd: UpdateStock) -> Result<StockView, UpdateStockError> {
        let idem = cmd.idempotency_key.as_ref().map(|k| {
            let request = format!(
                "{}|{}|{:?}",
                cmd.warehouse_id,
                cmd.quantity.get(),
                cmd.low_stock_threshold.map(StockLevel::get)
            );
            Idempotency::new("update", &cmd.product_id, k, request)
        });
        let id = &cmd.product_id;
        let raw_key = idem.as_ref().map(|i| i.raw.clone());
        self.idempotent(id, idem, UpdateStockError::IdempotencyMismatch, |op| {
            self.write_product(id, op, |current, now| {
                let mut record = current.cloned().unwrap_or_default();
                let w = record
                    .warehouses
                    .entry(cmd.warehouse_id.clone())
                    .or_insert_with(WarehouseStock::default);
                let reserved = w.reserved(now);
                let requested = cmd.quantity.get();
                if requested < reserved {
                    return Err(UpdateStockError::BelowReserved {
                        requested,
                        reserved,
                    });
                }
                let delta = requested as i64 - w.on_hand as i64;
                w.on_hand = requested;
                if let Some(t) = cmd.low_stock_threshold {
                    w.low_stock_threshold = t.get();
                }
                let mut event = NewEvent::new(EventKind::StockUpdated, delta);
                event.warehouse_id = Some(cmd.warehouse_id.clone());
                event.idempotency_key = raw_key.clone();
                Ok(Step::Write {
                    record: Box::new(record),
                    events: vec![event],
                    result: (),
                })
            })
        })
    }

    pub fn adjust_stock(&self, cmd: AdjustStock) -> Result<StockView, AdjustStockError> {
        self.then_sweep(self.adjust_stock_now(cmd))
    }

    fn adjust_stock_now(&self, cmd: AdjustStock) -> Result<StockView, AdjustStockError> {
        if !cmd.reason.allows(cmd.adjustment) {
            return Err(AdjustStockError::ReasonMismatch {
                reason: cmd.reason,
                adjustment: cmd.adjustment.get(),
            });
        }
        let idem = cmd.idempotency_key.as_ref().map(|k| {
            let request = format!(
                "{}|{}|{}",
                cmd.warehouse_id,
                cmd.adjustment.get(),
                cmd.reason.as_str()
            );
            Idempotency::new("adjust", &cmd.product_id, k, request)
        });
        let id = &cmd.product_id;
        let raw_key = idem.as_ref().map(|i| i.raw.clone());
        self.idempotent(id, idem, AdjustStockError::IdempotencyMismatch, |op| {
            self.write_product(id, op, |current, now| {
                let Some(current) = current else {
                    return Err(AdjustStockError::ProductNotFound(id.clone()));
                };
                let mut record = current.clone();
                let w = record
                    .warehouses
                    .entry(cmd.warehouse_id.clone())
                    .or_insert_with(WarehouseStock::default);
                let delta = cmd.adjustment.get();
                let available = w.available(now);
                if delta < 0 && delta.unsigned_abs() > available {
                    return Err(AdjustStockError::InsufficientStock { available });
                }
                let on_hand = w.on_hand.checked_add_signed(delta).expect("checked above");
                if on_hand > crate::models::MAX_UNITS {
                    return Err(AdjustStockError::TooLarge);
                }
                w.on_hand = on_hand;
                let mut event = NewEvent::new(EventKind::StockAdjusted, delta);
                event.warehouse_id = Some(cmd.warehouse_id.clone());
                event.reason = Some(cmd.reason.as_str().to_owned());
                event.idempotency_key = raw_key.clone();
                Ok(Step::Write {
                    record: Box::new(record),
                    events: vec![event],
                    result: (),
                })
            })
        })
    }

    pub fn get_stock(&self, id: &ProductId) -> Result<StockView, GetStockError> {
        let record = self
            .read_product(id)?
            .ok_or_else(|| GetStockError::ProductNotFound(id.clone()))?;
        Ok(record.view(id, self.now()))
    }

    pub fn get_stocks(&self, ids: &[ProductId]) -> Result<BatchStock, GetStockError> {
        let now = self.now();
        let mut batch = BatchStock {
            items: Vec::with_capacity(ids.len()),
            not_found: Vec::new(),
        };
        for id in ids {
            match self.read_product(id)? {
                Some(record) => batch.items.push(record.view(id, now)),
                None => batch.not_found.push(id.clone()),
            }
        }
        Ok(batch)
    }

    pub fn check_availability(
        &self,
        id: &ProductId,
        quantity: Quantity,
        warehouse: Option<&WarehouseId>,
    ) -> Result<Availability, CheckAvailabilityError> {
        let record = self
            .read_product(id)?
            .ok_or_else(|| CheckAvailabilityError::ProductNotFound(id.clone()))?;
        let now = self.now();
        let available_quantity = match warehouse {
            Some(w) => record.warehouses.get(w).map_or(0, |w| w.available(now)),
            None => record.levels(now).available,
        };
        Ok(Availability {
            product_id: id.clone(),
            quantity: quantity.get(),
            available_quantity,
            available: available_quantity >= quantity.get(),
        })
    }

    /// History entries with `seq > after`, oldest first, at most `limit`.
    pub fn history(
        &self,
        id: &ProductId,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let record = self
            .read_product(id)?
            .ok_or_else(|| HistoryError::ProductNotFound(id.clone()))?;
        let last = record.seq.min(after.saturating_add(limit as u64));
        let mut entries = Vec::new();
        for seq in after.saturating_add(1)..=last {
            entries.push(self.history_entry(id, &record, seq)?);
        }
        Ok(HistoryPage {
            next_after: (last < record.seq).then_some(last),
            entries,
        })
    }
}
