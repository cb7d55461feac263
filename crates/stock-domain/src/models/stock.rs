//! A product's stock as stored (one record per product, every warehouse inside) and as
//! shown. The record holds counters, not lists: reservations are aggregated into holds
//! keyed by their expiry second, so the record stays a few kilobytes however many
//! reservations are pending, and the reserved quantity at any instant is exact without a
//! scheduler (holds whose expiry has passed simply stop counting).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::event::{FeedSlotId, HistoryEntry, Levels};
use super::ids::{OpId, OrderId, ProductId, ReservationId, WarehouseId};

/// One warehouse's figures for one product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    pub on_hand: u64,
    pub committed: u64,
    pub low_stock_threshold: u64,
    /// Units held by pending reservations, by expiry time (epoch ms, whole seconds).
    /// A hold counts while `now < expires_at`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "holds_codec"
    )]
    pub holds: BTreeMap<u64, u64>,
}

impl WarehouseStock {
    pub fn reserved(&self, now: u64) -> u64 {
        self.holds.range(now + 1..).map(|(_, q)| q).sum()
    }

    /// Never negative: every change that lowers `on_hand` or adds a hold checks it first.
    pub fn available(&self, now: u64) -> u64 {
        let reserved = self.reserved(now);
        debug_assert!(self.on_hand >= reserved, "oversold: {self:?} at {now}");
        self.on_hand.saturating_sub(reserved)
    }

    /// Drops holds that have expired; they no longer count anyway.
    pub fn prune(&mut self, now: u64) {
        self.holds.retain(|&expires_at, _| expires_at > now);
    }

    pub fn add_hold(&mut self, expires_at: u64, units: u64) {
        *self.holds.entry(expires_at).or_default() += units;
    }

    /// Removes a live hold. Returns false (and changes nothing) when the hold has expired.
    pub fn remove_hold(&mut self, expires_at: u64, units: u64, now: u64) -> bool {
        if expires_at <= now {
            return false;
        }
        match self.holds.get_mut(&expires_at) {
            Some(held) if *held >= units => {
                *held -= units;
                if *held == 0 {
                    self.holds.remove(&expires_at);
                }
                true
            }
            _ => false,
        }
    }
}

/// Holds are stored as one flat array `[expiry, units, Δexpiry, units, …]` with each
/// expiry after the first as the difference from the previous one. A hot product carries
/// one entry per pending expiry second (hundreds), and this form is about a third of the
/// size of a JSON object keyed by epoch milliseconds, so every write of the record parses
/// and prints less.
mod holds_codec {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(holds: &BTreeMap<u64, u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut flat = Vec::with_capacity(holds.len() * 2);
        let mut previous = 0;
        for (&expires_at, &units) in holds {
            flat.push(expires_at - previous);
            flat.push(units);
            previous = expires_at;
        }
        s.collect_seq(flat)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, u64>, D::Error> {
        let flat = Vec::<u64>::deserialize(d)?;
        if flat.len() % 2 != 0 {
            return Err(D::Error::custom("holds must come in (expiry, units) pairs"));
        }
        let mut holds = BTreeMap::new();
        let mut expires_at: u64 = 0;
        for pair in flat.chunks_exact(2) {
            expires_at = expires_at
                .checked_add(pair[0])
                .ok_or_else(|| D::Error::custom("hold expiry overflows"))?;
            holds.insert(expires_at, pair[1]);
        }
        Ok(holds)
    }
}

/// What a product-level step did for one reservation line, kept in the product record
/// until the reservation reaches a state that makes the step unambiguous (see
/// `service::reservations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineEffect {
    Held,
    Released,
    Committed,
}

/// Units of one line taken from one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub warehouse_id: WarehouseId,
    pub quantity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightLine {
    pub effect: LineEffect,
    pub allocations: Vec<Allocation>,
    pub expires_at: u64,
    /// When the product step was done (oldest lines are settled first).
    pub since: u64,
    /// The operation that did the step.
    pub op: OpId,
    /// Units actually committed (less than allocated only if the hold had expired and the
    /// units were sold meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
    /// The order a one-line reservation was committed to, until its record says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
}

/// The stored record of one product (`stock/{product_id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRecord {
    pub version: u64,
    pub updated_at: u64,
    pub warehouses: BTreeMap<WarehouseId, WarehouseStock>,
    /// Number of history entries ever appended for this product.
    pub seq: u64,
    /// The newest history entries, authoritative until written under their own keys.
    #[serde(default)]
    pub outbox: VecDeque<HistoryEntry>,
    /// Ids of the most recent operations applied, to tell whether a write landed.
    #[serde(default)]
    pub ops: VecDeque<OpId>,
    /// Reservation lines whose product step is done but whose reservation is not settled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inflight: BTreeMap<ReservationId, InflightLine>,
    /// The product directory slot whose entry lists this product (see `indexes`); an
    /// entry of another slot is a leftover of a creation that lost its race or died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<u64>,
    /// For each due bucket (see `indexes`) in which one-line reservations of this product
    /// lapse: the first and last history sequence numbers among their `StockReserved`
    /// entries. The sweep reads that span to find them, and drops the bucket once done.
    /// The product is filed in the due work from its earliest bucket (see `indexes`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub due: BTreeMap<u64, (u64, u64)>,
    /// The token of this product's entry in the alert set, set while the product may be
    /// at or below its threshold (see `indexes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<OpId>,
    /// The product's latest feed slot (see `indexes`): writes before `open_until` put
    /// their entries in it rather than file another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<FeedFiling>,
}

/// A product's latest feed slot, and until when it takes entries (ms since epoch,
/// exclusive; the same as in the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFiling {
    pub slot: FeedSlotId,
    pub open_until: u64,
}

impl ProductRecord {
    pub fn levels(&self, now: u64) -> Levels {
        let mut l = Levels::default();
        for w in self.warehouses.values() {
            l.on_hand += w.on_hand;
            l.reserved += w.reserved(now);
            l.available += w.available(now);
            l.committed += w.committed;
        }
        l
    }

    pub fn threshold(&self) -> u64 {
        self.warehouses
            .values()
            .map(|w| w.low_stock_threshold)
            .sum()
    }

    pub fn status(&self, now: u64) -> StockStatus {
        StockStatus::of(self.levels(now).available, self.threshold())
    }

    pub fn prune(&mut self, now: u64) {
        for w in self.warehouses.values_mut() {
            w.prune(now);
        }
        self.inflight
            .retain(|_, line| !(line.effect == LineEffect::Held && line.expires_at <= now));
    }

    pub fn view(&self, product_id: &ProductId, now: u64) -> StockView {
        let levels = self.levels(now);
        StockView {
            product_id: product_id.clone(),
            on_hand: levels.on_hand,
            reserved_quantity: levels.reserved,
            available_quantity: levels.available,
            committed_quantity: levels.committed,
            low_stock_threshold: self.threshold(),
            status: StockStatus::of(levels.available, self.threshold()),
            updated_at: self.updated_at,
            version: self.version,
            warehouses: self
                .warehouses
                .iter()
                .map(|(id, w)| WarehouseView {
                    warehouse_id: id.clone(),
                    on_hand: w.on_hand,
                    reserved_quantity: w.reserved(now),
                    available_quantity: w.available(now),
                    committed_quantity: w.committed,
                    low_stock_threshold: w.low_stock_threshold,
                    status: StockStatus::of(w.available(now), w.low_stock_threshold),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StockStatus {
    InStock,
    LowStock,
    OutOfStock,
}

impl StockStatus {
    pub fn of(available: u64, threshold: u64) -> Self {
        if available == 0 {
            Self::OutOfStock
        } else if available <= threshold {
            Self::LowStock
        } else {
            Self::InStock
        }
    }
}

/// Stock as callers see it at one instant. Product-level figures are warehouse sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockView {
    pub product_id: ProductId,
    pub on_hand: u64,
    pub reserved_quantity: u64,
    pub available_quantity: u64,
    pub committed_quantity: u64,
    pub low_stock_threshold: u64,
    pub status: StockStatus,
    pub updated_at: u64,
    pub version: u64,
    pub warehouses: Vec<WarehouseView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseView {
    pub warehouse_id: WarehouseId,
    pub on_hand: u64,
    pub reserved_quantity: u64,
    pub available_quantity: u64,
    pub committed_quantity: u64,
    pub low_stock_threshold: u64,
    pub status: StockStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wh(on_hand: u64, holds: &[(u64, u64)]) -> WarehouseStock {
        WarehouseStock {
            on_hand,
            holds: holds.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_hold_counts_until_its_expiry_instant() {
        let w = wh(10, &[(2_000, 3)]);
        assert_eq!(w.available(1_999), 7);
        assert_eq!(w.available(2_000), 10);
    }

    #[test]
    fn removing_an_expired_hold_changes_nothing() {
        let mut w = wh(10, &[(2_000, 3)]);
        assert!(!w.remove_hold(2_000, 3, 2_000));
        assert_eq!(w.holds.get(&2_000), Some(&3));
        assert!(w.remove_hold(2_000, 3, 1_000));
        assert!(w.holds.is_empty());
    }

    #[test]
    fn holds_round_trip_through_their_delta_encoding() {
        let w = wh(
            9,
            &[
                (1_795_311_138_000, 4),
                (1_795_311_139_000, 1),
                (1_795_311_200_000, 2),
            ],
        );
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.contains("[1795311138000,4,1000,1,61000,2]"), "{json}");
        assert_eq!(serde_json::from_str::<WarehouseStock>(&json).unwrap(), w);
    }

    #[test]
    fn holds_of_odd_length_are_refused() {
        let json = r#"{"on_hand":1,"committed":0,"low_stock_threshold":0,"holds":[5]}"#;
        assert!(serde_json::from_str::<WarehouseStock>(json).is_err());
    }

    /// A record as the service stored it while its ids were plain strings: typed ids
    /// read it and write it back byte for byte.
    #[test]
    fn a_record_stored_with_string_ids_reads_and_writes_back_unchanged() {
        let rid = "0b6e4d1c-5f0a-5b7e-9c61-2f4a8d9e3b17";
        let stored = format!(
            r#"{{"version":3,"updated_at":1795311138000,"warehouses":{{"default":{{"on_hand":5,"committed":1,"low_stock_threshold":0}}}},"seq":2,"outbox":[{{"seq":2,"kind":"StockCommitted","product_id":"p","time":1795311138000,"quantity":1,"before":{{"on_hand":5,"reserved":1,"available":4,"committed":0}},"after":{{"on_hand":5,"reserved":0,"available":4,"committed":1}},"reservation_id":"{rid}","order_id":"o-1","op":"r00000000000000ab"}}],"ops":["r00000000000000ab","k00000000000000cd.2"],"inflight":{{"{rid}":{{"effect":"committed","allocations":[],"expires_at":1795311200000,"since":1795311138000,"op":"r00000000000000ab","committed":1,"order_id":"o-1"}}}}}}"#
        );
        let record: ProductRecord = serde_json::from_str(&stored).unwrap();
        let id = ReservationId::parse(rid).unwrap();
        assert_eq!(record.inflight[&id].committed, Some(1));
        assert_eq!(record.outbox[0].reservation_id.as_ref(), Some(&id));
        assert_eq!(serde_json::to_string(&record).unwrap(), stored);
    }

    #[test]
    fn status_is_out_at_zero_low_at_or_below_threshold_else_in() {
        assert_eq!(StockStatus::of(0, 0), StockStatus::OutOfStock);
        assert_eq!(StockStatus::of(5, 5), StockStatus::LowStock);
        assert_eq!(StockStatus::of(6, 5), StockStatus::InStock);
        assert_eq!(StockStatus::of(1, 0), StockStatus::InStock);
    }
}
