//! HTTP routing and the `spin-*` request headers, as Spin 4's HTTP trigger does
//! them (`spinframework/spin` `crates/http/src/routes.rs` and
//! `crates/trigger-http/src/headers.rs`).
//!
//! Routing uses the same `routefinder` crate as Spin: exact routes beat
//! `:name` segments, which beat wildcards; among wildcards (`/prefix/...`) the
//! longest prefix wins; no match is a 404. When two triggers have the same
//! route, the later one wins (Spin logs the duplicate; so does this host). The
//! application base is always `/`.

use std::net::SocketAddr;

use anyhow::anyhow;
use http::{HeaderMap, HeaderName, HeaderValue};

/// What a route leads to.
#[derive(Debug)]
struct RouteHandler {
    component: String,
    /// The route combined with the base `/` (Spin's `based_route`).
    based_route: String,
    /// The route as written in the manifest.
    raw_route: String,
}

/// The routing table.
pub(crate) struct Router {
    routes: routefinder::Router<RouteHandler>,
}

/// A matched request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    /// The component that handles it.
    pub(crate) component: String,
    based_route: String,
    raw_route: String,
    path_info: String,
    named: Vec<(String, String)>,
}

impl Router {
    /// Builds the table from `(route, component)` pairs in manifest order.
    pub(crate) fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<Self> {
        let mut unique: Vec<RouteHandler> = Vec::new();
        for (raw_route, component) in routes {
            let handler = RouteHandler {
                component: component.to_owned(),
                based_route: sanitize_with_base(raw_route),
                raw_route: raw_route.to_owned(),
            };
            if let Some(existing) = unique.iter_mut().find(|h| h.raw_route == raw_route) {
                eprintln!(
                    "stock-test-host: duplicate route {raw_route:?}: component {:?} replaces {:?}",
                    handler.component, existing.component
                );
                *existing = handler;
            } else {
                unique.push(handler);
            }
        }
        let mut router = routefinder::Router::new();
        for handler in unique {
            let spec = match handler.based_route.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => handler.based_route.clone(),
            };
            router
                .add(spec, handler)
                .map_err(|e| anyhow!("bad route: {e}"))?;
        }
        Ok(Self { routes: router })
    }

    /// Finds the component for a request path (no query string).
    pub(crate) fn route(&self, path: &str) -> Option<RouteMatch> {
        let found = self.routes.best_match(path)?;
        let handler = found.handler();
        let captures = found.captures();
        // Spin keeps trailing slashes in the path info; routefinder drops them.
        let path_info = captures
            .wildcard()
            .map(|rest| match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_owned(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            })
            .unwrap_or_default();
        Some(RouteMatch {
            component: handler.component.clone(),
            based_route: handler.based_route.clone(),
            raw_route: handler.raw_route.clone(),
            path_info,
            named: captures
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        })
    }
}

impl RouteMatch {
    /// The match Spin makes up for a service-chained request
    /// (`spin_http::routes::RouteMatch::synthetic`): as if the whole `path`
    /// had matched the wildcard route `/...` of `component`, so
    /// `spin-path-info` is the full path, `spin-matched-route` and
    /// `spin-raw-component-route` are `/...`, `spin-component-route` is empty
    /// and there are no `spin-path-match-*` headers.
    pub(crate) fn synthetic(component: &str, path: &str) -> Self {
        Self {
            component: component.to_owned(),
            based_route: "/...".to_owned(),
            raw_route: "/...".to_owned(),
            path_info: path.to_owned(),
            named: Vec::new(),
        }
    }

    /// Adds the headers Spin gives a component: `spin-full-url`,
    /// `spin-path-info`, `spin-matched-route`, `spin-base-path`,
    /// `spin-raw-component-route`, `spin-component-route`, `spin-client-addr`
    /// and one `spin-path-match-NAME` per `:name` segment. A client-sent header
    /// of the same name is replaced.
    pub(crate) fn add_spin_headers(
        &self,
        headers: &mut HeaderMap,
        full_url: &str,
        client_addr: SocketAddr,
    ) -> anyhow::Result<()> {
        let component_route = self
            .raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.raw_route);
        let mut pairs = vec![
            ("spin-path-info".to_owned(), self.path_info.clone()),
            ("spin-full-url".to_owned(), full_url.to_owned()),
            ("spin-matched-route".to_owned(), self.based_route.clone()),
            ("spin-base-path".to_owned(), "/".to_owned()),
            (
                "spin-raw-component-route".to_owned(),
                self.raw_route.clone(),
            ),
            (
                "spin-component-route".to_owned(),
                component_route.to_owned(),
            ),
            ("spin-client-addr".to_owned(), client_addr.to_string()),
        ];
        for (name, value) in &self.named {
            pairs.push((
                // SPIN_PATH_MATCH_{NAME} → spin-path-match-name ('_' → '-')
                format!(
                    "spin-path-match-{}",
                    name.to_ascii_lowercase().replace('_', "-")
                ),
                value.clone(),
            ));
        }
        for (name, value) in pairs {
            headers.insert(HeaderName::try_from(name)?, HeaderValue::try_from(value)?);
        }
        Ok(())
    }
}

/// Spin's `sanitize_with_base("/", route)`: make the route absolute and strip
/// one trailing slash.
fn sanitize_with_base(route: &str) -> String {
    let absolute = if route.starts_with('/') {
        route.to_owned()
    } else {
        format!("/{route}")
    };
    match absolute.strip_suffix('/') {
        Some(stripped) => stripped.to_owned(),
        None => absolute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::build([
            ("/bench/cas", "bench"),
            ("/v1/stock/...", "stock"),
            ("/v1/stock/:product_id/history", "history"),
            ("/v1/stock/special", "special"),
            ("/v1/...", "catch-v1"),
        ])
        .unwrap()
    }

    fn component(path: &str) -> Option<String> {
        router().route(path).map(|m| m.component)
    }

    #[test]
    fn exact_then_named_then_longest_wildcard() {
        assert_eq!(component("/bench/cas").as_deref(), Some("bench"));
        assert_eq!(component("/bench/cas/x"), None);
        assert_eq!(component("/bench"), None);
        assert_eq!(component("/v1/stock/special").as_deref(), Some("special"));
        assert_eq!(
            component("/v1/stock/p1/history").as_deref(),
            Some("history")
        );
        assert_eq!(component("/v1/stock/p1").as_deref(), Some("stock"));
        assert_eq!(component("/v1/stock").as_deref(), Some("stock"));
        assert_eq!(component("/v1/reservations").as_deref(), Some("catch-v1"));
        assert_eq!(component("/other"), None);
    }

    #[test]
    fn later_duplicate_wins() {
        let router = Router::build([("/a", "first"), ("/a", "second")]).unwrap();
        assert_eq!(router.route("/a").unwrap().component, "second");
    }

    #[test]
    fn spin_headers_match_spin() {
        let found = router().route("/v1/stock/p1/").unwrap();
        let mut headers = HeaderMap::new();
        found
            .add_spin_headers(
                &mut headers,
                "http://h:1/v1/stock/p1/?q=1",
                "127.0.0.1:9".parse().unwrap(),
            )
            .unwrap();
        let get = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert_eq!(get("spin-path-info"), "/p1/");
        assert_eq!(get("spin-full-url"), "http://h:1/v1/stock/p1/?q=1");
        assert_eq!(get("spin-matched-route"), "/v1/stock/...");
        assert_eq!(get("spin-raw-component-route"), "/v1/stock/...");
        assert_eq!(get("spin-component-route"), "/v1/stock");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-client-addr"), "127.0.0.1:9");

        let named = router().route("/v1/stock/p1/history").unwrap();
        let mut headers = HeaderMap::new();
        named
            .add_spin_headers(&mut headers, "u", "127.0.0.1:9".parse().unwrap())
            .unwrap();
        assert_eq!(headers["spin-path-match-product-id"], "p1");
        assert_eq!(headers["spin-path-info"], "");
        assert_eq!(
            headers["spin-component-route"],
            "/v1/stock/:product_id/history"
        );
    }

    #[test]
    fn synthetic_match_headers_match_spin_chaining() {
        let chained = RouteMatch::synthetic("update-stock", "/v1/stock/p1");
        assert_eq!(chained.component, "update-stock");
        let mut headers = HeaderMap::new();
        chained
            .add_spin_headers(
                &mut headers,
                "http://localhost/v1/stock/p1?x=1",
                "0.0.0.0:0".parse().unwrap(),
            )
            .unwrap();
        let get = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert_eq!(get("spin-path-info"), "/v1/stock/p1");
        assert_eq!(get("spin-full-url"), "http://localhost/v1/stock/p1?x=1");
        assert_eq!(get("spin-matched-route"), "/...");
        assert_eq!(get("spin-raw-component-route"), "/...");
        assert_eq!(get("spin-component-route"), "");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-client-addr"), "0.0.0.0:0");
        assert!(
            !headers
                .keys()
                .any(|k| k.as_str().starts_with("spin-path-match-"))
        );
    }
}
