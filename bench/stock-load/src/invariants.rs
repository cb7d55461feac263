//! The end-of-run invariant check (SPEC §5), done through the API only: each
//! product's figures (`GET /v1/stock/{id}`) and audit trail
//! (`GET /v1/stock/{id}/history`) are compared with each other and with what
//! the tool itself did. Oversold units must be 0 and stock must be conserved.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::http::{Call, Connection};

/// Events per history page requested (the service's maximum).
const HISTORY_PAGE: usize = 500;
/// Bound on history pages read for one product.
const MAX_HISTORY_PAGES: usize = 10_000;
/// Attempts per read (a 503 or a transport error is retried after a pause).
const READ_ATTEMPTS: u32 = 5;
/// Failures listed in a report (the tallies count them all).
const MAX_LISTED_FAILURES: usize = 50;

/// A product's figures as `GET /v1/stock/{id}` reports them. Signed so that a
/// negative count (or a `u64` that wrapped around below zero) shows as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockFigures {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub committed: i64,
}

impl StockFigures {
    /// Reads the four counts of a stock response.
    pub fn from_json(stock: &Value) -> anyhow::Result<Self> {
        Ok(Self {
            on_hand: count(stock, "on_hand")?,
            reserved: count(stock, "reserved_quantity")?,
            available: count(stock, "available_quantity")?,
            committed: count(stock, "committed_quantity")?,
        })
    }
}

/// An integer field; a `u64` above `i64::MAX` is read as the negative number
/// it would be had an unsigned subtraction wrapped.
fn count(object: &Value, field: &str) -> anyhow::Result<i64> {
    let value = object
        .get(field)
        .with_context(|| format!("no {field:?} in {object}"))?;
    value
        .as_i64()
        .or_else(|| value.as_u64().map(|wrapped| wrapped as i64))
        .with_context(|| format!("{field:?} is not an integer: {value}"))
}

/// Sums over a product's audit trail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryTotals {
    /// Σ `data.quantity` of StockUpdated and StockAdjusted (signed changes).
    pub supplied: i64,
    /// Σ `data.quantity` of StockCommitted.
    pub committed: i64,
    /// Events read.
    pub events: u64,
}

impl HistoryTotals {
    /// Adds one CloudEvent of the history feed.
    pub fn add(&mut self, event: &Value) -> anyhow::Result<()> {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .with_context(|| format!("event without a type: {event}"))?;
        let quantity = || {
            event
                .get("data")
                .context("event without data")
                .and_then(|data| count(data, "quantity"))
        };
        match kind {
            "StockUpdated" | "StockAdjusted" => self.supplied += quantity()?,
            "StockCommitted" => self.committed += quantity()?,
            _ => {}
        }
        self.events += 1;
        Ok(())
    }
}

/// What the tool knows a product must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// On-hand units the tool set before the load.
    pub initial: u64,
    /// Units per reservation.
    pub quantity: u64,
    /// Units of the tool's successful commits.
    pub committed_units: u64,
    /// Units of the tool's reservations still pending at the end.
    pub held_units: u64,
    /// Mutations whose outcome the tool could not learn (the checks that
    /// depend on the tool's own accounting are then skipped).
    pub unresolved: u64,
    /// The flash sale ended with every client refused for insufficient stock.
    pub sold_out: bool,
}

/// The result of one check on one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skipped,
}

/// Every check on one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductCheck {
    pub product_id: String,
    pub oversold_units: u64,
    pub checks: Vec<(&'static str, Verdict)>,
}

impl ProductCheck {
    /// A product whose figures or history could not be read.
    pub fn unreadable(product_id: &str, error: &anyhow::Error) -> Self {
        Self {
            product_id: product_id.to_owned(),
            oversold_units: 0,
            checks: vec![("readable", Verdict::Fail(format!("{error:#}")))],
        }
    }
}

/// Compares a product's figures and history with each other and with what
/// the tool did.
pub fn check_product(
    product_id: &str,
    figures: StockFigures,
    history: HistoryTotals,
    expected: Expected,
) -> ProductCheck {
    let StockFigures {
        on_hand,
        reserved,
        available,
        committed,
    } = figures;
    let initial = to_i64(expected.initial);
    let verdict = |ok: bool, detail: String| {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail(detail)
        }
    };
    let exact = |ok: bool, detail: String| {
        if expected.unresolved > 0 {
            Verdict::Skipped
        } else {
            verdict(ok, detail)
        }
    };
    let committed_units = to_i64(expected.committed_units);
    let held_units = to_i64(expected.held_units);
    let quantity = to_i64(expected.quantity);
    let checks = vec![
        (
            "non_negative",
            verdict(
                on_hand >= 0 && reserved >= 0 && available >= 0 && committed >= 0,
                format!(
                    "on_hand {on_hand}, reserved {reserved}, available {available}, committed {committed}"
                ),
            ),
        ),
        (
            "available_is_on_hand_minus_reserved",
            verdict(
                available == on_hand - reserved,
                format!("available {available} != on_hand {on_hand} - reserved {reserved}"),
            ),
        ),
        (
            "not_oversold",
            verdict(
                committed + reserved <= initial,
                format!("committed {committed} + reserved {reserved} > initial {initial}"),
            ),
        ),
        (
            "committed_matches_commits",
            exact(
                committed == committed_units,
                format!("committed_quantity {committed} != {committed_units} units committed"),
            ),
        ),
        (
            "on_hand_is_initial_minus_commits",
            exact(
                on_hand == initial - committed_units,
                format!("on_hand {on_hand} != initial {initial} - committed {committed_units}"),
            ),
        ),
        (
            "reserved_matches_pending",
            exact(
                reserved == held_units,
                format!("reserved_quantity {reserved} != {held_units} units held"),
            ),
        ),
        (
            "conserved_by_history",
            verdict(
                on_hand == history.supplied - history.committed,
                format!(
                    "on_hand {on_hand} != updates+adjustments {} - commits {} ({} events)",
                    history.supplied, history.committed, history.events
                ),
            ),
        ),
        (
            "history_commits_match",
            verdict(
                history.committed == committed,
                format!(
                    "StockCommitted events total {} != committed_quantity {committed}",
                    history.committed
                ),
            ),
        ),
        (
            "sold_out",
            if expected.sold_out {
                exact(
                    available < quantity && reserved == 0,
                    format!("sale ended with available {available}, reserved {reserved}"),
                )
            } else {
                Verdict::Skipped
            },
        ),
    ];
    let oversold =
        (committed + reserved - initial).max(0) + (-available).max(0) + (-on_hand).max(0);
    ProductCheck {
        product_id: product_id.to_owned(),
        oversold_units: oversold.unsigned_abs(),
        checks,
    }
}

fn to_i64(units: u64) -> i64 {
    i64::try_from(units).unwrap_or(i64::MAX)
}

/// How many products passed, failed or skipped one check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckTally {
    pub check: String,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// The invariant check of a whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvariantReport {
    /// No check failed and no unit was oversold.
    pub passed: bool,
    pub products: usize,
    /// Σ over products of units held or sold beyond the stock, plus any
    /// negative available or on-hand count.
    pub oversold_units: u64,
    pub checks: Vec<CheckTally>,
    /// The first failures, as `product: check: detail`.
    pub failures: Vec<String>,
}

impl InvariantReport {
    /// Tallies the checks of every product.
    pub fn new(products: &[ProductCheck]) -> Self {
        let mut tallies: BTreeMap<&str, CheckTally> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut failed_any = false;
        for product in products {
            for (name, verdict) in &product.checks {
                let tally = tallies.entry(name).or_insert_with(|| CheckTally {
                    check: (*name).to_owned(),
                    ..CheckTally::default()
                });
                match verdict {
                    Verdict::Pass => tally.passed += 1,
                    Verdict::Skipped => tally.skipped += 1,
                    Verdict::Fail(detail) => {
                        tally.failed += 1;
                        failed_any = true;
                        if failures.len() < MAX_LISTED_FAILURES {
                            failures.push(format!("{}: {name}: {detail}", product.product_id));
                        }
                    }
                }
            }
        }
        let oversold_units = products.iter().map(|p| p.oversold_units).sum();
        Self {
            passed: !failed_any && oversold_units == 0 && !products.is_empty(),
            products: products.len(),
            oversold_units,
            checks: tallies.into_values().collect(),
            failures,
        }
    }
}

/// Reads a product's figures and history and checks them.
pub async fn inspect(
    connection: &mut Connection,
    product_id: &str,
    expected: Expected,
) -> ProductCheck {
    let read = async {
        let stock = read_json(connection, &format!("/v1/stock/{product_id}")).await?;
        let figures = StockFigures::from_json(&stock)?;
        let history = read_history(connection, product_id).await?;
        anyhow::Ok((figures, history))
    };
    match read.await {
        Ok((figures, history)) => check_product(product_id, figures, history, expected),
        Err(error) => ProductCheck::unreadable(product_id, &error),
    }
}

/// Sums the whole audit trail of a product, page by page.
async fn read_history(
    connection: &mut Connection,
    product_id: &str,
) -> anyhow::Result<HistoryTotals> {
    let mut totals = HistoryTotals::default();
    let mut after: Option<u64> = None;
    for _ in 0..MAX_HISTORY_PAGES {
        let mut path = format!("/v1/stock/{product_id}/history?limit={HISTORY_PAGE}");
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        let page = read_json(connection, &path).await?;
        let events = page
            .get("events")
            .and_then(Value::as_array)
            .with_context(|| format!("history page without events: {page}"))?;
        for event in events {
            totals.add(event)?;
        }
        match page.get("next_after").and_then(Value::as_u64) {
            Some(next) if !events.is_empty() => {
                ensure!(
                    after.is_none_or(|previous| next > previous),
                    "history cursor did not advance ({next})"
                );
                after = Some(next);
            }
            _ => return Ok(totals),
        }
    }
    bail!("history of {product_id} has more than {MAX_HISTORY_PAGES} pages")
}

/// `GET path` → 200 JSON, retrying 503s and transport errors a few times.
async fn read_json(connection: &mut Connection, path: &str) -> anyhow::Result<Value> {
    let mut last_error = None;
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        let call = Call {
            method: Method::GET,
            path,
            token: None,
            idempotency_key: None,
            body: None,
        };
        match connection.send(call).await {
            Ok(reply) if reply.status.is_success() => {
                return reply
                    .json()
                    .with_context(|| format!("GET {path}: the body is not JSON"));
            }
            Ok(reply) if reply.status.as_u16() == 503 => {
                last_error = Some(anyhow::anyhow!("GET {path}: 503"));
            }
            Ok(reply) => bail!(
                "GET {path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
            Err(error) => last_error = Some(error.context(format!("GET {path}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("GET {path}: no attempt made")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn figures(on_hand: i64, reserved: i64, committed: i64) -> StockFigures {
        StockFigures {
            on_hand,
            reserved,
            available: on_hand - reserved,
            committed,
        }
    }

    fn history(supplied: i64, committed: i64) -> HistoryTotals {
        HistoryTotals {
            supplied,
            committed,
            events: 0,
        }
    }

    fn expected(initial: u64, committed_units: u64, held_units: u64) -> Expected {
        Expected {
            initial,
            quantity: 1,
            committed_units,
            held_units,
            unresolved: 0,
            sold_out: false,
        }
    }

    fn failed(check: &ProductCheck) -> Vec<&'static str> {
        check
            .checks
            .iter()
            .filter(|(_, verdict)| matches!(verdict, Verdict::Fail(_)))
            .map(|(name, _)| *name)
            .collect()
    }

    #[test]
    fn a_consistent_sold_out_product_passes_every_check() {
        let mut want = expected(60, 60, 0);
        want.sold_out = true;
        let check = check_product("p", figures(0, 0, 60), history(60, 60), want);
        assert_eq!(failed(&check), Vec::<&str>::new());
        assert_eq!(check.oversold_units, 0);
        let report = InvariantReport::new(&[check]);
        assert!(report.passed);
        assert!(
            report
                .checks
                .iter()
                .all(|t| t.failed == 0 && t.skipped == 0)
        );
    }

    #[test]
    fn overselling_is_counted_and_fails() {
        // 10 units, 9 committed and 3 still reserved: 2 units oversold, and the
        // figures claim a negative availability.
        let check = check_product("p", figures(1, 3, 9), history(10, 9), expected(10, 9, 3));
        assert_eq!(
            failed(&check),
            ["non_negative", "not_oversold"],
            "{check:?}"
        );
        assert_eq!(check.oversold_units, 2 + 2);
        let report = InvariantReport::new(&[check]);
        assert!(!report.passed);
        assert_eq!(report.oversold_units, 4);
        assert_eq!(report.failures.len(), 2);
    }

    #[test]
    fn a_lost_commit_breaks_the_accounting_and_conservation() {
        // The tool committed 5 units but the service recorded only 4 and kept
        // the unit on hand without an event explaining it.
        let check = check_product("p", figures(7, 0, 4), history(10, 4), expected(10, 5, 0));
        assert_eq!(
            failed(&check),
            [
                "committed_matches_commits",
                "on_hand_is_initial_minus_commits",
                "conserved_by_history"
            ]
        );
    }

    #[test]
    fn unresolved_outcomes_skip_only_the_accounting_checks() {
        let mut want = expected(10, 5, 0);
        want.unresolved = 1;
        let check = check_product("p", figures(4, 0, 6), history(10, 6), want);
        assert_eq!(failed(&check), Vec::<&str>::new());
        let skipped: Vec<&str> = check
            .checks
            .iter()
            .filter(|(_, verdict)| *verdict == Verdict::Skipped)
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(
            skipped,
            [
                "committed_matches_commits",
                "on_hand_is_initial_minus_commits",
                "reserved_matches_pending",
                "sold_out"
            ]
        );
    }

    #[test]
    fn a_sale_that_ends_with_units_left_is_not_sold_out() {
        let mut want = expected(10, 8, 0);
        want.sold_out = true;
        let check = check_product("p", figures(2, 0, 8), history(10, 8), want);
        assert_eq!(failed(&check), ["sold_out"]);
    }

    #[test]
    fn wrapped_counts_read_as_negative() {
        let stock = json!({
            "on_hand": 3,
            "reserved_quantity": 4,
            "available_quantity": u64::MAX,
            "committed_quantity": 0
        });
        let figures = StockFigures::from_json(&stock).unwrap();
        assert_eq!(figures.available, -1);
        assert!(StockFigures::from_json(&json!({"on_hand": 1})).is_err());
    }

    #[test]
    fn history_sums_supply_and_commits_only() {
        let mut totals = HistoryTotals::default();
        for (kind, quantity) in [
            ("StockUpdated", 100),
            ("StockAdjusted", -5),
            ("StockReserved", 3),
            ("StockCommitted", 3),
            ("StockReleased", 1),
            ("LowStockAlert", 92),
        ] {
            totals
                .add(&json!({"type": kind, "data": {"quantity": quantity}}))
                .unwrap();
        }
        assert_eq!(
            totals,
            HistoryTotals {
                supplied: 95,
                committed: 3,
                events: 6
            }
        );
        assert!(totals.add(&json!({"data": {}})).is_err());
        assert!(totals.add(&json!({"type": "StockCommitted"})).is_err());
    }

    #[test]
    fn unreadable_products_fail_the_report() {
        let error = anyhow::anyhow!("GET /v1/stock/p: 500");
        let report = InvariantReport::new(&[ProductCheck::unreadable("p", &error)]);
        assert!(!report.passed);
        assert_eq!(report.failures, ["p: readable: GET /v1/stock/p: 500"]);
        assert!(!InvariantReport::new(&[]).passed);
    }
}
