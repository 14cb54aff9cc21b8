//! The `webcache` binary: `serve` runs the demo app on the embedded default cache, `proxy`
//! caches any HTTP origin, and `keys`/`get`/`ttl`/`set`/`del`/`clear`/`stats`/`shell` inspect a
//! cache the way `redis-cli` inspects Redis, but decoded.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod cli;
mod ops;
mod output;
mod pages;
mod serve;
mod shell;
mod target;
mod token_file;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, Op};
use ops::OpError;
use target::Target;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cli: Cli) -> i32 {
    match &cli.command {
        Command::Serve(args) => report(serve::run(&cli.target, args).await),
        Command::Proxy(args) => report(proxy(&cli.target, args).await),
        Command::Shell => match Target::open(&cli.target).await {
            Ok(target) => shell::run(&target, cli.json).await,
            Err(e) => output::print(None, &Err(OpError::Failed(format!("{e:#}"))), cli.json),
        },
        Command::Op(Op::Createcachetable { dry_run }) => {
            let op = Op::Createcachetable { dry_run: *dry_run };
            let outcome = target::create_cache_table(&cli.target, *dry_run).await;
            output::print(Some(&op), &outcome, cli.json)
        }
        Command::Op(op) => {
            let op = match confirm(op.clone()) {
                Ok(op) => op,
                Err(e) => return output::print(Some(op), &Err(e), cli.json),
            };
            let target = match Target::open(&cli.target).await {
                Ok(target) => target,
                Err(e) => return output::print(Some(&op), &Err(classify(&e)), cli.json),
            };
            if let (Op::Keys { .. }, false) = (&op, cli.json) {
                // Human output streams keys as the backend finds them (a large Redis may hold
                // millions); --json needs the whole list for its one object.
                return match target.stream_keys(&op).await {
                    Ok(()) => 0,
                    Err(e) => output::print(Some(&op), &Err(e), false),
                };
            }
            let outcome = target.run(&op).await;
            output::print(Some(&op), &outcome, cli.json)
        }
    }
}

/// A configuration mistake is a usage error (2); anything else a failure (1).
fn classify(e: &anyhow::Error) -> OpError {
    if e.downcast_ref::<webcache::ConfigError>()
        .is_some_and(|c| !matches!(c, webcache::ConfigError::Connect { .. }))
    {
        OpError::Usage(format!("{e:#}"))
    } else {
        OpError::Failed(format!("{e:#}"))
    }
}

/// `clear` without `--yes` asks on a terminal; elsewhere it needs `--yes`.
fn confirm(op: Op) -> Result<Op, OpError> {
    let Op::Clear { yes: false } = op else {
        return Ok(op);
    };
    if !std::io::stdin().is_terminal() {
        return Err(OpError::Usage(
            "clear deletes every key of the cache; add --yes to confirm".into(),
        ));
    }
    eprint!("Delete every key of this cache? [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(Op::Clear { yes: true })
    } else {
        Err(OpError::Usage("not cleared".into()))
    }
}

fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// `webcache proxy`: the site-wide page-cache layer in front of any HTTP origin.
async fn proxy(target: &cli::TargetArgs, args: &cli::ProxyArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::time::Duration;

    let caches = target::open_caches(target).await?;
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
    let listener = serve::bind(&args.listen).await?;
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
