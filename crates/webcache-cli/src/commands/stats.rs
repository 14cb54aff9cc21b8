//! `stats`: entries, size, hits and misses (per read operation too), the hottest keys
//! (`--hot`), and `--watch`, which prints the figures every second like `redis-cli --stat`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use webcache::{Cache, HotKey, OperationReads};

use super::{OpError, Reply};

/// What `stats` reports.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stats {
    alias: String,
    backend: String,
    entries: Option<u64>,
    bytes: Option<u64>,
    hits: u64,
    misses: u64,
    errors: u64,
    /// Hits and misses per read operation (absent from an older app's answer).
    #[serde(default)]
    reads: Vec<OperationReads>,
    /// The most read keys, by a sample.
    #[serde(default)]
    hot_keys: Vec<HotKey>,
    /// Further figures in the backend's own words.
    extra: Vec<(String, String)>,
}

impl Stats {
    /// One object, the backend's own figures after the common ones.
    pub(crate) fn to_json(&self) -> Value {
        let mut out = json!({
            "alias": self.alias,
            "backend": self.backend,
            "entries": self.entries,
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "reads": self.reads,
            "hot_keys": self.hot_keys,
        });
        for (name, value) in &self.extra {
            out[name] = Value::String(value.clone());
        }
        out
    }

    /// One `name: value` line per figure.
    pub(crate) fn lines(&self) -> Vec<(String, String)> {
        let known = |n: Option<u64>| n.map_or_else(|| "(unknown)".to_owned(), |n| n.to_string());
        let mut lines = vec![
            ("alias".to_owned(), self.alias.clone()),
            ("backend".to_owned(), self.backend.clone()),
            ("entries".to_owned(), known(self.entries)),
            ("bytes".to_owned(), known(self.bytes)),
            ("hits".to_owned(), self.hits.to_string()),
            ("misses".to_owned(), self.misses.to_string()),
            ("errors".to_owned(), self.errors.to_string()),
        ];
        lines.extend(self.reads.iter().map(|r| {
            (
                format!("{} hits/misses", r.operation),
                format!("{}/{}", r.hits, r.misses),
            )
        }));
        lines.extend(self.extra.iter().cloned());
        lines
    }
}

pub(super) async fn run(cache: &Cache) -> Result<Reply, OpError> {
    let stats = cache.stats().await?;
    Ok(Reply::Stats(Stats {
        alias: stats.alias,
        backend: stats.backend.to_owned(),
        entries: stats.backend_stats.entries,
        bytes: stats.backend_stats.bytes,
        hits: stats.metrics.hits,
        misses: stats.metrics.misses,
        errors: stats.metrics.errors,
        reads: stats.reads,
        hot_keys: stats.hot_keys,
        extra: stats.backend_stats.extra,
    }))
}

impl Stats {
    /// `stats --hot`: one line per hot key, most read first (estimated reads, then the key).
    pub(crate) fn hot_lines(&self) -> String {
        if self.hot_keys.is_empty() {
            return "(no reads sampled yet)".into();
        }
        self.hot_keys
            .iter()
            .map(|h| format!("{:>10}  {}", h.reads, crate::output::printable(&h.key)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `stats --hot --json`: the hot keys.
    pub(crate) fn hot_json(&self) -> Value {
        json!(self.hot_keys)
    }
}

/// The columns of `stats --watch`.
const WATCH_HEADER: &str =
    "    entries       bytes        hits      misses      errors   hits/s  misses/s";

/// `stats --watch`: the figures every second until Ctrl-C (exit 0) or a failure. Piped (or
/// with `--json`), one line per second; on a terminal, one line rewritten in place.
pub(crate) async fn watch(target: &crate::target::Target, as_json: bool) -> i32 {
    let in_place = !as_json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    if !as_json {
        let _ = writeln!(out, "{WATCH_HEADER}");
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(u64, u64)> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => {
                if in_place {
                    let _ = writeln!(out);
                }
                return 0;
            }
            _ = ticks.tick() => {}
        }
        let stats = match target.run(super::Request::Stats).await {
            Ok(super::Reply::Stats(stats)) => stats,
            Ok(_) => {
                return crate::output::print(
                    &Err(super::OpError::Failed(
                        "the app answered `stats` with something else".into(),
                    )),
                    as_json,
                )
            }
            Err(e) => {
                if in_place {
                    let _ = writeln!(out);
                }
                return crate::output::print(&Err(e), as_json);
            }
        };
        let (hits_rate, misses_rate) = match before {
            Some((hits, misses)) => (
                stats.hits.saturating_sub(hits),
                stats.misses.saturating_sub(misses),
            ),
            None => (0, 0),
        };
        before = Some((stats.hits, stats.misses));
        let known = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let written = if as_json {
            let line = json!({
                "entries": stats.entries,
                "bytes": stats.bytes,
                "hits": stats.hits,
                "misses": stats.misses,
                "errors": stats.errors,
                "hits_per_second": hits_rate,
                "misses_per_second": misses_rate,
            });
            writeln!(out, "{line}")
        } else {
            let line = format!(
                "{:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>9}",
                known(stats.entries),
                known(stats.bytes),
                stats.hits,
                stats.misses,
                stats.errors,
                hits_rate,
                misses_rate
            );
            if in_place {
                write!(out, "\r{line}\x1b[K")
            } else {
                writeln!(out, "{line}")
            }
        };
        if let Err(e) = written.and_then(|()| out.flush()) {
            return crate::output::write_failed(&e, 0);
        }
    }
}
