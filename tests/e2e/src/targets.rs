//! Where the suite runs: the Wasmtime test host over the repository's `spin.toml`, or a
//! real `spin up` (from `SPIN_BIN` or `PATH`) on a free port with a temporary state dir.
//! Either is configured with the tokens and with the admin webhook pointing at this
//! process's [`webhook`] receiver.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stock_test_host::{HostConfig, RunningHost};

use crate::client::{ADMIN_TOKEN, SERVICE_TOKEN};
use crate::receiver::WebhookReceiver;

/// The admin webhook's receiver, one per test process, shared by every target.
pub fn webhook() -> &'static WebhookReceiver {
    static RECEIVER: OnceLock<WebhookReceiver> = OnceLock::new();
    RECEIVER.get_or_init(|| WebhookReceiver::start().expect("starting the webhook receiver"))
}

/// Application variables: the tokens and the webhook.
fn variables() -> [(&'static str, String); 4] {
    [
        ("admin_token", ADMIN_TOKEN.to_owned()),
        ("service_token", SERVICE_TOKEN.to_owned()),
        ("alert_webhook_url", webhook().url()),
        ("alert_webhook_origin", webhook().origin()),
    ]
}

pub fn manifest() -> PathBuf {
    stock_test_host::workspace_root().join("spin.toml")
}

/// Builds the components (release, wasm32-wasip2) and starts the test host on them.
pub fn start_test_host() -> anyhow::Result<RunningHost> {
    stock_test_host::build_app(&manifest())?;
    let config = variables()
        .into_iter()
        .fold(HostConfig::new(manifest()), |config, (name, value)| {
            config.variable(name, value)
        });
    stock_test_host::start(config)
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
    stock_test_host::build_app(&manifest())?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let state = std::env::temp_dir().join(format!("stock-e2e-spin-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let state = TempDir(state);
    let mut command = Command::new(bin);
    for (name, value) in variables() {
        command.env(
            format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
            value,
        );
    }
    let child = command
        .arg("up")
        .arg("--from")
        .arg(manifest())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(&state.0)
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
