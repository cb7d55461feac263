//! Delivery of the admin webhook (SPEC §4, optional): after an operation, the
//! `LowStockAlert` and `OutOfStock` entries its writes appended are POSTed, one
//! CloudEvent each, to the Spin variable `alert_webhook_url` (empty or undefined: off).
//!
//! Best effort by design: the requests go out together once the operation is done, each
//! bounded by [`CONNECT_TIMEOUT`] and [`RESPONSE_TIMEOUT`]; a failure is logged to stderr
//! (without the URL, which may carry a secret) and never changes the operation's
//! answer. Nothing is retried: the feed (`GET /v1/events`) is the reliable channel.
//!
//! Spin only lets a component reach the origins in its `allowed_outbound_hosts`;
//! `spin.toml` lists `{{ alert_webhook_origin }}` there (a manifest expression over an
//! application variable), so the operator sets both variables together.

use std::time::Duration;

use anyhow::{Context, anyhow};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    Fields, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use stock_domain::models::HistoryEntry;
use stock_http::webhook::{alert_requests, webhook_url};

use crate::config;

/// The Spin variable holding the webhook URL.
pub const URL_VARIABLE: &str = "alert_webhook_url";
/// How long connecting to the receiver may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the receiver may take to start answering once connected.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `alerts` to the configured webhook, if any; logs whatever goes wrong.
pub fn notify(alerts: Vec<HistoryEntry>) {
    if alerts.is_empty() {
        return;
    }
    let url = match config::variable(URL_VARIABLE).and_then(|raw| match raw {
        Some(raw) => webhook_url(&raw),
        None => Ok(None),
    }) {
        Ok(Some(url)) => url,
        Ok(None) => return,
        Err(e) => {
            eprintln!("stock-service: alert webhook not sent: {e:#}");
            return;
        }
    };
    // All requests are started before any answer is awaited, so they run side by side.
    let started: Vec<_> = alert_requests(&url, alerts)
        .into_iter()
        .map(|(id, request)| (id, start(request)))
        .collect();
    for (id, in_flight) in started {
        match in_flight.and_then(finish) {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => eprintln!("stock-service: alert webhook answered {status} to {id}"),
            Err(e) => eprintln!("stock-service: alert webhook failed for {id}: {e:#}"),
        }
    }
}

fn wasi_error(what: &str) -> impl FnOnce(()) -> anyhow::Error + '_ {
    move |()| anyhow!("{what} was refused by the host")
}

/// Hands one request to the host, body included; the answer comes with [`finish`].
fn start(request: http::Request<Vec<u8>>) -> anyhow::Result<FutureIncomingResponse> {
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&headers).map_err(|e| anyhow!("headers: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    outgoing
        .set_method(&Method::Post)
        .map_err(wasi_error("the method"))?;
    let scheme = match parts.uri.scheme_str() {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(wasi_error("the scheme"))?;
    outgoing
        .set_authority(parts.uri.authority().map(|a| a.as_str()))
        .map_err(wasi_error("the authority"))?;
    outgoing
        .set_path_with_query(parts.uri.path_and_query().map(|p| p.as_str()))
        .map_err(wasi_error("the path"))?;
    let outgoing_body = outgoing.body().map_err(wasi_error("the body"))?;
    let options = RequestOptions::new();
    // A host that does not support a timeout says so; the request still goes out.
    let _ = options.set_connect_timeout(Some(nanos(CONNECT_TIMEOUT)));
    let _ = options.set_first_byte_timeout(Some(nanos(RESPONSE_TIMEOUT)));
    let _ = options.set_between_bytes_timeout(Some(nanos(RESPONSE_TIMEOUT)));
    let response =
        outgoing_handler::handle(outgoing, Some(options)).map_err(|e| anyhow!("sending: {e:?}"))?;
    {
        let stream = outgoing_body
            .write()
            .map_err(wasi_error("the body stream"))?;
        // `blocking-write-and-flush` takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| anyhow!("writing the body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| anyhow!("ending the body: {e:?}"))?;
    Ok(response)
}

/// Waits for the answer's status (the timeouts bound the wait).
fn finish(response: FutureIncomingResponse) -> anyhow::Result<u16> {
    response.subscribe().block();
    let answer = response
        .get()
        .context("no answer although it was ready")?
        .map_err(|()| anyhow!("the answer was already taken"))?
        .map_err(|e| anyhow!("{e:?}"))?;
    Ok(answer.status())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
