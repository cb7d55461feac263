//! Scale-out, proven on a real Redis: two nodes run the real components of
//! `spin.toml` over one Redis database, and a flash sale is split across both. It runs
//! twice: on two `stock-test-host` **processes** (`--redis-url`, Spin's Redis key-value
//! behaviour, see `store::redis`), and on two real `spin up` with the runtime config
//! `[key_value_store.default] type = "redis"` (Spin's own Redis store).
//!
//! - One product with [`INITIAL`] units, created through node A.
//! - [`THREADS`] client threads, each alternating nodes: reserve 1 unit, then
//!   commit it (3 times in 4) or release it, on the *other* node, until the
//!   reservation is refused (409 `insufficient_stock`). A 503 `service_busy`
//!   is retried with the same `Idempotency-Key`, at most [`BUSY_RETRIES`]
//!   times per call; every loop is bounded, and the whole sale has a
//!   deadline, so the test cannot hang.
//! - Then, read through both nodes: no oversell (`available >= 0`,
//!   `reserved + committed <= initial`), conservation (`on_hand = initial -
//!   committed`, `committed` = the commits that answered 200, reservations
//!   granted = commits + releases), every unit sold and none left held, and
//!   Redis connections back to where they were before the sale
//!   (`INFO clients` `connected_clients`, after a short settle).
//!
//! Needs `REDIS_URL` (`.ci/run` starts a server and exports it), and for the real-Spin
//! run a `spin` binary (`SPIN_BIN` or `PATH`); each run **flushes that database**
//! first. Without them a run is skipped with a note, except under CI (`CI=true`),
//! where that is a failure.
#![cfg(not(target_arch = "wasm32"))]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stock_test_host::spin::{self, SpinConfig, SpinUp};
use stock_test_host::store::redis::test_redis_url;

const ADMIN_TOKEN: &str = "multi-node-admin-token";
const SERVICE_TOKEN: &str = "multi-node-service-token";

const INITIAL: u64 = 300;
const THREADS: usize = 32;
/// Reservations one thread may try (far above the ~12 it needs).
const MAX_ROUNDS_PER_THREAD: usize = 400;
/// 503 retries allowed for one call.
const BUSY_RETRIES: u32 = 100;
/// The whole sale must end within this.
const SALE_DEADLINE: Duration = Duration::from_secs(300);
/// Connections allowed above the pre-sale count once the sale has settled.
const CONNECTION_SLACK: u64 = 2;

/// A node: a `stock-test-host` process or a real `spin up`, stopped on drop.
struct Node {
    base_url: String,
    _process: NodeProcess,
}

/// Held for its `Drop`, which stops the node.
enum NodeProcess {
    TestHost { _child: TestHostProcess },
    Spin { _up: SpinUp },
}

/// A `stock-test-host` process, killed on drop.
struct TestHostProcess(Child);

impl Drop for TestHostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real `spin up` over the Redis at `redis_url` (a runtime config written to `dir`).
fn start_spin_node(name: &str, bin: &Path, redis_url: &str, dir: &Path) -> Node {
    let runtime_config = dir.join(format!("runtime-config-{name}.toml"));
    std::fs::write(
        &runtime_config,
        format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{redis_url}\"\n"),
    )
    .expect("writing the runtime config");
    let config = SpinConfig::new(bin, stock_test_host::workspace_root().join("spin.toml"))
        .variable("admin_token", ADMIN_TOKEN)
        .variable("service_token", SERVICE_TOKEN)
        .runtime_config(runtime_config);
    let up = SpinUp::start(&config).unwrap_or_else(|error| panic!("node {name}: {error:#}"));
    Node {
        base_url: up.base_url().to_owned(),
        _process: NodeProcess::Spin { _up: up },
    }
}

fn start_node(name: &str, redis_url: &str) -> Node {
    let manifest = stock_test_host::workspace_root().join("spin.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stock-test-host"))
        .arg("--manifest")
        .arg(&manifest)
        .args(["--listen", "127.0.0.1:0", "--redis-url", redis_url])
        .args(["--variable", &format!("admin_token={ADMIN_TOKEN}")])
        .args(["--variable", &format!("service_token={SERVICE_TOKEN}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("starting node {name}: {error}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (first_line, line) = mpsc::channel();
    // Reads "listening on http://…", then drains stdout (components may print
    // to it) so that the node never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first_line.send(lines.next());
        for _ in lines {}
    });
    // Killed on drop from here on, also when it fails to start.
    let process = NodeProcess::TestHost {
        _child: TestHostProcess(child),
    };
    let base_url = match line.recv_timeout(Duration::from_secs(300)) {
        Ok(Some(Ok(line))) => line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("node {name} printed {line:?}"))
            .to_owned(),
        other => panic!("node {name} did not start within 300 s: {other:?}"),
    };
    Node {
        base_url,
        _process: process,
    }
}

/// A reply: status, problem `code` (if any) and JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    raw: String,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    fn u64(&self, field: &str) -> u64 {
        self.body[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer {field} in {}", self.raw))
    }

    fn busy(&self) -> bool {
        self.status == 503 && self.code() == "service_busy"
    }
}

struct Client {
    agent: ureq::Agent,
}

impl Client {
    fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { agent }
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        let auth = token.map(|token| format!("Bearer {token}"));
        let result = match method {
            "GET" => {
                let mut request = self.agent.get(url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            "PUT" | "POST" => {
                let mut request = if method == "PUT" {
                    self.agent.put(url)
                } else {
                    self.agent.post(url)
                };
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                if let Some(key) = idempotency_key {
                    request = request.header("Idempotency-Key", key);
                }
                match body {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body.to_string()),
                    None => request.send_empty(),
                }
            }
            other => unreachable!("method {other}"),
        };
        let mut response = result.map_err(|error| format!("{method} {url}: {error}"))?;
        let status = response.status().as_u16();
        let raw = response
            .body_mut()
            .read_to_string()
            .map_err(|error| format!("{method} {url}: reading the body: {error}"))?;
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Reply { status, body, raw })
    }
}

/// Sends `call` until it is not a 503 `service_busy`, at most
/// [`BUSY_RETRIES`] retries and not past `deadline`, with a short jittered
/// pause between tries.
fn retrying(
    busy: &AtomicU64,
    seed: &mut u64,
    deadline: Instant,
    mut call: impl FnMut() -> Result<Reply, String>,
) -> Result<Reply, String> {
    let mut retries = 0;
    loop {
        let reply = call()?;
        if !reply.busy() || retries == BUSY_RETRIES || Instant::now() > deadline {
            return Ok(reply);
        }
        retries += 1;
        busy.fetch_add(1, Ordering::Relaxed);
        // xorshift: 5–40 ms (the service says Retry-After: 1; a test need
        // not wait that long to be polite to itself).
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        std::thread::sleep(Duration::from_millis(5 + *seed % 36));
    }
}

#[derive(Default)]
struct Tally {
    granted: AtomicU64,
    commits: AtomicU64,
    releases: AtomicU64,
    refused: AtomicU64,
    busy_retries: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, error: String) {
        self.errors.lock().unwrap().push(error);
    }
}

fn redis_connection(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(10)))
        .unwrap_or_else(|error| panic!("connecting to REDIS_URL: {error}"))
}

/// A number from `INFO <section>`.
fn info(connection: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(connection)
        .unwrap_or_else(|error| panic!("INFO {section}: {error}"));
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

fn connected_clients(connection: &mut redis::Connection) -> u64 {
    info(connection, "clients", "connected_clients")
}

#[test]
fn flash_sale_across_two_test_host_nodes_on_one_redis() {
    let Some(redis_url) = test_redis_url("flash_sale_across_two_test_host_nodes_on_one_redis")
    else {
        return;
    };
    flash_sale("test host", &redis_url, |name| start_node(name, &redis_url));
}

#[test]
fn flash_sale_across_two_spin_nodes_on_one_redis() {
    let Some(redis_url) = test_redis_url("flash_sale_across_two_spin_nodes_on_one_redis") else {
        return;
    };
    let Some(bin) = spin::binary() else {
        assert!(
            !spin::required(),
            "no spin binary (SPIN_BIN or PATH): required under CI"
        );
        // Straight to stderr: the harness captures `eprintln!` of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED flash_sale_across_two_spin_nodes_on_one_redis: no spin binary"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("stock-multi-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the runtime-config dir");
    flash_sale("spin up", &redis_url, |name| {
        start_spin_node(name, &bin, &redis_url, &dir)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sale and its checks, on two nodes made by `start` over the Redis at `redis_url`.
/// One sale at a time: each flushes the one database, and both want the two cores.
fn flash_sale(kind: &str, redis_url: &str, start: impl Fn(&str) -> Node) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    stock_test_host::build_app(&stock_test_host::workspace_root().join("spin.toml"))
        .expect("building the components");

    let mut admin = redis_connection(redis_url);
    redis::cmd("FLUSHDB")
        .exec(&mut admin)
        .expect("FLUSHDB on REDIS_URL");

    // One after the other: B loads what A compiled from Wasmtime's cache.
    let starting = Instant::now();
    let nodes = [start("A"), start("B")];
    let startup = starting.elapsed();
    let urls: Vec<String> = nodes.iter().map(|node| node.base_url.clone()).collect();
    let client = Client::new();
    let product = format!("flash-{}", std::process::id());
    let stock_url = |node: usize| format!("{}/v1/stock/{product}", urls[node]);
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let setup_busy = AtomicU64::new(0);

    let created = retrying(
        &setup_busy,
        &mut seed,
        Instant::now() + SALE_DEADLINE,
        || {
            client.send(
                "PUT",
                &stock_url(0),
                Some(ADMIN_TOKEN),
                Some("create-flash"),
                Some(json!({ "quantity": INITIAL })),
            )
        },
    )
    .expect("PUT through node A");
    assert_eq!(created.status, 200, "{}", created.raw);
    // Node B sees it, and both nodes have opened their shared connection.
    let seen = client
        .send("GET", &stock_url(1), None, None, None)
        .expect("GET through node B");
    assert_eq!(seen.status, 200, "{}", seen.raw);
    assert_eq!(seen.u64("available_quantity"), INITIAL, "{}", seen.raw);

    let clients_before = connected_clients(&mut admin);
    let opened_before = info(&mut admin, "stats", "total_connections_received");
    let tally = Tally::default();
    let peak = AtomicU64::new(clients_before);
    let sale_over = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let deadline = started + SALE_DEADLINE;

    std::thread::scope(|scope| {
        // Samples connected_clients during the sale (its own connection: +1).
        scope.spawn(|| {
            let mut sampler = redis_connection(redis_url);
            while !sale_over.load(Ordering::Relaxed) {
                let now = connected_clients(&mut sampler).saturating_sub(1);
                peak.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (tally, urls, product) = (&tally, &urls, &product);
                scope.spawn(move || {
                    let client = Client::new();
                    let mut seed = 0x2545_F491_4F6C_DD1D_u64 ^ ((thread as u64 + 1) * 0x9E37);
                    for round in 0..MAX_ROUNDS_PER_THREAD {
                        if Instant::now() > deadline {
                            tally.error(format!("thread {thread}: sale deadline passed"));
                            return;
                        }
                        let node = (thread + round) % 2;
                        let other = 1 - node;
                        let key = format!("reserve-{thread}-{round}");
                        let reserved = retrying(&tally.busy_retries, &mut seed, deadline, || {
                            client.send(
                                "POST",
                                &format!("{}/v1/reservations", urls[node]),
                                Some(SERVICE_TOKEN),
                                Some(&key),
                                Some(json!({ "product_id": product, "quantity": 1 })),
                            )
                        });
                        let reserved = match reserved {
                            Ok(reply) => reply,
                            Err(error) => return tally.error(error),
                        };
                        match (reserved.status, reserved.code()) {
                            (201, _) => {}
                            (409, "insufficient_stock") => {
                                tally.refused.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            _ => {
                                return tally.error(format!(
                                    "thread {thread} reserve: {} {}",
                                    reserved.status, reserved.raw
                                ));
                            }
                        }
                        tally.granted.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = reserved.body["reservation_id"].as_str() else {
                            return tally.error(format!("no reservation_id: {}", reserved.raw));
                        };
                        let commit = (thread + round) % 4 != 0;
                        let action = if commit { "commit" } else { "release" };
                        let url = format!("{}/v1/reservations/{id}/{action}", urls[other]);
                        let key = format!("{action}-{thread}-{round}");
                        let body = commit
                            .then(|| json!({ "order_id": format!("order-{thread}-{round}") }));
                        let finished = retrying(&tally.busy_retries, &mut seed, deadline, || {
                            client.send("POST", &url, Some(SERVICE_TOKEN), Some(&key), body.clone())
                        });
                        match finished {
                            Ok(reply) if reply.status == 200 => {
                                let counter = if commit {
                                    &tally.commits
                                } else {
                                    &tally.releases
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(reply) => {
                                return tally.error(format!(
                                    "thread {thread} {action}: {} {}",
                                    reply.status, reply.raw
                                ));
                            }
                            Err(error) => return tally.error(error),
                        }
                    }
                    tally.error(format!(
                        "thread {thread}: {MAX_ROUNDS_PER_THREAD} rounds, never refused"
                    ));
                })
            })
            .collect();
        for worker in workers {
            if worker.join().is_err() {
                tally.error("a client thread panicked".to_owned());
            }
        }
        sale_over.store(true, Ordering::Relaxed);
    });
    let duration = started.elapsed();
    let opened = info(&mut admin, "stats", "total_connections_received") - opened_before;

    // Let dropped connections close, then count again.
    let settle_until = Instant::now() + Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(500));
    let mut clients_after = connected_clients(&mut admin);
    while clients_after > clients_before + CONNECTION_SLACK && Instant::now() < settle_until {
        std::thread::sleep(Duration::from_millis(200));
        clients_after = connected_clients(&mut admin);
    }

    let finals: Vec<Reply> = (0..2)
        .map(|node| {
            client
                .send("GET", &stock_url(node), None, None, None)
                .expect("final GET")
        })
        .collect();
    let granted = tally.granted.load(Ordering::Relaxed);
    let commits = tally.commits.load(Ordering::Relaxed);
    let releases = tally.releases.load(Ordering::Relaxed);
    let last = &finals[0];
    let (on_hand, reserved, committed, available) = (
        last.u64("on_hand"),
        last.u64("reserved_quantity"),
        last.u64("committed_quantity"),
        last.body["available_quantity"].as_i64().unwrap_or(i64::MIN),
    );
    let oversold = (reserved + committed).saturating_sub(INITIAL)
        + u64::try_from(-available.min(0)).unwrap_or(u64::MAX);
    let report = format!(
        "multi-node flash sale ({kind}): {INITIAL} units, {THREADS} threads over 2 nodes on one \
         Redis, {:.1} s\n  reservations granted {granted}, commits {commits}, releases {releases}, \
         refused (409) {}, 503 retries {}\n  final: on_hand {on_hand}, reserved {reserved}, \
         committed {committed}, available {available}, oversold {oversold}\n  Redis \
         connected_clients: before {clients_before}, peak during the sale {}, after \
         {clients_after}; connections opened during the sale {opened} (one per CAS \
         handle)\n  (nodes started in {:.1} s)",
        duration.as_secs_f64(),
        tally.refused.load(Ordering::Relaxed),
        tally.busy_retries.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed),
        startup.as_secs_f64(),
    );
    // Straight to stderr: shown even though the test passes.
    let _ = writeln!(std::io::stderr(), "{report}");

    let errors = tally.errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} client errors, first ones: {:#?}\n{report}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    for reply in &finals {
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    let figures = |reply: &Reply| {
        [
            "on_hand",
            "reserved_quantity",
            "committed_quantity",
            "available_quantity",
        ]
        .map(|field| reply.body[field].clone())
    };
    assert_eq!(
        figures(&finals[0]),
        figures(&finals[1]),
        "the nodes disagree: {} / {}",
        finals[0].raw,
        finals[1].raw
    );
    // No oversell.
    assert!(available >= 0, "{report}\n{}", last.raw);
    assert!(reserved + committed <= INITIAL, "{report}\n{}", last.raw);
    assert_eq!(oversold, 0, "{report}");
    // Conservation.
    assert_eq!(on_hand, INITIAL - committed, "{report}\n{}", last.raw);
    assert_eq!(committed, commits, "{report}\n{}", last.raw);
    assert_eq!(granted, commits + releases, "{report}");
    // Every unit sold, none left held.
    assert_eq!(reserved, 0, "{report}\n{}", last.raw);
    assert_eq!(committed, INITIAL, "{report}\n{}", last.raw);
    // Connections do not pile up.
    assert!(
        clients_after <= clients_before + CONNECTION_SLACK,
        "Redis connections piled up: {report}"
    );
    drop(nodes);
}
