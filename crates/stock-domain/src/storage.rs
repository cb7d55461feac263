//! How the domain uses the key-value store: key layout, record encoding, and the one
//! compare-and-swap loop every mutation goes through.
//!
//! The loop is written for the stores Spin actually ships (SPEC §5):
//! - every write carries an operation id, remembered in a small ring inside the record,
//!   so after any answer from `swap` (true or false) the next read — made at once — tells
//!   whether the write landed: a reported failure is never trusted and, with
//!   `verify_writes`, a reported success is not either. Each attempt tags the id with
//!   its number, and a write whose landing no read has shown yet stays remembered with
//!   its result, so a later read that shows it (Spin's DynamoDB store without
//!   `consistent_read`) still yields that attempt's result, never "someone else's";
//! - a record is never *created* by compare-and-swap (on SQLite that is an unconditional
//!   upsert): the creator is elected with the store's atomic `increment` on a side key,
//!   and the others wait for it;
//! - retries are bounded, with full-jitter exponential backoff; exhaustion is
//!   `EngineError::Contention`, which the HTTP layer turns into 503 + `Retry-After`.

use std::collections::VecDeque;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::models::OpId;
use crate::ports::{CasHandle, Clock, IdGenerator, KeyValueStore, KvError, SwapError};

/// Key layout. Prefixes are distinct so that listing the store can tell records apart.
pub mod keys {
    use crate::models::{CartId, ProductId, ReservationId};

    pub const PRODUCT_PREFIX: &str = "stock/";
    pub const RESERVATION_PREFIX: &str = "res/";
    pub const CART_PREFIX: &str = "cart/";

    pub fn product(id: &ProductId) -> String {
        format!("{PRODUCT_PREFIX}{id}")
    }

    pub fn reservation(id: &ReservationId) -> String {
        format!("{RESERVATION_PREFIX}{id}")
    }

    pub fn cart(id: &CartId) -> String {
        format!("{CART_PREFIX}{id}")
    }

    pub fn history(id: &ProductId, seq: u64) -> String {
        format!("hist/{id}/{seq:020}")
    }

    pub fn idempotency(scope: &str, digest: &str) -> String {
        format!("idem/{scope}/{digest}")
    }

    /// Side counter used to elect the single creator of `key`.
    pub fn birth(key: &str) -> String {
        format!("birth/{key}")
    }
}

/// A stored record that carries the ids of the operations recently applied to it.
pub trait Record: Serialize + DeserializeOwned + Clone {
    /// How many operation ids the record remembers. It must exceed the number of writes
    /// that can land on one key between a writer's swap and its next read.
    const RING: usize;
    fn ops(&self) -> &VecDeque<OpId>;
    fn ops_mut(&mut self) -> &mut VecDeque<OpId>;
    /// Marks a new version written at `now`.
    fn touch(&mut self, now: u64);
}

/// Implements [`Record`] for a record with `ops`, `version` and `updated_at` fields.
macro_rules! versioned_record {
    ($record:ty, $ring:expr) => {
        impl $crate::storage::Record for $record {
            const RING: usize = $ring;
            fn ops(&self) -> &std::collections::VecDeque<$crate::models::OpId> {
                &self.ops
            }
            fn ops_mut(&mut self) -> &mut std::collections::VecDeque<$crate::models::OpId> {
                &mut self.ops
            }
            fn touch(&mut self, now: u64) {
                self.version += 1;
                self.updated_at = now;
            }
        }
    };
}
pub(crate) use versioned_record;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the store stayed contended through every retry")]
    Contention,
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A call found its own fresh operation id applied by a write it has no account
    /// of: the store answered something no shipped store should.
    #[error("record {key} holds operation {op}, which this call never saw land")]
    Unaccounted { key: String, op: OpId },
    #[error("record {key} is not readable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// What one attempt of an update wants.
pub enum Decision<T, R> {
    /// Write this new record; `R` is the caller's result if it lands.
    Write(T, R),
    /// Write nothing (no-op, already done, or a refusal carried in `R`).
    Keep(R),
}

/// How an update ended.
pub enum Outcome<T, R> {
    /// This call's write landed; `record` is what it wrote.
    Written { record: T, result: R },
    /// The decision was to write nothing.
    Kept(R),
    /// The operation id was already in the record: an earlier call applied it.
    AlreadyApplied(T),
}

/// Retry and verification policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Re-read after a reported success to confirm the operation id is there.
    pub verify_writes: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 24,
            base_backoff_ms: 1,
            max_backoff_ms: 64,
            verify_writes: true,
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("domain records always serialize")
}

pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, EngineError> {
    serde_json::from_slice(bytes).map_err(|source| EngineError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

/// Reads and decodes one key.
pub fn read<K: KeyValueStore, T: DeserializeOwned>(
    kv: &K,
    key: &str,
) -> Result<Option<T>, EngineError> {
    kv.get(key)?.map(|b| decode(key, &b)).transpose()
}

/// Reads and decodes one key through a compare-and-swap handle, whose read is exact on
/// every store (a plain `get` on Spin's DynamoDB store may lag behind a write): for a
/// reader that acts on a key being absent.
pub fn read_exact<K: KeyValueStore, T: DeserializeOwned>(
    kv: &K,
    key: &str,
) -> Result<Option<T>, EngineError> {
    kv.cas(key)?.current()?.map(|b| decode(key, &b)).transpose()
}

/// The compare-and-swap loop, bound to the ports it needs.
pub struct Engine<'a, K, C, I> {
    pub kv: &'a K,
    pub clock: &'a C,
    pub ids: &'a I,
    pub policy: &'a RetryPolicy,
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> Engine<'_, K, C, I> {
    pub fn backoff(&self, attempt: u32) {
        let ceiling = self
            .policy
            .base_backoff_ms
            .saturating_mul(1 << attempt.min(16))
            .min(self.policy.max_backoff_ms)
            .max(1);
        self.clock.sleep_ms(1 + self.ids.jitter(ceiling));
    }

    /// Applies `decide` to the current record of `key` until the write lands, the
    /// decision is to keep, or the retries run out.
    ///
    /// `decide` sees the current record (`None` if absent) and the time; it may run
    /// several times and may read other keys, but must not write anything it would not
    /// write again identically. Returning `Write` for an absent key creates the record.
    pub fn update<T, R, E>(
        &self,
        key: &str,
        op: &OpId,
        mut decide: impl FnMut(Option<&T>, u64) -> Result<Decision<T, R>, E>,
    ) -> Result<Outcome<T, R>, E>
    where
        T: Record,
        E: From<EngineError>,
    {
        // Every write whose answer left open whether it landed (on Spin's DynamoDB
        // store that is every answer: a failure may be a write the SDK retried after it
        // had landed, and a success may not yet show in a read), with the result it
        // stands for. Each attempt writes its own tag of the operation id, so the record
        // tells which attempt landed; none is ever forgotten.
        let mut unsure: Vec<(OpId, R)> = Vec::new();
        // Whether this call won the election to create the record, once it has run one.
        let mut elected: Option<bool> = None;
        for attempt in 0..self.policy.max_attempts {
            if attempt > 0 {
                self.backoff(attempt);
            }
            let cas = self.kv.cas(key).map_err(EngineError::from)?;
            let current: Option<T> = match cas.current().map_err(EngineError::from)? {
                Some(bytes) => Some(decode(key, &bytes)?),
                None => None,
            };
            if let Some(record) = &current {
                if let Some(i) = unsure
                    .iter()
                    .position(|(tag, _)| record.ops().iter().any(|o| o == tag))
                {
                    let (_, result) = unsure.swap_remove(i);
                    return Ok(Outcome::Written {
                        record: record.clone(),
                        result,
                    });
                }
                if applied(record.ops(), op) {
                    return Ok(Outcome::AlreadyApplied(record.clone()));
                }
            }
            let now = self.clock.now_ms();
            let (mut next, result) = match decide(current.as_ref(), now)? {
                Decision::Keep(result) => return Ok(Outcome::Kept(result)),
                Decision::Write(next, result) => (next, result),
            };
            let tag = op.attempt(attempt);
            let ring = next.ops_mut();
            ring.push_back(tag.clone());
            while ring.len() > T::RING {
                ring.pop_front();
            }
            next.touch(now);
            if current.is_none() {
                // Counted once per call: a winner whose creating swap did not land
                // stays the winner and simply tries again.
                if elected.is_none() {
                    match self.kv.increment(&keys::birth(key), 1) {
                        Ok(count) => elected = Some(count == 1),
                        // Spin's DynamoDB store fails an increment that lost a race, and
                        // one that landed but whose answer was lost: count again on the
                        // next attempt. (An increment counted twice only makes this call
                        // wait for a creator that does not exist, until it takes over.)
                        Err(_) => continue,
                    }
                }
                // Another request is creating this record: wait for it through half the
                // attempts, then take over (its creator has died, or the count was doubled).
                if elected == Some(false) && attempt < self.policy.max_attempts / 2 {
                    continue;
                }
            }
            match cas.swap(encode(&next)) {
                Ok(()) if !self.policy.verify_writes => {
                    return Ok(Outcome::Written {
                        record: next,
                        result,
                    });
                }
                Ok(()) | Err(SwapError::CasFailed) => {}
                Err(SwapError::Store(e)) => return Err(EngineError::from(e).into()),
            }
            // Look at once, before any backoff: the longer the wait, the more writes may
            // land meanwhile and push this tag out of the ring. (On Spin's Redis store
            // every swap that lands is reported failed.)
            if let Some(landed) = read::<K, T>(self.kv, key)?
                && landed.ops().iter().any(|o| *o == tag)
            {
                return Ok(Outcome::Written {
                    record: next,
                    result,
                });
            }
            unsure.push((tag, result));
        }
        Err(EngineError::Contention.into())
    }
}

/// Whether some attempt of operation `op` is among a record's remembered ring entries.
pub fn applied<'a>(ops: impl IntoIterator<Item = &'a OpId>, op: &OpId) -> bool {
    ops.into_iter().any(|o| o.is_attempt_of(op))
}

/// A stable 64-bit FNV-1a digest, for operation ids and request fingerprints derived
/// from idempotency keys (identical on every node and build).
pub fn digest(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_separates_its_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["x", "y"]), digest(&["x", "y"]));
    }

    #[test]
    fn an_operation_is_applied_under_any_of_its_attempt_tags_only() {
        let op = OpId::new;
        let ring: VecDeque<OpId> = ["ab", "cd.3", "ef.x", "gh."].into_iter().map(op).collect();
        assert!(applied(&ring, &op("ab")));
        assert!(applied(&ring, &op("cd")));
        assert!(!applied(&ring, &op("a")));
        assert!(!applied(&ring, &op("c")));
        assert!(!applied(&ring, &op("ef")));
        assert!(!applied(&ring, &op("gh")));
        assert_eq!(op("ab").attempt(0), op("ab"));
        assert_eq!(op("ab").attempt(2), op("ab.2"));
    }

    #[test]
    fn history_keys_sort_in_sequence_order() {
        let id = crate::models::ProductId::parse("p").unwrap();
        assert!(keys::history(&id, 9) < keys::history(&id, 10));
    }
}
