//! The Kafka half of the end-to-end suite: the service (test host or real `spin up`), the
//! `stock-bridge` binary as a process of its own, and a broker — `tansu`, an Apache
//! Kafka-compatible broker (`TANSU_BIN` or `tansu` on `PATH`; required under CI), or,
//! without it, librdkafka's mock cluster.
//!
//! [`round_trip`] produces cart events to the cart topic and waits for them to become
//! reservations; writes to a few products over HTTP while the bridge publishes the feed,
//! kills the bridge (`SIGKILL`) mid-stream and starts it again; then reads `stock.events`
//! from its start and checks that every history entry of those products arrived, as a
//! binary-mode CloudEvent keyed by its product, in product order, and that every repeat
//! is the same record under the same id.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::client::{Client, SERVICE_TOKEN};

/// How long after it is written an entry may still be unserved by the feed (the domain's
/// `FEED_DELAY_MS`: a slot's 5 s open window plus 2 s of settling).
const FEED_DELAY: Duration = Duration::from_millis(7_000);
/// How many times the bridge is killed mid-stream.
pub const KILLS: usize = 3;
/// How long anything asynchronous may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// A Kafka-protocol broker for the test process.
pub enum Broker {
    /// A `tansu broker` process on a free port, storing in SQLite in a directory of its
    /// own (its in-memory engine misreports high watermarks).
    Tansu {
        process: Child,
        bootstrap: String,
        dir: PathBuf,
    },
    /// librdkafka's in-process mock cluster.
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl Broker {
    /// `tansu` when there is one; else, outside CI, the mock cluster.
    pub fn start() -> Result<Self> {
        match tansu_binary() {
            Some(bin) => Self::tansu(&bin),
            None if stock_test_host::under_ci() => {
                bail!("no tansu broker (TANSU_BIN or PATH): required under CI")
            }
            None => {
                eprintln!(
                    "note: no `tansu` (TANSU_BIN or PATH): the Kafka tests run on librdkafka's mock cluster"
                );
                Ok(Self::Mock(
                    MockCluster::new(1).context("starting the mock cluster")?,
                ))
            }
        }
    }

    fn tansu(bin: &Path) -> Result<Self> {
        let port = free_address()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        // The SQLite path is taken relative to the working directory.
        let dir =
            std::env::temp_dir().join(format!("stock-e2e-tansu-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let process = Command::new(bin)
            .current_dir(&dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--cluster-id", "stock-e2e"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let broker = Self::Tansu {
            process,
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    /// What a round trip needs to know of the broker (the mock cluster itself stays on
    /// the thread that made it).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Self::Tansu { bootstrap, .. } => Endpoint {
                name: "tansu",
                bootstrap: bootstrap.clone(),
                creates_topics: true,
            },
            Self::Mock(mock) => Endpoint {
                name: "mock cluster",
                bootstrap: mock.bootstrap_servers(),
                creates_topics: false,
            },
        }
    }

    /// Creates the topics a round trip named `run` uses: on tansu the cart and order
    /// topics only (the bridge creates its own, as in production); the mock cluster
    /// answers no CreateTopics, so there every topic is made here.
    pub fn prepare(&self, run: &Topics) -> Result<()> {
        match self {
            Self::Tansu { bootstrap, .. } => {
                create_topics(bootstrap, &[(&run.cart, 3), (&run.order, 3)])
            }
            Self::Mock(mock) => {
                for (topic, partitions) in [
                    (&run.cart, 3),
                    (&run.order, 3),
                    (&run.events, 3),
                    (&run.positions, 1),
                    (&run.dlq, 1),
                ] {
                    mock.create_topic(topic, partitions, 1)
                        .with_context(|| format!("creating {topic}"))?;
                }
                Ok(())
            }
        }
    }
}

/// A broker as a round trip sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: &'static str,
    pub bootstrap: String,
    /// Whether the bridge creates its own topics there (the mock cluster cannot).
    pub creates_topics: bool,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Self::Tansu { process, dir, .. } = self {
            process.kill().ok();
            process.wait().ok();
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

fn tansu_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    })
}

fn free_address() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = futures::executor::block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for result in results {
        if let Err((topic, error)) = result {
            bail!("creating {topic}: {error}");
        }
    }
    Ok(())
}

/// The topics and consumer group of one round trip, unique to it.
pub struct Topics {
    pub cart: String,
    pub order: String,
    pub events: String,
    pub positions: String,
    pub dlq: String,
    pub group: String,
    /// Milliseconds since the epoch when the run began, which makes its names unique.
    pub stamp: u128,
}

impl Topics {
    pub fn new(run: &str) -> Self {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = |what: &str| format!("{what}.{run}.{stamp}");
        Self {
            cart: name("cart.events"),
            order: name("order.events"),
            events: name("stock.events"),
            positions: name("stock.events.positions"),
            dlq: name("stock.events.dlq"),
            group: name("stock-bridge"),
            stamp,
        }
    }
}

/// The `stock-bridge` binary of this build (built first, in this test binary's profile).
fn bridge_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no profile directory above the test binary")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(stock_test_host::workspace_root()).args([
        "build",
        "-p",
        "stock-bridge",
        "--bin",
        "stock-bridge",
    ]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .with_context(|| format!("running {build:?}"))?;
    ensure!(status.success(), "{build:?} failed: {status}");
    Ok(profile_dir.join("stock-bridge"))
}

/// One `stock-bridge` process, killed (`SIGKILL`) when dropped.
struct Bridge {
    process: Child,
}

impl Bridge {
    fn start(bin: &Path, args: &[String]) -> Result<Self> {
        let process = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "stock_bridge=warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { process })
    }

    fn kill(mut self) -> Result<()> {
        self.process.kill()?;
        self.process.wait()?;
        Ok(())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
    }
}

fn bridge_args(base_url: &str, broker: &Endpoint, topics: &Topics) -> Result<Vec<String>> {
    Ok(vec![
        format!("--brokers={}", broker.bootstrap),
        format!("--service-url={base_url}"),
        format!("--service-token={SERVICE_TOKEN}"),
        format!("--health-listen={}", free_address()?),
        format!("--events-topic={}", topics.events),
        format!("--positions-topic={}", topics.positions),
        format!("--dlq-topic={}", topics.dlq),
        format!("--cart-topic={}", topics.cart),
        format!("--order-topic={}", topics.order),
        format!("--group-id={}", topics.group),
        format!("--create-topics={}", broker.creates_topics),
        "--poll-interval-ms=100".to_owned(),
        "--retry-min-ms=100".to_owned(),
        "--retry-max-ms=1000".to_owned(),
        "--page-size=20".to_owned(),
    ])
}

fn producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

/// A cart event in binary mode (`ce_` headers, `data` as the value) or structured mode
/// (the whole event as the value).
fn cart_record(
    topic: &str,
    id: &str,
    kind: &str,
    data: Value,
    binary: bool,
) -> (String, OwnedHeaders, String) {
    let source = "/cart-service";
    if binary {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_specversion",
                value: Some("1.0"),
            })
            .insert(Header {
                key: "ce_id",
                value: Some(id),
            })
            .insert(Header {
                key: "ce_source",
                value: Some(source),
            })
            .insert(Header {
                key: "ce_type",
                value: Some(kind),
            })
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
        (topic.to_owned(), headers, data.to_string())
    } else {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        let event = json!({
            "specversion": "1.0", "id": id, "source": source, "type": kind,
            "datacontenttype": "application/json", "data": data,
        });
        (topic.to_owned(), headers, event.to_string())
    }
}

/// A header's value as text.
fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every record of `topic` from its start, until `done` says enough arrived (then a
/// little longer, to catch a late repeat) or `PATIENCE` ran out.
fn read_topic(
    bootstrap: &str,
    topic: &str,
    mut done: impl FnMut(&[OwnedMessage]) -> bool,
) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let started = Instant::now();
    // A broker busy with the other round trip may answer a metadata request late: a
    // timeout is retried like a topic that has not appeared yet.
    let partitions = loop {
        let partitions = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map(|metadata| {
                let topic = &metadata.topics()[0];
                topic
                    .partitions()
                    .iter()
                    .map(|p| p.id())
                    .collect::<Vec<i32>>()
            });
        match partitions {
            Ok(partitions) if !partitions.is_empty() => break partitions,
            Ok(_) => ensure!(started.elapsed() < PATIENCE, "{topic} never appeared"),
            Err(error) => ensure!(
                started.elapsed() < PATIENCE,
                "{topic}: no metadata: {error}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut messages = Vec::new();
    let mut enough: Option<Instant> = None;
    loop {
        if enough.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            return Ok(messages);
        }
        ensure!(
            started.elapsed() < PATIENCE,
            "{topic}: only {} records arrived",
            messages.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            messages.push(message?.detach());
        }
        if enough.is_none() && done(&messages) {
            enough = Some(Instant::now());
        }
    }
}

/// Waits until `condition` holds, checking every 100 ms.
fn eventually(what: &str, mut condition: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    while !condition()? {
        ensure!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// What a round trip saw, for the report.
#[derive(Debug)]
pub struct RoundTrip {
    pub cart_records: usize,
    pub reservations: usize,
    pub dead_letters: usize,
    pub entries: usize,
    pub records_out: usize,
    pub repeats: usize,
    /// The bridge was killed every this often, [`KILLS`] times.
    pub bridge_killed_every: Duration,
}

/// The whole round trip against the service at `base_url` and `broker`, on `topics`
/// (prepared by [`Broker::prepare`]); `run` names its products and events.
pub fn round_trip(
    base_url: &str,
    broker: &Endpoint,
    topics: &Topics,
    run: &str,
) -> Result<RoundTrip> {
    let c = Client::new(base_url);
    let bin = bridge_binary()?;
    let args = bridge_args(base_url, broker, topics)?;
    let products: Vec<String> = (0..4)
        .map(|i| format!("kafka-{run}-{}-{i}", topics.stamp))
        .collect();
    for p in &products {
        let r = c.put_stock(p, json!({"quantity": 1000, "low_stock_threshold": 5}));
        ensure!(r.status == 200, "stocking {p}: {}", r.raw);
    }
    let bridge = Bridge::start(&bin, &args)?;

    // In: two cart events, one in each mode, and one the service refuses.
    let kafka = producer(&broker.bootstrap)?;
    let records = [
        cart_record(
            &topics.cart,
            &format!("{run}-1"),
            "CartItemAdded",
            json!({"cart_id": format!("cart-{run}-1"), "product_id": products[0], "quantity": 2}),
            true,
        ),
        cart_record(
            &topics.cart,
            &format!("{run}-2"),
            "com.acme.cart.CartItemAdded",
            json!({"cart_id": format!("cart-{run}-2"), "product_id": products[1], "quantity": 3}),
            false,
        ),
        cart_record(
            &topics.cart,
            &format!("{run}-3"),
            "CartExploded",
            json!({"cart_id": format!("cart-{run}-3")}),
            true,
        ),
    ];
    for (topic, headers, value) in &records {
        let key = format!("cart-{run}");
        kafka
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(value)
                    .headers(headers.clone()),
            )
            .map_err(|(e, _)| e)?;
    }
    kafka.flush(Duration::from_secs(10))?;
    let reserved = |p: &str| -> Result<u64> {
        let r = c.get(&format!("/v1/stock/{p}"));
        Ok(r.body["reserved_quantity"].as_u64().unwrap_or_default())
    };
    eventually("the cart events to become reservations", || {
        Ok(reserved(&products[0])? == 2 && reserved(&products[1])? == 3)
    })?;

    // Out, with a kill and a restart in the middle of a stream of writes.
    let stop = AtomicBool::new(false);
    let killed_after = Duration::from_millis(1_500);
    std::thread::scope(|s| -> Result<RoundTrip> {
        let stop_writing = crate::suite::RaiseOnDrop(&stop);
        let writer = s.spawn(|| crate::suite::trade_until(base_url, &products, &stop));
        // Killed three times while it publishes, each time started again at once: the
        // writes' entries reach the feed after FEED_DELAY, so the kills wait for that.
        std::thread::sleep(FEED_DELAY);
        let mut running = bridge;
        for _ in 0..KILLS {
            std::thread::sleep(killed_after);
            running.kill()?;
            running = Bridge::start(&bin, &args)?;
        }
        std::thread::sleep(Duration::from_secs(2));
        drop(stop_writing);
        writer.join().expect("the writer thread panicked");
        std::thread::sleep(FEED_DELAY);

        let histories: BTreeMap<&str, Vec<Value>> = products
            .iter()
            .map(|p| Ok((p.as_str(), crate::suite::history_of(&c, p)?)))
            .collect::<Result<_>>()?;
        let entries: usize = histories.values().map(Vec::len).sum();
        let wanted: Vec<String> = histories
            .values()
            .flatten()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect();
        let out = read_topic(&broker.bootstrap, &topics.events, |messages| {
            let seen: std::collections::HashSet<String> =
                messages.iter().filter_map(|m| header(m, "ce_id")).collect();
            wanted.iter().all(|id| seen.contains(id))
        })?;
        drop(running);
        check_out(&histories, &out)?;
        let dead = read_topic(&broker.bootstrap, &topics.dlq, |m| !m.is_empty())?;
        ensure!(dead.len() == 1, "{} dead letters", dead.len());
        let problem = header(&dead[0], "stock_problem").unwrap_or_default();
        ensure!(
            problem.contains("unknown_event_type"),
            "dead letter problem: {problem}"
        );
        ensure!(
            header(&dead[0], "ce_id").as_deref() == Some(&format!("{run}-3")),
            "dead letter is not the refused record"
        );

        let mine = out.iter().filter(|m| {
            m.key()
                .is_some_and(|k| products.iter().any(|p| p.as_bytes() == k))
        });
        let records_out = mine.count();
        Ok(RoundTrip {
            cart_records: records.len(),
            reservations: 2,
            dead_letters: dead.len(),
            entries,
            records_out,
            repeats: records_out - entries,
            bridge_killed_every: killed_after,
        })
    })
}

/// Every entry of every product arrived as a binary-mode CloudEvent keyed by its product;
/// first arrivals in history order; every repeat the same record as its first arrival.
fn check_out(histories: &BTreeMap<&str, Vec<Value>>, out: &[OwnedMessage]) -> Result<()> {
    let mut arrived: HashMap<&str, Vec<&OwnedMessage>> = HashMap::new();
    for message in out {
        let key = message
            .key()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if let Some((product, _)) = histories.get_key_value(key.as_ref()) {
            arrived.entry(product).or_default().push(message);
        }
    }
    for (product, history) in histories {
        let messages = arrived.remove(product).unwrap_or_default();
        let mut first: HashMap<String, &OwnedMessage> = HashMap::new();
        let mut order = Vec::new();
        for m in messages {
            ensure!(
                header(m, "ce_specversion").as_deref() == Some("1.0"),
                "{product}: not binary mode"
            );
            ensure!(
                header(m, "content-type").as_deref() == Some("application/json"),
                "{product}: content type"
            );
            ensure!(
                header(m, "ce_subject").as_deref() == Some(*product),
                "{product}: subject"
            );
            ensure!(
                header(m, "ce_partitionkey").as_deref() == Some(*product),
                "{product}: partitionkey"
            );
            let id = header(m, "ce_id").context("a record without ce_id")?;
            match first.get(&id) {
                Some(earlier) => ensure!(
                    earlier.payload() == m.payload()
                        && header(earlier, "ce_type") == header(m, "ce_type"),
                    "{id} was produced twice with different contents"
                ),
                None => {
                    first.insert(id.clone(), m);
                    order.push(id);
                }
            }
        }
        let expected: Vec<String> = history
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect();
        ensure!(
            order == expected,
            "{product}: {} entries arrived first in this order, the history has {}: {order:?}",
            order.len(),
            expected.len()
        );
        let reserved = history.iter().find(|e| e["type"] == "StockReserved");
        ensure!(
            reserved.is_some(),
            "{product}: no StockReserved in its history"
        );
    }
    Ok(())
}
