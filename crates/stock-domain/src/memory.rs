//! An in-memory key-value store with the semantics of Spin's default SQLite store, plus
//! deterministic fault injection (SPEC §5), and a manual clock and id generator — the
//! test doubles for the domain's ports.
//!
//! The faults are the answers Spin 4.0.2's stores give: Redis reports swaps that landed
//! as failed; DynamoDB reports *every* failure of its `TransactWriteItems` as `CasFailed`
//! (a lost race, throttling, a timeout, an SDK retry of a write that had landed), serves
//! `get` from an eventually consistent read unless `consistent_read` is set (its `cas`
//! reads are always consistent), and fails an `increment` that lost a race or whose
//! answer was lost after it landed.
//!
//! One `MemoryKv` is one shared store; [`MemoryKv::instance`] gives a handle that plays
//! one component instance with its own fault plan, so a test can "crash" an instance
//! after its Nth call while the store lives on for the next request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;

use crate::ports::{CasHandle, Clock, IdGenerator, KeyValueStore, KvError, SwapError};

/// Which faults an instance suffers. Probabilities are per `swap`, drawn from a seeded
/// generator so that a failing case replays exactly.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub seed: u64,
    /// The swap is refused although nothing changed (a lost race).
    pub conflict: f64,
    /// The swap is written but reported as `CasFailed` (Spin 4.0.2's Redis store).
    pub false_failure: f64,
    /// The swap is reported as written but is not.
    pub false_success: f64,
    /// The instance dies after this many successful store calls: every later call fails.
    pub crash_after: Option<u64>,
    /// A swap that lands is seen by this instance's next `stale_reads` `get`s of the key
    /// as the value before it (an eventually consistent read; `cas` reads stay exact).
    pub stale_write: f64,
    pub stale_reads: u32,
    /// An `increment` is applied twice (an SDK retry of a write that had landed) and
    /// answers the doubled count.
    pub increment_twice: f64,
    /// An `increment` fails with a store error; a coin of the same generator decides
    /// whether it landed first.
    pub increment_error: f64,
}

impl FaultPlan {
    /// Every misbehaviour a shipped store shows, at rates low enough that requests still
    /// get through: lost races, swaps misreported either way.
    pub fn noisy(seed: u64) -> Self {
        Self {
            seed,
            conflict: 0.1,
            false_failure: 0.1,
            false_success: 0.05,
            ..Self::dynamo(seed)
        }
    }

    /// What Spin's DynamoDB store answers under load: every failure as `CasFailed`
    /// (some of them written), reads that lag behind writes, increments that fail or
    /// count twice.
    pub fn dynamo(seed: u64) -> Self {
        Self {
            seed,
            conflict: 0.1,
            false_failure: 0.1,
            stale_write: 0.2,
            stale_reads: 2,
            increment_twice: 0.1,
            increment_error: 0.1,
            ..Self::default()
        }
    }
}

#[derive(Debug, Default)]
struct InstanceState {
    calls: u64,
    rng: u64,
    crashed: bool,
    /// Keys whose last landed swap this instance does not see yet: the value its `get`
    /// answers instead, and for how many more reads.
    stale: BTreeMap<String, (Option<Vec<u8>>, u32)>,
}

/// The shared store plus one instance's faults.
#[derive(Clone, Default)]
pub struct MemoryKv {
    data: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    plan: Arc<FaultPlan>,
    state: Arc<Mutex<InstanceState>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new instance over the same data, with its own fault plan.
    pub fn instance(&self, plan: FaultPlan) -> Self {
        // SplitMix64 of the seed: neighbouring seeds must not start the xorshift
        // generator in neighbouring states, whose first draws would all agree.
        let mut rng = plan.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        rng = (rng ^ (rng >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        rng = (rng ^ (rng >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        rng ^= rng >> 31;
        Self {
            data: Arc::clone(&self.data),
            plan: Arc::new(plan),
            state: Arc::new(Mutex::new(InstanceState {
                rng: rng.max(1),
                ..Default::default()
            })),
        }
    }

    /// Number of store calls this instance has made.
    pub fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }

    /// Whether this instance has crashed.
    pub fn crashed(&self) -> bool {
        self.state.lock().unwrap().crashed
    }

    /// A copy of every key and value, for invariant checks.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.data.lock().unwrap().clone()
    }

    fn enter(&self) -> Result<(), KvError> {
        let mut st = self.state.lock().unwrap();
        if st.crashed || self.plan.crash_after.is_some_and(|n| st.calls >= n) {
            st.crashed = true;
            return Err(KvError::Store(anyhow!("injected crash: instance is gone")));
        }
        st.calls += 1;
        Ok(())
    }

    fn draw(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let mut st = self.state.lock().unwrap();
        let mut x = st.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        st.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

impl KeyValueStore for MemoryKv {
    type Cas = MemoryCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.enter()?;
        let mut st = self.state.lock().unwrap();
        if let Some((old, left)) = st.stale.get_mut(key) {
            let old = old.clone();
            *left -= 1;
            if *left == 0 {
                st.stale.remove(key);
            }
            return Ok(old);
        }
        drop(st);
        Ok(self.data.lock().unwrap().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.enter()?;
        self.data
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.enter()?;
        let mut data = self.data.lock().unwrap();
        for (key, value) in entries {
            data.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        self.enter()?;
        let mut data = self.data.lock().unwrap();
        for key in keys {
            data.remove(key);
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.enter()?;
        if self.draw(self.plan.increment_error) {
            if self.draw(0.5) {
                self.add(key, delta)?;
            }
            return Err(KvError::Store(anyhow!(
                "injected increment failure on {key}"
            )));
        }
        if self.draw(self.plan.increment_twice) {
            self.add(key, delta)?;
        }
        self.add(key, delta)
    }

    fn cas(&self, key: &str) -> Result<MemoryCas, KvError> {
        self.enter()?;
        Ok(MemoryCas {
            kv: self.clone(),
            key: key.to_owned(),
            seen: Mutex::new(None),
        })
    }
}

impl MemoryKv {
    fn add(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut data = self.data.lock().unwrap();
        let old = match data.get(key) {
            Some(v) => i64::from_le_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| KvError::Store(anyhow!("{key} is not a counter")))?,
            ),
            None => 0,
        };
        let new = old + delta;
        data.insert(key.to_owned(), new.to_le_bytes().to_vec());
        Ok(new)
    }
}

/// One compare-and-swap, with Spin's SQLite semantics: a true compare only when
/// `current()` saw a value; otherwise an unconditional upsert.
pub struct MemoryCas {
    kv: MemoryKv,
    key: String,
    seen: Mutex<Option<Vec<u8>>>,
}

impl CasHandle for MemoryCas {
    fn current(&self) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.enter()?;
        let value = self.kv.data.lock().unwrap().get(&self.key).cloned();
        self.seen.lock().unwrap().clone_from(&value);
        Ok(value)
    }

    fn swap(self, value: Vec<u8>) -> Result<(), SwapError> {
        self.kv.enter()?;
        let plan = Arc::clone(&self.kv.plan);
        if self.kv.draw(plan.conflict) {
            return Err(SwapError::CasFailed);
        }
        if self.kv.draw(plan.false_success) {
            return Ok(());
        }
        let seen = self.seen.into_inner().unwrap();
        let mut data = self.kv.data.lock().unwrap();
        let written = match seen {
            Some(old) if data.get(&self.key) != Some(&old) => false,
            _ => {
                let before = data.insert(self.key.clone(), value);
                drop(data);
                let mut st = self.kv.state.lock().unwrap();
                st.stale.remove(&self.key);
                drop(st);
                if plan.stale_reads > 0 && self.kv.draw(plan.stale_write) {
                    let mut st = self.kv.state.lock().unwrap();
                    st.stale.insert(self.key, (before, plan.stale_reads));
                }
                true
            }
        };
        if !written || self.kv.draw(plan.false_failure) {
            return Err(SwapError::CasFailed);
        }
        Ok(())
    }
}

/// A clock that only moves when told to (or when the code under test sleeps).
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn sleep_ms(&self, ms: u64) {
        // Backoff must not stall tests, but time must not run ahead of TTLs either.
        std::thread::yield_now();
        let _ = ms;
    }
}

/// Sequential, predictable ids and jitter.
#[derive(Clone, Default)]
pub struct SeqIds(Arc<AtomicU64>);

impl IdGenerator for SeqIds {
    fn new_id(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    fn jitter(&self, bound: u64) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_on_an_absent_key_is_an_upsert_even_if_someone_wrote_meanwhile() {
        let kv = MemoryKv::new();
        let cas = kv.cas("k").unwrap();
        assert_eq!(cas.current().unwrap(), None);
        kv.set("k", b"other").unwrap();
        cas.swap(b"mine".to_vec()).unwrap();
        assert_eq!(kv.get("k").unwrap().unwrap(), b"mine");
    }

    #[test]
    fn a_swap_after_reading_a_value_compares() {
        let kv = MemoryKv::new();
        kv.set("k", b"a").unwrap();
        let cas = kv.cas("k").unwrap();
        cas.current().unwrap();
        kv.set("k", b"b").unwrap();
        assert!(matches!(cas.swap(b"c".to_vec()), Err(SwapError::CasFailed)));
        assert_eq!(kv.get("k").unwrap().unwrap(), b"b");
    }

    #[test]
    fn a_false_failure_writes_and_reports_failure() {
        let kv = MemoryKv::new().instance(FaultPlan {
            false_failure: 1.0,
            ..Default::default()
        });
        kv.set("k", b"a").unwrap();
        let cas = kv.cas("k").unwrap();
        cas.current().unwrap();
        assert!(cas.swap(b"b".to_vec()).is_err());
        assert_eq!(kv.get("k").unwrap().unwrap(), b"b");
    }

    #[test]
    fn a_false_success_reports_success_and_writes_nothing() {
        let kv = MemoryKv::new().instance(FaultPlan {
            false_success: 1.0,
            ..Default::default()
        });
        kv.set("k", b"a").unwrap();
        let cas = kv.cas("k").unwrap();
        cas.current().unwrap();
        cas.swap(b"b".to_vec()).unwrap();
        assert_eq!(kv.get("k").unwrap().unwrap(), b"a");
    }

    #[test]
    fn a_stale_write_is_read_as_the_old_value_for_the_next_reads_only() {
        let kv = MemoryKv::new().instance(FaultPlan {
            stale_write: 1.0,
            stale_reads: 2,
            ..Default::default()
        });
        kv.set("k", b"a").unwrap();
        let cas = kv.cas("k").unwrap();
        cas.current().unwrap();
        cas.swap(b"b".to_vec()).unwrap();
        assert_eq!(kv.get("k").unwrap().unwrap(), b"a");
        assert_eq!(kv.cas("k").unwrap().current().unwrap().unwrap(), b"b");
        assert_eq!(kv.get("k").unwrap().unwrap(), b"a");
        assert_eq!(kv.get("k").unwrap().unwrap(), b"b");
    }

    #[test]
    fn increments_can_count_twice_or_fail_whether_or_not_they_landed() {
        let twice = MemoryKv::new().instance(FaultPlan {
            increment_twice: 1.0,
            ..Default::default()
        });
        assert_eq!(twice.increment("c", 1).unwrap(), 2);
        let failing = MemoryKv::new().instance(FaultPlan {
            seed: 3,
            increment_error: 1.0,
            ..Default::default()
        });
        let mut landed = std::collections::BTreeSet::new();
        for _ in 0..16 {
            let before = failing.snapshot().get("c").cloned();
            assert!(failing.increment("c", 1).is_err());
            landed.insert(failing.snapshot().get("c").cloned() != before);
        }
        assert_eq!(landed.len(), 2, "both a landed and a lost failure occur");
    }

    #[test]
    fn a_crashed_instance_fails_every_later_call_but_the_store_lives_on() {
        let store = MemoryKv::new();
        let dying = store.instance(FaultPlan {
            crash_after: Some(1),
            ..Default::default()
        });
        dying.set("k", b"a").unwrap();
        assert!(dying.get("k").is_err());
        assert!(dying.crashed());
        assert_eq!(store.get("k").unwrap().unwrap(), b"a");
    }

    #[test]
    fn increment_counts_from_zero_in_little_endian() {
        let kv = MemoryKv::new();
        assert_eq!(kv.increment("c", 1).unwrap(), 1);
        assert_eq!(kv.increment("c", 2).unwrap(), 3);
        assert_eq!(kv.get("c").unwrap().unwrap(), 3i64.to_le_bytes());
    }
}
