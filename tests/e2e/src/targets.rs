//! Where the suite runs: the Wasmtime test host over the repository's `spin.toml`, or a
//! real `spin up` (from `SPIN_BIN` or `PATH`) on a free port with a temporary state dir.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stock_test_host::{HostConfig, RunningHost};

use crate::client::{ADMIN_TOKEN, SERVICE_TOKEN};

/// Every component package of the application, built before either target starts.
pub const COMPONENTS: &[&str] = &[
    "get-stock",
    "update-stock",
    "check-availability",
    "adjust-stock",
    "stock-history",
    "reserve-stock",
    "get-reservation",
    "release-reservation",
    "commit-reservation",
    "stock-alerts",
    "expire-reservations",
    "not-found",
];

pub fn manifest() -> PathBuf {
    stock_test_host::workspace_root().join("spin.toml")
}

/// Builds the components (release, wasm32-wasip2) and starts the test host on them.
pub fn start_test_host() -> anyhow::Result<RunningHost> {
    stock_test_host::build_wasm(COMPONENTS)?;
    stock_test_host::start(
        HostConfig::new(manifest())
            .variable("admin_token", ADMIN_TOKEN)
            .variable("service_token", SERVICE_TOKEN),
    )
}

/// The `spin` binary to use, if any.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SPIN_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("spin"))
            .find(|candidate| candidate.is_file())
    })
}

/// A running `spin up`, stopped on drop.
pub struct SpinUp {
    child: Child,
    pub base_url: String,
    _state: TempDir,
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn start_spin(bin: &PathBuf) -> anyhow::Result<SpinUp> {
    stock_test_host::build_wasm(COMPONENTS)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let state = std::env::temp_dir().join(format!("stock-e2e-spin-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let state = TempDir(state);
    let child = Command::new(bin)
        .arg("up")
        .arg("--from")
        .arg(manifest())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(&state.0)
        .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SPIN_VARIABLE_SERVICE_TOKEN", SERVICE_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let up = SpinUp {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
        _state: state,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(up);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("spin up did not listen on port {port} within 60 s")
}
