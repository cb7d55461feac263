//! RFC 3986 percent-encoding, one rule for the whole service: every id taken from a path
//! (and every binary-mode CloudEvent header, whose HTTP binding uses the same escapes) is
//! decoded with [`decode`] before it is validated, and every id the service puts into a
//! path it hands out (`Location`, a CloudEvent's `source`) is encoded with [`segment`], so
//! a client can send back exactly what it was given.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped in
/// a path segment the service writes, so the segment never needs context to be read back.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `raw` with its `%XX` escapes decoded, as UTF-8. `None` when a `%` is not followed by
/// two hex digits or the decoded bytes are not UTF-8. Nothing else is changed (`+` stays
/// `+`: that is form encoding, for query strings only).
pub fn decode(raw: &str) -> Option<Cow<'_, str>> {
    let bytes = raw.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_decode_str(raw).decode_utf8().ok()
}

/// `value` as one path segment: every byte outside the unreserved set percent-encoded
/// (UTF-8), so `/` or `%` in it can never change the path's meaning.
pub fn segment(value: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(value, SEGMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_the_rest_is_kept() {
        assert_eq!(decode("a%20b%25c").as_deref(), Some("a b%c"));
        assert_eq!(decode("SKU%3a42").as_deref(), Some("SKU:42"));
        assert_eq!(decode("plain+text").as_deref(), Some("plain+text"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Some("caf\u{e9}"));
        assert_eq!(decode("").as_deref(), Some(""));
        assert!(matches!(decode("SKU-42"), Some(Cow::Borrowed("SKU-42"))));
    }

    #[test]
    fn malformed_escapes_and_non_utf8_are_refused() {
        for bad in [
            "%", "%2", "%+1", "%ZZ", "a%G0", "%%41", "%C3", "caf%E9", "%FF%FE",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_segment_keeps_unreserved_characters_and_escapes_the_rest() {
        assert_eq!(segment("SKU-4.2_x~").to_string(), "SKU-4.2_x~");
        assert_eq!(segment("SKU:42").to_string(), "SKU%3A42");
        assert_eq!(segment("a/b%c d").to_string(), "a%2Fb%25c%20d");
        assert_eq!(segment("caf\u{e9}").to_string(), "caf%C3%A9");
    }

    #[test]
    fn decoding_an_encoded_segment_gives_the_value_back() {
        for value in ["SKU:42", "a/b", "50%", "caf\u{e9}", "x y+z", "..", ""] {
            let encoded = segment(value).to_string();
            assert_eq!(decode(&encoded).as_deref(), Some(value), "{encoded}");
        }
    }
}
