//! The one host a request is for (RFC 9112 §3.2.2), decided once, before anything reads it.
//!
//! A cache that keys a page by one host while the origin answers for another can be made to
//! store an attacker's page under a victim's name. So the layer decides the effective host of
//! every request here and rewrites the request to say only that: an absolute-form request
//! target (`GET http://a.example/p`) or an HTTP/2 `:authority` wins over `Host` and replaces
//! it; a request with two `Host` fields, an HTTP/1.1 request without one, or a host that is not
//! a valid authority is refused. Both the key and what the inner service (the origin) sees then
//! read the same `Host`.

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Uri, Version};

/// Why a request's host is refused (answered with 400, never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostRefusal {
    /// More than one `Host` field.
    Duplicate,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    Missing,
    /// A host that is not a valid `host[:port]` (or carries user information).
    Invalid,
    /// A host outside the configured allow-list.
    NotAllowed,
}

impl HostRefusal {
    /// The body of the 400 answer: what is wrong, in words.
    pub(crate) fn message(self) -> &'static str {
        match self {
            HostRefusal::Duplicate => "bad request: more than one Host header\n",
            HostRefusal::Missing => "bad request: an HTTP/1.1 request needs a Host header\n",
            HostRefusal::Invalid => "bad request: the Host header is not a valid host[:port]\n",
            HostRefusal::NotAllowed => "bad request: this server does not answer for that host\n",
        }
    }
}

/// The hosts a layer answers for, as Django's `ALLOWED_HOSTS`: `example.com` (exactly that
/// name), `.example.com` (the domain and every subdomain), `*` (any). Ports are ignored and
/// names compare without case. Empty means any host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub(crate) fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        AllowedHosts(
            patterns
                .into_iter()
                .map(|p| p.as_ref().trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    fn allows(&self, host: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|pattern| {
            pattern == "*"
                || *pattern == host
                || pattern
                    .strip_prefix('.')
                    .is_some_and(|domain| host == domain || host.ends_with(pattern.as_str()))
        })
    }
}

/// Decides the effective host of a request and rewrites `uri`'s authority and `Host` to agree:
/// afterwards the request has exactly one `Host` (unless it is an HTTP/1.0 request without
/// one), equal to its URI's authority when the URI has one.
pub(crate) fn settle(
    version: Version,
    uri: &Uri,
    headers: &mut HeaderMap,
    allowed: &AllowedHosts,
) -> Result<(), HostRefusal> {
    let mut fields = headers.get_all(HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(HostRefusal::Duplicate);
    }
    match (uri.authority(), field) {
        // The request target names the site: it wins, and `Host` is made to say the same.
        (Some(authority), _) => {
            if authority.as_str().contains('@') || authority.host().is_empty() {
                return Err(HostRefusal::Invalid);
            }
            if !allowed.allows(authority.host()) {
                return Err(HostRefusal::NotAllowed);
            }
            if field.map(HeaderValue::as_bytes) != Some(authority.as_str().as_bytes()) {
                let value =
                    HeaderValue::from_str(authority.as_str()).map_err(|_| HostRefusal::Invalid)?;
                headers.insert(HOST, value);
            }
            Ok(())
        }
        // The common case, checked without copying: `Host` stays as it is.
        (None, Some(value)) => {
            let host = host_of(value.as_bytes()).ok_or(HostRefusal::Invalid)?;
            if allowed.allows(host) {
                Ok(())
            } else {
                Err(HostRefusal::NotAllowed)
            }
        }
        (None, None) if version == Version::HTTP_10 || version == Version::HTTP_09 => Ok(()),
        (None, None) => Err(HostRefusal::Missing),
    }
}

/// The host of a `Host` value of the form `host[:port]` (RFC 9110 §7.2: a reg-name or an IP
/// literal, then an optional port of digits), or `None` when it has another form (user
/// information, a path, a space, a percent sign, a non-ASCII byte...).
fn host_of(value: &[u8]) -> Option<&str> {
    let (host, port) = if value.first() == Some(&b'[') {
        let end = value.iter().position(|b| *b == b']')?;
        let literal = &value[1..end];
        let literal_ok = !literal.is_empty()
            && literal
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b":.".contains(b));
        if !literal_ok {
            return None;
        }
        let (host, rest) = value.split_at(end + 1);
        let port = match rest {
            [] => rest,
            [b':', port @ ..] => port,
            _ => return None,
        };
        (host, port)
    } else {
        let (host, port) = match value.iter().rposition(|b| *b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &value[value.len()..]),
        };
        let reg_name_ok = !host.is_empty()
            && host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(b));
        if !reg_name_ok {
            return None;
        }
        (host, port)
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle_one(
        version: Version,
        uri: &str,
        hosts: &[&str],
    ) -> (Result<(), HostRefusal>, HeaderMap) {
        let mut h = HeaderMap::new();
        for host in hosts {
            h.append(HOST, HeaderValue::from_str(host).unwrap());
        }
        let uri: Uri = uri.parse().unwrap();
        let result = settle(version, &uri, &mut h, &AllowedHosts::default());
        (result, h)
    }

    #[test]
    fn the_absolute_form_replaces_host() {
        let (r, h) = settle_one(
            Version::HTTP_11,
            "http://victim.example/p",
            &["attacker.example"],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            h.get_all(HOST).iter().collect::<Vec<_>>(),
            ["victim.example"]
        );
    }

    #[test]
    fn duplicate_missing_and_invalid_hosts_are_refused() {
        let two = settle_one(Version::HTTP_11, "/p", &["a.example", "b.example"]).0;
        assert_eq!(two, Err(HostRefusal::Duplicate));
        assert_eq!(
            settle_one(Version::HTTP_11, "/p", &[]).0,
            Err(HostRefusal::Missing)
        );
        assert_eq!(settle_one(Version::HTTP_10, "/p", &[]).0, Ok(()));
        for bad in ["a b", "user@a.example", "a.example/x", ""] {
            assert_eq!(
                settle_one(Version::HTTP_11, "/p", &[bad]).0,
                Err(HostRefusal::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_allow_list_follows_djangos_rules() {
        let allowed = AllowedHosts::new([".example.com", "other.org"]);
        for ok in ["example.com", "www.example.com", "OTHER.org", "other.org."] {
            assert!(allowed.allows(ok), "{ok}");
        }
        for no in ["evil.com", "badexample.com", "sub.other.org"] {
            assert!(!allowed.allows(no), "{no}");
        }
        assert!(AllowedHosts::new(["*"]).allows("anything"));
        assert!(AllowedHosts::default().allows("anything"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Arbitrary `Host` bytes never panic, and whatever is accepted is a valid authority
        /// without user information (so the key and the origin read the same site).
        #[test]
        fn host_values_never_panic_and_accepted_ones_are_authorities(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            if let Some(host) = host_of(&value) {
                let authority = http::uri::Authority::try_from(&value[..]);
                proptest::prop_assert!(authority.is_ok(), "{:?}", value);
                proptest::prop_assert!(!host.is_empty() && !value.contains(&b'@'));
            }
        }
    }
}
