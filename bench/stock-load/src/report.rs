//! What a run reports: per-operation rates and latencies, errors, the
//! business outcome, the invariant check and the ratio to the bare-CAS
//! reference; rendered as a human table and serialized as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::invariants::InvariantReport;
use crate::stats::{OpSummary, Recorder};

/// The measurements of one scenario (or of the CAS reference).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `flash-sale`, `spread` or `cas`.
    pub scenario: String,
    pub target: String,
    pub concurrency: usize,
    /// Length of the load phase (set-up and invariant reads excluded).
    pub elapsed_secs: f64,
    /// Why the load stopped: `sold out`, `duration limit`, `request limit`,
    /// or `too many consecutive errors`.
    pub stop_reason: String,
    pub operations: Vec<OpSummary>,
    pub total: OpSummary,
    /// Non-2xx responses and transport failures, by `"op status code"`.
    pub errors: BTreeMap<String, u64>,
    /// Errors other than `409 insufficient_stock` on reserve and retried 503s.
    pub unexpected_errors: u64,
    pub retries_503: u64,
    /// What the stock scenarios achieved (absent for the CAS reference).
    pub outcomes: Option<Outcomes>,
    /// The end-of-run check (absent for the CAS reference).
    pub invariants: Option<InvariantReport>,
}

impl Report {
    /// Summarizes a finished load phase.
    pub fn new(
        scenario: &str,
        target: &str,
        concurrency: usize,
        elapsed: Duration,
        stop_reason: &str,
        recorder: &Recorder,
    ) -> Self {
        let (operations, total) = recorder.summarize(elapsed);
        let errors = recorder.errors().clone();
        Self {
            scenario: scenario.to_owned(),
            target: target.to_owned(),
            concurrency,
            elapsed_secs: elapsed.as_secs_f64(),
            stop_reason: stop_reason.to_owned(),
            operations,
            total,
            unexpected_errors: unexpected_errors(&errors),
            errors,
            retries_503: recorder.retries_503(),
            outcomes: None,
            invariants: None,
        }
    }
}

/// Errors that are not part of a normal run: all but `409
/// insufficient_stock` on reserve (the end of a sale) and 503s (retried, and
/// counted as retries).
pub fn unexpected_errors(errors: &BTreeMap<String, u64>) -> u64 {
    errors
        .iter()
        .filter(|(key, _)| {
            let status = key.split(' ').nth(1);
            !(key.as_str() == "reserve 409 insufficient_stock" || status == Some("503"))
        })
        .map(|(_, count)| count)
        .sum()
}

/// The business outcome of a stock scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub products: usize,
    pub units_per_product: u64,
    /// Units per reservation.
    pub quantity: u64,
    /// Successful reservations.
    pub reservations: u64,
    pub commits: u64,
    pub releases: u64,
    pub committed_units: u64,
    /// Units of reservations still pending at the end.
    pub pending_units: u64,
    /// Mutations whose outcome stayed unknown.
    pub unresolved: u64,
}

/// The stock rate relative to the bare-CAS rate of the same run (SPEC §7).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// Stock requests served (status < 500) per second.
    pub stock_per_sec: f64,
    /// Bare-CAS requests served per second.
    pub cas_per_sec: f64,
    pub ratio: f64,
    /// SPEC §7: hot product ≥ 0.5, spread ≥ 0.7.
    pub target: f64,
    pub met: bool,
}

impl Ratio {
    /// Compares a scenario's served rate with the CAS reference's.
    pub fn new(stock: &Report, cas: &Report, target: f64) -> Self {
        let stock_per_sec = stock.total.served_per_sec;
        let cas_per_sec = cas.total.served_per_sec;
        let ratio = if cas_per_sec > 0.0 {
            stock_per_sec / cas_per_sec
        } else {
            0.0
        };
        Self {
            stock_per_sec,
            cas_per_sec,
            ratio,
            target,
            met: ratio >= target,
        }
    }
}

/// A whole run: the scenario, the CAS reference and their ratio.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: Report,
    pub cas: Option<Report>,
    pub ratio: Option<Ratio>,
}

impl RunReport {
    /// The invariant check passed.
    pub fn passed(&self) -> bool {
        self.scenario
            .invariants
            .as_ref()
            .is_some_and(|invariants| invariants.passed)
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        render_report(&mut out, &self.scenario);
        if let Some(cas) = &self.cas {
            out.push('\n');
            render_report(&mut out, cas);
        }
        if let Some(ratio) = &self.ratio {
            let _ = writeln!(
                out,
                "\nratio: stock {:.1} req/s / bare CAS {:.1} req/s = {:.1} % \
                 (SPEC §7 target >= {:.0} %: {})",
                ratio.stock_per_sec,
                ratio.cas_per_sec,
                ratio.ratio * 100.0,
                ratio.target * 100.0,
                if ratio.met { "met" } else { "NOT met" }
            );
        }
        out
    }
}

fn render_report(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "== {}  {}  concurrency {}  {:.2} s  stopped: {}",
        report.scenario, report.target, report.concurrency, report.elapsed_secs, report.stop_reason
    );
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "operation", "requests", "ok", "req/s", "served/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for op in report.operations.iter().chain([&report.total]) {
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>10.1} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            op.operation,
            op.requests,
            op.ok,
            op.requests_per_sec,
            op.served_per_sec,
            op.p50_ms,
            op.p95_ms,
            op.p99_ms,
            op.max_ms
        );
    }
    let _ = writeln!(
        out,
        "503 retries: {}   unexpected errors: {}",
        report.retries_503, report.unexpected_errors
    );
    for (key, count) in &report.errors {
        let _ = writeln!(out, "  {key:<40} {count:>9}");
    }
    if let Some(o) = &report.outcomes {
        let _ = writeln!(
            out,
            "outcome: {} product(s) x {} units, {} per reservation: {} reservations, \
             {} commits ({} units), {} releases, {} units still reserved, {} unresolved",
            o.products,
            o.units_per_product,
            o.quantity,
            o.reservations,
            o.commits,
            o.committed_units,
            o.releases,
            o.pending_units,
            o.unresolved
        );
    }
    if let Some(inv) = &report.invariants {
        let _ = writeln!(
            out,
            "invariants: {}  ({} product(s), oversold units {})",
            if inv.passed { "PASS" } else { "FAIL" },
            inv.products,
            inv.oversold_units
        );
        for tally in &inv.checks {
            let _ = writeln!(
                out,
                "  {:<38} passed {:>5}  failed {:>5}  skipped {:>5}",
                tally.check, tally.passed, tally.failed, tally.skipped
            );
        }
        for failure in &inv.failures {
            let _ = writeln!(out, "  FAIL {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::{
        Expected, HistoryTotals, InvariantReport, StockFigures, check_product,
    };
    use crate::stats::Op;

    fn report(scenario: &str, ok: u64, refused: u64, secs: u64) -> Report {
        let mut recorder = Recorder::default();
        for _ in 0..ok {
            recorder.response(Op::Reserve, 201, None, Duration::from_millis(2));
        }
        for _ in 0..refused {
            recorder.response(
                Op::Reserve,
                409,
                Some("insufficient_stock"),
                Duration::from_millis(1),
            );
        }
        Report::new(
            scenario,
            "http://127.0.0.1:1",
            4,
            Duration::from_secs(secs),
            "sold out",
            &recorder,
        )
    }

    #[test]
    fn only_unusual_errors_are_unexpected() {
        let errors: BTreeMap<String, u64> = [
            ("reserve 409 insufficient_stock", 5),
            ("commit 503 service_busy", 2),
            ("cas 503", 6),
            ("commit 409 insufficient_stock", 1),
            ("get_stock 404 product_not_found", 3),
            ("cas transport", 4),
        ]
        .into_iter()
        .map(|(key, count)| (key.to_owned(), count))
        .collect();
        assert_eq!(unexpected_errors(&errors), 1 + 3 + 4);
    }

    #[test]
    fn ratios_compare_served_rates() {
        let stock = report("flash-sale", 60, 40, 10);
        let cas = report("cas", 200, 0, 10);
        let ratio = Ratio::new(&stock, &cas, 0.5);
        assert_eq!(ratio.stock_per_sec, 10.0);
        assert_eq!(ratio.cas_per_sec, 20.0);
        assert_eq!(ratio.ratio, 0.5);
        assert!(ratio.met);
        assert!(!Ratio::new(&stock, &cas, 0.7).met);
        assert_eq!(Ratio::new(&stock, &report("cas", 0, 0, 1), 0.5).ratio, 0.0);
    }

    #[test]
    fn the_table_and_json_carry_every_part() {
        let mut stock = report("flash-sale", 3, 1, 1);
        stock.outcomes = Some(Outcomes {
            products: 1,
            units_per_product: 3,
            quantity: 1,
            reservations: 3,
            commits: 3,
            committed_units: 3,
            ..Outcomes::default()
        });
        let figures = StockFigures {
            on_hand: 0,
            reserved: 0,
            available: 0,
            committed: 3,
        };
        let history = HistoryTotals {
            supplied: 3,
            committed: 3,
            events: 6,
        };
        let expected = Expected {
            initial: 3,
            quantity: 1,
            committed_units: 3,
            held_units: 0,
            unresolved: 0,
            sold_out: true,
        };
        stock.invariants = Some(InvariantReport::new(&[check_product(
            "p", figures, history, expected,
        )]));
        let cas = report("cas", 8, 0, 1);
        let run = RunReport {
            ratio: Some(Ratio::new(&stock, &cas, 0.5)),
            scenario: stock,
            cas: Some(cas),
        };
        assert!(run.passed());
        let text = run.render();
        for needle in [
            "== flash-sale",
            "== cas",
            "reserve 409 insufficient_stock",
            "invariants: PASS",
            "oversold units 0",
            "conserved_by_history",
            "= 50.0 %",
            "target >= 50 %: met",
            "3 commits (3 units)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["scenario"]["invariants"]["oversold_units"], 0);
        assert_eq!(json["scenario"]["total"]["requests"], 4);
        assert_eq!(json["ratio"]["ratio"], 0.5);
        assert_eq!(json["cas"]["scenario"], "cas");
    }
}
