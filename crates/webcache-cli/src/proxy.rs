//! `webcache proxy`: the site-wide page-cache layer in front of any HTTP origin. `/_webcache/`
//! paths are never forwarded; with `--admin` the proxy answers its own admin side there
//! (`/_webcache/command`, `/_webcache/metrics`, `/_webcache/dashboard`, with the checks of
//! [`crate::serve::admin`]), a choice left to the operator because a proxy often faces the
//! internet.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use axum::serve::Listener as _;

use crate::cli::{ProxyArgs, TargetArgs};

/// Serves until interrupted.
pub(crate) async fn run(target: &TargetArgs, args: &ProxyArgs) -> anyhow::Result<()> {
    // The metrics recorder first, so that every cache call is recorded; only the admin side
    // exports them.
    if args.admin {
        webcache::http::metrics::PrometheusMetrics::install()?;
    }
    let caches = crate::target::open_caches(target).await?;
    let cache = caches.get(&target.alias)?.clone();
    let default_ttl = match args.default_ttl {
        None => None,
        Some(secs) => Some(seconds("--default-ttl", secs)?),
    };
    let first_byte = seconds("--first-byte-timeout", args.first_byte_timeout)?;
    let connect = seconds("--connect-timeout", args.connect_timeout)?;
    let origin = webcache::http::Origin::new(&args.upstream)
        .with_context(|| format!("--upstream {}", args.upstream))?
        .connect_timeout(connect)
        .first_byte_timeout(first_byte)
        .total_timeout(seconds("--total-timeout", args.total_timeout)?)
        .trust_forwarded(args.trust_forwarded);
    let mut layer = webcache::http::proxy_layer(cache.clone(), default_ttl)
        // Requests waiting for a page wait as long as the upstream may take, so they share its
        // answer (a 504 included) rather than each asking a failing upstream again.
        .stampede_wait((first_byte + connect).max(webcache::http::DEFAULT_STAMPEDE_WAIT))
        .grace(seconds("--grace", args.grace)?);
    if !args.allowed_hosts.is_empty() {
        layer = layer.allowed_hosts(&args.allowed_hosts);
    }
    // The admin endpoint of a `webcache serve` behind the proxy is never reachable through it.
    let admin_prefix = crate::wire::PATH
        .rsplit_once('/')
        .map_or(crate::wire::PATH, |(prefix, _)| prefix);
    let mut purge = webcache::http::PurgeLayer::new(layer.pages())
        .allow_from(&args.purge_from)
        .context("--purge-from")?;
    if let Some(token) = &args.purge_token {
        purge = purge.token(token.clone());
    }
    let listener = crate::serve::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let mut app = axum::Router::new()
        .route(admin_prefix, axum::routing::any(not_proxied))
        .route(
            &format!("{admin_prefix}/{{*rest}}"),
            axum::routing::any(not_proxied),
        );
    let mut admin_note = String::new();
    let mut token_file = None;
    if args.admin {
        let token = crate::serve::admin::new_token();
        let admin = crate::serve::admin::Admin::new(caches.clone(), token.clone(), addr)?;
        app = app.merge(crate::serve::admin::router(admin));
        // Removed when dropped, at the end of this function whatever ends the proxy.
        token_file = crate::token_file::TokenFile::write(addr, &token)
            .map_err(|e| tracing::warn!("the CLI on this machine will not find the admin token by itself ({e}); pass it with --token"))
            .ok();
        admin_note = format!(
            "\nadmin token: {token}\ndashboard: {}",
            crate::dashboard::url(addr, &token)
        );
    }
    let app = app
        .merge(webcache::http::proxy_router_with_origin(origin, &layer))
        .layer(purge);
    let policy = match default_ttl {
        None => "RFC 9111 shared cache (stores what the origin marks fresh)".to_owned(),
        Some(d) => format!(
            "Django site-wide middleware (cacheable 200s kept {} s)",
            d.as_secs_f64()
        ),
    };
    let purge = match (&args.purge_token, args.purge_from.is_empty()) {
        (None, true) => "\npurge: PURGE refused (give --purge-token or --purge-from)".to_owned(),
        (Some(_), true) => "\npurge: PURGE with the token".to_owned(),
        (None, false) => format!("\npurge: PURGE from {}", args.purge_from.join(", ")),
        (Some(_), false) => format!(
            "\npurge: PURGE with the token or from {}",
            args.purge_from.join(", ")
        ),
    };
    let grace = if args.grace > 0.0 {
        format!(
            "\ngrace: stale pages served up to {} s past their freshness",
            args.grace
        )
    } else {
        String::new()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "webcache proxy listening on http://{addr}\nupstream: {}\ncache: `{}` ({} backend)\npolicy: {policy}{grace}{purge}{admin_note}",
        args.upstream,
        cache.alias(),
        cache.backend().name(),
    );
    let _ = out.flush();
    drop(out);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    caches.close().await;
    drop(token_file);
    Ok(())
}

/// A number of seconds given on the command line, as a duration.
fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        anyhow::anyhow!("{flag} {secs} is not a number of seconds; use e.g. {flag} 60")
    })
}

/// The answer for the admin paths: they belong to the `webcache serve` behind the proxy and are
/// never forwarded.
async fn not_proxied() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_FOUND,
        "not found: webcache proxy never forwards the admin endpoint; use `webcache ... --app` on the machine that runs `webcache serve`\n",
    )
}
