//! `reserve`: checks the request, derives the reservation's id (from its idempotency
//! key, if any), and hands it to the one-line or the multi-line protocol.

use super::allocation::expiry;
use super::{Reserve, ReserveError, STALE_AFTER_MS};
use crate::indexes::Due;
use crate::models::{
    ReservationId, ReservationLine, ReservationRecord, ReservationState, ReservationView,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::StockService;
use crate::storage::{self, EngineError, keys};

/// The namespace of reservation ids derived from an `Idempotency-Key` (UUID version 5).
const RESERVATION_NAMESPACE: uuid::Uuid = uuid::uuid!("5f0c7a52-6f1e-4b8e-9d43-2a61c0b7e9d1");

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    pub fn reserve(&self, cmd: Reserve) -> Result<ReservationView, ReserveError> {
        self.then_sweep(self.reserve_now(cmd))
    }

    fn reserve_now(&self, cmd: Reserve) -> Result<ReservationView, ReserveError> {
        if cmd.lines.is_empty() {
            return Err(ReserveError::NoLines);
        }
        if cmd.lines.len() > self.config.max_lines {
            return Err(ReserveError::TooManyLines {
                max: self.config.max_lines,
            });
        }
        for (i, line) in cmd.lines.iter().enumerate() {
            if cmd.lines[..i].iter().any(|other| {
                other.product_id == line.product_id && other.warehouse_id == line.warehouse_id
            }) {
                return Err(ReserveError::DuplicateLine(line.product_id.clone()));
            }
        }
        let ttl = cmd.ttl_ms.unwrap_or(self.config.default_ttl_ms);
        if !(1000..=self.config.max_ttl_ms).contains(&ttl) {
            return Err(ReserveError::TtlOutOfRange {
                max_seconds: self.config.max_ttl_seconds(),
            });
        }
        let request: String = cmd
            .lines
            .iter()
            .map(|l| {
                format!(
                    "{}|{}|{};",
                    l.product_id,
                    l.quantity.get(),
                    l.warehouse_id.as_ref().map_or("", |w| w.as_str())
                )
            })
            .chain([format!("ttl={ttl}")])
            .collect();
        let (id, fingerprint) = match &cmd.idempotency_key {
            Some(key) => {
                // A name-based UUID (RFC 9562 §5.5, version 5): the same key always names
                // the same reservation, whichever node or retry computes it.
                let id = uuid::Uuid::new_v5(&RESERVATION_NAMESPACE, key.as_str().as_bytes())
                    .hyphenated()
                    .to_string();
                let fingerprint = format!("{:016x}", storage::digest(&[&request]));
                (id, Some(fingerprint))
            }
            None => (self.ids.new_id(), None),
        };
        let id = ReservationId::parse(id).map_err(anyhow::Error::from)?;
        if cmd.idempotency_key.is_some()
            && let Some(existing) = self.read_reservation(&id)?
        {
            if existing.fingerprint != fingerprint {
                return Err(ReserveError::IdempotencyMismatch);
            }
            // As it is now: a one-line reservation's release or commit is decided in its
            // product record before its own record says so (as a lookup reads it).
            let current = if existing.is_one_line_pending() {
                self.with_product_step(existing)?
            } else {
                self.drive(existing)?
            };
            return self.reserve_outcome(current);
        }
        let now = self.now();
        let record = ReservationRecord {
            id: id.clone(),
            state: ReservationState::Reserving,
            lines: cmd
                .lines
                .iter()
                .map(|l| ReservationLine {
                    product_id: l.product_id.clone(),
                    warehouse_id: l.warehouse_id.clone(),
                    quantity: l.quantity.get(),
                    allocations: Vec::new(),
                    placement: None,
                    committed: None,
                })
                .collect(),
            created_at: now,
            updated_at: now,
            expires_at: expiry(now, ttl),
            order_id: None,
            fingerprint,
            idempotency_key: cmd.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            shortage: None,
            version: 1,
            ops: Default::default(),
        };
        if record.lines.len() == 1 {
            return self.reserve_one(record);
        }
        // Filed for the sweep before the intent exists, so that an intent abandoned
        // half-way is found and finished.
        self.due_add(
            &Due::Reservation(id.clone()),
            (now + STALE_AFTER_MS).min(record.expires_at),
        )?;
        self.kv
            .set(&keys::reservation(&id), &storage::encode(&record))
            .map_err(EngineError::from)?;
        self.reserve_outcome(self.drive(record)?)
    }
    pub(super) fn reserve_outcome(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationView, ReserveError> {
        match (record.state, record.shortage.clone()) {
            (ReservationState::Rejecting | ReservationState::Rejected, Some(s))
                if s.unknown_product =>
            {
                Err(ReserveError::ProductNotFound(s.product_id))
            }
            (ReservationState::Rejecting | ReservationState::Rejected, Some(s)) => {
                Err(ReserveError::InsufficientStock {
                    product_id: s.product_id,
                    requested: s.requested,
                    available: s.available,
                })
            }
            _ => Ok(record.view(self.now())),
        }
    }
}
