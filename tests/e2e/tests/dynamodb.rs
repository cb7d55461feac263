//! DynamoDB, the recommended production store, end to end: real `spin up` nodes with
//! `runtime-config/aws-dynamodb.toml` (Spin 4.0.2's `aws_dynamo` store) over a local
//! DynamoDB emulator (`tests/e2e/dynamodb_emulator.py`, PyPI `moto[server]`), started
//! here with its table.
//!
//! - `dynamodb::spin::<name>`: the end-to-end suite against one node, but for the
//!   tests in [`dynamo::TOO_HEAVY_FOR_THE_EMULATOR`], reported ignored.
//! - `dynamodb::two_nodes_never_grant_more_than_the_stock`: a second node on the same
//!   table, and [`CLIENTS`] clients reserving 1 unit each of a [`UNITS`]-unit product,
//!   alternating nodes, until refused. A 503 `service_busy` is retried with the same
//!   `Idempotency-Key`. Then: exactly [`UNITS`] distinct reservations granted, each
//!   pending with its unit, the product reserved [`UNITS`] and available 0 through both
//!   nodes, and no answer but 201, 409 `insufficient_stock` and 503 `service_busy`.
//!
//! Real Spin only: the test host has no DynamoDB backend. Needs `python3` with
//! `moto[server]` and a `spin` binary (`SPIN_BIN` or `PATH`).
//! Without either the trials are reported ignored, never passed, except under CI
//! (`CI=true`), where that fails them.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    use std::sync::{Arc, OnceLock};

    use libtest_mimic::{Arguments, Failed, Trial};
    use stock_e2e::client::Client;
    use stock_e2e::suite;

    let args = Arguments::from_args();
    let missing = dynamo::missing();
    if let Some(why) = &missing {
        assert!(
            !stock_test_host::under_ci(),
            "the DynamoDB tests cannot run under CI (CI=true): {why}"
        );
        eprintln!("note: {why}: the dynamodb:: tests are NOT RUN");
    }
    let cluster: Arc<OnceLock<Result<dynamo::Cluster, String>>> = Arc::default();
    let mut trials = Vec::new();
    for (name, test) in suite::all() {
        let cluster = Arc::clone(&cluster);
        trials.push(
            Trial::test(format!("dynamodb::spin::{name}"), move || {
                let cluster = dynamo::get(&cluster)?;
                test(&Client::new(cluster.a.base_url().to_owned()))
                    .map_err(|e| Failed::from(format!("{e:#}")))
            })
            .with_ignored_flag(
                missing.is_some() || dynamo::TOO_HEAVY_FOR_THE_EMULATOR.contains(&name),
            ),
        );
    }
    let contended = Arc::clone(&cluster);
    trials.push(
        Trial::test(
            "dynamodb::two_nodes_never_grant_more_than_the_stock",
            move || {
                let cluster = dynamo::get(&contended)?;
                dynamo::contention(cluster).map_err(|e| Failed::from(format!("{e:#}")))
            },
        )
        .with_ignored_flag(missing.is_some()),
    );
    let conclusion = libtest_mimic::run(&args, trials);
    // `exit` skips destructors: stop the nodes and the emulator first.
    drop(Arc::into_inner(cluster).and_then(OnceLock::into_inner));
    conclusion.exit();
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod dynamo {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, mpsc};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, ensure};
    use serde_json::json;
    use stock_e2e::client::{ADMIN_TOKEN, As, Client, SERVICE_TOKEN};
    use stock_e2e::targets;
    use stock_test_host::spin::{self, SpinConfig, SpinUp};

    /// Suite tests the emulator cannot serve in time (their clients time out after 60 s,
    /// measured: no error answer, only waits): it is one Python process serving one
    /// request at a time, while 64 clients on one product queue behind each other. The
    /// two-node contention run below covers concurrency here.
    pub const TOO_HEAVY_FOR_THE_EMULATOR: [&str; 1] = ["sixty_four_clients_never_oversell"];
    /// Units of the contended product.
    pub const UNITS: u64 = 100;
    /// Concurrent clients, alternating nodes.
    pub const CLIENTS: usize = 16;
    /// 503 retries allowed for one reservation.
    const BUSY_RETRIES: u32 = 200;
    /// The whole run must end within this.
    const DEADLINE: Duration = Duration::from_secs(600);
    /// The region of `runtime-config/aws-dynamodb.toml`, where the emulator makes the
    /// table (Spin takes the region from `AWS_REGION` with environment credentials).
    const REGION: &str = "eu-west-1";
    const TABLE: &str = "stock";

    /// Why these tests cannot run here, if they cannot.
    pub fn missing() -> Option<String> {
        if spin::binary().is_none() {
            return Some("no `spin` binary (SPIN_BIN or PATH)".into());
        }
        let imports = Command::new("python3")
            .args([
                "-c",
                "import boto3, moto.moto_server.werkzeug_app, werkzeug",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !imports.is_ok_and(|s| s.success()) {
            return Some("no DynamoDB emulator: `python3 -m pip install 'moto[server]'`".into());
        }
        None
    }

    /// The emulator's process, killed on drop.
    struct Process(Child);

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The emulator and two `spin up` nodes over its one table. Fields drop in order:
    /// the nodes stop before the emulator.
    pub struct Cluster {
        pub a: SpinUp,
        pub b: SpinUp,
        _emulator: Process,
    }

    pub fn get(
        cluster: &OnceLock<Result<Cluster, String>>,
    ) -> Result<&Cluster, libtest_mimic::Failed> {
        cluster
            .get_or_init(|| start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| format!("the DynamoDB cluster did not start: {e}").into())
    }

    fn start() -> Result<Cluster> {
        let (emulator, endpoint) = start_emulator()?;
        stock_test_host::build_app(&targets::manifest())?;
        let bin = spin::binary().context("no spin binary")?;
        Ok(Cluster {
            a: start_node(&bin, &endpoint, "a")?,
            b: start_node(&bin, &endpoint, "b")?,
            _emulator: emulator,
        })
    }

    fn start_emulator() -> Result<(Process, String)> {
        let mut emulator = Process(
            Command::new("python3")
                .arg(stock_test_host::workspace_root().join("tests/e2e/dynamodb_emulator.py"))
                .args(["--port", "0", "--region", REGION, "--table", TABLE])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the DynamoDB emulator")?,
        );
        let stdout = emulator.0.stdout.take().context("piped stdout")?;
        let (first, line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first.send(lines.next());
            for _ in lines {}
        });
        let line = line
            .recv_timeout(Duration::from_secs(120))
            .context("the DynamoDB emulator did not start within 120 s")?
            .context("the DynamoDB emulator exited")??;
        let url = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the emulator: {line}"))?;
        Ok((emulator, url.to_owned()))
    }

    /// A `spin up` with `runtime-config/aws-dynamodb.toml` over the emulator at `endpoint`
    /// (environment credentials, as an operator would give Spin).
    fn start_node(bin: &Path, endpoint: &str, name: &str) -> Result<SpinUp> {
        let webhook = targets::webhook();
        let config = SpinConfig::new(bin, targets::manifest())
            .runtime_config(
                stock_test_host::workspace_root().join("runtime-config/aws-dynamodb.toml"),
            )
            .variable("admin_token", ADMIN_TOKEN)
            .variable("service_token", SERVICE_TOKEN)
            .variable("alert_webhook_url", webhook.url())
            .variable("alert_webhook_origin", webhook.origin())
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "emulator")
            .env("AWS_SECRET_ACCESS_KEY", "emulator");
        SpinUp::start(&config).with_context(|| format!("node {name}"))
    }

    /// The two-node contention run; prints its figures.
    pub fn contention(cluster: &Cluster) -> Result<()> {
        let nodes = [
            Client::new(cluster.a.base_url().to_owned()),
            Client::new(cluster.b.base_url().to_owned()),
        ];
        let run = format!("{:x}", std::process::id());
        let product = format!("dynamo-flash-{run}");
        let stocked =
            nodes[0].put_stock(&product, json!({"warehouse_id": "main", "quantity": UNITS}));
        ensure!(stocked.status == 200, "stocking: {}", stocked.raw);

        let started = Instant::now();
        let statuses: Mutex<BTreeMap<String, u64>> = Mutex::default();
        let granted: Mutex<BTreeSet<String>> = Mutex::default();
        let requests = AtomicU64::new(0);
        let failures: Mutex<Vec<String>> = Mutex::default();
        std::thread::scope(|s| {
            for client in 0..CLIENTS {
                let (nodes, product, run) = (&nodes, &product, &run);
                let (statuses, granted, requests, failures) =
                    (&statuses, &granted, &requests, &failures);
                s.spawn(move || {
                    for round in 0.. {
                        if started.elapsed() > DEADLINE {
                            failures.lock().unwrap().push(format!(
                                "client {client}: still reserving after {DEADLINE:?}"
                            ));
                            return;
                        }
                        let key = format!("dyn-{run}-{client}-{round}");
                        let mut busy = 0;
                        let reply = loop {
                            let node = &nodes[(client + round + busy as usize) % 2];
                            requests.fetch_add(1, Ordering::Relaxed);
                            let r = node.call(
                                "POST",
                                "/v1/reservations",
                                As::Service,
                                Some(&json!({"product_id": product, "quantity": 1}).to_string()),
                                &[("idempotency-key", &key)],
                            );
                            *statuses
                                .lock()
                                .unwrap()
                                .entry(format!("{} {}", r.status, r.code()))
                                .or_default() += 1;
                            if r.status == 503 && r.code() == "service_busy" && busy < BUSY_RETRIES
                            {
                                busy += 1;
                                continue;
                            }
                            break r;
                        };
                        match (reply.status, reply.code()) {
                            (201, _) => {
                                let id = reply.body["reservation_id"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned();
                                if !granted.lock().unwrap().insert(id.clone()) {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("reservation {id} granted twice"));
                                }
                            }
                            (409, "insufficient_stock") => return,
                            _ => {
                                failures.lock().unwrap().push(format!(
                                    "client {client}: {} {}",
                                    reply.status, reply.raw
                                ));
                                return;
                            }
                        }
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        let statuses = statuses.into_inner().unwrap();
        let granted = granted.into_inner().unwrap();
        eprintln!(
            "dynamodb two-node run: {UNITS} units, {CLIENTS} clients, {} granted, {} requests \
             in {:.1} s; answers {statuses:?}",
            granted.len(),
            requests.into_inner(),
            elapsed.as_secs_f64()
        );
        let failures = failures.into_inner().unwrap();
        ensure!(failures.is_empty(), "{failures:#?}");
        for answer in statuses.keys() {
            ensure!(
                ["201 ", "409 insufficient_stock", "503 service_busy"].contains(&answer.as_str()),
                "unexpected answer {answer}: {statuses:?}"
            );
        }
        ensure!(
            granted.len() as u64 == UNITS,
            "{} reservations granted for {UNITS} units",
            granted.len()
        );
        for node in &nodes {
            let s = node.stock(&product);
            ensure!(
                s.u64("reserved_quantity") == UNITS && s.u64("available_quantity") == 0,
                "{}: {}",
                node.base(),
                s.raw
            );
        }
        // Every granted reservation holds its unit: pending, one unit, on this product.
        for (i, id) in granted.iter().enumerate() {
            let r = nodes[i % 2].get(&format!("/v1/reservations/{id}"));
            ensure!(
                r.status == 200
                    && r.body["status"] == "PENDING"
                    && r.body["lines"][0]["product_id"] == product.as_str()
                    && r.body["lines"][0]["quantity"] == 1,
                "reservation {id}: {}",
                r.raw
            );
        }
        Ok(())
    }
}
