//! `stock-test-host --manifest PATH [--listen ADDR] [--variable NAME=VALUE]...
//! [--max-body-bytes N] [--redis-url URL | --sqlite-path PATH]`: serves a
//! Spin application until killed (for the load tool, manual runs and
//! multi-node tests). Application variables also come from
//! `SPIN_VARIABLE_<NAME>` environment variables, as with `spin up`; a
//! `--variable` wins over the environment.
//!
//! `--redis-url redis://HOST:PORT[/DB]` puts the `default` key-value store on
//! that Redis server, with Spin's Redis store behaviour (as a runtime config
//! `[key_value_store.default] type = "redis"` would; see `store::redis`), so
//! that several processes share one store.
//!
//! `--sqlite-path PATH` puts the `default` key-value store in the SQLite
//! database file PATH (created if absent; its directory must exist), with
//! exactly Spin's default store (`spin up`'s `.spin/sqlite_key_value.db`: Spin's
//! SQL, one connection, SQLite's default rollback journal and `synchronous=FULL`;
//! see `store::sqlite`), so that benchmarks pay what Spin's default store
//! costs and data persists across runs. It cannot be combined with
//! `--redis-url`.
//!
//! Without either, the store is in memory (Spin's default store's semantics
//! without its cost), private to the process.
//!
//! It does not build anything: build the components first (`cargo build
//! --target wasm32-wasip2 --release …`).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stock-test-host: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
const USAGE: &str = "usage: stock-test-host --manifest PATH [--listen 127.0.0.1:PORT] \
                     [--variable NAME=VALUE]... [--max-body-bytes N] \
                     [--redis-url redis://HOST:PORT[/DB] | --sqlite-path PATH]";

#[cfg(not(target_arch = "wasm32"))]
fn run() -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    use std::io::Write;

    let mut manifest = None;
    let mut listen = None;
    let mut max_body_bytes = None;
    let mut redis_url = None;
    let mut sqlite_path = None;
    // Environment first, so that `--variable` (pushed later) wins.
    let mut variables: Vec<(String, String)> = std::env::vars()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("SPIN_VARIABLE_")?;
            Some((name.to_ascii_lowercase(), value))
        })
        .collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--manifest" | "-f" => manifest = Some(value("--manifest")?),
            "--listen" => listen = Some(value("--listen")?.parse().context("--listen")?),
            "--variable" => {
                let pair = value("--variable")?;
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--variable {pair:?}: expected NAME=VALUE"))?;
                variables.push((name.to_owned(), value.to_owned()));
            }
            "--max-body-bytes" => {
                max_body_bytes = Some(
                    value("--max-body-bytes")?
                        .parse()
                        .context("--max-body-bytes")?,
                );
            }
            "--redis-url" => redis_url = Some(value("--redis-url")?),
            "--sqlite-path" => sqlite_path = Some(value("--sqlite-path")?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let Some(manifest) = manifest else {
        bail!("--manifest is required\n{USAGE}");
    };
    if redis_url.is_some() && sqlite_path.is_some() {
        bail!("--redis-url and --sqlite-path are mutually exclusive\n{USAGE}");
    }
    let mut config = stock_test_host::HostConfig::new(manifest);
    config.variables = variables;
    config.max_body_bytes = max_body_bytes;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(url) = redis_url {
        let store = stock_test_host::store::redis::RedisStore::new(&url).context("--redis-url")?;
        config.store = std::sync::Arc::new(store);
    }
    if let Some(path) = sqlite_path {
        let store = stock_test_host::store::sqlite::SqliteStore::open(&path, "default")
            .context("--sqlite-path")?;
        config.store = std::sync::Arc::new(store);
    }
    let host = stock_test_host::start(config)?;
    println!("listening on {}", host.base_url());
    std::io::stdout().flush()?;
    host.wait();
    Ok(())
}
