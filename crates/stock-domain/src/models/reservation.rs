//! Reservations as stored (`res/{reservation_id}`) and shown.
//!
//! The stored state machine has transitional states so that every multi-record change has
//! one decision point (a compare-and-swap on this record) before the product records are
//! touched: `Reserving → Pending | Rejecting → Rejected`, `Pending → Releasing → Released`,
//! `Pending → Committing → Committed`. Callers see the decided outcome.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::ids::{OpId, OrderId, ProductId, ReservationId, WarehouseId};
use super::stock::{Allocation, LineEffect};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Reserving,
    Pending,
    Rejecting,
    Rejected,
    Releasing,
    Released,
    Committing,
    Committed,
    Expired,
}

impl ReservationState {
    /// True once the product records no longer need to remember this reservation.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Rejected | Self::Released | Self::Committed | Self::Expired
        )
    }

    /// True once nothing can change the reservation any more: from then on it is only
    /// kept for its retention.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Released | Self::Committed | Self::Expired
        )
    }
}

/// What callers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Pending,
    Committed,
    Released,
    Expired,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationLine {
    pub product_id: ProductId,
    /// The warehouse the caller asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<WarehouseId>,
    pub quantity: u64,
    /// Where the units are held; empty until the line is placed.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// The operation whose product step placed the recorded hold, once confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<OpId>,
    /// Units committed, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub id: ReservationId,
    pub state: ReservationState,
    pub lines: Vec<ReservationLine>,
    pub created_at: u64,
    pub updated_at: u64,
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    /// Fingerprint of the request that created it, when made under an idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Why a reservation was rejected: the first line that could not be served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortage: Option<Shortage>,
    pub version: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub product_id: ProductId,
    pub requested: u64,
    pub available: u64,
    /// True when the product does not exist at all.
    #[serde(default)]
    pub unknown_product: bool,
}

impl ReservationRecord {
    /// A pending reservation of one line, whose release or commit is decided by its
    /// product's compare-and-swap alone (see `service::reservations`).
    pub fn is_one_line_pending(&self) -> bool {
        self.state == ReservationState::Pending && self.lines.len() == 1
    }

    /// This one-line reservation once its product step `effect` (released, or committed
    /// `units` to `order_id`) is done.
    pub fn finished(
        mut self,
        effect: LineEffect,
        units: u64,
        order_id: Option<OrderId>,
        now: u64,
    ) -> Self {
        if effect == LineEffect::Committed {
            self.state = ReservationState::Committed;
            self.order_id = order_id;
            if let Some(line) = self.lines.first_mut() {
                line.committed = Some(units);
            }
        } else {
            self.state = ReservationState::Released;
        }
        self.version += 1;
        self.updated_at = now;
        self
    }

    pub fn status(&self, now: u64) -> ReservationStatus {
        match self.state {
            ReservationState::Reserving | ReservationState::Pending if now >= self.expires_at => {
                ReservationStatus::Expired
            }
            ReservationState::Reserving | ReservationState::Pending => ReservationStatus::Pending,
            ReservationState::Rejecting | ReservationState::Rejected => ReservationStatus::Rejected,
            ReservationState::Releasing | ReservationState::Released => ReservationStatus::Released,
            ReservationState::Committing | ReservationState::Committed => {
                ReservationStatus::Committed
            }
            ReservationState::Expired => ReservationStatus::Expired,
        }
    }

    pub fn view(&self, now: u64) -> ReservationView {
        ReservationView {
            reservation_id: self.id.clone(),
            status: self.status(now),
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            order_id: self.order_id.clone(),
            lines: self.lines.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationView {
    pub reservation_id: ReservationId,
    pub status: ReservationStatus,
    pub expires_at: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub order_id: Option<OrderId>,
    pub lines: Vec<ReservationLine>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_pending_reservation_turns_expired_at_its_expiry() {
        let r = ReservationRecord {
            id: ReservationId::parse("r").unwrap(),
            state: ReservationState::Pending,
            lines: vec![],
            created_at: 0,
            updated_at: 0,
            expires_at: 1_000,
            order_id: None,
            fingerprint: None,
            idempotency_key: None,
            shortage: None,
            version: 1,
            ops: Default::default(),
        };
        assert_eq!(r.status(999), ReservationStatus::Pending);
        assert_eq!(r.status(1_000), ReservationStatus::Expired);
    }
}
