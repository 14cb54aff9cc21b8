//! The inspection commands, run against one cache. The command line, `webcache shell` and the
//! admin endpoint of `webcache serve` all call [`run`], so they behave identically.
//!
//! A [`Request`] is what to run (its own type, so the admin endpoint's wire format does not
//! follow the command-line syntax) and a [`Reply`] what came of it, typed, so the printer never
//! has to guess a result's meaning from its shape. One file per command.

mod clear;
mod createcachetable;
mod del;
mod get;
mod incr;
mod invalidate;
mod keys;
mod stats;
mod touch;
mod ttl;
mod write;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use webcache::{Cache, Error, KeyFunction, Timeout};

use crate::cli::{KeyArgs, Op, WriteArgs};

pub(crate) use createcachetable::create_cache_table;
pub(crate) use keys::stream as stream_keys;
pub(crate) use stats::{watch as watch_stats, Stats};
pub(crate) use ttl::Lifetime;

/// Why a command failed; the process exit code follows from it.
#[derive(Debug)]
pub(crate) enum OpError {
    /// The user's mistake (bad JSON value, invalid key, missing confirmation, refused by the
    /// app): exit code 2.
    Usage(String),
    /// The cache, its backend or the app failed: exit code 1.
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
            other => OpError::Failed(with_causes(&other)),
        }
    }
}

/// An error and the chain of its causes, `message: cause: cause`, so that what the server said
/// (e.g. PostgreSQL's "index row size ... exceeds btree maximum") reaches the user.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How a command addresses keys: a version, or the stored key as it is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Address {
    /// Key version (default: the cache's).
    #[serde(default)]
    pub(crate) version: Option<i64>,
    /// The key as stored (no prefix or version applied).
    #[serde(default)]
    pub(crate) raw: bool,
}

impl From<KeyArgs> for Address {
    fn from(k: KeyArgs) -> Self {
        Address {
            version: k.version,
            raw: k.raw,
        }
    }
}

/// What `set` and `add` store, and for how long.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Write {
    /// The value as JSON text (parsed where the command runs).
    pub(crate) value: String,
    /// Timeout in seconds; none: the cache's default.
    #[serde(default)]
    pub(crate) seconds: Option<f64>,
    /// Never expire.
    #[serde(default)]
    pub(crate) forever: bool,
}

impl From<WriteArgs> for Write {
    fn from(w: WriteArgs) -> Self {
        Write {
            value: w.value,
            seconds: w.ttl,
            forever: w.forever,
        }
    }
}

/// One command to run: what the admin endpoint receives, whatever the command-line syntax.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub(crate) enum Request {
    /// `keys`: the keys matching a glob pattern, at most `limit`.
    Keys {
        pattern: String,
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        address: Address,
    },
    /// `get`: a value, decoded.
    Get {
        key: String,
        #[serde(default)]
        address: Address,
    },
    /// `ttl`: the remaining lifetime.
    Ttl {
        key: String,
        #[serde(default)]
        address: Address,
    },
    /// `set`: store a JSON value.
    Set {
        key: String,
        write: Write,
        #[serde(default)]
        address: Address,
    },
    /// `add`: store a JSON value if the key is absent.
    Add {
        key: String,
        write: Write,
        #[serde(default)]
        address: Address,
    },
    /// `incr`: add to an integer.
    Incr {
        key: String,
        by: i64,
        #[serde(default)]
        address: Address,
    },
    /// `decr`: subtract from an integer.
    Decr {
        key: String,
        by: i64,
        #[serde(default)]
        address: Address,
    },
    /// `touch`: a new timeout.
    Touch {
        key: String,
        seconds: f64,
        #[serde(default)]
        address: Address,
    },
    /// `del`: delete keys, or with `pattern` every key matching these glob patterns.
    Del {
        keys: Vec<String>,
        #[serde(default)]
        pattern: bool,
        #[serde(default)]
        address: Address,
    },
    /// `clear`: delete every key of the cache, once confirmed.
    Clear { confirmed: bool },
    /// `invalidate --tag T`: invalidate tags.
    Invalidate { tags: Vec<String> },
    /// `purge URL`: drop a URL's page with all its variants.
    Purge { url: String, key_prefix: String },
    /// `stats`.
    Stats,
    /// `createcachetable`: refused through an app (it needs the configuration).
    Createcachetable { dry_run: bool },
}

impl From<Op> for Request {
    fn from(op: Op) -> Self {
        match op {
            Op::Keys {
                pattern,
                limit,
                key,
            } => Request::Keys {
                pattern,
                limit,
                address: key.into(),
            },
            Op::Get { key, keyargs } => Request::Get {
                key,
                address: keyargs.into(),
            },
            Op::Ttl { key, keyargs } => Request::Ttl {
                key,
                address: keyargs.into(),
            },
            Op::Set {
                key,
                write,
                keyargs,
            } => Request::Set {
                key,
                write: write.into(),
                address: keyargs.into(),
            },
            Op::Add {
                key,
                write,
                keyargs,
            } => Request::Add {
                key,
                write: write.into(),
                address: keyargs.into(),
            },
            Op::Incr { key, by, keyargs } => Request::Incr {
                key,
                by,
                address: keyargs.into(),
            },
            Op::Decr { key, by, keyargs } => Request::Decr {
                key,
                by,
                address: keyargs.into(),
            },
            Op::Touch {
                key,
                seconds,
                keyargs,
            } => Request::Touch {
                key,
                seconds,
                address: keyargs.into(),
            },
            Op::Del {
                keys,
                pattern,
                keyargs,
            } => Request::Del {
                keys,
                pattern,
                address: keyargs.into(),
            },
            Op::Clear { yes } => Request::Clear { confirmed: yes },
            Op::Invalidate { tags } => Request::Invalidate { tags },
            Op::Purge { url, key_prefix } => Request::Purge { url, key_prefix },
            Op::Stats { .. } => Request::Stats,
            Op::Createcachetable { dry_run } => Request::Createcachetable { dry_run },
        }
    }
}

/// What a command produced.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", content = "data", rename_all = "lowercase")]
pub(crate) enum Reply {
    /// `keys`: the keys found.
    Keys(Vec<String>),
    /// `get`: the entry decoded for people ([`get::describe`]), or none.
    Value(Option<Value>),
    /// `ttl`.
    Ttl(Lifetime),
    /// `set`.
    Stored,
    /// `add`: whether it stored (false: the key exists).
    Added(bool),
    /// `incr`/`decr`: the new value.
    Number(i64),
    /// `touch`: whether the key was there.
    Touched(bool),
    /// `del`: how many keys were named and how many were there.
    Deleted { asked: usize, removed: u64 },
    /// `del --pattern`: how many matching keys were deleted (a count, even for one).
    DeletedMatching(u64),
    /// `clear`: how many keys went, or none when the backend cleared everything in one call.
    Cleared(Option<u64>),
    /// `invalidate`: how many tags were invalidated.
    Invalidated(usize),
    /// `purge`: whether a page was stored.
    Purged(bool),
    /// `stats`.
    Stats(Stats),
    /// `createcachetable --dry-run`: the SQL.
    Sql(String),
    /// `createcachetable`: the alias whose table was created, and the SQL run.
    TableCreated { alias: String, sql: String },
}

impl Reply {
    /// The result as `--json` prints it (`{"ok": true, "result": ...}`).
    pub(crate) fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Reply::Keys(keys) => json!(keys),
            Reply::Value(value) => value.clone().unwrap_or(Value::Null),
            Reply::Ttl(lifetime) => lifetime.to_json(),
            Reply::Stored => json!(true),
            Reply::Added(b) | Reply::Touched(b) => json!(b),
            Reply::Number(n) => json!(n),
            Reply::Deleted { asked: 1, removed } => json!(*removed == 1),
            Reply::Deleted { removed, .. } | Reply::DeletedMatching(removed) => json!(removed),
            Reply::Cleared(None) => json!(true),
            Reply::Cleared(Some(n)) => json!(n),
            Reply::Invalidated(n) => json!(n),
            Reply::Purged(b) => json!(b),
            Reply::Stats(stats) => stats.to_json(),
            Reply::Sql(sql) => json!(sql),
            Reply::TableCreated { alias, sql } => json!({ "created": alias, "sql": sql }),
        }
    }
}

/// Runs one command. `progress` hears how many keys a long `clear` or `del --pattern` has
/// removed so far.
pub(crate) async fn run(
    cache: &Cache,
    request: Request,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Reply, OpError> {
    match request {
        Request::Keys {
            pattern,
            limit,
            address,
        } => keys::run(cache, &pattern, limit, address, progress).await,
        Request::Get { key, address } => get::run(&addressed(cache, address), &key).await,
        Request::Ttl { key, address } => ttl::run(&addressed(cache, address), &key).await,
        Request::Set {
            key,
            write,
            address,
        } => write::set(&addressed(cache, address), &key, write).await,
        Request::Add {
            key,
            write,
            address,
        } => write::add(&addressed(cache, address), &key, write).await,
        Request::Incr { key, by, address } => incr::run(&addressed(cache, address), &key, by).await,
        Request::Decr { key, by, address } => {
            let by = by
                .checked_neg()
                .ok_or_else(|| OpError::Usage(format!("cannot decrement by {by}")))?;
            incr::run(&addressed(cache, address), &key, by).await
        }
        Request::Touch {
            key,
            seconds,
            address,
        } => touch::run(&addressed(cache, address), &key, seconds).await,
        Request::Del {
            keys,
            pattern: false,
            address,
        } => del::run(&addressed(cache, address), &keys).await,
        Request::Del {
            keys: patterns,
            pattern: true,
            address,
        } => del::matching(cache, &patterns, address, progress).await,
        Request::Clear { confirmed } => clear::run(cache, confirmed, progress).await,
        Request::Invalidate { tags } => invalidate::tags(cache, &tags).await,
        Request::Purge { url, key_prefix } => invalidate::purge(cache, &url, &key_prefix).await,
        Request::Stats => stats::run(cache).await,
        Request::Createcachetable { .. } => createcachetable::refuse(cache),
    }
}

/// The cache as the command addresses it: `--version N` picks the version, `--raw` takes keys
/// as stored (a key function that leaves them alone), so every command runs through the same
/// `Cache` calls and their timeout, degrade and metrics rules.
fn addressed(cache: &Cache, address: Address) -> Cache {
    if address.raw {
        return Cache::new(
            cache.backend().clone(),
            cache
                .options()
                .to_builder()
                .key_function(KeyFunction::new(|_, _, key| key.to_owned()))
                // The backend is already wrapped when the cache has a near tier.
                .near_ttl(None)
                .build(),
        );
    }
    match address.version {
        Some(v) => cache.with_version(v),
        None => cache.clone(),
    }
}

/// A timeout from seconds (none: the cache's default) or `--forever`.
fn timeout(seconds: Option<f64>, forever: bool) -> Result<Timeout, OpError> {
    match (seconds, forever) {
        (_, true) => Ok(Timeout::Forever),
        (None, false) => Ok(Timeout::Default),
        (Some(s), false) if s.is_finite() => Ok(Timeout::from(s)),
        (Some(s), false) => Err(OpError::Usage(format!("{s} is not a number of seconds"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_its_causes() {
        let io = std::io::Error::other("index row size 3016 exceeds btree maximum 2704");
        let e = Error::backend("postgres", "set failed", io);
        let OpError::Failed(text) = OpError::from(e) else {
            panic!("a backend failure is not a usage error");
        };
        assert_eq!(
            text,
            "postgres failed: set failed: index row size 3016 exceeds btree maximum 2704"
        );
    }
}
