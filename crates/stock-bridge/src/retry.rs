//! Retrying transient failures (service 5xx, network errors, broker delivery errors):
//! exponential delays with jitter, without limit — the bridge never skips an entry or a
//! record — and every wait cut short by shutdown.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::health::Direction;

/// The delays between attempts: `min`, then doubling up to `max`, forever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
}

impl Backoff {
    /// Delays from `min` doubling to at most `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            builder: ExponentialBuilder::new()
                .with_min_delay(min)
                .with_max_delay(max.max(min))
                .with_jitter()
                .without_max_times(),
        }
    }

    /// A fresh, endless sequence of delays (one per retry of one piece of work).
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        self.builder.build()
    }
}

/// Sleeps for `delay`; `false` when shutdown came first (the caller then gives up the work
/// without recording it as done).
pub(crate) async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Runs `attempt` until it succeeds, waiting `backoff`'s delays between failures and
/// recording each failure on `direction`. `None` when shutdown came first — also in the
/// middle of an attempt, which is then dropped unfinished.
pub(crate) async fn until_ok<T, E, F, Fut>(
    shutdown: &CancellationToken,
    backoff: &Backoff,
    direction: &Direction,
    what: &str,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = backoff.delays();
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return None,
            result = attempt() => result,
        };
        match result {
            Ok(value) => return Some(value),
            Err(error) => {
                direction.failure(&error);
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "{what} failed");
                if !pause(shutdown, delay).await {
                    return None;
                }
            }
        }
    }
}
