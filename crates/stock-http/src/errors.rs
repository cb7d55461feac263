//! Domain errors as problems: one `From` per operation's error enum, so every variant
//! has exactly one code and status. Unexpected failures are logged to stderr with their
//! full context and answered with the generic 500, never with their text.

use stock_domain::models::{MAX_UNITS, QuantityError};
use stock_domain::service::{
    AdjustStockError, AlertsError, CheckAvailabilityError, CommitError, ExpireError, FeedError,
    GetReservationError, GetStockError, HistoryError, IngestError, ListProductsError, ReleaseError,
    ReserveError, UpdateStockError,
};

use crate::problem::{Code, Problem};

fn internal(operation: &str, error: &anyhow::Error) -> Problem {
    eprintln!("stock-service: {operation} failed: {error:#}");
    Problem::internal()
}

fn busy() -> Problem {
    Problem::new(
        Code::ServiceBusy,
        "the records involved are too contended right now; retry shortly",
    )
}

fn idempotency_key_reused() -> Problem {
    Problem::new(
        Code::IdempotencyKeyReused,
        "this Idempotency-Key was already used for a different request",
    )
}

fn product_not_found(id: &impl ToString) -> Problem {
    let id = id.to_string();
    Problem::new(
        Code::ProductNotFound,
        format!("product {id} does not exist"),
    )
    .with("product_id", id)
}

fn reservation_not_found(id: &impl ToString) -> Problem {
    let id = id.to_string();
    Problem::new(
        Code::ReservationNotFound,
        format!("reservation {id} does not exist"),
    )
    .with("reservation_id", id)
}

/// A refused number of units, worded for the field the caller sent (`quantity`,
/// `low_stock_threshold`, `lines[1].quantity`…): the domain's variant says what is wrong
/// with the value, the adapter knows where the value came from.
pub(crate) fn invalid_units(code: Code, field: &str, error: QuantityError) -> Problem {
    let detail = match error {
        QuantityError::Zero => format!("{field} must be greater than zero"),
        QuantityError::Negative => format!("{field} must not be negative"),
        QuantityError::TooLarge => format!("{field} must not exceed {MAX_UNITS}"),
        QuantityError::ZeroAdjustment => format!("{field} must not be zero"),
    };
    Problem::new(code, detail)
}

impl From<UpdateStockError> for Problem {
    fn from(e: UpdateStockError) -> Self {
        match e {
            UpdateStockError::BelowReserved {
                requested,
                reserved,
            } => Problem::new(Code::BelowReserved, e.to_string())
                .with("requested_quantity", requested)
                .with("reserved_quantity", reserved),
            UpdateStockError::IdempotencyMismatch => idempotency_key_reused(),
            UpdateStockError::Busy => busy(),
            UpdateStockError::Unknown(e) => internal("update stock", &e),
        }
    }
}

impl From<AdjustStockError> for Problem {
    fn from(e: AdjustStockError) -> Self {
        match e {
            AdjustStockError::ProductNotFound(id) => product_not_found(&id),
            AdjustStockError::ReasonMismatch { reason, .. } => {
                Problem::new(Code::ReasonMismatch, e.to_string()).with("reason", reason.as_str())
            }
            AdjustStockError::InsufficientStock { available } => {
                Problem::new(Code::InsufficientStock, e.to_string())
                    .with("available_quantity", available)
            }
            AdjustStockError::TooLarge => {
                Problem::new(Code::OnHandLimit, e.to_string()).with("max_quantity", MAX_UNITS)
            }
            AdjustStockError::IdempotencyMismatch => idempotency_key_reused(),
            AdjustStockError::Busy => busy(),
            AdjustStockError::Unknown(e) => internal("adjust stock", &e),
        }
    }
}

impl From<GetStockError> for Problem {
    fn from(e: GetStockError) -> Self {
        match e {
            GetStockError::ProductNotFound(id) => product_not_found(&id),
            GetStockError::Unknown(e) => internal("get stock", &e),
        }
    }
}

impl From<CheckAvailabilityError> for Problem {
    fn from(e: CheckAvailabilityError) -> Self {
        match e {
            CheckAvailabilityError::ProductNotFound(id) => product_not_found(&id),
            CheckAvailabilityError::Unknown(e) => internal("check availability", &e),
        }
    }
}

impl From<HistoryError> for Problem {
    fn from(e: HistoryError) -> Self {
        match e {
            HistoryError::ProductNotFound(id) => product_not_found(&id),
            HistoryError::Unknown(e) => internal("stock history", &e),
        }
    }
}

fn invalid_cursor() -> Problem {
    Problem::new(
        Code::InvalidCursor,
        "after must be a next value returned by this listing",
    )
}

impl From<AlertsError> for Problem {
    fn from(e: AlertsError) -> Self {
        match e {
            AlertsError::InvalidCursor(_) => invalid_cursor(),
            AlertsError::Unknown(e) => internal("stock alerts", &e),
        }
    }
}

impl From<ListProductsError> for Problem {
    fn from(e: ListProductsError) -> Self {
        match e {
            ListProductsError::InvalidCursor(_) => invalid_cursor(),
            ListProductsError::Unknown(e) => internal("list products", &e),
        }
    }
}

impl From<ReserveError> for Problem {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::NoLines => Problem::new(Code::NoLines, e.to_string()),
            ReserveError::TooManyLines { max } => {
                Problem::new(Code::TooManyLines, e.to_string()).with("max_lines", max)
            }
            ReserveError::DuplicateLine(ref id) => {
                let id = id.to_string();
                Problem::new(Code::DuplicateLine, e.to_string()).with("product_id", id)
            }
            ReserveError::TtlOutOfRange { max_seconds } => Problem::new(
                Code::InvalidTtl,
                format!("ttl_seconds must be between 1 and {max_seconds}"),
            )
            .with("max_ttl_seconds", max_seconds),
            ReserveError::ProductNotFound(id) => product_not_found(&id),
            ReserveError::InsufficientStock {
                ref product_id,
                requested,
                available,
            } => {
                let product_id = product_id.to_string();
                Problem::new(Code::InsufficientStock, e.to_string())
                    .with("product_id", product_id)
                    .with("requested_quantity", requested)
                    .with("available_quantity", available)
            }
            ReserveError::IdempotencyMismatch => idempotency_key_reused(),
            ReserveError::Busy => busy(),
            ReserveError::Unknown(e) => internal("reserve stock", &e),
        }
    }
}

impl From<GetReservationError> for Problem {
    fn from(e: GetReservationError) -> Self {
        match e {
            GetReservationError::NotFound(id) => reservation_not_found(&id),
            GetReservationError::Busy => busy(),
            GetReservationError::Unknown(e) => internal("get reservation", &e),
        }
    }
}

impl From<ReleaseError> for Problem {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::NotFound(id) => reservation_not_found(&id),
            ReleaseError::AlreadyCommitted => {
                Problem::new(Code::ReservationCommitted, e.to_string())
            }
            ReleaseError::Rejected => Problem::new(Code::ReservationRejected, e.to_string()),
            ReleaseError::Busy => busy(),
            ReleaseError::Unknown(e) => internal("release reservation", &e),
        }
    }
}

impl From<CommitError> for Problem {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::NotFound(id) => reservation_not_found(&id),
            CommitError::Expired { expires_at } => {
                Problem::new(Code::ReservationExpired, e.to_string()).with("expires_at", expires_at)
            }
            CommitError::AlreadyReleased => Problem::new(Code::ReservationReleased, e.to_string()),
            CommitError::Rejected => Problem::new(Code::ReservationRejected, e.to_string()),
            CommitError::OrderMismatch { ref committed_to } => {
                let order_id = committed_to.to_string();
                Problem::new(Code::OrderMismatch, e.to_string()).with("order_id", order_id)
            }
            CommitError::Busy => busy(),
            CommitError::Unknown(e) => internal("commit reservation", &e),
        }
    }
}

impl From<ExpireError> for Problem {
    fn from(e: ExpireError) -> Self {
        match e {
            ExpireError::InvalidCursor(_) => invalid_cursor(),
            ExpireError::Busy => busy(),
            ExpireError::Unknown(e) => internal("expire reservations", &e),
        }
    }
}

impl From<FeedError> for Problem {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::InvalidCursor(_) => Problem::new(
                Code::InvalidCursor,
                "after must be a next_after value returned by this feed for the same partition (or for all of them)",
            ),
            FeedError::InvalidPartition { .. } => {
                Problem::new(Code::InvalidPartition, e.to_string())
            }
            FeedError::Unknown(e) => internal("event feed", &e),
        }
    }
}

impl From<IngestError> for Problem {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::MissingEventId => Problem::new(Code::InvalidEvent, e.to_string()),
            IngestError::InvalidQuantity(q) => {
                invalid_units(Code::InvalidQuantity, "data.quantity", q)
            }
            IngestError::ProductNotFound(id) => product_not_found(&id),
            IngestError::InsufficientStock {
                ref product_id,
                requested,
                available,
            } => {
                let product_id = product_id.to_string();
                Problem::new(Code::InsufficientStock, e.to_string())
                    .with("product_id", product_id)
                    .with("requested_quantity", requested)
                    .with("available_quantity", available)
            }
            IngestError::CartNotFound(ref id) => {
                let id = id.to_string();
                Problem::new(Code::CartNotFound, e.to_string()).with("cart_id", id)
            }
            IngestError::CartClosed {
                ref cart_id,
                ref order_id,
            } => {
                let (cart_id, order_id) = (cart_id.to_string(), order_id.to_string());
                Problem::new(Code::CartClosed, e.to_string())
                    .with("cart_id", cart_id)
                    .with("order_id", order_id)
            }
            IngestError::EventIdReused(_) => Problem::new(
                Code::EventIdReused,
                "an event with this source and id was already received with a different content",
            ),
            IngestError::Busy => busy(),
            IngestError::Unknown(e) => internal("ingest event", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use stock_domain::models::{OrderId, ProductId, ReservationId};
    use stock_domain::service::AdjustmentReason;

    use super::*;

    fn sku() -> ProductId {
        ProductId::parse("SKU-1").unwrap()
    }

    fn rid() -> ReservationId {
        ReservationId::parse("r-1").unwrap()
    }

    #[test]
    fn insufficient_stock_on_reserve_reports_what_is_available() {
        let p = Problem::from(ReserveError::InsufficientStock {
            product_id: sku(),
            requested: 5,
            available: 2,
        });
        assert_eq!(p.code(), Code::InsufficientStock);
        assert_eq!(p.extension("available_quantity"), Some(&2.into()));
        assert_eq!(p.extension("requested_quantity"), Some(&5.into()));
        assert_eq!(p.extension("product_id"), Some(&"SKU-1".into()));
    }

    #[test]
    fn every_reserve_error_has_its_code() {
        let cases = [
            (ReserveError::NoLines, Code::NoLines),
            (ReserveError::TooManyLines { max: 100 }, Code::TooManyLines),
            (ReserveError::DuplicateLine(sku()), Code::DuplicateLine),
            (
                ReserveError::TtlOutOfRange { max_seconds: 7200 },
                Code::InvalidTtl,
            ),
            (ReserveError::ProductNotFound(sku()), Code::ProductNotFound),
            (
                ReserveError::IdempotencyMismatch,
                Code::IdempotencyKeyReused,
            ),
            (ReserveError::Busy, Code::ServiceBusy),
            (
                ReserveError::Unknown(anyhow::anyhow!("kv down")),
                Code::InternalError,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Problem::from(error).code(), code);
        }
    }

    #[test]
    fn an_invalid_ttl_names_the_maximum_in_seconds() {
        let p = Problem::from(ReserveError::TtlOutOfRange { max_seconds: 7200 });
        assert_eq!(p.extension("max_ttl_seconds"), Some(&7200.into()));
    }

    #[test]
    fn every_commit_error_has_its_code() {
        let cases = [
            (CommitError::NotFound(rid()), Code::ReservationNotFound),
            (
                CommitError::Expired { expires_at: 1 },
                Code::ReservationExpired,
            ),
            (CommitError::AlreadyReleased, Code::ReservationReleased),
            (CommitError::Rejected, Code::ReservationRejected),
            (
                CommitError::OrderMismatch {
                    committed_to: OrderId::parse("o-1").unwrap(),
                },
                Code::OrderMismatch,
            ),
            (CommitError::Busy, Code::ServiceBusy),
        ];
        for (error, code) in cases {
            assert_eq!(Problem::from(error).code(), code);
        }
    }

    #[test]
    fn committing_an_expired_reservation_is_gone() {
        let p = Problem::from(CommitError::Expired { expires_at: 42 });
        assert_eq!(p.code().status(), http::StatusCode::GONE);
        assert_eq!(p.extension("expires_at"), Some(&42.into()));
    }

    #[test]
    fn every_release_error_has_its_code() {
        let cases = [
            (ReleaseError::NotFound(rid()), Code::ReservationNotFound),
            (ReleaseError::AlreadyCommitted, Code::ReservationCommitted),
            (ReleaseError::Rejected, Code::ReservationRejected),
            (ReleaseError::Busy, Code::ServiceBusy),
        ];
        for (error, code) in cases {
            assert_eq!(Problem::from(error).code(), code);
        }
    }

    #[test]
    fn every_stock_mutation_error_has_its_code() {
        let update = [
            (
                UpdateStockError::BelowReserved {
                    requested: 1,
                    reserved: 3,
                },
                Code::BelowReserved,
            ),
            (
                UpdateStockError::IdempotencyMismatch,
                Code::IdempotencyKeyReused,
            ),
            (UpdateStockError::Busy, Code::ServiceBusy),
        ];
        for (error, code) in update {
            assert_eq!(Problem::from(error).code(), code);
        }
        let adjust = [
            (
                AdjustStockError::ProductNotFound(sku()),
                Code::ProductNotFound,
            ),
            (
                AdjustStockError::ReasonMismatch {
                    reason: AdjustmentReason::Damage,
                    adjustment: 3,
                },
                Code::ReasonMismatch,
            ),
            (
                AdjustStockError::InsufficientStock { available: 1 },
                Code::InsufficientStock,
            ),
            (AdjustStockError::TooLarge, Code::OnHandLimit),
            (
                AdjustStockError::IdempotencyMismatch,
                Code::IdempotencyKeyReused,
            ),
            (AdjustStockError::Busy, Code::ServiceBusy),
        ];
        for (error, code) in adjust {
            assert_eq!(Problem::from(error).code(), code);
        }
    }

    #[test]
    fn unknown_products_and_reservations_are_not_found() {
        assert_eq!(
            Problem::from(GetStockError::ProductNotFound(sku())).code(),
            Code::ProductNotFound
        );
        assert_eq!(
            Problem::from(CheckAvailabilityError::ProductNotFound(sku())).code(),
            Code::ProductNotFound
        );
        assert_eq!(
            Problem::from(HistoryError::ProductNotFound(sku())).code(),
            Code::ProductNotFound
        );
        assert_eq!(
            Problem::from(GetReservationError::NotFound(rid())).code(),
            Code::ReservationNotFound
        );
    }

    #[test]
    fn every_ingest_error_has_its_code_and_status() {
        use stock_domain::models::{CartId, QuantityError};
        let cart = || CartId::parse("c-1").unwrap();
        let cases = [
            (IngestError::MissingEventId, Code::InvalidEvent, 400),
            (
                IngestError::InvalidQuantity(QuantityError::Zero),
                Code::InvalidQuantity,
                400,
            ),
            (
                IngestError::ProductNotFound(sku()),
                Code::ProductNotFound,
                404,
            ),
            (
                IngestError::InsufficientStock {
                    product_id: sku(),
                    requested: 3,
                    available: 1,
                },
                Code::InsufficientStock,
                409,
            ),
            (IngestError::CartNotFound(cart()), Code::CartNotFound, 404),
            (
                IngestError::CartClosed {
                    cart_id: cart(),
                    order_id: OrderId::parse("o-1").unwrap(),
                },
                Code::CartClosed,
                409,
            ),
            (
                IngestError::EventIdReused("ce:5:/cart:e-1".to_owned()),
                Code::EventIdReused,
                409,
            ),
            (IngestError::Busy, Code::ServiceBusy, 503),
            (
                IngestError::Unknown(anyhow::anyhow!("kv down")),
                Code::InternalError,
                500,
            ),
        ];
        for (error, code, status) in cases {
            let p = Problem::from(error);
            assert_eq!(p.code(), code);
            assert_eq!(p.code().status().as_u16(), status);
        }
    }

    #[test]
    fn an_ingest_shortage_and_a_closed_cart_name_what_is_at_stake() {
        let p = Problem::from(IngestError::InsufficientStock {
            product_id: sku(),
            requested: 3,
            available: 1,
        });
        assert_eq!(p.extension("available_quantity"), Some(&1.into()));
        let p = Problem::from(IngestError::CartClosed {
            cart_id: stock_domain::models::CartId::parse("c-1").unwrap(),
            order_id: OrderId::parse("o-1").unwrap(),
        });
        assert_eq!(p.extension("order_id"), Some(&"o-1".into()));
        assert_eq!(p.extension("cart_id"), Some(&"c-1".into()));
    }

    #[test]
    fn an_unexpected_failure_is_a_generic_internal_error() {
        let p = Problem::from(GetStockError::Unknown(anyhow::anyhow!(
            "secret backend detail"
        )));
        assert_eq!(p, Problem::internal());
        let p = Problem::from(FeedError::Unknown(anyhow::anyhow!("secret backend detail")));
        assert_eq!(p, Problem::internal());
        let p = Problem::from(ExpireError::Busy);
        assert_eq!(p.code(), Code::ServiceBusy);
    }
}
