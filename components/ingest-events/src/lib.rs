//! `ingest-events`: consumed events: `POST /v1/events` (service token) with one
//! CloudEvent from the cart or order service (CartItemAdded, CartItemUpdated,
//! CartItemRemoved, CartAbandoned, OrderConfirmed), reached only through `events-feed`
//! by local service chaining.

use http::{Method, Request, Response};
use stock_spin::Role;

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    match *req.method() {
        Method::POST => stock_spin::serve_guarded(&req, Role::Service, stock_http::ingest_event),
        _ => stock_http::method_not_allowed(&[Method::POST]),
    }
}
