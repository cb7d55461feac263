//! The health endpoint: `GET /healthz` reports, for each direction, whether it runs, when
//! it last did useful work, how long it has been failing, and its record counts. It
//! answers 503 when an enabled direction is not running or has been failing for longer
//! than `--unhealthy-after-secs`, so an orchestrator restarts or unroutes the process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a direction counts (the keys of its `counts` object in `/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    /// out: feed entries acknowledged by the broker on the events topic.
    Produced,
    /// out: cursors acknowledged on the positions topic.
    PositionsWritten,
    /// in: records the service accepted (2xx).
    Posted,
    /// in: records sent to the dead-letter topic.
    DeadLettered,
    /// in/out: transient failures retried.
    Retries,
}

/// The live state of one direction.
#[derive(Debug)]
pub struct Direction {
    state: Mutex<DirectionState>,
}

#[derive(Debug, Default)]
struct DirectionState {
    enabled: bool,
    running: bool,
    last_success: Option<DateTime<Utc>>,
    failing_since: Option<Instant>,
    last_error: Option<String>,
    counts: BTreeMap<Counter, u64>,
}

/// One direction as `/healthz` shows it.
#[derive(Debug, Serialize)]
struct DirectionReport {
    enabled: bool,
    running: bool,
    healthy: bool,
    last_success: Option<DateTime<Utc>>,
    /// Seconds since the first of the current run of failures; absent when not failing.
    failing_for_secs: Option<u64>,
    last_error: Option<String>,
    counts: BTreeMap<Counter, u64>,
}

impl Direction {
    fn new(enabled: bool, counters: &[Counter]) -> Self {
        Direction {
            state: Mutex::new(DirectionState {
                enabled,
                counts: counters.iter().map(|c| (*c, 0)).collect(),
                ..DirectionState::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DirectionState> {
        // A panic while holding this lock leaves plain counters behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the direction started (`running = true`) or stopped.
    pub fn set_running(&self, running: bool) {
        self.lock().running = running;
    }

    /// Records useful work done now: clears any failure.
    pub fn success(&self) {
        let mut state = self.lock();
        state.last_success = Some(Utc::now());
        state.failing_since = None;
        state.last_error = None;
    }

    /// Records a failure about to be retried; the failing time counts from the first one.
    pub fn failure(&self, error: &dyn std::fmt::Display) {
        let mut state = self.lock();
        state.failing_since.get_or_insert_with(Instant::now);
        state.last_error = Some(error.to_string());
        *state.counts.entry(Counter::Retries).or_default() += 1;
    }

    /// Adds `n` to a counter.
    pub fn add(&self, counter: Counter, n: u64) {
        *self.lock().counts.entry(counter).or_default() += n;
    }

    fn report(&self, unhealthy_after: Duration) -> DirectionReport {
        let state = self.lock();
        let failing_for = state.failing_since.map(|since| since.elapsed());
        let healthy =
            !state.enabled || (state.running && failing_for.is_none_or(|f| f < unhealthy_after));
        DirectionReport {
            enabled: state.enabled,
            running: state.running,
            healthy,
            last_success: state.last_success,
            failing_for_secs: failing_for.map(|f| f.as_secs()),
            last_error: state.last_error.clone(),
            counts: state.counts.clone(),
        }
    }
}

/// Health of the whole process: its two directions.
#[derive(Debug)]
pub struct Health {
    /// The feed → Kafka direction.
    pub out: Direction,
    /// The Kafka → service direction.
    pub inbound: Direction,
    unhealthy_after: Duration,
}

impl Health {
    /// Fresh state; a disabled direction never makes the process unhealthy.
    pub fn new(out_enabled: bool, in_enabled: bool, unhealthy_after: Duration) -> Self {
        Health {
            out: Direction::new(
                out_enabled,
                &[
                    Counter::Produced,
                    Counter::PositionsWritten,
                    Counter::Retries,
                ],
            ),
            inbound: Direction::new(
                in_enabled,
                &[Counter::Posted, Counter::DeadLettered, Counter::Retries],
            ),
            unhealthy_after,
        }
    }

    /// `(healthy, body)` as `/healthz` answers it.
    pub fn report(&self) -> (bool, serde_json::Value) {
        let out = self.out.report(self.unhealthy_after);
        let inbound = self.inbound.report(self.unhealthy_after);
        let healthy = out.healthy && inbound.healthy;
        let body = serde_json::json!({
            "status": if healthy { "ok" } else { "failing" },
            "out": out,
            "in": inbound,
        });
        (healthy, body)
    }
}

async fn healthz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let (healthy, body) = health.report();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Serves `GET /healthz` on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_until_started_and_after_failing_too_long() {
        let health = Health::new(true, false, Duration::from_secs(60));
        assert!(!health.report().0, "out not started yet");
        health.out.set_running(true);
        let (healthy, body) = health.report();
        assert!(healthy, "{body}");
        assert_eq!(body["in"]["enabled"], false);
        assert_eq!(body["out"]["counts"]["produced"], 0);

        health.out.failure(&"service answered 503");
        let (healthy, body) = health.report();
        assert!(healthy, "a short failure is tolerated: {body}");
        assert_eq!(body["out"]["counts"]["retries"], 1);
        assert_eq!(body["out"]["last_error"], "service answered 503");

        let strict = Health::new(true, false, Duration::ZERO);
        strict.out.set_running(true);
        strict.out.failure(&"down");
        assert!(!strict.report().0, "failing past the threshold");
        strict.out.success();
        assert!(strict.report().0, "a success clears the failure");
    }
}
