//! The indexes the domain keeps in the store, because `wasi:keyvalue` offers no prefix
//! scan and listing the store costs as much as everything it holds (Spin refuses a listing
//! over 128 MiB; on Redis it is `KEYS *`). Each is a set of small records written with
//! the same compare-and-swap loop as everything else, and each may hold *more* than the
//! truth, never less: an entry is written before the record that needs it is reachable,
//! and readers filter against the records.
//!
//! - **Product directory** (`dir/{shard}/{page}`): every product, under one of
//!   [`DIR_SHARDS`] shards by hash of its id, in pages of [`DIR_PAGE`] slots handed out by
//!   `increment` on `dirseq/{shard}`. A product's creating write takes a slot and adds
//!   the entry first; the product record keeps its slot (`ProductRecord::dir`), so entries
//!   of creations that died or lost their race are told apart. A page is created only once
//!   the page before it exists, so a shard's pages are always `0..n`. Listing order is
//!   (shard, slot): a product created later gets a later slot.
//! - **Alert set** (`alert/{shard}`): products that may be at or below their threshold,
//!   each entry with a token. A write that leaves a product low while its record has no
//!   token adds an entry first, then stores the token in the record; a write that leaves
//!   it in stock clears the token, then removes that entry. Expiries only raise
//!   availability, so a product can only become low through a write. Readers keep what is
//!   low at the instant read.
//! - **Due work** (`due/{bucket}/{shard}`): what the sweep must look at from a given time,
//!   in buckets [`DUE_BUCKET_MS`] wide, split in [`DUE_SHARDS`] shards by hash of the
//!   entry; `due/mark` is the first bucket that may still hold entries. An entry is a
//!   [`Due`]:
//!   - a *product* with one-line reservations whose holds lapse from the bucket on. A
//!     reserve's product write records the span of the product's history that holds its
//!     `StockReserved` entries by expiry bucket (`ProductRecord::due`), in the same write,
//!     so a reservation costs no write of its own here. The product is filed only when its
//!     earliest span changes: by a reserve when it had none (or lapses earlier than all
//!     it has), and by the sweep as it drops the earliest (at the next, from now at the
//!     earliest). A product that keeps trading is filed by the sweep, never by a reserve;
//!   - a *reservation* of several lines, shortly after each change of state (so one
//!     abandoned mid-change is finished) and at its expiry; and any settled reservation,
//!     at the end of its retention, to be deleted;
//!   - a *cart* that was ordered or abandoned, and a *record* (an idempotency record,
//!     an inbound-event marker) at the end of its retention, to be deleted.
//!
//!   A day's buckets that hold shards are listed in `due/day/{day}` (written once per
//!   bucket shard, when it is created), so the sweep reads one record per day that has
//!   nothing due instead of every shard of every bucket: after a month of quiet, the next
//!   call reads thirty records, not seven hundred thousand. The sweep removes what it
//!   has dealt with and deletes the shards, and the day lists, that time has left
//!   behind, so the index holds only what is still to come.
//! - **Feed partitions** (`feed/{partition}/head`, `feed/{partition}/{page}`): the event
//!   feed, split in a configured number of partitions by hash of the product id. Each
//!   partition is a log of *slots*, each naming a product and the first sequence number
//!   of a run of its history entries ([`FeedSlot`]); the entries themselves name their
//!   slot (`HistoryEntry::feed`), so each entry is in exactly one slot, and the slots of a
//!   product come in its history's order. A product write with entries files a slot only
//!   when the product's last one has closed ([`FEED_OPEN_MS`] after it was filed): a
//!   product that keeps trading adds one slot per window, not one per write. The slot is appended to the
//!   partition's head by compare-and-swap (so a log has no gaps) before the product
//!   record that names it is written; a slot whose writer died or lost its race names an
//!   entry that does not carry it, and readers skip it. The head keeps the latest slots;
//!   whole pages of [`FEED_PAGE`] older ones are written out, immutable, under their own
//!   keys, before the head lets go of them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

pub use crate::models::FeedSlotId;
use crate::models::{CartId, OpId, ProductId, ReservationId};
use crate::service::InvalidCursor;
use crate::storage::{digest, versioned_record};

/// Shards of the product directory and of the alert set.
pub const DIR_SHARDS: u64 = 16;
/// Slots per directory page.
pub const DIR_PAGE: u64 = 64;
/// Shards of the alert set.
pub const ALERT_SHARDS: u64 = 16;
/// Width of a due-reservation bucket.
pub const DUE_BUCKET_MS: u64 = 60_000;
/// Shards of each due-reservation bucket.
pub const DUE_SHARDS: u64 = 16;
/// How long after its end a bucket is still read by the sweep before the mark passes it,
/// so that a writer whose request started before the bucket ended is never left behind.
pub const DUE_GRACE_MS: u64 = 60_000;
/// Due buckets per day list.
pub const DUE_BUCKETS_PER_DAY: u64 = 24 * 60 * 60 * 1000 / DUE_BUCKET_MS;
/// An alert entry that its product does not reference is dropped only after this long:
/// until then its writer may still be about to store the token.
pub const ALERT_STALE_MS: u64 = 60_000;
/// How many feed partitions there are unless configured otherwise.
pub const FEED_PARTITIONS: u64 = 16;
/// How long a product's feed slot takes the entries of later writes. A slot is read only
/// once it has closed and the settling time has passed, so this is the feed's latency
/// beyond settling; and a product adds at most one slot per this much time, so it is also
/// what bounds the feed's cost to writes (one compare-and-swap on the partition head per
/// product per window). Each slot records when it closes, so changing this is safe.
pub const FEED_OPEN_MS: u64 = 5_000;
/// Slots per written-out feed page.
pub const FEED_PAGE: u64 = 32;

pub fn dir_shard(id: &ProductId) -> u64 {
    digest(&["dir", id.as_str()]) % DIR_SHARDS
}

pub fn alert_shard(id: &ProductId) -> u64 {
    digest(&["alert", id.as_str()]) % ALERT_SHARDS
}

/// The feed partition of a product, out of `partitions`.
pub fn feed_partition(id: &ProductId, partitions: u64) -> u64 {
    digest(&["feed", id.as_str()]) % partitions.max(1)
}

pub fn due_shard(entry: &str) -> u64 {
    digest(&["due", entry]) % DUE_SHARDS
}

/// One entry of the due work, stored as its [`Due::encode`] string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The one-line reservations of a product whose holds lapse in the entry's bucket.
    Product(ProductId),
    /// A reservation to finish, to record as expired, or to delete once settled long
    /// enough.
    Reservation(ReservationId),
    /// A cart to delete once ordered or emptied long enough.
    Cart(CartId),
    /// A record to delete: an idempotency record or an inbound-event marker (its key).
    Record(String),
}

impl Due {
    pub fn encode(&self) -> String {
        match self {
            Due::Product(id) => format!("p:{id}"),
            Due::Reservation(id) => format!("r:{id}"),
            Due::Cart(id) => format!("c:{id}"),
            Due::Record(key) => format!("k:{key}"),
        }
    }

    /// `None` for a string no version of [`Due::encode`] wrote.
    pub fn parse(raw: &str) -> Option<Self> {
        let (kind, rest) = raw.split_once(':')?;
        match kind {
            "p" => ProductId::parse(rest).ok().map(Due::Product),
            "r" => ReservationId::parse(rest).ok().map(Due::Reservation),
            "c" => CartId::parse(rest).ok().map(Due::Cart),
            "k" if rest.starts_with("idem/") => Some(Due::Record(rest.to_owned())),
            _ => None,
        }
    }
}

pub fn due_bucket(due_ms: u64) -> u64 {
    due_ms / DUE_BUCKET_MS
}

pub mod keys {
    /// Counter handing out a directory shard's slots.
    pub fn dir_seq(shard: u64) -> String {
        format!("dirseq/{shard:02}")
    }

    pub fn dir_page(shard: u64, page: u64) -> String {
        format!("dir/{shard:02}/{page:010}")
    }

    pub fn alert(shard: u64) -> String {
        format!("alert/{shard:02}")
    }

    pub fn due(bucket: u64, shard: u64) -> String {
        format!("due/{bucket:012}/{shard:02}")
    }

    /// The buckets of day `day` (days since the epoch) that hold shards.
    pub fn due_day(day: u64) -> String {
        format!("due/day/{day:06}")
    }

    pub const DUE_MARK: &str = "due/mark";

    /// The head of a feed partition: its length and latest slots.
    pub fn feed_head(partition: u64) -> String {
        format!("feed/{partition:04}/head")
    }

    /// Slots `page * FEED_PAGE ..` of a feed partition, once written out.
    pub fn feed_page(partition: u64, page: u64) -> String {
        format!("feed/{partition:04}/{page:012}")
    }
}

/// One page of a directory shard: `(slot, product)` in slot order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirPage {
    pub entries: Vec<(u64, ProductId)>,
    pub version: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

/// An alert-set entry: the token its writer stores in the product, and when it was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertToken {
    pub token: OpId,
    pub since: u64,
}

/// One shard of the alert set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertShard {
    pub entries: BTreeMap<ProductId, Vec<AlertToken>>,
    pub version: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

/// One shard of one due bucket: encoded [`Due`] entry → the time from which it is due.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueShard {
    pub entries: BTreeMap<String, u64>,
    pub version: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

/// The buckets of one day that hold (or held) due shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueDay {
    pub buckets: BTreeSet<u64>,
    pub version: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

/// The first due bucket that may still hold entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueMark {
    pub bucket: u64,
    pub version: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

/// One slot of a feed partition: the run of a product's history entries that starts at
/// sequence number `from` and carries this slot's number (see [`FeedSlotId`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedSlot {
    pub product_id: ProductId,
    pub from: u64,
    /// When the slot was filed (ms since epoch).
    pub at: u64,
    /// Until when it takes entries (ms since epoch, exclusive): entries stamped before
    /// this may join it, so it is final once this and the settling time have passed.
    pub open_until: u64,
}

/// The head of a feed partition: slots `0..len` were filed; the last `recent.len()` of
/// them are here, the earlier ones in pages of [`FEED_PAGE`] under their own keys.
/// `len - recent.len()` is always a multiple of [`FEED_PAGE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHead {
    pub len: u64,
    pub recent: VecDeque<FeedSlot>,
    pub version: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub ops: VecDeque<OpId>,
}

impl FeedHead {
    /// The number of the first slot the head still holds.
    pub fn first_recent(&self) -> u64 {
        self.len - self.recent.len() as u64
    }

    /// Slot `n`, if the head still holds it.
    pub fn recent_slot(&self, n: u64) -> Option<&FeedSlot> {
        let i = n.checked_sub(self.first_recent())?;
        self.recent.get(usize::try_from(i).ok()?)
    }
}

/// [`FEED_PAGE`] written-out slots of a feed partition, from `page * FEED_PAGE` on.
/// Immutable once written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    pub slots: Vec<FeedSlot>,
}

versioned_record!(FeedHead, 32);
versioned_record!(DirPage, 16);
versioned_record!(AlertShard, 32);
versioned_record!(DueShard, 32);
versioned_record!(DueMark, 16);
versioned_record!(DueDay, 16);

/// A position in a sharded listing: the shard, and the last key served in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor<T> {
    pub shard: u64,
    pub last: T,
}

impl<T: std::fmt::Display> std::fmt::Display for Cursor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.shard, self.last)
    }
}

impl<T> Cursor<T> {
    /// Parses `{shard}.{last}` as printed by `Display`, with `shard < shards` and `last`
    /// read by `parse_last`.
    pub fn parse(
        raw: &str,
        shards: u64,
        parse_last: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Self, InvalidCursor> {
        let (shard_raw, last) = raw.split_once('.').ok_or(InvalidCursor)?;
        let shard: u64 = shard_raw.parse().map_err(|_| InvalidCursor)?;
        // One spelling per cursor: no sign, no leading zeros.
        if shard >= shards || shard.to_string() != shard_raw {
            return Err(InvalidCursor);
        }
        let last = parse_last(last).ok_or(InvalidCursor)?;
        Ok(Self { shard, last })
    }
}
