//! The domain's [`KeyValueStore`] port over a Spin SQLite key-value file, for filling a
//! store natively (the `scale` scenario): the file `spin up` serves afterwards, written
//! by the same domain code, so it holds the records, indexes and key formats the
//! components expect.
//!
//! Schema and statements are Spin 4.0.2's (`crates/key-value-spin/src/store.rs`, as
//! reproduced by `tests/host/src/store/sqlite.rs`): the table `spin_key_value (store,
//! key, value)`, the `SELECT value …` read, the `INSERT … ON CONFLICT … DO UPDATE`
//! upsert, and the `UPDATE … WHERE … value=:old_value` compare. Their semantics are
//! Spin's: a swap after `current()` saw a value is a true compare; any other swap is an
//! unconditional upsert; `increment` keeps 8 little-endian bytes.
//!
//! Unlike Spin, which commits every call on its own (rollback journal, full sync), a
//! filling store groups [`FillOptions::batch`] calls per transaction, with the WAL
//! journal and `synchronous=OFF`: one writer, nobody else reading, and a crash only
//! loses a fill that is redone anyway. [`SqliteKv::finish`] commits, folds the WAL
//! back and returns the file to SQLite's default rollback journal, as Spin leaves it.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, named_params, params};
use stock_domain::ports::{CasHandle, KeyValueStore, KvError, SwapError};

/// Spin's table, with Spin's text.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
                           store TEXT NOT NULL,
                           key   TEXT NOT NULL,
                           value BLOB NOT NULL,

                           PRIMARY KEY (store, key)
                        )";

const SELECT_VALUE: &str = "SELECT value FROM spin_key_value WHERE store=$1 AND key=$2";

const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3";

const DELETE: &str = "DELETE FROM spin_key_value WHERE store=$1 AND key=$2";

const COMPARE_AND_UPDATE: &str = "UPDATE spin_key_value SET value=:new_value WHERE store=:name and key=:key and value=:old_value";

/// How a store file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillOptions {
    /// Store calls per transaction (1: every call commits on its own, as in Spin).
    pub batch: u64,
    /// WAL journal and `synchronous=OFF` while the store is open.
    pub fast: bool,
}

impl FillOptions {
    /// Many calls per transaction, WAL, no syncs: for filling a file nobody reads yet.
    pub const FAST: Self = Self {
        batch: 20_000,
        fast: true,
    };
}

struct Inner {
    connection: Connection,
    options: FillOptions,
    /// Calls made in the open transaction, if one is open.
    pending: Option<u64>,
}

impl Inner {
    /// The connection, inside a transaction when batching; commits every `batch` calls.
    fn call(&mut self) -> Result<&Connection, KvError> {
        if self.options.batch > 1 {
            match &mut self.pending {
                Some(calls) if *calls >= self.options.batch => {
                    self.connection
                        .execute_batch("COMMIT; BEGIN")
                        .map_err(store)?;
                    self.pending = Some(1);
                }
                Some(calls) => *calls += 1,
                None => {
                    self.connection.execute_batch("BEGIN").map_err(store)?;
                    self.pending = Some(1);
                }
            }
        }
        Ok(&self.connection)
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        if self.pending.take().is_some() {
            self.connection.execute_batch("COMMIT")?;
        }
        Ok(())
    }
}

fn store(error: rusqlite::Error) -> KvError {
    KvError::Store(anyhow::Error::new(error))
}

/// The store labelled `name` in a Spin SQLite key-value file, for one thread. Clones
/// share the connection.
#[derive(Clone)]
pub struct SqliteKv {
    name: Rc<str>,
    inner: Rc<RefCell<Inner>>,
}

impl SqliteKv {
    /// Opens (creating it and Spin's table if needed) the file at `path` and serves the
    /// store labelled `name` (`"default"` for Spin's `default` store).
    pub fn open(path: &Path, name: &str, options: FillOptions) -> anyhow::Result<Self> {
        let connection = Connection::open(path)
            .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        if options.fast {
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "OFF")?;
            // 512 MiB of page cache: the fill revisits every product once per round.
            connection.pragma_update(None, "cache_size", -524_288)?;
        }
        connection
            .execute(CREATE_TABLE, [])
            .with_context(|| format!("cannot create spin_key_value in {}", path.display()))?;
        Ok(Self {
            name: name.into(),
            inner: Rc::new(RefCell::new(Inner {
                connection,
                options,
                pending: None,
            })),
        })
    }

    /// Commits what is pending, and after a fast fill folds the WAL into the file and
    /// returns it to SQLite's default journal (`DELETE`) and sync (`FULL`), so that the
    /// file is as Spin would have left it.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.commit()?;
        if inner.options.fast {
            inner
                .connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            inner
                .connection
                .pragma_update(None, "journal_mode", "DELETE")?;
            inner
                .connection
                .pragma_update(None, "synchronous", "FULL")?;
        }
        Ok(())
    }

    /// `SELECT count(*) FROM spin_key_value`: every key of every store in the file
    /// (after committing what is pending).
    pub fn count_keys(&self) -> anyhow::Result<u64> {
        let mut inner = self.inner.borrow_mut();
        inner.commit()?;
        let count: i64 =
            inner
                .connection
                .query_row("SELECT count(*) FROM spin_key_value", [], |row| row.get(0))?;
        Ok(u64::try_from(count)?)
    }

    fn select(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut inner = self.inner.borrow_mut();
        inner
            .call()?
            .prepare_cached(SELECT_VALUE)
            .map_err(store)?
            .query_row(params![&*self.name, key], |row| row.get::<_, Vec<u8>>(0))
            .optional()
            .map_err(store)
    }

    fn upsert(connection: &Connection, name: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        connection
            .prepare_cached(UPSERT)
            .map_err(store)?
            .execute(params![name, key, value])
            .map_err(store)
            .map(drop)
    }
}

impl KeyValueStore for SqliteKv {
    type Cas = SqliteCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.select(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let mut inner = self.inner.borrow_mut();
        Self::upsert(inner.call()?, &self.name, key, value)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let mut inner = self.inner.borrow_mut();
        let connection = inner.call()?;
        for (key, value) in entries {
            Self::upsert(connection, &self.name, key, value)?;
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let mut inner = self.inner.borrow_mut();
        let connection = inner.call()?;
        for key in keys {
            connection
                .prepare_cached(DELETE)
                .map_err(store)?
                .execute(params![self.name, key])
                .map_err(store)?;
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let current = match self.select(key)? {
            None => 0,
            Some(bytes) => i64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                KvError::Store(anyhow::anyhow!("{key} does not hold an 8-byte counter"))
            })?),
        };
        let new_value = current.wrapping_add(delta);
        self.set(key, &new_value.to_le_bytes())?;
        Ok(new_value)
    }

    fn cas(&self, key: &str) -> Result<SqliteCas, KvError> {
        Ok(SqliteCas {
            kv: self.clone(),
            key: key.to_owned(),
            seen: RefCell::new(None),
        })
    }
}

/// Spin's SQLite compare-and-swap: remembers what `current()` last returned.
pub struct SqliteCas {
    kv: SqliteKv,
    key: String,
    seen: RefCell<Option<Vec<u8>>>,
}

impl CasHandle for SqliteCas {
    fn current(&self) -> Result<Option<Vec<u8>>, KvError> {
        let value = self.kv.select(&self.key)?;
        self.seen.replace(value.clone());
        Ok(value)
    }

    fn swap(self, value: Vec<u8>) -> Result<(), SwapError> {
        let mut inner = self.kv.inner.borrow_mut();
        let connection = inner.call()?;
        match self.seen.into_inner() {
            Some(old_value) => {
                let rows = connection
                    .prepare_cached(COMPARE_AND_UPDATE)
                    .map_err(store)?
                    .execute(named_params! {
                        ":name": &*self.kv.name,
                        ":key": self.key,
                        ":old_value": old_value,
                        ":new_value": value,
                    })
                    .map_err(store)?;
                if rows == 1 {
                    Ok(())
                } else {
                    Err(SwapError::CasFailed)
                }
            }
            None => Ok(SqliteKv::upsert(
                connection,
                &self.kv.name,
                &self.key,
                &value,
            )?),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A database file in a fresh temporary directory, removed with it.
    struct TempDb {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl TempDb {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kv.db");
            Self { _dir: dir, path }
        }

        fn open(&self, options: FillOptions) -> SqliteKv {
            SqliteKv::open(&self.path, "default", options).unwrap()
        }
    }

    const ONE_BY_ONE: FillOptions = FillOptions {
        batch: 1,
        fast: false,
    };
    const SMALL_BATCHES: FillOptions = FillOptions {
        batch: 3,
        fast: true,
    };

    /// The port's contract, as Spin's SQLite store keeps it.
    fn keeps_the_contract(kv: &SqliteKv) {
        assert_eq!(kv.get("absent").unwrap(), None);
        kv.set("k", b"one").unwrap();
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"one"[..]));
        kv.set("k", b"two").unwrap();
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"two"[..]));

        kv.set_many(&[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])
            .unwrap();
        assert_eq!(kv.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.get("b").unwrap().as_deref(), Some(&b"2"[..]));

        assert_eq!(kv.increment("n", 5).unwrap(), 5);
        assert_eq!(kv.increment("n", -2).unwrap(), 3);
        assert_eq!(kv.get("n").unwrap(), Some(3i64.to_le_bytes().to_vec()));
        assert!(kv.increment("k", 1).is_err(), "not a counter");
        kv.set("max", &i64::MAX.to_le_bytes()).unwrap();
        assert_eq!(kv.increment("max", 1).unwrap(), i64::MIN, "wraps like Spin");

        // A swap after reading a value compares.
        let cas = kv.cas("k").unwrap();
        assert_eq!(cas.current().unwrap().as_deref(), Some(&b"two"[..]));
        cas.swap(b"three".to_vec()).unwrap();
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"three"[..]));
        let stale = kv.cas("k").unwrap();
        stale.current().unwrap();
        kv.set("k", b"other").unwrap();
        assert!(matches!(
            stale.swap(b"lost".to_vec()),
            Err(SwapError::CasFailed)
        ));
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"other"[..]));

        // A swap on an absent key, or without `current()`, is an upsert.
        let fresh = kv.cas("new").unwrap();
        assert_eq!(fresh.current().unwrap(), None);
        kv.set("new", b"meanwhile").unwrap();
        fresh.swap(b"mine".to_vec()).unwrap();
        assert_eq!(kv.get("new").unwrap().as_deref(), Some(&b"mine"[..]));
        kv.cas("k").unwrap().swap(b"blind".to_vec()).unwrap();
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"blind"[..]));

        // Deleting removes the keys named, absent ones included, and nothing else.
        kv.delete_many(&["k".to_owned(), "never".to_owned()])
            .unwrap();
        assert_eq!(kv.get("k").unwrap(), None);
        assert_eq!(kv.get("new").unwrap().as_deref(), Some(&b"mine"[..]));
    }

    #[test]
    fn one_call_per_transaction_keeps_the_contract() {
        let db = TempDb::new();
        keeps_the_contract(&db.open(ONE_BY_ONE));
    }

    #[test]
    fn batched_transactions_keep_the_contract() {
        let db = TempDb::new();
        let kv = db.open(SMALL_BATCHES);
        keeps_the_contract(&kv);
        kv.finish().unwrap();
    }

    #[test]
    fn a_finished_fill_is_in_the_file_with_spins_schema_and_journal() {
        let db = TempDb::new();
        {
            let kv = db.open(SMALL_BATCHES);
            for i in 0..10 {
                kv.set(&format!("key/{i}"), b"v").unwrap();
            }
            assert_eq!(kv.count_keys().unwrap(), 10);
            kv.finish().unwrap();
        }
        let connection = Connection::open(&db.path).unwrap();
        let journal: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(journal, "delete");
        let schema: String = connection
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'spin_key_value'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(schema, CREATE_TABLE.replace("IF NOT EXISTS ", ""));
        let stored: i64 = connection
            .query_row(
                "SELECT count(*) FROM spin_key_value WHERE store = 'default'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored, 10);
        let reopened = db.open(ONE_BY_ONE);
        assert_eq!(reopened.get("key/9").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn labels_share_the_file_but_not_the_keys() {
        let db = TempDb::new();
        let default = db.open(ONE_BY_ONE);
        let other = SqliteKv::open(&db.path, "other", ONE_BY_ONE).unwrap();
        default.set("k", b"default").unwrap();
        other.set("k", b"other").unwrap();
        assert_eq!(default.get("k").unwrap().as_deref(), Some(&b"default"[..]));
        assert_eq!(other.get("k").unwrap().as_deref(), Some(&b"other"[..]));
        assert_eq!(default.count_keys().unwrap(), 2);
    }
}
