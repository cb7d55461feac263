//! Stock-level operations: read one or many products, check availability, set on-hand,
//! adjust, and read a product's history.

use http::{Request, Response, StatusCode};
use stock_domain::StockApi;
use stock_domain::models::{ProductId, WarehouseId};
use stock_domain::service::{AdjustStock, AdjustmentReason, UpdateStock};

use crate::auth::{Token, authorize};
use crate::problem::{Code, Problem};
use crate::request::{
    adjustment, idempotency_key, json_body, page_limit, path_product_id, product_id, quantity,
    query, query_units, stock_level, units, warehouse_id,
};
use crate::response::{json, respond};
use crate::wire::{AdjustStockBody, CloudEvent, HistoryBody, UpdateStockBody};

/// The most products one batch read may name (a catalog page).
pub const MAX_BATCH_IDS: usize = 100;
/// Product list page sizes.
pub const DEFAULT_PRODUCTS_LIMIT: usize = 100;
pub const MAX_PRODUCTS_LIMIT: usize = 500;
/// History page sizes.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 500;

const STOCK: &str = "/v1/stock/:product_id";

/// `GET /v1/stock/{product_id}` → 200 with the stock view.
pub fn get_stock<S: StockApi>(svc: &S, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    respond(|| {
        let id = path_product_id(req, STOCK)?;
        query(req, &[])?;
        Ok(json(StatusCode::OK, &svc.get_stock(&id)?))
    })
}

/// `GET /v1/stock?ids=a,b,c` → 200 with `{"items": […], "not_found": […]}`;
/// `GET /v1/stock?after=<next>&limit=<1..500>` (no `ids`) → 200 with
/// `{"items": […], "next": cursor|null}`, every product page by page.
pub fn get_stock_batch<S: StockApi>(svc: &S, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    respond(|| {
        let params = query(req, &["ids", "after", "limit"])?;
        let Some(raw) = params.get("ids") else {
            let limit = page_limit(
                params.get("limit"),
                DEFAULT_PRODUCTS_LIMIT,
                MAX_PRODUCTS_LIMIT,
            )?;
            let page = svc.list_products(params.get("after").map(String::as_str), limit)?;
            return Ok(json(StatusCode::OK, &page));
        };
        if params.contains_key("after") || params.contains_key("limit") {
            return Err(Problem::new(
                Code::InvalidQuery,
                "after and limit page the product list; they do not go with ids",
            ));
        }
        let mut ids: Vec<ProductId> = Vec::new();
        for raw in raw.split(',') {
            let id = product_id(raw)?;
            // A catalog page may show a product twice; it is read once.
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.len() > MAX_BATCH_IDS {
            return Err(Problem::new(
                Code::InvalidQuery,
                format!("at most {MAX_BATCH_IDS} product ids may be read at once"),
            )
            .with("max_ids", MAX_BATCH_IDS));
        }
        Ok(json(StatusCode::OK, &svc.get_stocks(&ids)?))
    })
}

/// `GET /v1/stock/{product_id}/availability?quantity=N[&warehouse_id=w]` → 200 with
/// `{"product_id", "quantity", "available_quantity", "available"}`.
pub fn check_availability<S: StockApi>(svc: &S, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    respond(|| {
        let id = path_product_id(req, "/v1/stock/:product_id/availability")?;
        let params = query(req, &["quantity", "warehouse_id"])?;
        let raw = params.get("quantity").ok_or_else(|| {
            Problem::new(
                Code::InvalidQuantity,
                "the quantity query parameter is required",
            )
        })?;
        let wanted = quantity("quantity", query_units(raw))?;
        let warehouse = params
            .get("warehouse_id")
            .map(|w| warehouse_id(w))
            .transpose()?;
        let availability = svc.check_availability(&id, wanted, warehouse.as_ref())?;
        Ok(json(StatusCode::OK, &availability))
    })
}

/// `PUT /v1/stock/{product_id}` (admin token) → 200 with the stock view. Creates the
/// product and the warehouse if needed.
pub fn update_stock<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    admin: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, admin)?;
        let product_id = path_product_id(req, STOCK)?;
        query(req, &[])?;
        let idempotency_key = idempotency_key(req)?;
        let body: UpdateStockBody = json_body(req)?;
        let cmd = UpdateStock {
            product_id,
            warehouse_id: warehouse_or_default(body.warehouse_id.as_deref())?,
            quantity: stock_level(Code::InvalidQuantity, "quantity", units(&body.quantity))?,
            low_stock_threshold: body
                .low_stock_threshold
                .map(|t| stock_level(Code::InvalidThreshold, "low_stock_threshold", units(&t)))
                .transpose()?,
            idempotency_key,
        };
        Ok(json(StatusCode::OK, &svc.update_stock(cmd)?))
    })
}

/// `POST /v1/stock/{product_id}/adjustments` (admin token) → 200 with the stock view.
pub fn adjust_stock<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    admin: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, admin)?;
        let product_id = path_product_id(req, "/v1/stock/:product_id/adjustments")?;
        query(req, &[])?;
        let idempotency_key = idempotency_key(req)?;
        let body: AdjustStockBody = json_body(req)?;
        let cmd = AdjustStock {
            product_id,
            warehouse_id: warehouse_or_default(body.warehouse_id.as_deref())?,
            adjustment: adjustment(units(&body.adjustment))?,
            reason: reason(&body.reason)?,
            idempotency_key,
        };
        Ok(json(StatusCode::OK, &svc.adjust_stock(cmd)?))
    })
}

/// `GET /v1/stock/{product_id}/history?after=<seq>&limit=<1..500>` → 200 with the
/// entries as CloudEvents and the cursor of the next page.
pub fn stock_history<S: StockApi>(svc: &S, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    respond(|| {
        let id = path_product_id(req, "/v1/stock/:product_id/history")?;
        let params = query(req, &["after", "limit"])?;
        let after = match params.get("after") {
            None => 0,
            Some(raw) => query_units(raw)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    Problem::new(
                        Code::InvalidQuery,
                        "after must be a sequence number (0 or more)",
                    )
                })?,
        };
        let limit = page_limit(
            params.get("limit"),
            DEFAULT_HISTORY_LIMIT,
            MAX_HISTORY_LIMIT,
        )?;
        let page = svc.history(&id, after, limit)?;
        let body = HistoryBody {
            product_id: id,
            events: page.entries.into_iter().map(CloudEvent::new).collect(),
            next_after: page.next_after,
        };
        Ok(json(StatusCode::OK, &body))
    })
}

fn warehouse_or_default(raw: Option<&str>) -> Result<WarehouseId, Problem> {
    raw.map_or_else(|| Ok(WarehouseId::default_warehouse()), warehouse_id)
}

fn reason(raw: &str) -> Result<AdjustmentReason, Problem> {
    AdjustmentReason::parse(raw).ok_or_else(|| {
        let allowed: Vec<&str> = AdjustmentReason::all()
            .map(AdjustmentReason::as_str)
            .collect();
        Problem::new(
            Code::InvalidReason,
            format!("reason must be one of {}", allowed.join(", ")),
        )
    })
}
