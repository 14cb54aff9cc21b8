//! The demo's routes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower_sessions::Session;
use webcache::http::{cache_page, CachePageLayer};
use webcache::sessions::{CacheStore, SessionConfig};
use webcache::{fragment, Cache, Caches, Outcome};

use super::admin::{self, Admin};

/// How long the demo caches upstream answers and pages, as the tutorial does.
const CACHE_SECONDS: u64 = 60;
/// How long `/hello` keeps answering at once after its 60 s, with the stale value, while one
/// upstream call refreshes it in the background.
const STALE_WINDOW: Duration = Duration::from_secs(300);
/// The longest delay the built-in upstream accepts.
const MAX_DELAY: f64 = 30.0;

#[derive(Clone)]
struct Demo {
    cache: Cache,
    upstream: String,
    http: reqwest::Client,
    templates: Arc<Environment<'static>>,
    served: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct DelayQuery {
    delay: Option<f64>,
}

/// Builds the demo app over `caches` (the `sessions` alias holds sessions when configured,
/// otherwise `default`).
pub(super) fn app(caches: &Caches, upstream: &str, admin: Admin) -> anyhow::Result<Router> {
    let upstream = upstream.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut templates = Environment::new();
    templates.add_template("hello.html", include_str!("../../templates/hello.html"))?;
    templates.add_template("hello-page.html", HELLO_PAGE)?;
    // `{% call cache(...) %}` in templates, and the upstream as a template function, so the
    // call happens only when the fragment is rendered (on a fragment miss).
    fragment::minijinja::add_to(&mut templates, caches.default_cache().clone());
    let (client, base) = (http.clone(), upstream.clone());
    templates.add_function("upstream", move |delay: f64| {
        fragment::minijinja::block_on(fetch(&client, &base, delay))?
            .map(|data| minijinja::Value::from_serialize(&data))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.1))
    });
    let demo = Demo {
        cache: caches.default_cache().clone(),
        upstream,
        http,
        templates: Arc::new(templates),
        served: Arc::new(AtomicU64::new(0)),
    };
    let sessions = caches
        .get("sessions")
        .unwrap_or_else(|_| caches.default_cache())
        .clone();
    let cart = Router::new()
        .route("/cart", get(cart))
        .route("/cart/clear", post(cart_clear))
        .layer(SessionConfig::default().layer(CacheStore::new(sessions)));
    Ok(Router::new()
        .route("/", get(index))
        .route("/delay/{seconds}", get(delay))
        .route("/count", get(count))
        .route("/hello", get(hello))
        // cache_page(60) on one route: every method of it goes through the layer, and only
        // GET/HEAD are ever stored.
        .route(
            "/hello-page",
            get(hello_page).layer(cache_page(demo.cache.clone(), CACHE_SECONDS)),
        )
        // method_decorator(cache_page(60)) on the GET handler only: POST never meets the layer.
        .route(
            "/hello-class",
            get(hello_class_get
                .layer(CachePageLayer::new(demo.cache.clone()).timeout(CACHE_SECONDS)))
            .post(hello_class_post),
        )
        .with_state(demo)
        .merge(cart)
        .merge(
            Router::new()
                .route(crate::wire::PATH, post(admin::handle))
                .with_state(admin),
        ))
}

async fn index() -> &'static str {
    "webcache demo\n\n\
     GET  /delay/N        the built-in slow upstream\n\
     GET  /hello          low-level API (get_or_set, 60 s, then served stale for 5 min while refreshed)\n\
     GET  /hello-page     page-cache layer on the route; inside, the upstream part is a cached fragment\n\
     GET  /hello-class    page-cache layer on GET only; POST is never cached\n\
     GET  /cart?add=ITEM  a cache-backed session cart; POST /cart/clear empties it\n\
     GET  /products       rows cached by the query cache, the page by the page layer (tagged)\n\
     POST /products/ID?price=N  update through the query cache: rows and page dropped at once\n"
}

/// The built-in upstream, a stand-in for httpbin's `/delay/N`.
async fn delay(
    State(demo): State<Demo>,
    Path(seconds): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(secs) = seconds
        .parse::<f64>()
        .ok()
        .filter(|s| (0.0..=MAX_DELAY).contains(s))
    else {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{seconds}` is not a delay; use seconds from 0 to {MAX_DELAY}, e.g. /delay/2 or /delay/0.5\n"),
        )
            .into_response();
    };
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let served = demo.served.fetch_add(1, Ordering::Relaxed) + 1;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    Json(json!({
        "url": format!("http://{host}/delay/{seconds}"),
        "delay": secs,
        "origin": "127.0.0.1",
        "headers": {"Host": host},
        "served": served,
    }))
    .into_response()
}

async fn count(State(demo): State<Demo>) -> Json<Value> {
    Json(json!({"served": demo.served.load(Ordering::Relaxed)}))
}

/// Why a demo page could not be produced.
struct DemoError(StatusCode, String);

impl From<webcache::Error> for DemoError {
    fn from(e: webcache::Error) -> Self {
        DemoError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache error: {e}"),
        )
    }
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.1, self.0)
    }
}

impl IntoResponse for DemoError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// One call to the upstream's `/delay/N`.
async fn fetch(http: &reqwest::Client, upstream: &str, delay: f64) -> Result<Value, DemoError> {
    let url = format!("{upstream}/delay/{delay}");
    let bad_gateway = |what: String| DemoError(StatusCode::BAD_GATEWAY, what);
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| bad_gateway(format!("the upstream {url} did not answer: {e}")))?;
    if !response.status().is_success() {
        return Err(bad_gateway(format!(
            "the upstream {url} answered {}",
            response.status()
        )));
    }
    response
        .json()
        .await
        .map_err(|e| bad_gateway(format!("the upstream {url} did not answer JSON: {e}")))
}

impl Demo {
    async fn fetch(&self, delay: f64) -> Result<Value, DemoError> {
        fetch(&self.http, &self.upstream, delay).await
    }

    fn render(&self, route: &str, data: &Value) -> Result<Html<String>, DemoError> {
        self.templates
            .get_template("hello.html")
            .and_then(|t| t.render(minijinja::context! { data => data, route => route }))
            .map(Html)
            .map_err(|e| {
                DemoError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("template error: {e}"),
                )
            })
    }
}

fn delay_of(q: &DelayQuery) -> f64 {
    q.delay.unwrap_or(2.0)
}

/// What `/hello` keeps under `httpbin`: the upstream's answer and when it was fetched.
/// (`fetched_at_ms` is for people reading the entry, e.g. with `webcache get httpbin`.)
#[derive(Serialize, Deserialize)]
struct Fetched {
    /// Milliseconds since the Unix epoch.
    fetched_at_ms: u64,
    upstream: Value,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The low-level API: look up `httpbin`; on a miss, call the upstream and keep its JSON 60 s,
/// then 5 minutes more as a stale value: answered at once while one upstream call (in the
/// background) refreshes it. `x-cache` says MISS (this request waited for the upstream), HIT or
/// STALE.
async fn hello(
    State(demo): State<Demo>,
    Query(q): Query<DelayQuery>,
) -> Result<Response, DemoError> {
    let delay = delay_of(&q);
    let upstream = demo.clone();
    let (fetched, outcome): (Fetched, Outcome) = demo
        .cache
        .try_get_or_set_with_stale_outcome(
            "httpbin",
            CACHE_SECONDS,
            STALE_WINDOW,
            move || async move {
                let data = upstream.fetch(delay).await?;
                Ok::<_, DemoError>(Fetched {
                    fetched_at_ms: now_ms(),
                    upstream: data,
                })
            },
        )
        .await?;
    let page = demo.render("/hello", &fetched.upstream)?;
    let state = match outcome {
        Outcome::Hit => "HIT",
        Outcome::Stale => "STALE",
        // Computed here, or waited for a computation: this request waited for the upstream.
        _ => "MISS",
    };
    Ok(([("x-cache", state)], page).into_response())
}

/// `/hello-page`'s template: the part that calls the upstream is a cached fragment, kept
/// longer than the page layer keeps the page.
const HELLO_PAGE: &str = r#"{% call cache(300, "hello-upstream", delay) %}{% set data = upstream(delay) %}{% include "hello.html" %}{% endcall %}"#;

/// A page whose upstream part is a cached fragment (Django's `{% cache 300 ... %}`), inside
/// the page-cache layer: the layer keeps the page 60 s; a page rebuilt after that takes the
/// fragment (5 min) instead of calling the upstream again.
async fn hello_page(
    State(demo): State<Demo>,
    Query(q): Query<DelayQuery>,
) -> Result<Html<String>, DemoError> {
    let delay = delay_of(&q);
    let templates = demo.templates.clone();
    fragment::minijinja::render(move || {
        templates
            .get_template("hello-page.html")?
            .render(minijinja::context! { delay => delay, route => "/hello-page" })
    })
    .await
    .map(Html)
    .map_err(|e| {
        DemoError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template error: {e:#}"),
        )
    })
}

/// GET on the class-style route: cached by the layer wrapped around this handler alone.
async fn hello_class_get(
    State(demo): State<Demo>,
    Query(q): Query<DelayQuery>,
) -> Result<Html<String>, DemoError> {
    let data = demo.fetch(delay_of(&q)).await?;
    demo.render("GET /hello-class", &data)
}

/// POST on the class-style route: never cached, always calls the upstream.
async fn hello_class_post(
    State(demo): State<Demo>,
    Query(q): Query<DelayQuery>,
) -> Result<Html<String>, DemoError> {
    let data = demo.fetch(delay_of(&q)).await?;
    demo.render("POST /hello-class", &data)
}

#[derive(Deserialize)]
struct CartQuery {
    add: Option<String>,
}

const CART: &str = "items";

async fn cart(session: Session, Query(q): Query<CartQuery>) -> Result<Json<Value>, DemoError> {
    let session_error = |e: tower_sessions::session::Error| {
        DemoError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session error: {e}"),
        )
    };
    let mut items: Vec<String> = session
        .get(CART)
        .await
        .map_err(session_error)?
        .unwrap_or_default();
    if let Some(item) = q.add.filter(|i| !i.is_empty()) {
        items.push(item);
        session.insert(CART, &items).await.map_err(session_error)?;
    }
    Ok(Json(json!({ "items": items })))
}

async fn cart_clear(session: Session) -> Result<Json<Value>, DemoError> {
    session.remove::<Vec<String>>(CART).await.map_err(|e| {
        DemoError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session error: {e}"),
        )
    })?;
    Ok(Json(json!({ "items": [] })))
}
