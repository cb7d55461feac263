//! RFC 9457 problem details: every error the service returns, with a stable
//! machine-readable `code` so that callers never have to parse `detail`.
//!
//! `type` is `https://stock.example/problems/<code>`: an absolute URI under the reserved
//! `.example` domain, so it identifies the problem without pretending to be a page to
//! fetch (RFC 9457 §3.1.1 says consumers should not dereference it).

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

/// Where problem type URIs live; the code is appended.
pub const PROBLEM_TYPE_BASE: &str = "https://stock.example/problems/";

/// Every problem the service can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    InvalidBody,
    InvalidProductId,
    InvalidWarehouseId,
    InvalidReservationId,
    InvalidOrderId,
    InvalidCartId,
    InvalidQuantity,
    InvalidThreshold,
    InvalidAdjustment,
    InvalidReason,
    ReasonMismatch,
    InvalidTtl,
    InvalidQuery,
    InvalidIdempotencyKey,
    NoLines,
    TooManyLines,
    DuplicateLine,
    InvalidCursor,
    InvalidEvent,
    UnknownEventType,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    NotFound,
    ProductNotFound,
    ReservationNotFound,
    CartNotFound,
    InsufficientStock,
    BelowReserved,
    OnHandLimit,
    ReservationExpired,
    ReservationReleased,
    ReservationCommitted,
    ReservationRejected,
    OrderMismatch,
    CartClosed,
    EventIdReused,
    IdempotencyKeyReused,
    Unauthorized,
    Forbidden,
    ServiceBusy,
    InternalError,
}

impl Code {
    pub const ALL: [Self; 43] = [
        Self::MalformedJson,
        Self::InvalidBody,
        Self::InvalidProductId,
        Self::InvalidWarehouseId,
        Self::InvalidReservationId,
        Self::InvalidOrderId,
        Self::InvalidCartId,
        Self::InvalidQuantity,
        Self::InvalidThreshold,
        Self::InvalidAdjustment,
        Self::InvalidReason,
        Self::ReasonMismatch,
        Self::InvalidTtl,
        Self::InvalidQuery,
        Self::InvalidIdempotencyKey,
        Self::NoLines,
        Self::TooManyLines,
        Self::DuplicateLine,
        Self::InvalidCursor,
        Self::InvalidEvent,
        Self::UnknownEventType,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::MethodNotAllowed,
        Self::NotFound,
        Self::ProductNotFound,
        Self::ReservationNotFound,
        Self::CartNotFound,
        Self::InsufficientStock,
        Self::BelowReserved,
        Self::OnHandLimit,
        Self::ReservationExpired,
        Self::ReservationReleased,
        Self::ReservationCommitted,
        Self::ReservationRejected,
        Self::OrderMismatch,
        Self::CartClosed,
        Self::EventIdReused,
        Self::IdempotencyKeyReused,
        Self::Unauthorized,
        Self::Forbidden,
        Self::ServiceBusy,
        Self::InternalError,
    ];

    /// The stable machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidProductId => "invalid_product_id",
            Self::InvalidWarehouseId => "invalid_warehouse_id",
            Self::InvalidReservationId => "invalid_reservation_id",
            Self::InvalidOrderId => "invalid_order_id",
            Self::InvalidCartId => "invalid_cart_id",
            Self::InvalidQuantity => "invalid_quantity",
            Self::InvalidThreshold => "invalid_threshold",
            Self::InvalidAdjustment => "invalid_adjustment",
            Self::InvalidReason => "invalid_reason",
            Self::ReasonMismatch => "reason_mismatch",
            Self::InvalidTtl => "invalid_ttl",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::NoLines => "no_lines",
            Self::TooManyLines => "too_many_lines",
            Self::DuplicateLine => "duplicate_line",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidEvent => "invalid_event",
            Self::UnknownEventType => "unknown_event_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound => "not_found",
            Self::ProductNotFound => "product_not_found",
            Self::ReservationNotFound => "reservation_not_found",
            Self::CartNotFound => "cart_not_found",
            Self::InsufficientStock => "insufficient_stock",
            Self::BelowReserved => "below_reserved",
            Self::OnHandLimit => "on_hand_limit",
            Self::ReservationExpired => "reservation_expired",
            Self::ReservationReleased => "reservation_released",
            Self::ReservationCommitted => "reservation_committed",
            Self::ReservationRejected => "reservation_rejected",
            Self::OrderMismatch => "order_mismatch",
            Self::CartClosed => "cart_closed",
            Self::EventIdReused => "event_id_reused",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::ServiceBusy => "service_busy",
            Self::InternalError => "internal_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson
            | Self::InvalidBody
            | Self::InvalidProductId
            | Self::InvalidWarehouseId
            | Self::InvalidReservationId
            | Self::InvalidOrderId
            | Self::InvalidCartId
            | Self::InvalidQuantity
            | Self::InvalidThreshold
            | Self::InvalidAdjustment
            | Self::InvalidReason
            | Self::ReasonMismatch
            | Self::InvalidTtl
            | Self::InvalidQuery
            | Self::InvalidIdempotencyKey
            | Self::NoLines
            | Self::TooManyLines
            | Self::DuplicateLine
            | Self::InvalidCursor
            | Self::InvalidEvent
            | Self::UnknownEventType => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound
            | Self::ProductNotFound
            | Self::ReservationNotFound
            | Self::CartNotFound => StatusCode::NOT_FOUND,
            Self::InsufficientStock
            | Self::BelowReserved
            | Self::OnHandLimit
            | Self::ReservationReleased
            | Self::ReservationCommitted
            | Self::ReservationRejected
            | Self::OrderMismatch
            | Self::CartClosed
            | Self::EventIdReused => StatusCode::CONFLICT,
            Self::ReservationExpired => StatusCode::GONE,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::ServiceBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short summary that is the same for every occurrence of the problem.
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON",
            Self::InvalidBody => "Invalid request body",
            Self::InvalidProductId => "Invalid product id",
            Self::InvalidWarehouseId => "Invalid warehouse id",
            Self::InvalidReservationId => "Invalid reservation id",
            Self::InvalidOrderId => "Invalid order id",
            Self::InvalidCartId => "Invalid cart id",
            Self::InvalidQuantity => "Invalid quantity",
            Self::InvalidThreshold => "Invalid low-stock threshold",
            Self::InvalidAdjustment => "Invalid adjustment",
            Self::InvalidReason => "Invalid adjustment reason",
            Self::ReasonMismatch => "Reason does not fit the adjustment",
            Self::InvalidTtl => "Invalid reservation TTL",
            Self::InvalidQuery => "Invalid query parameters",
            Self::InvalidIdempotencyKey => "Invalid Idempotency-Key",
            Self::NoLines => "Reservation without lines",
            Self::TooManyLines => "Too many reservation lines",
            Self::DuplicateLine => "Duplicate reservation line",
            Self::InvalidCursor => "Invalid feed cursor",
            Self::InvalidEvent => "Invalid CloudEvent",
            Self::UnknownEventType => "Unknown event type",
            Self::PayloadTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::MethodNotAllowed => "Method not allowed",
            Self::NotFound => "No such route",
            Self::ProductNotFound => "Product not found",
            Self::ReservationNotFound => "Reservation not found",
            Self::CartNotFound => "Cart not found",
            Self::InsufficientStock => "Insufficient stock",
            Self::BelowReserved => "On-hand below reserved units",
            Self::OnHandLimit => "On-hand limit exceeded",
            Self::ReservationExpired => "Reservation expired",
            Self::ReservationReleased => "Reservation released",
            Self::ReservationCommitted => "Reservation committed",
            Self::ReservationRejected => "Reservation rejected",
            Self::OrderMismatch => "Reservation committed to another order",
            Self::CartClosed => "Cart already ordered",
            Self::EventIdReused => "Event id reused with another content",
            Self::IdempotencyKeyReused => "Idempotency-Key reused",
            Self::Unauthorized => "Authentication required",
            Self::Forbidden => "Forbidden",
            Self::ServiceBusy => "Service busy",
            Self::InternalError => "Internal error",
        }
    }
}

/// One problem occurrence, ready to become a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    code: Code,
    detail: String,
    extensions: Map<String, Value>,
    allow: Vec<Method>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
    #[serde(flatten)]
    extensions: &'a Map<String, Value>,
}

impl Problem {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            extensions: Map::new(),
            allow: Vec::new(),
        }
    }

    /// Adds an extension member (RFC 9457 §3.2), e.g. `available_quantity`.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    /// The generic 500: whatever went wrong is logged, never shown.
    pub fn internal() -> Self {
        Self::new(
            Code::InternalError,
            "the service could not complete the request; it has been logged",
        )
    }

    /// 405 listing the methods the route accepts in `Allow`.
    pub fn method_not_allowed(allow: &[Method]) -> Self {
        let names: Vec<&str> = allow.iter().map(Method::as_str).collect();
        let mut problem = Self::new(
            Code::MethodNotAllowed,
            format!("this route accepts {}", names.join(", ")),
        );
        problem.allow = allow.to_vec();
        problem
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }

    pub fn into_response(self) -> Response<Vec<u8>> {
        let body = Body {
            kind: format!("{PROBLEM_TYPE_BASE}{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            detail: &self.detail,
            code: self.code.as_str(),
            extensions: &self.extensions,
        };
        let mut response =
            Response::new(serde_json::to_vec(&body).expect("a problem body always serializes"));
        *response.status_mut() = self.code.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self.code {
            Code::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // Contention clears within milliseconds; one second is a polite floor.
            Code::ServiceBusy => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Code::MethodNotAllowed => {
                let names: Vec<&str> = self.allow.iter().map(Method::as_str).collect();
                let allow = HeaderValue::from_str(&names.join(", "))
                    .expect("method names are valid header values");
                headers.insert(ALLOW, allow);
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response<Vec<u8>>) -> Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    #[test]
    fn every_code_is_distinct_snake_case_and_an_error_status() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} appears twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert!(!code.title().is_empty());
        }
    }

    #[test]
    fn a_problem_response_carries_the_rfc_9457_members_and_media_type() {
        let response = Problem::new(Code::InsufficientStock, "only 2 left")
            .with("available_quantity", 2)
            .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let json = body(&response);
        assert_eq!(
            json["type"],
            "https://stock.example/problems/insufficient_stock"
        );
        assert_eq!(json["title"], "Insufficient stock");
        assert_eq!(json["status"], 409);
        assert_eq!(json["detail"], "only 2 left");
        assert_eq!(json["code"], "insufficient_stock");
        assert_eq!(json["available_quantity"], 2);
    }

    #[test]
    fn unauthorized_asks_for_a_bearer_token() {
        let response = Problem::new(Code::Unauthorized, "no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn service_busy_tells_the_caller_when_to_retry() {
        let response = Problem::new(Code::ServiceBusy, "busy").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn method_not_allowed_lists_the_accepted_methods() {
        let response = Problem::method_not_allowed(&[Method::GET, Method::PUT]).into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, PUT");
        assert_eq!(body(&response)["code"], "method_not_allowed");
    }

    #[test]
    fn the_internal_error_has_a_fixed_generic_detail() {
        let json = body(&Problem::internal().into_response());
        assert_eq!(json["status"], 500);
        assert_eq!(json["code"], "internal_error");
        assert_eq!(json["detail"], Problem::internal().detail());
    }
}
