//! The `stock-bridge` binary: flags and environment, logging, signals; the work is
//! [`stock_bridge::run`].

#[cfg(not(target_arch = "wasm32"))]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::Parser;
    use stock_bridge::{Config, LogFormat};
    use tokio::signal::unix::{SignalKind, signal};
    use tokio_util::sync::CancellationToken;
    use tracing_subscriber::EnvFilter;

    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        on_signal.cancel();
    });

    stock_bridge::run(config, shutdown).await
}

#[cfg(target_arch = "wasm32")]
fn main() {}
