//! The inspection commands, run against one cache. The command line, `webcache shell` and the
//! admin endpoint of `webcache serve` all call [`run`], so they behave identically.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use webcache::bytes::Bytes;
use webcache::entry::{self, Decoded};
use webcache::{Cache, CacheOptions, Error, KeyFunction, Timeout, Ttl};

use crate::cli::{KeyArgs, Op, WriteArgs};

/// Why a command failed; the process exit code follows from it.
#[derive(Debug)]
pub(crate) enum OpError {
    /// The user's mistake (bad JSON value, invalid key, missing confirmation): exit code 2.
    Usage(String),
    /// The cache or its backend failed: exit code 1.
    Failed(String),
}

impl OpError {
    pub(crate) fn message(&self) -> &str {
        match self {
            OpError::Usage(m) | OpError::Failed(m) => m,
        }
    }

    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            OpError::Usage(_) => 2,
            OpError::Failed(_) => 1,
        }
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidKey { .. } | Error::Serialize { .. } => OpError::Usage(e.to_string()),
            other => OpError::Failed(other.to_string()),
        }
    }
}

/// Runs one command. `progress` hears how many keys a long `clear` has removed so far.
pub(crate) async fn run(
    cache: &Cache,
    op: &Op,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Value, OpError> {
    match op {
        Op::Keys {
            pattern,
            limit,
            key,
        } => {
            let mut keys = list_keys(cache, pattern, key);
            let mut out = Vec::new();
            while let Some(k) = keys.next().await {
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
                out.push(Value::String(k?));
            }
            Ok(Value::Array(out))
        }
        Op::Get { key, keyargs } => {
            let stored = cache
                .backend()
                .get(&stored_key(cache, key, keyargs)?)
                .await?;
            Ok(stored.map_or(Value::Null, |raw| describe(&raw)))
        }
        Op::Ttl { key, keyargs } => {
            let ttl = cache
                .backend()
                .ttl(&stored_key(cache, key, keyargs)?)
                .await?;
            Ok(ttl_json(ttl))
        }
        Op::Set {
            key,
            write,
            keyargs,
        } => {
            let (value, timeout) = write_args(write)?;
            addressed(cache, keyargs).set(key, &value, timeout).await?;
            Ok(Value::Bool(true))
        }
        Op::Add {
            key,
            write,
            keyargs,
        } => {
            let (value, timeout) = write_args(write)?;
            Ok(Value::Bool(
                addressed(cache, keyargs).add(key, &value, timeout).await?,
            ))
        }
        Op::Incr { key, by, keyargs } => incr(cache, key, *by, keyargs).await,
        Op::Decr { key, by, keyargs } => {
            let by = by
                .checked_neg()
                .ok_or_else(|| OpError::Usage(format!("cannot decrement by {by}")))?;
            incr(cache, key, by, keyargs).await
        }
        Op::Touch {
            key,
            seconds,
            keyargs,
        } => {
            let timeout = timeout(Some(*seconds), false)?;
            Ok(Value::Bool(
                addressed(cache, keyargs).touch(key, timeout).await?,
            ))
        }
        Op::Del { keys, keyargs } => {
            let stored = keys
                .iter()
                .map(|k| stored_key(cache, k, keyargs))
                .collect::<Result<Vec<_>, _>>()?;
            let removed = cache.backend().delete_many(&stored).await?;
            Ok(if keys.len() == 1 {
                Value::Bool(removed == 1)
            } else {
                json!(removed)
            })
        }
        Op::Clear { yes } => {
            if !yes {
                return Err(OpError::Usage(
                    "clear deletes every key of the cache; add --yes to confirm".into(),
                ));
            }
            clear(cache, progress).await
        }
        Op::Stats => {
            let stats = cache.stats().await?;
            let mut out = json!({
                "alias": stats.alias,
                "backend": stats.backend,
                "entries": stats.backend_stats.entries,
                "bytes": stats.backend_stats.bytes,
                "hits": stats.metrics.hits,
                "misses": stats.metrics.misses,
                "errors": stats.metrics.errors,
            });
            for (name, value) in stats.backend_stats.extra {
                out[name] = Value::String(value);
            }
            Ok(out)
        }
        Op::Createcachetable { dry_run } => create_cache_table(cache, *dry_run).await,
    }
}

/// Reached only through the admin endpoint: creating tables needs the cache's configuration,
/// which the command line has.
async fn create_cache_table(cache: &Cache, _dry_run: bool) -> Result<Value, OpError> {
    Err(OpError::Usage(format!(
        "run createcachetable with --cache URL or --config FILE, not through a running app (cache `{}`)",
        cache.alias()
    )))
}

/// Deletes the cache's keys (its prefix, every version) in batches, reporting progress, when
/// the backend can list keys; otherwise one `clear` call.
async fn clear(cache: &Cache, progress: &(dyn Fn(u64) + Sync)) -> Result<Value, OpError> {
    let pattern = format!(
        "{}*",
        webcache::glob_escape(&format!("{}:", cache.options().key_prefix))
    );
    let mut keys = cache.backend().scan(&pattern);
    let mut batch = Vec::with_capacity(CLEAR_BATCH);
    let mut removed = 0u64;
    let mut done = false;
    while !done {
        match keys.next().await {
            Some(Err(Error::Unsupported { .. })) => {
                cache.clear().await?;
                return Ok(Value::Bool(true));
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(key)) => batch.push(key),
            None => done = true,
        }
        if batch.len() >= CLEAR_BATCH || (done && !batch.is_empty()) {
            removed += cache.backend().delete_many(&batch).await?;
            batch.clear();
            progress(removed);
        }
    }
    Ok(json!(removed))
}

const CLEAR_BATCH: usize = 1000;

/// The cache as the command addresses it: `--version N` picks the version, `--raw` takes keys
/// as stored (a key function that leaves them alone), so every command runs through the same
/// `Cache` calls and their timeout rules.
fn addressed(cache: &Cache, keyargs: &KeyArgs) -> Cache {
    if keyargs.raw {
        return Cache::new(
            cache.backend().clone(),
            CacheOptions {
                key_function: KeyFunction::new(|_, _, key| key.to_owned()),
                // The backend is already wrapped when the cache has a near tier.
                near_ttl: None,
                ..cache.options().clone()
            },
        );
    }
    match keyargs.version {
        Some(v) => cache.with_version(v),
        None => cache.clone(),
    }
}

fn stored_key(cache: &Cache, key: &str, keyargs: &KeyArgs) -> Result<String, OpError> {
    Ok(addressed(cache, keyargs).make_key(key)?)
}

pub(crate) fn list_keys(cache: &Cache, pattern: &str, keyargs: &KeyArgs) -> webcache::KeyStream {
    if keyargs.raw {
        cache.backend().scan(pattern)
    } else {
        addressed(cache, keyargs).keys(pattern)
    }
}

async fn incr(cache: &Cache, key: &str, by: i64, keyargs: &KeyArgs) -> Result<Value, OpError> {
    Ok(json!(addressed(cache, keyargs).incr(key, by).await?))
}

fn write_args(write: &WriteArgs) -> Result<(Value, Timeout), OpError> {
    Ok((
        parse_value(&write.value)?,
        timeout(write.ttl, write.forever)?,
    ))
}

fn parse_value(text: &str) -> Result<Value, OpError> {
    serde_json::from_str(text).map_err(|e| {
        OpError::Usage(format!(
            "VALUE must be JSON ({e}); quote text as '\"text\"', numbers as 42, objects as '{{\"a\": 1}}'"
        ))
    })
}

fn timeout(seconds: Option<f64>, forever: bool) -> Result<Timeout, OpError> {
    match (seconds, forever) {
        (_, true) => Ok(Timeout::Forever),
        (None, false) => Ok(Timeout::Default),
        (Some(s), false) if s.is_finite() => Ok(Timeout::from(s)),
        (Some(s), false) => Err(OpError::Usage(format!("{s} is not a number of seconds"))),
    }
}

/// The remaining lifetime as `ttl` prints it: seconds, "forever", or null (missing).
pub(crate) fn ttl_json(ttl: Ttl) -> Value {
    match ttl {
        Ttl::Missing => Value::Null,
        Ttl::Forever => json!("forever"),
        Ttl::Remaining(d) => json!(round_ms(d)),
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A stored entry, decoded for people: JSON values as they are, integers as numbers, bytes as
/// text when they are UTF-8 or as a hex preview, cached pages as status, headers and size.
pub(crate) fn describe(raw: &Bytes) -> Value {
    match entry::decode(raw) {
        Ok(Decoded::Integer(n)) => json!(n),
        Ok(Decoded::Json(payload)) => serde_json::from_slice(&payload)
            .unwrap_or_else(|e| json!({"corrupt": format!("JSON entry that does not parse: {e}")})),
        Ok(Decoded::Bytes(bytes)) => describe_bytes(&bytes),
        Err(e) => json!({ "corrupt": e.to_string(), "size": raw.len(), "hex": hex_preview(raw) }),
    }
}

fn describe_bytes(bytes: &Bytes) -> Value {
    if let Some(page) = crate::pages::describe(bytes) {
        return page;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "bytes": bytes.len(), "hex": hex_preview(bytes) }),
    }
}

fn hex_preview(bytes: &[u8]) -> String {
    let mut out: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 32 {
        out.push_str("...");
    }
    out
}
