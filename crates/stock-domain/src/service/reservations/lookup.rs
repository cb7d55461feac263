//! `get_reservation`: reads a reservation, finishing first what a dead request left.

use super::{GetReservationError, STALE_AFTER_MS};
use crate::models::{ReservationId, ReservationView};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::StockService;

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
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
}
