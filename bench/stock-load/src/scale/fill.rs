//! Filling a Spin SQLite key-value file natively, through the domain crate: the same
//! [`StockService`] the components run, over [`SqliteKv`], so the file holds exactly the
//! records, history, indexes and key formats the service writes over HTTP — only
//! without HTTP and without a sync per write.
//!
//! The file is synced to disk before the fill reports, so that serving it starts from
//! a clean page cache rather than with a gigabyte of unwritten pages.
//!
//! Time is simulated: the fill plays the trading that wrote the data, ending now, one
//! [`STEP_MS`] per service call (100,000 products × 20 entries: about 2.5 days), with
//! the expiry sweep called once a simulated minute as a cron job would, and a quiet
//! spell at the end, so the due-reservation index is as a running service keeps it.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use stock_domain::models::{Adjustment, IdempotencyKey, OrderId, ProductId, Quantity, StockLevel};
use stock_domain::models::{ReservationStatus, WarehouseId};
use stock_domain::ports::{Clock, IdGenerator};
use stock_domain::service::{AdjustStock, AdjustmentReason, Reserve, ReserveLine, UpdateStock};
use stock_domain::{Config, StockService};

use crate::sqlite_kv::{FillOptions, SqliteKv};

/// Simulated time between two service calls of the fill.
pub const STEP_MS: u64 = 100;
/// Simulated time between two runs of the expiry sweep (the cron job).
const SWEEP_EVERY_MS: u64 = 60_000;
/// Due reservations one sweep call looks at.
const SWEEP_LIMIT: usize = 1_000;
/// Sweep calls in a row before the fill gives up on reaching `done`.
const MAX_SWEEP_CALLS: usize = 100_000;
/// One product in this many among the first [`LOW_SPAN`] is left at or below its
/// low-stock threshold: 200 low products at every size from 1,000 on, so the alerts row
/// compares pages of the same content and only the store's size differs.
pub const LOW_EVERY: usize = 5;
pub const LOW_SPAN: usize = 1_000;
/// Units a product starts with, and its low-stock threshold.
const INITIAL_UNITS: u64 = 1_000;
const THRESHOLD: u64 = 10;
/// On-hand a low product is set to in its last round.
const LOW_UNITS: u64 = 5;
/// Simulated quiet time after the last reservation, before the fill ends: longer than
/// the default TTL plus the sweep's grace, so that every due entry the fill made has
/// come due and the last sweep has dealt with it, whatever N (the expiry sweep then
/// starts from the same steady state at every size).
const QUIET_MS: u64 = 20 * 60_000;
/// Store keys a settled reservation adds at least, for planning: its record, and its
/// two history entries once they leave the product record's outbox, which happens in
/// batches (measured: from about 1.2 to 3 per reservation, depending on how full the
/// outboxes were), so planning with 1 may overshoot but never creeps up on the target.
const KEYS_PER_RESERVATION: u64 = 1;

/// What to write into a store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FillPlan {
    /// Products, `scale-000000` …
    pub products: usize,
    /// History entries per product from stock updates and adjustments (the first one
    /// creates the product); settled reservations add two more each.
    pub history: usize,
    /// Settled reservations (reserve, then commit or, one in four, release), spread
    /// evenly over the products that are not low.
    pub reservations: usize,
    /// Keep adding settled reservations until the file holds at least this many keys.
    pub min_keys: Option<u64>,
}

impl FillPlan {
    /// Settled reservations the fill expects to make, to plan the simulated time.
    fn expected_reservations(&self) -> u64 {
        let base = self.reservations as u64;
        let Some(min_keys) = self.min_keys else {
            return base;
        };
        let per_product = self.history as u64 + 2;
        let missing = min_keys.saturating_sub(self.products as u64 * per_product);
        base.max(missing.div_ceil(KEYS_PER_RESERVATION) * 5 / 4)
    }

    /// Service calls the fill expects to make.
    fn expected_calls(&self) -> u64 {
        self.products as u64 * self.history as u64 + 2 * self.expected_reservations()
    }
}

/// The id of product `index`.
pub fn product_id(index: usize) -> String {
    format!("scale-{index:06}")
}

/// Whether product `index` is left at or below its threshold.
pub fn is_low(index: usize) -> bool {
    index < LOW_SPAN && index.is_multiple_of(LOW_EVERY)
}

/// What a fill wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillReport {
    pub plan: FillPlan,
    /// Settled reservations made.
    pub reservations: usize,
    /// `SELECT count(*) FROM spin_key_value` once filled.
    pub keys: u64,
    /// Size of the file once filled.
    pub file_bytes: u64,
    /// Wall-clock time of the fill.
    pub fill_secs: f64,
    /// The simulated time span the history covers, in hours.
    pub simulated_hours: f64,
}

/// The fill's clock: simulated time that moves [`STEP_MS`] per call (and by whatever
/// the service sleeps), until switched to the wall clock.
#[derive(Clone)]
struct FillClock {
    now: Rc<Cell<u64>>,
    wall: Rc<Cell<bool>>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FillClock {
    fn starting_at(ms: u64) -> Self {
        Self {
            now: Rc::new(Cell::new(ms)),
            wall: Rc::new(Cell::new(false)),
        }
    }

    /// One call's worth of simulated time, never past the wall clock.
    fn step(&self) {
        self.now.set((self.now.get() + STEP_MS).min(wall_ms()));
    }

    fn use_wall_clock(&self) {
        self.wall.set(true);
    }
}

impl Clock for FillClock {
    fn now_ms(&self) -> u64 {
        if self.wall.get() {
            wall_ms()
        } else {
            self.now.get()
        }
    }

    fn sleep_ms(&self, ms: u64) {
        if !self.wall.get() {
            self.now.set((self.now.get() + ms).min(wall_ms()));
        }
    }
}

/// Unique UUID-shaped ids from a counter, and jitter from it (nothing races in a fill).
#[derive(Clone, Default)]
struct CountingIds(Rc<Cell<u64>>);

impl IdGenerator for CountingIds {
    fn new_id(&self) -> String {
        let n = self.0.get() + 1;
        self.0.set(n);
        format!("5ca1e000-0000-4000-8000-{n:012x}")
    }

    fn jitter(&self, bound: u64) -> u64 {
        self.0.get() % bound.max(1)
    }
}

type FillService = StockService<SqliteKv, FillClock, CountingIds>;

struct Filler {
    service: FillService,
    kv: SqliteKv,
    clock: FillClock,
    next_sweep: u64,
}

impl Filler {
    fn call<T>(&self, what: impl FnOnce(&FillService) -> T) -> T {
        self.clock.step();
        what(&self.service)
    }

    /// Runs the sweep until `done` when a simulated minute has passed since the last.
    fn cron(&mut self) -> anyhow::Result<()> {
        if self.clock.now_ms() >= self.next_sweep {
            self.sweep()?;
            self.next_sweep = self.clock.now_ms() + SWEEP_EVERY_MS;
        }
        Ok(())
    }

    fn sweep(&self) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        for _ in 0..MAX_SWEEP_CALLS {
            let report = self
                .call(|s| s.expire_due(after.as_deref(), SWEEP_LIMIT))
                .context("expiry sweep")?;
            if report.done {
                return Ok(());
            }
            after = report.next;
        }
        bail!("the expiry sweep did not finish in {MAX_SWEEP_CALLS} calls")
    }
}

/// Fills a new store file at `path` (which must not exist) as `plan` says, into the
/// store labelled `store`, and reports what it wrote. `progress` is told what is going
/// on now and then.
pub fn fill(
    path: &Path,
    store: &str,
    plan: FillPlan,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<FillReport> {
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    let started = Instant::now();
    let kv = SqliteKv::open(path, store, FillOptions::FAST)?;
    let begin = wall_ms().saturating_sub(plan.expected_calls() * STEP_MS + QUIET_MS);
    let clock = FillClock::starting_at(begin);
    let mut config = Config::default();
    // The file is written by this one thread through a store that answers truthfully.
    config.retry.verify_writes = false;
    let mut filler = Filler {
        service: StockService::new(kv.clone(), clock.clone(), CountingIds::default(), config),
        kv: kv.clone(),
        clock: clock.clone(),
        next_sweep: begin,
    };

    let warehouse = WarehouseId::default_warehouse();
    let ids: Vec<ProductId> = (0..plan.products)
        .map(|i| ProductId::parse(product_id(i)).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    for round in 0..plan.history {
        for (index, id) in ids.iter().enumerate() {
            let last = round + 1 == plan.history;
            history_step(&filler, id, &warehouse, round, last && is_low(index))
                .with_context(|| format!("round {round} of {id}"))?;
        }
        filler.cron()?;
        progress(&format!(
            "history round {}/{} done ({:.0} s)",
            round + 1,
            plan.history,
            started.elapsed().as_secs_f64()
        ));
    }

    let settle = |filler: &mut Filler, k: usize| -> anyhow::Result<()> {
        let mut index = (k.wrapping_mul(7_919)) % ids.len();
        if is_low(index) {
            index = (index + 1) % ids.len();
        }
        settled_reservation(filler, &ids[index], k)?;
        filler.cron()
    };
    let mut reservations = 0;
    while reservations < plan.reservations {
        settle(&mut filler, reservations)?;
        reservations += 1;
    }
    if let Some(min_keys) = plan.min_keys {
        loop {
            let keys = filler.kv.count_keys()?;
            if keys >= min_keys || ids.is_empty() {
                break;
            }
            let batch = (min_keys - keys).div_ceil(KEYS_PER_RESERVATION) + 1;
            progress(&format!(
                "{keys} keys, adding about {batch} settled reservations ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
            for _ in 0..batch {
                settle(&mut filler, reservations)?;
                reservations += 1;
            }
        }
    }
    // A quiet spell with the cron job running, then up to now on the wall clock.
    let quiet_until = (clock.now_ms() + QUIET_MS).min(wall_ms());
    while clock.now_ms() < quiet_until {
        clock.sleep_ms(SWEEP_EVERY_MS);
        filler.cron()?;
    }
    clock.use_wall_clock();
    filler.sweep()?;
    kv.finish()?;
    let keys = kv.count_keys()?;
    drop(filler);
    drop(kv);
    // The fill wrote without syncing: flush it now, or the first write Spin syncs, and
    // the kernel's background writeback during the measurement, would pay for it.
    let file = std::fs::File::open(path)?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    let file_bytes = file.metadata()?.len();
    Ok(FillReport {
        plan,
        reservations,
        keys,
        file_bytes,
        fill_secs: started.elapsed().as_secs_f64(),
        simulated_hours: (wall_ms().saturating_sub(begin)) as f64 / 3_600_000.0,
    })
}

/// Round `round` of a product's history: created with [`INITIAL_UNITS`], then
/// restocked and damaged in turn; a low product is set to [`LOW_UNITS`] at the end.
fn history_step(
    filler: &Filler,
    id: &ProductId,
    warehouse: &WarehouseId,
    round: usize,
    make_low: bool,
) -> anyhow::Result<()> {
    let update = |units: u64| UpdateStock {
        product_id: id.clone(),
        warehouse_id: warehouse.clone(),
        quantity: StockLevel::new(i128::from(units)).expect("a valid level"),
        low_stock_threshold: Some(StockLevel::new(i128::from(THRESHOLD)).expect("valid")),
        idempotency_key: None,
    };
    if round == 0 || make_low {
        let units = if make_low { LOW_UNITS } else { INITIAL_UNITS };
        filler.call(|s| s.update_stock(update(units)))?;
        return Ok(());
    }
    let (delta, reason) = if round % 2 == 1 {
        (5, AdjustmentReason::Restock)
    } else {
        (-3, AdjustmentReason::Damage)
    };
    filler.call(|s| {
        s.adjust_stock(AdjustStock {
            product_id: id.clone(),
            warehouse_id: warehouse.clone(),
            adjustment: Adjustment::new(delta).expect("a valid adjustment"),
            reason,
            idempotency_key: None,
        })
    })?;
    Ok(())
}

/// Settled reservation `k`: one unit of `id` reserved, then committed, or released
/// for one in four. Every tenth carries an `Idempotency-Key`, as an order service's
/// retries would.
fn settled_reservation(filler: &Filler, id: &ProductId, k: usize) -> anyhow::Result<()> {
    let idempotency_key = k
        .is_multiple_of(10)
        .then(|| IdempotencyKey::parse(&format!("fill-{k}")))
        .transpose()?;
    let view = filler
        .call(|s| {
            s.reserve(Reserve {
                lines: vec![ReserveLine {
                    product_id: id.clone(),
                    quantity: Quantity::new(1).expect("a valid quantity"),
                    warehouse_id: None,
                }],
                ttl_ms: None,
                idempotency_key,
            })
        })
        .with_context(|| format!("reserving one unit of {id}"))?;
    let rid = view.reservation_id;
    let settled = if k % 4 == 3 {
        filler.call(|s| s.release(&rid))?
    } else {
        let order = OrderId::parse(format!("fill-order-{k}"))?;
        filler.call(|s| s.commit(&rid, &order))?
    };
    if !matches!(
        settled.status,
        ReservationStatus::Committed | ReservationStatus::Released
    ) {
        bail!("reservation {rid} ended {:?}", settled.status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_expect_enough_calls_for_their_keys() {
        let plain = FillPlan {
            products: 1_000,
            history: 20,
            reservations: 500,
            min_keys: None,
        };
        assert_eq!(plain.expected_reservations(), 500);
        assert_eq!(plain.expected_calls(), 21_000);
        let big = FillPlan {
            min_keys: Some(2_500_000),
            products: 100_000,
            ..plain
        };
        // 2.2M keys from the products, 300k missing: planned for 375k reservations.
        assert_eq!(big.expected_reservations(), 375_000);
        let full = FillPlan {
            min_keys: Some(10),
            ..plain
        };
        assert_eq!(full.expected_reservations(), 500);
    }

    #[test]
    fn a_fill_writes_what_the_service_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let plan = FillPlan {
            products: 60,
            history: 6,
            reservations: 40,
            min_keys: Some(700),
        };
        let report = fill(&path, "default", plan, |_| {}).unwrap();
        assert!(report.keys >= 700, "{report:?}");
        assert!(report.reservations >= 40);
        assert!(
            fill(&path, "default", plan, |_| {}).is_err(),
            "never over a file"
        );

        // The same domain code, over the finished file, sees a consistent store.
        let kv = SqliteKv::open(
            &path,
            "default",
            FillOptions {
                batch: 1,
                fast: false,
            },
        )
        .unwrap();
        assert_eq!(kv.count_keys().unwrap(), report.keys);
        let service = StockService::new(
            kv.clone(),
            FillClock {
                now: Rc::new(Cell::new(0)),
                wall: Rc::new(Cell::new(true)),
            },
            CountingIds(Rc::new(Cell::new(1 << 40))),
            Config::default(),
        );
        let mut listed = 0;
        let mut after = None;
        loop {
            let page = service.list_products(after.as_deref(), 25).unwrap();
            listed += page.items.len();
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, 60);
        let low = service.alerts(None, 100).unwrap();
        let mut alerted: Vec<String> = low
            .alerts
            .iter()
            .map(|a| a.product_id.as_str().to_owned())
            .collect();
        alerted.sort();
        let expected: Vec<String> = (0..60).filter(|i| is_low(*i)).map(product_id).collect();
        assert_eq!(alerted, expected);
        let id = ProductId::parse(product_id(1)).unwrap();
        let history = service.history(&id, 0, 100).unwrap();
        let stock = service.get_stock(&id).unwrap();
        assert!(history.entries.len() >= 6, "{}", history.entries.len());
        assert_eq!(stock.reserved_quantity, 0, "every reservation is settled");
        let sweep = service.expire_due(None, 1_000).unwrap();
        assert!(sweep.done && sweep.expired.is_empty(), "{sweep:?}");
        let reservation_records: i64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM spin_key_value WHERE key LIKE 'res/%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(reservation_records > 0, "reservation records");
    }
}
