//! `webcache proxy`: the site-wide page-cache layer in front of any HTTP origin.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{ProxyArgs, TargetArgs};

/// Serves until interrupted.
pub(crate) async fn run(target: &TargetArgs, args: &ProxyArgs) -> anyhow::Result<()> {
    let caches = crate::target::open_caches(target).await?;
    let cache = caches.get(&target.alias)?.clone();
    let default_ttl = match args.default_ttl {
        None => None,
        Some(secs) => Some(Duration::try_from_secs_f64(secs).map_err(|_| {
            anyhow::anyhow!(
                "--default-ttl {secs} is not a number of seconds; use e.g. --default-ttl 60"
            )
        })?),
    };
    let app = webcache::http::proxy_router(&args.upstream, cache.clone(), default_ttl)
        .with_context(|| format!("--upstream {}", args.upstream))?;
    let listener = crate::serve::bind(&args.listen).await?;
    let policy = match default_ttl {
        None => "RFC 9111 shared cache (stores what the origin marks fresh)".to_owned(),
        Some(d) => format!(
            "Django site-wide middleware (cacheable 200s kept {} s)",
            d.as_secs_f64()
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "webcache proxy listening on http://{}\nupstream: {}\ncache: `{}` ({} backend)\npolicy: {policy}",
        listener.local_addr()?,
        args.upstream,
        cache.alias(),
        cache.backend().name()
    );
    let _ = out.flush();
    drop(out);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    caches.close().await;
    Ok(())
}
