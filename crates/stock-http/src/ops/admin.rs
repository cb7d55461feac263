//! Admin operations: low-stock alerts and the reservation expiry sweep.

use http::{Request, Response, StatusCode};
use stock_domain::StockApi;

use crate::auth::{Token, authorize};
use crate::request::{optional_json_body, page_limit, query};
use crate::response::{json, respond};
use crate::wire::EmptyBody;

/// Alert page sizes.
pub const DEFAULT_ALERTS_LIMIT: usize = 100;
pub const MAX_ALERTS_LIMIT: usize = 500;
/// Reservations one sweep call looks at.
pub const DEFAULT_EXPIRE_LIMIT: usize = 100;
pub const MAX_EXPIRE_LIMIT: usize = 1_000;

/// `GET /v1/admin/alerts?after=<next>&limit=<1..500>` (admin token) → 200 with
/// `{"alerts": […], "next": cursor|null}`: the products at or below their threshold at
/// this instant, in the alert set's order (stable across pages).
pub fn stock_alerts<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    admin: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, admin)?;
        let params = query(req, &["after", "limit"])?;
        let limit = page_limit(params.get("limit"), DEFAULT_ALERTS_LIMIT, MAX_ALERTS_LIMIT)?;
        let page = svc.alerts(params.get("after").map(String::as_str), limit)?;
        Ok(json(StatusCode::OK, &page))
    })
}

/// `POST /v1/admin/expire?after=<next>&limit=<1..1000>` (admin token) → 200 with
/// `{"expired": […], "repaired": […], "deleted": n, "next": cursor|null, "done": bool}`.
/// Reads are exact without it; the sweep records expiries in the history, finishes
/// reservations abandoned mid-change and deletes what has outlived its retention, `limit`
/// due entries per call.
pub fn expire_reservations<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    admin: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, admin)?;
        let params = query(req, &["after", "limit"])?;
        let limit = page_limit(params.get("limit"), DEFAULT_EXPIRE_LIMIT, MAX_EXPIRE_LIMIT)?;
        let EmptyBody {} = optional_json_body(req)?;
        let report = svc.expire_due(params.get("after").map(String::as_str), limit)?;
        Ok(json(StatusCode::OK, &report))
    })
}
