//! Cache keys for pages.
//!
//! A page is found in at most two steps, and usually one:
//!
//! ```text
//! {prefix}.GET.{url}          the page itself when it does not vary, or a small "vary" entry
//!                             listing the request headers it varies on
//! {prefix}.GET.{url}.{values} a page that varies, keyed by the values of those headers
//! ```
//!
//! `{url}` is a hash of scheme, host, path and query, `{values}` a hash of the varied header
//! names and the request's values for them (an absent header and an empty one hash
//! differently). HEAD uses the GET keys. Django learns the vary list in a separate entry that
//! every lookup reads first (two round trips per hit); here a process remembers the vary list
//! of each URL it has seen vary (see `VaryMemo`), so a hit costs one backend read, and a page
//! that does not vary is always one read. Every stored page also records the vary names and
//! values it was stored for, and is served only to a request with the same values, so a stale
//! memory can cost an extra read but never serves the wrong variant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, Uri};
use sha2::{Digest, Sha256};

/// The key of a URL's page (or vary entry): `{prefix}.GET.{hash of scheme, host, path, query}`.
///
/// The host is the request's `Host`, which [`crate::host::settle`] has made the one effective
/// host of the request (the one the inner service sees too) before any key is computed.
#[cfg(test)]
pub(crate) fn primary_key(prefix: &str, uri: &Uri, headers: &HeaderMap) -> String {
    let host = headers.get(HOST).map_or(&b""[..], |h| h.as_bytes());
    primary_key_for_host(prefix, uri, host)
}

/// [`primary_key`] for a request to `host`.
fn primary_key_for_host(prefix: &str, uri: &Uri, host: &[u8]) -> String {
    hashed_key(prefix, uri, host, None, &[])
}

/// [`primary_key`] with the query keyed as `query` (the layer's rules: parameters left out or
/// sorted; `None`: as given) and `extra` parts of the request hashed after the URL (chosen
/// headers, cookies, a computed value). With neither, the key is [`primary_key`]'s.
pub(crate) fn primary_key_with(
    prefix: &str,
    uri: &Uri,
    headers: &HeaderMap,
    query: Option<&str>,
    extra: &[Vec<u8>],
) -> String {
    let host = headers.get(HOST).map_or(&b""[..], |h| h.as_bytes());
    hashed_key(prefix, uri, host, query, extra)
}

fn hashed_key(
    prefix: &str,
    uri: &Uri,
    host: &[u8],
    query: Option<&str>,
    extra: &[Vec<u8>],
) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let rewritten;
    let path = match query {
        None => uri.path_and_query().map_or("/", |pq| pq.as_str()),
        Some("") => uri.path(),
        Some(query) => {
            rewritten = format!("{}?{query}", uri.path());
            &rewritten
        }
    };
    let mut hasher = Sha256::new();
    hasher.update((scheme.len() as u64).to_le_bytes());
    hasher.update(scheme);
    // Host names are case-insensitive: `Example.com` and `example.com` are one site. Hashed
    // lowercased through a buffer on the stack: the same digest as the lowercased copy.
    hasher.update((host.len() as u64).to_le_bytes());
    let mut lower = [0u8; 64];
    for chunk in host.chunks(lower.len()) {
        let lower = &mut lower[..chunk.len()];
        lower.copy_from_slice(chunk);
        lower.make_ascii_lowercase();
        hasher.update(&*lower);
    }
    for part in [path.as_bytes()]
        .into_iter()
        .chain(extra.iter().map(Vec::as_slice))
    {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let mut key = String::with_capacity(prefix.len() + 5 + 32);
    key.push_str(prefix);
    key.push_str(".GET.");
    push_hex(&mut key, &hasher.finalize()[..16]);
    key
}

/// Where the shared cache keeps the answers to ranged requests of a URL (RFC 9111 §3.3: a 206
/// is stored apart from the complete page, and reused for the same `Range`): `{primary}.range`,
/// whose pages vary on `Range` (so the vary machinery finds and invalidates them). Never a
/// variant key, which ends in hex digits.
pub(crate) fn range_primary(primary: &str) -> String {
    let mut key = String::with_capacity(primary.len() + 6);
    key.push_str(primary);
    key.push_str(".range");
    key
}

/// The primary key of the URL a `Location` or `Content-Location` value names, when it is on
/// the request's own host (RFC 9111 §4.4: only those are invalidated, so a response cannot
/// make the cache drop another site's pages); `None` for another host or a value that is not
/// a URI reference. Relative references are resolved against `request_uri`'s path (dot
/// segments are not removed: such a key matches no page, which only means nothing is dropped).
pub(crate) fn same_host_key(
    prefix: &str,
    value: &[u8],
    request_uri: &Uri,
    host: &[u8],
) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.trim();
    // The fragment is not part of what is requested.
    let text = text.split('#').next().unwrap_or_default();
    let (authority, path): (Option<&str>, String) = if let Some((scheme, rest)) =
        text.split_once("://").filter(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }) {
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        (Some(&rest[..end]), rest[end..].to_owned())
    } else if let Some(rest) = text.strip_prefix("//") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        (Some(&rest[..end]), rest[end..].to_owned())
    } else if text.starts_with('/') {
        (None, text.to_owned())
    } else if text.is_empty() || text.contains(':') {
        return None;
    } else {
        let base = request_uri.path();
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        (None, format!("{dir}{text}"))
    };
    if let Some(authority) = authority {
        if !authority.as_bytes().eq_ignore_ascii_case(host) {
            return None;
        }
    }
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    let uri = Uri::builder().path_and_query(path).build().ok()?;
    Some(primary_key_for_host(prefix, &uri, host))
}

/// The request's values for the varied headers, in the order of `names`: several lines of one
/// header are joined with `", "`; an absent header is `None`.
///
/// RFC 9111 §4.1 lets a cache normalise what it compares when the semantics are identical.
/// The list-valued content-negotiation fields (`Accept`, `Accept-Charset`, `Accept-Encoding`,
/// `Accept-Language`) are read as lists: whitespace around `,`, `;` and `=` and empty elements
/// do not count, and in the last three (whose values are case-insensitive tokens and language
/// tags) neither does case. Quoted strings are kept as they are. Other fields are compared
/// as sent.
pub(crate) fn vary_values(names: &[HeaderName], headers: &HeaderMap) -> Vec<Option<Bytes>> {
    names
        .iter()
        .map(|name| {
            let mut values = headers.get_all(name).iter();
            let first = values.next()?;
            let mut joined = Vec::with_capacity(first.len());
            match list_field(name) {
                Some(fold_case) => {
                    normalise_list(&mut joined, first.as_bytes(), fold_case);
                    for more in values {
                        normalise_list(&mut joined, more.as_bytes(), fold_case);
                    }
                    if joined.ends_with(b", ") {
                        joined.truncate(joined.len() - 2);
                    }
                }
                None => {
                    joined.extend_from_slice(first.as_bytes());
                    for more in values {
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(more.as_bytes());
                    }
                }
            }
            Some(Bytes::from(joined))
        })
        .collect()
}

/// `Some(fold_case)` for the fields [`vary_values`] reads as lists.
fn list_field(name: &HeaderName) -> Option<bool> {
    use http::header::{ACCEPT, ACCEPT_CHARSET, ACCEPT_ENCODING, ACCEPT_LANGUAGE};
    if name == ACCEPT {
        Some(false)
    } else if name == ACCEPT_ENCODING || name == ACCEPT_LANGUAGE || name == ACCEPT_CHARSET {
        Some(true)
    } else {
        None
    }
}

/// Appends the elements of the list `line` to `out` (after those already there), written as
/// `a, b;q=0.5`: no whitespace around separators, no empty elements, lower-cased outside
/// quoted strings when `fold_case`.
fn normalise_list(out: &mut Vec<u8>, line: &[u8], fold_case: bool) {
    let mut quoted = false;
    let mut escaped = false;
    // Whitespace seen outside quotes and not yet written: written only between two words.
    let mut space = false;
    for &b in line {
        if quoted {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' => space = true,
            b',' => {
                space = false;
                if !out.is_empty() && !out.ends_with(b", ") {
                    out.extend_from_slice(b", ");
                }
            }
            b';' | b'=' => {
                space = false;
                out.push(b);
            }
            _ => {
                let after_separator = out.is_empty()
                    || out.ends_with(b", ")
                    || out.ends_with(b";")
                    || out.ends_with(b"=");
                if space && !after_separator {
                    out.push(b' ');
                }
                space = false;
                if b == b'"' {
                    quoted = true;
                }
                out.push(if fold_case { b.to_ascii_lowercase() } else { b });
            }
        }
    }
    // A new line (or the end) closes the element: the next line's first element follows ", ".
    if !out.is_empty() && !out.ends_with(b", ") {
        out.extend_from_slice(b", ");
    }
}

/// The id of one variant of a page: a hash of the varied names and the request's values.
pub(crate) fn variant_id(names: &[HeaderName], values: &[Option<Bytes>]) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in names.iter().zip(values) {
        hasher.update((name.as_str().len() as u64).to_le_bytes());
        hasher.update(name.as_str());
        match value {
            None => hasher.update([0u8]),
            Some(v) => {
                hasher.update([1u8]);
                hasher.update((v.len() as u64).to_le_bytes());
                hasher.update(v);
            }
        }
    }
    let mut id = String::with_capacity(32);
    push_hex(&mut id, &hasher.finalize()[..16]);
    id
}

/// The key of one variant of a page: `{primary}.{variant id}`.
pub(crate) fn variant_key(primary: &str, id: &str) -> String {
    let mut key = String::with_capacity(primary.len() + 1 + id.len());
    key.push_str(primary);
    key.push('.');
    key.push_str(id);
    key
}

/// The key of the variant of `primary` that `request` asks for, when its pages vary on `names`.
pub(crate) fn variant_key_for(primary: &str, names: &[HeaderName], request: &HeaderMap) -> String {
    variant_key(primary, &variant_id(names, &vary_values(names, request)))
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The vary lists of URLs whose pages vary, as last seen by this process. Bounded: when full
/// it is emptied, which costs one extra backend read per varying URL afterwards.
#[derive(Debug, Default)]
pub(crate) struct VaryMemo {
    map: RwLock<HashMap<String, Arc<[HeaderName]>>>,
    /// Whether the map has entries: read without the lock, so that a site whose pages do not
    /// vary never touches the lock's shared state on a hit (cores would fight over it).
    used: AtomicBool,
}

const VARY_MEMO_MAX: usize = 10_000;

impl VaryMemo {
    pub(crate) fn get(&self, primary: &str) -> Option<Arc<[HeaderName]>> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(primary).cloned()
    }

    pub(crate) fn remember(&self, primary: &str, names: &[HeaderName]) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if names.is_empty() {
            map.remove(primary);
            self.used.store(!map.is_empty(), Ordering::Relaxed);
            return;
        }
        if map.get(primary).is_some_and(|old| **old == *names) {
            return;
        }
        if map.len() >= VARY_MEMO_MAX {
            map.clear();
        }
        map.insert(primary.to_owned(), names.into());
        self.used.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn absent_and_empty_headers_differ() {
        let names = [HeaderName::from_static("accept-language")];
        let absent = vary_values(&names, &HeaderMap::new());
        let mut h = HeaderMap::new();
        h.insert("accept-language", HeaderValue::from_static(""));
        let empty = vary_values(&names, &h);
        assert_ne!(variant_id(&names, &absent), variant_id(&names, &empty));
    }

    fn key_of(uri: &str, host: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        primary_key("views.cache_page", &uri.parse().unwrap(), &h)
    }

    #[test]
    fn query_and_host_are_part_of_the_key() {
        let a = key_of("/x?q=1", "a");
        let b = key_of("/x?q=2", "a");
        let c = key_of("/x?q=1", "b");
        let d = key_of("https://a/x?q=1", "a");
        assert!(a.starts_with("views.cache_page.GET."));
        assert_eq!(a.len(), "views.cache_page.GET.".len() + 32);
        assert!(a != b && a != c && a != d);
        assert_eq!(a, key_of("/x?q=1", "A"), "host case does not matter");
    }

    fn accept(name: &'static str, lines: &[&str]) -> Option<Bytes> {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(name, HeaderValue::from_str(line).unwrap());
        }
        vary_values(&[HeaderName::from_static(name)], &h).remove(0)
    }

    #[test]
    fn accept_lists_are_normalised_other_fields_are_not() {
        let canonical = accept("accept-language", &["en-us, fr;q=0.5"]);
        assert_eq!(canonical.as_deref(), Some(&b"en-us, fr;q=0.5"[..]));
        for same in [
            &["en-US ,fr ; q=0.5"][..],
            &[" , EN-us,,\tfr;q = 0.5 ,"],
            &["en-us", "fr;q=0.5"],
        ] {
            assert_eq!(accept("accept-language", same), canonical, "{same:?}");
        }
        assert_ne!(accept("accept-language", &["en-us, fr;q=0.6"]), canonical);
        // Accept keeps case (parameter values may be case-sensitive); quotes are kept whole.
        assert_ne!(
            accept("accept", &["Text/HTML"]),
            accept("accept", &["text/html"])
        );
        assert_eq!(
            accept("accept", &["text/html ;a=\"x , Y\""]).as_deref(),
            Some(&b"text/html;a=\"x , Y\""[..])
        );
        // Other fields are compared as sent.
        assert_ne!(
            accept("cookie", &["a=1; b=2"]),
            accept("cookie", &["a=1;b=2"])
        );
        assert_eq!(accept("cookie", &["a", "b"]).as_deref(), Some(&b"a, b"[..]));
    }

    #[test]
    fn locations_name_keys_on_the_same_host_only() {
        let uri: Uri = "/dir/form?x=1".parse().unwrap();
        let key = |value: &str| same_host_key("p", value.as_bytes(), &uri, b"Site.example:8080");
        let of = |path: &str| key_of(path, "site.example:8080").replace("views.cache_page", "p");
        assert_eq!(key("/a?b=1"), Some(of("/a?b=1")));
        assert_eq!(key("item"), Some(of("/dir/item")));
        assert_eq!(
            key("http://SITE.example:8080/a?b=1#top"),
            Some(of("/a?b=1"))
        );
        assert_eq!(key("https://site.example:8080"), Some(of("/")));
        assert_eq!(key("//site.example:8080/x"), Some(of("/x")));
        for elsewhere in [
            "http://other.example/a",
            "http://site.example/a",
            "//other.example/a",
            "mailto:a@site.example",
            "ftp://site.example:8080/a",
            "",
        ] {
            assert_eq!(key(elsewhere), None, "{elsewhere}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any bytes as a Location: a key or none, never a panic; an absolute URL names a key
        /// only on the request's own host.
        #[test]
        fn locations_never_panic_and_never_leave_the_host(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60),
            host in "[a-z]{1,8}\\.example",
            path in "/([a-z][a-z/?=]{0,12})?",
        ) {
            let uri: Uri = "/base/page".parse().unwrap();
            let _ = same_host_key("p", &value, &uri, b"site.example");
            let other = format!("http://{host}{path}");
            let key = same_host_key("p", other.as_bytes(), &uri, b"site.example");
            proptest::prop_assert_eq!(key.is_some(), host == "site.example");
            let on_host = format!("http://site.example{path}");
            let absolute = same_host_key("p", on_host.as_bytes(), &uri, b"site.example");
            let relative = same_host_key("p", path.as_bytes(), &uri, b"site.example");
            proptest::prop_assert_eq!(absolute, relative);
        }

        /// Any bytes in an Accept-Language: a value, never a panic; spaces around separators
        /// and case never change it.
        #[test]
        fn accept_normalisation_ignores_spacing_and_case(
            line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            tags in proptest::collection::vec("[a-zA-Z]{1,8}(-[a-zA-Z]{1,8})?", 1..4),
            spaces in proptest::collection::vec(0usize..3, 8),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&line) {
                h.insert("accept-language", v);
                let _ = vary_values(&[HeaderName::from_static("accept-language")], &h);
            }
            let tight = tags.join(",");
            let pad = |i: usize| " ".repeat(spaces[i % spaces.len()]);
            let loose: String = tags
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{}{}{}", pad(i), t.to_ascii_uppercase(), pad(i + 1)))
                .collect::<Vec<_>>()
                .join(",");
            proptest::prop_assert_eq!(
                accept("accept-language", &[tight.as_str()]),
                accept("accept-language", &[loose.trim()])
            );
        }
        /// Keys are built from arbitrary request bytes without panicking, have a fixed shape,
        /// and two different (host, path) pairs never share a key.
        #[test]
        fn keys_from_arbitrary_requests(
            host in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            path in "/[!-~]{0,40}",
            other in "/[!-~]{0,40}",
            values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)), 0..4),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&host) {
                h.insert(HOST, v);
            }
            let Ok(uri) = path.parse::<Uri>() else { return Ok(()) };
            let key = primary_key("p", &uri, &h);
            proptest::prop_assert_eq!(key.len(), "p.GET.".len() + 32);
            if let Ok(uri2) = other.parse::<Uri>() {
                if uri2.path_and_query() != uri.path_and_query() {
                    proptest::prop_assert_ne!(primary_key("p", &uri2, &h), key.clone());
                }
            }
            let names: Vec<HeaderName> = (0..values.len()).map(|i| HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap()).collect();
            let values: Vec<Option<Bytes>> = values.into_iter().map(|v| v.map(Bytes::from)).collect();
            proptest::prop_assert_eq!(variant_id(&names, &values).len(), 32);
        }
    }
}

#[cfg(test)]
mod stable_keys {
    use super::*;

    /// Keys are shared by processes and outlive releases (Redis, memcached, a database): the
    /// key of a URL must not change when the code computing it does. A host longer than the
    /// buffer it is lowercased through, in mixed case.
    #[test]
    fn a_url_keeps_its_key() {
        let host = format!("WWW.{}.Example.COM", "Sub".repeat(30));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, host.parse().unwrap());
        let uri: Uri = "/Path/Page?b=2&a=1".parse().unwrap();
        let key = primary_key("views.cache_page", &uri, &headers);
        assert_eq!(key, "views.cache_page.GET.0e825db1c34be8fa5b763643ab081fe0");
    }
}
