//! `release`: gives a reservation's held units back.

use super::{LineOutcome, ReleaseError};
use crate::models::{LineEffect, ReservationId, ReservationState, ReservationView};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::StockService;

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
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
}
