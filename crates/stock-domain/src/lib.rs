//! The stock service's domain: the business rules of SPEC §2–§4, independent of Spin and
//! HTTP. Adapters provide the [`ports`]; [`service::StockService`] does the rest, and
//! adapters drive it through the inbound port [`service::StockApi`].

pub mod indexes;
pub mod models;
pub mod ports;
pub mod service;
pub mod storage;

#[cfg(any(test, feature = "test-support"))]
pub mod memory;

pub use service::{Config, StockApi, StockService};
