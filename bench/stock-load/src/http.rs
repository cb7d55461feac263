//! A minimal HTTP/1.1 client for load generation: one keep-alive connection per
//! simulated client (no pool, no TLS: plain `http://` targets only), with
//! connect and request timeouts, and transparent reconnection after the server
//! closes a connection.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bound on establishing a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request, from sending to the end of the response body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go: a parsed `http://host:port[/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// The URL's path without a trailing slash (`""` for the root).
    prefix: String,
}

impl Endpoint {
    /// Parses a base URL. Only `http` is supported; the port defaults to 80.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("unsupported scheme {other:?} in {url:?} (only http)"),
            None => bail!("URL {url:?} has no scheme (expected http://host:port)"),
        }
        let host = uri
            .host()
            .with_context(|| format!("URL {url:?} has no host"))?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        if uri.query().is_some() {
            bail!("URL {url:?} must not have a query");
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { authority, prefix })
    }

    /// The request target for `path` (which starts with `/`, or is empty).
    fn target(&self, path: &str) -> String {
        match (self.prefix.as_str(), path) {
            ("", "") => "/".to_owned(),
            (prefix, path) => format!("{prefix}{path}"),
        }
    }
}

/// One request to send.
pub struct Call<'a> {
    pub method: Method,
    /// Path and query below the endpoint's prefix.
    pub path: &'a str,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<&'a str>,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// `Retry-After` in whole seconds, when given as such.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The RFC 9457 problem `code` of an error response, if any.
    pub fn problem_code(&self) -> Option<String> {
        let value = self.json()?;
        value.get("code")?.as_str().map(str::to_owned)
    }
}

/// A client's single keep-alive connection to one endpoint.
pub struct Connection {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection that is opened on first use.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            sender: None,
        }
    }

    /// Sends one request and reads the whole response. A transport error or a
    /// timeout closes the connection (the next call reconnects) and is returned
    /// as an error: whether the server acted on the request is then unknown.
    pub async fn send(&mut self, call: Call<'_>) -> anyhow::Result<Reply> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(call)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("timed out after {REQUEST_TIMEOUT:?}")),
        };
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }

    async fn exchange(&mut self, call: Call<'_>) -> anyhow::Result<Reply> {
        let mut builder = Request::builder()
            .method(call.method)
            .uri(self.endpoint.target(call.path))
            .header(header::HOST, &self.endpoint.authority);
        if let Some(token) = call.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = call.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let body = match call.body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(body))?;
        let sender = self.ready_sender().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok());
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// The open connection, ready for a request; (re)connects when needed.
    async fn ready_sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        let sender = match self.sender.take() {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        Ok(self.sender.insert(sender))
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let authority = &self.endpoint.authority;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
            .await
            .with_context(|| format!("connecting to {authority}: timed out"))?
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_prefix() {
        let root = Endpoint::parse("http://127.0.0.1:9003").unwrap();
        assert_eq!(root.authority, "127.0.0.1:9003");
        assert_eq!(root.target("/v1/stock/a"), "/v1/stock/a");
        let root_slash = Endpoint::parse("http://localhost:9003/").unwrap();
        assert_eq!(root_slash.target("/v1/x"), "/v1/x");
        let cas = Endpoint::parse("http://127.0.0.1:9004/bench/cas").unwrap();
        assert_eq!(cas.target(""), "/bench/cas");
        assert_eq!(Endpoint::parse("http://h").unwrap().authority, "h:80");
    }

    #[test]
    fn endpoints_reject_other_schemes_and_queries() {
        assert!(Endpoint::parse("https://127.0.0.1:1").is_err());
        assert!(Endpoint::parse("127.0.0.1:9003").is_err());
        assert!(Endpoint::parse("http://127.0.0.1:1/?a=b").is_err());
    }

    #[test]
    fn problem_codes_are_read_from_json_bodies() {
        let reply = Reply {
            status: StatusCode::CONFLICT,
            retry_after: None,
            body: Bytes::from_static(br#"{"code":"insufficient_stock","status":409}"#),
        };
        assert_eq!(reply.problem_code().as_deref(), Some("insufficient_stock"));
        let plain = Reply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(1),
            body: Bytes::from_static(b"busy"),
        };
        assert_eq!(plain.problem_code(), None);
    }
}
