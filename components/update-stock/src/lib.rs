//! `update-stock`: UpdateStock: `PUT /v1/stock/{product_id}` (admin token), reached only
//! through `get-stock` by local service chaining.

use http::{Method, Request, Response};
use stock_spin::Role;

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    match *req.method() {
        Method::PUT => stock_spin::serve_guarded(&req, Role::Admin, stock_http::update_stock),
        _ => stock_http::method_not_allowed(&[Method::PUT]),
    }
}
