//! The stock bridge: a small long-running process beside the Spin application that
//! connects the stock service's HTTP event feed to Kafka, since Spin components cannot
//! hold Kafka connections (SPEC §4).
//!
//! - **out** (`out`): each feed partition of `GET /v1/events`, in order, to the
//!   `stock.events` topic as binary-mode CloudEvents keyed by product; the cursor of each
//!   feed partition is kept in a compacted Kafka topic (`positions`).
//! - **in** ([`inbound`]): the cart and order topics, consumed in a group, to
//!   `POST /v1/events`; offsets committed after the service's answer, refusals to a
//!   dead-letter topic.
//!
//! [`run`] is the whole process; `main.rs` only parses flags, sets up logging and signals.

#![cfg(not(target_arch = "wasm32"))]

pub mod config;
mod health;
pub mod inbound;
mod out;
mod positions;
mod retry;
mod service;
mod topics;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, LogFormat, Mode};

use health::Health;
use retry::Backoff;
use service::Service;

/// What both directions share.
pub(crate) struct Bridge {
    config: Config,
    service: Service,
    /// Idempotent producer (events, positions, dead letters).
    producer: FutureProducer,
    health: Arc<Health>,
    backoff: Backoff,
    /// Cancelled on shutdown, or when a direction fails for good.
    shutdown: CancellationToken,
}

/// How long the producer may take at shutdown to deliver what it still holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the directions `config.mode` selects, and the health endpoint, until `shutdown`
/// is cancelled; then stops taking work, abandons unanswered work without recording it
/// as done, flushes the producer, and returns `Ok`. Returns `Err` on a configuration
/// error (before any work) or when a direction dies.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.mode.runs_in() && config.service_token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!("the in direction needs --service-token (STOCK_SERVICE_TOKEN)");
    }
    let health = Arc::new(Health::new(
        config.mode.runs_out(),
        config.mode.runs_in(),
        Duration::from_secs(config.unhealthy_after_secs),
    ));
    let listener = TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("binding the health endpoint to {}", config.health_listen))?;
    tracing::info!(address = %config.health_listen, "health endpoint: GET /healthz");
    let stop_health = CancellationToken::new();
    let server = tokio::spawn(health::serve(
        listener,
        Arc::clone(&health),
        stop_health.clone(),
    ));

    let result = run_directions(config, health, shutdown.child_token()).await;

    stop_health.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "health endpoint failed"),
        Err(error) => tracing::warn!(%error, "health endpoint task died"),
    }
    result
}

async fn run_directions(
    config: Config,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.create_topics {
        topics::ensure(&config).await?;
    }
    let producer: FutureProducer = config
        .kafka(&[("enable.idempotence", "true"), ("acks", "all")])
        .create()
        .context("creating the Kafka producer")?;
    let service = Service::new(&config.service_url, config.service_token.clone())
        .context("creating the HTTP client")?;
    let backoff = Backoff::new(
        Duration::from_millis(config.retry_min_ms),
        Duration::from_millis(config.retry_max_ms),
    );
    let bridge = Arc::new(Bridge {
        service,
        producer: producer.clone(),
        health,
        backoff,
        shutdown: shutdown.clone(),
        config,
    });

    let mut directions = JoinSet::new();
    if bridge.config.mode.runs_out() {
        directions.spawn(out::run(Arc::clone(&bridge)));
    }
    if bridge.config.mode.runs_in() {
        directions.spawn(inbound::run(Arc::clone(&bridge)));
    }
    let mut result = Ok(());
    while let Some(joined) = directions.join_next().await {
        let outcome = joined
            .map_err(anyhow::Error::from)
            .and_then(|direction| direction);
        if let Err(error) = outcome {
            // One direction down takes the process down: the orchestrator restarts it.
            shutdown.cancel();
            if result.is_ok() {
                result = Err(error);
            }
        }
    }
    drop(bridge);

    // Deliver what is still queued (entries of an abandoned page, a last position: both
    // harmless to land, since a position is only ever sent after its page's acks).
    let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
    match flushed {
        Ok(Ok(())) => tracing::info!("producer flushed"),
        Ok(Err(error)) => tracing::warn!(%error, "producer not fully flushed"),
        Err(error) => tracing::warn!(%error, "producer flush task died"),
    }
    result
}
