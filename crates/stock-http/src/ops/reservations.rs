//! Reservation operations: reserve (one line or several, all or nothing), look up,
//! release and commit.

use http::header::{HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};
use stock_domain::StockApi;
use stock_domain::models::{Quantity, ReservationStatus};
use stock_domain::service::{Reserve, ReserveLine};

use crate::auth::{Token, authorize};
use crate::percent;
use crate::problem::{Code, Problem};
use crate::request::{
    idempotency_key, json_body, optional_json_body, order_id, path_reservation_id, product_id,
    quantity, query, units, warehouse_id,
};
use crate::response::{json, respond};
use crate::wire::{CommitBody, EmptyBody, ReservationBody, ReserveBody, ReserveLineBody};

/// `POST /v1/reservations` (service token) → 201 with the reservation. A retry under
/// the same `Idempotency-Key` gets the same reservation back.
pub fn reserve_stock<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    service: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, service)?;
        query(req, &[])?;
        let idempotency_key = idempotency_key(req)?;
        let body: ReserveBody = json_body(req)?;
        let single_line = body.lines.is_none();
        let ttl_ms = body
            .ttl_seconds
            .as_ref()
            .map(|ttl| ttl_ms(units(ttl), svc.max_ttl_seconds()))
            .transpose()?;
        let cmd = Reserve {
            lines: lines(body)?,
            ttl_ms,
            idempotency_key,
        };
        let view = svc.reserve(cmd)?;
        if view.status == ReservationStatus::Rejected {
            return Err(Problem::new(
                Code::ReservationRejected,
                "the reservation was cancelled before all its lines were placed",
            )
            .with("reservation_id", view.reservation_id.to_string()));
        }
        let location = format!(
            "/v1/reservations/{}",
            percent::segment(view.reservation_id.as_str())
        );
        let mut body = ReservationBody::new(view);
        if single_line {
            body = body.echo_single_line();
        }
        let mut response = json(StatusCode::CREATED, &body);
        response.headers_mut().insert(
            LOCATION,
            HeaderValue::from_str(&location).expect("reservation ids are valid header text"),
        );
        Ok(response)
    })
}

/// The lines of a reservation request, in either of its two shapes.
fn lines(body: ReserveBody) -> Result<Vec<ReserveLine>, Problem> {
    match body {
        ReserveBody {
            lines: Some(lines),
            product_id: None,
            quantity: None,
            warehouse_id: None,
            ..
        } => lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| reserve_line(line, &format!("lines[{i}].")))
            .collect(),
        ReserveBody { lines: Some(_), .. } => Err(Problem::new(
            Code::InvalidBody,
            "give either lines or product_id/quantity/warehouse_id, not both",
        )),
        ReserveBody {
            product_id: Some(product_id),
            quantity: Some(quantity),
            warehouse_id,
            ..
        } => Ok(vec![reserve_line(
            ReserveLineBody {
                product_id,
                quantity,
                warehouse_id,
            },
            "",
        )?]),
        ReserveBody {
            product_id: None, ..
        } => Err(Problem::new(
            Code::InvalidBody,
            "missing field `product_id` (or `lines` for several products)",
        )),
        ReserveBody { quantity: None, .. } => {
            Err(Problem::new(Code::InvalidBody, "missing field `quantity`"))
        }
    }
}

/// One line; `at` prefixes messages with the line's position in a multi-line request.
fn reserve_line(line: ReserveLineBody, at: &str) -> Result<ReserveLine, Problem> {
    let located = |p: Problem| {
        if at.is_empty() {
            p
        } else {
            Problem::new(p.code(), format!("{at}{}", p.detail()))
        }
    };
    let product_id = product_id(&line.product_id).map_err(located)?;
    let quantity: Quantity = quantity("quantity", units(&line.quantity)).map_err(located)?;
    let warehouse_id = line
        .warehouse_id
        .as_deref()
        .map(warehouse_id)
        .transpose()
        .map_err(located)?;
    Ok(ReserveLine {
        product_id,
        quantity,
        warehouse_id,
    })
}

/// `ttl_seconds` as milliseconds. The domain checks the configured range; here only
/// what cannot even be expressed is refused, with the same code.
fn ttl_ms(seconds: Option<i128>, max_ttl_seconds: u64) -> Result<u64, Problem> {
    seconds
        .filter(|s| *s >= 1)
        .and_then(|s| u64::try_from(s).ok())
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| {
            Problem::new(
                Code::InvalidTtl,
                format!("ttl_seconds must be a whole number between 1 and {max_ttl_seconds}"),
            )
            .with("max_ttl_seconds", max_ttl_seconds)
        })
}

/// `GET /v1/reservations/{reservation_id}` → 200 with the reservation.
pub fn get_reservation<S: StockApi>(svc: &S, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    respond(|| {
        let id = path_reservation_id(req, "/v1/reservations/:reservation_id")?;
        query(req, &[])?;
        let view = svc.get_reservation(&id)?;
        Ok(json(StatusCode::OK, &ReservationBody::new(view)))
    })
}

/// `POST /v1/reservations/{reservation_id}/release` (service token) → 200 with the
/// reservation. Idempotent by state, so an `Idempotency-Key` is checked but not needed.
pub fn release_reservation<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    service: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, service)?;
        let id = path_reservation_id(req, "/v1/reservations/:reservation_id/release")?;
        query(req, &[])?;
        idempotency_key(req)?;
        let EmptyBody {} = optional_json_body(req)?;
        let view = svc.release(&id)?;
        Ok(json(StatusCode::OK, &ReservationBody::new(view)))
    })
}

/// `POST /v1/reservations/{reservation_id}/commit` with `{"order_id"}` (service token)
/// → 200 with the reservation. Idempotent by state, like release.
pub fn commit_reservation<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    service: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, service)?;
        let id = path_reservation_id(req, "/v1/reservations/:reservation_id/commit")?;
        query(req, &[])?;
        idempotency_key(req)?;
        let body: CommitBody = json_body(req)?;
        let order = order_id(&body.order_id)?;
        let view = svc.commit(&id, &order)?;
        Ok(json(StatusCode::OK, &ReservationBody::new(view)))
    })
}
