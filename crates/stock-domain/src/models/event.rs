//! Audit-trail entries. Each product has its own gap-free sequence; an entry is written
//! once and never changed (the product record carries the newest ones until they are
//! written under `hist/{product_id}/{seq}`).

use serde::{Deserialize, Serialize};

use super::ids::{OpId, OrderId, ProductId, ReservationId, WarehouseId};

/// The seed's event names (each variant's name, as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum EventKind {
    StockUpdated,
    StockAdjusted,
    StockReserved,
    StockReleased,
    StockCommitted,
    ReservationExpired,
    LowStockAlert,
    OutOfStock,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// An alert an admin may want to be told about at once: `LowStockAlert`, `OutOfStock`.
    pub fn is_alert(self) -> bool {
        matches!(self, Self::LowStockAlert | Self::OutOfStock)
    }
}

/// Product-level figures at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Levels {
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
    pub committed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub kind: EventKind,
    pub product_id: ProductId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<WarehouseId>,
    pub time: u64,
    /// Units concerned: the signed change for adjustments, the quantity otherwise.
    pub quantity: i64,
    pub before: Levels,
    pub after: Levels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<ReservationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The operation that produced the entry.
    pub op: OpId,
    /// The feed slot the entry is served in (see `indexes`). Entries appended before the
    /// feed was partitioned have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<FeedSlotId>,
}

/// Where a history entry sits in the event feed: a partition, and a slot number in that
/// partition's log (see `indexes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeedSlotId {
    pub partition: u64,
    pub slot: u64,
}
