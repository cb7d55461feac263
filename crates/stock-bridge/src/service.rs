//! The stock service's HTTP API as the bridge uses it: pages of the event feed
//! (`GET /v1/events`) and delivery of inbound events (`POST /v1/events`).

use cloudevents::Event;
use cloudevents::binding::reqwest::RequestBuilderExt;
use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;

/// One page of a feed partition, as the service answers it.
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    /// Number of feed partitions (they are numbered `0..partitions`).
    pub partitions: u32,
    /// The partition's entries after the cursor given, oldest first; empty when caught up.
    pub events: Vec<Event>,
    /// The cursor to pass as `after` next time (null only before the first entry).
    pub next_after: Option<String>,
}

/// Why a call to the service did not give an answer to act on. Every variant is retried:
/// the bridge never skips an entry (see each caller).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// Connection refused, reset, timed out, or a body that could not be read.
    #[error("service unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    /// A 5xx, 401, 403, 408 or 429 (or a feed 4xx), with the start of the body.
    #[error("service answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// The feed answered 200 with a body that is not a page of CloudEvents.
    #[error("feed page unreadable: {0}")]
    Page(serde_json::Error),
    /// The event could not be written as an HTTP request (a binding error).
    #[error("event not encodable as an HTTP request: {0}")]
    Encode(#[from] cloudevents::message::Error),
}

/// What the service said to an inbound event.
#[derive(Debug)]
pub(crate) enum Ingest {
    /// 2xx: applied now or before (`duplicate`).
    Accepted,
    /// 4xx: refused for good; `problem` is the problem+json body (or one built from it).
    Refused { status: StatusCode, problem: String },
}

/// Client of one stock service.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    http: Client,
    events_url: Url,
    token: Option<String>,
}

/// 4xx answers that say nothing about the event itself — a wrong or missing token, a
/// timeout, rate limiting — are retried like a 5xx: dead-lettering on them would send
/// every record to the DLQ while the bridge is misconfigured or the service is busy.
fn not_the_events_fault(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
    )
}

/// Keeps an error body short enough for a log line.
fn excerpt(body: &str) -> String {
    body.chars().take(500).collect()
}

impl Service {
    /// `base` is the service's root URL (`http://host:port`, any path prefix kept).
    pub(crate) fn new(base: &Url, token: Option<String>) -> Result<Self, reqwest::Error> {
        let mut events_url = base.clone();
        let path = format!("{}/v1/events", base.path().trim_end_matches('/'));
        events_url.set_path(&path);
        let http = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Service {
            http,
            events_url,
            token,
        })
    }

    /// `GET /v1/events?partition={partition}&limit={limit}[&after={after}]`.
    pub(crate) async fn page(
        &self,
        partition: u32,
        after: Option<&str>,
        limit: u16,
    ) -> Result<Page, ServiceError> {
        let mut url = self.events_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("partition", &partition.to_string());
            query.append_pair("limit", &limit.to_string());
            if let Some(after) = after {
                query.append_pair("after", after);
            }
        }
        let response = self.http.get(url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if status != StatusCode::OK {
            return Err(ServiceError::Status {
                status,
                body: excerpt(&String::from_utf8_lossy(&body)),
            });
        }
        serde_json::from_slice(&body).map_err(ServiceError::Page)
    }

    /// `POST /v1/events` with the bearer token, the event in HTTP binary mode.
    pub(crate) async fn ingest(&self, event: Event) -> Result<Ingest, ServiceError> {
        let mut request = self.http.post(self.events_url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.event(event)?.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Ingest::Accepted);
        }
        let body = response.text().await?;
        if status.is_client_error() && !not_the_events_fault(status) {
            // Keep a problem+json body as it is; wrap anything else in one so that the
            // dead-letter header is always a problem document.
            let problem = match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(value) if value.is_object() => body,
                _ => serde_json::json!({
                    "type": "about:blank",
                    "title": status.canonical_reason().unwrap_or("Client error"),
                    "status": status.as_u16(),
                    "detail": excerpt(&body),
                })
                .to_string(),
            };
            return Ok(Ingest::Refused { status, problem });
        }
        Err(ServiceError::Status {
            status,
            body: excerpt(&body),
        })
    }
}
