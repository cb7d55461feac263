//! The key-value backend behind `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`.
//!
//! [`HostStore`] is the seam between the WIT bindings (`bindings.rs`) and a
//! backend, so another backend (e.g. a real Redis) can be added without touching
//! the bindings. The backends:
//!
//! - [`MemoryStore`] (the default): Spin's default store's semantics, in memory
//!   (below);
//! - [`sqlite::SqliteStore`] (`--sqlite-path PATH`): Spin 4.0.2's default store
//!   itself, a SQLite database file with Spin's own SQL, connection handling
//!   and transactions, so that benchmarks pay its real cost (its own docs list
//!   the SQL of every call);
//! - [`redis::RedisStore`] (`--redis-url URL`): a real Redis server with Spin's
//!   Redis store behaviour (Spin's `type = "redis"` runtime config; its own docs
//!   say exactly how it behaves).
//!
//! [`MemoryStore`] reproduces, in memory, the semantics of Spin 4.0.2's
//! default SQLite store
//! (`spinframework/spin` `crates/key-value-spin/src/store.rs`) together with the
//! dispatch rules of `crates/factor-key-value/src/host.rs`:
//!
//! - every operation runs under one lock, as Spin's single SQLite connection does;
//! - `increment` reads the value as exactly 8 little-endian bytes (absent = 0),
//!   adds with wrap-around (release build of `i64 +`), writes it back; a value of
//!   any other length makes Spin panic (`expect("incorrect length")`), which the
//!   test host turns into a trap ([`StoreError::HostFault`]);
//! - `Cas::new` takes no snapshot; `current()` reads the value and remembers it;
//!   `swap` is `UPDATE … WHERE value = old` (a true compare, `cas-failed` when no
//!   row changed, including when the key was deleted meanwhile) **only if**
//!   `current()` was called and returned `Some`; otherwise it is an
//!   unconditional upsert (`INSERT … ON CONFLICT DO UPDATE`) that always succeeds;
//! - `list-keys` returns every key (sorted, like the primary-key scan) with no
//!   cursor; `get-many` returns only the keys that exist (sorted, deduplicated),
//!   like the `SELECT … WHERE key IN rarray(…)` it replaces.
//!
//! Not reproduced by [`MemoryStore`]: SQLite persistence across runs (the
//! store lives as long as the `MemoryStore` value; [`sqlite::SqliteStore`] has
//! it), SQLite's cost, and Spin's `max_result_bytes` limits.

pub mod redis;
pub mod sqlite;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

/// Errors of `wasi:keyvalue/store.error`, plus host faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// `no-such-store`: the label is allowed but no backend is defined for it.
    NoSuchStore,
    /// `access-denied`: the component's `key_value_stores` does not list the label.
    AccessDenied,
    /// `other(string)`: a backend error reported to the guest.
    Other(String),
    /// A fault where Spin's host would panic: the guest traps and the request
    /// gets a 500 (never reported to the guest as a value).
    HostFault(String),
}

/// Spin 4.0.2's cap on what its host buffers for a guest (`MAX_HOST_BUFFERED_BYTES` in
/// `spin-world`). Its SQLite, Redis and DynamoDB stores refuse a `list-keys` answer larger
/// than this, so the test host's stores do too: no test can pass on a listing Spin refuses.
pub const MAX_HOST_BUFFERED_BYTES: usize = 128 << 20;

/// A key listing as Spin 4.0.2 hands it over, or its refusal: Spin counts the vector, then
/// for each key a `String` plus the key's bytes, and answers `other("query result exceeds
/// limit of 134217728 bytes")` once the count passes `limit`.
pub fn within_listing_limit(keys: Vec<String>, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut bytes = std::mem::size_of::<Vec<String>>();
    for key in &keys {
        bytes += std::mem::size_of::<String>() + key.len();
        if bytes > limit {
            return Err(StoreError::Other(format!(
                "query result exceeds limit of {limit} bytes"
            )));
        }
    }
    Ok(keys)
}

/// Outcome of a failed `swap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapError {
    /// The compare failed (Spin: zero rows updated).
    CasFailed,
    /// Any other store error.
    Store(StoreError),
}

/// One key-value store (one `key_value_stores` label).
///
/// Methods are `async` so that network backends fit behind the same trait.
#[async_trait]
pub trait HostStore: Send + Sync {
    /// Called by `store.open` after the label's access check, before the
    /// bucket is handed out (Spin: `StoreManager::get` then
    /// `Store::after_open`); an error fails the `open`. Default: nothing
    /// (the SQLite store does nothing there); the Redis store connects and
    /// sends `PING`.
    async fn on_open(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// `bucket.get`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// `bucket.set` (upsert).
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// `bucket.delete` (absent key: no-op).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// `bucket.exists`.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// `bucket.list-keys` without a cursor: all keys.
    async fn list_keys(&self) -> Result<Vec<String>, StoreError>;
    /// `batch.get-many` (called with a non-empty list).
    async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError>;
    /// `batch.set-many` (called with a non-empty list).
    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError>;
    /// `batch.delete-many` (called with a non-empty list).
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError>;
    /// `atomics.increment`: returns the new value.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// `atomics.cas.new`.
    async fn new_cas(&self, key: &str) -> Result<Box<dyn HostCas>, StoreError>;
}

/// One `atomics.cas` handle.
#[async_trait]
pub trait HostCas: Send + Sync {
    /// `cas.current`.
    async fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// `atomics.swap` (the handle is dropped afterwards).
    async fn swap(&mut self, value: Vec<u8>) -> Result<(), SwapError>;
}

/// The stores one component instance may open: Spin's `KeyValueDispatch::open`
/// rule (label not listed → `access-denied`, listed but undefined →
/// `no-such-store`).
#[derive(Clone)]
pub(crate) struct StoreAccess {
    allowed: Arc<HashSet<String>>,
    stores: Arc<BTreeMap<String, Arc<dyn HostStore>>>,
}

impl StoreAccess {
    pub(crate) fn new(
        allowed: Arc<HashSet<String>>,
        stores: Arc<BTreeMap<String, Arc<dyn HostStore>>>,
    ) -> Self {
        Self { allowed, stores }
    }

    pub(crate) fn open(&self, label: &str) -> Result<Arc<dyn HostStore>, StoreError> {
        if !self.allowed.contains(label) {
            return Err(StoreError::AccessDenied);
        }
        self.stores
            .get(label)
            .cloned()
            .ok_or(StoreError::NoSuchStore)
    }
}

/// The counter `increment` finds under `key` in Spin's SQLite store: absent is 0,
/// otherwise exactly 8 little-endian bytes; any other length makes Spin panic
/// (`expect("incorrect length")`), a host fault here.
pub(crate) fn counter(key: &str, value: Option<&[u8]>) -> Result<i64, StoreError> {
    let Some(bytes) = value else {
        return Ok(0);
    };
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::HostFault(format!(
            "increment of {key:?}: stored value is {} bytes, not an 8-byte \
             little-endian i64 (Spin panics: \"incorrect length\")",
            bytes.len()
        ))
    })?;
    Ok(i64::from_le_bytes(bytes))
}

type Entries = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// In-memory store with the semantics of Spin 4.0.2's default SQLite store.
///
/// Cloning shares the data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    entries: Entries,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        lock(&self.entries)
    }
}

fn lock(entries: &Entries) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
    // A panic while holding the lock cannot leave the map half-written.
    entries
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl HostStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().contains_key(key))
    }

    async fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        within_listing_limit(
            self.lock().keys().cloned().collect(),
            MAX_HOST_BUFFERED_BYTES,
        )
    }

    async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        let entries = self.lock();
        let wanted: BTreeSet<String> = keys.into_iter().collect();
        Ok(wanted
            .into_iter()
            .filter_map(|key| {
                let value = entries.get(&key).cloned()?;
                Some((key, Some(value)))
            })
            .collect())
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.lock().extend(entries);
        Ok(())
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let mut entries = self.lock();
        for key in keys {
            entries.remove(&key);
        }
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut entries = self.lock();
        let current = counter(key, entries.get(key).map(Vec::as_slice))?;
        let new_value = current.wrapping_add(delta);
        entries.insert(key.to_owned(), new_value.to_le_bytes().to_vec());
        Ok(new_value)
    }

    async fn new_cas(&self, key: &str) -> Result<Box<dyn HostCas>, StoreError> {
        Ok(Box::new(MemoryCas {
            entries: self.entries.clone(),
            key: key.to_owned(),
            seen: None,
        }))
    }
}

/// Spin's SQLite `CompareAndSwap`: remembers what `current()` last returned.
struct MemoryCas {
    entries: Entries,
    key: String,
    seen: Option<Vec<u8>>,
}

#[async_trait]
impl HostCas for MemoryCas {
    async fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let value = lock(&self.entries).get(&self.key).cloned();
        self.seen.clone_from(&value);
        Ok(value)
    }

    async fn swap(&mut self, value: Vec<u8>) -> Result<(), SwapError> {
        let mut entries = lock(&self.entries);
        match &self.seen {
            // UPDATE … SET value = new WHERE key = k AND value = old
            Some(old) => match entries.get_mut(&self.key) {
                Some(stored) if stored == old => {
                    *stored = value;
                    Ok(())
                }
                _ => Err(SwapError::CasFailed),
            },
            // INSERT … ON CONFLICT(store, key) DO UPDATE SET value = new
            None => {
                entries.insert(self.key.clone(), value);
                Ok(())
            }
        }
    }
}

/// The semantics of Spin's default store as checks, run against every backend that
/// claims them ([`MemoryStore`] and [`sqlite::SqliteStore`]), so the two cannot drift.
#[cfg(test)]
pub(crate) mod spin_semantics {
    use super::*;

    /// Invokes `$each!` with the name of every check, so each backend's tests list
    /// them all.
    macro_rules! every_check {
        ($each:ident) => {
            $each!(
                swap_after_current_compares,
                swap_compares_against_the_latest_current,
                swap_without_current_is_an_unconditional_upsert,
                swap_after_current_saw_no_key_is_an_unconditional_upsert,
                increment_uses_little_endian_i64_and_absent_is_zero,
                crud_list_and_batch,
            );
        };
    }
    pub(crate) use every_check;

    pub(crate) async fn swap_after_current_compares(store: &dyn HostStore) {
        store.set("k", b"v1").await.unwrap();
        let mut unchanged = store.new_cas("k").await.unwrap();
        assert_eq!(unchanged.current().await.unwrap(), Some(b"v1".to_vec()));
        unchanged.swap(b"v2".to_vec()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"v2".to_vec()));

        let mut stale = store.new_cas("k").await.unwrap();
        stale.current().await.unwrap();
        store.set("k", b"theirs").await.unwrap();
        assert_eq!(
            stale.swap(b"lost".to_vec()).await,
            Err(SwapError::CasFailed)
        );
        assert_eq!(store.get("k").await.unwrap(), Some(b"theirs".to_vec()));

        // Deleted after current(): the UPDATE changes no row, so cas-failed.
        let mut gone = store.new_cas("k").await.unwrap();
        gone.current().await.unwrap();
        store.delete("k").await.unwrap();
        assert_eq!(gone.swap(b"x".to_vec()).await, Err(SwapError::CasFailed));
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    pub(crate) async fn swap_compares_against_the_latest_current(store: &dyn HostStore) {
        store.set("k", b"a").await.unwrap();
        let mut cas = store.new_cas("k").await.unwrap();
        cas.current().await.unwrap();
        store.set("k", b"b").await.unwrap();
        assert_eq!(cas.current().await.unwrap(), Some(b"b".to_vec()));
        cas.swap(b"c".to_vec()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"c".to_vec()));
    }

    pub(crate) async fn swap_without_current_is_an_unconditional_upsert(store: &dyn HostStore) {
        store.set("k", b"old").await.unwrap();
        let mut cas = store.new_cas("k").await.unwrap();
        store.set("k", b"changed").await.unwrap();
        cas.swap(b"new".to_vec()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"new".to_vec()));
        // On an absent key, it creates it.
        let mut create = store.new_cas("fresh").await.unwrap();
        create.swap(b"created".to_vec()).await.unwrap();
        assert_eq!(store.get("fresh").await.unwrap(), Some(b"created".to_vec()));
    }

    pub(crate) async fn swap_after_current_saw_no_key_is_an_unconditional_upsert(
        store: &dyn HostStore,
    ) {
        // current() saw "absent", then someone else creates the key, and the swap
        // still succeeds, overwriting it: no compare.
        let mut cas = store.new_cas("k").await.unwrap();
        assert_eq!(cas.current().await.unwrap(), None);
        store.set("k", b"theirs").await.unwrap();
        cas.swap(b"mine".to_vec()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"mine".to_vec()));
    }

    pub(crate) async fn increment_uses_little_endian_i64_and_absent_is_zero(store: &dyn HostStore) {
        assert_eq!(store.increment("n", 1).await, Ok(1));
        assert_eq!(store.increment("n", 2).await, Ok(3));
        assert_eq!(store.increment("n", -10).await, Ok(-7));
        assert_eq!(
            store.get("n").await.unwrap(),
            Some((-7i64).to_le_bytes().to_vec())
        );
        store.set("n", &i64::MAX.to_le_bytes()).await.unwrap();
        assert_eq!(store.increment("n", 1).await, Ok(i64::MIN));
        // Any other length: Spin panics, a host fault here; the value is kept and the
        // store still works.
        store.set("text", b"12").await.unwrap();
        assert!(matches!(
            store.increment("text", 1).await,
            Err(StoreError::HostFault(_))
        ));
        assert_eq!(store.get("text").await.unwrap(), Some(b"12".to_vec()));
        assert_eq!(store.increment("m", 5).await, Ok(5));
    }

    pub(crate) async fn crud_list_and_batch(store: &dyn HostStore) {
        assert!(!store.exists("b").await.unwrap());
        assert_eq!(store.get("b").await.unwrap(), None);
        store.set("b", b"2").await.unwrap();
        store.set("a", b"first").await.unwrap();
        store
            .set_many(vec![
                ("a".into(), b"1".to_vec()),
                ("c".into(), b"3".to_vec()),
            ])
            .await
            .unwrap();
        assert!(store.exists("b").await.unwrap());
        assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.list_keys().await.unwrap(), ["a", "b", "c"]);
        assert_eq!(
            store
                .get_many(vec!["c".into(), "zz".into(), "a".into(), "c".into()])
                .await
                .unwrap(),
            vec![
                ("a".to_owned(), Some(b"1".to_vec())),
                ("c".to_owned(), Some(b"3".to_vec()))
            ]
        );
        assert_eq!(store.get_many(vec!["nope".into()]).await, Ok(vec![]));
        store
            .delete_many(vec!["a".into(), "nope".into()])
            .await
            .unwrap();
        store.delete("c").await.unwrap();
        store.delete("c").await.unwrap();
        assert_eq!(store.list_keys().await.unwrap(), ["b"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_refused_past_spins_buffer_limit_as_spin_counts_it() {
        let keys =
            |lens: &[usize]| -> Vec<String> { lens.iter().map(|n| "k".repeat(*n)).collect() };
        // 24 for the vector, then 24 + length per key (64-bit).
        assert!(within_listing_limit(keys(&[10, 10]), 24 + 34 + 34).is_ok());
        assert_eq!(
            within_listing_limit(keys(&[10, 11]), 24 + 34 + 34),
            Err(StoreError::Other(
                "query result exceeds limit of 92 bytes".to_owned()
            ))
        );
    }

    #[test]
    fn the_memory_store_refuses_a_listing_over_128_mib() {
        block_on(async {
            let store = MemoryStore::new();
            let under = MAX_HOST_BUFFERED_BYTES - 48;
            store.set(&"k".repeat(under), b"v").await.unwrap();
            assert_eq!(store.list_keys().await.unwrap().len(), 1);
            store.set("x", b"v").await.unwrap();
            assert_eq!(
                store.list_keys().await,
                Err(StoreError::Other(
                    "query result exceeds limit of 134217728 bytes".to_owned()
                ))
            );
        });
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    /// Each of `spin_semantics`' checks on a fresh `MemoryStore`.
    macro_rules! memory_store_has {
        ($($check:ident),+ $(,)?) => {$(
            #[test]
            fn $check() {
                block_on(spin_semantics::$check(&MemoryStore::new()));
            }
        )+};
    }

    spin_semantics::every_check!(memory_store_has);

    #[test]
    fn open_checks_the_component_allow_list_first() {
        let stores: BTreeMap<String, Arc<dyn HostStore>> =
            [("default".to_owned(), Arc::new(MemoryStore::new()) as _)].into();
        let access = StoreAccess::new(
            Arc::new(["default".to_owned(), "listed-undefined".to_owned()].into()),
            Arc::new(stores),
        );
        assert!(access.open("default").is_ok());
        assert_eq!(access.open("other").err(), Some(StoreError::AccessDenied));
        assert_eq!(
            access.open("listed-undefined").err(),
            Some(StoreError::NoSuchStore)
        );

        let nothing_listed = StoreAccess::new(Arc::default(), access.stores.clone());
        assert_eq!(
            nothing_listed.open("default").err(),
            Some(StoreError::AccessDenied)
        );
    }
}
