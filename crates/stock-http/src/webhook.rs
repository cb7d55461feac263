//! The admin webhook (SPEC §4, optional): each `LowStockAlert` and `OutOfStock` entry a
//! request's writes appended is POSTed to the configured URL as one CloudEvent in
//! structured mode (`application/cloudevents+json`), exactly as the history and the feed
//! serve it, so a receiver can de-duplicate by `source` and `id` against the feed.
//!
//! Delivery is the adapter's, best effort: failures are logged and never change the
//! operation's answer. The feed (`GET /v1/events`) stays the reliable channel.

use anyhow::{Context, bail};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Uri};
use stock_domain::models::HistoryEntry;

use crate::wire::CloudEvent;

/// The content type of a structured-mode CloudEvent.
pub const MEDIA_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The webhook URL as configured: `None` when empty (the webhook is off), else an
/// absolute `http` or `https` URL.
pub fn webhook_url(raw: &str) -> anyhow::Result<Option<Uri>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let uri: Uri = raw.parse().context("the alert webhook URL is not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        bail!("the alert webhook URL must be an absolute http:// or https:// URL");
    }
    Ok(Some(uri))
}

/// One POST to `url` per alert entry of `entries`, in order, each with its CloudEvent
/// `id` (for logs); other entries are skipped.
pub fn alert_requests(url: &Uri, entries: Vec<HistoryEntry>) -> Vec<(String, Request<Vec<u8>>)> {
    entries
        .into_iter()
        .filter(|e| e.kind.is_alert())
        .map(|entry| {
            let event = CloudEvent::new(entry);
            let body = serde_json::to_vec(&event).expect("wire types always serialize");
            let request = Request::builder()
                .method(Method::POST)
                .uri(url.clone())
                .header(CONTENT_TYPE, MEDIA_TYPE)
                .header(CONTENT_LENGTH, body.len())
                .body(body)
                .expect("a parsed URI and static headers make a valid request");
            (event.id, request)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use stock_domain::models::{EventKind, Levels, OpId, ProductId};

    use super::*;

    fn entry(seq: u64, kind: EventKind) -> HistoryEntry {
        HistoryEntry {
            seq,
            kind,
            product_id: ProductId::parse("SKU-1").unwrap(),
            warehouse_id: None,
            time: 1_700_000_000_123,
            quantity: 0,
            before: Levels::default(),
            after: Levels::default(),
            reason: None,
            reservation_id: None,
            order_id: None,
            idempotency_key: None,
            op: OpId::new("op"),
            feed: None,
        }
    }

    #[test]
    fn an_empty_url_turns_the_webhook_off() {
        assert_eq!(webhook_url("").unwrap(), None);
        assert_eq!(webhook_url("  ").unwrap(), None);
    }

    #[test]
    fn the_url_must_be_absolute_http_or_https() {
        let url = webhook_url(" http://127.0.0.1:8080/hooks/stock?team=ops ").unwrap();
        assert_eq!(
            url.unwrap().to_string(),
            "http://127.0.0.1:8080/hooks/stock?team=ops"
        );
        assert!(
            webhook_url("https://hooks.example.com/x")
                .unwrap()
                .is_some()
        );
        for bad in [
            "/hooks",
            "ftp://example.com/x",
            "hooks.example.com",
            "http://",
        ] {
            assert!(webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_alert_entry_becomes_one_structured_cloudevent_post() {
        let url = webhook_url("http://127.0.0.1:1/hook").unwrap().unwrap();
        let requests = alert_requests(
            &url,
            vec![
                entry(3, EventKind::StockReserved),
                entry(4, EventKind::LowStockAlert),
                entry(6, EventKind::OutOfStock),
            ],
        );
        assert_eq!(requests.len(), 2);
        for ((event_id, request), (id, kind)) in requests
            .iter()
            .zip([("SKU-1:4", "LowStockAlert"), ("SKU-1:6", "OutOfStock")])
        {
            assert_eq!(event_id, id);
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri(), &url);
            assert_eq!(request.headers()[CONTENT_TYPE], MEDIA_TYPE);
            assert_eq!(
                request.headers()[CONTENT_LENGTH],
                request.body().len().to_string().as_str()
            );
            let json: Value = serde_json::from_slice(request.body()).unwrap();
            assert_eq!(json["specversion"], "1.0");
            assert_eq!(json["id"], id);
            assert_eq!(json["type"], kind);
            assert_eq!(json["subject"], "SKU-1");
            assert_eq!(json["source"], "/stock-service/products/SKU-1");
        }
    }
}
