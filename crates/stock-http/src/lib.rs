//! The stock service's HTTP adapter, free of Spin: requests and responses are plain
//! `http` types with byte bodies, so every operation runs natively in tests and inside
//! any Spin component alike.
//!
//! - [`ops`]: one function per operation of SPEC §3;
//! - [`problem`]: RFC 9457 errors with stable codes;
//! - [`auth`]: bearer tokens, compared in constant time;
//! - [`request`] / [`wire`]: parsing into domain values and the JSON wire contract;
//! - [`percent`]: RFC 3986 percent-encoding of ids in paths, both ways;
//! - [`inbound`]: the CloudEvents consumed from the cart and order services;
//! - [`webhook`]: the admin webhook's alert notifications.

pub mod auth;
mod errors;
pub mod inbound;
pub mod ops;
pub mod percent;
pub mod problem;
pub mod request;
mod response;
pub mod webhook;
pub mod wire;

use http::{Method, Request, Response};

pub use auth::Token;
pub use ops::{
    adjust_stock, check_availability, commit_reservation, events_feed, expire_reservations,
    get_reservation, get_stock, get_stock_batch, ingest_event, release_reservation, reserve_stock,
    stock_alerts, stock_history, update_stock,
};
pub use problem::{Code, Problem};

/// The answer for a method the route does not serve: 405 with `Allow`.
pub fn method_not_allowed(allow: &[Method]) -> Response<Vec<u8>> {
    Problem::method_not_allowed(allow).into_response()
}

/// The answer for a path no operation serves: 404 `not_found`.
pub fn not_found(req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    Problem::new(
        Code::NotFound,
        format!(
            "no operation is served at {} {}",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}
