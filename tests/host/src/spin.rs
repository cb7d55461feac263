//! A real `spin up`, for the suites that run against Spin as well as against this test
//! host (the end-to-end suite, the multi-node run over Redis).
//!
//! `spin up` starts each trigger as a child process of its own (`spin trigger http`), so
//! killing `spin up` alone leaves the HTTP server running. [`SpinUp`] therefore starts
//! it in a process group of its own and, when dropped, signals the whole group: SIGTERM,
//! then SIGKILL for whatever is still there after [`STOP_GRACE`].

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a stopping `spin up` gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long `spin up` may take to listen (it compiles every component first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The `spin` binary: `SPIN_BIN`, else `spin` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SPIN_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("spin"))
            .find(|candidate| candidate.is_file())
    })
}

/// Whether a missing `spin` must fail the tests that need it instead of skipping them:
/// under CI (`CI=true`), where Spin is provided and a skipped real-Spin run would hide
/// the very differences it exists to find.
pub fn required() -> bool {
    crate::under_ci()
}

/// How to start one `spin up`.
#[derive(Debug, Clone)]
pub struct SpinConfig {
    bin: PathBuf,
    manifest: PathBuf,
    variables: Vec<(String, String)>,
    environment: Vec<(String, String)>,
    runtime_config: Option<PathBuf>,
}

impl SpinConfig {
    pub fn new(bin: impl Into<PathBuf>, manifest: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            manifest: manifest.into(),
            variables: Vec::new(),
            environment: Vec::new(),
            runtime_config: None,
        }
    }

    /// An application variable, passed as `SPIN_VARIABLE_<NAME>` (never on the command
    /// line, where every process could read a token).
    pub fn variable(mut self, name: &str, value: impl Into<String>) -> Self {
        self.variables.push((name.to_owned(), value.into()));
        self
    }

    /// An environment variable of `spin up` (e.g. a store's credentials).
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.environment.push((name.to_owned(), value.into()));
        self
    }

    /// `--runtime-config-file`.
    pub fn runtime_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_config = Some(path.into());
        self
    }
}

/// A running `spin up` on a free loopback port with a state directory of its own (its
/// default SQLite store starts empty), stopped with its whole process group on drop.
#[derive(Debug)]
pub struct SpinUp {
    child: Child,
    base_url: String,
    state: PathBuf,
}

impl SpinUp {
    /// Starts `spin up` on the manifest's already built components and waits until it
    /// listens.
    pub fn start(config: &SpinConfig) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let state =
            std::env::temp_dir().join(format!("stock-spin-up-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let mut command = Command::new(&config.bin);
        for (name, value) in &config.variables {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        command.envs(config.environment.iter().map(|(name, value)| (name, value)));
        let mut args: Vec<OsString> = vec![
            "up".into(),
            "--from".into(),
            config.manifest.clone().into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--state-dir".into(),
            state.clone().into(),
        ];
        if let Some(runtime_config) = &config.runtime_config {
            args.push("--runtime-config-file".into());
            args.push(runtime_config.clone().into());
        }
        let child = command
            .args(&args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", config.bin.display()))?;
        // Stopped on drop from here on, also when it never listens.
        let mut up = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            state,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(up);
            }
            if let Some(status) = up.child.try_wait()? {
                bail!("spin up exited before listening: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("spin up did not listen on port {port} within {START_TIMEOUT:?}")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The state directory (`.spin/` of this run: logs, the SQLite store).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        // The group's id is the leader's pid (`process_group(0)`).
        let group = Pid::from_raw(self.child.id().cast_signed());
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The triggers outlive their parent when it dies first: kill the group in any case.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
