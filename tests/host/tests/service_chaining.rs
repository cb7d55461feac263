//! Local service chaining and private routes on the test host, with real
//! components: the root application (`get-stock` forwards `PUT` to the private
//! `update-stock` through `http://update-stock.spin.internal`), and the
//! `cas-bench` component behind a private route only.
#![cfg(not(target_arch = "wasm32"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use stock_test_host::{HostConfig, RunningHost, build_app, build_wasm, start, workspace_root};

const ADMIN_TOKEN: &str = "a";
const SERVICE_TOKEN: &str = "s";

/// The root `spin.toml`.
fn root_manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

/// Builds every component of the root application once (the host compiles
/// all of them at start-up; each component id is its package name).
fn build_root_app() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_app(&root_manifest()).expect("building the root application's components")
    });
}

fn root_host() -> RunningHost {
    build_root_app();
    start(
        HostConfig::new(root_manifest())
            .variable("admin_token", ADMIN_TOKEN)
            .variable("service_token", SERVICE_TOKEN),
    )
    .expect("starting the host on spin.toml")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Sends a request; returns the status and body.
fn call(url: &str, method: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.unwrap_or("").to_owned())
        .expect("request");
    let mut response = agent()
        .run(request)
        .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let text = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), text)
}

/// The JSON text without whitespace, for simple `contains` checks.
fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn put_is_forwarded_to_the_private_update_stock_component() {
    let host = root_host();
    let url = host.url("/v1/stock/x");

    let (status, body) = call(&url, "PUT", Some(ADMIN_TOKEN), Some(r#"{"quantity":3}"#));
    assert_eq!(status, 200, "PUT through get-stock → update-stock: {body}");
    assert!(compact(&body).contains(r#""on_hand":3"#), "{body}");

    let (status, body) = call(&url, "GET", None, None);
    assert_eq!(status, 200, "{body}");
    assert!(compact(&body).contains(r#""on_hand":3"#), "{body}");

    // The chained instance resolves its own variables: only `update-stock`
    // maps `admin_token`, and it rejects a wrong or missing token.
    let (status, body) = call(&url, "PUT", Some("wrong"), Some(r#"{"quantity":9}"#));
    assert!(matches!(status, 401 | 403), "{status} {body}");
    let (status, body) = call(&url, "PUT", None, Some(r#"{"quantity":9}"#));
    assert!(matches!(status, 401 | 403), "{status} {body}");
    let (_, body) = call(&url, "GET", None, None);
    assert!(
        compact(&body).contains(r#""on_hand":3"#),
        "unchanged: {body}"
    );
}

#[test]
fn the_private_component_is_not_reachable_from_outside() {
    let host = root_host();

    // No public route leads to `update-stock`: such paths fall to the app's
    // own catch-all (`not-found`, a 404).
    for path in [
        "/update-stock",
        "/update-stock/v1/stock/y",
        "/v1/update-stock/y",
    ] {
        let (status, body) = call(
            &host.url(path),
            "PUT",
            Some(ADMIN_TOKEN),
            Some(r#"{"quantity":1}"#),
        );
        assert_eq!(status, 404, "PUT {path}: {body}");
    }

    // Claiming to be a chained request does not help: Spin strips a
    // `Host: *.spin.internal` header from routed requests, leaving no
    // authority, so the request fails before any component runs.
    let status = raw_put(
        &host,
        "/v1/stock/y",
        "update-stock.spin.internal",
        r#"{"quantity":1}"#,
    );
    assert!(status.is_none_or(|status| status >= 400), "{status:?}");

    let (status, body) = call(&host.url("/v1/stock/y"), "GET", None, None);
    assert_eq!(status, 404, "nothing was written for y: {body}");
}

/// Sends a `PUT` with a chosen `Host` header over a raw connection; returns
/// the status, or `None` if the server closed the connection without one.
fn raw_put(host: &RunningHost, path: &str, host_header: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(host.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {host_header}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A manifest whose only trigger is a private route to `cas-bench`, which
/// may chain to itself.
fn private_bench_manifest() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_wasm(&["cas-bench"]).expect("building cas-bench"));
    let wasm = workspace_root().join("target/wasm32-wasip2/release/cas_bench.wasm");
    let text = format!(
        "spin_manifest_version = 2\n\
         [application]\nname = \"private-bench\"\n\
         [[trigger.http]]\nroute = {{ private = true }}\ncomponent = \"bench\"\n\
         [component.bench]\nsource = '{}'\nkey_value_stores = [\"default\"]\n\
         allowed_outbound_hosts = [\"http://bench.spin.internal\", \"http://*.spin.internal\"]\n",
        wasm.display()
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("private-bench.toml");
    std::fs::write(&path, text).expect("writing manifest");
    path
}

#[test]
fn a_component_with_only_a_private_route_gets_no_request_from_outside() {
    let host = start(HostConfig::new(private_bench_manifest())).expect("starting the host");
    for path in ["/", "/bench/cas", "/bench", "/anything/else"] {
        for method in ["GET", "POST"] {
            let (status, body) = call(&host.url(path), method, None, None);
            assert_eq!(status, 404, "{method} {path}: {body}");
        }
    }
    assert_eq!(
        call(&host.url("/.well-known/spin/health"), "GET", None, None),
        (200, "OK".to_owned())
    );
    // cas-bench increments a counter on every request it gets: it got none.
    let store = host.store().clone();
    let keys = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(async move { store.list_keys().await });
    assert_eq!(keys, Ok(Vec::new()));
}
