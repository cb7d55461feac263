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

/// Declares [`Code`] from one table: each problem's variant, its stable machine-readable
/// code, its HTTP status and its title (a short summary, the same for every occurrence).
macro_rules! problem_codes {
    ($($variant:ident = ($code:literal, $status:ident, $title:literal),)*) => {
        /// Every problem the service can report.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The stable machine-readable code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            /// A short summary that is the same for every occurrence of the problem.
            pub fn title(self) -> &'static str {
                match self {
                    $(Self::$variant => $title,)*
                }
            }
        }
    };
}

problem_codes! {
    MalformedJson = ("malformed_json", BAD_REQUEST, "Malformed JSON"),
    InvalidBody = ("invalid_body", BAD_REQUEST, "Invalid request body"),
    InvalidProductId = ("invalid_product_id", BAD_REQUEST, "Invalid product id"),
    InvalidWarehouseId = ("invalid_warehouse_id", BAD_REQUEST, "Invalid warehouse id"),
    InvalidReservationId = ("invalid_reservation_id", BAD_REQUEST, "Invalid reservation id"),
    InvalidOrderId = ("invalid_order_id", BAD_REQUEST, "Invalid order id"),
    InvalidCartId = ("invalid_cart_id", BAD_REQUEST, "Invalid cart id"),
    InvalidQuantity = ("invalid_quantity", BAD_REQUEST, "Invalid quantity"),
    InvalidThreshold = ("invalid_threshold", BAD_REQUEST, "Invalid low-stock threshold"),
    InvalidAdjustment = ("invalid_adjustment", BAD_REQUEST, "Invalid adjustment"),
    InvalidReason = ("invalid_reason", BAD_REQUEST, "Invalid adjustment reason"),
    ReasonMismatch = ("reason_mismatch", BAD_REQUEST, "Reason does not fit the adjustment"),
    InvalidTtl = ("invalid_ttl", BAD_REQUEST, "Invalid reservation TTL"),
    InvalidQuery = ("invalid_query", BAD_REQUEST, "Invalid query parameters"),
    InvalidIdempotencyKey = ("invalid_idempotency_key", BAD_REQUEST, "Invalid Idempotency-Key"),
    NoLines = ("no_lines", BAD_REQUEST, "Reservation without lines"),
    TooManyLines = ("too_many_lines", BAD_REQUEST, "Too many reservation lines"),
    DuplicateLine = ("duplicate_line", BAD_REQUEST, "Duplicate reservation line"),
    InvalidCursor = ("invalid_cursor", BAD_REQUEST, "Invalid feed cursor"),
    InvalidPartition = ("invalid_partition", BAD_REQUEST, "No such feed partition"),
    InvalidEvent = ("invalid_event", BAD_REQUEST, "Invalid CloudEvent"),
    UnknownEventType = ("unknown_event_type", BAD_REQUEST, "Unknown event type"),
    PayloadTooLarge = ("payload_too_large", PAYLOAD_TOO_LARGE, "Request body too large"),
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed"),
    NotFound = ("not_found", NOT_FOUND, "No such route"),
    ProductNotFound = ("product_not_found", NOT_FOUND, "Product not found"),
    ReservationNotFound = ("reservation_not_found", NOT_FOUND, "Reservation not found"),
    CartNotFound = ("cart_not_found", NOT_FOUND, "Cart not found"),
    InsufficientStock = ("insufficient_stock", CONFLICT, "Insufficient stock"),
    BelowReserved = ("below_reserved", CONFLICT, "On-hand below reserved units"),
    OnHandLimit = ("on_hand_limit", CONFLICT, "On-hand limit exceeded"),
    ReservationExpired = ("reservation_expired", GONE, "Reservation expired"),
    ReservationReleased = ("reservation_released", CONFLICT, "Reservation released"),
    ReservationCommitted = ("reservation_committed", CONFLICT, "Reservation committed"),
    ReservationRejected = ("reservation_rejected", CONFLICT, "Reservation rejected"),
    OrderMismatch = ("order_mismatch", CONFLICT, "Reservation committed to another order"),
    CartClosed = ("cart_closed", CONFLICT, "Cart already ordered"),
    EventIdReused = ("event_id_reused", CONFLICT, "Event id reused with another content"),
    IdempotencyKeyReused = ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Idempotency-Key reused"),
    Unauthorized = ("unauthorized", UNAUTHORIZED, "Authentication required"),
    Forbidden = ("forbidden", FORBIDDEN, "Forbidden"),
    ServiceBusy = ("service_busy", SERVICE_UNAVAILABLE, "Service busy"),
    InternalError = ("internal_error", INTERNAL_SERVER_ERROR, "Internal error"),
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
