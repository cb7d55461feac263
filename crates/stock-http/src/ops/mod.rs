//! One function per operation: each authenticates, parses the request into a domain
//! command, calls the service through its inbound port ([`stock_domain::StockApi`]) and
//! shapes the answer. Method dispatch is the caller's (the component knows which methods
//! its route serves).

mod admin;
mod events;
mod reservations;
mod stock;

pub use admin::{expire_reservations, stock_alerts};
pub use events::{DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT, events_feed, ingest_event};
pub use reservations::{commit_reservation, get_reservation, release_reservation, reserve_stock};
pub use stock::{
    DEFAULT_HISTORY_LIMIT, MAX_BATCH_IDS, MAX_HISTORY_LIMIT, adjust_stock, check_availability,
    get_stock, get_stock_batch, stock_history, update_stock,
};
