//! Local service chaining: a route serves one component, so the component in front of a
//! path hands the methods it does not implement to the private component that does,
//! in-process through `http://<component-id>.spin.internal` (the front component must
//! list that URL in `allowed_outbound_hosts`).

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response};
use stock_http::Problem;
use stock_http::request::IDEMPOTENCY_KEY;

/// The headers operations read: the token, the idempotency key, the media type, and
/// the attributes of a binary-mode CloudEvent (`ce-*`).
fn forwarded(name: &str) -> bool {
    [
        AUTHORIZATION.as_str(),
        IDEMPOTENCY_KEY,
        CONTENT_TYPE.as_str(),
    ]
    .contains(&name)
        || name.starts_with("ce-")
}

/// Sends `req` (method, path and query, body, and the headers the operation reads) to
/// `component` and returns its response unchanged.
pub async fn forward(req: Request<Vec<u8>>, component: &str) -> Response<Vec<u8>> {
    match try_forward(req, component).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("stock-service: forwarding to {component} failed: {e:#}");
            Problem::internal().into_response()
        }
    }
}

async fn try_forward(req: Request<Vec<u8>>, component: &str) -> anyhow::Result<Response<Vec<u8>>> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut outbound = Request::builder()
        .method(req.method())
        .uri(format!("http://{component}.spin.internal{path}"));
    for (name, value) in req.headers() {
        if forwarded(name.as_str()) {
            outbound = outbound.header(name, value);
        }
    }
    let outbound = outbound.body(req.into_body())?;
    let answer: spin_sdk::http::Response = spin_sdk::http::send(outbound).await?;
    let mut response = Response::builder().status(*answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value.as_bytes());
    }
    Ok(response.body(answer.into_body())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_operations_read_are_forwarded_and_no_others() {
        for name in [
            "authorization",
            "idempotency-key",
            "content-type",
            "ce-id",
            "ce-specversion",
            "ce-traceparent",
        ] {
            assert!(forwarded(name), "{name}");
        }
        for name in ["host", "cookie", "x-forwarded-for", "spin-full-url", "cex"] {
            assert!(!forwarded(name), "{name}");
        }
    }
}
