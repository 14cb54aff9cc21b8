//! What a page's key is made of, as the layer is told: which query parameters count and in
//! what order, and what else of the request (headers, cookies, a computed value) is part of it;
//! and the predicates that decide per request and per response whether the cache is used.
//!
//! The key itself is [`crate::key`]'s: `{prefix}.GET.{hash}`; these rules choose what is hashed.
//! With the defaults, a URL without tracking parameters keys exactly as before.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, COOKIE};
use http::request::Parts;
use http::{HeaderMap, StatusCode, Uri};

use crate::key;

/// Query parameters left out of page keys by default: tracking parameters that never change a
/// page. A trailing `*` matches any name with that prefix.
pub const DEFAULT_IGNORED_QUERY_PARAMS: &[&str] = &[
    "utm_*",
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "yclid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "igshid",
    "twclid",
    "ttclid",
    "li_fat_id",
];

/// A value computed from the request and added to its page's key (a logged-in user's id, a
/// tenant); `None` adds nothing.
pub type KeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;
/// A predicate on the request: `true` skips the cache (the request is passed through, `BYPASS`).
pub type SkipFn = dyn Fn(&Parts) -> bool + Send + Sync;
/// A predicate on the response: `false` keeps it out of the cache.
pub type StoreFn = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

/// Which query parameters are part of the key.
#[derive(Debug, Clone)]
pub(crate) enum QueryParams {
    /// All but these (names, or prefixes ending in `*`).
    AllBut(Vec<String>),
    /// Only these, in any order they come.
    Only(Vec<String>),
}

/// The layer's key rules and predicates.
#[derive(Clone)]
pub(crate) struct KeyRules {
    pub(crate) prefix: String,
    pub(crate) query: QueryParams,
    pub(crate) sort_query: bool,
    pub(crate) headers: Vec<HeaderName>,
    pub(crate) cookies: Vec<String>,
    pub(crate) computed: Option<Arc<KeyFn>>,
    pub(crate) skip: Option<Arc<SkipFn>>,
    pub(crate) store: Option<Arc<StoreFn>>,
    /// Statuses the Django policy stores as it stores 200 (it stores only 200 otherwise).
    pub(crate) statuses: Vec<StatusCode>,
}

impl fmt::Debug for KeyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRules")
            .field("prefix", &self.prefix)
            .field("query", &self.query)
            .field("sort_query", &self.sort_query)
            .field("headers", &self.headers)
            .field("cookies", &self.cookies)
            .field("computed", &self.computed.is_some())
            .field("skip", &self.skip.is_some())
            .field("store", &self.store.is_some())
            .field("statuses", &self.statuses)
            .finish()
    }
}

impl KeyRules {
    pub(crate) fn new(prefix: String) -> Self {
        KeyRules {
            prefix,
            query: QueryParams::AllBut(
                DEFAULT_IGNORED_QUERY_PARAMS
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect(),
            ),
            sort_query: false,
            headers: Vec::new(),
            cookies: Vec::new(),
            computed: None,
            skip: None,
            store: None,
            statuses: Vec::new(),
        }
    }

    /// Whether keys need the request's extensions (a computed value): then the engine hands
    /// [`primary_key`](Self::primary_key) the request's parts.
    pub(crate) fn needs_parts(&self) -> bool {
        self.computed.is_some() || self.skip.is_some()
    }

    /// The key of the request's page, given its URI and headers (after the host was settled and
    /// hop-by-hop fields removed) and, when [`needs_parts`](Self::needs_parts), its parts.
    pub(crate) fn primary_key(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        parts: Option<&Parts>,
    ) -> String {
        let query = uri.query().and_then(|q| self.canonical_query(q));
        let mut extra: Vec<Vec<u8>> = Vec::new();
        for name in &self.headers {
            let mut part = name.as_str().as_bytes().to_vec();
            for value in headers.get_all(name) {
                part.push(0);
                part.extend_from_slice(value.as_bytes());
            }
            extra.push(part);
        }
        for name in &self.cookies {
            let mut part = format!("cookie:{name}").into_bytes();
            if let Some(value) = cookie(headers, name) {
                part.push(0);
                part.extend_from_slice(value.as_bytes());
            }
            extra.push(part);
        }
        if let (Some(computed), Some(parts)) = (&self.computed, parts) {
            let mut part = b"computed".to_vec();
            if let Some(value) = computed(parts) {
                part.push(0);
                part.extend_from_slice(value.as_bytes());
            }
            extra.push(part);
        }
        key::primary_key_with(&self.prefix, uri, headers, query.as_deref(), &extra)
    }

    /// The query as it is keyed: `None` when it keys as given (the common case: no copy).
    fn canonical_query(&self, query: &str) -> Option<String> {
        let keep = |param: &str| {
            let name = param.split_once('=').map_or(param, |(n, _)| n);
            match &self.query {
                QueryParams::AllBut(ignored) => !ignored.iter().any(|p| matches(p, name)),
                QueryParams::Only(names) => names.iter().any(|n| n == name),
            }
        };
        // Kept as given when nothing is left out; empty parameters (`/x?`, `a=1&&b=2`) are
        // left out like ignored ones, so `/x?&utm_source=y` keys as `/x`.
        if !self.sort_query && query.split('&').all(|p| !p.is_empty() && keep(p)) {
            return None;
        }
        let params = query.split('&').filter(|p| !p.is_empty());
        let mut kept: Vec<&str> = params.filter(|p| keep(p)).collect();
        if self.sort_query {
            kept.sort_unstable();
        }
        Some(kept.join("&"))
    }

    /// Whether the Django policy should treat `status` as it treats 200.
    pub(crate) fn stores_status(&self, status: StatusCode) -> bool {
        self.statuses.contains(&status)
    }
}

/// A name against a pattern: equal, or a prefix when the pattern ends in `*`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(rules: &KeyRules, uri: &str, headers: &[(&str, &str)]) -> String {
        let mut map = HeaderMap::new();
        map.insert(http::header::HOST, HeaderValue::from_static("shop.example"));
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        rules.primary_key(&uri.parse().unwrap(), &map, None)
    }

    #[test]
    fn tracking_parameters_are_left_out_by_default_and_other_keys_are_unchanged() {
        let rules = KeyRules::new("p".into());
        let plain = key(&rules, "/a?page=2", &[]);
        assert_eq!(
            plain,
            key(&rules, "/a?page=2&utm_source=news&fbclid=x", &[])
        );
        assert_eq!(plain, key(&rules, "/a?utm_campaign=y&page=2", &[]));
        assert_ne!(plain, key(&rules, "/a?page=3", &[]));
        assert_ne!(
            plain,
            key(&rules, "/a?page=2&sort=name", &[]),
            "order matters by default"
        );
        // Without tracking parameters a key is what it always was.
        let mut map = HeaderMap::new();
        map.insert(http::header::HOST, HeaderValue::from_static("shop.example"));
        assert_eq!(
            plain,
            key::primary_key("p", &"/a?page=2".parse().unwrap(), &map)
        );
    }

    #[test]
    fn sorting_only_listed_parameters_headers_and_cookies() {
        let mut rules = KeyRules::new("p".into());
        rules.sort_query = true;
        assert_eq!(
            key(&rules, "/a?b=1&a=2", &[]),
            key(&rules, "/a?a=2&b=1", &[])
        );
        rules.query = QueryParams::Only(vec!["page".into()]);
        assert_eq!(
            key(&rules, "/a?page=2&x=1", &[]),
            key(&rules, "/a?y=3&page=2", &[])
        );
        rules.headers = vec![HeaderName::from_static("x-tenant")];
        rules.cookies = vec!["lang".into()];
        let base = key(
            &rules,
            "/a",
            &[("x-tenant", "a"), ("cookie", "lang=fr; sid=1")],
        );
        assert_eq!(
            base,
            key(
                &rules,
                "/a",
                &[("x-tenant", "a"), ("cookie", "sid=2; lang=fr")]
            )
        );
        assert_ne!(
            base,
            key(&rules, "/a", &[("x-tenant", "b"), ("cookie", "lang=fr")])
        );
        assert_ne!(
            base,
            key(&rules, "/a", &[("x-tenant", "a"), ("cookie", "lang=de")])
        );
        assert_ne!(base, key(&rules, "/a", &[("x-tenant", "a")]));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any query keys without a panic; ignored parameters never change it; with
            /// sorting, the order of parameters never does.
            #[test]
            fn queries(params in prop::collection::vec("[a-z_]{0,6}(=[a-z0-9]{0,4})?", 0..6), utm in "[a-z]{0,5}") {
                let mut rules = KeyRules::new("p".into());
                let query = params.join("&");
                let base = key(&rules, &format!("/x?{query}"), &[]);
                let with = key(&rules, &format!("/x?{query}&utm_{utm}=1"), &[]);
                prop_assert_eq!(&base, &with);
                rules.sort_query = true;
                let mut reversed = params.clone();
                reversed.reverse();
                prop_assert_eq!(
                    key(&rules, &format!("/x?{query}"), &[]),
                    key(&rules, &format!("/x?{}", reversed.join("&")), &[])
                );
            }
        }
    }
}
