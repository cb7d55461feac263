//! Measurements: per-operation latency samples and response counts collected
//! by each simulated client without locking, merged at the end, and
//! summarized as request rates and nearest-rank percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The operations the tool measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    GetStock,
    Availability,
    Reserve,
    Commit,
    Release,
    Cas,
}

impl Op {
    /// The name used in tables, error keys and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::GetStock => "get_stock",
            Self::Availability => "availability",
            Self::Reserve => "reserve",
            Self::Commit => "commit",
            Self::Release => "release",
            Self::Cas => "cas",
        }
    }
}

/// What one operation saw.
#[derive(Debug, Default, Clone)]
struct OpSamples {
    /// One latency per response, in microseconds.
    latencies_us: Vec<u64>,
    /// 2xx responses.
    ok: u64,
    /// Responses with a status below 500 (2xx and 4xx: requests the service served).
    served: u64,
}

/// Everything one client (or, once merged, a whole run) measured.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    ops: BTreeMap<Op, OpSamples>,
    /// Non-2xx responses and transport failures, by `"op status code"`.
    errors: BTreeMap<String, u64>,
    /// Requests sent again after a 503.
    retries_503: u64,
}

impl Recorder {
    /// Records one HTTP response.
    pub fn response(&mut self, op: Op, status: u16, code: Option<&str>, latency: Duration) {
        let samples = self.ops.entry(op).or_default();
        samples
            .latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        if (200..300).contains(&status) {
            samples.ok += 1;
        } else {
            let key = match code {
                Some(code) => format!("{} {status} {code}", op.name()),
                None => format!("{} {status}", op.name()),
            };
            *self.errors.entry(key).or_default() += 1;
        }
        if status < 500 {
            samples.served += 1;
        }
    }

    /// Records a request that got no response (connection failure, timeout).
    pub fn transport_error(&mut self, op: Op) {
        *self
            .errors
            .entry(format!("{} transport", op.name()))
            .or_default() += 1;
    }

    /// Records that a request is sent again after a 503.
    pub fn retry_503(&mut self) {
        self.retries_503 += 1;
    }

    /// Adds another recorder's measurements to this one.
    pub fn merge(&mut self, other: Self) {
        for (op, samples) in other.ops {
            let mine = self.ops.entry(op).or_default();
            mine.latencies_us.extend(samples.latencies_us);
            mine.ok += samples.ok;
            mine.served += samples.served;
        }
        for (key, count) in other.errors {
            *self.errors.entry(key).or_default() += count;
        }
        self.retries_503 += other.retries_503;
    }

    /// Per-operation summaries (in [`Op`] order) and the all-operations total,
    /// with rates over `elapsed`.
    pub fn summarize(&self, elapsed: Duration) -> (Vec<OpSummary>, OpSummary) {
        let per_op = self
            .ops
            .iter()
            .map(|(op, samples)| OpSummary::new(op.name(), samples.clone(), elapsed))
            .collect();
        let mut all = OpSamples::default();
        for samples in self.ops.values() {
            all.latencies_us.extend_from_slice(&samples.latencies_us);
            all.ok += samples.ok;
            all.served += samples.served;
        }
        (per_op, OpSummary::new("total", all, elapsed))
    }

    /// Non-2xx responses and transport failures by `"op status code"`.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Requests sent again after a 503.
    pub fn retries_503(&self) -> u64 {
        self.retries_503
    }
}

/// Rates and latency percentiles of one operation (or of all of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    pub operation: String,
    /// Responses received (every attempt, retries included).
    pub requests: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Responses with a status below 500, per second: the rate compared with
    /// the bare-CAS reference.
    pub served_per_sec: f64,
    /// Responses per second.
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl OpSummary {
    fn new(operation: &str, mut samples: OpSamples, elapsed: Duration) -> Self {
        samples.latencies_us.sort_unstable();
        let sorted = &samples.latencies_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let requests = sorted.len() as u64;
        Self {
            operation: operation.to_owned(),
            requests,
            ok: samples.ok,
            served_per_sec: rate(samples.served, elapsed),
            requests_per_sec: rate(requests, elapsed),
            p50_ms: ms(percentile(sorted, 50.0)),
            p95_ms: ms(percentile(sorted, 95.0)),
            p99_ms: ms(percentile(sorted, 99.0)),
            max_ms: ms(sorted.last().copied().unwrap_or(0)),
        }
    }
}

/// `count` per second over `elapsed` (0 for an empty interval).
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of ascending `sorted`
/// samples: the smallest sample with at least p % of the samples at or below
/// it; 0 when there are none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), 50);
        assert_eq!(percentile(&samples, 95.0), 95);
        assert_eq!(percentile(&samples, 99.0), 99);
        assert_eq!(percentile(&samples, 100.0), 100);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 99.0), 4);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn summaries_count_rates_errors_and_percentiles() {
        let mut first = Recorder::default();
        for ms in 1..=10 {
            first.response(Op::Reserve, 201, None, Duration::from_millis(ms));
        }
        first.response(
            Op::Reserve,
            409,
            Some("insufficient_stock"),
            Duration::from_millis(20),
        );
        let mut second = Recorder::default();
        second.response(Op::Commit, 200, None, Duration::from_millis(4));
        second.response(
            Op::Commit,
            503,
            Some("service_busy"),
            Duration::from_millis(2),
        );
        second.retry_503();
        second.transport_error(Op::Commit);
        first.merge(second);

        let (per_op, total) = first.summarize(Duration::from_secs(2));
        assert_eq!(per_op.len(), 2);
        let reserve = &per_op[0];
        assert_eq!(reserve.operation, "reserve");
        assert_eq!((reserve.requests, reserve.ok), (11, 10));
        assert_eq!(reserve.requests_per_sec, 5.5);
        assert_eq!(reserve.served_per_sec, 5.5);
        assert_eq!(reserve.p50_ms, 6.0);
        assert_eq!(reserve.p99_ms, 20.0);
        assert_eq!(reserve.max_ms, 20.0);
        let commit = &per_op[1];
        assert_eq!((commit.requests, commit.ok), (2, 1));
        assert_eq!(commit.served_per_sec, 0.5);
        assert_eq!((total.requests, total.ok), (13, 11));
        assert_eq!(total.served_per_sec, 6.0);

        assert_eq!(first.retries_503(), 1);
        let errors: Vec<(&str, u64)> = first
            .errors()
            .iter()
            .map(|(key, count)| (key.as_str(), *count))
            .collect();
        assert_eq!(
            errors,
            [
                ("commit 503 service_busy", 1),
                ("commit transport", 1),
                ("reserve 409 insufficient_stock", 1),
            ]
        );
    }

    #[test]
    fn rates_over_an_empty_interval_are_zero() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_millis(500)), 20.0);
    }
}
