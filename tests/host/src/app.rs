//! The loaded application: compiled components, routes, and the execution of
//! one HTTP request in a fresh component instance (as Spin's
//! `WasiHttpExecutor` does for `wasi:http/incoming-handler@0.2.x` components),
//! whether it came from the listener (routed) or from another component
//! through service chaining (see [`crate::outbound`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::HostConfig;
use crate::bindings::{self, SpinImports, SpinView};
use crate::manifest::{Manifest, Route};
use crate::outbound::{self, AllowedHost, ChainedResponse, OutboundPolicy, ServiceChaining};
use crate::router::{RouteMatch, Router};
use crate::store::{HostStore, StoreAccess};
use crate::variables::{self, ComponentVariables};

/// Per-request store data.
pub(crate) struct RequestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundPolicy,
    spin: SpinImports,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn spin_view(state: &mut RequestState) -> SpinView<'_> {
    SpinView {
        imports: &state.spin,
        table: &mut state.table,
    }
}

/// One component, compiled and pre-linked, with its resolved settings.
struct ComponentRuntime {
    pre: ProxyPre<RequestState>,
    stores: StoreAccess,
    variables: Arc<ComponentVariables>,
    outbound: Arc<[AllowedHost]>,
    environment: Vec<(String, String)>,
}

impl ComponentRuntime {
    fn new_state(&self, chain: Arc<dyn ServiceChaining>) -> RequestState {
        RequestState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder()
                .inherit_stdout()
                .inherit_stderr()
                .envs(&self.environment)
                .build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundPolicy::new(self.outbound.clone(), chain),
            spin: SpinImports {
                stores: self.stores.clone(),
                variables: self.variables.clone(),
            },
        }
    }
}

/// A loaded application.
pub(crate) struct App {
    engine: Engine,
    router: Router,
    components: HashMap<String, ComponentRuntime>,
    /// Components named by a `[[trigger.http]]`, public or private: the ones a
    /// chained request may reach (Spin's `component_trigger_configs`).
    chain_targets: HashSet<String>,
    max_body_bytes: Option<u64>,
}

type Body = HyperOutgoingBody;

/// `spin-client-addr` of a chained request (Spin's `CHAINED_CLIENT_ADDR`).
const CHAINED_CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

impl App {
    /// Loads the manifest, resolves variables and compiles every component.
    pub(crate) fn load(config: &HostConfig) -> anyhow::Result<Self> {
        let manifest = Manifest::load(&config.manifest)?;
        let manifest_dir = config
            .manifest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let app_variables = variables::resolve_application(&manifest.variables, &config.variables)?;
        let stores: Arc<BTreeMap<String, Arc<dyn HostStore>>> =
            Arc::new([("default".to_owned(), config.store.clone())].into());
        let engine = engine()?;

        let mut linker = Linker::<RequestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::add_to_linker(&mut linker, spin_view)?;

        let router =
            Router::build(manifest.trigger.http.iter().filter_map(
                |trigger| match &trigger.route {
                    Route::Path(route) => Some((route.as_str(), trigger.component.as_str())),
                    Route::Private(_) => None,
                },
            ))?;
        let chain_targets = manifest
            .trigger
            .http
            .iter()
            .map(|trigger| trigger.component.clone())
            .collect();

        let mut components = HashMap::new();
        for (id, decl) in &manifest.component {
            let context = || format!("component {id:?}");
            for label in &decl.key_value_stores {
                if !stores.contains_key(label) {
                    bail!("unknown key_value_stores label {label:?} for component {id:?}");
                }
            }
            let variables = ComponentVariables::resolve(id, &decl.variables, &app_variables)?;
            let outbound = decl
                .allowed_outbound_hosts
                .iter()
                .map(|entry| AllowedHost::parse(&variables::render(entry, &app_variables)?))
                .collect::<anyhow::Result<Arc<[_]>>>()
                .with_context(context)?;
            let component =
                load_component(&engine, &decl.source_path(&manifest_dir)).with_context(context)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} imports something the test host does not provide")
                })?;
            let pre = ProxyPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} does not export wasi:http/incoming-handler@0.2.x")
                })?;
            let allowed: HashSet<String> = decl.key_value_stores.iter().cloned().collect();
            components.insert(
                id.clone(),
                ComponentRuntime {
                    pre,
                    stores: StoreAccess::new(Arc::new(allowed), stores.clone()),
                    variables: Arc::new(variables),
                    outbound,
                    environment: decl.environment.clone().into_iter().collect(),
                },
            );
        }
        Ok(Self {
            engine,
            router,
            components,
            chain_targets,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Answers one request from the listener; never fails (errors become a
    /// 500, as in Spin).
    pub(crate) async fn handle(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Response<Body> {
        strip_forbidden_headers(request.headers_mut());
        let path = request.uri().path();
        if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
            return match well_known {
                "health" => full(StatusCode::OK, "OK"),
                _ => empty(StatusCode::NOT_FOUND),
            };
        }
        // Private endpoints are not in the router: from outside they are 404.
        let Some(route) = self.router.route(path) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let request = match self.limit_body(request).await {
            Ok(request) => request,
            Err(response) => return response,
        };
        self.respond(route, request, client_addr).await
    }

    /// Answers a service-chained request to `component` (Spin's
    /// `OutboundHttpInterceptor` → `handle_trigger_route` with a synthetic
    /// match): the same execution path as a routed request.
    async fn handle_chained(
        self: &Arc<Self>,
        component: &str,
        request: Request<WasiBody>,
    ) -> Result<Response<Body>, wasmtime_wasi_http::Error> {
        if !self.chain_targets.contains(component) {
            eprintln!(
                "stock-test-host: chained request to {}: unknown routing destination {component:?}",
                request.uri()
            );
            return Err(wasmtime_wasi_http::Error::DestinationNotFound);
        }
        let route = RouteMatch::synthetic(component, request.uri().path());
        Ok(self.respond(route, request, CHAINED_CLIENT_ADDR).await)
    }

    /// Applies [`HostConfig::max_body_bytes`] to a request from the listener.
    /// With a limit, the body is read first so that any oversized request
    /// (declared or chunked) gets a 413 without running the guest.
    async fn limit_body(
        &self,
        request: Request<Incoming>,
    ) -> Result<Request<WasiBody>, Response<Body>> {
        let (parts, body) = request.into_parts();
        let Some(max) = self.max_body_bytes else {
            let body = body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync();
            return Ok(Request::from_parts(parts, body));
        };
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max) {
            return Err(empty(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                let body = Full::new(collected.to_bytes())
                    .map_err(|never| match never {})
                    .boxed_unsync();
                Ok(Request::from_parts(parts, body))
            }
            Err(error) if error.is::<LengthLimitError>() => {
                Err(empty(StatusCode::PAYLOAD_TOO_LARGE))
            }
            Err(error) => {
                eprintln!("stock-test-host: reading the request body: {error}");
                Err(empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }

    /// Runs a matched request; errors become a 500 with an empty body (Spin's
    /// `respond_wasm_component`).
    async fn respond(
        self: &Arc<Self>,
        route: RouteMatch,
        request: Request<WasiBody>,
        client_addr: SocketAddr,
    ) -> Response<Body> {
        let component = route.component.clone();
        match self.execute(route, request, client_addr).await {
            Ok(response) => response,
            Err(error) => {
                eprintln!("stock-test-host: component {component:?}: {error:?}");
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// Runs one request in a fresh instance of the matched component.
    async fn execute(
        self: &Arc<Self>,
        route: RouteMatch,
        mut request: Request<WasiBody>,
        client_addr: SocketAddr,
    ) -> anyhow::Result<Response<Body>> {
        let runtime = &self.components[&route.component];

        // Spin's `prepare_request_headers` reads every header value as UTF-8 and fails
        // the request (500, empty body) before any component runs when one is not.
        if let Some((name, _)) = request
            .headers()
            .iter()
            .find(|(_, value)| std::str::from_utf8(value.as_bytes()).is_err())
        {
            anyhow::bail!("the {name} header is not UTF-8");
        }

        // Spin: the guest sees an absolute URI built from the Host header or
        // the URI's own authority (a chained request has only the latter).
        let full_url = set_request_uri(&mut request)?;
        route.add_spin_headers(request.headers_mut(), &full_url, client_addr)?;

        let chain: Arc<dyn ServiceChaining> = self.clone();
        let mut store = Store::new(&self.engine, runtime.new_state(chain));
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        let pre = runtime.pre.clone();
        let guest = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        });

        match receiver.await {
            Ok(Ok(response)) => {
                let component = route.component.clone();
                tokio::spawn(async move {
                    match guest.await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => eprintln!(
                            "stock-test-host: component {component:?} failed after responding: {error:?}"
                        ),
                        Err(error) => eprintln!(
                            "stock-test-host: component {component:?} panicked after responding: {error:?}"
                        ),
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => bail!("guest failed to produce a response: {code:?}"),
            Err(_) => {
                guest
                    .await
                    .context("guest invocation panicked")?
                    .map_err(anyhow::Error::from)
                    .context("guest invocation failed")?;
                bail!("guest returned without setting a response")
            }
        }
    }
}

impl ServiceChaining for App {
    fn dispatch(self: Arc<Self>, component: String, request: Request<WasiBody>) -> ChainedResponse {
        Box::pin(async move { self.handle_chained(&component, request).await })
    }
}

/// Spin's `strip_forbidden_headers`: a routed request must not claim to be a
/// chained one, so a `Host: *.spin.internal` header is dropped (the request
/// then has no authority and fails, as in Spin).
fn strip_forbidden_headers(headers: &mut HeaderMap) {
    if headers
        .get(http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(outbound::is_service_chaining_host)
    {
        headers.remove(http::header::HOST);
    }
}

/// Spin's `set_req_uri` (`http` scheme, authority from the `Host` header or
/// the URI, which must agree when both exist), then the `spin-full-url` value
/// of `compute_default_headers`: `http://` + the `Host` header (`localhost`
/// when there is none, as for a chained request) + path and query.
fn set_request_uri<B>(request: &mut Request<B>) -> anyhow::Result<String> {
    let host_header = request
        .headers()
        .get(http::header::HOST)
        .map(|host| host.to_str().context("'Host' header is not valid UTF-8"))
        .transpose()?;
    let header_authority = host_header
        .map(|host| {
            host.parse::<Authority>()
                .context("'Host' header contains an invalid authority")
        })
        .transpose()?;
    let authority = match (header_authority, request.uri().authority().cloned()) {
        (None, None) => bail!("no 'Host' header present in request"),
        (Some(authority), None) | (None, Some(authority)) => authority,
        (Some(header), Some(uri)) => {
            ensure!(
                header == uri,
                "authority in 'Host' header does not match authority in URI"
            );
            header
        }
    };
    let path_and_query = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let full_url = format!(
        "http://{}{path_and_query}",
        host_header.unwrap_or("localhost")
    );
    *request.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()?;
    Ok(full_url)
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

fn full(status: StatusCode, text: &'static str) -> Response<Body> {
    let body = Full::new(Bytes::from_static(text.as_bytes()));
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// The process-wide engine (compiled components are tied to one engine).
fn engine() -> anyhow::Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let mut config = Config::new();
    // Like Spin (spin-core's default `Config`), instances come from a pooling allocator:
    // linear memories and stacks are reused across requests instead of being mapped and
    // unmapped for each one, and the first 2 MiB of a memory (512 KiB of a table) are
    // reset in place rather than decommitted, which would otherwise dominate the cost
    // of a request (page faults, TLB shootdowns).
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(1_000)
        .total_core_instances(1_000)
        .total_memories(1_000)
        .total_tables(2_000)
        .max_core_instances_per_component(200)
        .max_memories_per_component(32)
        .max_tables_per_component(20)
        .max_component_instance_size(10 << 20)
        .max_memory_size(128 << 20)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(512 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    // Wasmtime's on-disk compilation cache (~/.cache/wasmtime), best effort.
    if let Ok(cache) = wasmtime::Cache::from_file(None) {
        config.cache(Some(cache));
    }
    let engine = Engine::new(&config)?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

/// Compiles a `.wasm` component once per process and file version.
fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    type Key = (PathBuf, SystemTime, u64);
    static COMPILED: OnceLock<Mutex<HashMap<Key, Component>>> = OnceLock::new();
    let metadata = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read {} (build the components first, e.g. with \
             stock_test_host::build_wasm)",
            path.display()
        )
    })?;
    let key = (path.to_path_buf(), metadata.modified()?, metadata.len());
    let compiled = COMPILED.get_or_init(Mutex::default);
    if let Some(component) = compiled.lock().expect("cache lock").get(&key) {
        return Ok(component.clone());
    }
    let component = Component::from_file(engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {}", path.display()))?;
    compiled
        .lock()
        .expect("cache lock")
        .insert(key, component.clone());
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(http::header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn routed_requests_take_their_authority_from_the_host_header() {
        let mut routed = request("/v1/stock/x?q=1", Some("127.0.0.1:3000"));
        let full_url = set_request_uri(&mut routed).unwrap();
        assert_eq!(full_url, "http://127.0.0.1:3000/v1/stock/x?q=1");
        assert_eq!(routed.uri(), "http://127.0.0.1:3000/v1/stock/x?q=1");

        assert!(set_request_uri(&mut request("/x", None)).is_err());
        assert!(set_request_uri(&mut request("http://a:1/x", Some("b:1"))).is_err());
        assert!(set_request_uri(&mut request("http://a:1/x", Some("a:1"))).is_ok());
    }

    #[test]
    fn chained_requests_keep_their_spin_internal_authority() {
        // The outbound hook has removed `Host`: Spin's `spin-full-url` then
        // says `localhost`, while the guest's URI keeps the chaining host.
        let mut chained = request("https://update-stock.spin.internal/v1/stock/x", None);
        let full_url = set_request_uri(&mut chained).unwrap();
        assert_eq!(full_url, "http://localhost/v1/stock/x");
        assert_eq!(
            chained.uri(),
            "http://update-stock.spin.internal/v1/stock/x"
        );
    }

    #[test]
    fn spin_internal_host_headers_are_stripped_from_routed_requests() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            "update-stock.spin.internal".parse().unwrap(),
        );
        headers.insert("x-other", "1".parse().unwrap());
        strip_forbidden_headers(&mut headers);
        assert!(headers.get(http::header::HOST).is_none());
        assert_eq!(headers.len(), 1);

        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "127.0.0.1:3000".parse().unwrap());
        strip_forbidden_headers(&mut headers);
        assert_eq!(headers[http::header::HOST], "127.0.0.1:3000");
    }

    #[test]
    fn chaining_to_a_component_without_an_http_trigger_is_destination_not_found() {
        // No component at all: loads without any `.wasm`.
        let dir = std::env::temp_dir().join(format!("stock-test-host-app-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("empty.toml");
        std::fs::write(
            &manifest,
            "spin_manifest_version = 2\n[application]\nname = \"empty\"\n",
        )
        .unwrap();
        let app = Arc::new(App::load(&HostConfig::new(&manifest)).unwrap());
        let _ = std::fs::remove_dir_all(&dir);

        let request = Request::builder()
            .uri("http://nope.spin.internal/x")
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = runtime.block_on(app.dispatch("nope".to_owned(), request));
        assert!(
            matches!(result, Err(wasmtime_wasi_http::Error::DestinationNotFound)),
            "{result:?}"
        );
    }
}
