//! The JSON wire contract of SPEC §3: request bodies as strict DTOs (unknown fields are
//! refused; numbers arrive as raw JSON numbers so that range errors get their own codes)
//! and the response shapes that differ from the domain's views.
//!
//! Views that already match the contract (`StockView`, `Availability`, `BatchStock`,
//! `AlertView`, `ExpireReport`) are serialized as the domain defines them. Reservations
//! and history entries get their own shapes here because the stored records carry
//! internal operation ids that callers have no use for.

use serde::{Deserialize, Serialize};
use serde_json::Number;
use stock_domain::models::{
    Allocation, HistoryEntry, Levels, OrderId, ProductId, ReservationId, ReservationLine,
    ReservationStatus, ReservationView, WarehouseId,
};
use stock_domain::service::{FeedCursor, IngestOutcome};

use crate::percent;

/// `PUT /v1/stock/{product_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStockBody {
    pub quantity: Number,
    pub low_stock_threshold: Option<Number>,
    pub warehouse_id: Option<String>,
}

/// `POST /v1/stock/{product_id}/adjustments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockBody {
    pub adjustment: Number,
    pub reason: String,
    pub warehouse_id: Option<String>,
}

/// `POST /v1/reservations`: either one line inline or `lines`. Both shapes share one
/// DTO so that a mix of the two is reported precisely instead of as "no variant matched".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    pub product_id: Option<String>,
    pub quantity: Option<Number>,
    pub warehouse_id: Option<String>,
    pub lines: Option<Vec<ReserveLineBody>>,
    pub ttl_seconds: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveLineBody {
    pub product_id: String,
    pub quantity: Number,
    pub warehouse_id: Option<String>,
}

/// `POST /v1/reservations/{id}/commit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    pub order_id: String,
}

/// Bodies of operations that take none (release, expiry sweep): empty or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// A reservation as callers see it.
#[derive(Debug, Serialize)]
pub struct ReservationBody {
    pub reservation_id: ReservationId,
    pub status: ReservationStatus,
    pub expires_at: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub order_id: Option<OrderId>,
    pub lines: Vec<ReservationLineBody>,
    /// Echoed for single-line reservations (SPEC §3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ReservationLineBody {
    pub product_id: ProductId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<WarehouseId>,
    pub quantity: u64,
    /// Where the units are held (the allocation strategy may split a line).
    pub allocations: Vec<Allocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_quantity: Option<u64>,
}

impl ReservationBody {
    pub fn new(view: ReservationView) -> Self {
        Self {
            reservation_id: view.reservation_id,
            status: view.status,
            expires_at: view.expires_at,
            created_at: view.created_at,
            updated_at: view.updated_at,
            order_id: view.order_id,
            lines: view
                .lines
                .into_iter()
                .map(ReservationLineBody::new)
                .collect(),
            product_id: None,
            quantity: None,
        }
    }

    /// Adds the `product_id` and `quantity` a single-line request is answered with.
    pub fn echo_single_line(mut self) -> Self {
        if let [line] = self.lines.as_slice() {
            self.product_id = Some(line.product_id.clone());
            self.quantity = Some(line.quantity);
        }
        self
    }
}

impl ReservationLineBody {
    fn new(line: ReservationLine) -> Self {
        Self {
            product_id: line.product_id,
            warehouse_id: line.warehouse_id,
            quantity: line.quantity,
            allocations: line.allocations,
            committed_quantity: line.committed,
        }
    }
}

/// `GET /v1/stock/{product_id}/history`.
#[derive(Debug, Serialize)]
pub struct HistoryBody {
    pub product_id: ProductId,
    pub events: Vec<CloudEvent>,
    pub next_after: Option<u64>,
}

/// `GET /v1/events`: a page of the event feed. `partitions` is how many the feed has;
/// `partition` the one read (absent when all were); `next_after` the cursor to pass as
/// `after` next time (the same one when nothing was new).
#[derive(Debug, Serialize)]
pub struct FeedBody {
    pub partitions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u64>,
    pub events: Vec<CloudEvent>,
    pub next_after: FeedCursor,
}

/// `POST /v1/events`: the event as received and what applying it did, as the
/// reservations concerned look now. `duplicate` is a redelivery of an event already
/// applied (its lists then hold only what finishing it still did).
#[derive(Debug, Serialize)]
pub struct IngestBody {
    pub id: String,
    pub source: String,
    /// The CloudEvents `type` as the producer sent it.
    #[serde(rename = "type")]
    pub raw_type: String,
    pub duplicate: bool,
    pub reserved: Vec<ReservationBody>,
    pub released: Vec<ReservationBody>,
    pub committed: Vec<ReservationBody>,
    /// Holds of an ordered cart that had lapsed or been released before the commit.
    pub uncommitted: Vec<ReservationBody>,
}

impl IngestBody {
    pub fn new(id: String, source: String, raw_type: String, outcome: IngestOutcome) -> Self {
        let bodies = |views: Vec<ReservationView>| -> Vec<ReservationBody> {
            views.into_iter().map(ReservationBody::new).collect()
        };
        Self {
            id,
            source,
            raw_type,
            duplicate: outcome.duplicate,
            reserved: bodies(outcome.reserved),
            released: bodies(outcome.released),
            committed: bodies(outcome.committed),
            uncommitted: bodies(outcome.uncommitted),
        }
    }
}

/// A history entry as a CloudEvents 1.0 JSON event. `type` is the seed's event name
/// exactly (`StockReserved`, `LowStockAlert`, …), `id` is `<product_id>:<seq>`, unique
/// within `source`, so a relay can de-duplicate.
#[derive(Debug, Serialize)]
pub struct CloudEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subject: ProductId,
    pub time: String,
    pub datacontenttype: &'static str,
    /// The CloudEvents Partitioning extension: the product id, the key a Kafka bridge
    /// produces the event under, so a product's events stay in order in one partition.
    pub partitionkey: ProductId,
    pub data: EventData,
}

#[derive(Debug, Serialize)]
pub struct EventData {
    pub seq: u64,
    pub product_id: ProductId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<WarehouseId>,
    /// The signed change for adjustments and updates, the units concerned otherwise.
    pub quantity: i64,
    pub before: LevelsBody,
    pub after: LevelsBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<ReservationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Epoch milliseconds, like every other time on the wire.
    pub time: u64,
}

/// Product-level figures named as in stock responses.
#[derive(Debug, Serialize)]
pub struct LevelsBody {
    pub on_hand: u64,
    pub reserved_quantity: u64,
    pub available_quantity: u64,
    pub committed_quantity: u64,
}

impl From<Levels> for LevelsBody {
    fn from(l: Levels) -> Self {
        Self {
            on_hand: l.on_hand,
            reserved_quantity: l.reserved,
            available_quantity: l.available,
            committed_quantity: l.committed,
        }
    }
}

impl CloudEvent {
    pub fn new(entry: HistoryEntry) -> Self {
        Self {
            specversion: "1.0",
            id: format!("{}:{}", entry.product_id, entry.seq),
            source: format!(
                "/stock-service/products/{}",
                percent::segment(entry.product_id.as_str())
            ),
            kind: entry.kind.as_str(),
            subject: entry.product_id.clone(),
            time: rfc3339(entry.time),
            datacontenttype: "application/json",
            partitionkey: entry.product_id.clone(),
            data: EventData {
                seq: entry.seq,
                product_id: entry.product_id,
                warehouse_id: entry.warehouse_id,
                quantity: entry.quantity,
                before: entry.before.into(),
                after: entry.after.into(),
                reason: entry.reason,
                reservation_id: entry.reservation_id,
                order_id: entry.order_id,
                idempotency_key: entry.idempotency_key,
                time: entry.time,
            },
        }
    }
}

/// Epoch milliseconds as RFC 3339 UTC with millisecond precision, e.g.
/// `2023-11-14T22:13:20.123Z` (the calendar conversion is Howard Hinnant's
/// `civil_from_days`).
pub fn rfc3339(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        epoch_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use stock_domain::models::{EventKind, OpId};

    use super::*;

    #[test]
    fn epoch_milliseconds_format_as_rfc_3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_history_entry_becomes_a_cloudevent_named_after_the_seed_event() {
        let product = ProductId::parse("SKU-1").unwrap();
        let entry = HistoryEntry {
            seq: 7,
            kind: EventKind::StockReserved,
            product_id: product.clone(),
            warehouse_id: None,
            time: 1_700_000_000_123,
            quantity: 2,
            before: Levels {
                on_hand: 10,
                reserved: 0,
                available: 10,
                committed: 0,
            },
            after: Levels {
                on_hand: 10,
                reserved: 2,
                available: 8,
                committed: 0,
            },
            reason: None,
            reservation_id: ReservationId::parse("r-1").ok(),
            order_id: None,
            idempotency_key: None,
            op: OpId::new("internal-op"),
            feed: None,
        };
        let json = serde_json::to_value(CloudEvent::new(entry)).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], "SKU-1:7");
        assert_eq!(json["source"], "/stock-service/products/SKU-1");
        assert_eq!(json["type"], "StockReserved");
        assert_eq!(json["subject"], "SKU-1");
        assert_eq!(json["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["partitionkey"], "SKU-1");
        assert_eq!(json["data"]["after"]["available_quantity"], 8);
        assert_eq!(json["data"]["reservation_id"], "r-1");
        assert!(!json.to_string().contains("internal-op"));
    }
}
