//! The `webcache` binary: `serve` runs the demo app on the embedded default cache, `proxy`
//! caches any HTTP origin, and `keys`/`get`/`ttl`/`set`/`del`/`clear`/`stats`/`shell` inspect a
//! cache the way `redis-cli` inspects Redis, but decoded.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod cli;
mod commands;
mod dashboard;
mod output;
mod pages;
mod progress;
mod proxy;
mod serve;
mod shell;
mod target;
mod token_file;
mod wire;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use cli::{Cli, Command, Op};
use commands::{OpError, Request};
use target::Target;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(exit_byte(parse_failed(&e))),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            output::note(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    ExitCode::from(exit_byte(runtime.block_on(run(cli))))
}

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Prints what clap found wrong (as JSON under `--json`, except for `--help` itself) and
/// returns the exit code.
fn parse_failed(e: &clap::Error) -> i32 {
    let wants_json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {}
        _ if wants_json => return output::usage_error(&output::clap_message(e), true),
        _ => {}
    }
    // clap ignores a failure to write (a full or closed standard error).
    let _ = e.print();
    e.exit_code()
}

async fn run(cli: Cli) -> i32 {
    let Cli {
        target,
        json,
        command,
    } = cli;
    match command {
        Command::Serve(args) => report(serve::run(&target, &args).await),
        Command::Proxy(args) => report(proxy::run(&target, &args).await),
        Command::Dashboard(args) => report(dashboard::run(&target, &args).await),
        Command::Shell => match Target::open(&target).await {
            Ok(target) => shell::run(&target, json).await,
            Err(e) => output::print(&Err(OpError::Failed(format!("{e:#}"))), json),
        },
        Command::Op(Op::Createcachetable { dry_run }) => {
            // One DDL call, nothing to count; Ctrl-C (say, while it waits for a table lock)
            // says what is known: the statements are idempotent, so running it again is safe.
            tokio::select! {
                outcome = commands::create_cache_table(&target, dry_run) => output::print(&outcome, json),
                _ = tokio::signal::ctrl_c() => {
                    let message = "interrupted: the cache table may be partly created; createcachetable is safe to run again";
                    output::print(&Err(OpError::Failed(message.into())), json);
                    progress::INTERRUPTED
                }
            }
        }
        Command::Op(Op::Stats { hot, watch }) if hot || watch => {
            let target = match Target::open(&target).await {
                Ok(target) => target,
                Err(e) => return output::print(&Err(classify(&e)), json),
            };
            if watch {
                return commands::watch_stats(&target, json).await;
            }
            match target.run(Request::Stats).await {
                Ok(commands::Reply::Stats(stats)) => output::print_hot(&stats, json),
                other => output::print(&other, json),
            }
        }
        Command::Op(op) => {
            let request = match confirm(op.into()) {
                Ok(request) => request,
                Err(e) => return output::print(&Err(e), json),
            };
            let target = match Target::open(&target).await {
                Ok(target) => target,
                Err(e) => return output::print(&Err(classify(&e)), json),
            };
            if matches!(request, Request::Keys { .. }) && !json {
                // Human output streams keys as the backend finds them (a large Redis may hold
                // millions); --json needs the whole list for its one object. The keys are
                // their own progress; Ctrl-C says how many were listed.
                let listed = progress::Progress::counting("listed");
                let report = |n| listed.update(n);
                return tokio::select! {
                    code = target.print_keys(request, &report) => code,
                    _ = tokio::signal::ctrl_c() => listed.interrupted(false),
                };
            }
            let verb = match &request {
                // --json: the one object comes at the end; Ctrl-C before it says how many
                // keys were listed (as an error object), nothing is drawn meanwhile.
                Request::Keys { .. } => "listed",
                Request::Clear { .. } => "cleared",
                Request::Del { pattern: true, .. } => "deleted",
                _ => return output::print(&target.run(request).await, json),
            };
            // Long work: progress on a terminal, and Ctrl-C reports what was done.
            let progress = progress::Progress::new(verb, json);
            let report = |n| progress.update(n);
            tokio::select! {
                outcome = target.run_with_progress(request, &report) => {
                    progress.finish();
                    output::print(&outcome, json)
                }
                _ = tokio::signal::ctrl_c() => match target.app_url() {
                    Some(app) => progress.interrupted_remote(app, json),
                    None => progress.interrupted(json),
                },
            }
        }
    }
}

/// A configuration mistake is a usage error (2); anything else a failure (1).
fn classify(e: &anyhow::Error) -> OpError {
    if e.downcast_ref::<webcache::config::ConfigError>()
        .is_some_and(|c| !matches!(c, webcache::config::ConfigError::Connect { .. }))
    {
        OpError::Usage(format!("{e:#}"))
    } else {
        OpError::Failed(format!("{e:#}"))
    }
}

/// `clear` without `--yes` asks on a terminal; elsewhere it needs `--yes`.
fn confirm(request: Request) -> Result<Request, OpError> {
    let Request::Clear { confirmed: false } = request else {
        return Ok(request);
    };
    if !std::io::stdin().is_terminal() {
        return Err(OpError::Usage(
            "clear deletes every key of the cache; add --yes to confirm".into(),
        ));
    }
    {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "Delete every key of this cache? [y/N] ");
        let _ = err.flush();
    }
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(Request::Clear { confirmed: true })
    } else {
        Err(OpError::Usage("not cleared".into()))
    }
}

fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            output::note(format_args!("error: {e:#}"));
            1
        }
    }
}
