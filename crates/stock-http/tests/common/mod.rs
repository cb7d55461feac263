//! Shared harness of the HTTP adapter's integration tests: one service over the in-memory
//! store, request builders and response readers.

#![allow(dead_code)]

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response};
use serde_json::Value;
use stock_domain::memory::{ManualClock, MemoryKv, SeqIds};
use stock_domain::{Config, StockService};
use stock_http::Token;

pub type Service = StockService<MemoryKv, ManualClock, SeqIds>;

pub const ADMIN: &str = "admin-secret";
pub const SERVICE: &str = "service-secret";
pub const T0: u64 = 1_700_000_000_000;

pub struct Harness {
    pub svc: Service,
    pub clock: ManualClock,
    pub admin: Token,
    pub service: Token,
}

impl Harness {
    pub fn new() -> Self {
        Self::over(MemoryKv::new(), SeqIds::default())
    }

    /// A harness over a shared store; instances of one test share `ids`, as the real
    /// ids are unique across instances.
    pub fn over(kv: MemoryKv, ids: SeqIds) -> Self {
        let clock = ManualClock::at(T0);
        Self {
            svc: StockService::new(kv, clock.clone(), ids, Config::default()),
            clock,
            admin: Token::new(ADMIN),
            service: Token::new(SERVICE),
        }
    }
}

/// A request with an optional bearer token and, unless `body` is null, a JSON body.
pub fn request(method: Method, uri: &str, token: Option<&str>, body: Value) -> Request<Vec<u8>> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        builder = builder.header(CONTENT_TYPE, "application/json");
        serde_json::to_vec(&body).unwrap()
    };
    builder.body(bytes).unwrap()
}

pub fn body(response: &Response<Vec<u8>>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

/// The `code` of a problem+json response (and a check that it is one).
pub fn problem_code(response: &Response<Vec<u8>>) -> String {
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/problem+json",
        "{}",
        String::from_utf8_lossy(response.body())
    );
    body(response)["code"].as_str().unwrap().to_owned()
}
