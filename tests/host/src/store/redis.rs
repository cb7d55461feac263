//! A [`HostStore`] over a real Redis server, with exactly the behaviour of Spin
//! 4.0.2's Redis key-value store (`spinframework/spin`
//! `crates/key-value-redis/src/store.rs`, runtime config
//! `[key_value_store.default] type = "redis"`), so that the real components can
//! be run on several test-host nodes sharing one store (`stock-test-host
//! --redis-url redis://127.0.0.1:PORT`).
//!
//! Same crate, line and connection type as Spin (`redis` 0.32, an async
//! `ConnectionManager` on Tokio), same calls, so the same bytes go on the wire
//! (including the `CLIENT SETINFO LIB-NAME/LIB-VER` handshake of every new
//! connection).
//!
//! # Commands issued per call
//!
//! One shared connection per store (Spin: one per `KeyValueRedis`, created
//! lazily by the first `open`), multiplexed across all requests:
//!
//! | `wasi:keyvalue` call | Redis commands | answer |
//! |---|---|---|
//! | `store.open` | (connect on first use) `PING` | a failed `PING` is ignored |
//! | `get` | `GET k` | bulk or nil |
//! | `set` | `SET k v` | |
//! | `delete` | `DEL k` | absent key: no-op |
//! | `exists` | `EXISTS k` | |
//! | `list-keys` (no cursor) | `KEYS *` | unsorted, every key of the database |
//! | `get-many` | `KEYS k1 k2 …` (sic) | see below |
//! | `set-many` | `MSET k1 v1 k2 v2 …` | |
//! | `delete-many` | `DEL k1 k2 …` | |
//! | `increment` | `INCRBY k delta` | the value is stored as ASCII decimal |
//!
//! A dedicated connection per CAS handle (Spin: "transactions are scoped to a
//! connection"), opened by `cas.new` (a new TCP connection and its handshake):
//!
//! | `atomics` call | Redis commands on the CAS connection |
//! |---|---|
//! | `cas.new` | connect (`CLIENT SETINFO` ×2) |
//! | `cas.current` | `WATCH k`, then `GET k` |
//! | `swap` | `MULTI`, `SET k v`, `EXEC` (one pipelined write), then `UNWATCH k` |
//!
//! # What that means (SPEC §5)
//!
//! - **Every `swap` is reported as `cas-failed`.** `UNWATCH` takes no argument,
//!   so Redis rejects `UNWATCH k` (`ERR wrong number of arguments`), and Spin
//!   maps that error to `CasFailed` *after* the transaction ran: a write that
//!   landed is reported as failed.
//! - **An aborted transaction is not reported as such.** When the watched key
//!   changed after `current()`, `EXEC` answers nil; the `redis` crate turns a
//!   nil `EXEC` into `Ok(())` for a `()` result, so only the `UNWATCH` error
//!   says anything, and it says the same `CasFailed` as for a write that
//!   landed. A guest cannot tell the two apart without re-reading.
//! - The compare itself is sound where it runs: after `current()`, `WATCH`
//!   makes `EXEC` abort if the key was written (or created, or deleted) in
//!   between, including for a key that was absent (unlike the SQLite store's
//!   unconditional upsert). A `swap` without `current()` is an unconditional
//!   `SET` (still reported as `CasFailed`).
//! - On `CasFailed` the host opens a *new* CAS (a new connection) and calls
//!   `current()` on it (`WATCH` + `GET`) before handing it to the guest
//!   (`bindings.rs`, as Spin's `factor-key-value` does); the swapped handle,
//!   and so its connection, lives until the component instance ends, because
//!   Spin never removes a swapped CAS from its table.
//! - `increment` is `INCRBY`: the counter is ASCII decimal (`b"3"`), not the
//!   8 little-endian bytes of the SQLite store; a non-integer value is an
//!   `other` error (the SQLite store traps), overflow too.
//! - `get-many` sends `KEYS` with the key list, as Spin does: with two or more
//!   keys Redis rejects it (`wrong number of arguments`, an `other` error);
//!   with one key it is a glob *pattern*, and the matching key *names* (not
//!   values) are parsed as `(key, value)` pairs: none matches → an empty
//!   list; an even number → pairs of names; an odd number → the `redis`
//!   crate panics (`unreachable!`) inside Spin's host. Here that panic is
//!   caught and becomes a trap (the request gets a 500). No component of
//!   this repository calls `get-many`.
//! - Errors are `other("<Debug of the RedisError>")`, like Spin's `log_error`.
//!
//! # Not reproduced
//!
//! - `max_result_bytes` limits on `get`/`list-keys`/`current` (absent from
//!   [`HostStore`] for every backend), Spin's `tracing` warnings.
//! - TLS (`rediss://`): built without the `tokio-native-tls-comp` feature, so
//!   such a URL fails at the first call.
//! - Spin's per-instance table capacity (256 CAS handles, swapped ones never
//!   freed): a request that made more than 256 CAS handles gets
//!   `too many compare_and_swaps opened` from Spin, not here.
//!
//! The connections are opened on the Tokio runtime of the first call, so one
//! [`RedisStore`] value must be used from one runtime (one test host); several
//! nodes each get their own value (or their own process).

use std::io::Write;

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Client, RedisError};
use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{
    HostCas, HostStore, MAX_HOST_BUFFERED_BYTES, StoreError, SwapError, within_listing_limit,
};

/// The `default` store on a Redis server (Spin runtime config `type = "redis"`).
pub struct RedisStore {
    url: String,
    connection: OnceCell<ConnectionManager>,
}

impl RedisStore {
    /// Checks the URL as Spin does (`redis://`, `rediss://`, `valkey://`,
    /// `unix://`…; otherwise "Invalid Redis URL"); connects on first use.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let database_url = ::redis::parse_redis_url(url).context("Invalid Redis URL")?;
        Ok(Self {
            url: database_url.to_string(),
            connection: OnceCell::new(),
        })
    }

    /// The URL given to [`RedisStore::new`] (normalised).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The shared connection (Spin: `StoreManager::get`, on every `open`).
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        self.connection
            .get_or_try_init(|| async {
                Client::open(self.url.as_str())?
                    .get_connection_manager()
                    .await
            })
            .await
            .cloned()
            .map_err(log_error)
    }
}

/// Spin's `log_error`: the error's `Debug` text as `other`.
fn log_error(error: impl std::fmt::Debug) -> StoreError {
    StoreError::Other(format!("{error:?}"))
}

#[async_trait]
impl HostStore for RedisStore {
    async fn on_open(&self) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        // Spin's `after_open`: on an IO error the ConnectionManager reconnects
        // in the background, and the error is ignored.
        let _ = connection.ping::<()>().await;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.connection()
            .await?
            .get::<_, Option<Vec<u8>>>(key)
            .await
            .map_err(log_error)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.connection()
            .await?
            .set::<_, _, ()>(key, value)
            .await
            .map_err(log_error)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.connection()
            .await?
            .del::<_, ()>(key)
            .await
            .map_err(log_error)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.connection()
            .await?
            .exists::<_, bool>(key)
            .await
            .map_err(log_error)
    }

    async fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        self.connection()
            .await?
            .keys::<_, Vec<String>>("*")
            .await
            .map_err(log_error)
            .and_then(|keys| within_listing_limit(keys, MAX_HOST_BUFFERED_BYTES))
    }

    async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        // Spin sends `KEYS` here, not `MGET` (see the module docs), and parses
        // the reply as `Vec<(String, Option<Vec<u8>>)>`: the same command, then
        // the same parse of the same reply, where its panic can be caught.
        let reply = self
            .connection()
            .await?
            .keys::<_, ::redis::Value>(keys)
            .await
            .map_err(log_error)?;
        std::panic::catch_unwind(move || {
            ::redis::from_owned_redis_value::<Vec<(String, Option<Vec<u8>>)>>(reply)
        })
        .map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            StoreError::HostFault(format!(
                "get-many: the redis crate panicked parsing the KEYS reply ({message}); \
                 Spin's host panics the same way"
            ))
        })?
        .map_err(log_error)
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.connection()
            .await?
            .mset::<_, _, ()>(&entries)
            .await
            .map_err(log_error)
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.connection()
            .await?
            .del::<_, ()>(keys)
            .await
            .map_err(log_error)
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.connection()
            .await?
            .incr::<_, _, i64>(key, delta)
            .await
            .map_err(log_error)
    }

    async fn new_cas(&self, key: &str) -> Result<Box<dyn HostCas>, StoreError> {
        // Its own connection: WATCH state belongs to a connection.
        let connection = Client::open(self.url.as_str())
            .map_err(log_error)?
            .get_connection_manager()
            .await
            .map_err(log_error)?;
        Ok(Box::new(RedisCas {
            key: key.to_owned(),
            connection,
        }))
    }
}

/// Spin's Redis `CompareAndSwap`.
struct RedisCas {
    key: String,
    connection: ConnectionManager,
}

#[async_trait]
impl HostCas for RedisCas {
    async fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        ::redis::cmd("WATCH")
            .arg(&self.key)
            .exec_async(&mut self.connection.clone())
            .await
            .map_err(log_error)?;
        self.connection
            .clone()
            .get::<_, Option<Vec<u8>>>(&self.key)
            .await
            .map_err(log_error)
    }

    async fn swap(&mut self, value: Vec<u8>) -> Result<(), SwapError> {
        // MULTI; SET; EXEC — a nil (aborted) EXEC parses as Ok(()) for `()`.
        let mut transaction = ::redis::pipe();
        let result: Result<(), RedisError> = transaction
            .atomic()
            .set(&self.key, value)
            .query_async(&mut self.connection.clone())
            .await;

        // Rejected by Redis (UNWATCH takes no argument): always CasFailed.
        ::redis::cmd("UNWATCH")
            .arg(&self.key)
            .exec_async(&mut self.connection.clone())
            .await
            .map_err(|_| SwapError::CasFailed)?;

        match result {
            Ok(()) => Ok(()),
            Err(_) => Err(SwapError::CasFailed),
        }
    }
}

/// The Redis server for tests: `REDIS_URL`, e.g. `redis://127.0.0.1:6390`
/// (`.ci/run` starts one and exports it). The tests that use it flush its
/// database: point it at a disposable server.
///
/// Unset: `None` after a note on stderr, so a developer without Redis can
/// run the rest of the suite — except under CI (`CI=true`), where a missing
/// `REDIS_URL` is a set-up error and this panics, so that the Redis tests can
/// never be silently skipped there.
pub fn test_redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            assert!(
                !crate::under_ci(),
                "{test}: REDIS_URL is not set under CI (CI=true); .ci/run must start \
                 redis-server and export REDIS_URL=redis://127.0.0.1:PORT"
            );
            // Straight to stderr, not `eprintln!`: the test harness captures
            // the macro's output of a passing test, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs a Redis server; set REDIS_URL=redis://127.0.0.1:PORT \
                 (a disposable one: the tests write to, and may flush, its database)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    /// A store on `REDIS_URL`, or `None` (skipped; a failure under CI).
    fn store(test: &str) -> Option<RedisStore> {
        let url = test_redis_url(test)?;
        Some(RedisStore::new(&url).expect("REDIS_URL is a Redis URL"))
    }

    /// A prefix unique to this test run, so that parallel tests (and earlier
    /// runs) do not see each other's keys.
    fn prefix(test: &str) -> String {
        format!(
            "host-store-test:{}:{}:{test}:",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }

    #[test]
    fn rejects_urls_spin_rejects() {
        assert!(RedisStore::new("http://localhost").is_err());
        assert!(RedisStore::new("localhost:6379").is_err());
        assert!(RedisStore::new("redis://127.0.0.1:6390").is_ok());
    }

    #[test]
    fn every_swap_is_reported_failed_even_when_written() {
        let Some(store) = store("every_swap_is_reported_failed_even_when_written") else {
            return;
        };
        let k = prefix("swap") + "k";
        block_on(async {
            store.on_open().await.unwrap();
            store.set(&k, b"v1").await.unwrap();

            // current() then swap, nobody else writes: written, yet CasFailed.
            let mut cas = store.new_cas(&k).await.unwrap();
            assert_eq!(cas.current().await.unwrap(), Some(b"v1".to_vec()));
            assert_eq!(cas.swap(b"v2".to_vec()).await, Err(SwapError::CasFailed));
            assert_eq!(store.get(&k).await.unwrap(), Some(b"v2".to_vec()));

            // Someone writes after current(): EXEC aborts, not written, and the
            // answer is the same CasFailed.
            let mut stale = store.new_cas(&k).await.unwrap();
            stale.current().await.unwrap();
            store.set(&k, b"theirs").await.unwrap();
            assert_eq!(
                stale.swap(b"lost".to_vec()).await,
                Err(SwapError::CasFailed)
            );
            assert_eq!(store.get(&k).await.unwrap(), Some(b"theirs".to_vec()));

            // Without current(): an unconditional SET, still CasFailed.
            let mut blind = store.new_cas(&k).await.unwrap();
            store.set(&k, b"changed").await.unwrap();
            assert_eq!(
                blind.swap(b"blind".to_vec()).await,
                Err(SwapError::CasFailed)
            );
            assert_eq!(store.get(&k).await.unwrap(), Some(b"blind".to_vec()));

            store.delete(&k).await.unwrap();
        });
    }

    #[test]
    fn absent_key_swap_compares_creation() {
        let Some(store) = store("absent_key_swap_compares_creation") else {
            return;
        };
        let k = prefix("absent") + "k";
        block_on(async {
            // WATCH on an absent key: a concurrent creation aborts the EXEC
            // (unlike the SQLite store's unconditional upsert).
            let mut cas = store.new_cas(&k).await.unwrap();
            assert_eq!(cas.current().await.unwrap(), None);
            store.set(&k, b"theirs").await.unwrap();
            assert_eq!(cas.swap(b"mine".to_vec()).await, Err(SwapError::CasFailed));
            assert_eq!(store.get(&k).await.unwrap(), Some(b"theirs".to_vec()));

            store.delete(&k).await.unwrap();
            let mut create = store.new_cas(&k).await.unwrap();
            assert_eq!(create.current().await.unwrap(), None);
            assert_eq!(
                create.swap(b"mine".to_vec()).await,
                Err(SwapError::CasFailed)
            );
            assert_eq!(store.get(&k).await.unwrap(), Some(b"mine".to_vec()));
            store.delete(&k).await.unwrap();
        });
    }

    #[test]
    fn increment_is_incrby_in_ascii() {
        let Some(store) = store("increment_is_incrby_in_ascii") else {
            return;
        };
        let p = prefix("incr");
        block_on(async {
            let n = format!("{p}n");
            assert_eq!(store.increment(&n, 1).await, Ok(1));
            assert_eq!(store.increment(&n, 2).await, Ok(3));
            assert_eq!(store.increment(&n, -10).await, Ok(-7));
            assert_eq!(store.get(&n).await.unwrap(), Some(b"-7".to_vec()));

            // Not an integer: an `other` error, not a trap.
            let le = format!("{p}le");
            store.set(&le, &5i64.to_le_bytes()).await.unwrap();
            assert!(matches!(
                store.increment(&le, 1).await,
                Err(StoreError::Other(_))
            ));
            let max = format!("{p}max");
            store
                .set(&max, i64::MAX.to_string().as_bytes())
                .await
                .unwrap();
            assert!(matches!(
                store.increment(&max, 1).await,
                Err(StoreError::Other(_))
            ));
            store.delete_many(vec![n, le, max]).await.unwrap();
        });
    }

    #[test]
    fn crud_list_and_batch_as_spin_sends_them() {
        let Some(store) = store("crud_list_and_batch_as_spin_sends_them") else {
            return;
        };
        let p = prefix("crud");
        let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
        block_on(async {
            assert!(!store.exists(&b).await.unwrap());
            store.set(&b, b"2").await.unwrap();
            store
                .set_many(vec![(a.clone(), b"1".to_vec()), (c.clone(), b"3".to_vec())])
                .await
                .unwrap();
            assert!(store.exists(&b).await.unwrap());
            let mut mine: Vec<String> = store
                .list_keys()
                .await
                .unwrap()
                .into_iter()
                .filter(|key| key.starts_with(&p))
                .collect();
            mine.sort();
            assert_eq!(mine, [a.clone(), b.clone(), c.clone()]);

            // get-many is `KEYS k1 k2 …`: two keys are a Redis arity error …
            assert!(matches!(
                store.get_many(vec![a.clone(), c.clone()]).await,
                Err(StoreError::Other(_))
            ));
            // … one existing key is a pattern matching one name: an odd
            // number of names makes the redis crate panic (Spin's host too) …
            assert!(matches!(
                store.get_many(vec![a.clone()]).await,
                Err(StoreError::HostFault(_))
            ));
            // … an even number of names comes back as (name, name) pairs …
            let pairs = store.get_many(vec![format!("{p}[ac]")]).await.unwrap();
            assert!(
                pairs == [(a.clone(), Some(c.clone().into_bytes()))]
                    || pairs == [(c.clone(), Some(a.clone().into_bytes()))],
                "{pairs:?}"
            );
            // … and a key that matches nothing gives an empty list.
            assert_eq!(store.get_many(vec![format!("{p}zz")]).await, Ok(vec![]));

            store
                .delete_many(vec![a.clone(), format!("{p}nope")])
                .await
                .unwrap();
            store.delete(&c).await.unwrap();
            store.delete(&c).await.unwrap();
            assert!(!store.exists(&a).await.unwrap());
            assert_eq!(store.get(&b).await.unwrap(), Some(b"2".to_vec()));
            store.delete(&b).await.unwrap();
        });
    }

    /// Reads `MONITOR` lines from a raw connection until `stop` is seen.
    fn monitor(url: &str) -> (TcpStream, BufReader<TcpStream>) {
        let info: ::redis::ConnectionInfo =
            ::redis::IntoConnectionInfo::into_connection_info(url).expect("url");
        let ::redis::ConnectionAddr::Tcp(host, port) = info.addr else {
            panic!("MONITOR test needs a tcp:// Redis URL");
        };
        let mut stream = TcpStream::connect((host.as_str(), port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        if let Some(password) = &info.redis.password {
            let user = info.redis.username.as_deref().unwrap_or("default");
            write!(stream, "AUTH {user} {password}\r\n").unwrap();
        }
        if info.redis.db != 0 {
            write!(stream, "SELECT {}\r\n", info.redis.db).unwrap();
        }
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        // Skip the replies to AUTH/SELECT and MONITOR (all "+OK").
        let replies =
            1 + usize::from(info.redis.password.is_some()) + usize::from(info.redis.db != 0);
        for _ in 0..replies {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("+OK"), "unexpected reply {line:?}");
        }
        (stream, reader)
    }

    #[test]
    fn cas_sends_spins_commands_on_its_own_connection() {
        let Some(url) = test_redis_url("cas_sends_spins_commands_on_its_own_connection") else {
            return;
        };
        let store = RedisStore::new(&url).unwrap();
        let p = prefix("monitor");
        let k = format!("{p}k");
        let stop = format!("{p}stop");
        let (stream, mut reader) = monitor(&url);
        // One runtime for the whole test: the store's connections live on it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            store.on_open().await.unwrap();
            store.set(&k, b"v1").await.unwrap();
            let mut first = store.new_cas(&k).await.unwrap();
            first.current().await.unwrap();
            assert_eq!(first.swap(b"v2".to_vec()).await, Err(SwapError::CasFailed));
            let mut second = store.new_cas(&k).await.unwrap();
            second.current().await.unwrap();
            drop(second);
            store.increment(&format!("{k}:n"), 2).await.unwrap();
            store.get(&stop).await.unwrap();
        });
        // "<time> [<db> <addr>] "CMD" "arg" …", every client's.
        let mut all: Vec<(String, String)> = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("MONITOR line");
            let Some((_, rest)) = line.trim_end().split_once(" [") else {
                continue;
            };
            let Some((client, command)) = rest.split_once("] ") else {
                continue;
            };
            let addr = client.split_whitespace().nth(1).unwrap_or("").to_owned();
            if command.contains(&stop) {
                break;
            }
            all.push((addr, command.to_owned()));
        }
        // This test's lines: its keys, and MULTI/EXEC from its connections
        // (other tests run in parallel on the same server).
        let mine: std::collections::HashSet<&str> = all
            .iter()
            .filter(|(_, command)| command.contains(&p))
            .map(|(addr, _)| addr.as_str())
            .collect();
        let seen: Vec<(String, String)> = all
            .iter()
            .filter(|(addr, command)| {
                command.contains(&p)
                    || (mine.contains(addr.as_str())
                        && (command == "\"MULTI\"" || command == "\"EXEC\""))
            })
            .map(|(addr, command)| (addr.clone(), command.replace(&p, "")))
            .collect();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);

        let commands: Vec<&str> = seen.iter().map(|(_, command)| command.as_str()).collect();
        assert_eq!(
            commands,
            [
                r#""SET" "k" "v1""#,
                r#""WATCH" "k""#,
                r#""GET" "k""#,
                r#""MULTI""#,
                r#""SET" "k" "v2""#,
                r#""EXEC""#,
                // `UNWATCH "k"` is rejected before execution: MONITOR never
                // shows it (checked by the CasFailed above).
                r#""WATCH" "k""#,
                r#""GET" "k""#,
                r#""INCRBY" "k:n" "2""#,
            ],
            "{seen:#?}"
        );
        let shared = &seen[0].0;
        let first = &seen[1].0;
        let second = &seen[6].0;
        assert!(
            seen[1..6].iter().all(|(addr, _)| addr == first),
            "{seen:#?}"
        );
        assert_eq!(&seen[7].0, second);
        assert_eq!(&seen[8].0, shared);
        assert!(
            shared != first && shared != second && first != second,
            "{seen:#?}"
        );
        runtime.block_on(async {
            store
                .delete_many(vec![k.clone(), format!("{k}:n")])
                .await
                .unwrap();
        });
    }
}
