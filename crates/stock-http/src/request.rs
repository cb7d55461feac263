//! Reading a request: path parameters, query strings, headers and JSON bodies, each
//! turned into domain values or into the problem that explains what is wrong.
//!
//! Components receive the full request path as the client sent it, escapes included
//! (Spin passes it through undecoded, in the URI and in `spin-full-url`, and so does the
//! test host), so path parameters are read from `uri().path()` against the route's pattern
//! rather than from Spin-specific headers, then percent-decoded ([`crate::percent`]).

use std::collections::BTreeMap;

use http::Request;
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde_json::Number;
use stock_domain::models::{
    Adjustment, CartId, IdError, IdempotencyKey, OrderId, ProductId, Quantity, ReservationId,
    StockLevel, WarehouseId,
};

use crate::errors::invalid_units;
use crate::percent;
use crate::problem::{Code, Problem};

/// The largest request body accepted (SPEC §6: oversized bodies are refused).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header that makes a mutating request safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The product id in the `:product_id` segment of `pattern`, e.g.
/// `path_product_id(req, "/v1/stock/:product_id")`; see [`path_id`].
pub fn path_product_id(req: &Request<Vec<u8>>, pattern: &str) -> Result<ProductId, Problem> {
    path_id(
        req,
        pattern,
        Code::InvalidProductId,
        "product_id",
        product_id,
    )
}

/// The reservation id in the `:reservation_id` segment of `pattern`; see [`path_id`].
pub fn path_reservation_id(
    req: &Request<Vec<u8>>,
    pattern: &str,
) -> Result<ReservationId, Problem> {
    path_id(
        req,
        pattern,
        Code::InvalidReservationId,
        "reservation_id",
        reservation_id,
    )
}

/// Every id taken from a path, whatever its kind: the raw segment is percent-decoded
/// (RFC 3986, [`percent::decode`]) and then validated by `parse` exactly like the same
/// id in a body, so `SKU%3A42` is `SKU:42`. A malformed escape or bytes that are not
/// UTF-8 are the id's own problem (`code`); an escape that decodes to a character
/// outside the id alphabet (`%2F` is `/`) is refused by `parse`.
fn path_id<T>(
    req: &Request<Vec<u8>>,
    pattern: &str,
    code: Code,
    field: &str,
    parse: fn(&str) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let raw = path_param(req, pattern)?;
    let id = percent::decode(raw).ok_or_else(|| {
        Problem::new(
            code,
            format!("{field}: the path segment is not percent-encoded UTF-8"),
        )
    })?;
    parse(&id)
}

/// The raw value of the single `:name` segment of `pattern` in the request path, e.g.
/// `path_param(req, "/v1/stock/:product_id")`. A trailing slash is tolerated.
fn path_param<'r>(req: &'r Request<Vec<u8>>, pattern: &str) -> Result<&'r str, Problem> {
    let path = req.uri().path();
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let mut segments = path.split('/');
    let mut found = None;
    for expected in pattern.split('/') {
        match (segments.next(), expected.strip_prefix(':')) {
            (Some(actual), Some(_)) => found = Some(actual),
            (Some(actual), None) if actual == expected => {}
            _ => return Err(route_not_found(path)),
        }
    }
    match (segments.next(), found) {
        (None, Some(value)) => Ok(value),
        _ => Err(route_not_found(path)),
    }
}

fn route_not_found(path: &str) -> Problem {
    Problem::new(Code::NotFound, format!("no route matches {path}"))
}

pub fn product_id(raw: &str) -> Result<ProductId, Problem> {
    ProductId::parse(raw).map_err(|e| id_problem(Code::InvalidProductId, "product_id", e))
}

pub fn warehouse_id(raw: &str) -> Result<WarehouseId, Problem> {
    WarehouseId::parse(raw).map_err(|e| id_problem(Code::InvalidWarehouseId, "warehouse_id", e))
}

pub fn reservation_id(raw: &str) -> Result<ReservationId, Problem> {
    ReservationId::parse(raw)
        .map_err(|e| id_problem(Code::InvalidReservationId, "reservation_id", e))
}

pub fn order_id(raw: &str) -> Result<OrderId, Problem> {
    OrderId::parse(raw).map_err(|e| id_problem(Code::InvalidOrderId, "order_id", e))
}

pub fn cart_id(raw: &str) -> Result<CartId, Problem> {
    CartId::parse(raw).map_err(|e| id_problem(Code::InvalidCartId, "cart_id", e))
}

fn id_problem(code: Code, field: &str, error: IdError) -> Problem {
    Problem::new(code, format!("{field}: {error}"))
}

/// Query parameters, each at most once, none outside `allowed`.
pub fn query(
    req: &Request<Vec<u8>>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, Problem> {
    let mut params = BTreeMap::new();
    let raw = req.uri().query().unwrap_or_default();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            let detail = if allowed.is_empty() {
                "this route takes no query parameters".to_owned()
            } else {
                format!(
                    "unknown query parameter {name:?}; expected {}",
                    allowed.join(", ")
                )
            };
            return Err(Problem::new(Code::InvalidQuery, detail));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(Problem::new(
                Code::InvalidQuery,
                format!("query parameter {name:?} is given more than once"),
            ));
        }
    }
    Ok(params)
}

/// A whole number from a query string: out-of-range digits count as huge, not as junk.
pub fn query_units(raw: &str) -> Option<i128> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(raw.parse().unwrap_or(if raw.starts_with('-') {
        i128::MIN
    } else {
        i128::MAX
    }))
}

/// The `limit` of a paged read: `default` when absent, else a whole number in `1..=max`.
pub fn page_limit(raw: Option<&String>, default: usize, max: usize) -> Result<usize, Problem> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    query_units(raw)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            Problem::new(
                Code::InvalidQuery,
                format!("limit must be between 1 and {max}"),
            )
        })
}

/// The `Idempotency-Key` header, if present.
pub fn idempotency_key(req: &Request<Vec<u8>>) -> Result<Option<IdempotencyKey>, Problem> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::new(
            Code::InvalidIdempotencyKey,
            "Idempotency-Key is given more than once",
        ));
    }
    let raw = value.to_str().map_err(|_| {
        Problem::new(
            Code::InvalidIdempotencyKey,
            "Idempotency-Key may only contain visible ASCII characters",
        )
    })?;
    IdempotencyKey::parse(raw)
        .map(Some)
        .map_err(|e| Problem::new(Code::InvalidIdempotencyKey, e.to_string()))
}

/// Checks the size and media type of the body, whatever the operation does with it.
pub fn check_body(req: &Request<Vec<u8>>) -> Result<(), Problem> {
    let body = req.body();
    if body.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            Code::PayloadTooLarge,
            format!("the request body must not exceed {MAX_BODY_BYTES} bytes"),
        )
        .with("max_bytes", MAX_BODY_BYTES));
    }
    // A missing content type is accepted: many clients omit it for small JSON bodies.
    if let Some(value) = req.headers().get(CONTENT_TYPE)
        && !body.is_empty()
    {
        let essence = value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let json = essence
            .as_deref()
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !json {
            return Err(Problem::new(
                Code::UnsupportedMediaType,
                "the request body must be application/json",
            ));
        }
    }
    Ok(())
}

/// The body as `T` (a `deny_unknown_fields` DTO): syntax errors are `malformed_json`,
/// a well-formed body of the wrong shape `invalid_body`.
pub fn json_body<T: DeserializeOwned>(req: &Request<Vec<u8>>) -> Result<T, Problem> {
    check_body(req)?;
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::new(
            Code::MalformedJson,
            "the request body is empty; a JSON object is expected",
        ));
    }
    // Serde's derived structs also accept a JSON array of their fields in order; the
    // wire contract only has objects.
    if req.body().iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(req.body()) {
                Ok(_) => Problem::new(Code::InvalidBody, "the request body must be a JSON object"),
                Err(e) => Problem::new(Code::MalformedJson, e.to_string()),
            },
        );
    }
    serde_json::from_slice(req.body()).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => Code::InvalidBody,
            _ => Code::MalformedJson,
        };
        Problem::new(code, e.to_string())
    })
}

/// Like [`json_body`] for operations whose body is optional: an empty body is `T::default()`.
pub fn optional_json_body<T: DeserializeOwned + Default>(
    req: &Request<Vec<u8>>,
) -> Result<T, Problem> {
    check_body(req)?;
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body(req)
}

/// A JSON number as whole units. Integers too large for `i64` arrive as floats and
/// saturate, so they are reported as too large rather than as a type error.
pub fn units(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let f = n.as_f64()?;
    // Float-to-int `as` saturates, which is exactly "huge".
    (f.is_finite() && f.fract() == 0.0).then_some(f as i128)
}

fn not_whole(code: Code, field: &str) -> Problem {
    Problem::new(code, format!("{field} must be a whole number"))
}

pub fn quantity(field: &str, units: Option<i128>) -> Result<Quantity, Problem> {
    let units = units.ok_or_else(|| not_whole(Code::InvalidQuantity, field))?;
    Quantity::new(units).map_err(|e| invalid_units(Code::InvalidQuantity, field, e))
}

pub fn stock_level(code: Code, field: &str, units: Option<i128>) -> Result<StockLevel, Problem> {
    let units = units.ok_or_else(|| not_whole(code, field))?;
    StockLevel::new(units).map_err(|e| invalid_units(code, field, e))
}

pub fn adjustment(units: Option<i128>) -> Result<Adjustment, Problem> {
    let units = units.ok_or_else(|| not_whole(Code::InvalidAdjustment, "adjustment"))?;
    Adjustment::new(units).map_err(|e| invalid_units(Code::InvalidAdjustment, "adjustment", e))
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;
    use serde::Deserialize;

    use super::*;
    use crate::wire::EmptyBody;

    fn get(uri: &str) -> Request<Vec<u8>> {
        Request::builder().uri(uri).body(Vec::new()).unwrap()
    }

    fn post(body: &str, content_type: Option<&str>) -> Request<Vec<u8>> {
        let mut builder = Request::builder().method("POST").uri("/v1/reservations");
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(body.as_bytes().to_vec()).unwrap()
    }

    fn number(json: &str) -> Number {
        serde_json::from_str(json).unwrap()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        #[serde(rename = "quantity")]
        _quantity: Number,
    }

    #[test]
    fn a_path_parameter_is_read_from_the_full_path() {
        let req = get("http://localhost:9003/v1/stock/SKU-1/availability?quantity=2");
        assert_eq!(
            path_param(&req, "/v1/stock/:product_id/availability").unwrap(),
            "SKU-1"
        );
        let req = get("/v1/stock/SKU-1/");
        assert_eq!(path_param(&req, "/v1/stock/:product_id").unwrap(), "SKU-1");
    }

    #[test]
    fn a_path_of_another_shape_is_not_found() {
        for uri in ["/v1/stock", "/v1/stock/a/b", "/v2/stock/a", "/"] {
            let err = path_param(&get(uri), "/v1/stock/:product_id").unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{uri}");
        }
    }

    #[test]
    fn an_empty_path_parameter_is_passed_on_to_fail_id_validation() {
        let req = get("/v1/stock//availability");
        let raw = path_param(&req, "/v1/stock/:product_id/availability").unwrap();
        assert_eq!(product_id(raw).unwrap_err().code(), Code::InvalidProductId);
    }

    /// Every character of the id alphabet, sent as is and percent-encoded (upper and
    /// lower case hex), with the id each must give, on every route with an id in its path.
    fn encoded_ids() -> Vec<(String, String)> {
        let alphabet: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .chain(*b"._:-")
            .collect();
        // Halves, so that every case also fits a reservation id (at most 64 characters).
        let mut cases = vec![("SKU%3A42".to_owned(), "SKU:42".to_owned())];
        for half in alphabet.chunks(alphabet.len().div_ceil(2)) {
            let id = String::from_utf8(half.to_vec()).unwrap();
            let upper: String = half.iter().map(|b| format!("%{b:02X}")).collect();
            let lower: String = half.iter().map(|b| format!("%{b:02x}")).collect();
            for raw in [id.clone(), upper, lower] {
                cases.push((raw, id.clone()));
            }
        }
        cases
    }

    #[test]
    fn path_ids_are_percent_decoded_on_every_route() {
        for (raw, id) in encoded_ids() {
            for pattern in PRODUCT_ROUTES {
                let req = get(&pattern.replace(":product_id", &raw));
                let got = path_product_id(&req, pattern).unwrap();
                assert_eq!(got.as_str(), id, "{pattern} {raw}");
            }
            for pattern in RESERVATION_ROUTES {
                let req = get(&pattern.replace(":reservation_id", &raw));
                let got = path_reservation_id(&req, pattern).unwrap();
                assert_eq!(got.as_str(), id, "{pattern} {raw}");
            }
        }
    }

    const PRODUCT_ROUTES: [&str; 4] = [
        "/v1/stock/:product_id",
        "/v1/stock/:product_id/availability",
        "/v1/stock/:product_id/adjustments",
        "/v1/stock/:product_id/history",
    ];
    const RESERVATION_ROUTES: [&str; 3] = [
        "/v1/reservations/:reservation_id",
        "/v1/reservations/:reservation_id/release",
        "/v1/reservations/:reservation_id/commit",
    ];

    #[test]
    fn bad_escapes_and_escaped_characters_outside_the_alphabet_are_invalid_ids() {
        for raw in [
            "%ZZ",
            "a%2",
            "a%2Fb",
            "a%2fb",
            "caf%E9",
            "caf%C3%A9",
            "a%20b",
            "%25",
            "%00",
        ] {
            for pattern in PRODUCT_ROUTES {
                let req = get(&pattern.replace(":product_id", raw));
                let err = path_product_id(&req, pattern).unwrap_err();
                assert_eq!(err.code(), Code::InvalidProductId, "{pattern} {raw}");
            }
            for pattern in RESERVATION_ROUTES {
                let req = get(&pattern.replace(":reservation_id", raw));
                let err = path_reservation_id(&req, pattern).unwrap_err();
                assert_eq!(err.code(), Code::InvalidReservationId, "{pattern} {raw}");
            }
        }
    }

    #[test]
    fn each_kind_of_id_has_its_own_code() {
        assert_eq!(
            product_id("a b").unwrap_err().code(),
            Code::InvalidProductId
        );
        assert_eq!(
            warehouse_id("").unwrap_err().code(),
            Code::InvalidWarehouseId
        );
        assert_eq!(
            reservation_id(&"r".repeat(65)).unwrap_err().code(),
            Code::InvalidReservationId
        );
        assert_eq!(order_id("o/1").unwrap_err().code(), Code::InvalidOrderId);
        assert_eq!(cart_id("").unwrap_err().code(), Code::InvalidCartId);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let params = query(&get("/v1/stock?ids=a%2Cb"), &["ids"]).unwrap();
        assert_eq!(params["ids"], "a,b");
    }

    #[test]
    fn unknown_or_repeated_query_parameters_are_refused() {
        let unknown = query(&get("/v1/stock?idz=a"), &["ids"]).unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidQuery);
        let repeated = query(&get("/v1/stock?ids=a&ids=b"), &["ids"]).unwrap_err();
        assert_eq!(repeated.code(), Code::InvalidQuery);
        let none_allowed = query(&get("/v1/stock/a?x=1"), &[]).unwrap_err();
        assert_eq!(none_allowed.code(), Code::InvalidQuery);
    }

    #[test]
    fn query_numbers_saturate_instead_of_failing() {
        assert_eq!(query_units("12"), Some(12));
        assert_eq!(query_units("-3"), Some(-3));
        assert_eq!(
            query_units("99999999999999999999999999999999999999999"),
            Some(i128::MAX)
        );
        assert_eq!(
            query_units("-99999999999999999999999999999999999999999"),
            Some(i128::MIN)
        );
        for junk in ["", "-", "1.5", "1e3", "abc", "+1", " 1"] {
            assert_eq!(query_units(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_page_limit_defaults_and_stays_within_its_bounds() {
        assert_eq!(page_limit(None, 100, 500).unwrap(), 100);
        assert_eq!(page_limit(Some(&"1".to_owned()), 100, 500).unwrap(), 1);
        assert_eq!(page_limit(Some(&"500".to_owned()), 100, 500).unwrap(), 500);
        for bad in ["0", "501", "-1", "many", "", "99999999999999999999999"] {
            let err = page_limit(Some(&bad.to_owned()), 100, 500).unwrap_err();
            assert_eq!(err.code(), Code::InvalidQuery, "{bad:?}");
        }
    }

    #[test]
    fn a_valid_idempotency_key_is_parsed_and_a_missing_one_is_none() {
        let mut req = get("/v1/reservations");
        assert_eq!(idempotency_key(&req).unwrap(), None);
        req.headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("order-42"));
        assert_eq!(idempotency_key(&req).unwrap().unwrap().as_str(), "order-42");
    }

    #[test]
    fn a_bad_idempotency_key_is_refused() {
        let long = "k".repeat(256);
        for bad in ["", long.as_str()] {
            let mut req = get("/v1/reservations");
            req.headers_mut()
                .insert(IDEMPOTENCY_KEY, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                idempotency_key(&req).unwrap_err().code(),
                Code::InvalidIdempotencyKey
            );
        }
        let mut req = get("/v1/reservations");
        req.headers_mut().insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        assert_eq!(
            idempotency_key(&req).unwrap_err().code(),
            Code::InvalidIdempotencyKey
        );
    }

    #[test]
    fn a_body_over_64_kib_is_too_large() {
        let big = format!(
            "{{\"quantity\": 1, \"pad\": \"{}\"}}",
            "x".repeat(MAX_BODY_BYTES)
        );
        let err = json_body::<Probe>(&post(&big, None)).unwrap_err();
        assert_eq!(err.code(), Code::PayloadTooLarge);
    }

    #[test]
    fn a_body_with_a_non_json_content_type_is_unsupported() {
        let err = json_body::<Probe>(&post(
            "quantity=1",
            Some("application/x-www-form-urlencoded"),
        ))
        .unwrap_err();
        assert_eq!(err.code(), Code::UnsupportedMediaType);
    }

    #[test]
    fn json_content_types_with_parameters_or_suffixes_and_a_missing_one_are_accepted() {
        for ct in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/merge-patch+json"),
        ] {
            assert!(
                json_body::<Probe>(&post(r#"{"quantity": 1}"#, ct)).is_ok(),
                "{ct:?}"
            );
        }
    }

    #[test]
    fn broken_or_empty_json_is_malformed() {
        for bad in [
            "",
            "  ",
            "{",
            "{\"quantity\": }",
            "nope",
            "{\"quantity\": 1} x",
        ] {
            let err = json_body::<Probe>(&post(bad, None)).unwrap_err();
            assert_eq!(err.code(), Code::MalformedJson, "{bad:?}");
        }
    }

    #[test]
    fn well_formed_json_of_the_wrong_shape_is_an_invalid_body() {
        for bad in [
            "[]",
            "[5]",
            " [5, null]",
            "5",
            "{}",
            r#"{"quantity": "5"}"#,
            r#"{"quantity": null}"#,
            r#"{"quantity": 1, "extra": true}"#,
            r#"{"quantity": 1, "quantity": 2}"#,
        ] {
            let err = json_body::<Probe>(&post(bad, None)).unwrap_err();
            assert_eq!(err.code(), Code::InvalidBody, "{bad:?}");
        }
    }

    #[test]
    fn an_optional_body_may_be_empty_but_not_unknown() {
        assert!(optional_json_body::<EmptyBody>(&post("", None)).is_ok());
        assert!(optional_json_body::<EmptyBody>(&post("{}", None)).is_ok());
        for bad in [r#"{"x": 1}"#, "[]"] {
            let err = optional_json_body::<EmptyBody>(&post(bad, None)).unwrap_err();
            assert_eq!(err.code(), Code::InvalidBody, "{bad:?}");
        }
    }

    #[test]
    fn json_numbers_become_whole_units_or_nothing() {
        assert_eq!(units(&number("7")), Some(7));
        assert_eq!(units(&number("-7")), Some(-7));
        assert_eq!(
            units(&number("18446744073709551615")),
            Some(u64::MAX.into())
        );
        assert!(units(&number("1e30")).is_some_and(|n| n > 10i128.pow(29)));
        assert_eq!(units(&number("1e300")), Some(i128::MAX));
        assert_eq!(units(&number("-1e300")), Some(i128::MIN));
        assert_eq!(units(&number("2.0")), Some(2));
        assert_eq!(units(&number("2.5")), None);
    }

    #[test]
    fn zero_negative_huge_and_fractional_quantities_are_invalid_quantities() {
        for json in ["0", "-1", "1000000001", "1e300", "0.5"] {
            let err = quantity("quantity", units(&number(json))).unwrap_err();
            assert_eq!(err.code(), Code::InvalidQuantity, "{json}");
        }
        assert_eq!(quantity("quantity", Some(3)).unwrap().get(), 3);
    }

    #[test]
    fn a_stock_level_may_be_zero_and_names_its_field() {
        assert_eq!(
            stock_level(Code::InvalidThreshold, "low_stock_threshold", Some(0))
                .unwrap()
                .get(),
            0
        );
        let err = stock_level(Code::InvalidThreshold, "low_stock_threshold", Some(-1)).unwrap_err();
        assert_eq!(err.code(), Code::InvalidThreshold);
        assert!(
            err.detail().starts_with("low_stock_threshold"),
            "{}",
            err.detail()
        );
    }

    #[test]
    fn an_adjustment_must_be_non_zero_and_bounded() {
        assert_eq!(adjustment(Some(-4)).unwrap().get(), -4);
        for bad in [Some(0), Some(i128::MAX), Some(i128::MIN), None] {
            assert_eq!(adjustment(bad).unwrap_err().code(), Code::InvalidAdjustment);
        }
    }
}
