//! Header names as stored: a name found in [`KNOWN`] is written as its one-byte number, any
//! other name as its length and bytes.
//!
//! A hit decodes every stored header name. Parsing a name's text (`HeaderName::from_bytes`:
//! a match over the standard names, and an allocation for any other name) was a fifth of the
//! decoding; a number is an index into names made once, whose clones copy nothing.
//!
//! The numbers are part of the stored format: [`KNOWN`] only ever grows at its end.

use std::sync::LazyLock;

use bytes::{BufMut, BytesMut};
use http::HeaderName;

/// The names stored as numbers, number `i + 1` for `KNOWN[i]` (0 introduces a name in full):
/// every standard name of the `http` crate, then common names it does not know. Append only.
const KNOWN: [&str; 101] = [
    // The standard names of `http` 1.x, in its order.
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-request-headers",
    "access-control-request-method",
    "age",
    "allow",
    "alt-svc",
    "authorization",
    "cache-control",
    "cache-status",
    "cdn-cache-control",
    "connection",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-security-policy",
    "content-security-policy-report-only",
    "content-type",
    "cookie",
    "dnt",
    "date",
    "etag",
    "expect",
    "expires",
    "forwarded",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "origin",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "public-key-pins",
    "public-key-pins-report-only",
    "range",
    "referer",
    "referrer-policy",
    "refresh",
    "retry-after",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-key",
    "sec-websocket-protocol",
    "sec-websocket-version",
    "server",
    "set-cookie",
    "strict-transport-security",
    "te",
    "trailer",
    "transfer-encoding",
    "user-agent",
    "upgrade",
    "upgrade-insecure-requests",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "x-content-type-options",
    "x-dns-prefetch-control",
    "x-frame-options",
    "x-xss-protection",
    // Common response fields `http` has no constant for.
    "permissions-policy",
    "cross-origin-opener-policy",
    "cross-origin-embedder-policy",
    "cross-origin-resource-policy",
    "timing-allow-origin",
    "server-timing",
    "report-to",
    "reporting-endpoints",
    "nel",
    "x-powered-by",
    "x-robots-tag",
    "x-ua-compatible",
    "x-request-id",
    "surrogate-control",
    "surrogate-key",
    "cache-tag",
    "accept-ch",
    "content-digest",
    "keep-alive",
    "x-accel-expires",
];

/// [`KNOWN`] as header names, made once: a standard name is the `http` crate's own, another a
/// static buffer, so a clone touches no reference count.
static NAMES: LazyLock<Vec<HeaderName>> =
    LazyLock::new(|| KNOWN.iter().map(|n| HeaderName::from_static(n)).collect());

/// Writes `name`: its number if it has one, else 0, its length (u16) and its bytes.
pub(super) fn put(out: &mut BytesMut, name: &HeaderName) {
    match number(name) {
        Some(number) => out.put_u8(number),
        None => {
            out.put_u8(0);
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
        }
    }
}

/// The number of a known name.
fn number(name: &HeaderName) -> Option<u8> {
    let i = NAMES.iter().position(|known| known == name)?;
    u8::try_from(i + 1).ok()
}

/// The name numbered `number` (1 and up), or `None` for a number no name has.
pub(super) fn known(number: u8) -> Option<HeaderName> {
    NAMES.get(usize::from(number).checked_sub(1)?).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_is_valid_and_listed_once() {
        assert!(KNOWN.len() < 256, "numbers are one byte, 0 taken");
        for (i, name) in KNOWN.iter().enumerate() {
            assert!(HeaderName::from_bytes(name.as_bytes()).is_ok(), "{name}");
            assert_eq!(
                KNOWN.iter().position(|n| n == name),
                Some(i),
                "{name} twice"
            );
        }
    }

    /// The numbers are stored: a change of order or a removal would read old pages' headers
    /// under other names.
    #[test]
    fn numbers_stay_what_they_were() {
        assert_eq!(known(1), Some(http::header::ACCEPT));
        assert_eq!(known(18), Some(http::header::CACHE_CONTROL));
        assert_eq!(known(25), Some(http::header::CONTENT_LENGTH));
        assert_eq!(known(30), Some(http::header::CONTENT_TYPE));
        assert_eq!(known(81), Some(http::header::X_XSS_PROTECTION));
        assert_eq!(known(82).unwrap().as_str(), "permissions-policy");
        assert_eq!(known(101).unwrap().as_str(), "x-accel-expires");
        assert_eq!(known(0), None);
        assert_eq!(known(102), None);
    }

    #[test]
    fn a_known_name_is_one_byte_and_others_are_spelled_out() {
        let mut out = BytesMut::new();
        put(&mut out, &http::header::CONTENT_TYPE);
        assert_eq!(&out[..], &[30]);
        let custom = HeaderName::from_static("x-custom");
        let mut out = BytesMut::new();
        put(&mut out, &custom);
        assert_eq!(&out[..], b"\x00\x00\x08x-custom");
    }
}
