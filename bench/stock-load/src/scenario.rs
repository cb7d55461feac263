//! The load scenarios: a flash sale on one hot product, a spread over many
//! products, and the bare-CAS reference. Each simulated client is a Tokio task
//! with its own keep-alive connection that records its own measurements; a
//! shared [`Budget`] bounds every run in time and in requests.
//!
//! Requests are retried after a 503 (pausing for `Retry-After`, capped at
//! [`MAX_RETRY_PAUSE`]), another 5xx or a lost connection; that is safe because
//! reads, commits and releases are idempotent and every reservation carries an
//! `Idempotency-Key` (SPEC §5). An operation whose outcome stays unknown is
//! counted as unresolved, and the checks that rely on the tool's own
//! accounting of that product are then skipped rather than guessed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use http::Method;
use serde_json::json;

use crate::http::{Call, Connection, Endpoint, Reply};
use crate::invariants::{self, Expected, InvariantReport, ProductCheck};
use crate::report::{Outcomes, Ratio, Report, RunReport};
use crate::stats::{Op, Recorder};

/// Attempts per request (503s and transport errors are retried).
const MAX_ATTEMPTS: u32 = 8;
/// Longest pause before retrying a 503: a `Retry-After` of whole seconds would
/// idle a benchmark client, so the tool waits at most this (plus jitter).
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// A client gives up after this many failed operations in a row (other than
/// insufficient stock), e.g. on a wrong token or URL.
const MAX_CONSECUTIVE_FAILURES: u32 = 20;
/// Pending reservations a spread client holds at most.
const MAX_PENDING: usize = 16;
/// The shortest bare-CAS measurement.
const MIN_CAS_DURATION: Duration = Duration::from_secs(1);

/// The two stock scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    FlashSale,
    Spread,
}

impl Scenario {
    /// The CLI and report name.
    pub fn name(self) -> &'static str {
        match self {
            Self::FlashSale => "flash-sale",
            Self::Spread => "spread",
        }
    }

    /// SPEC §7: the stock rate relative to the bare-CAS rate must reach this.
    pub fn target_ratio(self) -> f64 {
        match self {
            Self::FlashSale => 0.5,
            Self::Spread => 0.7,
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The stock service, e.g. `http://127.0.0.1:9003`.
    pub base_url: String,
    pub admin_token: String,
    pub service_token: String,
    /// Simulated clients, each with one connection and one request at a time.
    pub concurrency: usize,
    /// Flash sale: units of the hot product; spread: units of each product.
    pub units: u64,
    /// Units per reservation.
    pub quantity: u64,
    /// Spread: number of products.
    pub products: usize,
    /// Bound on the load phase (the spread's planned length).
    pub duration: Duration,
    /// Bound on requests sent in the load phase (default: see
    /// [`Config::request_limit`]).
    pub max_requests: Option<u64>,
    /// Flash sale: fraction of reservations released instead of committed.
    pub release_ratio: f64,
}

impl Config {
    /// Defaults for `scenario` against `base_url`.
    pub fn new(
        scenario: Scenario,
        base_url: impl Into<String>,
        admin_token: impl Into<String>,
        service_token: impl Into<String>,
    ) -> Self {
        let (units, duration) = match scenario {
            Scenario::FlashSale => (1_000, Duration::from_secs(300)),
            Scenario::Spread => (10_000, Duration::from_secs(10)),
        };
        Self {
            base_url: base_url.into(),
            admin_token: admin_token.into(),
            service_token: service_token.into(),
            concurrency: 16,
            units,
            quantity: 1,
            products: 100,
            duration,
            max_requests: None,
            release_ratio: 0.1,
        }
    }

    /// The request bound: `max_requests`, or by default 50 requests per unit
    /// on sale plus 10,000 for a flash sale and 10 million for a spread.
    pub fn request_limit(&self, scenario: Scenario) -> u64 {
        self.max_requests.unwrap_or(match scenario {
            Scenario::FlashSale => (self.units / self.quantity.max(1))
                .saturating_mul(50)
                .saturating_add(10_000),
            Scenario::Spread => 10_000_000,
        })
    }

    fn validate(&self, scenario: Scenario) -> anyhow::Result<()> {
        ensure!(self.concurrency >= 1, "concurrency must be at least 1");
        ensure!(self.quantity >= 1, "quantity must be at least 1");
        ensure!(
            self.units >= self.quantity,
            "units ({}) must be at least the quantity per reservation ({})",
            self.units,
            self.quantity
        );
        ensure!(
            (0.0..=1.0).contains(&self.release_ratio),
            "release ratio must be between 0 and 1"
        );
        ensure!(!self.duration.is_zero(), "duration must be positive");
        ensure!(
            self.request_limit(scenario) >= 1,
            "requests must be positive"
        );
        if scenario == Scenario::Spread {
            ensure!(self.products >= 1, "products must be at least 1");
        }
        Ok(())
    }
}

/// Runs `scenario`, then, when `cas_url` is given, the bare-CAS reference with
/// the same concurrency for as long as the scenario's load phase took (at
/// least one second), and their ratio.
pub async fn run(
    scenario: Scenario,
    config: &Config,
    cas_url: Option<&str>,
) -> anyhow::Result<RunReport> {
    let report = match scenario {
        Scenario::FlashSale => run_flash_sale(config).await?,
        Scenario::Spread => run_spread(config).await?,
    };
    let cas = match cas_url {
        Some(url) => {
            let duration = Duration::from_secs_f64(report.elapsed_secs).max(MIN_CAS_DURATION);
            let max_requests = config.request_limit(scenario);
            Some(run_cas(url, config.concurrency, duration, max_requests).await?)
        }
        None => None,
    };
    let ratio = cas
        .as_ref()
        .map(|cas| Ratio::new(&report, cas, scenario.target_ratio()));
    Ok(RunReport {
        scenario: report,
        cas,
        ratio,
    })
}

/// Flash sale: one product with `units` units; `concurrency` clients each
/// reserve `quantity` units then commit (or, for `release_ratio` of them,
/// release), until every client is refused for insufficient stock while no
/// reservation is held, or the budget runs out. Then checks the
/// product's invariants.
pub async fn run_flash_sale(config: &Config) -> anyhow::Result<Report> {
    let scenario = Scenario::FlashSale;
    config.validate(scenario)?;
    let endpoint = Endpoint::parse(&config.base_url)?;
    let run_id = run_id();
    let product_id = format!("fs-{run_id}");
    let products = vec![product_id.clone()];
    stock_products(&endpoint, &config.admin_token, &products, config.units, 1).await?;

    let budget = Arc::new(Budget::new(config.duration, config.request_limit(scenario)));
    let sale = Arc::new(Sale {
        product_id,
        quantity: config.quantity,
        release_ratio: config.release_ratio,
        service_token: config.service_token.clone(),
        run_id,
        held: AtomicU64::new(0),
    });
    let start = Instant::now();
    let results = spawn_clients(config.concurrency, |index| {
        let client = Client::new(&endpoint, &budget);
        sale_client(client, sale.clone(), index)
    })
    .await?;
    let elapsed = start.elapsed();
    finish(
        scenario, config, &endpoint, &products, results, elapsed, &budget,
    )
    .await
}

/// Spread: `products` products of `units` units each; `concurrency` clients
/// pick, uniformly at random, a read of a product's stock, an availability
/// check, a reservation, a commit or a release of one of their pending
/// reservations, on a uniformly random product, for `duration` or the
/// request bound. Then checks every product's invariants.
pub async fn run_spread(config: &Config) -> anyhow::Result<Report> {
    let scenario = Scenario::Spread;
    config.validate(scenario)?;
    let endpoint = Endpoint::parse(&config.base_url)?;
    let run_id = run_id();
    let products: Vec<String> = (0..config.products)
        .map(|i| format!("sp-{run_id}-{i}"))
        .collect();
    stock_products(
        &endpoint,
        &config.admin_token,
        &products,
        config.units,
        config.concurrency,
    )
    .await?;

    let budget = Arc::new(Budget::new(config.duration, config.request_limit(scenario)));
    let spread = Arc::new(Spread {
        products: products.clone(),
        quantity: config.quantity,
        service_token: config.service_token.clone(),
        run_id,
    });
    let start = Instant::now();
    let results = spawn_clients(config.concurrency, |index| {
        let client = Client::new(&endpoint, &budget);
        spread_client(client, spread.clone(), index)
    })
    .await?;
    let elapsed = start.elapsed();
    finish(
        scenario, config, &endpoint, &products, results, elapsed, &budget,
    )
    .await
}

/// The bare-CAS reference: `concurrency` clients send `POST url` (one CAS
/// increment each) for `duration` or `max_requests` requests.
pub async fn run_cas(
    url: &str,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> anyhow::Result<Report> {
    ensure!(concurrency >= 1, "concurrency must be at least 1");
    let endpoint = Endpoint::parse(url)?;
    let budget = Arc::new(Budget::new(duration, max_requests));
    let start = Instant::now();
    let results = spawn_clients(concurrency, |_| {
        let mut client = Client::new(&endpoint, &budget);
        async move {
            let call = Request::new(Op::Cas, Method::POST, String::new());
            while !matches!(client.request(&call).await, Answer::Stopped) && !client.gave_up() {}
            client.recorder
        }
    })
    .await?;
    let elapsed = start.elapsed();
    let mut recorder = Recorder::default();
    for result in results {
        recorder.merge(result);
    }
    Ok(Report::new(
        "cas",
        url,
        concurrency,
        elapsed,
        budget.stop_reason(),
        &recorder,
    ))
}

/// Merges the clients' results, checks the products and builds the report.
async fn finish(
    scenario: Scenario,
    config: &Config,
    endpoint: &Endpoint,
    products: &[String],
    results: Vec<(Recorder, Tally)>,
    elapsed: Duration,
    budget: &Budget,
) -> anyhow::Result<Report> {
    // A flash sale is over when every client was refused with nothing held.
    let sold_out =
        scenario == Scenario::FlashSale && results.iter().all(|(_, tally)| tally.sold_out);
    let stop_reason = if sold_out {
        "sold out"
    } else {
        budget.stop_reason()
    };
    let mut recorder = Recorder::default();
    let mut tally = Tally::new(products.len());
    for (client_recorder, client_tally) in results {
        recorder.merge(client_recorder);
        tally.merge(&client_tally);
    }
    let expected: Vec<Expected> = tally
        .products
        .iter()
        .map(|product| Expected {
            initial: config.units,
            quantity: config.quantity,
            committed_units: product.committed_units,
            held_units: product.held_units,
            unresolved: product.unresolved,
            sold_out,
        })
        .collect();
    let checks = check_products(endpoint, products, &expected, config.concurrency).await?;
    let mut report = Report::new(
        scenario.name(),
        &config.base_url,
        config.concurrency,
        elapsed,
        stop_reason,
        &recorder,
    );
    report.outcomes = Some(Outcomes {
        products: products.len(),
        units_per_product: config.units,
        quantity: config.quantity,
        reservations: tally.reservations,
        commits: tally.commits,
        releases: tally.releases,
        committed_units: tally.products.iter().map(|p| p.committed_units).sum(),
        pending_units: tally.products.iter().map(|p| p.held_units).sum(),
        unresolved: tally.products.iter().map(|p| p.unresolved).sum(),
    });
    report.invariants = Some(InvariantReport::new(&checks));
    Ok(report)
}

/// Bounds a load phase in time and in requests; shared by its clients.
struct Budget {
    deadline: Instant,
    max_requests: u64,
    sent: AtomicU64,
    past_deadline: AtomicBool,
}

impl Budget {
    fn new(duration: Duration, max_requests: u64) -> Self {
        Self {
            deadline: Instant::now() + duration,
            max_requests,
            sent: AtomicU64::new(0),
            past_deadline: AtomicBool::new(false),
        }
    }

    /// Claims one request; false once the time or the requests are used up.
    fn take(&self) -> bool {
        if Instant::now() >= self.deadline {
            self.past_deadline.store(true, Ordering::Relaxed);
            return false;
        }
        self.sent.fetch_add(1, Ordering::Relaxed) < self.max_requests
    }

    /// Which bound ended the phase; if neither did, the clients gave up.
    fn stop_reason(&self) -> &'static str {
        if self.past_deadline.load(Ordering::Relaxed) {
            "duration limit"
        } else if self.sent.load(Ordering::Relaxed) >= self.max_requests {
            "request limit"
        } else {
            "too many consecutive errors"
        }
    }
}

/// The clients' randomness, from `fastrand` (seeded from the system, no cryptography
/// needed): uniform choices, coin flips and jittered pauses.
pub(crate) struct Rng(fastrand::Rng);

impl Rng {
    pub(crate) fn new() -> Self {
        Self(fastrand::Rng::new())
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.0.f64() < p
    }

    /// A pause of `base` plus up to as much again.
    fn jitter(&mut self, base: Duration) -> Duration {
        let micros = u64::try_from(base.as_micros()).unwrap_or(u64::MAX);
        base + Duration::from_micros(self.0.u64(..=micros))
    }
}

/// One request, re-sent as is on retries.
struct Request {
    op: Op,
    method: Method,
    path: String,
    token: Option<String>,
    idempotency_key: Option<String>,
    body: Option<Vec<u8>>,
}

impl Request {
    fn new(op: Op, method: Method, path: String) -> Self {
        Self {
            op,
            method,
            path,
            token: None,
            idempotency_key: None,
            body: None,
        }
    }

    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }
}

/// The final answer to a request, after retries.
enum Answer {
    /// A 2xx.
    Ok(Reply),
    /// A 4xx: the service refused, nothing was applied. Carries the problem code.
    Refused(Option<String>),
    /// No definite answer (transport errors, 5xx, or the budget ended between
    /// retries): the request may or may not have been applied.
    Unresolved,
    /// The budget ended before anything was sent.
    Stopped,
}

/// One simulated client.
struct Client {
    connection: Connection,
    recorder: Recorder,
    budget: Arc<Budget>,
    rng: Rng,
    consecutive_failures: u32,
}

impl Client {
    fn new(endpoint: &Endpoint, budget: &Arc<Budget>) -> Self {
        Self {
            connection: Connection::new(endpoint.clone()),
            recorder: Recorder::default(),
            budget: budget.clone(),
            rng: Rng::new(),
            consecutive_failures: 0,
        }
    }

    /// Too many operations in a row failed: this client should stop.
    fn gave_up(&self) -> bool {
        self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES
    }

    /// Sends a request within the budget, retrying 503s (after a pause based
    /// on `Retry-After`), other 5xx and transport errors; records every
    /// response.
    async fn request(&mut self, request: &Request) -> Answer {
        let answer = self.attempts(request).await;
        match &answer {
            Answer::Ok(_) | Answer::Stopped => self.consecutive_failures = 0,
            Answer::Refused(code) if code.as_deref() == Some("insufficient_stock") => {
                self.consecutive_failures = 0;
            }
            Answer::Refused(_) | Answer::Unresolved => self.consecutive_failures += 1,
        }
        answer
    }

    async fn attempts(&mut self, request: &Request) -> Answer {
        for attempt in 0..MAX_ATTEMPTS {
            if !self.budget.take() {
                return if attempt == 0 {
                    Answer::Stopped
                } else {
                    Answer::Unresolved
                };
            }
            let call = Call {
                method: request.method.clone(),
                path: &request.path,
                token: request.token.as_deref(),
                idempotency_key: request.idempotency_key.as_deref(),
                body: request.body.clone(),
            };
            let start = Instant::now();
            let result = self.connection.send(call).await;
            let latency = start.elapsed();
            let pause = match result {
                Ok(reply) => {
                    let status = reply.status.as_u16();
                    let code = if reply.status.is_success() {
                        None
                    } else {
                        reply.problem_code()
                    };
                    self.recorder
                        .response(request.op, status, code.as_deref(), latency);
                    match status {
                        200..=299 => return Answer::Ok(reply),
                        400..=499 => return Answer::Refused(code),
                        503 => {
                            self.recorder.retry_503();
                            reply
                                .retry_after
                                .map_or(MAX_RETRY_PAUSE, Duration::from_secs)
                                .min(MAX_RETRY_PAUSE)
                        }
                        _ => Duration::from_millis(10),
                    }
                }
                Err(_) => {
                    self.recorder.transport_error(request.op);
                    Duration::from_millis(10)
                }
            };
            let pause = self.rng.jitter(pause / 2);
            tokio::time::sleep(pause).await;
        }
        Answer::Unresolved
    }

    async fn reserve(
        &mut self,
        product_id: &str,
        quantity: u64,
        token: &str,
        key: String,
    ) -> Answer {
        let mut request = Request::new(Op::Reserve, Method::POST, "/v1/reservations".to_owned())
            .token(token)
            .json(&json!({"product_id": product_id, "quantity": quantity}));
        request.idempotency_key = Some(key);
        self.request(&request).await
    }

    /// Commits (with an order id) or releases (without) a reservation.
    async fn settle(
        &mut self,
        reservation_id: &str,
        order_id: Option<&str>,
        token: &str,
    ) -> Answer {
        let request = match order_id {
            Some(order_id) => Request::new(
                Op::Commit,
                Method::POST,
                format!("/v1/reservations/{reservation_id}/commit"),
            )
            .json(&json!({ "order_id": order_id })),
            None => Request::new(
                Op::Release,
                Method::POST,
                format!("/v1/reservations/{reservation_id}/release"),
            ),
        };
        self.request(&request.token(token)).await
    }
}

/// The reservation id of a 201 answer to a reservation.
fn reservation_id(reply: &Reply) -> Option<String> {
    let body = reply.json()?;
    let id = body.get("reservation_id")?.as_str()?;
    // Ids go into paths: accept only characters that need no escaping.
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:~".contains(&b))
        .then(|| id.to_owned())
}

/// What the tool did to one product.
#[derive(Debug, Clone, Copy, Default)]
struct ProductTally {
    committed_units: u64,
    held_units: u64,
    unresolved: u64,
}

/// What one client (or, merged, all of them) did.
#[derive(Debug, Clone, Default)]
struct Tally {
    reservations: u64,
    commits: u64,
    releases: u64,
    products: Vec<ProductTally>,
    /// Flash sale: this client stopped on insufficient stock with no reservation held.
    sold_out: bool,
}

impl Tally {
    fn new(products: usize) -> Self {
        Self {
            products: vec![ProductTally::default(); products],
            ..Self::default()
        }
    }

    fn merge(&mut self, other: &Self) {
        self.reservations += other.reservations;
        self.commits += other.commits;
        self.releases += other.releases;
        for (mine, theirs) in self.products.iter_mut().zip(&other.products) {
            mine.committed_units += theirs.committed_units;
            mine.held_units += theirs.held_units;
            mine.unresolved += theirs.unresolved;
        }
    }

    /// Records the answer to a commit or release of `quantity` units of
    /// `product`; true if the budget ended first (the units stay held).
    fn settled(&mut self, answer: &Answer, product: usize, quantity: u64, commit: bool) -> bool {
        let tally = &mut self.products[product];
        match answer {
            Answer::Ok(_) if commit => {
                self.commits += 1;
                tally.committed_units += quantity;
            }
            Answer::Ok(_) => self.releases += 1,
            Answer::Stopped => {
                tally.held_units += quantity;
                return true;
            }
            // A refused commit or release leaves the reservation's state
            // to be found out: the tool cannot vouch for its accounting.
            Answer::Refused(_) | Answer::Unresolved => tally.unresolved += 1,
        }
        false
    }
}

/// The flash sale's shared state.
struct Sale {
    product_id: String,
    quantity: u64,
    release_ratio: f64,
    service_token: String,
    run_id: String,
    /// Units in reservations that clients hold and have not settled yet: a
    /// client refused for insufficient stock stops only when this is 0, since
    /// a held reservation may still be released. (A client that releases
    /// always reserves again, so released units are never left unsold.)
    held: AtomicU64,
}

async fn sale_client(mut client: Client, sale: Arc<Sale>, index: usize) -> (Recorder, Tally) {
    let mut tally = Tally::new(1);
    let quantity = sale.quantity;
    let token = sale.service_token.as_str();
    // Every iteration sends at least one request, so the budget ends the loop.
    for seq in 0u64.. {
        if client.gave_up() {
            break;
        }
        let key = format!("{}-{index}-{seq}", sale.run_id);
        let answer = client.reserve(&sale.product_id, quantity, token, key).await;
        match answer {
            Answer::Ok(reply) => {
                tally.reservations += 1;
                sale.held.fetch_add(quantity, Ordering::SeqCst);
                let stopped = match reservation_id(&reply) {
                    Some(id) => {
                        let commit = !client.rng.chance(sale.release_ratio);
                        let order_id = format!("{}-o{index}-{seq}", sale.run_id);
                        let answer = client
                            .settle(&id, commit.then_some(order_id.as_str()), token)
                            .await;
                        tally.settled(&answer, 0, quantity, commit)
                    }
                    None => {
                        tally.products[0].unresolved += 1;
                        false
                    }
                };
                sale.held.fetch_sub(quantity, Ordering::SeqCst);
                if stopped {
                    break;
                }
            }
            Answer::Refused(code) => {
                if code.as_deref() == Some("insufficient_stock") {
                    if sale.held.load(Ordering::SeqCst) == 0 {
                        tally.sold_out = true;
                        break;
                    }
                    // Units held by others may come back: try again shortly.
                    let pause = client.rng.jitter(Duration::from_millis(2));
                    tokio::time::sleep(pause).await;
                }
            }
            Answer::Unresolved => tally.products[0].unresolved += 1,
            Answer::Stopped => break,
        }
    }
    (client.recorder, tally)
}

/// The spread's shared state.
struct Spread {
    products: Vec<String>,
    quantity: u64,
    service_token: String,
    run_id: String,
}

async fn spread_client(mut client: Client, spread: Arc<Spread>, index: usize) -> (Recorder, Tally) {
    let mut tally = Tally::new(spread.products.len());
    let quantity = spread.quantity;
    let token = spread.service_token.as_str();
    let mut pending: Vec<(usize, String)> = Vec::new();
    // Every iteration sends at least one request, so the budget ends the loop.
    for seq in 0u64.. {
        if client.gave_up() {
            break;
        }
        // 0: stock, 1: availability, 2: reserve, 3: commit, 4: release.
        let mut action = client.rng.below(5);
        if action >= 3 && pending.is_empty() {
            action = 2;
        } else if action == 2 && pending.len() >= MAX_PENDING {
            action = 3;
        }
        let stopped = match action {
            0 | 1 => {
                let product = &spread.products[client.rng.below(spread.products.len())];
                let request = if action == 0 {
                    Request::new(Op::GetStock, Method::GET, format!("/v1/stock/{product}"))
                } else {
                    Request::new(
                        Op::Availability,
                        Method::GET,
                        format!("/v1/stock/{product}/availability?quantity={quantity}"),
                    )
                };
                matches!(client.request(&request).await, Answer::Stopped)
            }
            2 => {
                let product = client.rng.below(spread.products.len());
                let key = format!("{}-{index}-{seq}", spread.run_id);
                match client
                    .reserve(&spread.products[product], quantity, token, key)
                    .await
                {
                    Answer::Ok(reply) => {
                        tally.reservations += 1;
                        match reservation_id(&reply) {
                            Some(id) => pending.push((product, id)),
                            None => tally.products[product].unresolved += 1,
                        }
                        false
                    }
                    Answer::Refused(_) => false,
                    Answer::Unresolved => {
                        tally.products[product].unresolved += 1;
                        false
                    }
                    Answer::Stopped => true,
                }
            }
            _ => {
                let (product, id) = pending.swap_remove(client.rng.below(pending.len()));
                let commit = action == 3;
                let order_id = format!("{}-o{index}-{seq}", spread.run_id);
                let answer = client
                    .settle(&id, commit.then_some(order_id.as_str()), token)
                    .await;
                tally.settled(&answer, product, quantity, commit)
            }
        };
        if stopped {
            break;
        }
    }
    for (product, _) in pending {
        tally.products[product].held_units += quantity;
    }
    (client.recorder, tally)
}

/// Runs `concurrency` client tasks and collects their results.
async fn spawn_clients<T, F, Fut>(concurrency: usize, mut client: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = (0..concurrency).map(|i| tokio::spawn(client(i))).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.context("a client task failed")?);
    }
    Ok(results)
}

/// Creates (or resets) each product with `units` on hand, over `parallel`
/// connections.
async fn stock_products(
    endpoint: &Endpoint,
    admin_token: &str,
    products: &[String],
    units: u64,
    parallel: usize,
) -> anyhow::Result<()> {
    let chunks = chunks(products, parallel);
    let results = spawn_clients(chunks.len(), |i| {
        let mut connection = Connection::new(endpoint.clone());
        let ids = chunks[i].clone();
        let token = admin_token.to_owned();
        async move {
            for id in ids {
                put_stock(&mut connection, &token, &id, units).await?;
            }
            anyhow::Ok(())
        }
    })
    .await?;
    results.into_iter().collect()
}

/// `PUT /v1/stock/{id}` with `{"quantity": units}`, retrying 503s and
/// transport errors a few times (the update is idempotent).
async fn put_stock(
    connection: &mut Connection,
    admin_token: &str,
    product_id: &str,
    units: u64,
) -> anyhow::Result<()> {
    let path = format!("/v1/stock/{product_id}");
    let body = json!({ "quantity": units }).to_string().into_bytes();
    let mut last = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
        let call = Call {
            method: Method::PUT,
            path: &path,
            token: Some(admin_token),
            idempotency_key: None,
            body: Some(body.clone()),
        };
        match connection.send(call).await {
            Ok(reply) if reply.status.is_success() => return Ok(()),
            Ok(reply) if reply.status.is_server_error() => {
                last = format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body));
            }
            Ok(reply) => bail!(
                "PUT {path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
            Err(error) => last = format!("{error:#}"),
        }
    }
    bail!("PUT {path}: no success after {MAX_ATTEMPTS} attempts: {last}")
}

/// Checks every product over up to `parallel` connections, in product order.
async fn check_products(
    endpoint: &Endpoint,
    products: &[String],
    expected: &[Expected],
    parallel: usize,
) -> anyhow::Result<Vec<ProductCheck>> {
    let work: Vec<(String, Expected)> = products
        .iter()
        .cloned()
        .zip(expected.iter().copied())
        .collect();
    let chunks = chunks(&work, parallel);
    let results = spawn_clients(chunks.len(), |i| {
        let mut connection = Connection::new(endpoint.clone());
        let items = chunks[i].clone();
        async move {
            let mut checks = Vec::with_capacity(items.len());
            for (id, expected) in items {
                checks.push(invariants::inspect(&mut connection, &id, expected).await);
            }
            checks
        }
    })
    .await?;
    Ok(results.into_iter().flatten().collect())
}

/// Splits `items` into at most `parts` contiguous, non-empty chunks.
fn chunks<T: Clone>(items: &[T], parts: usize) -> Vec<Vec<T>> {
    let size = items.len().div_ceil(parts.max(1)).max(1);
    items.chunks(size).map(<[T]>::to_vec).collect()
}

/// A short id unique to this run, for product, order and idempotency ids.
fn run_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{millis:x}-{:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_bound_requests_and_time() {
        let budget = Budget::new(Duration::from_secs(60), 3);
        assert!((0..3).all(|_| budget.take()));
        assert!(!budget.take());
        assert_eq!(budget.stop_reason(), "request limit");

        let budget = Budget::new(Duration::ZERO, 100);
        assert!(!budget.take());
        assert_eq!(budget.stop_reason(), "duration limit");
        assert_eq!(
            Budget::new(Duration::from_secs(1), 1).stop_reason(),
            "too many consecutive errors"
        );
    }

    #[test]
    fn default_request_bounds_follow_the_units_on_sale() {
        let mut config = Config::new(Scenario::FlashSale, "http://127.0.0.1:1", "a", "s");
        config.units = 60;
        assert_eq!(config.request_limit(Scenario::FlashSale), 60 * 50 + 10_000);
        config.quantity = 2;
        assert_eq!(config.request_limit(Scenario::FlashSale), 30 * 50 + 10_000);
        assert_eq!(config.request_limit(Scenario::Spread), 10_000_000);
        config.max_requests = Some(7);
        assert_eq!(config.request_limit(Scenario::FlashSale), 7);
    }

    #[test]
    fn configs_are_validated() {
        let good = Config::new(Scenario::Spread, "http://127.0.0.1:1", "a", "s");
        assert!(good.validate(Scenario::Spread).is_ok());
        let mut bad = good.clone();
        bad.release_ratio = 1.5;
        assert!(bad.validate(Scenario::FlashSale).is_err());
        let mut bad = good.clone();
        bad.concurrency = 0;
        assert!(bad.validate(Scenario::Spread).is_err());
        let mut bad = good.clone();
        bad.products = 0;
        assert!(bad.validate(Scenario::Spread).is_err());
        assert!(bad.validate(Scenario::FlashSale).is_ok());
        let mut bad = good;
        bad.units = 1;
        bad.quantity = 2;
        assert!(bad.validate(Scenario::FlashSale).is_err());
    }

    #[test]
    fn chunks_cover_every_item_once() {
        let items: Vec<u32> = (0..10).collect();
        let parts = chunks(&items, 3);
        assert_eq!(parts, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(chunks(&items[..2], 8), [vec![0], vec![1]]);
        assert!(chunks::<u32>(&[], 4).is_empty());
    }

    #[test]
    fn random_choices_stay_in_range() {
        let mut rng = Rng::new();
        assert!((0..1000).all(|_| rng.below(5) < 5));
        assert!((0..1000).all(|_| !rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let pause = rng.jitter(Duration::from_millis(2));
        assert!(pause >= Duration::from_millis(2) && pause <= Duration::from_millis(4));
    }

    #[test]
    fn only_path_safe_reservation_ids_are_used() {
        let reply = |body: &'static str| Reply {
            status: http::StatusCode::CREATED,
            retry_after: None,
            body: bytes::Bytes::from_static(body.as_bytes()),
        };
        assert_eq!(
            reservation_id(&reply(r#"{"reservation_id":"r-1a2b"}"#)).as_deref(),
            Some("r-1a2b")
        );
        assert_eq!(
            reservation_id(&reply(r#"{"reservation_id":"../x?y"}"#)),
            None
        );
        assert_eq!(reservation_id(&reply(r#"{"status":"PENDING"}"#)), None);
    }

    #[test]
    fn settling_updates_the_tally() {
        let mut tally = Tally::new(2);
        let ok = || {
            Answer::Ok(Reply {
                status: http::StatusCode::OK,
                retry_after: None,
                body: bytes::Bytes::new(),
            })
        };
        assert!(!tally.settled(&ok(), 1, 2, true));
        assert!(!tally.settled(&ok(), 1, 2, false));
        assert!(!tally.settled(&Answer::Unresolved, 0, 2, true));
        assert!(!tally.settled(&Answer::Refused(None), 0, 2, false));
        assert!(tally.settled(&Answer::Stopped, 0, 2, true));
        assert_eq!((tally.commits, tally.releases), (1, 1));
        assert_eq!(tally.products[1].committed_units, 2);
        assert_eq!(tally.products[0].unresolved, 2);
        assert_eq!(tally.products[0].held_units, 2);

        let mut all = Tally::new(2);
        all.merge(&tally);
        all.merge(&tally);
        assert_eq!(all.products[1].committed_units, 4);
        assert_eq!(all.commits, 2);
    }
}
