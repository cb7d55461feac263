//! End-to-end: the real `cas-bench` component (built for `wasm32-wasip2`) on
//! the test host, over HTTP, with a blocking client.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use stock_test_host::{HostConfig, RunningHost, build_wasm, start, workspace_root};

const THREADS: usize = 32;
const REQUESTS_PER_THREAD: usize = 50;

fn build_once() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_wasm(&["cas-bench"]).expect("building cas-bench"));
}

fn bench_host() -> RunningHost {
    build_once();
    start(HostConfig::new(workspace_root().join("bench/spin.toml"))).expect("starting the host")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends a request and returns the status and body.
fn send(agent: &ureq::Agent, method: &str, url: &str) -> (u16, String) {
    let mut response = match method {
        "GET" => agent.get(url).call(),
        "POST" => agent.post(url).send_empty(),
        other => panic!("unsupported method {other}"),
    }
    .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let body = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), body)
}

#[test]
fn concurrent_cas_increments_are_all_counted() {
    let host = bench_host();
    let url = host.url("/bench/cas");

    // The first increment creates the key, and on Spin's SQLite store a swap
    // on an absent key is an unconditional upsert: seed it alone.
    assert_eq!(send(&agent(), "POST", &url), (200, "1".to_owned()));

    let values: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let agent = agent();
                    (0..REQUESTS_PER_THREAD)
                        .map(|_| {
                            let (status, body) = send(&agent, "POST", &url);
                            assert_eq!(status, 200, "body: {body}");
                            body.parse::<u64>().expect("counter value")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker"))
            .collect()
    });

    // Every increment saw a distinct value: no lost update, no double count.
    let total = (THREADS * REQUESTS_PER_THREAD) as u64;
    let distinct: BTreeSet<u64> = values.iter().copied().collect();
    let expected: BTreeSet<u64> = (2..=total + 1).collect();
    assert!(
        distinct == expected,
        "lost updates: {} values seen twice, {} never seen",
        values.len() - distinct.len(),
        expected.difference(&distinct).count()
    );
    assert_eq!(
        send(&agent(), "GET", &url),
        (200, (total + 2).to_string()),
        "every request increments, whatever the method"
    );
}

#[test]
fn unknown_routes_are_404_and_health_is_ok() {
    let host = bench_host();
    let agent = agent();
    assert_eq!(send(&agent, "GET", &host.url("/nope")).0, 404);
    assert_eq!(send(&agent, "GET", &host.url("/bench/cas/extra")).0, 404);
    assert_eq!(send(&agent, "GET", &host.url("/bench")).0, 404);
    assert_eq!(
        send(&agent, "GET", &host.url("/.well-known/spin/health")),
        (200, "OK".to_owned())
    );
}

/// Writes a one-component manifest around the built `cas_bench.wasm`.
fn manifest(name: &str, extra_app: &str, extra_component: &str) -> PathBuf {
    let wasm = workspace_root().join("target/wasm32-wasip2/release/cas_bench.wasm");
    let text = format!(
        "spin_manifest_version = 2\n\
         [application]\nname = \"{name}\"\n{extra_app}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"bench\"\n\
         [component.bench]\nsource = '{}'\n{extra_component}\n",
        wasm.display()
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("writing manifest");
    path
}

#[test]
fn a_store_not_listed_in_key_value_stores_is_access_denied() {
    build_once();
    let path = manifest("no-stores", "", "key_value_stores = []");
    let host = start(HostConfig::new(path)).expect("starting the host");
    // cas-bench's `store::open("default")` gets access-denied → handler error → 500.
    assert_eq!(send(&agent(), "POST", &host.url("/anything")).0, 500);
    let store = host.store().clone();
    let keys = block_on(async move { store.list_keys().await });
    assert_eq!(keys, Ok(Vec::new()), "nothing was written");
}

#[test]
fn required_variables_must_be_given() {
    build_once();
    let path = manifest(
        "variables",
        "[variables]\nadmin_token = { required = true, secret = true }\nregion = { default = \"eu\" }",
        "key_value_stores = [\"default\"]\n[component.bench.variables]\ntoken = \"{{ admin_token }}\"",
    );
    let error = start(HostConfig::new(&path))
        .err()
        .expect("must refuse to start");
    assert!(error.to_string().contains("admin_token"), "{error:#}");

    let host = start(HostConfig::new(&path).variable("admin_token", "s3cret")).expect("start");
    assert_eq!(
        send(&agent(), "POST", &host.url("/x")),
        (200, "1".to_owned())
    );

    let bad_template = manifest(
        "bad-template",
        "",
        "[component.bench.variables]\ntoken = \"{{ undeclared }}\"",
    );
    let error = start(HostConfig::new(bad_template))
        .err()
        .expect("unknown variable");
    assert!(format!("{error:#}").contains("undeclared"), "{error:#}");
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}
