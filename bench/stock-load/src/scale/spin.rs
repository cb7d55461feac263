//! A real `spin up` serving the application over a given SQLite store file, in a
//! process group of its own, stopped with its trigger processes when dropped.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long `spin up` may take to listen (it compiles every component first).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a stopping `spin up` gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to start `spin up`.
#[derive(Debug, Clone)]
pub struct SpinOptions {
    /// The `spin` binary.
    pub bin: PathBuf,
    /// The application manifest (`spin.toml`), its components already built.
    pub manifest: PathBuf,
    pub admin_token: String,
    pub service_token: String,
}

/// The runtime config that points the store `store` at the SQLite file `path`.
pub fn runtime_config(store: &str, path: &Path) -> anyhow::Result<String> {
    let mut backend = toml::Table::new();
    backend.insert("type".into(), "spin".into());
    backend.insert("path".into(), path.display().to_string().into());
    let mut stores = toml::Table::new();
    stores.insert(store.into(), backend.into());
    let mut config = toml::Table::new();
    config.insert("key_value_store".into(), stores.into());
    Ok(toml::to_string(&config)?)
}

/// A running `spin up`.
#[derive(Debug)]
pub struct SpinServer {
    child: Child,
    base_url: String,
}

impl SpinServer {
    /// Starts `spin up` on a free loopback port with the store `store` on the SQLite
    /// file `db`, its runtime config, state and log in `dir`, and waits until it listens.
    pub fn start(
        options: &SpinOptions,
        store: &str,
        db: &Path,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let config = dir.join("runtime-config.toml");
        std::fs::write(&config, runtime_config(store, db)?)
            .with_context(|| format!("writing {}", config.display()))?;
        let state = dir.join("spin-state");
        std::fs::create_dir_all(&state)?;
        let log = std::fs::File::create(dir.join("spin.log"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&options.bin)
            .arg("up")
            .arg("--from")
            .arg(&options.manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--runtime-config-file")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("SPIN_VARIABLE_ADMIN_TOKEN", &options.admin_token)
            .env("SPIN_VARIABLE_SERVICE_TOKEN", &options.service_token)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", options.bin.display()))?;
        // Stopped on drop from here on, also when it never listens.
        let mut server = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "spin up exited before listening ({status}); see {}",
                    dir.join("spin.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("spin up did not listen on port {port} within {START_TIMEOUT:?}")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

impl Drop for SpinServer {
    fn drop(&mut self) {
        // The group's id is the leader's pid (`process_group(0)`); `spin up` runs its
        // HTTP trigger as a child process, which must stop too.
        let group = Pid::from_raw(self.child.id().cast_signed());
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_config_points_the_store_at_the_file() {
        let text = runtime_config("default", Path::new("/tmp/a \"b\"\\c.db")).unwrap();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let store = &parsed["key_value_store"]["default"];
        assert_eq!(store["type"].as_str(), Some("spin"));
        assert_eq!(store["path"].as_str(), Some("/tmp/a \"b\"\\c.db"));
    }
}
