//! The global event feed (`GET /v1/events?after=…`): every product's history entries as
//! one stream with a resumable cursor, for a relay that publishes them to `stock.events`.
//!
//! # Order without a global counter
//! A global sequence would need a counter key that every write of every product goes
//! through. Instead entries are ordered by `(time, product_id, seq)`, and a cursor is the
//! position of the last entry served. Two facts about entry times, each true within
//! [`FEED_SETTLE_MS`] (which therefore covers the store calls between stamping an entry
//! and its compare-and-swap landing, and the clock skew between nodes), make that work:
//!
//! 1. **Landing.** An entry stamped `t` is in the store by `t + FEED_SETTLE_MS`. So once
//!    `now − FEED_SETTLE_MS` has passed `t`, no entry stamped `t` or earlier can still
//!    appear: the feed serves only entries older than that horizon, and a page is always
//!    a prefix of the final order after its cursor — paging while writes continue never
//!    skips or repeats an entry.
//! 2. **Near order.** Within one product, an entry is stamped after the record holding
//!    the previous one was read, so for `j < k`, `time(j) < time(k) + FEED_SETTLE_MS`.
//!    Hence a product whose `updated_at` is older than the cursor's time by more than the
//!    slack has nothing new; the first entry after the cursor can be found by a binary
//!    search over sequence numbers; and once a product's history has been read forward
//!    to `t`, its unread entries are stamped after `t − FEED_SETTLE_MS`, which is what
//!    lets the pages be merged lazily across products.
//!
//! # Cost of one page
//! One key listing and one read per product record (as for `alerts`). For each product
//! changed since about the cursor's time: a binary search over its history keys (no read
//! at all when the cursor falls within the entries the record still carries), then one
//! read per entry served, plus the entries stamped within `FEED_SETTLE_MS` after them.
//! Nothing is written.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::StockService;
use super::stock::read_errors;
use crate::models::{HistoryEntry, ProductId, ProductRecord};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{EngineError, keys};

/// The longest time between an entry's timestamp and its landing in the store, clock
/// skew between nodes included. Entries younger than this are not served yet.
pub const FEED_SETTLE_MS: u64 = 2_000;

/// A position in the feed: the last entry served. Its string form is opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeedCursor {
    // Field order is the feed's order (the derived `Ord`).
    time: u64,
    product_id: ProductId,
    seq: u64,
}

/// A cursor string this feed did not issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this feed issued")]
pub struct InvalidCursor;

impl FeedCursor {
    fn of(entry: &HistoryEntry) -> Self {
        Self {
            time: entry.time,
            product_id: entry.product_id.clone(),
            seq: entry.seq,
        }
    }

    /// Reads the string form written by `Display`: `{time}.{seq}.{product_id}`.
    pub fn parse(raw: &str) -> Result<Self, InvalidCursor> {
        // At most 19 digits, so every number the contract allows fits a u64 (the OpenAPI
        // pattern says the same).
        let number = |part: &str| {
            if !(1..=19).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidCursor);
            }
            part.parse::<u64>().map_err(|_| InvalidCursor)
        };
        // Product ids may contain dots, so the id comes last.
        let mut parts = raw.splitn(3, '.');
        let (Some(time), Some(seq), Some(product_id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidCursor);
        };
        Ok(Self {
            time: number(time)?,
            seq: number(seq)?,
            product_id: ProductId::parse(product_id).map_err(|_| InvalidCursor)?,
        })
    }
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.time, self.seq, self.product_id)
    }
}

impl FromStr for FeedCursor {
    type Err = InvalidCursor;
    fn from_str(raw: &str) -> Result<Self, InvalidCursor> {
        Self::parse(raw)
    }
}

impl TryFrom<String> for FeedCursor {
    type Error = InvalidCursor;
    fn try_from(raw: String) -> Result<Self, InvalidCursor> {
        Self::parse(&raw)
    }
}

impl From<FeedCursor> for String {
    fn from(cursor: FeedCursor) -> String {
        cursor.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    /// Oldest first, in feed order.
    pub entries: Vec<HistoryEntry>,
    /// The cursor to pass next time: the last entry served, or `after` itself when there
    /// was nothing new (`None` only when nothing has ever been served).
    pub next: Option<FeedCursor>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

read_errors!(FeedError);

/// One product's history, read forward from the first entry that may follow the cursor.
struct Stream {
    id: ProductId,
    record: ProductRecord,
    next_seq: u64,
    /// No unread entry that may follow the cursor is stamped before this.
    floor: u64,
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// Up to `limit` entries after `after` (from the beginning when `None`), in feed order,
    /// all older than the settling horizon.
    pub fn feed(&self, after: Option<&FeedCursor>, limit: usize) -> Result<FeedPage, FeedError> {
        // Taken before anything is read: every entry older than the horizon has landed
        // by then, so the reads below see it.
        let horizon = self.now().saturating_sub(FEED_SETTLE_MS);
        let from = after.map_or(0, |c| c.time);
        let mut streams = Vec::new();
        for key in self.kv.list_keys().map_err(EngineError::from)? {
            let Some(raw) = key.strip_prefix(keys::PRODUCT_PREFIX) else {
                continue;
            };
            let Ok(id) = ProductId::parse(raw) else {
                continue;
            };
            let Some(record) = self.read_product(&id)? else {
                continue;
            };
            if record.seq == 0 || record.updated_at + FEED_SETTLE_MS < from {
                continue;
            }
            let next_seq = match after {
                Some(cursor) => self.first_seq_from(&id, &record, cursor.time)?,
                None => 1,
            };
            if next_seq <= record.seq {
                streams.push(Stream {
                    id,
                    record,
                    next_seq,
                    floor: from,
                });
            }
        }

        // A lazy merge: the smallest entry read so far is served once every product that
        // still has unread entries can only produce later ones; otherwise the product
        // with the lowest floor reads its next entry.
        let mut lowest: BinaryHeap<Reverse<(u64, usize)>> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| Reverse((s.floor, i)))
            .collect();
        let mut ready: BTreeMap<FeedCursor, HistoryEntry> = BTreeMap::new();
        let mut entries = Vec::new();
        while entries.len() < limit {
            let floor = lowest.peek().map(|Reverse((floor, _))| *floor);
            if let Some((first, _)) = ready.first_key_value()
                && floor.is_none_or(|floor| first.time < floor)
            {
                let (_, entry) = ready.pop_first().expect("not empty");
                entries.push(entry);
                continue;
            }
            let Some(Reverse((_, i))) = lowest.pop() else {
                break;
            };
            let stream = &mut streams[i];
            let entry = self.history_entry(&stream.id, &stream.record, stream.next_seq)?;
            stream.next_seq += 1;
            stream.floor = stream.floor.max(entry.time.saturating_sub(FEED_SETTLE_MS));
            let position = FeedCursor::of(&entry);
            if entry.time < horizon && after.is_none_or(|c| position > *c) {
                ready.insert(position, entry);
            }
            if stream.next_seq <= stream.record.seq && stream.floor < horizon {
                lowest.push(Reverse((stream.floor, i)));
            }
        }
        Ok(FeedPage {
            next: entries
                .last()
                .map(FeedCursor::of)
                .or_else(|| after.cloned()),
            entries,
        })
    }

    /// A sequence number from which reading a product's history forward misses nothing
    /// stamped at or after `time`: one past an entry stamped `FEED_SETTLE_MS` before it,
    /// found by binary search (every earlier entry is then stamped before `time`).
    fn first_seq_from(
        &self,
        id: &ProductId,
        record: &ProductRecord,
        time: u64,
    ) -> anyhow::Result<u64> {
        let before = |e: &HistoryEntry| e.time + FEED_SETTLE_MS <= time;
        // Invariant: entry `lo` is `before` (or `lo` is 0), entry `hi` is not (or is
        // past the end). The record's own entries cost nothing to look at, so try them
        // first.
        let (mut lo, mut hi) = (0, record.seq + 1);
        if let Some(oldest_carried) = record.outbox.front() {
            if before(oldest_carried) {
                lo = oldest_carried.seq;
            } else {
                hi = oldest_carried.seq;
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if before(&self.history_entry(id, record, mid)?) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_writes_even_with_dots_in_the_product_id() {
        let cursor = FeedCursor {
            time: 1_700_000_000_123,
            product_id: ProductId::parse("sku.v2:red").unwrap(),
            seq: 42,
        };
        assert_eq!(cursor.to_string(), "1700000000123.42.sku.v2:red");
        assert_eq!(FeedCursor::parse(&cursor.to_string()), Ok(cursor));
    }

    #[test]
    fn cursor_numbers_have_1_to_19_digits_and_anything_else_is_invalid() {
        let max = "9".repeat(19);
        let parsed = FeedCursor::parse(&format!("{max}.0000000000000000001.a")).unwrap();
        assert_eq!((parsed.time, parsed.seq), (9_999_999_999_999_999_999, 1));
        for bad in [
            "10000000000000000000.1.a",
            "1.10000000000000000000.a",
            ".1.a",
            "1..a",
            "1.1",
            "1.1.",
            "1.-1.a",
            "1.1.a b",
        ] {
            assert_eq!(FeedCursor::parse(bad), Err(InvalidCursor), "{bad}");
        }
    }

    #[test]
    fn cursors_order_by_time_then_product_then_sequence() {
        let c = |time, product: &str, seq| FeedCursor {
            time,
            product_id: ProductId::parse(product).unwrap(),
            seq,
        };
        assert!(c(1, "b", 9) < c(2, "a", 1));
        assert!(c(1, "a", 9) < c(1, "b", 1));
        assert!(c(1, "a", 1) < c(1, "a", 2));
    }
}
