//! `events-feed`: the global event feed, `GET /v1/events?after=<cursor>&limit=<n>`: every
//! product's history as CloudEvents, in one order, with a resumable cursor.
//!
//! A Spin route maps to one component, and the consumed cart and order events
//! (`POST /v1/events`) share this path, so `POST` is forwarded unchanged to the private
//! `ingest-events` component by local service chaining.

use http::{Method, Request, Response};

/// The component that implements `POST /v1/events`.
const INGEST_EVENTS: &str = "ingest-events";

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub async fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    match *req.method() {
        Method::GET => stock_spin::serve(&req, stock_http::events_feed),
        Method::POST => stock_spin::forward(req, INGEST_EVENTS).await,
        _ => stock_http::method_not_allowed(&[Method::GET, Method::POST]),
    }
}
