//! `get-reservation`: Reservation lookup: `GET /v1/reservations/{reservation_id}`.

use http::{Method, Request, Response};

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    match *req.method() {
        Method::GET => stock_spin::serve(&req, stock_http::get_reservation),
        _ => stock_http::method_not_allowed(&[Method::GET]),
    }
}
