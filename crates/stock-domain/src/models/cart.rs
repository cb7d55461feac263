//! Carts as the stock service knows them (`cart/{cart_id}`): which cart-time
//! reservations hold each line of a cart of the cart service, built from its events (see
//! `service::ingest`). The cart service owns the cart; this record only remembers what
//! the stock service holds for it, so that later events can replace, release or commit
//! those holds.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::ids::{CartId, OpId, OrderId, ProductId, ReservationId, WarehouseId};

/// One reservation holding units for a cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartHold {
    pub reservation_id: ReservationId,
    pub quantity: u64,
}

/// One product in the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// The warehouse the line was first added from, if the cart named one; replacement
    /// holds are taken from it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<WarehouseId>,
    /// One reservation per event that added units, so that adding to a line never
    /// depends on (or re-reserves) what the line already holds.
    pub holds: Vec<CartHold>,
}

impl CartLine {
    /// Units the cart asked for on this line (whether or not their holds have lapsed).
    pub fn quantity(&self) -> u64 {
        self.holds.iter().map(|h| h.quantity).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartRecord {
    pub cart_id: CartId,
    pub lines: BTreeMap<ProductId, CartLine>,
    /// Reservations taken off the cart whose release is not yet confirmed. They are
    /// released after the change that superseded them is recorded, and pruned once
    /// settled; releasing one twice is harmless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<ReservationId>,
    /// The order the cart became; the cart is closed once set, and its lines are the
    /// holds committed to that order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    pub version: u64,
    pub updated_at: u64,
    /// Ids of the events and other operations recently applied, to tell whether a write
    /// landed and to recognise a redelivered event.
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

impl CartRecord {
    /// A cart the stock service holds nothing for yet.
    pub fn new(cart_id: CartId) -> Self {
        Self {
            cart_id,
            lines: BTreeMap::new(),
            superseded: Vec::new(),
            order_id: None,
            version: 0,
            updated_at: 0,
            ops: VecDeque::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_asks_for_the_sum_of_its_holds() {
        let hold = |id: &str, quantity| CartHold {
            reservation_id: ReservationId::parse(id).unwrap(),
            quantity,
        };
        let line = CartLine {
            warehouse_id: None,
            holds: vec![hold("r1", 2), hold("r2", 3)],
        };
        assert_eq!(line.quantity(), 5);
    }
}
