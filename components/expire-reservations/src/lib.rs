//! `expire-reservations`: Expiry sweep: `POST /v1/admin/expire` (admin token) records
//! lapsed reservations as expired and finishes abandoned ones.

use http::{Method, Request, Response};
use stock_spin::Role;

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    match *req.method() {
        Method::POST => {
            stock_spin::serve_guarded(&req, Role::Admin, stock_http::expire_reservations)
        }
        _ => stock_http::method_not_allowed(&[Method::POST]),
    }
}
