//! Hop-by-hop header fields (RFC 9110 §7.6.1): the one home of the rule, used both on the way in
//! (before anything reads a request's headers, so a field a client lists in `Connection` can
//! neither vary a key nor reach the origin) and on what is forwarded or stored.

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fields that are hop-by-hop whatever the message says: the fixed list of RFC 9110
/// §7.6.1 plus the legacy `Keep-Alive` and `Proxy-Connection`.
const FIXED: [HeaderName; 7] = [
    CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// Whether `name` is hop-by-hop whatever the message says (see [`FIXED`]).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    FIXED.contains(name)
}

/// Removes the hop-by-hop fields of a message: the fixed ones and those named in `Connection`.
/// `Host` is never removed, whatever `Connection` names: the site a request is for is decided
/// once (see [`crate::host`]) and must reach the origin as the key saw it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (`Connection` is one of them): a look at the few names a
    // message has costs less than a removal, a hash and a probe, for each fixed name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
    for name in FIXED {
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

    proptest::proptest! {
        /// Whatever fields a message has: none of the fixed ones and none that `Connection`
        /// names (but `Host`) is left, and every other field is kept as it was.
        #[test]
        fn only_hop_by_hop_fields_go(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "host", "connection", "te", "trailer", "transfer-encoding", "upgrade",
                        "keep-alive", "proxy-connection", "accept", "x-a", "cookie",
                    ]),
                    "[a-zA-Z, -]{0,20}",
                ),
                0..8,
            ),
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in &fields {
                h.append(*name, HeaderValue::from_str(value).unwrap());
            }
            let named: Vec<HeaderName> = h
                .get_all(CONNECTION)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
                .collect();
            let before = h.clone();
            strip_hop_by_hop(&mut h);
            for name in before.keys() {
                let goes = is_hop_by_hop(name) || (named.contains(name) && name != HOST);
                if goes {
                    proptest::prop_assert!(!h.contains_key(name), "{} kept", name);
                } else {
                    let kept: Vec<_> = h.get_all(name).iter().collect();
                    let was: Vec<_> = before.get_all(name).iter().collect();
                    proptest::prop_assert_eq!(kept, was);
                }
            }
        }
    }
}
