//! `stats`: entries, size, hits and misses.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use webcache::Cache;

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
        extra: stats.backend_stats.extra,
    }))
}
