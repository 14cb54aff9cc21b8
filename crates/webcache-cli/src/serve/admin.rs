//! The admin endpoint: runs inspection commands inside the app, for
//! `webcache keys --app http://127.0.0.1:8000` (the only way to see a locmem cache from outside).
//!
//! Anyone who can use it can read and hijack sessions and rewrite the cache, so every request
//! must pass three checks, in this order, before anything runs:
//!
//! 1. **A direct connection.** A request carrying `Forwarded`, `X-Forwarded-For`,
//!    `X-Forwarded-Host`, `X-Real-IP` or `Via` came through a proxy: refused (403). The peer's
//!    address proves nothing (behind a same-host proxy every request comes from 127.0.0.1), so
//!    it is never trusted.
//! 2. **This app's own address in `Host`** (against DNS rebinding): `localhost`, a loopback IP,
//!    or the address `serve` is bound to (any IP literal when bound to every interface), always
//!    with the port it listens on. Anything else is refused (403).
//! 3. **The token**, always, as `Authorization: Bearer TOKEN` declared hop-by-hop with
//!    `Connection: authorization` (otherwise 401). A proxy that follows RFC 9110 §7.6.1 (such
//!    as `webcache proxy`) removes a field named in `Connection`, and one that rewrites
//!    `Connection` (nginx) drops the declaration, so the token never works through a proxy.
//!    The comparison takes the same time whatever the token sent.
//!
//! `serve` prints the token and leaves it for the CLI on the same machine in a file only the user
//! can read ([`crate::token_file`]), so `--app` needs no `--token` there.
//!
//! **The dashboard in a browser.** A page cannot declare `Connection: authorization` (browsers
//! forbid scripts to set `Connection`), so the dashboard's own requests are accepted with the
//! token alone when they carry a browser's fetch metadata for a script on this very page
//! (`Sec-Fetch-Site: same-origin` and `Sec-Fetch-Mode: cors`), checks 1 and 2 applying as
//! always. What that gives up: a client that has the token and imitates those two fields is
//! not stopped by a proxy that adds no forwarding field and rewrites `Host` to this address.
//! The token is still required, and only the page, which holds no data, is served without it
//! (checks 1 and 2 only); the page takes the token from its URL's fragment (`#token=...`),
//! which browsers never send.
//!
//! The admin side also answers `GET /_webcache/metrics` (Prometheus text; `serve` also on
//! `GET /metrics`) under the same three checks, and the dashboard ([`crate::dashboard`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use webcache::http::metrics::PrometheusMetrics;
use webcache::Caches;

use crate::commands::{self, OpError, Reply};
use crate::wire::{AdminAnswer, AdminRequest};

/// The fields that say a request came through a proxy.
const FORWARDING_FIELDS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
    "via",
];

/// A random token (128 bits from the thread's CSPRNG, as hex).
pub(crate) fn new_token() -> String {
    (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Where the admin side answers Prometheus scrapes.
pub(crate) const METRICS_PATH: &str = "/_webcache/metrics";

/// What the endpoint needs: the caches, its token and the address it is bound to, the
/// metrics it exports and the figures the dashboard draws.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) caches: Caches,
    pub(crate) token: String,
    pub(crate) bound: SocketAddr,
    pub(crate) metrics: PrometheusMetrics,
    pub(crate) history: crate::dashboard::History,
}

impl Admin {
    /// The admin side for `caches`: installs the Prometheus recorder (first, so that every
    /// cache call is recorded) and starts the dashboard's sampling.
    pub(crate) fn new(caches: Caches, token: String, bound: SocketAddr) -> anyhow::Result<Admin> {
        let mut metrics = PrometheusMetrics::install()?;
        for alias in caches.aliases() {
            metrics = metrics.watch(caches.get(alias)?.clone());
        }
        let history = crate::dashboard::History::start(&caches);
        Ok(Admin {
            caches,
            token,
            bound,
            metrics,
            history,
        })
    }

    /// The answer refusing this request, if the three checks refuse it (see the module docs).
    pub(crate) fn check(&self, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        let (status, why) = refusal(&self.token, self.bound, uri, headers)?;
        Some(refused(status, why))
    }

    /// The answer refusing this request, if checks 1 and 2 refuse it: for the dashboard's
    /// page, which holds no data and which a browser asks for without the token.
    pub(crate) fn check_direct(&self, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        let (status, why) = not_direct(self.bound, uri, headers)?;
        Some(refused(status, why))
    }
}

/// The routes of the admin side: the command endpoint the CLI uses, and [`extras`].
pub(crate) fn router(admin: Admin) -> Router {
    Router::new()
        .route(crate::wire::PATH, post(handle))
        .with_state(admin.clone())
        .merge(extras(admin))
}

/// The admin side's routes besides the command endpoint: the metrics and the dashboard.
pub(crate) fn extras(admin: Admin) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics))
        .merge(crate::dashboard::routes())
        .with_state(admin)
}

/// `GET /_webcache/metrics`: the Prometheus text, under the three checks.
pub(crate) async fn metrics(State(admin): State<Admin>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(refused) = admin.check(&uri, &headers) {
        return refused;
    }
    admin.metrics.response().await
}

pub(crate) async fn handle(
    State(admin): State<Admin>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = admin.check(&uri, &headers) {
        return refused;
    }
    let request: AdminRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                Err(OpError::Usage(format!(
                    "not an admin command ({e}); use the webcache CLI with --app"
                ))),
            )
        }
    };
    // A large `set` is held once, as the parsed request, not also as the body.
    drop(body);
    let outcome = match admin.caches.get(&request.alias) {
        Err(e) => Err(OpError::Usage(e.to_string())),
        Ok(cache) => commands::run(cache, request.request, &|_| {}).await,
    };
    answer(StatusCode::OK, outcome)
}

fn answer(status: StatusCode, outcome: Result<Reply, OpError>) -> Response {
    (status, Json(AdminAnswer::from(outcome))).into_response()
}

/// A refusal in the admin endpoint's JSON, with `WWW-Authenticate` when the token is wanted.
fn refused(status: StatusCode, why: String) -> Response {
    let mut response = answer(status, Err(OpError::Usage(why)));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Why the request must not run, if it must not (see the module docs).
fn refusal(
    expected: &str,
    bound: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<(StatusCode, String)> {
    if let Some(refusal) = not_direct(bound, uri, headers) {
        return Some(refusal);
    }
    let declared = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|name| name.trim_ascii().eq_ignore_ascii_case(b"authorization"));
    let mut sent = headers.get_all(header::AUTHORIZATION).iter();
    let sent = match (sent.next(), sent.next()) {
        (Some(v), None) => v.as_bytes().strip_prefix(b"Bearer "),
        _ => None,
    };
    let why = match sent {
        None => {
            "the admin endpoint needs the token `webcache serve` printed: the CLI on the \
                 same machine finds it by itself; elsewhere pass --token (or WEBCACHE_TOKEN)"
        }
        Some(_) if !declared && !from_own_page(headers) => {
            "send the token declared hop-by-hop (`Connection: authorization`), as the CLI does, \
             so that no proxy forwards it"
        }
        Some(t) if !bool::from(t.ct_eq(expected.as_bytes())) => {
            "wrong admin token: use the one this `webcache serve` printed (a restarted app has a \
             new one)"
        }
        Some(_) => return None,
    };
    Some((StatusCode::UNAUTHORIZED, why.to_owned()))
}

/// Whether a browser says a script of this very origin sent the request (the dashboard's).
fn from_own_page(headers: &HeaderMap) -> bool {
    let only = |name: &str, value: &str| {
        let mut values = headers.get_all(name).iter();
        matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes() == value.as_bytes())
    };
    only("sec-fetch-site", "same-origin") && only("sec-fetch-mode", "cors")
}

/// Checks 1 and 2: why a request that did not come directly, or not for this app's own
/// address, must not run.
fn not_direct(bound: SocketAddr, uri: &Uri, headers: &HeaderMap) -> Option<(StatusCode, String)> {
    if let Some(name) = FORWARDING_FIELDS.iter().find(|n| headers.contains_key(**n)) {
        return Some((
            StatusCode::FORBIDDEN,
            format!(
                "the admin endpoint answers direct connections only, and this request came \
                 through a proxy (it carries `{name}`); connect to the app itself"
            ),
        ));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok(),
        (None, _) => uri.authority().map(|a| a.as_str()),
        (Some(_), Some(_)) => None,
    };
    if !host.is_some_and(|h| host_allowed(h, bound)) {
        let port = bound.port();
        return Some((
            StatusCode::FORBIDDEN,
            format!(
                "the admin endpoint answers only requests for this app's own address \
                 (Host: localhost:{port}, 127.0.0.1:{port}, [::1]:{port} or {}), not `{}`",
                bound,
                host.unwrap_or("(none)")
            ),
        ));
    }
    None
}

/// Whether `host` (a `Host` field) names this app: `localhost`, a loopback IP or the bound IP
/// (any IP literal when bound to every interface), with the bound port (80 when absent). A DNS
/// name other than `localhost` is never accepted: a rebinding attacker controls where it points.
fn host_allowed(host: &str, bound: SocketAddr) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    if port != bound.port() {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip: Option<IpAddr> = match name.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .and_then(|v6| v6.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6),
        None => name.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    };
    ip.is_some_and(|ip| ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified())
}

/// `name[:port]` or `[v6][:port]` into the name (brackets kept) and the port (80 if absent).
fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = match host.rfind(']') {
        Some(end) if host.starts_with('[') => {
            let (name, rest) = host.split_at(end + 1);
            match rest {
                "" => (name, None),
                _ => (name, Some(rest.strip_prefix(':')?)),
            }
        }
        Some(_) => return None,
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn own_addresses_are_allowed() {
        let bound = addr("127.0.0.1:8000");
        for host in [
            "localhost:8000",
            "LocalHost:8000",
            "127.0.0.1:8000",
            "127.0.0.2:8000",
            "[::1]:8000",
        ] {
            assert!(host_allowed(host, bound), "{host}");
        }
        assert!(host_allowed("localhost", addr("127.0.0.1:80")));
        assert!(host_allowed("192.168.1.5:8000", addr("192.168.1.5:8000")));
        assert!(host_allowed("10.0.0.7:8000", addr("0.0.0.0:8000")));
        assert!(host_allowed("[fe80::1]:8000", addr("[::]:8000")));
    }

    #[test]
    fn foreign_hosts_are_refused() {
        let bound = addr("127.0.0.1:8000");
        for host in [
            "",
            "evil.example:8000",
            "evil.example",
            "localhost:8080",
            "localhost",
            "127.0.0.1:8080",
            "127.0.0.1:",
            "127.0.0.1:+8000",
            "127.0.0.1:8000:8000",
            "user@127.0.0.1:8000",
            "localhost.:8000",
            "[::1]8000",
            "[::1:8000",
            "::1:8000",
            "10.0.0.7:8000",
            "127.0.0.1:65536",
        ] {
            assert!(!host_allowed(host, bound), "{host}");
        }
        assert!(!host_allowed("10.0.0.8:8000", addr("10.0.0.7:8000")));
    }

    /// Headers from arbitrary bytes (those `HeaderValue` accepts).
    fn headers(fields: &[(&'static str, Vec<u8>)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            if let Ok(v) = header::HeaderValue::from_bytes(value) {
                map.append(*name, v);
            }
        }
        map
    }

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn only_the_declared_token_for_our_own_host_passes() {
        let bound = addr("127.0.0.1:8000");
        let uri = Uri::from_static("/_webcache/command");
        let good = |extra: &[(&'static str, &str)]| {
            let mut fields = vec![
                ("host", b"127.0.0.1:8000".to_vec()),
                ("authorization", format!("Bearer {TOKEN}").into_bytes()),
                ("connection", b"keep-alive, Authorization".to_vec()),
            ];
            fields.extend(extra.iter().map(|(n, v)| (*n, v.as_bytes().to_vec())));
            refusal(TOKEN, bound, &uri, &headers(&fields))
        };
        assert_eq!(good(&[]), None);
        for (extra, status) in [
            (("x-forwarded-for", "10.0.0.1"), 403),
            (("via", "1.1 proxy"), 403),
            (("host", "127.0.0.1:8000"), 403),
            (("authorization", "Bearer x"), 401),
        ] {
            let refused = good(&[extra]).map(|(s, _)| s.as_u16());
            assert_eq!(refused, Some(status), "{extra:?}");
        }
        let wrong = headers(&[
            ("host", b"localhost:8000".to_vec()),
            ("authorization", format!("Bearer {TOKEN}0").into_bytes()),
            ("connection", b"authorization".to_vec()),
        ]);
        assert_eq!(
            refusal(TOKEN, bound, &uri, &wrong).map(|(s, _)| s),
            Some(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn the_dashboards_script_passes_with_the_token_and_a_browsers_fetch_metadata() {
        let bound = addr("127.0.0.1:8000");
        let uri = Uri::from_static("/_webcache/dashboard/data");
        let browser = |token: &str, site: &str, mode: &str, extra: &[(&'static str, &str)]| {
            let mut fields = vec![
                ("host", b"127.0.0.1:8000".to_vec()),
                ("authorization", format!("Bearer {token}").into_bytes()),
                ("sec-fetch-site", site.as_bytes().to_vec()),
                ("sec-fetch-mode", mode.as_bytes().to_vec()),
            ];
            fields.extend(extra.iter().map(|(n, v)| (*n, v.as_bytes().to_vec())));
            refusal(TOKEN, bound, &uri, &headers(&fields)).map(|(s, _)| s.as_u16())
        };
        assert_eq!(browser(TOKEN, "same-origin", "cors", &[]), None);
        // Another site's script, a navigation, a wrong token: refused.
        assert_eq!(browser(TOKEN, "cross-site", "cors", &[]), Some(401));
        assert_eq!(browser(TOKEN, "same-site", "cors", &[]), Some(401));
        assert_eq!(browser(TOKEN, "same-origin", "navigate", &[]), Some(401));
        assert_eq!(browser("0123", "same-origin", "cors", &[]), Some(401));
        // Two values of a field are not one browser's word.
        assert_eq!(
            browser(
                TOKEN,
                "same-origin",
                "cors",
                &[("sec-fetch-site", "cross-site")]
            ),
            Some(401)
        );
        // Checks 1 and 2 still come first.
        assert_eq!(
            browser(
                TOKEN,
                "same-origin",
                "cors",
                &[("x-forwarded-for", "10.0.0.1")]
            ),
            Some(403)
        );
        let foreign = headers(&[
            ("host", b"evil.example:8000".to_vec()),
            ("authorization", format!("Bearer {TOKEN}").into_bytes()),
            ("sec-fetch-site", b"same-origin".to_vec()),
            ("sec-fetch-mode", b"cors".to_vec()),
        ]);
        assert_eq!(
            refusal(TOKEN, bound, &uri, &foreign).map(|(s, _)| s),
            Some(StatusCode::FORBIDDEN)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the headers, a request passes only with this app's host and exactly the
        /// token (declared hop-by-hop, or sent by a browser's script of this page).
        #[test]
        fn arbitrary_headers_pass_only_with_the_token(
            host in proptest::collection::vec(any::<u8>(), 0..24),
            auth in proptest::collection::vec(any::<u8>(), 0..48),
            connection in proptest::collection::vec(any::<u8>(), 0..24),
            real_token in any::<bool>(),
            browser in any::<bool>(),
        ) {
            let auth = if real_token { format!("Bearer {TOKEN}").into_bytes() } else { auth };
            let mut fields = vec![("host", host), ("authorization", auth.clone()), ("connection", connection)];
            if browser {
                fields.push(("sec-fetch-site", b"same-origin".to_vec()));
                fields.push(("sec-fetch-mode", b"cors".to_vec()));
            }
            let map = headers(&fields);
            let uri = Uri::from_static("/_webcache/command");
            if refusal(TOKEN, addr("127.0.0.1:8000"), &uri, &map).is_none() {
                let expected = format!("Bearer {}", TOKEN);
                prop_assert_eq!(auth, expected.into_bytes());
                let host = map.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
                prop_assert!(host_allowed(host, addr("127.0.0.1:8000")));
            }
        }

        /// Any text is judged without panicking, and nothing with another port is accepted.
        #[test]
        fn arbitrary_hosts_never_panic(host in ".{0,40}", port in 1u16..) {
            let bound = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
            if host_allowed(&host, bound) {
                let suffix = format!(":{}", port);
                prop_assert!(host.ends_with(&suffix) || port == 80);
            }
        }

        /// A DNS name is never accepted, except `localhost`.
        #[test]
        fn dns_names_are_refused(name in "[a-z][a-z0-9.-]{0,20}\\.[a-z]{2,5}", port in 1u16..) {
            let bound = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            let host = format!("{}:{}", name, port);
            prop_assert!(!host_allowed(&host, bound));
        }
    }
}
