//! Allocation: which warehouses a line's units come from, and how holds are released
//! or turned into committed units on a product record.

use crate::models::{
    Allocation, EventKind, InflightLine, LineEffect, OpId, OrderId, ProductRecord, ReservationId,
    WarehouseId, WarehouseStock,
};
use crate::service::{NewEvent, released_event};

use std::collections::BTreeMap;

/// Where the units of a line come from: the named warehouse, or else the warehouses
/// with the most available units first (ties by id), splitting across them if needed.
pub(super) fn allocate(
    warehouses: &BTreeMap<WarehouseId, WarehouseStock>,
    wanted: Option<&WarehouseId>,
    quantity: u64,
    now: u64,
) -> Result<Vec<Allocation>, u64> {
    let mut candidates: Vec<(&WarehouseId, u64)> = warehouses
        .iter()
        .filter(|(id, _)| wanted.is_none_or(|w| w == *id))
        .map(|(id, w)| (id, w.available(now)))
        .filter(|(_, available)| *available > 0)
        .collect();
    let total: u64 = candidates.iter().map(|(_, a)| a).sum();
    if total < quantity {
        return Err(total);
    }
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut left = quantity;
    let mut allocations = Vec::new();
    for (id, available) in candidates {
        if left == 0 {
            break;
        }
        let take = available.min(left);
        allocations.push(Allocation {
            warehouse_id: id.clone(),
            quantity: take,
        });
        left -= take;
    }
    Ok(allocations)
}

/// Releases a line's live holds; returns the units released.
pub(crate) fn unhold(
    warehouses: &mut BTreeMap<WarehouseId, WarehouseStock>,
    line: &InflightLine,
    now: u64,
) -> u64 {
    release_allocations(warehouses, &line.allocations, line.expires_at, now)
}

pub(super) fn release_allocations(
    warehouses: &mut BTreeMap<WarehouseId, WarehouseStock>,
    allocations: &[Allocation],
    expires_at: u64,
    now: u64,
) -> u64 {
    let mut released = 0;
    for a in allocations {
        if let Some(w) = warehouses.get_mut(&a.warehouse_id)
            && w.remove_hold(expires_at, a.quantity, now)
        {
            released += a.quantity;
        }
    }
    released
}

/// Commits allocations: live holds are consumed; units whose hold expired meanwhile are
/// taken from what is available, never more. Returns the units committed.
pub(super) fn commit_allocations(
    warehouses: &mut BTreeMap<WarehouseId, WarehouseStock>,
    allocations: &[Allocation],
    expires_at: u64,
    now: u64,
) -> u64 {
    let mut committed = 0;
    for a in allocations {
        let Some(w) = warehouses.get_mut(&a.warehouse_id) else {
            continue;
        };
        let units = if w.remove_hold(expires_at, a.quantity, now) {
            a.quantity
        } else {
            a.quantity.min(w.available(now))
        };
        w.on_hand -= units;
        w.committed += units;
        committed += units;
    }
    committed
}

/// Rounds an expiry up to the whole second, so holds aggregate into few buckets.
pub(super) fn expiry(now: u64, ttl_ms: u64) -> u64 {
    (now + ttl_ms).div_ceil(1000) * 1000
}

/// A decided release or commit of one reservation line, as its product step applies it
/// (the one-line protocol's decision, or a multi-line reservation's finishing step).
pub(super) struct DecidedLine<'a> {
    pub reservation_id: &'a ReservationId,
    /// The operation id of this step, kept in the in-flight entry it leaves.
    pub op: &'a OpId,
    /// `Released` or `Committed`.
    pub target: LineEffect,
    /// An in-flight hold to give back first, whatever the target.
    pub unhold: Option<&'a InflightLine>,
    /// The holds the target releases or commits: none when this step knows of no live
    /// hold left to release.
    pub allocations: &'a [Allocation],
    /// When those holds lapse.
    pub expires_at: u64,
    pub order_id: Option<&'a OrderId>,
    /// The units the line asked for, when a commit of fewer says why in its entry.
    pub asked: Option<u64>,
}

impl DecidedLine<'_> {
    /// Applies the step to `next`, the product record to write: gives the holds back or
    /// commits them, and leaves the in-flight entry that says what was done until the
    /// reservation's record says it too. Returns the history entries to append and the
    /// units committed.
    pub(super) fn apply(&self, next: &mut ProductRecord, now: u64) -> (Vec<NewEvent>, u64) {
        let mut released = 0;
        if let Some(hold) = self.unhold {
            released += unhold(&mut next.warehouses, hold, now);
        }
        let committing = self.target == LineEffect::Committed;
        let mut committed = 0;
        if committing {
            committed =
                commit_allocations(&mut next.warehouses, self.allocations, self.expires_at, now);
        } else {
            released +=
                release_allocations(&mut next.warehouses, self.allocations, self.expires_at, now);
        }
        next.inflight.insert(
            self.reservation_id.clone(),
            InflightLine {
                effect: self.target,
                allocations: Vec::new(),
                expires_at: self.expires_at,
                since: now,
                op: self.op.clone(),
                committed: committing.then_some(committed),
                order_id: self.order_id.cloned(),
            },
        );
        let mut events = Vec::new();
        if released > 0 {
            events.push(released_event(self.reservation_id, released, None));
        }
        if committing {
            let mut e = NewEvent::new(EventKind::StockCommitted, committed as i64);
            e.reservation_id = Some(self.reservation_id.clone());
            e.order_id = self.order_id.cloned();
            if let Some(asked) = self.asked
                && committed < asked
            {
                e.reason = Some(format!(
                    "hold expired before the commit was applied: {committed} of {asked} units committed"
                ));
            }
            events.push(e);
        }
        (events, committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warehouses(levels: &[(&str, u64)]) -> BTreeMap<WarehouseId, WarehouseStock> {
        levels
            .iter()
            .map(|(id, on_hand)| {
                (
                    WarehouseId::parse(*id).unwrap(),
                    WarehouseStock {
                        on_hand: *on_hand,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn allocation_takes_from_the_fullest_warehouse_first_and_splits() {
        let w = warehouses(&[("a", 3), ("b", 5)]);
        let got = allocate(&w, None, 7, 0).unwrap();
        let got: Vec<(&str, u64)> = got
            .iter()
            .map(|a| (a.warehouse_id.as_str(), a.quantity))
            .collect();
        assert_eq!(got, vec![("b", 5), ("a", 2)]);
    }

    #[test]
    fn allocation_in_a_named_warehouse_ignores_the_others() {
        let w = warehouses(&[("a", 3), ("b", 5)]);
        let a = WarehouseId::parse("a").unwrap();
        assert_eq!(allocate(&w, Some(&a), 4, 0).unwrap_err(), 3);
    }

    #[test]
    fn expiry_rounds_up_to_the_second() {
        assert_eq!(expiry(1_500, 1_000), 3_000);
        assert_eq!(expiry(2_000, 1_000), 3_000);
    }

    #[test]
    fn committing_an_expired_hold_takes_at_most_what_is_available() {
        let mut w = warehouses(&[("a", 5)]);
        let a = WarehouseId::parse("a").unwrap();
        w.get_mut(&a).unwrap().add_hold(10_000, 4);
        let allocations = vec![Allocation {
            warehouse_id: a.clone(),
            quantity: 3,
        }];
        // The line's own hold (expiring at 1_000) is gone; another live hold keeps 4.
        assert_eq!(commit_allocations(&mut w, &allocations, 1_000, 2_000), 1);
        assert_eq!(w[&a].on_hand, 4);
        assert_eq!(w[&a].available(2_000), 0);
    }
}
