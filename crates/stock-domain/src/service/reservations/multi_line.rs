//! The multi-line protocol: intent first, one decision by compare-and-swap on the
//! reservation record, then idempotent product steps that anyone finding the
//! reservation in a transitional state finishes (see the module header of
//! `service::reservations`).

use super::allocation::{DecidedLine, allocate};
use super::{Placement, STALE_AFTER_MS};
use crate::indexes::Due;
use crate::models::{
    Allocation, EventKind, InflightLine, LineEffect, ReservationId, ReservationLine,
    ReservationRecord, ReservationState, Shortage,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::{NewEvent, Step, StockService};
use crate::storage::{Decision, EngineError, Outcome, keys};

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// Files a reservation of several lines that may be about to change state, so that the
    /// sweep finishes the change if its request dies half-way.
    pub(super) fn file_change(&self, record: &ReservationRecord) -> Result<(), EngineError> {
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
    /// Compare-and-swap on a reservation record. `decide` returns the next record, or
    /// `None` to leave it as it is; the record as it ends up is returned.
    pub(super) fn transition<E>(
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
    pub(super) fn drive(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationRecord, EngineError> {
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

    pub(super) fn place_line(
        &self,
        record: &ReservationRecord,
        line: &ReservationLine,
    ) -> Result<Placement, EngineError> {
        let rid = &record.id;
        self.fresh_product_step(&line.product_id, |current, now, op| {
            let Some(current) = current else {
                return Ok(Step::Keep(Placement::Short(Shortage {
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
                e.reservation_id = Some(rid.clone());
                e.idempotency_key = record.idempotency_key.clone();
                // A one-line reservation is found by the sweep through its product.
                if record.lines.len() == 1 {
                    e.lapses_at = Some(record.expires_at);
                }
                events.push(e);
            }
            next.inflight.insert(
                rid.clone(),
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
        let rid = &record.id;
        self.fresh_product_step(&line.product_id, |current, now, op| {
            let Some(current) = current else {
                return Ok(Step::Keep(0));
            };
            let entry = current.inflight.get(rid);
            if let Some(e) = entry
                && e.effect != LineEffect::Held
            {
                return Ok(Step::Keep(e.committed.unwrap_or(0)));
            }
            // A hold placed by an operation other than the recorded placement is a
            // duplicate from a racing retry: give it back whatever the target.
            let stray = entry.filter(|e| line.placement.as_ref() != Some(&e.op));
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
            // The in-flight hold goes back if it is a stray or if it is what is released;
            // the recorded hold is released only while it is live, and a commit takes
            // what the placement's own entry says it holds, when that entry is there.
            let unhold = entry.filter(|_| stray.is_some() || target == LineEffect::Released);
            let allocations: &[Allocation] = match (target, entry) {
                (LineEffect::Released, _) if recorded_hold_live => &line.allocations,
                (LineEffect::Committed, Some(e)) if stray.is_none() => &e.allocations,
                (LineEffect::Committed, _) => &line.allocations,
                _ => &[],
            };
            let mut next = current.clone();
            let (events, units_committed) = DecidedLine {
                reservation_id: rid,
                op,
                target,
                unhold,
                allocations,
                expires_at: record.expires_at,
                order_id: record.order_id.as_ref(),
                asked: Some(line.quantity),
            }
            .apply(&mut next, now);
            Ok(Step::Write {
                record: Box::new(next),
                events,
                result: units_committed,
            })
        })
    }
}
