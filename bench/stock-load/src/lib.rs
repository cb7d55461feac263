//! `stock-load`: the load tool of SPEC §7. It drives a running stock service
//! (any base URL, plain HTTP) and reports request rates, latency percentiles,
//! errors and an end-of-run invariant check done through the API.
//!
//! - [`run_flash_sale`]: one hot product, clients reserve then commit (or
//!   release) until it is sold out.
//! - [`run_spread`]: many products, a uniform mix of reads, reservations,
//!   commits and releases for a duration.
//! - [`run_cas`]: the bare single-CAS reference component (`bench/spin.toml`),
//!   measured in the same run so that results read as ratios.
//! - [`run`]: a scenario, then the reference for as long, and their ratio.
//! - [`scale`]: request latency against stores of growing size, filled natively through
//!   the domain crate ([`sqlite_kv`]) and served by a real `spin up`.
//!
//! Native only: on `wasm32` the crate is empty.
#![cfg(not(target_arch = "wasm32"))]

mod http;
pub mod invariants;
pub mod report;
pub mod scale;
mod scenario;
pub mod sqlite_kv;
pub mod stats;

pub use report::{Outcomes, Ratio, Report, RunReport};
pub use scenario::{Config, Scenario, run, run_cas, run_flash_sale, run_spread};
