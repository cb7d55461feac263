//! A [`HostStore`] that *is* Spin 4.0.2's default key-value store: a real
//! SQLite database file, with Spin's own SQL, connection handling and
//! transaction boundaries (`spinframework/spin`
//! `crates/key-value-spin/src/store.rs`, the store `spin up` puts in
//! `.spin/sqlite_key_value.db`), selected with `stock-test-host --sqlite-path
//! PATH`.
//!
//! [`MemoryStore`](super::MemoryStore) reproduces the *semantics* of that
//! store; this backend also pays its *cost*, so that benchmarks on the test
//! host see what Spin's default store costs: every write is a SQLite
//! transaction on a file, with SQLite's defaults (rollback journal
//! `journal_mode=DELETE`, `synchronous=FULL`: the journal is created, synced
//! and deleted, and the database synced, on every commit), because Spin sets
//! no `PRAGMA`.
//!
//! # Connection
//!
//! Like Spin's `KeyValueSqlite`: one `rusqlite::Connection` per database,
//! opened with `Connection::open(path)` (rusqlite's defaults: read-write,
//! create, URI filenames, no SQLite mutex, a 5 s busy timeout), bundled
//! SQLite, then `CREATE TABLE IF NOT EXISTS spin_key_value (store, key, value,
//! PRIMARY KEY (store, key))` with Spin's exact text (so a file written by
//! Spin can be read here and the other way round), then rusqlite's `rarray`
//! module. The connection sits behind one `Arc<Mutex<Connection>>`, and every
//! call takes that mutex inside `tokio::task::block_in_place`, using
//! `prepare_cached` statements: calls are serialised, and each one blocks its
//! Tokio worker (so the store needs a multi-thread runtime, as the test host
//! and Spin have). The `store` column holds the store label.
//!
//! # SQL per call
//!
//! | `wasi:keyvalue` call | SQL | transaction |
//! |---|---|---|
//! | `store.open` | none (Spin's `StoreManager::get` still runs a `block_in_place`) | |
//! | `get`, `exists` | `SELECT value FROM spin_key_value WHERE store=$1 AND key=$2` | autocommit |
//! | `set` | `INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3) ON CONFLICT(store, key) DO UPDATE SET value=$3` | autocommit |
//! | `delete` | `DELETE FROM spin_key_value WHERE store=$1 AND key=$2` | autocommit |
//! | `list-keys` | `SELECT key FROM spin_key_value WHERE store=$1` | autocommit |
//! | `get-many` | `SELECT key, value FROM spin_key_value WHERE store=:name AND key IN rarray(:keys)` | autocommit |
//! | `set-many` | the upsert, once per entry | one `BEGIN … COMMIT` |
//! | `delete-many` | `DELETE FROM spin_key_value WHERE store=:name AND key IN rarray(:keys)` | autocommit |
//! | `increment` | the `SELECT`, then the upsert | one `BEGIN … COMMIT` |
//! | `cas.new` | none | |
//! | `cas.current` | the `SELECT` (the value is remembered) | autocommit |
//! | `swap` after `current` returned `Some(old)` | `UPDATE spin_key_value SET value=:new_value WHERE store=:name and key=:key and value=:old_value` | autocommit |
//! | `swap` otherwise | the upsert | one `BEGIN … COMMIT` |
//!
//! # What that means
//!
//! The same as [`MemoryStore`](super::MemoryStore) (see [`super`]): `swap`
//! after `current()` saw a value is a true compare (`cas-failed` when no row
//! changed: the value changed or the key was deleted); a `swap` without
//! `current()`, or after `current()` saw no key, is an unconditional upsert
//! that always succeeds; `increment` reads exactly 8 little-endian bytes
//! (absent = 0) and wraps on overflow (Spin's `i64 +` in a release build).
//! `list-keys` and `get-many` have no `ORDER BY`: SQLite walks the
//! `(store, key)` primary-key index, so keys come back sorted (and `get-many`
//! deduplicated, absent keys left out). Data persists in the file across runs.
//! SQLite errors are `other("<Debug of the rusqlite error>")`, like Spin's
//! `log_error`.
//!
//! # Not reproduced
//!
//! - A non-8-byte value makes Spin's `increment` panic (`expect("incorrect
//!   length")`) while it holds the connection mutex: the transaction rolls
//!   back, the request traps, and the mutex is *poisoned*, so in Spin every
//!   later key-value call of the process panics too (`lock().unwrap()`). Here
//!   the call is a [`StoreError::HostFault`] (the request traps, the
//!   transaction rolls back) and the store keeps working, as with
//!   [`MemoryStore`](super::MemoryStore).
//! - The connection is opened by [`SqliteStore::open`] (errors at start-up),
//!   not lazily by the first `store.open` (Spin: an `other` error then).
//! - `max_result_bytes` limits (absent from [`HostStore`] for every backend),
//!   Spin's `tracing` warnings, the in-memory `DatabaseLocation`.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{Connection, named_params};
use tokio::task::block_in_place;

use super::{
    HostCas, HostStore, MAX_HOST_BUFFERED_BYTES, StoreError, SwapError, within_listing_limit,
};

/// Spin's table, with Spin's text (stored verbatim in `sqlite_schema`).
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
                           store TEXT NOT NULL,
                           key   TEXT NOT NULL,
                           value BLOB NOT NULL,

                           PRIMARY KEY (store, key)
                        )";

const SELECT_VALUE: &str = "SELECT value FROM spin_key_value WHERE store=$1 AND key=$2";

/// Spin's upsert (`set`, `set-many`, `increment`, `swap` without a compare),
/// with Spin's line break, so that all of them share one cached statement.
const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3";

const DELETE: &str = "DELETE FROM spin_key_value WHERE store=$1 AND key=$2";

const SELECT_KEYS: &str = "SELECT key FROM spin_key_value WHERE store=$1";

const SELECT_MANY: &str =
    "SELECT key, value FROM spin_key_value WHERE store=:name AND key IN rarray(:keys)";

const DELETE_MANY: &str = "DELETE FROM spin_key_value WHERE store=:name AND key IN rarray(:keys)";

const COMPARE_AND_UPDATE: &str = "UPDATE spin_key_value SET value=:new_value WHERE store=:name and key=:key and value=:old_value";

type SharedConnection = Arc<Mutex<Connection>>;

/// One store (one label) in a SQLite database file: Spin's default
/// key-value store.
///
/// Cloning shares the connection.
#[derive(Clone)]
pub struct SqliteStore {
    name: String,
    path: PathBuf,
    connection: SharedConnection,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path` as Spin
    /// does, and serves the store labelled `name` (`"default"` for the
    /// `default` store) from it. A relative path is relative to the current
    /// directory; the directory must exist.
    pub fn open(path: impl AsRef<Path>, name: &str) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let connection = Connection::open(path)
            .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        connection
            .execute(CREATE_TABLE, [])
            .with_context(|| format!("cannot create spin_key_value in {}", path.display()))?;
        // The array module is needed for `rarray` in `get-many`/`delete-many`.
        rusqlite::vtab::array::load_module(&connection)?;
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// The database file given to [`SqliteStore::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store label (the `store` column).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Takes the connection mutex. Nothing panics while holding it (a value
/// that is not 8 bytes is a `HostFault` here, not Spin's panic), and a
/// dropped `Transaction` rolls back, so a poisoned lock still holds a
/// consistent connection.
fn lock(connection: &SharedConnection) -> MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Spin's `log_error`: the error's `Debug` text as `other`.
fn log_error(error: impl std::fmt::Debug) -> StoreError {
    StoreError::Other(format!("{error:?}"))
}

/// Spin's `log_cas_error`: the same, as a swap error.
fn log_cas_error(error: impl std::fmt::Debug) -> SwapError {
    SwapError::Store(log_error(error))
}

/// The `SELECT value …` of `get`, `increment` and `cas.current`.
fn select_value(
    connection: &Connection,
    name: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    connection
        .prepare_cached(SELECT_VALUE)
        .map_err(log_error)?
        .query_map([name, key], |row| row.get::<_, Vec<u8>>(0))
        .map_err(log_error)?
        .next()
        .transpose()
        .map_err(log_error)
}

/// `rarray(:keys)`'s parameter.
fn key_array(keys: Vec<String>) -> rusqlite::vtab::array::Array {
    Rc::new(keys.into_iter().map(rusqlite::types::Value::from).collect())
}

#[async_trait]
impl HostStore for SqliteStore {
    async fn on_open(&self) -> Result<(), StoreError> {
        // Spin's `KeyValueSqlite::get` fetches the (already created)
        // connection inside `block_in_place` on every `open`.
        block_in_place(|| drop(self.connection.clone()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        block_in_place(|| select_value(&lock(&self.connection), &self.name, key))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        block_in_place(|| {
            lock(&self.connection)
                .prepare_cached(UPSERT)
                .map_err(log_error)?
                .execute(rusqlite::params![&self.name, key, value])
                .map_err(log_error)
                .map(drop)
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        block_in_place(|| {
            lock(&self.connection)
                .prepare_cached(DELETE)
                .map_err(log_error)?
                .execute([self.name.as_str(), key])
                .map_err(log_error)
                .map(drop)
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(key).await?.is_some())
    }

    async fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        block_in_place(|| {
            lock(&self.connection)
                .prepare_cached(SELECT_KEYS)
                .map_err(log_error)?
                .query_map([&self.name], |row| row.get::<_, String>(0))
                .map_err(log_error)?
                .map(|key| key.map_err(log_error))
                .collect::<Result<Vec<_>, _>>()
        })
        .and_then(|keys| within_listing_limit(keys, MAX_HOST_BUFFERED_BYTES))
    }

    async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        block_in_place(|| {
            let keys = key_array(keys);
            lock(&self.connection)
                .prepare_cached(SELECT_MANY)
                .map_err(log_error)?
                .query_map(named_params! {":name": &self.name, ":keys": keys}, |row| {
                    <(String, Option<Vec<u8>>)>::try_from(row)
                })
                .map_err(log_error)?
                .map(|row| row.map_err(log_error))
                .collect()
        })
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        block_in_place(|| {
            let mut connection = lock(&self.connection);
            let transaction = connection.transaction().map_err(log_error)?;
            for (key, value) in entries {
                transaction
                    .prepare_cached(UPSERT)
                    .map_err(log_error)?
                    .execute(rusqlite::params![&self.name, key, value])
                    .map_err(log_error)?;
            }
            transaction.commit().map_err(log_error)
        })
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        block_in_place(|| {
            let keys = key_array(keys);
            lock(&self.connection)
                .prepare_cached(DELETE_MANY)
                .map_err(log_error)?
                .execute(named_params! {":name": &self.name, ":keys": keys})
                .map_err(log_error)
                .map(drop)
        })
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        block_in_place(|| {
            let mut connection = lock(&self.connection);
            let transaction = connection.transaction().map_err(log_error)?;
            // On a bad length Spin panics; returning drops `transaction`, which rolls
            // back, as the unwind does.
            let stored = select_value(&transaction, &self.name, key)?;
            let current = super::counter(key, stored.as_deref())?;
            let new_value = current.wrapping_add(delta);
            transaction
                .prepare_cached(UPSERT)
                .map_err(log_error)?
                .execute(rusqlite::params![&self.name, key, new_value.to_le_bytes()])
                .map_err(log_error)?;
            transaction.commit().map_err(log_error)?;
            Ok(new_value)
        })
    }

    async fn new_cas(&self, key: &str) -> Result<Box<dyn HostCas>, StoreError> {
        Ok(Box::new(SqliteCas {
            name: self.name.clone(),
            key: key.to_owned(),
            value: None,
            connection: self.connection.clone(),
        }))
    }
}

/// Spin's SQLite `CompareAndSwap`: remembers what `current()` last returned.
struct SqliteCas {
    name: String,
    key: String,
    value: Option<Vec<u8>>,
    connection: SharedConnection,
}

#[async_trait]
impl HostCas for SqliteCas {
    async fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        block_in_place(|| {
            let value = select_value(&lock(&self.connection), &self.name, &self.key)?;
            self.value.clone_from(&value);
            Ok(value)
        })
    }

    async fn swap(&mut self, value: Vec<u8>) -> Result<(), SwapError> {
        block_in_place(|| {
            let mut connection = lock(&self.connection);
            let rows_changed = match self.value.clone() {
                Some(old_value) => connection
                    .prepare_cached(COMPARE_AND_UPDATE)
                    .map_err(log_cas_error)?
                    .execute(named_params! {
                        ":name": &self.name,
                        ":key": self.key,
                        ":old_value": old_value,
                        ":new_value": value,
                    })
                    .map_err(log_cas_error)?,
                None => {
                    let transaction = connection.transaction().map_err(log_cas_error)?;
                    let rows = transaction
                        .prepare_cached(UPSERT)
                        .map_err(log_cas_error)?
                        .execute(rusqlite::params![&self.name, self.key, value])
                        .map_err(log_cas_error)?;
                    transaction.commit().map_err(log_cas_error)?;
                    rows
                }
            };
            // Spin: exactly one row updated, else the value changed meanwhile.
            if rows_changed == 1 {
                Ok(())
            } else {
                Err(SwapError::CasFailed)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A database file in the system temp directory, removed (with its
    /// journal) when dropped.
    struct TempDatabase(PathBuf);

    impl TempDatabase {
        fn new(test: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Self(std::env::temp_dir().join(format!(
                "stock-test-host-{test}-{}-{nanos}-{}.db",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )))
        }

        fn open(&self) -> SqliteStore {
            SqliteStore::open(&self.0, "default").expect("open the test database")
        }
    }

    impl Drop for TempDatabase {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let mut journal = self.0.clone().into_os_string();
            journal.push("-journal");
            let _ = std::fs::remove_file(journal);
        }
    }

    /// Each of the store contract's checks (`super::super::spin_semantics`) on a fresh
    /// database file.
    macro_rules! sqlite_store_has {
        ($($check:ident),+ $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread")]
            async fn $check() {
                let db = TempDatabase::new(stringify!($check));
                super::super::spin_semantics::$check(&db.open()).await;
            }
        )+};
    }

    super::super::spin_semantics::every_check!(sqlite_store_has);

    #[tokio::test(flavor = "multi_thread")]
    async fn data_persists_across_two_opens_of_the_same_file() {
        let db = TempDatabase::new("persist");
        {
            let store = db.open();
            store.set("kept", b"value").await.unwrap();
            assert_eq!(store.increment("n", 41).await, Ok(41));
        }
        let reopened = db.open();
        assert_eq!(reopened.get("kept").await.unwrap(), Some(b"value".to_vec()));
        assert_eq!(reopened.increment("n", 1).await, Ok(42));
        assert_eq!(reopened.list_keys().await.unwrap(), ["kept", "n"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn labels_share_the_file_but_not_the_keys() {
        let db = TempDatabase::new("labels");
        let default = db.open();
        let other = SqliteStore::open(&db.0, "other").unwrap();
        default.set("k", b"default").await.unwrap();
        other.set("k", b"other").await.unwrap();
        assert_eq!(default.get("k").await.unwrap(), Some(b"default".to_vec()));
        assert_eq!(other.get("k").await.unwrap(), Some(b"other".to_vec()));
        other.delete_many(vec!["k".into()]).await.unwrap();
        assert_eq!(default.list_keys().await.unwrap(), ["k"]);
        assert_eq!(other.list_keys().await.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn the_file_has_spins_schema_and_sqlites_default_journal_and_sync() {
        let db = TempDatabase::new("schema");
        let store = db.open();
        let connection = lock(&store.connection);
        let schema: String = connection
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'spin_key_value'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(schema, CREATE_TABLE.replace("IF NOT EXISTS ", ""));
        let journal_mode: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(journal_mode, "delete");
        let synchronous: i64 = connection
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
    }

    #[test]
    fn opening_a_file_in_a_missing_directory_fails() {
        let db = TempDatabase::new("missing-dir");
        assert!(SqliteStore::open(db.0.join("no/such.db"), "default").is_err());
    }
}
