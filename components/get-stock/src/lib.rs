//! `get-stock`: GetStock, `GET /v1/stock/{product_id}`, and the batch read for catalog
//! pages, `GET /v1/stock?ids=a,b,c`.
//!
//! A Spin route maps to one component, and UpdateStock (`PUT`) shares this path, so
//! `PUT` is forwarded unchanged to the private `update-stock` component by local service
//! chaining: each operation stays its own component and scales on its own.

use http::{Method, Request, Response};

/// The component that implements `PUT /v1/stock/{product_id}`.
const UPDATE_STOCK: &str = "update-stock";

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub async fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    let batch = req.uri().path().trim_end_matches('/') == "/v1/stock";
    match (req.method().clone(), batch) {
        (Method::GET, true) => stock_spin::serve(&req, stock_http::get_stock_batch),
        (_, true) => stock_http::method_not_allowed(&[Method::GET]),
        (Method::GET, false) => stock_spin::serve(&req, stock_http::get_stock),
        (Method::PUT, false) => stock_spin::forward(req, UPDATE_STOCK).await,
        (_, false) => stock_http::method_not_allowed(&[Method::GET, Method::PUT]),
    }
}
