//! Outbound HTTP (`wasi:http/outgoing-handler`) gated by the component's
//! `allowed_outbound_hosts`, as Spin does it.
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
//! Not emulated: `self` / `*.spin.internal` service chaining and relative
//! URLs (a pattern using `self` is rejected at start-up, a request without a
//! host is denied), and Spin's connection pooling and limits.

use std::net::IpAddr;
use std::ops::Range;
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
        if host == "self" || host == "self.alt" || host.ends_with(".spin.internal") {
            bail!("service chaining ({host:?}) is not emulated by the test host");
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
/// `allowed_outbound_hosts` does not allow, send the rest.
pub(crate) struct OutboundPolicy {
    allowed: Arc<[AllowedHost]>,
}

impl OutboundPolicy {
    pub(crate) fn new(allowed: Arc<[AllowedHost]>) -> Self {
        Self { allowed }
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
    fn rejects_unsupported_or_malformed_entries() {
        for bad in [
            "*",
            "127.0.0.1:80",
            "http://self",
            "http://x.spin.internal",
            "*://example.com",
            "http://a*b.com",
            "http://example.com/path",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
