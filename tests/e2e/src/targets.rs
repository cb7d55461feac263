//! Where the suite runs: the Wasmtime test host over the repository's `spin.toml`, or a
//! real `spin up` (from `SPIN_BIN` or `PATH`, see [`stock_test_host::spin`]) on a free port
//! with a state dir of its own.
//! Either is configured with the tokens and with the admin webhook pointing at this
//! process's [`webhook`] receiver.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use stock_test_host::spin::{SpinConfig, SpinUp};
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

/// Builds the components and starts a real `spin up` on them, configured like the test
/// host.
pub fn start_spin(bin: &Path) -> anyhow::Result<SpinUp> {
    stock_test_host::build_app(&manifest())?;
    let config = variables()
        .into_iter()
        .fold(SpinConfig::new(bin, manifest()), |config, (name, value)| {
            config.variable(name, value)
        });
    SpinUp::start(&config)
}
