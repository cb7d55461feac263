//! The stock service's Spin adapter: the domain's ports over Spin's key-value store,
//! WASI clocks and randomness; configuration from Spin variables; and the wrapper every
//! component's handler goes through.
//!
//! A component stays a few lines: it dispatches on the method and hands the request to
//! [`serve`] (open reads) or [`serve_guarded`] (operations behind a token) with the
//! matching `stock_http` operation, or to [`forward`] for a method another component
//! implements. Both `serve`s then hand the alerts the operation's writes raised to the
//! admin webhook ([`webhook`]), where the component has one configured.

mod chain;
pub mod config;
mod kv;
mod system;
pub mod webhook;

use anyhow::anyhow;
use http::{Request, Response};
use stock_domain::StockService;
use stock_http::{Problem, Token};

pub use chain::forward;
pub use kv::{SpinCas, SpinKvStore};
pub use system::{RandomIds, SystemClock};

/// The service as every component runs it.
pub type SpinService = StockService<SpinKvStore, SystemClock, RandomIds>;

/// The key-value store every component shares (Spin's built-in `default`, or whatever
/// the runtime config maps that label to).
pub const STORE: &str = "default";

/// Which bearer token an operation demands (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `admin_token`: stock updates, adjustments, `/v1/admin/*`.
    Admin,
    /// `service_token`: reservations, release, commit, inbound events.
    Service,
}

impl Role {
    /// The Spin variable holding the token.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Admin => "admin_token",
            Self::Service => "service_token",
        }
    }
}

/// The service over this component's store, clock and configuration.
pub fn service() -> anyhow::Result<SpinService> {
    let config = config::from_lookup(config::variable)?;
    Ok(StockService::new(
        SpinKvStore::open(STORE)?,
        SystemClock,
        RandomIds::new(),
        config,
    ))
}

/// The token `role` demands, as configured. Only guarded components map the token
/// variables, so a read-only component never holds a secret.
pub fn token(role: Role) -> anyhow::Result<Token> {
    let name = role.variable();
    config::variable(name)?
        .map(Token::new)
        .ok_or_else(|| anyhow!("variable {name} is not defined for this component"))
}

/// Runs an open operation, then notifies the webhook of the alerts it raised.
pub fn serve(
    req: &Request<Vec<u8>>,
    operation: impl FnOnce(&SpinService, &Request<Vec<u8>>) -> Response<Vec<u8>>,
) -> Response<Vec<u8>> {
    match service() {
        Ok(svc) => {
            let response = operation(&svc, req);
            webhook::notify(svc.take_alerts());
            response
        }
        Err(e) => setup_failed(&e),
    }
}

/// Runs an operation that checks the bearer token of `role`, then notifies the webhook
/// of the alerts it raised.
pub fn serve_guarded(
    req: &Request<Vec<u8>>,
    role: Role,
    operation: impl FnOnce(&SpinService, &Request<Vec<u8>>, &Token) -> Response<Vec<u8>>,
) -> Response<Vec<u8>> {
    match service().and_then(|svc| Ok((svc, token(role)?))) {
        Ok((svc, token)) => {
            let response = operation(&svc, req, &token);
            webhook::notify(svc.take_alerts());
            response
        }
        Err(e) => setup_failed(&e),
    }
}

/// A component that cannot build its service is misconfigured: log why, answer 500.
fn setup_failed(error: &anyhow::Error) -> Response<Vec<u8>> {
    eprintln!("stock-service: component setup failed: {error:#}");
    Problem::internal().into_response()
}
