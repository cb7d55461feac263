//! Inbound CloudEvents (`POST /v1/events`) from the cart and order services, read into
//! the domain's [`InboundEvent`]. CloudEvents 1.0 over HTTP, in either mode:
//!
//! - **structured**: the whole event as a JSON object, sent as
//!   `application/cloudevents+json` (or, the same body, as `application/json` or without
//!   a content type);
//! - **binary**: the attributes as `ce-*` headers (percent-decoded, as the HTTP binding
//!   says) and the `data` alone as the JSON body.
//!
//! Batched mode (`application/cloudevents-batch+json`) is refused with 415: a relay sends
//! one event per request and learns its outcome.
//!
//! # Attributes
//! `specversion` must be `"1.0"`; `id`, `source` and `type` are required non-empty
//! strings; `subject`, if given, a string; `time` an RFC 3339 timestamp; `dataschema` an
//! absolute URI; `datacontenttype`, if given, a JSON media type (`data_base64` is
//! refused). Extension attributes (names of lower-case letters and digits; strings,
//! integers or booleans) are accepted and ignored; a malformed one is `invalid_event`.
//! Structured mode is read by `cloudevents-sdk`; binary mode by the header rules below.
//!
//! # Types
//! One of the seed's names, bare or namespaced by a reverse-DNS prefix (the part after
//! the last `.` decides): `CartItemAdded` or `com.acme.cart.CartItemAdded`, and likewise
//! `CartItemUpdated`, `CartItemRemoved`, `CartAbandoned`, `OrderConfirmed`. Anything
//! else is `unknown_event_type`.
//!
//! # `data`, a JSON object
//! | type | members |
//! |---|---|
//! | `CartItemAdded` | `cart_id`, `product_id`, `quantity` (> 0: the units added), `warehouse_id`? |
//! | `CartItemUpdated` | `cart_id`, `product_id`, `quantity` (≥ 0: the line's new total; 0 removes it) |
//! | `CartItemRemoved` | `cart_id`, `product_id` |
//! | `CartAbandoned` | `cart_id` |
//! | `OrderConfirmed` | `cart_id`, `order_id` |
//!
//! The producers own their payloads, so other members are ignored. A missing or
//! mistyped attribute or member is `invalid_event`; ids and quantities get the codes
//! they get everywhere else (`invalid_cart_id`, `invalid_product_id`, `invalid_quantity`…).

use cloudevents::AttributesReader;
use http::Request;
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value};
use stock_domain::service::{InboundEvent, InboundKind};

use crate::percent;
use crate::problem::{Code, Problem};
use crate::request::{
    cart_id, check_body, order_id, product_id, quantity, stock_level, units, warehouse_id,
};

/// The one CloudEvents version spoken.
pub const SPECVERSION: &str = "1.0";
/// The structured-mode media type.
pub const STRUCTURED_MEDIA_TYPE: &str = "application/cloudevents+json";
const BATCH_MEDIA_TYPE: &str = "application/cloudevents-batch+json";
/// The prefix of binary-mode attribute headers.
const BINARY_PREFIX: &str = "ce-";

/// The inbound event types: the seed's names (each variant's name, as written).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumString, strum::IntoStaticStr,
)]
pub enum EventType {
    CartItemAdded,
    CartItemUpdated,
    CartItemRemoved,
    CartAbandoned,
    OrderConfirmed,
}

impl EventType {
    /// Every type, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The type named by a CloudEvents `type`: a seed name, bare or after a reverse-DNS
    /// prefix of non-empty labels.
    pub fn parse(raw: &str) -> Option<Self> {
        let name = match raw.rsplit_once('.') {
            None => raw,
            Some((prefix, name)) if !prefix.split('.').any(str::is_empty) => name,
            Some(_) => return None,
        };
        name.parse().ok()
    }
}

/// An event as received: what the domain applies, and the `type` as the producer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub event: InboundEvent,
    pub raw_type: String,
}

/// The required context attributes, and `data` if there was one. `raw_type` is the
/// CloudEvents `type` as sent, before it is read as an [`EventType`].
struct Envelope {
    id: String,
    source: String,
    raw_type: String,
    data: Option<Value>,
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(Code::InvalidEvent, detail)
}

/// Reads the CloudEvent of a `POST /v1/events` request.
pub fn cloud_event(req: &Request<Vec<u8>>) -> Result<Received, Problem> {
    let media = media_type(req);
    if media.as_deref() == Some(BATCH_MEDIA_TYPE) {
        return Err(Problem::new(
            Code::UnsupportedMediaType,
            "batched CloudEvents are not accepted: send one event per request",
        ));
    }
    check_body(req)?;
    let binary = media.as_deref() != Some(STRUCTURED_MEDIA_TYPE)
        && req.headers().contains_key("ce-specversion");
    let envelope = if binary {
        binary_mode(req)?
    } else {
        structured_mode(req)?
    };
    let event_type = EventType::parse(&envelope.raw_type).ok_or_else(|| {
        let known: Vec<&str> = EventType::all().map(EventType::as_str).collect();
        Problem::new(
            Code::UnknownEventType,
            format!(
                "type {:?} is not consumed here; expected one of {} (optionally after a reverse-DNS prefix)",
                envelope.raw_type,
                known.join(", ")
            ),
        )
        .with("event_type", envelope.raw_type.clone())
    })?;
    let data = match envelope.data {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => {
            return Err(invalid(format!("{} needs data", event_type.as_str())));
        }
        Some(_) => return Err(invalid("data must be a JSON object")),
    };
    Ok(Received {
        event: InboundEvent {
            id: envelope.id,
            source: envelope.source,
            kind: inbound_kind(&Data {
                event_type,
                map: &data,
            })?,
        },
        raw_type: envelope.raw_type,
    })
}

/// The essence of the `Content-Type`, lower-cased.
fn media_type(req: &Request<Vec<u8>>) -> Option<String> {
    let value = req.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default();
    Some(essence.trim().to_ascii_lowercase())
}

/// The JSON event format is read by `cloudevents-sdk` (CloudEvents JSON Event Format 1.0:
/// attribute types, `time` as RFC 3339, `dataschema` as a URI, scalar extensions); what
/// this service adds is checked around it.
fn structured_mode(req: &Request<Vec<u8>>) -> Result<Envelope, Problem> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::new(
            Code::MalformedJson,
            "the request body is empty; a CloudEvent is expected",
        ));
    }
    let value: Value = serde_json::from_slice(req.body())
        .map_err(|e| Problem::new(Code::MalformedJson, e.to_string()))?;
    let Value::Object(event) = value else {
        return Err(invalid("a structured-mode CloudEvent is a JSON object"));
    };
    // Checked first so that any other version is told the supported one (the SDK also
    // reads 0.3, and names no version for one it does not know).
    match event.get("specversion") {
        Some(Value::String(specversion)) => check_specversion(specversion)?,
        None | Some(Value::Null) => return Err(invalid("the specversion attribute is required")),
        Some(_) => return Err(invalid("specversion must be a non-empty string")),
    }
    // The SDK would decode it; the data this service reads is a JSON object, as is.
    if !matches!(event.get("data_base64"), None | Some(Value::Null)) {
        return Err(invalid(
            "data_base64 is not accepted: data must be a JSON object",
        ));
    }
    let event: cloudevents::Event = serde_json::from_value(Value::Object(event))
        .map_err(|e| invalid(format!("not a CloudEvents 1.0 JSON event: {e}")))?;
    for (name, value) in [
        ("id", event.id()),
        ("source", event.source().as_str()),
        ("type", event.ty()),
    ] {
        if value.is_empty() {
            return Err(invalid(format!("{name} must be a non-empty string")));
        }
    }
    if let Some(media) = event.datacontenttype()
        && !is_json(media)
    {
        return Err(invalid(format!(
            "datacontenttype {media:?} is not accepted: data must be JSON"
        )));
    }
    if let Some((name, _)) = event.iter_extensions().find(|(n, _)| !is_attribute_name(n)) {
        return Err(invalid(format!(
            "{name:?} is not a CloudEvents attribute: names are lower-case letters and digits"
        )));
    }
    let data = match event.data() {
        None => None,
        Some(cloudevents::Data::Json(data)) => Some(data.clone()),
        Some(_) => return Err(invalid("data must be a JSON object")),
    };
    Ok(Envelope {
        id: event.id().to_owned(),
        source: event.source().to_string(),
        raw_type: event.ty().to_owned(),
        data,
    })
}

fn binary_mode(req: &Request<Vec<u8>>) -> Result<Envelope, Problem> {
    for name in req.headers().keys() {
        if let Some(attribute) = name.as_str().strip_prefix(BINARY_PREFIX)
            && !is_attribute_name(attribute)
        {
            return Err(invalid(format!(
                "header {name}: attribute names are lower-case letters and digits"
            )));
        }
    }
    let required = |name: &str| {
        header(req, &format!("{BINARY_PREFIX}{name}"))?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(format!("the {BINARY_PREFIX}{name} header is required")))
    };
    check_specversion(&required("specversion")?)?;
    let (id, source, raw_type) = (required("id")?, required("source")?, required("type")?);
    let data = if req.body().iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice(req.body())
                .map_err(|e| Problem::new(Code::MalformedJson, e.to_string()))?,
        )
    };
    Ok(Envelope {
        id,
        source,
        raw_type,
        data,
    })
}

fn check_specversion(specversion: &str) -> Result<(), Problem> {
    if specversion == SPECVERSION {
        return Ok(());
    }
    Err(invalid(format!(
        "specversion {specversion:?} is not supported; expected \"{SPECVERSION}\""
    ))
    .with("specversion", SPECVERSION))
}

fn is_json(media: &str) -> bool {
    let essence = media.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// CloudEvents attribute names: lower-case ASCII letters and digits.
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// One binary-mode header: at most once, visible ASCII, percent-decoded to UTF-8.
fn header(req: &Request<Vec<u8>>, name: &str) -> Result<Option<String>, Problem> {
    let mut values = req.headers().get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid(format!(
            "the {name} header is given more than once"
        )));
    }
    value
        .to_str()
        .ok()
        .and_then(percent::decode)
        .map(|value| Some(value.into_owned()))
        .ok_or_else(|| invalid(format!("the {name} header is not percent-encoded UTF-8")))
}

/// The `data` members of one event.
struct Data<'a> {
    event_type: EventType,
    map: &'a Map<String, Value>,
}

impl Data<'_> {
    fn required(&self, member: &str) -> Result<&Value, Problem> {
        match self.map.get(member) {
            None | Some(Value::Null) => Err(invalid(format!(
                "data.{member} is required for {}",
                self.event_type.as_str()
            ))),
            Some(value) => Ok(value),
        }
    }

    fn string(&self, member: &str) -> Result<&str, Problem> {
        self.required(member)?
            .as_str()
            .ok_or_else(|| invalid(format!("data.{member} must be a string")))
    }

    fn optional_string(&self, member: &str) -> Result<Option<&str>, Problem> {
        match self.map.get(member) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(member).map(Some),
        }
    }

    /// A whole number of units, or `None` when the member is not a whole number.
    fn units(&self, member: &str) -> Result<Option<i128>, Problem> {
        Ok(self.required(member)?.as_number().and_then(units))
    }
}

fn inbound_kind(data: &Data<'_>) -> Result<InboundKind, Problem> {
    let cart_id = cart_id(data.string("cart_id")?)?;
    Ok(match data.event_type {
        EventType::CartItemAdded => InboundKind::CartItemAdded {
            cart_id,
            product_id: product_id(data.string("product_id")?)?,
            quantity: quantity("data.quantity", data.units("quantity")?)?,
            warehouse_id: data
                .optional_string("warehouse_id")?
                .map(warehouse_id)
                .transpose()?,
        },
        EventType::CartItemUpdated => InboundKind::CartItemUpdated {
            cart_id,
            product_id: product_id(data.string("product_id")?)?,
            quantity: stock_level(
                Code::InvalidQuantity,
                "data.quantity",
                data.units("quantity")?,
            )?
            .get(),
        },
        EventType::CartItemRemoved => InboundKind::CartItemRemoved {
            cart_id,
            product_id: product_id(data.string("product_id")?)?,
        },
        EventType::CartAbandoned => InboundKind::CartAbandoned { cart_id },
        EventType::OrderConfirmed => InboundKind::OrderConfirmed {
            cart_id,
            order_id: order_id(data.string("order_id")?)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stock_domain::models::{CartId, ProductId, WarehouseId};

    use super::*;

    fn structured(body: &str, content_type: Option<&str>) -> Request<Vec<u8>> {
        let mut builder = Request::builder().method("POST").uri("/v1/events");
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(body.as_bytes().to_vec()).unwrap()
    }

    fn event(raw_type: &str, data: Value) -> Value {
        json!({
            "specversion": "1.0",
            "id": "e-1",
            "source": "/cart-service",
            "type": raw_type,
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "data": data,
        })
    }

    fn parse(value: &Value) -> Result<Received, Problem> {
        cloud_event(&structured(
            &value.to_string(),
            Some("application/cloudevents+json"),
        ))
    }

    fn code(value: &Value) -> Code {
        parse(value).unwrap_err().code()
    }

    fn added() -> Value {
        event(
            "CartItemAdded",
            json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": 2}),
        )
    }

    #[test]
    fn seed_names_are_types_bare_or_after_a_reverse_dns_prefix() {
        for t in EventType::all() {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                EventType::parse(&format!("com.acme.cart.{}", t.as_str())),
                Some(t)
            );
        }
        for unknown in [
            "",
            "cartitemadded",
            "CartItemAddedX",
            ".CartItemAdded",
            "com..cart.CartItemAdded",
            "com.acme.cart.",
            "StockReserved",
        ] {
            assert_eq!(EventType::parse(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn each_type_reads_its_data() {
        let cart = CartId::parse("c-1").unwrap();
        let product = ProductId::parse("SKU-1").unwrap();
        let got = parse(&added()).unwrap();
        assert_eq!(got.raw_type, "CartItemAdded");
        assert_eq!(got.event.id, "e-1");
        assert_eq!(got.event.source, "/cart-service");
        assert!(matches!(
            got.event.kind,
            InboundKind::CartItemAdded { ref cart_id, ref product_id, quantity, warehouse_id: None }
                if *cart_id == cart && *product_id == product && quantity.get() == 2
        ));
        let with_warehouse = event(
            "com.acme.cart.CartItemAdded",
            json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": 1, "warehouse_id": "paris", "price": 9.5}),
        );
        assert!(matches!(
            parse(&with_warehouse).unwrap().event.kind,
            InboundKind::CartItemAdded { warehouse_id: Some(ref w), .. }
                if *w == WarehouseId::parse("paris").unwrap()
        ));
        let updated = event(
            "CartItemUpdated",
            json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": 0}),
        );
        assert!(matches!(
            parse(&updated).unwrap().event.kind,
            InboundKind::CartItemUpdated { quantity: 0, .. }
        ));
        let removed = event(
            "CartItemRemoved",
            json!({"cart_id": "c-1", "product_id": "SKU-1"}),
        );
        assert!(matches!(
            parse(&removed).unwrap().event.kind,
            InboundKind::CartItemRemoved { .. }
        ));
        let abandoned = event("CartAbandoned", json!({"cart_id": "c-1"}));
        assert!(matches!(
            parse(&abandoned).unwrap().event.kind,
            InboundKind::CartAbandoned { ref cart_id } if *cart_id == cart
        ));
        let ordered = event(
            "OrderConfirmed",
            json!({"cart_id": "c-1", "order_id": "o-9", "total": 12}),
        );
        assert!(matches!(
            parse(&ordered).unwrap().event.kind,
            InboundKind::OrderConfirmed { ref order_id, .. } if order_id.as_str() == "o-9"
        ));
    }

    #[test]
    fn plain_json_and_a_missing_content_type_are_structured_mode_too() {
        let body = added().to_string();
        for ct in [
            None,
            Some("application/json"),
            Some("application/cloudevents+json; charset=utf-8"),
        ] {
            assert!(cloud_event(&structured(&body, ct)).is_ok(), "{ct:?}");
        }
    }

    #[test]
    fn binary_mode_reads_percent_decoded_headers_and_the_data_body() {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/events")
            .header(CONTENT_TYPE, "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", "e-%C3%A9 1")
            .header("ce-source", "/cart%20service")
            .header("ce-type", "CartItemRemoved")
            .header("ce-traceparent", "00-abc")
            .body(br#"{"cart_id": "c-1", "product_id": "SKU-1"}"#.to_vec())
            .unwrap();
        let got = cloud_event(&req).unwrap();
        assert_eq!(got.event.id, "e-\u{e9} 1");
        assert_eq!(got.event.source, "/cart service");
        assert!(matches!(
            got.event.kind,
            InboundKind::CartItemRemoved { .. }
        ));
    }

    #[test]
    fn bad_binary_mode_headers_are_invalid_events() {
        let base = || {
            Request::builder()
                .method("POST")
                .uri("/v1/events")
                .header("ce-specversion", "1.0")
                .header("ce-source", "/cart")
                .header("ce-type", "CartAbandoned")
        };
        let data = br#"{"cart_id": "c-1"}"#.to_vec();
        let cases = [
            base().body(data.clone()).unwrap(),
            base().header("ce-id", "").body(data.clone()).unwrap(),
            base().header("ce-id", "%zz").body(data.clone()).unwrap(),
            base().header("ce-id", "%ff").body(data.clone()).unwrap(),
            base()
                .header("ce-id", "a")
                .header("ce-id", "b")
                .body(data.clone())
                .unwrap(),
            base()
                .header("ce-id", "a")
                .header("ce-my_ext", "x")
                .body(data.clone())
                .unwrap(),
            base().header("ce-id", "a").body(Vec::new()).unwrap(),
        ];
        for req in cases {
            let err = cloud_event(&req).unwrap_err();
            assert_eq!(err.code(), Code::InvalidEvent, "{:?}", req.headers());
        }
        let broken = base().header("ce-id", "a").body(b"{".to_vec()).unwrap();
        assert_eq!(
            cloud_event(&broken).unwrap_err().code(),
            Code::MalformedJson
        );
    }

    #[test]
    fn missing_or_wrong_attributes_are_invalid_events() {
        let mut cases = Vec::new();
        for name in ["specversion", "id", "source", "type"] {
            let mut e = added();
            e.as_object_mut().unwrap().remove(name);
            cases.push(e);
            let mut e = added();
            e[name] = json!("");
            cases.push(e);
            let mut e = added();
            e[name] = json!(7);
            cases.push(e);
        }
        let mut tweak = |name: &str, value: Value| {
            let mut e = added();
            e[name] = value;
            cases.push(e);
        };
        tweak("specversion", json!("0.3"));
        tweak("time", json!(1_700_000_000));
        tweak("subject", json!({"a": 1}));
        tweak("datacontenttype", json!("text/plain"));
        tweak("data_base64", json!("eyJ9"));
        tweak("data", json!([1, 2]));
        tweak("data", json!(null));
        tweak("Bad-Name", json!("x"));
        tweak("traceext", json!({"nested": true}));
        for e in &cases {
            assert_eq!(code(e), Code::InvalidEvent, "{e}");
        }
        let mut ok = added();
        ok["traceparent"] = json!("00-abc");
        ok["priority"] = json!(3);
        ok["subject"] = json!("c-1");
        ok["datacontenttype"] = json!("application/vnd.cart+json");
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn a_wrong_specversion_names_the_supported_one() {
        let mut e = added();
        e["specversion"] = json!("0.3");
        assert_eq!(
            parse(&e).unwrap_err().extension("specversion"),
            Some(&json!("1.0"))
        );
    }

    #[test]
    fn an_unknown_type_is_its_own_problem_checked_before_the_data() {
        let e = event("CartCheckedOut", json!(null));
        let err = parse(&e).unwrap_err();
        assert_eq!(err.code(), Code::UnknownEventType);
        assert_eq!(err.extension("event_type"), Some(&json!("CartCheckedOut")));
    }

    #[test]
    fn bad_data_members_get_the_codes_of_their_kind() {
        let data = |d: Value| event("CartItemAdded", d);
        let cases = [
            (
                data(json!({"product_id": "SKU-1", "quantity": 1})),
                Code::InvalidEvent,
            ),
            (
                data(json!({"cart_id": 5, "product_id": "SKU-1", "quantity": 1})),
                Code::InvalidEvent,
            ),
            (
                data(json!({"cart_id": "c-1", "quantity": 1})),
                Code::InvalidEvent,
            ),
            (
                data(json!({"cart_id": "c-1", "product_id": "SKU-1"})),
                Code::InvalidEvent,
            ),
            (
                data(json!({"cart_id": "", "product_id": "SKU-1", "quantity": 1})),
                Code::InvalidCartId,
            ),
            (
                data(json!({"cart_id": "c-1", "product_id": "a b", "quantity": 1})),
                Code::InvalidProductId,
            ),
            (
                data(json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": 0})),
                Code::InvalidQuantity,
            ),
            (
                data(json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": "2"})),
                Code::InvalidQuantity,
            ),
            (
                data(json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": 1.5})),
                Code::InvalidQuantity,
            ),
            (
                data(
                    json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": 1, "warehouse_id": ""}),
                ),
                Code::InvalidWarehouseId,
            ),
            (
                event(
                    "CartItemUpdated",
                    json!({"cart_id": "c-1", "product_id": "SKU-1", "quantity": -1}),
                ),
                Code::InvalidQuantity,
            ),
            (
                event("OrderConfirmed", json!({"cart_id": "c-1"})),
                Code::InvalidEvent,
            ),
            (
                event(
                    "OrderConfirmed",
                    json!({"cart_id": "c-1", "order_id": "o/1"}),
                ),
                Code::InvalidOrderId,
            ),
        ];
        for (e, expected) in cases {
            assert_eq!(code(&e), expected, "{e}");
        }
    }

    #[test]
    fn malformed_bodies_batches_and_other_media_types_are_refused() {
        for bad in ["", "  ", "{", "nope"] {
            let err =
                cloud_event(&structured(bad, Some("application/cloudevents+json"))).unwrap_err();
            assert_eq!(err.code(), Code::MalformedJson, "{bad:?}");
        }
        let not_object = cloud_event(&structured("[]", None)).unwrap_err();
        assert_eq!(not_object.code(), Code::InvalidEvent);
        let batch = cloud_event(&structured(
            &format!("[{}]", added()),
            Some("application/cloudevents-batch+json"),
        ))
        .unwrap_err();
        assert_eq!(batch.code(), Code::UnsupportedMediaType);
        let text = cloud_event(&structured(&added().to_string(), Some("text/plain"))).unwrap_err();
        assert_eq!(text.code(), Code::UnsupportedMediaType);
    }
}
