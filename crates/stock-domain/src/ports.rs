//! The ports the domain needs from the outside world: a key-value store with
//! compare-and-swap, a clock, and a source of unique ids. Adapters implement them for
//! Spin (`stock-spin`) and for tests (`memory`).

/// A key-value store failure other than a lost compare-and-swap race.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The store refused or failed the call. Adapters MUST map every backend error here,
    /// with context; the domain never retries on it.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Why a `swap` did not report success.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The store says the value changed since `current()`. Callers MUST NOT trust this:
    /// some stores (Spin's Redis store) report it even when the write landed, so the
    /// caller re-reads to learn what happened.
    #[error("compare-and-swap lost a race")]
    CasFailed,
    #[error(transparent)]
    Store(#[from] KvError),
}

/// One compare-and-swap attempt on one key (`wasi:keyvalue/atomics` `cas`).
pub trait CasHandle {
    /// Reads the key and remembers the value the later `swap` compares against.
    /// MUST return `Ok(None)` for an absent key and `KvError` for any store failure.
    fn current(&self) -> Result<Option<Vec<u8>>, KvError>;

    /// Writes `value` if the key still holds what `current()` returned.
    ///
    /// Implementations MUST pass the store's answer through unchanged; the domain
    /// assumes neither a failure nor a success is truthful, and that for an absent key
    /// the swap may be an unconditional upsert (Spin's SQLite store).
    fn swap(self, value: Vec<u8>) -> Result<(), SwapError>;
}

/// The key-value store every component shares.
pub trait KeyValueStore {
    type Cas: CasHandle;

    /// MUST return `Ok(None)` when the key is absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    /// Unconditional write. The domain only uses it where every writer that may race
    /// writes the same outcome: history entries (immutable), reservation intents under
    /// fresh ids, and one-line reservation records once their product step has decided
    /// them.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;

    /// Unconditional writes of several keys in one call (`wasi:keyvalue/batch`
    /// `set-many`: one transaction on Spin's SQLite store). Used like `set`, only where
    /// racing writers write the same outcome, so the domain does not rely on it being
    /// atomic: a partial write is completed by writing the same outcome again.
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError>;

    /// Deletes several keys in one call (`wasi:keyvalue/batch` `delete-many`); an absent
    /// key is not an error. The domain deletes only records that nothing writes any more
    /// (see `crate::retention`), so a partial delete is completed by deleting again.
    fn delete_many(&self, keys: &[String]) -> Result<(), KvError>;

    /// Atomically adds `delta` to a counter key (absent counts as zero) and returns the new
    /// value. This is the one primitive the domain relies on to *create* something
    /// atomically, because `swap` on an absent key may be an unconditional upsert.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;

    /// Starts a compare-and-swap on `key`.
    fn cas(&self, key: &str) -> Result<Self::Cas, KvError>;
}

/// Wall-clock time and waiting.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Waits before a compare-and-swap retry. A test clock may just advance time.
    fn sleep_ms(&self, ms: u64);
}

/// Unique ids and backoff jitter.
pub trait IdGenerator {
    /// A new universally unique id (a UUID in its hyphenated form).
    fn new_id(&self) -> String;
    /// A number in `0..bound` (bound > 0), for retry jitter; need not be cryptographic.
    fn jitter(&self, bound: u64) -> u64;
}
