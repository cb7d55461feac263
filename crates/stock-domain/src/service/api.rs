//! The inbound port: [`StockApi`] is what driving adapters (the HTTP adapter, the Spin
//! components) call. They depend on this trait alone, never on the outbound ports the
//! service is built from, so an adapter can be tested against any implementation and the
//! storage, clock and id choices stay the domain's business.

use super::{
    AdjustStock, AdjustStockError, AlertPage, AlertsError, Availability, BatchStock,
    CheckAvailabilityError, CommitError, ExpireError, ExpireReport, FeedCursor, FeedError,
    FeedPage, GetReservationError, GetStockError, HistoryError, HistoryPage, InboundEvent,
    IngestError, IngestOutcome, ListProductsError, ProductPage, ReleaseError, Reserve,
    ReserveError, StockService, UpdateStock, UpdateStockError,
};
use crate::models::{
    HistoryEntry, OrderId, ProductId, Quantity, ReservationId, ReservationView, StockView,
    WarehouseId,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};

/// Every operation of SPEC §3–§4 the service offers, each with its own error enum whose
/// variants carry what an adapter needs to describe the failure (ids, fields, bounds in
/// the units the API speaks).
pub trait StockApi {
    /// The longest reservation hold a caller may ask for, in whole seconds (a request's
    /// `ttl_seconds` must lie in `1..=max_ttl_seconds()`).
    fn max_ttl_seconds(&self) -> u64;

    /// Sets a product's on-hand units (and optionally its low-stock threshold) in one
    /// warehouse, creating product and warehouse as needed.
    fn update_stock(&self, cmd: UpdateStock) -> Result<StockView, UpdateStockError>;

    /// Adds a signed delta to a product's on-hand units in one warehouse.
    fn adjust_stock(&self, cmd: AdjustStock) -> Result<StockView, AdjustStockError>;

    /// One product's stock across its warehouses.
    fn get_stock(&self, id: &ProductId) -> Result<StockView, GetStockError>;

    /// Several products' stock; unknown ids are listed, not an error.
    fn get_stocks(&self, ids: &[ProductId]) -> Result<BatchStock, GetStockError>;

    /// Whether `quantity` units could be reserved now, in `warehouse` or across all.
    fn check_availability(
        &self,
        id: &ProductId,
        quantity: Quantity,
        warehouse: Option<&WarehouseId>,
    ) -> Result<Availability, CheckAvailabilityError>;

    /// A product's history entries with a sequence number above `after`, at most `limit`.
    fn history(
        &self,
        id: &ProductId,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError>;

    /// Every product, a page of at most `limit` after the cursor `after`.
    fn list_products(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ProductPage, ListProductsError>;

    /// The products at or below their low-stock threshold, paged like `list_products`.
    fn alerts(&self, after: Option<&str>, limit: usize) -> Result<AlertPage, AlertsError>;

    /// Holds units of one or several products, all or nothing.
    fn reserve(&self, cmd: Reserve) -> Result<ReservationView, ReserveError>;

    /// A reservation as it stands now.
    fn get_reservation(&self, id: &ReservationId) -> Result<ReservationView, GetReservationError>;

    /// Frees a reservation's held units; idempotent by state.
    fn release(&self, id: &ReservationId) -> Result<ReservationView, ReleaseError>;

    /// Turns a reservation's held units into a sale for `order_id`; idempotent by state.
    fn commit(
        &self,
        id: &ReservationId,
        order_id: &OrderId,
    ) -> Result<ReservationView, CommitError>;

    /// One step of the expiry sweep over at most `limit` due entries after `after`.
    fn expire_due(&self, after: Option<&str>, limit: usize) -> Result<ExpireReport, ExpireError>;

    /// The event feed after `after`, at most `limit` entries: one partition, or all.
    fn feed(
        &self,
        partition: Option<u64>,
        after: Option<&FeedCursor>,
        limit: usize,
    ) -> Result<FeedPage, FeedError>;

    /// Applies one cart or order event; a redelivery changes nothing.
    fn ingest(&self, event: InboundEvent) -> Result<IngestOutcome, IngestError>;

    /// The low-stock and out-of-stock entries this instance's writes appended since the
    /// last call, oldest first, each once (for notifying an admin webhook).
    fn take_alerts(&self) -> Vec<HistoryEntry>;
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockApi for StockService<K, C, I> {
    fn max_ttl_seconds(&self) -> u64 {
        self.config().max_ttl_seconds()
    }

    fn update_stock(&self, cmd: UpdateStock) -> Result<StockView, UpdateStockError> {
        StockService::update_stock(self, cmd)
    }

    fn adjust_stock(&self, cmd: AdjustStock) -> Result<StockView, AdjustStockError> {
        StockService::adjust_stock(self, cmd)
    }

    fn get_stock(&self, id: &ProductId) -> Result<StockView, GetStockError> {
        StockService::get_stock(self, id)
    }

    fn get_stocks(&self, ids: &[ProductId]) -> Result<BatchStock, GetStockError> {
        StockService::get_stocks(self, ids)
    }

    fn check_availability(
        &self,
        id: &ProductId,
        quantity: Quantity,
        warehouse: Option<&WarehouseId>,
    ) -> Result<Availability, CheckAvailabilityError> {
        StockService::check_availability(self, id, quantity, warehouse)
    }

    fn history(
        &self,
        id: &ProductId,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        StockService::history(self, id, after, limit)
    }

    fn list_products(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ProductPage, ListProductsError> {
        StockService::list_products(self, after, limit)
    }

    fn alerts(&self, after: Option<&str>, limit: usize) -> Result<AlertPage, AlertsError> {
        StockService::alerts(self, after, limit)
    }

    fn reserve(&self, cmd: Reserve) -> Result<ReservationView, ReserveError> {
        StockService::reserve(self, cmd)
    }

    fn get_reservation(&self, id: &ReservationId) -> Result<ReservationView, GetReservationError> {
        StockService::get_reservation(self, id)
    }

    fn release(&self, id: &ReservationId) -> Result<ReservationView, ReleaseError> {
        StockService::release(self, id)
    }

    fn commit(
        &self,
        id: &ReservationId,
        order_id: &OrderId,
    ) -> Result<ReservationView, CommitError> {
        StockService::commit(self, id, order_id)
    }

    fn expire_due(&self, after: Option<&str>, limit: usize) -> Result<ExpireReport, ExpireError> {
        StockService::expire_due(self, after, limit)
    }

    fn feed(
        &self,
        partition: Option<u64>,
        after: Option<&FeedCursor>,
        limit: usize,
    ) -> Result<FeedPage, FeedError> {
        StockService::feed(self, partition, after, limit)
    }

    fn ingest(&self, event: InboundEvent) -> Result<IngestOutcome, IngestError> {
        StockService::ingest(self, event)
    }

    fn take_alerts(&self) -> Vec<HistoryEntry> {
        StockService::take_alerts(self)
    }
}
