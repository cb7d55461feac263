//! `commit`: turns a reservation's held units into units committed to an order.

use super::{CommitError, LineOutcome};
use crate::models::{LineEffect, OrderId, ReservationId, ReservationState, ReservationView};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::StockService;

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
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
}
