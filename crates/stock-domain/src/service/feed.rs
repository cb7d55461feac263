//! The event feed (`GET /v1/events`): every product's history entries, split in a fixed
//! number of partitions (a product always in the same one), each read in order with a
//! resumable cursor; or all partitions at once. A bridge publishes it to `stock.events`.
//!
//! # How entries get into a partition
//! A product write that appends entries names, in each, a *slot* of the product's
//! partition (`HistoryEntry::feed`): the product's open slot, or one it files first (see
//! `indexes` for the partition logs). A slot is filed at most once per [`FEED_OPEN_MS`]
//! per product, so a busy product costs its partition one compare-and-swap per window,
//! not one per write (measured: with a 1 s window, a spread of 200 products trading a few
//! times a second each lost 9 % of its throughput; hence 5 s).
//!
//! # Why a page never skips nor repeats an entry
//! A partition's order is its slots' order, and within a slot the product's sequence
//! numbers. Entries join a slot only while it is open (they are stamped before its
//! `open_until`), and an entry lands within [`FEED_SETTLE_MS`] of its stamp (store calls
//! and clock skew between nodes included). So once `open_until + FEED_SETTLE_MS` has
//! passed, the slot's entries are final: the reader serves a slot only
//! then, stops at the first slot that is not, and every page is a prefix of the final
//! order after its cursor. A slot whose writer died or lost its race names a first entry
//! that does not carry it (or does not exist), so it serves nothing.
//!
//! # Cost of one page
//! One read of the head of each partition read; then, per slot visited, at most one page of
//! slots, the product record, one read per entry served (none for entries the record
//! still carries) and one to see where the slot ends. A page visits at most `limit` slots
//! plus one per partition read, so its store calls are bounded by `limit`, whatever the
//! store holds. Nothing is written.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::StockService;
use super::stock::read_errors;
use crate::indexes::{self, FEED_OPEN_MS, FEED_PAGE, FeedHead, FeedPage as SlotPage, FeedSlot};
use crate::models::{FeedFiling, FeedSlotId, HistoryEntry, ProductId, ProductRecord};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{self, Decision, EngineError, Outcome};

/// The longest time between an entry's timestamp and its landing in the store, clock
/// skew between nodes included.
pub const FEED_SETTLE_MS: u64 = 2_000;

/// How long after it is written an entry may still be unserved: its slot stays open for
/// up to [`FEED_OPEN_MS`] and is then left to settle.
pub const FEED_DELAY_MS: u64 = FEED_OPEN_MS + FEED_SETTLE_MS;

/// A position in one feed partition: the next slot to read, and the last sequence
/// number of that slot's product already served from it (0: none yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PartitionPosition {
    pub slot: u64,
    pub served: u64,
}

/// A feed cursor: a position in each partition read, in partition order (one for a
/// one-partition read, one per partition for the whole feed). Its string form,
/// `{slot}.{served}` per partition joined by `-`, is opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeedCursor(Vec<PartitionPosition>);

/// A cursor string this feed did not issue, or issued for another read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this feed issued")]
pub struct InvalidCursor;

impl FeedCursor {
    /// Reads the string form written by `Display`.
    pub fn parse(raw: &str) -> Result<Self, InvalidCursor> {
        // At most 19 digits, so every number fits a u64; one spelling per number.
        let number = |part: &str| {
            if !(1..=19).contains(&part.len())
                || !part.bytes().all(|b| b.is_ascii_digit())
                || (part.len() > 1 && part.starts_with('0'))
            {
                return Err(InvalidCursor);
            }
            part.parse::<u64>().map_err(|_| InvalidCursor)
        };
        raw.split('-')
            .map(|position| {
                let (slot, served) = position.split_once('.').ok_or(InvalidCursor)?;
                Ok(PartitionPosition {
                    slot: number(slot)?,
                    served: number(served)?,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn positions(&self) -> &[PartitionPosition] {
        &self.0
    }
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{}.{}", p.slot, p.served)?;
        }
        Ok(())
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
    /// Oldest first: each partition's entries in its order; across partitions, slot by
    /// slot in the order they were filed.
    pub entries: Vec<HistoryEntry>,
    /// The cursor to pass next time: past every slot visited, so it can move even when
    /// no entry was served (past slots whose product write died).
    pub next: FeedCursor,
    /// How many partitions the feed has.
    pub partitions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The cursor is not one this feed issued for this read (a one-partition cursor for
    /// the whole feed, or one issued under another partition count, say).
    #[error(transparent)]
    InvalidCursor(#[from] InvalidCursor),
    #[error("partition {partition} does not exist: the feed has {partitions} (0 to {})", partitions - 1)]
    InvalidPartition { partition: u64, partitions: u64 },
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

read_errors!(FeedError);

/// One partition being read: its head, position, and what this page has looked up.
struct PartitionRead {
    partition: u64,
    head: FeedHead,
    position: PartitionPosition,
    /// The slot at `position.slot`, once looked up.
    slot: Option<FeedSlot>,
    /// The written-out page of slots read last.
    page: Option<(u64, SlotPage)>,
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// The feed slot for a product write whose entries start at sequence number `first`:
    /// the product's slot while it is open (and in the product's partition), else the one
    /// this call filed for the same entries while it is open, else a new one, filed now.
    pub(crate) fn feed_filing(
        &self,
        id: &ProductId,
        record: &ProductRecord,
        first: u64,
        now: u64,
        filed: &mut Option<(FeedFiling, u64)>,
    ) -> Result<FeedFiling, EngineError> {
        let partition = indexes::feed_partition(id, self.config.feed_partitions);
        let open = |f: &FeedFiling| f.slot.partition == partition && now < f.open_until;
        if let Some(filing) = record.feed.filter(open) {
            return Ok(filing);
        }
        if let Some((filing, from)) = *filed
            && from == first
            && open(&filing)
        {
            return Ok(filing);
        }
        let slot = self.feed_append(
            partition,
            FeedSlot {
                product_id: id.clone(),
                from: first,
                at: now,
                open_until: now + FEED_OPEN_MS,
            },
        )?;
        let filing = FeedFiling {
            slot: FeedSlotId { partition, slot },
            open_until: now + FEED_OPEN_MS,
        };
        *filed = Some((filing, first));
        Ok(filing)
    }

    /// Appends a slot to a partition's log and returns its number. When the head would
    /// hold more than a page beyond its first slots, that page is written out first.
    fn feed_append(&self, partition: u64, slot: FeedSlot) -> Result<u64, EngineError> {
        let mut written_out = None;
        let (key, op) = (indexes::keys::feed_head(partition), self.fresh_op());
        let outcome = self
            .engine()
            .update(&key, &op, |current: Option<&FeedHead>, _| {
                let mut head = current.cloned().unwrap_or_default();
                let number = head.len;
                head.recent.push_back(slot.clone());
                head.len += 1;
                // The page's slots all precede the new one, so they are in the stored
                // head: decided, and written the same by any racing writer.
                if head.recent.len() as u64 > FEED_PAGE {
                    let page_number = head.first_recent() / FEED_PAGE;
                    let page = SlotPage {
                        slots: head.recent.drain(..FEED_PAGE as usize).collect(),
                    };
                    if written_out != Some(page_number) {
                        self.kv.set(
                            &indexes::keys::feed_page(partition, page_number),
                            &storage::encode(&page),
                        )?;
                        written_out = Some(page_number);
                    }
                }
                Ok::<_, EngineError>(Decision::Write(head, number))
            })?;
        match outcome {
            Outcome::Written { result, .. } => Ok(result),
            Outcome::Kept(result) => Ok(result),
            // The operation id is fresh: only a store answering what none should.
            Outcome::AlreadyApplied(_) => Err(EngineError::Unaccounted { key, op }),
        }
    }

    /// Up to `limit` entries after `after` (from the beginning when `None`): of partition
    /// `partition` alone, or of all of them when `None`.
    pub fn feed(
        &self,
        partition: Option<u64>,
        after: Option<&FeedCursor>,
        limit: usize,
    ) -> Result<FeedPage, FeedError> {
        let partitions = self.config.feed_partitions;
        let read: Vec<u64> = match partition {
            Some(p) if p < partitions => vec![p],
            Some(p) => {
                return Err(FeedError::InvalidPartition {
                    partition: p,
                    partitions,
                });
            }
            None => (0..partitions).collect(),
        };
        let positions = match after {
            None => vec![PartitionPosition::default(); read.len()],
            Some(cursor) if cursor.0.len() == read.len() => cursor.0.clone(),
            Some(_) => return Err(InvalidCursor.into()),
        };
        // Taken before anything is read: a slot closed by then has all its entries in
        // the store, so the reads below see them.
        let now = self.now();
        let mut reads = Vec::with_capacity(read.len());
        for (partition, position) in read.into_iter().zip(positions) {
            let head: FeedHead =
                storage::read(&self.kv, &indexes::keys::feed_head(partition))?.unwrap_or_default();
            if position.slot > head.len {
                return Err(InvalidCursor.into());
            }
            reads.push(PartitionRead {
                partition,
                head,
                position,
                slot: None,
                page: None,
            });
        }
        let mut products: HashMap<ProductId, Option<ProductRecord>> = HashMap::new();
        let mut entries = Vec::new();
        let mut visits = limit + reads.len();
        while entries.len() < limit && visits > 0 {
            visits -= 1;
            // The partition whose next closed slot was filed first.
            let mut first: Option<(u64, usize)> = None;
            for (i, r) in reads.iter_mut().enumerate() {
                if let Some(at) = self.closed_slot(r, now)?
                    && first.is_none_or(|(earliest, _)| at < earliest)
                {
                    first = Some((at, i));
                }
            }
            let Some((_, i)) = first else {
                break;
            };
            self.serve_slot(
                &mut reads[i],
                &mut products,
                limit - entries.len(),
                &mut entries,
            )?;
        }
        Ok(FeedPage {
            entries,
            next: FeedCursor(reads.iter().map(|r| r.position).collect()),
            partitions,
        })
    }

    /// When the slot at a partition's position was filed, if it is closed (its entries
    /// are final); `None` at the end of the log or before a slot that is still open.
    fn closed_slot(&self, r: &mut PartitionRead, now: u64) -> anyhow::Result<Option<u64>> {
        let n = r.position.slot;
        if n >= r.head.len {
            return Ok(None);
        }
        if r.slot.is_none() {
            let slot = match r.head.recent_slot(n) {
                Some(slot) => slot.clone(),
                None => {
                    let page_number = n / FEED_PAGE;
                    if r.page.as_ref().is_none_or(|(p, _)| *p != page_number) {
                        let key = indexes::keys::feed_page(r.partition, page_number);
                        let page = storage::read(&self.kv, &key)?.ok_or_else(|| {
                            anyhow::anyhow!("feed page {key} is missing from the store")
                        })?;
                        r.page = Some((page_number, page));
                    }
                    let (_, page) = r.page.as_ref().expect("just read");
                    page.slots
                        .get((n % FEED_PAGE) as usize)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("feed page of slot {n} is short"))?
                }
            };
            r.slot = Some(slot);
        }
        let slot = r.slot.as_ref().expect("just looked up");
        Ok((slot.open_until + FEED_SETTLE_MS <= now).then_some(slot.at))
    }

    /// Serves the closed slot at a partition's position, up to `room` entries; moves to
    /// the next slot once it has seen where this one ends.
    fn serve_slot(
        &self,
        r: &mut PartitionRead,
        products: &mut HashMap<ProductId, Option<ProductRecord>>,
        room: usize,
        entries: &mut Vec<HistoryEntry>,
    ) -> anyhow::Result<()> {
        let slot = r.slot.clone().expect("looked up by closed_slot");
        let id = FeedSlotId {
            partition: r.partition,
            slot: r.position.slot,
        };
        let record = match products.get(&slot.product_id) {
            Some(record) => record.clone(),
            None => {
                let record = self.read_product(&slot.product_id)?;
                products.insert(slot.product_id.clone(), record.clone());
                record
            }
        };
        let mut seq = slot.from.max(r.position.served + 1);
        let mut served = 0;
        let ended = loop {
            let Some(record) = record.as_ref().filter(|rec| seq <= rec.seq) else {
                break true;
            };
            if served == room {
                break false;
            }
            let entry = self.history_entry(&slot.product_id, record, seq)?;
            if entry.feed != Some(id) {
                break true;
            }
            entries.push(entry);
            r.position.served = seq;
            served += 1;
            seq += 1;
        };
        if ended {
            r.position = PartitionPosition {
                slot: r.position.slot + 1,
                served: 0,
            };
            r.slot = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(positions: &[(u64, u64)]) -> FeedCursor {
        FeedCursor(
            positions
                .iter()
                .map(|&(slot, served)| PartitionPosition { slot, served })
                .collect(),
        )
    }

    #[test]
    fn a_cursor_reads_back_what_it_writes() {
        let c = cursor(&[(0, 0), (17, 42), (3, 0)]);
        assert_eq!(c.to_string(), "0.0-17.42-3.0");
        assert_eq!(FeedCursor::parse(&c.to_string()), Ok(c));
        assert_eq!(FeedCursor::parse("5.9"), Ok(cursor(&[(5, 9)])));
    }

    #[test]
    fn cursor_numbers_have_1_to_19_digits_one_spelling_and_anything_else_is_invalid() {
        let max = "9".repeat(19);
        let parsed = FeedCursor::parse(&format!("{max}.1")).unwrap();
        assert_eq!(parsed, cursor(&[(9_999_999_999_999_999_999, 1)]));
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "1..1",
            "1.1.1",
            "1.1-",
            "-1.1",
            "1.1--1.1",
            "01.1",
            "1.01",
            "+1.1",
            "1.1 ",
            "10000000000000000000.1",
            "1700000000000.7.sku.1",
        ] {
            assert_eq!(FeedCursor::parse(bad), Err(InvalidCursor), "{bad:?}");
        }
    }
}
