//! The loaded application: compiled components, routes, and the execution of
//! one HTTP request in a fresh component instance (as Spin's
//! `WasiHttpExecutor` does for `wasi:http/incoming-handler@0.2.x` components).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::HostConfig;
use crate::bindings::{self, SpinImports, SpinView};
use crate::manifest::{Manifest, Route};
use crate::outbound::{AllowedHost, OutboundPolicy};
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
    fn new_state(&self) -> RequestState {
        RequestState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder()
                .inherit_stdout()
                .inherit_stderr()
                .envs(&self.environment)
                .build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundPolicy::new(self.outbound.clone()),
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
    max_body_bytes: Option<u64>,
}

type Body = HyperOutgoingBody;

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
                    Route::Private { .. } => None,
                },
            ))?;

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
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Answers one request; never fails (errors become a 500, as in Spin).
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Response<Body> {
        let path = request.uri().path();
        if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
            return match well_known {
                "health" => full(StatusCode::OK, "OK"),
                _ => empty(StatusCode::NOT_FOUND),
            };
        }
        let Some(route) = self.router.route(path) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let component = route.component.clone();
        match self.execute(route, request, client_addr).await {
            Ok(response) => response,
            Err(error) => {
                eprintln!("stock-test-host: component {component:?}: {error:?}");
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    async fn execute(
        &self,
        route: RouteMatch,
        mut request: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> anyhow::Result<Response<Body>> {
        let runtime = &self.components[&route.component];

        // Spin: the guest sees an absolute URI built from the Host header.
        let host = match request.headers().get(http::header::HOST) {
            Some(host) => host.to_str().context("'Host' header is not valid UTF-8")?,
            None => bail!("no 'Host' header present in request"),
        }
        .to_owned();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let full_url = format!("http://{host}{path_and_query}");
        *request.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(path_and_query)
            .build()?;
        route.add_spin_headers(request.headers_mut(), &full_url, client_addr)?;

        let (parts, body) = request.into_parts();
        let body = match self.max_body_bytes {
            None => body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync(),
            // With a limit, the body is read first so that any oversized
            // request (declared or chunked) gets a 413 without running the guest.
            Some(max) => {
                let declared = parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if declared.is_some_and(|length| length > max) {
                    return Ok(empty(StatusCode::PAYLOAD_TOO_LARGE));
                }
                let limit = usize::try_from(max).unwrap_or(usize::MAX);
                match Limited::new(body, limit).collect().await {
                    Ok(collected) => Full::new(collected.to_bytes())
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                    Err(error) if error.is::<LengthLimitError>() => {
                        return Ok(empty(StatusCode::PAYLOAD_TOO_LARGE));
                    }
                    Err(error) => {
                        return Err(anyhow::anyhow!(error).context("reading the request body"));
                    }
                }
            }
        };

        let mut store = Store::new(&self.engine, runtime.new_state());
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, Request::from_parts(parts, body))?;
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
