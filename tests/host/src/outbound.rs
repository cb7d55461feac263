//! Outbound HTTP (`wasi:http/outgoing-handler`) gated by the component's
//! `allowed_outbound_hosts`, as Spin does it, and Spin's local service
//! chaining (SIP 017) to `http://<component-id>.spin.internal`.
//!
//! Patterns follow Spin's `outbound-networking-config` rules:
//! `scheme://host[:port]` where the scheme may be `*`; the host may be `*`,
//! `*.domain`, a name, an IP address or a CIDR block; the port may be `*`, a
//! number or a range `a..b` (end excluded), and defaults to the scheme's
//! well-known port when omitted. `{{ variable }}` templates are resolved at
//! start-up. As in Spin (`factor-outbound-http` `prepare_request`), the check
//! runs when the request is sent: a denied request's response future fails
//! with `HTTP-request-denied`. Allowed requests go out through
//! wasmtime-wasi-http's default client (plain HTTP, or HTTPS with webpki roots).
//!
//! # Service chaining
//!
//! As in Spin 4 (`trigger-http` `OutboundHttpInterceptor`), the permission
//! check comes first and is plain pattern matching, so
//! `http://update-stock.spin.internal`, `http://*.spin.internal` (and, as in
//! Spin's code though not in SIP 017's text, `*://*:*`) allow a chained call.
//! Then, if the host is `<id>.spin.internal` (exactly one label before
//! `spin.internal`, any port; Spin's `parse_service_chaining_target`), the
//! request never touches the network: the `Host` header is removed (Spin
//! removes it from every outbound request) and the request is handed to
//! [`ServiceChaining::dispatch`], which runs it in a new instance of component
//! `<id>` (the same key-value store; its own component variables, resolved
//! from the same application variables) through the same per-request path as a
//! routed request, with the headers Spin sets for a chained request (see
//! [`RouteMatch::synthetic`](crate::router::RouteMatch::synthetic)).
//!
//! Differences from Spin: a chained request to an id that has no
//! `[[trigger.http]]` fails with `destination-not-found` (Spin makes the
//! *calling* guest trap with "unknown routing destination", so the caller's
//! own request becomes a 500; wasmtime-wasi-http's hook cannot trap); no
//! OpenTelemetry context is injected. A callee that traps or returns no
//! response gives the caller a 500 with an empty body, as in Spin.
//!
//! Not emulated: `self` / `self.alt` and relative-URL self requests (a pattern
//! using `self` is rejected at start-up, a request without a host is denied),
//! and Spin's connection pooling and limits.

use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`.
    AnySubdomain(String),
    Name(String),
    Cidr(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Port(u16),
    Range(Range<u16>),
}

impl AllowedHost {
    /// Parses one entry (templates already rendered).
    pub(crate) fn parse(entry: &str) -> anyhow::Result<Self> {
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("{url:?} does not contain a scheme (e.g. 'http://' or '*://')");
        };
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port.split_once('/') {
            Some((port, "")) => port,
            Some(_) => bail!("{url:?} has a path but is not allowed to"),
            None => port,
        };
        let scheme = match scheme {
            "*" => None,
            s if s.chars().all(char::is_alphabetic) => Some(s.to_owned()),
            s => bail!("scheme {s:?} contains a non-alphabetic character"),
        };
        Ok(Self {
            host: HostPattern::parse(host)?,
            port: PortPattern::parse(port, scheme.as_deref())
                .with_context(|| format!("allowed outbound host {url:?}"))?,
            scheme,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && self.host.allows(host)
            && self.port.allows(port.or_else(|| well_known_port(scheme)))
    }
}

impl HostPattern {
    fn parse(host: &str) -> anyhow::Result<Self> {
        let host = host.trim();
        if host == "*" {
            return Ok(Self::Any);
        }
        if host == "self" || host == "self.alt" {
            bail!("self requests ({host:?}) are not emulated by the test host");
        }
        if host.starts_with('{') {
            bail!("host lists are not supported");
        }
        if let Some((ip, bits)) = host.split_once('/')
            && let Ok(ip) = ip.parse::<IpAddr>()
        {
            let bits: u8 = bits.parse().context("bad CIDR prefix length")?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            ensure!(bits <= max, "bad CIDR prefix length {bits}");
            return Ok(Self::Cidr(ip, bits));
        }
        if matches!(host.split('/').nth(1), Some(path) if !path.is_empty()) {
            bail!("hosts must not contain paths");
        }
        if let Some(domain) = host.strip_prefix("*.") {
            ensure!(
                !domain.contains('*'),
                "invalid allowed host {host}: wildcards are allowed only as prefixes"
            );
            return Ok(Self::AnySubdomain(format!(
                ".{}",
                domain.to_ascii_lowercase()
            )));
        }
        ensure!(
            !host.contains('*'),
            "invalid allowed host {host}: wildcards are allowed only as subdomains"
        );
        Ok(Self::Name(host.trim_end_matches('/').to_ascii_lowercase()))
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::AnySubdomain(suffix) => host.ends_with(suffix.as_str()),
            Self::Name(name) => *name == host,
            Self::Cidr(network, bits) => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                bare.parse::<IpAddr>()
                    .is_ok_and(|ip| in_network(ip, *network, *bits))
            }
        }
    }
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    let (ip, network, width) = match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a).into(), u32::from(n).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (ip >> shift) == (network >> shift)
}

impl PortPattern {
    fn parse(port: &str, scheme: Option<&str>) -> anyhow::Result<Self> {
        if port.is_empty() {
            return scheme
                .and_then(well_known_port)
                .map(Self::Port)
                .with_context(|| {
                    format!("no port was given and the scheme {scheme:?} has no default port")
                });
        }
        if port == "*" {
            return Ok(Self::Any);
        }
        if let Some((start, end)) = port.split_once("..") {
            return Ok(Self::Range(start.parse()?..end.parse()?));
        }
        Ok(Self::Port(port.parse().with_context(|| {
            format!("port {port:?} is not a number")
        })?))
    }

    fn allows(&self, port: Option<u16>) -> bool {
        match (self, port) {
            (Self::Any, _) => true,
            (Self::Port(p), Some(port)) => *p == port,
            (Self::Range(r), Some(port)) => r.contains(&port),
            (_, None) => false,
        }
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Whether a request to `uri` is allowed.
fn permits(allowed: &[AllowedHost], uri: &http::Uri) -> bool {
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return false;
    };
    !host.is_empty()
        && allowed
            .iter()
            .any(|a| a.allows(scheme, host, uri.port_u16()))
}

/// The domain of service-chaining hosts.
const SERVICE_CHAINING_DOMAIN: &str = "spin.internal";

/// Spin's `parse_service_chaining_host`: `<id>.spin.internal[:port]` → `<id>`
/// (exactly one label before `spin.internal`, compared as written).
fn service_chaining_host(host: &str) -> Option<&str> {
    let host = host.rsplit_once(':').map_or(host, |(host, _port)| host);
    let (first, rest) = host.split_once('.')?;
    (rest == SERVICE_CHAINING_DOMAIN).then_some(first)
}

/// Whether a `Host` header value names a service-chaining host (Spin strips
/// such a header from routed requests so that it cannot be spoofed).
pub(crate) fn is_service_chaining_host(host: &str) -> bool {
    service_chaining_host(host).is_some()
}

/// Spin's `parse_service_chaining_target`: the component a request URI
/// chains to, if its host is `<id>.spin.internal`.
pub(crate) fn service_chaining_target(uri: &http::Uri) -> Option<&str> {
    service_chaining_host(uri.authority()?.host().trim())
}

/// The response of a chained request.
pub(crate) type ChainedResponse =
    Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, Error>> + Send>>;

/// Runs service-chained requests in-process (implemented by the application).
pub(crate) trait ServiceChaining: Send + Sync {
    /// Runs `request` (already allowed, `Host` removed) in a new instance of
    /// `component`; `Err(DestinationNotFound)` if no HTTP trigger names it.
    fn dispatch(
        self: Arc<Self>,
        component: String,
        request: http::Request<WasiBody>,
    ) -> ChainedResponse;
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// The `wasi:http` hooks of one component instance: deny what
/// `allowed_outbound_hosts` does not allow, run `*.spin.internal` requests
/// in-process, send the rest.
pub(crate) struct OutboundPolicy {
    allowed: Arc<[AllowedHost]>,
    chain: Arc<dyn ServiceChaining>,
}

impl OutboundPolicy {
    pub(crate) fn new(allowed: Arc<[AllowedHost]>, chain: Arc<dyn ServiceChaining>) -> Self {
        Self { allowed, chain }
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        if !permits(&self.allowed, request.uri()) {
            eprintln!(
                "stock-test-host: outbound request to {} denied: not in allowed_outbound_hosts",
                request.uri()
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        if let Some(component) = service_chaining_target(request.uri()) {
            let component = component.to_owned();
            let mut request = request;
            request.headers_mut().remove(http::header::HOST);
            let response = self.chain.clone().dispatch(component, request);
            return Box::new(async move {
                Ok((
                    response.await?,
                    Box::new(async { Ok(()) })
                        as Box<dyn Future<Output = Result<(), Error>> + Send>,
                ))
            });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records chained dispatches and answers 201.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Option<http::HeaderValue>)>>);

    impl ServiceChaining for Recorder {
        fn dispatch(
            self: Arc<Self>,
            component: String,
            request: http::Request<WasiBody>,
        ) -> ChainedResponse {
            let host = request.headers().get(http::header::HOST).cloned();
            self.0
                .lock()
                .unwrap()
                .push((component, request.uri().to_string(), host));
            Box::pin(async {
                Ok(http::Response::builder()
                    .status(201)
                    .body(empty_body())
                    .unwrap())
            })
        }
    }

    fn empty_body() -> WasiBody {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    /// Sends `url` through the hooks of a component allowed `entries`.
    fn send(
        recorder: &Arc<Recorder>,
        entries: &[&str],
        url: &str,
    ) -> Result<http::StatusCode, Error> {
        let mut hooks = OutboundPolicy::new(policy(entries).into(), recorder.clone());
        let authority = url
            .parse::<http::Uri>()
            .unwrap()
            .authority()
            .unwrap()
            .to_string();
        let request = http::Request::builder()
            .method("PUT")
            .uri(url)
            .header(http::header::HOST, authority)
            .body(empty_body())
            .unwrap();
        let future = hooks.send_request(request, None, Box::new(async { Ok(()) }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(Pin::from(future))
            .map(|(response, _io)| response.status())
    }

    #[test]
    fn allowed_spin_internal_requests_are_dispatched_in_process() {
        let recorder = Arc::new(Recorder::default());
        let status = send(
            &recorder,
            &["http://update-stock.spin.internal"],
            "http://update-stock.spin.internal/v1/stock/x?a=1",
        );
        assert_eq!(status.unwrap(), 201);
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [(
                "update-stock".to_owned(),
                "http://update-stock.spin.internal/v1/stock/x?a=1".to_owned(),
                None, // Spin removes `Host` before dispatching
            )]
        );
    }

    #[test]
    fn chaining_needs_permission() {
        let recorder = Arc::new(Recorder::default());
        for (entries, url) in [
            (&[][..], "http://update-stock.spin.internal/"),
            (
                &["http://update-stock.spin.internal"][..],
                "http://other.spin.internal/",
            ),
            (
                &["http://update-stock.spin.internal"][..],
                "https://update-stock.spin.internal/",
            ),
            (
                &["http://127.0.0.1:*"][..],
                "http://update-stock.spin.internal/",
            ),
        ] {
            let result = send(&recorder, entries, url);
            assert!(
                matches!(result, Err(Error::HttpRequestDenied)),
                "{entries:?} {url}: {result:?}"
            );
        }
        assert!(recorder.0.lock().unwrap().is_empty());

        // A wildcard allows any id; whether it exists is the dispatcher's call.
        assert_eq!(
            send(
                &recorder,
                &["http://*.spin.internal"],
                "http://nope.spin.internal/x"
            )
            .unwrap(),
            201
        );
        assert_eq!(recorder.0.lock().unwrap()[0].0, "nope");
    }

    fn policy(entries: &[&str]) -> Vec<AllowedHost> {
        entries
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect()
    }

    fn allowed(policy: &[AllowedHost], url: &str) -> bool {
        permits(policy, &url.parse().unwrap())
    }

    #[test]
    fn patterns_follow_spin_rules() {
        let p = policy(&[
            "http://127.0.0.1:*",
            "https://*.example.com",
            "*://api.test:8000..8010",
            "http://10.0.0.0/8:80",
        ]);
        assert!(allowed(&p, "http://127.0.0.1:4567/hook"));
        assert!(!allowed(&p, "https://127.0.0.1:4567/hook"));
        assert!(allowed(&p, "https://a.example.com/x"));
        assert!(!allowed(&p, "https://a.example.com:8443/x"));
        assert!(!allowed(&p, "https://example.com/x"));
        assert!(allowed(&p, "http://API.test:8005/"));
        assert!(!allowed(&p, "http://api.test:8010/"));
        assert!(allowed(&p, "http://10.1.2.3/"));
        assert!(!allowed(&p, "http://11.1.2.3/"));
        assert!(!allowed(&policy(&[]), "http://127.0.0.1:1/"));
    }

    #[test]
    fn spin_internal_hosts_are_permissions_like_any_other() {
        let p = policy(&["http://update-stock.spin.internal"]);
        assert!(allowed(&p, "http://update-stock.spin.internal/v1/stock/x"));
        assert!(allowed(&p, "http://UPDATE-STOCK.spin.internal/"));
        assert!(!allowed(&p, "http://other.spin.internal/"));
        assert!(!allowed(&p, "https://update-stock.spin.internal/"));
        assert!(!allowed(&p, "http://update-stock.spin.internal:8080/"));
        assert!(!allowed(&policy(&[]), "http://update-stock.spin.internal/"));
        assert!(!allowed(
            &policy(&["http://example.com"]),
            "http://update-stock.spin.internal/"
        ));

        let any = policy(&["http://*.spin.internal"]);
        assert!(allowed(&any, "http://update-stock.spin.internal/"));
        assert!(allowed(&any, "http://nope.spin.internal/x"));
        assert!(!allowed(&any, "http://example.com/"));
        // As in Spin's code, the allow-all pattern matches chaining hosts too.
        assert!(allowed(&policy(&["*://*:*"]), "http://a.spin.internal/"));
    }

    #[test]
    fn chaining_targets_follow_spin_parsing() {
        let target = |url: &str| service_chaining_target(&url.parse().unwrap()).map(str::to_owned);
        assert_eq!(
            target("http://update-stock.spin.internal/v1/stock/x?q=1").as_deref(),
            Some("update-stock")
        );
        assert_eq!(
            target("http://update-stock.spin.internal:8080/").as_deref(),
            Some("update-stock")
        );
        assert_eq!(target("https://a.spin.internal").as_deref(), Some("a"));
        assert_eq!(target("http://a.b.spin.internal/"), None);
        assert_eq!(target("http://spin.internal/"), None);
        assert_eq!(target("http://a.spin.internal.example.com/"), None);
        assert_eq!(target("http://example.com/"), None);
        assert_eq!(target("/relative"), None);

        assert!(is_service_chaining_host("update-stock.spin.internal"));
        assert!(is_service_chaining_host("update-stock.spin.internal:1234"));
        assert!(!is_service_chaining_host("127.0.0.1:3000"));
        assert!(!is_service_chaining_host("spin.internal"));
    }

    #[test]
    fn rejects_unsupported_or_malformed_entries() {
        for bad in [
            "*",
            "127.0.0.1:80",
            "http://self",
            "https://self.alt",
            "*://example.com",
            "http://a*b.com",
            "http://example.com/path",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
