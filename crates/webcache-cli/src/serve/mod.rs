//! `webcache serve`: the tutorial as a runnable app, on the embedded default cache.
//!
//! | route | what it shows |
//! |---|---|
//! | `GET /delay/N` | the built-in slow upstream (a stand-in for httpbin): sleeps N seconds |
//! | `GET /hello` | the low-level API: `get_or_set_with_stale` of key `httpbin`, fresh 60 s, then served stale for 5 min while one refresh runs |
//! | `GET /hello-page` | the page-cache layer on one route (`cache_page(60)`); inside, the upstream part is a template fragment cached 5 minutes (`{% call cache(300, ...) %}`) |
//! | `GET`/`POST /hello-class` | one route, two methods, only GET cached (`method_decorator`) |
//! | `GET /cart?add=ITEM`, `POST /cart/clear` | a cache-backed session |
//! | `GET /products`, `POST /products/{id}?price=N` | the catalogue: rows cached by the query cache, the page by the page layer, both tagged `table:products`; an update drops both at once (see [`catalogue`]) |
//! | `POST /_webcache/command` | the admin endpoint behind `webcache ... --app URL` (token always required; see [`admin`]) |
//! | `GET /metrics`, `GET /_webcache/metrics` | Prometheus text, with the admin endpoint's checks |
//! | `GET /_webcache/dashboard` | the dashboard ([`crate::dashboard`]) |

pub(crate) mod admin;
mod catalogue;
mod demo;

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use axum::serve::Listener as _;
use webcache::Caches;

use crate::cli::{ServeArgs, TargetArgs};
use crate::token_file::TokenFile;

/// Starts the demo and serves until interrupted.
pub(crate) async fn run(target: &TargetArgs, args: &ServeArgs) -> anyhow::Result<()> {
    // The demo must keep answering when its cache is down (a Redis restart, say): every alias
    // degrades to misses and dropped writes instead of failing requests.
    let mut config = crate::target::caches_config(target)?;
    for cache in &mut config.caches {
        cache.options.on_error = webcache::OnError::Degrade;
    }
    // The metrics recorder first, so that every cache call is recorded.
    webcache::http::metrics::PrometheusMetrics::install()?;
    let caches = Caches::from_config(config).await?;
    let shutdown = shutdown_signal();
    let listener = bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let token = admin::new_token();
    let upstream = args
        .upstream
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let admin = admin::Admin::new(caches.clone(), token.clone(), addr)?;
    let db = catalogue::location(args.db.as_deref());
    let app = demo::app(&caches, &upstream, admin.clone())?
        .merge(catalogue::routes(caches.default_cache(), &db).await?)
        .merge(admin::extras(admin.clone()))
        .merge(
            axum::Router::new()
                .route("/metrics", axum::routing::get(admin::metrics))
                .with_state(admin),
        );
    // Removed when dropped, at the end of this function whatever ends the server.
    let token_file = match TokenFile::write(addr, &token) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(
                "the CLI on this machine will not find the admin token by itself ({e}); pass it with --token"
            );
            None
        }
    };
    announce(
        &caches,
        addr,
        &upstream,
        args.upstream.is_some(),
        &token,
        token_file.as_ref(),
        &db,
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    caches.close().await;
    drop(token_file);
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `kill` and service managers send), so the token file is removed.
/// The handlers are installed at once, before the token file exists, not when first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A listener whose connections answer without Nagle's delay.
pub(crate) type Listening =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

/// Listens on `address`, or says what to change. Every accepted connection gets `TCP_NODELAY`,
/// as nginx and Varnish set it: an answer hyper writes in more than one piece (a large page, a
/// streamed body) is otherwise held back by Nagle's algorithm until the client acknowledges the
/// previous piece, which a client delaying its acknowledgements makes up to 40 ms late.
pub(crate) async fn bind(address: &str) -> anyhow::Result<Listening> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen on {address}; choose another address with --listen")
        })?;
    Ok(listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream)))
}

/// Turns Nagle's algorithm off on an accepted connection. A connection where that fails (it
/// was reset as it arrived) is served anyway: the setting is about latency, not correctness.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
    }
}

/// Prints where the demo listens and what to try. A closed standard output (the banner piped
/// into `head`) must not stop the server, so write errors are ignored.
fn announce(
    caches: &Caches,
    addr: SocketAddr,
    upstream: &str,
    external: bool,
    token: &str,
    token_file: Option<&TokenFile>,
    db: &catalogue::Location,
) {
    let cache = caches.default_cache();
    let base = format!("http://{addr}");
    let embedded = if cache.backend().name() == "locmem" {
        ", the embedded default: no server needed"
    } else {
        ""
    };
    let builtin = if external { "" } else { " (built in)" };
    let token_note = match token_file {
        Some(file) => format!(
            "admin token: {token}\n  (the CLI on this machine reads it from {}; from elsewhere pass --token)",
            file.path().display()
        ),
        None => format!("admin token (pass it with --token): {token}"),
    };
    let text = format!(
        "webcache demo listening on {base}\n\
         cache: `{alias}` ({backend} backend{embedded})\n\
         upstream: {upstream}/delay/N{builtin}\n\
         catalogue: {db}\n\
         {token_note}\n\
         dashboard: {dashboard}\n\
         \n\
         try:\n  \
         curl -i {base}/hello          # ~2 s the first time (MISS), instant for 60 s (HIT), then\n                                 \
         # still instant for 5 min (STALE) while one upstream call refreshes it\n                                 \
         # in the background ({base}/count counts the calls)\n  \
         curl -i {base}/hello-page     # the whole page cached by the page-cache layer\n  \
         curl -i {base}/hello-class    # GET cached; curl -X POST {base}/hello-class is not\n  \
         curl -c jar -b jar '{base}/cart?add=apple'   # a session cart\n  \
         curl -i {base}/products       # rows cached by the query cache, the page by the page layer\n  \
         curl -X POST '{base}/products/1?price=15'   # the update invalidates table:products:\n                                 \
         # the next GET shows 15 at once (MISS), then HITs again\n  \
         webcache keys --app {base}    # what is in the cache; also get/ttl/stats/shell\n",
        alias = cache.alias(),
        backend = cache.backend().name(),
        db = db,
        dashboard = crate::dashboard::url(addr, token),
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn accepted_connections_have_no_nagle_delay() {
        let mut listener = super::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY is set on the server's side"
        );
        drop(client);
    }

    #[tokio::test]
    async fn an_address_in_use_says_what_to_change() {
        let held = super::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let error = super::bind(&addr).await.err().unwrap();
        assert!(format!("{error:#}").contains("--listen"), "{error:#}");
    }
}
