//! What the bridge's tests share: a fake stock service that implements the feed and ingest
//! contract over in-memory entries, librdkafka's mock cluster, and small Kafka readers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::{Value, json};
use stock_bridge::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One `GET /v1/events` the fake served.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    pub partition: u32,
    pub after: Option<String>,
}

/// One `POST /v1/events` the fake received, and what it answered.
#[derive(Debug, Clone)]
pub struct Post {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub id: String,
    pub ty: String,
    pub source: String,
    pub specversion: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Default)]
struct FakeState {
    /// Entries of each feed partition, oldest first (CloudEvent JSON).
    partitions: Vec<Vec<Value>>,
    feed_requests: Vec<FeedRequest>,
    posts: Vec<Post>,
    /// Scripted answers by event id, used up front to back; 200 afterwards.
    answers: HashMap<String, VecDeque<u16>>,
    /// Cursor positions at the start of every partition that serve nothing, like the
    /// slots of product writes that died: a page moves past at most `limit` of them and
    /// comes back empty with a moved cursor.
    dead_slots: usize,
}

/// The fake stock service, serving on 127.0.0.1 until the test ends.
#[derive(Clone)]
pub struct FakeService {
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

#[derive(Deserialize)]
struct FeedQuery {
    partition: u32,
    limit: usize,
    after: Option<String>,
}

fn cursor(partition: u32, index: usize) -> String {
    format!("c{partition}-{index}")
}

fn problem(code: &str, detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/problem+json")],
        json!({"type": "about:blank", "title": "Bad request", "status": 400, "detail": detail, "code": code})
            .to_string(),
    )
        .into_response()
}

async fn feed(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(query): Query<FeedQuery>,
) -> Response {
    let mut state = state.lock().unwrap();
    state.feed_requests.push(FeedRequest {
        partition: query.partition,
        after: query.after.clone(),
    });
    let count = state.partitions.len() as u32;
    let Some(entries) = state.partitions.get(query.partition as usize) else {
        return problem("invalid_partition", "partition out of range");
    };
    let dead = state.dead_slots;
    let start = match &query.after {
        None => 0,
        Some(after) => {
            let parsed = after
                .strip_prefix(&format!("c{}-", query.partition))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n <= dead + entries.len());
            match parsed {
                Some(n) => n,
                None => return problem("invalid_cursor", "unknown cursor"),
            }
        }
    };
    // A page visits at most `limit` positions: the dead ones first, then the entries.
    let end = (start + query.limit.clamp(1, 500)).min(dead + entries.len());
    let events = entries[start.saturating_sub(dead)..end.saturating_sub(dead)].to_vec();
    let next_after = if end == start {
        query.after.clone()
    } else {
        Some(cursor(query.partition, end))
    };
    axum::Json(json!({
        "partitions": count,
        "partition": query.partition,
        "events": events,
        "next_after": next_after,
    }))
    .into_response()
}

async fn ingest(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let id = header("ce-id").unwrap_or_default();
    let mut state = state.lock().unwrap();
    let status = state
        .answers
        .get_mut(&id)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    state.posts.push(Post {
        authorization: header("authorization"),
        content_type: header("content-type"),
        id: id.clone(),
        ty: header("ce-type").unwrap_or_default(),
        source: header("ce-source").unwrap_or_default(),
        specversion: header("ce-specversion").unwrap_or_default(),
        body,
        status,
    });
    match status {
        200 => axum::Json(json!({"duplicate": false, "id": id})).into_response(),
        400..=499 => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/problem+json")],
            json!({"type": "about:blank", "title": "Insufficient stock", "status": status,
                   "detail": "not enough units", "code": "insufficient_stock"})
            .to_string(),
        )
            .into_response(),
        _ => (StatusCode::from_u16(status).unwrap(), "try again").into_response(),
    }
}

impl FakeService {
    /// A service with `partitions` empty feed partitions.
    pub async fn start(partitions: usize) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            partitions: vec![Vec::new(); partitions],
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/v1/events", get(feed).post(ingest))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeService { url, state }
    }

    /// Appends a feed entry for `product` (its partition is `product_index % partitions`).
    pub fn push(&self, partition: usize, event: Value) {
        self.state.lock().unwrap().partitions[partition].push(event);
    }

    /// Puts `n` slots that serve nothing at the start of every partition.
    pub fn set_dead_slots(&self, n: usize) {
        self.state.lock().unwrap().dead_slots = n;
    }

    /// Makes the next POSTs of event `id` answer these statuses, in turn.
    pub fn script(&self, id: &str, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(id.to_owned(), statuses.iter().copied().collect());
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }

    pub fn feed_requests(&self) -> Vec<FeedRequest> {
        self.state.lock().unwrap().feed_requests.clone()
    }

    pub fn clear_feed_requests(&self) {
        self.state.lock().unwrap().feed_requests.clear();
    }

    /// The cursor after the last entry of `partition`.
    pub fn last_cursor(&self, partition: usize) -> String {
        let state = self.state.lock().unwrap();
        cursor(
            partition as u32,
            state.dead_slots + state.partitions[partition].len(),
        )
    }
}

const TYPES: [&str; 8] = [
    "StockUpdated",
    "StockReserved",
    "StockReleased",
    "StockCommitted",
    "StockAdjusted",
    "ReservationExpired",
    "LowStockAlert",
    "OutOfStock",
];

/// A feed entry as the service serves it: entry `seq` of `product`.
pub fn feed_entry(product: &str, seq: usize) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("{product}:{seq}"),
        "source": format!("/stock-service/products/{product}"),
        "type": TYPES[seq % TYPES.len()],
        "subject": product,
        "time": "2026-12-01T04:12:42.081Z",
        "datacontenttype": "application/json",
        "partitionkey": product,
        "data": {"product": product, "seq": seq, "warehouse": "main", "quantity": seq + 1},
    })
}

/// Fills `service` with `per_product` entries for each of `products` products, interleaved
/// as writes would be; product `k` lives in feed partition `k % partitions`. Returns the
/// product ids.
pub fn fill_feed(
    service: &FakeService,
    partitions: usize,
    products: usize,
    per_product: usize,
) -> Vec<String> {
    let names: Vec<String> = (0..products).map(|k| format!("SKU-{k}")).collect();
    for seq in 0..per_product {
        for (k, name) in names.iter().enumerate() {
            service.push(k % partitions, feed_entry(name, seq));
        }
    }
    names
}

/// A free loopback address for the health endpoint.
pub fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The bridge's config for tests: the mock cluster, the fake service, quick retries.
pub fn config(brokers: &str, service: &FakeService, health: SocketAddr, extra: &[&str]) -> Config {
    let mut args = vec![
        "stock-bridge".to_owned(),
        format!("--brokers={brokers}"),
        format!("--service-url={}", service.url),
        "--service-token=secret-token".to_owned(),
        format!("--health-listen={health}"),
        "--poll-interval-ms=50".to_owned(),
        "--retry-min-ms=50".to_owned(),
        "--retry-max-ms=500".to_owned(),
        "--create-topics=false".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    use clap::Parser;
    Config::try_parse_from(args).unwrap()
}

fn reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Every record of `topic` from its start, read until `expected` records arrived (and
/// then `settle` longer, to catch any extra) or `deadline` passed.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    settle: Duration,
    deadline: Duration,
) -> Vec<OwnedMessage> {
    let consumer = reader(brokers);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let start = Instant::now();
    let mut reached: Option<Instant> = None;
    let mut messages = Vec::new();
    loop {
        if start.elapsed() > deadline || reached.is_some_and(|r| r.elapsed() > settle) {
            return messages;
        }
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            messages.push(result.unwrap().detach());
            if messages.len() >= expected && reached.is_none() {
                reached = Some(Instant::now());
            }
        } else if messages.len() >= expected && reached.is_none() {
            reached = Some(Instant::now());
        }
    }
}

/// Number of records in `topic` now (sum of high watermarks).
pub fn count_records(brokers: &str, topic: &str) -> i64 {
    let consumer = reader(brokers);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .unwrap();
            high - low
        })
        .sum()
}

/// The group's committed offset of `topic`/`partition` (`None` before any commit).
pub fn committed(brokers: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    match committed.elements()[0].offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// A header's value as text.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The JSON body of `GET /healthz`, with its status.
pub async fn healthz(address: SocketAddr) -> Option<(u16, Value)> {
    let response = reqwest::get(format!("http://{address}/healthz"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Cancels `shutdown` and waits for the bridge to return `Ok`, at most 10 s.
pub async fn stop(shutdown: &CancellationToken, bridge: JoinHandle<anyhow::Result<()>>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), bridge)
        .await
        .expect("the bridge stops within 10 s")
        .expect("the bridge task did not panic")
        .expect("the bridge returns Ok");
}

/// Waits until `condition` holds, checking every 50 ms; panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
