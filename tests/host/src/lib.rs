//! `stock-test-host`: a small Spin-like host that runs the real `.wasm` Spin
//! components of this workspace over HTTP, for end-to-end tests and the load
//! tool, on a machine where the Spin CLI cannot be installed.
//!
//! # What it emulates (Spin 4.0.2, HTTP trigger)
//!
//! - A Spin manifest v2 (`spin.toml`): `[variables]`, `[[trigger.http]]`
//!   (`route`, a path or `{ private = true }`; `component` by id),
//!   `[component.NAME]` `source` (a local path relative to the manifest),
//!   `key_value_stores`, `allowed_outbound_hosts`, `environment` and
//!   `variables` (templates such as `"{{ admin_token }}"`).
//!   Anything else that would change behaviour is rejected at start-up.
//! - Routing with Spin's rules and crate (exact, `:name`, `/prefix/...`,
//!   longest prefix wins, no match → 404) and Spin's `spin-*` request headers
//!   (`spin-full-url`, `spin-path-info`, `spin-matched-route`,
//!   `spin-component-route`, `spin-raw-component-route`, `spin-base-path`,
//!   `spin-client-addr`, `spin-path-match-*`); `/.well-known/spin/health`.
//!   The path reaches the component as the client sent it: percent escapes stay
//!   undecoded in the URI, `spin-full-url` and `spin-path-info`, and routes
//!   match the raw path (so `%2F` never splits a segment).
//! - Spin's request preparation (`prepare_request_headers`): a header value
//!   that is not UTF-8 fails the request with a 500 and an empty body before
//!   any component runs, on routed and chained requests alike.
//! - Each component compiled once, then one fresh instance per request
//!   (`InstancePre`) through `wasmtime-wasi-http`'s
//!   `wasi:http/incoming-handler@0.2.x` export; a trap or a missing response
//!   is a 500 with an empty body, as in Spin.
//! - WASI 0.2 imports from `wasmtime-wasi` (stdout/stderr inherited, no
//!   filesystem preopens, no sockets), outbound HTTP allowed only to
//!   `allowed_outbound_hosts` (else `HTTP-request-denied`).
//! - Private routes and local service chaining (SIP 017): a component with
//!   only `route = { private = true }` gets no public route (404 from
//!   outside); an allowed request to `http://<component-id>.spin.internal/…`
//!   runs in-process in a new instance of that component (the same key-value
//!   store, its own component variables), with Spin's chained-request headers
//!   (`spin-path-info` = the whole path, `spin-matched-route` = `/...`,
//!   `spin-component-route` empty, `spin-client-addr` = `0.0.0.0:0`,
//!   `spin-full-url` = `http://localhost/<path>` since the chained request
//!   has no `Host` header, only its URI's authority); a `Host: *.spin.internal`
//!   header on a routed request is stripped. Details and differences in the
//!   `outbound` module.
//! - `fermyon:spin/variables@2.0.0`: component variables resolved from their
//!   templates against application variables given in [`HostConfig::variables`]
//!   (like `--variable name=value` / `SPIN_VARIABLE_NAME` on real Spin), falling
//!   back to defaults; a required variable without a value stops start-up.
//! - `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` over ONE store shared by
//!   all components and concurrent requests, with the exact semantics of Spin's
//!   default SQLite store, including its CAS quirk (see [`store`]); only the
//!   `default` label exists, as in Spin without a runtime config.
//!
//! # What it does NOT emulate
//!
//! - Other trigger types (Redis, cron, …), `[application.trigger.http] base`
//!   other than `/`, `self` outbound hosts and relative-URL self requests,
//!   WAGI or WASIp3 executors, remote or registry `source`s, `files`, component
//!   `dependencies`, `static_response` triggers.
//! - Service-chaining corner cases: chaining to an id that no
//!   `[[trigger.http]]` names fails the caller's request with
//!   `destination-not-found` (Spin traps the caller, whose request becomes a
//!   500); chained requests bypass [`HostConfig::max_body_bytes`] (a
//!   listener limit here, which Spin does not have anyway); `spin up
//!   --component-id` validation of chaining targets; OpenTelemetry context
//!   propagation.
//! - Spin-header duplicates: a client-sent `spin-*` header is replaced here,
//!   while Spin appends its own value after the client's.
//! - Spin SQLite, Redis, Postgres/MySQL, LLM, MQTT, `fermyon:spin` key-value
//!   and `wasi:config` imports: a component importing them fails to load, with
//!   an error naming the import.
//! - Persistence, by default: the default store lives in memory for the
//!   host's lifetime (Spin keeps `.spin/sqlite_key_value.db` across runs);
//!   Spin's real SQLite store on a file is [`store::sqlite::SqliteStore`]
//!   (`HostConfig::store` or the binary's `--sqlite-path`). No runtime-config
//!   file: the other backend is a real Redis server with Spin's Redis store
//!   behaviour ([`store::redis::RedisStore`], `HostConfig::store` or the
//!   binary's `--redis-url`), no Cosmos; no `max_result_bytes` limits.
//! - No DynamoDB backend: Spin's `aws_dynamo` store (eventually consistent
//!   `get` unless `consistent_read`, every failed write reported as
//!   `CasFailed`, an `increment` that fails when it loses a race) is tested on
//!   real Spin over an emulator only (`tests/e2e/tests/dynamodb.rs`), and in
//!   the domain through the fault double's DynamoDB plan.
//! - Spin's instance reuse, request timeouts, HTTPS/TLS listener, HTTP/2,
//!   `spin build`/`spin watch` (use [`build_wasm`]), logging to files. A
//!   request Spin's server rejects with an error (no authority, e.g. after a
//!   `Host: *.spin.internal` header was stripped) closes the connection in
//!   Spin and is a 500 here.
//!
//! # Use
//!
//! ```no_run
//! let root = stock_test_host::workspace_root();
//! stock_test_host::build_wasm(&["cas-bench"])?;
//! let host = stock_test_host::start(stock_test_host::HostConfig::new(root.join("bench/spin.toml")))?;
//! println!("{}/bench/cas", host.base_url());
//! # anyhow::Ok(())
//! ```
#![cfg(not(target_arch = "wasm32"))]

mod app;
mod bindings;
mod manifest;
mod outbound;
mod router;
pub mod spin;
pub mod store;
mod variables;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, ensure};
use tokio::sync::oneshot;

/// Re-exported so that other crates can implement [`HostStore`] / [`HostCas`]
/// (e.g. a fault-injecting wrapper around [`MemoryStore`], or a Redis backend).
pub use async_trait::async_trait;
pub use store::{HostCas, HostStore, MemoryStore, StoreError, SwapError};

/// How to run an application.
#[derive(Clone)]
pub struct HostConfig {
    /// The `spin.toml` to run.
    pub manifest: PathBuf,
    /// Application variable values, `(name, value)`; the last value given for a
    /// name wins. Undeclared names are ignored with a warning.
    pub variables: Vec<(String, String)>,
    /// Where to listen; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The backend of the `default` key-value store (default: an empty
    /// [`MemoryStore`]; Spin's real SQLite store:
    /// `Arc::new(store::sqlite::SqliteStore::open(path, "default")?)`). Keep a
    /// clone to inspect or seed it from a test.
    pub store: Arc<dyn HostStore>,
    /// Requests with a larger body get a 413 before reaching a component
    /// (default: no limit, like Spin).
    pub max_body_bytes: Option<u64>,
}

impl HostConfig {
    /// Defaults for a manifest: loopback ephemeral port, fresh in-memory store,
    /// no variables, no body limit.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            variables: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: Arc::new(MemoryStore::new()),
            max_body_bytes: None,
        }
    }

    /// Adds an application variable value.
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.push((name.into(), value.into()));
        self
    }
}

/// A host serving on its own thread and Tokio runtime; stops when dropped.
pub struct RunningHost {
    addr: SocketAddr,
    base_url: String,
    store: Arc<dyn HostStore>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningHost {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `base_url` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The `default` key-value store the components share.
    pub fn store(&self) -> &Arc<dyn HostStore> {
        &self.store
    }

    /// Blocks until the server stops (it only stops when dropped, so: forever).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Loads the application (compiling every component) and starts serving it
/// on a background thread. Errors (bad manifest, missing `.wasm`, missing
/// required variable, port in use) are returned before anything is served.
pub fn start(config: HostConfig) -> anyhow::Result<RunningHost> {
    let app = Arc::new(app::App::load(&config)?);
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stock-test-host")
        .build()?;
    let (shutdown, stop) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("stock-test-host".to_owned())
        .spawn(move || {
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve(app, listener, stop).await;
                anyhow::Ok(())
            });
            if let Err(error) = result {
                eprintln!("stock-test-host: server stopped: {error:?}");
            }
        })?;
    Ok(RunningHost {
        addr,
        base_url: format!("http://{addr}"),
        store: config.store,
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

/// Accepts HTTP/1.1 connections until `stop` fires.
async fn serve(
    app: Arc<app::App>,
    listener: tokio::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, client_addr) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("stock-test-host: accept failed: {error}");
                    continue;
                }
            },
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle(request, client_addr).await) }
            });
            // Connection errors (client went away, bad framing) only end this connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(wasmtime_wasi_http::io::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `rustup -q target add wasm32-wasip2` in the workspace root, for the toolchain that
/// `rust-toolchain.toml` selects. Silent and instant when the target is installed; skipped
/// when there is no `rustup` (cargo then names the missing target itself).
/// Runs once per process: concurrent `rustup` installs of one component race.
fn add_wasm_target() -> anyhow::Result<()> {
    static ADDED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut added = ADDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *added {
        return Ok(());
    }
    let mut command = Command::new("rustup");
    command
        .current_dir(workspace_root())
        .args(["-q", "target", "add", "wasm32-wasip2"]);
    match command.status() {
        Ok(status) => ensure!(status.success(), "{command:?} failed: {status}"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("running {command:?}")),
    }
    *added = true;
    Ok(())
}

/// Whether the tests run under CI (`CI=true` or `CI=1`), where what a test needs and
/// does not find (Redis, Spin) is a failure instead of a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true") || ci == "1")
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .map_or_else(|| crate_dir.join("../.."), Path::to_path_buf)
}

/// Builds every component a manifest declares, in one cargo invocation. Each component
/// id is its Cargo package name, as the manifests' `build` commands say.
pub fn build_app(manifest: &Path) -> anyhow::Result<()> {
    let manifest = manifest::Manifest::load(manifest)?;
    let packages: Vec<&str> = manifest.component.keys().map(String::as_str).collect();
    ensure!(!packages.is_empty(), "the manifest declares no component");
    build_wasm(&packages)
}

/// Builds components for `wasm32-wasip2` in release mode from the workspace
/// root, as the manifests' `build` commands do: `cargo build --target
/// wasm32-wasip2 --release -p PACKAGE…`, or `--workspace` when `packages` is
/// empty. Cargo's output goes to this process's stderr.
///
/// Adds the `wasm32-wasip2` target first, as the manifests' `build` commands do: rustup
/// installs the targets of `rust-toolchain.toml` only with a toolchain it installs, so a
/// machine whose toolchain was already there lacks it.
pub fn build_wasm(packages: &[&str]) -> anyhow::Result<()> {
    add_wasm_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--target", "wasm32-wasip2", "--release"]);
    if packages.is_empty() {
        command.arg("--workspace");
    }
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}
