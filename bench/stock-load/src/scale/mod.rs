//! The `scale` scenario: does a request cost more when the service holds more data?
//!
//! For each catalogue size N it [fills](fill) a Spin SQLite key-value file natively,
//! through the domain crate (N products with H history entries each, P settled
//! reservations), starts a real `spin up` whose store `default` is that file (one per
//! N, all running at once), and measures p50/p99 of every endpoint with sequential
//! requests on random products, alternating between the sizes ([`measure`]). The report is a table (rows: endpoints, columns: N) with each row's
//! growth ratio between the largest and the smallest N. With `min_keys` the fill goes
//! on until the file holds that many keys.

mod fill;
mod measure;
mod spin;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, ensure};
use serde::Serialize;

pub use fill::{FillPlan, FillReport, STEP_MS, fill};
pub use measure::{Endpoint, EndpointLatency, Samples};
pub use spin::{SpinOptions, SpinServer, runtime_config};

/// Everything a `scale` run needs.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Catalogue sizes, one fill and one `spin up` each, in this order.
    pub products: Vec<usize>,
    /// History entries per product from updates and adjustments.
    pub history: usize,
    /// Settled reservations per fill; `None`: as many as products.
    pub reservations: Option<usize>,
    /// Fill until the file holds this many keys.
    pub min_keys: Option<u64>,
    pub samples: Samples,
    pub spin: SpinOptions,
    /// The key-value store label the application uses.
    pub store: String,
    /// Where the store files, runtime configs and Spin logs go (one directory per N).
    pub work_dir: PathBuf,
    /// Keep the store files after the run.
    pub keep: bool,
}

impl ScaleConfig {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.products.is_empty(), "no catalogue size");
        ensure!(
            self.products.iter().all(|n| *n >= 2),
            "every catalogue size must be at least 2"
        );
        ensure!(
            self.history >= 1,
            "history must be at least 1 (the creation)"
        );
        ensure!(self.samples.each >= 1, "samples must be at least 1");
        Ok(())
    }
}

/// One catalogue size: what was filled, and what each endpoint answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeReport {
    pub fill: FillReport,
    pub endpoints: Vec<EndpointLatency>,
}

/// A row's growth: its p50 at the largest N over its p50 at the smallest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    pub endpoint: Endpoint,
    pub from_products: usize,
    pub to_products: usize,
    /// `None` when either p50 is missing (a failed endpoint) or zero.
    pub p50_ratio: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleReport {
    /// How the data got there, for whoever reads the report.
    pub method: String,
    pub samples: Samples,
    pub sizes: Vec<SizeReport>,
    pub growth: Vec<Growth>,
}

/// The statement every report carries about how the data was written.
pub fn method_note(store: &str) -> String {
    format!(
        "Data written natively through the domain crate (stock_domain::StockService over \
         Spin's SQLite key-value schema and statements, simulated time, {STEP_MS} ms per \
         call, expiry sweep every simulated minute) into the SQLite file that `spin up` \
         then serves as its `{store}` store; latencies measured over HTTP on real Spin (one \
         `spin up` per size, all running), sequential requests on random products, one \
         new connection each, alternating between the sizes."
    )
}

impl ScaleReport {
    /// Builds the report and its growth ratios from the sizes measured.
    pub fn new(method: String, samples: Samples, sizes: Vec<SizeReport>) -> Self {
        let growth = growth(&sizes);
        Self {
            method,
            samples,
            sizes,
            growth,
        }
    }

    /// True when every endpoint answered every sample correctly.
    pub fn passed(&self) -> bool {
        self.sizes
            .iter()
            .all(|size| size.endpoints.iter().all(|e| e.failure.is_none()))
    }

    /// The report as text: what was filled, the latency table, the growth ratios,
    /// and any wrong answer.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", self.method);
        let _ = writeln!(
            out,
            "{:>9} {:>8} {:>13} {:>11} {:>10} {:>9} {:>10}",
            "products", "history", "reservations", "keys", "file MiB", "fill s", "sim hours"
        );
        for size in &self.sizes {
            let f = &size.fill;
            let _ = writeln!(
                out,
                "{:>9} {:>8} {:>13} {:>11} {:>10.1} {:>9.1} {:>10.1}",
                f.plan.products,
                f.plan.history,
                f.reservations,
                f.keys,
                f.file_bytes as f64 / (1024.0 * 1024.0),
                f.fill_secs,
                f.simulated_hours
            );
        }
        let _ = writeln!(out);
        let _ = write!(out, "{:<26}", "p50 / p99 ms");
        for size in &self.sizes {
            let _ = write!(out, " {:>19}", format!("N={}", size.fill.plan.products));
        }
        let _ = writeln!(out, " {:>12}", "p50 growth");
        for growth in &self.growth {
            let endpoint = growth.endpoint;
            let _ = write!(out, "{:<26}", endpoint.label());
            for size in &self.sizes {
                let cell = match size.endpoints.iter().find(|e| e.endpoint == endpoint) {
                    Some(e) if e.failure.is_none() => format!("{:.1} / {:.1}", e.p50_ms, e.p99_ms),
                    Some(_) => "FAILED".to_owned(),
                    None => "-".to_owned(),
                };
                let _ = write!(out, " {cell:>19}");
            }
            let ratio = growth
                .p50_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
            let _ = writeln!(out, " {ratio:>12}");
        }
        for size in &self.sizes {
            for e in &size.endpoints {
                if let Some(failure) = &e.failure {
                    let _ = writeln!(
                        out,
                        "\nN={} {} FAILED after {} good samples: {failure}",
                        size.fill.plan.products,
                        e.endpoint.label(),
                        e.samples
                    );
                }
            }
        }
        out
    }

    /// The table in Markdown (rows: endpoints, columns: N, then the growth ratio).
    pub fn markdown(&self) -> String {
        let mut out = String::from("| endpoint (p50 / p99 ms) |");
        for size in &self.sizes {
            let _ = write!(out, " N = {} |", size.fill.plan.products);
        }
        out.push_str(" p50 growth |\n|---|");
        for _ in &self.sizes {
            out.push_str("---|");
        }
        out.push_str("---|\n");
        for growth in &self.growth {
            let _ = write!(out, "| `{}` |", growth.endpoint.label());
            for size in &self.sizes {
                let cell = match size
                    .endpoints
                    .iter()
                    .find(|e| e.endpoint == growth.endpoint)
                {
                    Some(e) if e.failure.is_none() => format!("{:.1} / {:.1}", e.p50_ms, e.p99_ms),
                    Some(_) => "failed".to_owned(),
                    None => "–".to_owned(),
                };
                let _ = write!(out, " {cell} |");
            }
            let ratio = growth
                .p50_ratio
                .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
            let _ = writeln!(out, " {ratio} |");
        }
        let _ = write!(out, "| keys in the store |");
        for size in &self.sizes {
            let _ = write!(out, " {} |", size.fill.keys);
        }
        out.push_str(" |\n");
        out
    }
}

/// Each measured endpoint's p50 at the largest N over its p50 at the smallest (none
/// with a single size).
pub fn growth(sizes: &[SizeReport]) -> Vec<Growth> {
    let smallest = sizes.iter().min_by_key(|s| s.fill.plan.products);
    let largest = sizes.iter().max_by_key(|s| s.fill.plan.products);
    let (Some(smallest), Some(largest)) = (smallest, largest) else {
        return Vec::new();
    };
    let p50 = |size: &SizeReport, endpoint: Endpoint| {
        size.endpoints
            .iter()
            .find(|e| e.endpoint == endpoint && e.failure.is_none() && e.samples > 0)
            .map(|e| e.p50_ms)
            .filter(|ms| *ms > 0.0)
    };
    Endpoint::ALL
        .into_iter()
        .filter(|endpoint| {
            sizes
                .iter()
                .any(|s| s.endpoints.iter().any(|e| e.endpoint == *endpoint))
        })
        .map(|endpoint| Growth {
            endpoint,
            from_products: smallest.fill.plan.products,
            to_products: largest.fill.plan.products,
            p50_ratio: p50(largest, endpoint)
                .zip(p50(smallest, endpoint))
                .filter(|_| largest.fill.plan.products > smallest.fill.plan.products)
                .map(|(large, small)| large / small),
        })
        .collect()
}

/// Runs the scale scenario: fills a store file for each N, serves each with its own
/// real `spin up`, all at once, and measures them with alternating samples; `progress`
/// gets a line now and then.
pub fn run(config: &ScaleConfig, mut progress: impl FnMut(&str)) -> anyhow::Result<ScaleReport> {
    config.validate()?;
    std::fs::create_dir_all(&config.work_dir)
        .with_context(|| format!("creating {}", config.work_dir.display()))?;
    // Spin reads a relative store path from the runtime config file's directory.
    let work_dir = std::path::absolute(&config.work_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoints = Endpoint::ALL.to_vec();
    let mut fills = Vec::new();
    for &products in &config.products {
        let dir = work_dir.join(format!("n{products}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the previous {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("sqlite_key_value.db");
        let plan = FillPlan {
            products,
            history: config.history,
            reservations: config.reservations.unwrap_or(products),
            min_keys: config.min_keys,
        };
        progress(&format!("N={products}: filling {} natively", db.display()));
        let filled = fill(&db, &config.store, plan, |line| {
            progress(&format!("N={products}: {line}"));
        })?;
        progress(&format!(
            "N={products}: {} keys in {:.1} s",
            filled.keys, filled.fill_secs
        ));
        fills.push((dir, db, filled));
    }
    // Every size is served at once, so that their samples can alternate.
    let servers = fills
        .iter()
        .map(|(dir, db, filled)| {
            progress(&format!("N={}: starting spin up", filled.plan.products));
            SpinServer::start(&config.spin, &config.store, db, dir)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let targets: Vec<measure::Target> = servers
        .iter()
        .zip(&fills)
        .map(|(server, (_, _, filled))| measure::Target {
            base_url: server.base_url(),
            admin_token: &config.spin.admin_token,
            service_token: &config.spin.service_token,
            products: filled.plan.products,
        })
        .collect();
    progress("measuring, samples alternating between the sizes");
    let latencies = runtime.block_on(measure::measure(&targets, &endpoints, config.samples))?;
    drop(targets);
    drop(servers);
    let mut sizes = Vec::new();
    for ((_, db, filled), latencies) in fills.into_iter().zip(latencies) {
        for e in &latencies {
            progress(&format!(
                "N={}: {} p50 {:.1} ms p99 {:.1} ms ({} samples){}",
                filled.plan.products,
                e.endpoint.label(),
                e.p50_ms,
                e.p99_ms,
                e.samples,
                e.failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" FAILED: {f}"))
            ));
        }
        if !config.keep {
            std::fs::remove_file(&db).with_context(|| format!("removing {}", db.display()))?;
        }
        sizes.push(SizeReport {
            fill: filled,
            endpoints: latencies,
        });
    }
    Ok(ScaleReport::new(
        method_note(&config.store),
        config.samples,
        sizes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(products: usize, p50s: &[(Endpoint, f64, bool)]) -> SizeReport {
        SizeReport {
            fill: FillReport {
                plan: FillPlan {
                    products,
                    history: 20,
                    reservations: products,
                    min_keys: None,
                },
                reservations: products,
                keys: products as u64 * 25,
                file_bytes: 1 << 20,
                fill_secs: 1.5,
                simulated_hours: 2.0,
            },
            endpoints: p50s
                .iter()
                .map(|&(endpoint, p50_ms, ok)| EndpointLatency {
                    endpoint,
                    samples: if ok { 200 } else { 0 },
                    p50_ms,
                    p99_ms: p50_ms * 2.0,
                    max_ms: p50_ms * 3.0,
                    failure: (!ok).then(|| "status 500".to_owned()),
                })
                .collect(),
        }
    }

    #[test]
    fn growth_is_the_largest_ns_p50_over_the_smallest() {
        let sizes = vec![
            size(
                10_000,
                &[
                    (Endpoint::GetStock, 3.0, true),
                    (Endpoint::Events, 9.0, true),
                ],
            ),
            size(
                1_000,
                &[
                    (Endpoint::GetStock, 2.0, true),
                    (Endpoint::Events, 4.0, true),
                ],
            ),
            size(
                100_000,
                &[
                    (Endpoint::GetStock, 3.0, true),
                    (Endpoint::Events, 0.0, false),
                ],
            ),
        ];
        let growth = growth(&sizes);
        assert_eq!(growth.len(), 2);
        assert_eq!(growth[0].endpoint, Endpoint::GetStock);
        assert_eq!(
            (growth[0].from_products, growth[0].to_products),
            (1_000, 100_000)
        );
        assert_eq!(growth[0].p50_ratio, Some(1.5));
        assert_eq!(growth[1].endpoint, Endpoint::Events);
        assert_eq!(growth[1].p50_ratio, None, "failed at the largest N");
        assert!(super::growth(&[]).is_empty());
        let one = super::growth(&sizes[..1]);
        assert_eq!(one[0].p50_ratio, None, "one size has no growth");
    }

    #[test]
    fn the_table_shows_every_size_row_ratio_and_failure() {
        let report = ScaleReport::new(
            method_note("default"),
            Samples {
                each: 200,
                events: 200,
                expire: 20,
            },
            vec![
                size(
                    1_000,
                    &[
                        (Endpoint::GetStock, 2.0, true),
                        (Endpoint::Events, 4.0, true),
                    ],
                ),
                size(
                    100_000,
                    &[
                        (Endpoint::GetStock, 2.5, true),
                        (Endpoint::Events, 0.0, false),
                    ],
                ),
            ],
        );
        assert!(!report.passed());
        let text = report.render();
        assert!(
            text.contains("written natively through the domain crate"),
            "{text}"
        );
        assert!(
            text.contains("N=1000") && text.contains("N=100000"),
            "{text}"
        );
        assert!(
            text.contains("2.0 / 4.0") && text.contains("2.5 / 5.0"),
            "{text}"
        );
        assert!(text.contains("1.25x"), "{text}");
        assert!(
            text.contains("N=100000 GET /v1/events FAILED after 0 good samples: status 500"),
            "{text}"
        );
        assert!(
            text.contains("25000") && text.contains("2500000"),
            "keys: {text}"
        );
        let markdown = report.markdown();
        assert!(
            markdown.contains("| `GET /v1/stock/{id}` | 2.0 / 4.0 | 2.5 / 5.0 | 1.25× |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| `GET /v1/events` | 4.0 / 8.0 | failed | – |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| keys in the store | 25000 | 2500000 |"),
            "{markdown}"
        );
    }

    #[test]
    fn a_config_without_catalogue_sizes_is_refused() {
        let mut config = ScaleConfig {
            products: vec![1_000],
            history: 20,
            reservations: None,
            min_keys: Some(2_500_000),
            samples: Samples {
                each: 1,
                events: 1,
                expire: 1,
            },
            spin: SpinOptions {
                bin: "spin".into(),
                manifest: "spin.toml".into(),
                admin_token: "a".into(),
                service_token: "s".into(),
            },
            store: "default".into(),
            work_dir: "w".into(),
            keep: false,
        };
        assert!(config.validate().is_ok());
        config.products = vec![];
        assert!(config.validate().is_err());
    }
}
