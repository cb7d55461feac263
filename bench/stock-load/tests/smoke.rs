//! Smoke test: the real components on the test host, driven by the library
//! with small numbers. The root application (`spin.toml`) and the bare-CAS
//! reference (`bench/spin.toml`) are built for `wasm32-wasip2` and served on
//! loopback; a short flash sale and a short spread must keep every invariant.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use stock_load::{Config, RunReport, Scenario};
use stock_test_host::{HostConfig, RunningHost, build_app, start, workspace_root};

const ADMIN_TOKEN: &str = "a";
const SERVICE_TOKEN: &str = "s";

fn hosts() -> (RunningHost, RunningHost) {
    let root = workspace_root();
    build_app(&root.join("spin.toml")).expect("building the stock service");
    build_app(&root.join("bench/spin.toml")).expect("building cas-bench");
    let stock = start(
        HostConfig::new(root.join("spin.toml"))
            .variable("admin_token", ADMIN_TOKEN)
            .variable("service_token", SERVICE_TOKEN),
    )
    .expect("starting the stock service");
    let cas = start(HostConfig::new(root.join("bench/spin.toml"))).expect("starting cas-bench");
    (stock, cas)
}

fn assert_sound(run: &RunReport) {
    let text = run.render();
    println!("{text}");
    let invariants = run.scenario.invariants.as_ref().expect("invariants");
    assert!(invariants.passed, "invariants failed:\n{text}");
    assert_eq!(invariants.oversold_units, 0, "{text}");
    assert_eq!(run.scenario.unexpected_errors, 0, "{text}");
    let cas = run.cas.as_ref().expect("the CAS reference");
    assert!(cas.total.ok > 0, "{text}");
    assert!(run.ratio.as_ref().is_some_and(|r| r.ratio > 0.0), "{text}");
}

#[test]
fn flash_sale_and_spread_keep_the_invariants() {
    let (stock, cas) = hosts();
    let cas_url = cas.url("/bench/cas");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut sale = Config::new(
        Scenario::FlashSale,
        stock.base_url(),
        ADMIN_TOKEN,
        SERVICE_TOKEN,
    );
    sale.units = 60;
    sale.concurrency = 8;
    sale.release_ratio = 0.25;
    sale.duration = Duration::from_secs(120);
    let run = runtime
        .block_on(stock_load::run(Scenario::FlashSale, &sale, Some(&cas_url)))
        .expect("flash sale");
    assert_sound(&run);
    assert_eq!(run.scenario.stop_reason, "sold out");
    let outcomes = run.scenario.outcomes.as_ref().expect("outcomes");
    assert_eq!((outcomes.committed_units, outcomes.commits), (60, 60));
    assert_eq!((outcomes.pending_units, outcomes.unresolved), (0, 0));
    assert_eq!(outcomes.reservations, outcomes.commits + outcomes.releases);

    let mut spread = Config::new(
        Scenario::Spread,
        stock.base_url(),
        ADMIN_TOKEN,
        SERVICE_TOKEN,
    );
    spread.products = 20;
    spread.units = 100;
    spread.concurrency = 8;
    spread.duration = Duration::from_secs(2);
    let run = runtime
        .block_on(stock_load::run(Scenario::Spread, &spread, Some(&cas_url)))
        .expect("spread");
    assert_sound(&run);
    assert_eq!(run.scenario.stop_reason, "duration limit");
    let operations: Vec<&str> = run
        .scenario
        .operations
        .iter()
        .map(|op| op.operation.as_str())
        .collect();
    assert_eq!(
        operations,
        ["get_stock", "availability", "reserve", "commit", "release"]
    );
    assert_eq!(run.scenario.invariants.as_ref().unwrap().products, 20);
}
