//! Latency of each endpoint against a filled store: sequential requests on one
//! keep-alive connection, on products drawn at random, each answer checked for its
//! status and the shape of its body.

use std::time::Instant;

use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::http::{Call, Connection, Endpoint as HttpEndpoint};
use crate::scenario::Rng;
use crate::stats::percentile;

use super::fill::{is_low, product_id};

/// Page size of the paged reads.
const PAGE: usize = 100;
/// Unmeasured requests per endpoint before its samples.
const WARM_UP: usize = 3;

/// The measured endpoints, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    GetStock,
    Availability,
    Reserve,
    Release,
    Commit,
    History,
    Alerts,
    ProductList,
    Events,
    Expire,
}

impl Endpoint {
    pub const ALL: [Self; 10] = [
        Self::GetStock,
        Self::Availability,
        Self::Reserve,
        Self::Release,
        Self::Commit,
        Self::History,
        Self::Alerts,
        Self::ProductList,
        Self::Events,
        Self::Expire,
    ];

    /// The table's row label.
    pub fn label(self) -> &'static str {
        match self {
            Self::GetStock => "GET /v1/stock/{id}",
            Self::Availability => "GET …/{id}/availability",
            Self::Reserve => "POST /v1/reservations",
            Self::Release => "POST …/{id}/release",
            Self::Commit => "POST …/{id}/commit",
            Self::History => "GET …/{id}/history",
            Self::Alerts => "GET /v1/admin/alerts",
            Self::ProductList => "GET /v1/stock?limit=100",
            Self::Events => "GET /v1/events",
            Self::Expire => "POST /v1/admin/expire",
        }
    }
}

/// How many samples to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Samples {
    /// Of every endpoint but those below.
    pub each: usize,
    /// Of the event feed.
    pub events: usize,
    /// Of the expiry sweep.
    pub expire: usize,
}

impl Samples {
    fn of(&self, endpoint: Endpoint) -> usize {
        match endpoint {
            Endpoint::Events => self.events,
            Endpoint::Expire => self.expire,
            _ => self.each,
        }
    }
}

/// One endpoint's latencies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointLatency {
    pub endpoint: Endpoint,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first wrong answer (status or body), which ends the endpoint's sampling.
    pub failure: Option<String>,
}

impl EndpointLatency {
    fn new(endpoint: Endpoint, mut latencies_us: Vec<u64>, failure: Option<String>) -> Self {
        latencies_us.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            endpoint,
            samples: latencies_us.len(),
            p50_ms: ms(percentile(&latencies_us, 50.0)),
            p99_ms: ms(percentile(&latencies_us, 99.0)),
            max_ms: ms(latencies_us.last().copied().unwrap_or(0)),
            failure,
        }
    }
}

/// Tokens and the products to pick from.
pub struct Target<'a> {
    pub base_url: &'a str,
    pub admin_token: &'a str,
    pub service_token: &'a str,
    pub products: usize,
}

/// What a sampled request must answer.
struct Expect {
    status: u16,
    check: fn(&Value, &str) -> Result<(), String>,
    /// What the body check compares with (a product id), if anything.
    subject: String,
}

/// A request to measure.
struct Probe {
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    expect: Expect,
}

/// Measures every endpoint of `endpoints`, in order, against every target at once:
/// the samples of one endpoint alternate between the targets, round by round, so that
/// whatever else the machine is doing meanwhile (disk syncs of other work, above all)
/// weighs on every size alike. Returns each target's latencies, in `targets` order.
pub async fn measure(
    targets: &[Target<'_>],
    endpoints: &[Endpoint],
    samples: Samples,
) -> anyhow::Result<Vec<Vec<EndpointLatency>>> {
    let mut sessions = targets
        .iter()
        .map(|target| {
            Ok(Session {
                endpoint: HttpEndpoint::parse(target.base_url)?,
                rng: Rng::new(),
                target,
                held: Vec::new(),
                cursors: Cursors::default(),
                orders: 0,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut results = vec![Vec::new(); targets.len()];
    for &endpoint in endpoints {
        // Reserve makes the reservations that release and commit then settle, warm-ups
        // included.
        let count = match endpoint {
            Endpoint::Reserve => 2 * (samples.of(endpoint) + WARM_UP),
            other => samples.of(other),
        };
        let mut latencies = vec![Vec::with_capacity(count); sessions.len()];
        let mut failures: Vec<Option<String>> = vec![None; sessions.len()];
        for round in 0..WARM_UP + count {
            for k in 0..sessions.len() {
                // Each round starts with the next target, so none always goes first.
                let i = (round + k) % sessions.len();
                if failures[i].is_some() {
                    continue;
                }
                match sessions[i].once(endpoint).await {
                    Ok(us) if round >= WARM_UP => latencies[i].push(us),
                    Ok(_) => {}
                    Err(failure) => failures[i] = Some(failure),
                }
            }
        }
        for (i, (latencies, failure)) in latencies.into_iter().zip(failures).enumerate() {
            results[i].push(EndpointLatency::new(endpoint, latencies, failure));
        }
    }
    Ok(results)
}

/// Cursors of the paged reads, followed from one sample to the next.
#[derive(Default)]
struct Cursors {
    alerts: Option<String>,
    products: Option<String>,
    events: Option<String>,
    expire: Option<String>,
}

struct Session<'a> {
    endpoint: HttpEndpoint,
    rng: Rng,
    target: &'a Target<'a>,
    /// Reservations made by the reserve samples, released or committed later.
    held: Vec<String>,
    cursors: Cursors,
    orders: usize,
}

impl Session<'_> {
    /// A product at random.
    fn any_product(&mut self) -> String {
        product_id(self.rng.below(self.target.products))
    }

    /// A product at random that is not low, so it has units to reserve.
    fn stocked_product(&mut self) -> String {
        loop {
            let index = self.rng.below(self.target.products);
            if !is_low(index) || self.target.products == 1 {
                return product_id(index);
            }
        }
    }

    /// Sends one request for `endpoint` and checks its answer; its latency in µs, or
    /// what was wrong.
    async fn once(&mut self, endpoint: Endpoint) -> Result<u64, String> {
        let Some(probe) = self.probe(endpoint) else {
            return Err("no reservation left to settle (the reserve samples failed)".into());
        };
        // A new connection per request: Spin's HTTP server does not set TCP_NODELAY and
        // writes a response's head and body apart, so on a kept-alive connection the body
        // waits for the client's delayed ACK (about 40 ms on Linux), which would hide what
        // the request itself costs. Connecting on loopback is part of the sample.
        let mut connection = Connection::new(self.endpoint.clone());
        let started = Instant::now();
        let reply = connection
            .send(Call {
                method: probe.method.clone(),
                path: &probe.path,
                token: probe.token.as_deref(),
                idempotency_key: None,
                body: probe.body.as_ref().map(|b| b.to_string().into_bytes()),
            })
            .await;
        let elapsed = started.elapsed();
        let what = |why: String| format!("{} {}: {why}", probe.method, probe.path);
        let reply = reply.map_err(|error| what(format!("{error:#}")))?;
        let body = reply.json().unwrap_or(Value::Null);
        if reply.status.as_u16() != probe.expect.status {
            let text: String = String::from_utf8_lossy(&reply.body)
                .chars()
                .take(300)
                .collect();
            return Err(what(format!(
                "status {} (expected {}): {text}",
                reply.status.as_u16(),
                probe.expect.status
            )));
        }
        (probe.expect.check)(&body, &probe.expect.subject).map_err(what)?;
        self.follow(endpoint, &body);
        Ok(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }

    /// Keeps what a successful answer hands to later samples.
    fn follow(&mut self, endpoint: Endpoint, body: &Value) {
        let next = |key: &str| body.get(key).and_then(cursor_text);
        match endpoint {
            Endpoint::Reserve => {
                if let Some(id) = body["reservation_id"].as_str() {
                    self.held.push(id.to_owned());
                }
            }
            Endpoint::Alerts => self.cursors.alerts = next("next"),
            Endpoint::ProductList => self.cursors.products = next("next"),
            Endpoint::Events => self.cursors.events = next("next_after"),
            Endpoint::Expire => self.cursors.expire = next("next"),
            _ => {}
        }
    }

    /// The next request for `endpoint`; `None` when release or commit has nothing left
    /// to settle.
    fn probe(&mut self, endpoint: Endpoint) -> Option<Probe> {
        let admin = Some(self.target.admin_token.to_owned());
        let service = Some(self.target.service_token.to_owned());
        let paged = |path: &str, after: &Option<String>| match after {
            Some(after) => format!("{path}?limit={PAGE}&after={}", encode(after)),
            None => format!("{path}?limit={PAGE}"),
        };
        let probe = |method, path, token, body, status, check, subject| Probe {
            method,
            path,
            token,
            body,
            expect: Expect {
                status,
                check,
                subject,
            },
        };
        Some(match endpoint {
            Endpoint::GetStock => {
                let id = self.any_product();
                probe(
                    Method::GET,
                    format!("/v1/stock/{id}"),
                    None,
                    None,
                    200,
                    check_stock,
                    id,
                )
            }
            Endpoint::Availability => {
                let id = self.any_product();
                let path = format!("/v1/stock/{id}/availability?quantity=1");
                probe(Method::GET, path, None, None, 200, check_availability, id)
            }
            Endpoint::Reserve => {
                let id = self.stocked_product();
                let body = json!({"product_id": id, "quantity": 1});
                let path = "/v1/reservations".to_owned();
                probe(
                    Method::POST,
                    path,
                    service,
                    Some(body),
                    201,
                    check_pending,
                    id,
                )
            }
            Endpoint::Release => {
                let rid = self.held.pop()?;
                let path = format!("/v1/reservations/{rid}/release");
                probe(Method::POST, path, service, None, 200, check_released, rid)
            }
            Endpoint::Commit => {
                let rid = self.held.pop()?;
                self.orders += 1;
                let body = json!({"order_id": format!("scale-order-{}", self.orders)});
                let path = format!("/v1/reservations/{rid}/commit");
                probe(
                    Method::POST,
                    path,
                    service,
                    Some(body),
                    200,
                    check_committed,
                    rid,
                )
            }
            Endpoint::History => {
                let id = self.any_product();
                let path = format!("/v1/stock/{id}/history?limit={PAGE}");
                probe(Method::GET, path, None, None, 200, check_history, id)
            }
            Endpoint::Alerts => {
                let path = paged("/v1/admin/alerts", &self.cursors.alerts);
                probe(
                    Method::GET,
                    path,
                    admin,
                    None,
                    200,
                    check_alerts,
                    String::new(),
                )
            }
            Endpoint::ProductList => {
                let path = paged("/v1/stock", &self.cursors.products);
                probe(
                    Method::GET,
                    path,
                    None,
                    None,
                    200,
                    check_products,
                    String::new(),
                )
            }
            Endpoint::Events => {
                let path = paged("/v1/events", &self.cursors.events);
                probe(
                    Method::GET,
                    path,
                    None,
                    None,
                    200,
                    check_events,
                    String::new(),
                )
            }
            Endpoint::Expire => {
                let path = match &self.cursors.expire {
                    Some(after) => format!("/v1/admin/expire?after={}", encode(after)),
                    None => "/v1/admin/expire".to_owned(),
                };
                probe(
                    Method::POST,
                    path,
                    admin,
                    None,
                    200,
                    check_expire,
                    String::new(),
                )
            }
        })
    }
}

/// A cursor from a JSON answer (a string, or a number for history pages).
fn cursor_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Percent-encodes a query value (cursors may hold any id character).
fn encode(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

fn field<'v>(body: &'v Value, name: &str) -> Result<&'v Value, String> {
    body.get(name)
        .ok_or_else(|| format!("no {name:?} in {}", truncated(body)))
}

fn truncated(body: &Value) -> String {
    body.to_string().chars().take(300).collect()
}

fn same_id(body: &Value, name: &str, expected: &str) -> Result<(), String> {
    match field(body, name)?.as_str() {
        Some(id) if id == expected => Ok(()),
        _ => Err(format!("{name} is not {expected:?}: {}", truncated(body))),
    }
}

fn number(body: &Value, name: &str) -> Result<u64, String> {
    field(body, name)?
        .as_u64()
        .ok_or_else(|| format!("{name} is not a count: {}", truncated(body)))
}

fn array<'v>(body: &'v Value, name: &str) -> Result<&'v Vec<Value>, String> {
    field(body, name)?
        .as_array()
        .ok_or_else(|| format!("{name} is not an array: {}", truncated(body)))
}

/// A cursor field: present, a string or null.
fn cursor_field(body: &Value, name: &str) -> Result<(), String> {
    match field(body, name)? {
        Value::Null | Value::String(_) => Ok(()),
        _ => Err(format!("{name} is not a cursor: {}", truncated(body))),
    }
}

fn check_stock(body: &Value, id: &str) -> Result<(), String> {
    same_id(body, "product_id", id)?;
    number(body, "on_hand")?;
    number(body, "available_quantity")?;
    array(body, "warehouses").map(drop)
}

fn check_availability(body: &Value, id: &str) -> Result<(), String> {
    same_id(body, "product_id", id)?;
    number(body, "available_quantity")?;
    match field(body, "available")? {
        Value::Bool(_) => Ok(()),
        _ => Err(format!("available is not a boolean: {}", truncated(body))),
    }
}

fn reservation(body: &Value, status: &str) -> Result<(), String> {
    field(body, "reservation_id")?
        .as_str()
        .ok_or_else(|| format!("no reservation id: {}", truncated(body)))?;
    match field(body, "status")?.as_str() {
        Some(s) if s == status => Ok(()),
        _ => Err(format!("status is not {status}: {}", truncated(body))),
    }
}

fn check_pending(body: &Value, id: &str) -> Result<(), String> {
    reservation(body, "PENDING")?;
    same_id(body, "product_id", id)
}

fn check_released(body: &Value, rid: &str) -> Result<(), String> {
    reservation(body, "RELEASED")?;
    same_id(body, "reservation_id", rid)
}

fn check_committed(body: &Value, rid: &str) -> Result<(), String> {
    reservation(body, "COMMITTED")?;
    same_id(body, "reservation_id", rid)
}

fn check_history(body: &Value, id: &str) -> Result<(), String> {
    same_id(body, "product_id", id)?;
    let events = array(body, "events")?;
    if events.is_empty() {
        return Err(format!("no history: {}", truncated(body)));
    }
    match events[0].get("subject").and_then(Value::as_str) {
        Some(subject) if subject == id => Ok(()),
        _ => Err(format!(
            "history entry of another product: {}",
            truncated(body)
        )),
    }
}

fn check_alerts(body: &Value, _: &str) -> Result<(), String> {
    let alerts = array(body, "alerts")?;
    for alert in alerts {
        field(alert, "product_id")?;
        let available = number(alert, "available_quantity")?;
        let threshold = number(alert, "low_stock_threshold")?;
        if available > threshold {
            return Err(format!(
                "an alert above its threshold: {}",
                truncated(alert)
            ));
        }
    }
    cursor_field(body, "next")
}

fn check_products(body: &Value, _: &str) -> Result<(), String> {
    let items = array(body, "items")?;
    for item in items {
        field(item, "product_id")?;
        number(item, "available_quantity")?;
    }
    cursor_field(body, "next")?;
    if items.is_empty() && !body["next"].is_null() {
        return Err(format!(
            "an empty page that is not the last: {}",
            truncated(body)
        ));
    }
    Ok(())
}

/// A page of the whole feed: the fill wrote far more entries than the samples read, and
/// all of them are final by the time `spin up` serves them, so it is never empty.
fn check_events(body: &Value, _: &str) -> Result<(), String> {
    let events = array(body, "events")?;
    if events.is_empty() {
        return Err(format!("an empty feed page: {}", truncated(body)));
    }
    for event in events {
        match event.get("specversion").and_then(Value::as_str) {
            Some("1.0") => {}
            _ => return Err(format!("not a CloudEvent: {}", truncated(event))),
        }
    }
    cursor_field(body, "next_after")
}

fn check_expire(body: &Value, _: &str) -> Result<(), String> {
    array(body, "expired")?;
    array(body, "repaired")?;
    cursor_field(body, "next")?;
    match field(body, "done")? {
        Value::Bool(_) => Ok(()),
        _ => Err(format!("done is not a boolean: {}", truncated(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_checks_accept_the_documented_shapes_and_refuse_others() {
        let stock =
            json!({"product_id": "p", "on_hand": 3, "available_quantity": 2, "warehouses": []});
        assert!(check_stock(&stock, "p").is_ok());
        assert!(check_stock(&stock, "q").is_err());
        assert!(check_stock(&json!({"product_id": "p"}), "p").is_err());

        let pending = json!({"reservation_id": "r", "status": "PENDING", "product_id": "p"});
        assert!(check_pending(&pending, "p").is_ok());
        assert!(check_committed(&pending, "r").is_err());
        let committed = json!({"reservation_id": "r", "status": "COMMITTED"});
        assert!(check_committed(&committed, "r").is_ok());
        assert!(check_released(&committed, "r").is_err());

        let low = json!({"alerts": [{"product_id": "p", "available_quantity": 5, "low_stock_threshold": 10}], "next": null});
        assert!(check_alerts(&low, "").is_ok());
        let high = json!({"alerts": [{"product_id": "p", "available_quantity": 50, "low_stock_threshold": 10}], "next": null});
        assert!(check_alerts(&high, "").is_err());

        assert!(check_products(&json!({"items": [], "next": null}), "").is_ok());
        assert!(check_products(&json!({"items": [], "next": "0.1"}), "").is_err());
        assert!(
            check_products(&json!({"items": [{"product_id": "p"}], "next": null}), "").is_err()
        );

        let history = json!({"product_id": "p", "events": [{"subject": "p"}], "next_after": null});
        assert!(check_history(&history, "p").is_ok());
        assert!(check_history(&json!({"product_id": "p", "events": []}), "p").is_err());

        assert!(
            check_events(
                &json!({"events": [{"specversion": "1.0"}], "next_after": "1.2-0.0"}),
                ""
            )
            .is_ok()
        );
        assert!(check_events(&json!({"events": [{}], "next_after": "1.2"}), "").is_err());
        assert!(check_events(&json!({"events": [], "next_after": "1.2"}), "").is_err());

        let swept = json!({"expired": [], "repaired": [], "next": null, "done": true});
        assert!(check_expire(&swept, "").is_ok());
        assert!(check_expire(&json!({"expired": [], "done": true}), "").is_err());
    }

    #[test]
    fn latencies_summarise_with_nearest_rank_percentiles() {
        let latency = EndpointLatency::new(
            Endpoint::GetStock,
            (1..=100).rev().map(|ms| ms * 1000).collect(),
            None,
        );
        assert_eq!(
            (
                latency.samples,
                latency.p50_ms,
                latency.p99_ms,
                latency.max_ms
            ),
            (100, 50.0, 99.0, 100.0)
        );
        let none = EndpointLatency::new(Endpoint::Events, Vec::new(), Some("status 500".into()));
        assert_eq!((none.samples, none.p50_ms), (0, 0.0));
    }

    #[test]
    fn cursors_are_encoded_for_the_query() {
        assert_eq!(encode("1796098361973.2.SKU:42"), "1796098361973.2.SKU%3A42");
        assert_eq!(cursor_text(&json!(7)), Some("7".to_owned()));
        assert_eq!(cursor_text(&Value::Null), None);
    }
}
