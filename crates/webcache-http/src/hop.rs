//! Hop-by-hop header fields (RFC 9110 §7.6.1): the one home of the rule, used both on the way in
//! (before anything reads a request's headers, so a field a client lists in `Connection` can
//! neither vary a key nor reach the origin) and on what is forwarded or stored.

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` is hop-by-hop whatever the message says: the fixed list of RFC 9110 §7.6.1
/// plus the legacy `Keep-Alive` and `Proxy-Connection`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes the hop-by-hop fields of a message: the fixed ones and those named in `Connection`.
/// `Host` is never removed, whatever `Connection` names: the site a request is for is decided
/// once (see [`crate::host`]) and must reach the origin as the key saw it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
            .filter(|n| *n != HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn names_in_connection_go_but_host_stays() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("a.example"));
        h.insert("accept-language", HeaderValue::from_static("de-DE"));
        h.insert(
            CONNECTION,
            HeaderValue::from_static("close, Host,Accept-Language"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[HOST], "a.example");
    }
}
