//! Admin operations: low-stock alerts and the reservation expiry sweep.

use http::{Request, Response, StatusCode};
use serde::Serialize;
use stock_domain::StockService;
use stock_domain::ports::{Clock, IdGenerator, KeyValueStore};
use stock_domain::service::AlertView;

use crate::auth::{Token, authorize};
use crate::request::{optional_json_body, query};
use crate::response::{json, respond};
use crate::wire::EmptyBody;

#[derive(Serialize)]
struct AlertsBody {
    alerts: Vec<AlertView>,
}

/// `GET /v1/admin/alerts` (admin token) → 200 with `{"alerts": […]}`, out-of-stock
/// products first.
pub fn stock_alerts<K: KeyValueStore, C: Clock, I: IdGenerator>(
    svc: &StockService<K, C, I>,
    req: &Request<Vec<u8>>,
    admin: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, admin)?;
        query(req, &[])?;
        let alerts = svc.alerts()?;
        Ok(json(StatusCode::OK, &AlertsBody { alerts }))
    })
}

/// `POST /v1/admin/expire` (admin token) → 200 with `{"expired": […], "repaired": […]}`.
/// Reads are exact without it; the sweep records expiries in the history and finishes
/// reservations abandoned mid-change.
pub fn expire_reservations<K: KeyValueStore, C: Clock, I: IdGenerator>(
    svc: &StockService<K, C, I>,
    req: &Request<Vec<u8>>,
    admin: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, admin)?;
        query(req, &[])?;
        let EmptyBody {} = optional_json_body(req)?;
        Ok(json(StatusCode::OK, &svc.expire_due()?))
    })
}
