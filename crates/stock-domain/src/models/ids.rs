//! Validated identifiers. Every id that crosses the service boundary is parsed once here
//! ("parse, don't validate"), so the rest of the domain never sees a malformed one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be 1 to {max} characters long")]
    Length { kind: &'static str, max: usize },
    #[error("{kind} may only contain letters, digits and . _ : -")]
    Charset { kind: &'static str },
}

fn check(kind: &'static str, raw: &str, max: usize) -> Result<(), IdError> {
    if raw.is_empty() || raw.len() > max {
        return Err(IdError::Length { kind, max });
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(IdError::Charset { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                check($kind, &raw, $max)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A product (SKU) identifier: 1–128 characters of `[A-Za-z0-9._:-]`.
    ProductId, "product_id", 128
);
id_type!(
    /// A warehouse identifier, same alphabet as product ids, at most 64 characters.
    WarehouseId, "warehouse_id", 64
);
id_type!(
    /// A reservation identifier (the service issues UUIDs; any id of the alphabet is accepted on lookup).
    ReservationId, "reservation_id", 64
);
id_type!(
    /// The order a reservation is committed to.
    OrderId, "order_id", 128
);
id_type!(
    /// A shopping cart of the cart service, as named in its events.
    CartId, "cart_id", 128
);

impl WarehouseId {
    /// The warehouse used when a request names none.
    pub fn default_warehouse() -> Self {
        Self("default".to_owned())
    }
}

/// An operation id: the tag a write leaves in its record's `ops` ring, by which a later
/// read tells whether that write landed (see `storage`), and the `op` of the history
/// entries and in-flight lines the write produces. The service mints them (a digest in
/// hex, after a letter naming what minted it) and never takes one from a caller, so
/// they are not validated; a retry's attempt N writes `{op}.N`. Stored as the string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpId(String);

impl OpId {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag attempt `attempt` of this operation writes: the id itself for the first
    /// attempt, `{op}.N` for attempt N.
    pub fn attempt(&self, attempt: u32) -> Self {
        if attempt == 0 {
            self.clone()
        } else {
            Self(format!("{}.{attempt}", self.0))
        }
    }

    /// Whether this tag was written by some attempt of `op`.
    pub fn is_attempt_of(&self, op: &OpId) -> bool {
        self.0.strip_prefix(op.as_str()).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('.')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `Idempotency-Key` header value: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(IdError::Length {
                kind: "Idempotency-Key",
                max: Self::MAX_LEN,
            });
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdError::Charset {
                kind: "Idempotency-Key",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_id_of_allowed_characters_is_accepted() {
        for ok in ["SKU-1", "a", "x.y_z:w-1", &"a".repeat(128)] {
            assert_eq!(ProductId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn an_empty_product_id_is_rejected() {
        assert!(matches!(ProductId::parse(""), Err(IdError::Length { .. })));
    }

    #[test]
    fn a_product_id_longer_than_128_characters_is_rejected() {
        assert!(matches!(
            ProductId::parse("a".repeat(129)),
            Err(IdError::Length { max: 128, .. })
        ));
    }

    #[test]
    fn a_product_id_with_a_slash_space_or_unicode_is_rejected() {
        for bad in ["a/b", "a b", "é", "a%2F", "a\n"] {
            assert!(
                matches!(ProductId::parse(bad), Err(IdError::Charset { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids_deserialize_through_validation() {
        assert!(serde_json::from_str::<ProductId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<ProductId>("\"not ok\"").is_err());
    }

    #[test]
    fn an_idempotency_key_must_be_visible_ascii() {
        assert!(IdempotencyKey::parse("order-42/retry").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }
}
