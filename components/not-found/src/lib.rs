//! `not-found`: the catch-all route (`/...`). Spin prefers the longest matching route,
//! so this only sees paths no operation serves, and answers them with a problem+json
//! 404 `not_found` instead of Spin's empty one.

use http::{Request, Response};

// The export only exists for wasm: natively the handler is a plain function, so the
// workspace still builds, links and lints on the host.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(req: Request<Vec<u8>>) -> Response<Vec<u8>> {
    stock_http::not_found(&req)
}
