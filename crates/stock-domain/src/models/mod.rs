//! Domain types: validated values, stored records and the views callers get.

pub mod cart;
pub mod event;
pub mod ids;
pub mod quantity;
pub mod reservation;
pub mod stock;

pub use cart::{CartHold, CartLine, CartRecord};
pub use event::{EventKind, FeedSlotId, HistoryEntry, Levels};
pub use ids::{
    CartId, IdError, IdempotencyKey, OpId, OrderId, ProductId, ReservationId, WarehouseId,
};
pub use quantity::{Adjustment, MAX_UNITS, Quantity, QuantityError, StockLevel};
pub use reservation::{
    ReservationLine, ReservationRecord, ReservationState, ReservationStatus, ReservationView,
    Shortage,
};
pub use stock::{
    Allocation, FeedFiling, InflightLine, LineEffect, ProductRecord, StockStatus, StockView,
    WarehouseStock, WarehouseView,
};
