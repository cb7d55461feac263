//! Bearer-token authentication of mutating and admin operations (SPEC §3, §6).
//!
//! - no `Authorization` header, or one that is not `Bearer <token>`: 401;
//! - a well-formed token that does not match: 403;
//! - an empty configured token disables the operation: 403 for everyone, so that an
//!   unset secret can never mean "open to all".
//!
//! Tokens are compared in constant time and never appear in logs or `Debug` output.

use std::fmt;

use http::Request;
use http::header::AUTHORIZATION;

use crate::problem::{Code, Problem};

/// The token an operation expects, as configured.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Lets the request through only if it carries `expected` as its bearer token.
pub fn authorize(req: &Request<Vec<u8>>, expected: &Token) -> Result<(), Problem> {
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Problem::new(
            Code::Unauthorized,
            "this operation requires an Authorization: Bearer token",
        ));
    };
    let presented = value.to_str().ok().and_then(bearer).ok_or_else(|| {
        Problem::new(
            Code::Unauthorized,
            "the Authorization header must be `Bearer <token>`",
        )
    })?;
    if expected.0.is_empty() {
        return Err(Problem::new(
            Code::Forbidden,
            "this operation is disabled: no token is configured for it",
        ));
    }
    if !constant_time_eq(presented.as_bytes(), expected.0.as_bytes()) {
        return Err(Problem::new(
            Code::Forbidden,
            "the bearer token is not valid for this operation",
        ));
    }
    Ok(())
}

/// The token of a `Bearer` credential (scheme case-insensitive, RFC 6750 `b64token`).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.bytes().all(b64token))
        .then_some(token)
}

/// Compares in time that depends only on the presented token's length (which the caller
/// knows anyway), so neither the content nor the length of the secret leaks. `expected`
/// must not be empty.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u64::from(presented.len() != expected.len());
    for (i, byte) in presented.iter().enumerate() {
        diff |= u64::from(byte ^ expected[i % expected.len()]);
    }
    // Keeps the optimizer from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> Request<Vec<u8>> {
        let mut builder = Request::builder().uri("/v1/admin/alerts");
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(Vec::new()).unwrap()
    }

    fn code(result: Result<(), Problem>) -> Option<Code> {
        result.err().map(|p| p.code())
    }

    #[test]
    fn the_right_bearer_token_is_accepted() {
        let token = Token::new("s3cret-token");
        assert!(authorize(&request(Some("Bearer s3cret-token")), &token).is_ok());
        assert!(authorize(&request(Some("bearer s3cret-token")), &token).is_ok());
    }

    #[test]
    fn a_request_without_a_token_is_unauthorized() {
        let token = Token::new("s3cret");
        assert_eq!(
            code(authorize(&request(None), &token)),
            Some(Code::Unauthorized)
        );
    }

    #[test]
    fn a_malformed_authorization_header_is_unauthorized() {
        let token = Token::new("s3cret");
        for bad in [
            "s3cret",
            "Basic czNjcmV0",
            "Bearer",
            "Bearer ",
            "Bearer a b",
        ] {
            assert_eq!(
                code(authorize(&request(Some(bad)), &token)),
                Some(Code::Unauthorized),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_wrong_token_is_forbidden() {
        let token = Token::new("s3cret");
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer S3CRET",
            "Bearer x",
        ] {
            assert_eq!(
                code(authorize(&request(Some(wrong)), &token)),
                Some(Code::Forbidden),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn an_empty_configured_token_disables_the_operation() {
        let token = Token::new("");
        assert_eq!(
            code(authorize(&request(Some("Bearer anything")), &token)),
            Some(Code::Forbidden)
        );
    }

    #[test]
    fn two_authorization_headers_are_unauthorized() {
        let token = Token::new("s3cret");
        let req = Request::builder()
            .header(AUTHORIZATION, "Bearer s3cret")
            .header(AUTHORIZATION, "Bearer s3cret")
            .body(Vec::new())
            .unwrap();
        assert_eq!(code(authorize(&req, &token)), Some(Code::Unauthorized));
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        assert!(!format!("{:?}", Token::new("s3cret")).contains("s3cret"));
    }

    #[test]
    fn constant_time_comparison_agrees_with_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abcabc", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
    }
}
