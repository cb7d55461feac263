//! `check-availability`: CheckAvailability: `GET
//! /v1/stock/{product_id}/availability?quantity=N[&warehouse_id=w]`; takes no hold.

use http::{Method, Request, Response};

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    match *req.method() {
        Method::GET => stock_spin::serve(&req, stock_http::check_availability),
        _ => stock_http::method_not_allowed(&[Method::GET]),
    }
}
