//! The one-line protocol: a reservation of one line is decided by its product's
//! compare-and-swap alone, and its record is written after that step (see the module
//! header of `service::reservations`).

use super::allocation::DecidedLine;
use super::{LineOutcome, Placement, ReserveError};
use crate::indexes::Due;
use crate::models::{LineEffect, OrderId, ReservationRecord, ReservationState, ReservationView};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::{Step, StockService};
use crate::storage::{self, EngineError, keys};

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// A one-line reservation has a single product step, so that step's
    /// compare-and-swap is its decision: no intent is written first, and the reservation
    /// record is written once, settled, after it (rule 1 of the protocol is for several
    /// lines). A request that dies in between leaves a hold that no reservation records:
    /// its in-flight entry lets a retry under the same idempotency key finish the job, and
    /// otherwise the hold lapses at its expiry, like that of a client that walked away.
    pub(super) fn reserve_one(
        &self,
        mut record: ReservationRecord,
    ) -> Result<ReservationView, ReserveError> {
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
    /// A pending one-line reservation as its product record says it is: released or
    /// committed already if the product step is done (its record is written later, with
    /// the product's next batch of history).
    pub(super) fn with_product_step(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationRecord, EngineError> {
        let Some(product) = self.read_product(&record.lines[0].product_id)? else {
            return Ok(record);
        };
        Ok(match product.inflight.get(&record.id) {
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
    pub(super) fn adopt_finished(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationRecord, EngineError> {
        let seen = self.with_product_step(record)?;
        if seen.state != ReservationState::Pending {
            self.kv
                .set(&keys::reservation(&seen.id), &storage::encode(&seen))?;
        }
        Ok(seen)
    }

    /// The product step of a one-line release or commit: the decision point of both.
    /// The in-flight entry it leaves says what was done until the record says it too.
    pub(super) fn finish_one(
        &self,
        record: &ReservationRecord,
        target: LineEffect,
        order_id: Option<&OrderId>,
    ) -> Result<LineOutcome, EngineError> {
        let line = &record.lines[0];
        let rid = &record.id;
        self.fresh_product_step(&line.product_id, |current, now, op| {
            let Some(current) = current else {
                return Ok(Step::Keep(LineOutcome::Lapsed));
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
            let (events, units) = DecidedLine {
                reservation_id: rid,
                op,
                target,
                // A hold placed by another operation than the recorded one is a racing
                // duplicate: give it back whatever the target.
                unhold: entry.filter(|e| line.placement.as_ref() != Some(&e.op)),
                allocations: &line.allocations,
                expires_at: record.expires_at,
                order_id,
                // A lapsed hold is refused above, so a commit here has no expiry to explain.
                asked: None,
            }
            .apply(&mut next, now);
            let result = if target == LineEffect::Committed {
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
        })
    }
}
