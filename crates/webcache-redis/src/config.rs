//! Reading a Redis cache URL and its options into a [`RedisConfig`].

use std::time::Duration;

use webcache_core::config::{redact, BackendSpec, ConfigError};

/// Connection attempts give up after this long unless `connect_timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Commands give up after this long unless `response_timeout` says otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

const NODE_EXAMPLE: &str =
    "expected `redis://[user:pass@]host:port/db`, for example `redis://127.0.0.1:6379/2`";
const CLUSTER_EXAMPLE: &str =
    "expected `redis+cluster://[user:pass@]host1:port1,host2:port2`, for example `redis+cluster://10.0.0.1:7000,10.0.0.2:7000`";

/// The options [`from_spec`](crate::from_spec) accepts besides the common ones.
pub const OPTIONS: &[&str] = &[
    "connect_timeout",
    "response_timeout",
    "replicas",
    "wait_replicas",
    "read_from_replicas",
    "clear",
    "tls",
    "tls_ca_file",
];

/// What `clear` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClearMode {
    /// `SCAN` for the cache's prefix and `UNLINK` what it finds: other data in the same
    /// database survives (the default).
    #[default]
    Prefix,
    /// `FLUSHDB`: empties the whole database, prefix or not. Only when asked for with
    /// `clear=flushdb`.
    FlushDb,
}

/// Where a Redis backend connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One primary (`redis://` or `rediss://`) and optionally replicas that serve reads.
    Primary {
        /// The primary's URL (with its password, if any).
        primary: String,
        /// The replicas' URLs.
        replicas: Vec<String>,
        /// The database number (`/2`).
        db: i64,
    },
    /// A Redis Cluster (`redis+cluster://`), reached through any of these seed nodes.
    Cluster {
        /// One `redis://` URL per seed node.
        nodes: Vec<String>,
        /// Whether reads may be served by the masters' replicas.
        read_from_replicas: bool,
    },
}

/// Everything a [`RedisBackend`](crate::RedisBackend) needs to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where to connect.
    pub target: Target,
    /// The URL for messages, with any password hidden.
    pub label: String,
    /// Bound on each connection attempt.
    pub connect_timeout: Duration,
    /// Bound on each command's answer.
    pub response_timeout: Duration,
    /// After each write, wait until this many replicas acknowledged it (`WAIT`), so that reads
    /// from replicas see it. 0 (the default) does not wait: replication is asynchronous.
    pub wait_replicas: u32,
    /// What `clear` does.
    pub clear: ClearMode,
    /// A PEM root certificate to trust for TLS instead of the system's (`tls_ca_file`), for
    /// servers with a private certificate authority.
    pub tls_root_cert: Option<Vec<u8>>,
}

impl RedisConfig {
    /// A configuration for one `redis://` or `rediss://` URL with default options.
    pub fn single(url: &str) -> Result<Self, String> {
        let db = parse_node_url(url)?;
        Ok(RedisConfig {
            target: Target::Primary {
                primary: url.to_owned(),
                replicas: Vec::new(),
                db,
            },
            label: redact(url),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            wait_replicas: 0,
            clear: ClearMode::Prefix,
            tls_root_cert: None,
        })
    }

    /// Reads a backend specification (`redis://`, `rediss://` or `redis+cluster://`, with
    /// the options in [`OPTIONS`]); refuses unknown options.
    pub fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let connect_timeout = positive(spec, "connect_timeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let response_timeout =
            positive(spec, "response_timeout")?.unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        let replicas = spec.take_str("replicas");
        let wait_replicas: Option<u32> =
            spec.take("wait_replicas", "a whole number of replicas such as 1")?;
        let read_from_replicas: Option<bool> =
            spec.take("read_from_replicas", "`true` or `false`")?;
        let clear = match spec.take_str("clear").as_deref() {
            None | Some("prefix") => ClearMode::Prefix,
            Some("flushdb") => ClearMode::FlushDb,
            Some(other) => {
                return Err(spec.error(
                    "clear",
                    format!("`{other}` is not accepted; use \"prefix\" (remove only this cache's keys, the default) or \"flushdb\" (empty the whole database)"),
                ))
            }
        };
        let cluster_tls: Option<bool> = spec.take("tls", "`true` or `false`")?;
        let tls_ca_file = spec.take_str("tls_ca_file");
        spec.finish(OPTIONS)?;
        let label = spec.redacted_url();
        let tls_root_cert = match &tls_ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                spec.error(
                    "tls_ca_file",
                    format!("cannot read `{path}`: {e}; give the path of a PEM certificate"),
                )
            })?),
        };
        let target = if spec.scheme == "redis+cluster" {
            if replicas.is_some() || wait_replicas.is_some() {
                return Err(spec.error(
                    "replicas",
                    "a Redis Cluster finds its replicas itself; drop `replicas`/`wait_replicas` and use `read_from_replicas=true` to read from them",
                ));
            }
            let tls = cluster_tls.unwrap_or(false);
            if tls_root_cert.is_some() {
                // The client's cluster connections take custom roots only with rustls, and
                // this build uses the system's TLS library.
                return Err(spec.error(
                    "tls_ca_file",
                    "is not supported with `redis+cluster://`; add the CA to the system's trust store and use `tls=true`",
                ));
            }
            let nodes = cluster_nodes(&spec.location, tls).map_err(|m| spec.error("url", m))?;
            Target::Cluster {
                nodes,
                read_from_replicas: read_from_replicas.unwrap_or(false),
            }
        } else {
            if read_from_replicas.is_some() {
                return Err(spec.error(
                    "read_from_replicas",
                    "only for `redis+cluster://`; with one primary, list the replicas in `replicas=redis://host:port/db,...`",
                ));
            }
            if cluster_tls.is_some() {
                return Err(spec.error(
                    "tls",
                    format!("only for `redis+cluster://`; for one server use the `rediss://` scheme, e.g. `rediss://{}`", spec.location),
                ));
            }
            if tls_root_cert.is_some() && spec.scheme != "rediss" {
                return Err(spec.error(
                    "tls_ca_file",
                    format!(
                        "is only used over TLS; use the `rediss://` scheme, e.g. `rediss://{}`",
                        spec.location
                    ),
                ));
            }
            let primary = spec.url.clone();
            let db = parse_node_url(&primary).map_err(|m| spec.error("url", m))?;
            let replicas: Vec<String> = replicas
                .iter()
                .flat_map(|list| list.split(','))
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            for replica in &replicas {
                let replica_db = parse_node_url(replica).map_err(|m| spec.error("replicas", m))?;
                if replica_db != db {
                    return Err(spec.error(
                        "replicas",
                        format!(
                            "`{}` uses database {replica_db} but the primary uses database {db}; give every replica the primary's `/{db}`",
                            redact(replica)
                        ),
                    ));
                }
            }
            if wait_replicas.unwrap_or(0) as usize > replicas.len() {
                return Err(spec.error(
                    "wait_replicas",
                    format!(
                        "{} is more than the {} replicas listed in `replicas`",
                        wait_replicas.unwrap_or(0),
                        replicas.len()
                    ),
                ));
            }
            Target::Primary {
                primary,
                replicas,
                db,
            }
        };
        Ok(RedisConfig {
            target,
            label,
            connect_timeout,
            response_timeout,
            wait_replicas: wait_replicas.unwrap_or(0),
            clear,
            tls_root_cert,
        })
    }
}

fn positive(spec: &mut BackendSpec, name: &str) -> Result<Option<Duration>, ConfigError> {
    match spec.take_seconds(name)? {
        Some(d) if d.is_zero() => Err(spec.error(
            name,
            "0 would fail every call; give a number of seconds such as 1 or 0.25",
        )),
        other => Ok(other),
    }
}

/// Checks a `redis://` or `rediss://` URL and returns its database number.
fn parse_node_url(url: &str) -> Result<i64, String> {
    let shown = redact(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{shown}` is not a Redis URL; {NODE_EXAMPLE}"));
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err(format!(
            "`{shown}` has the scheme `{scheme}`; {NODE_EXAMPLE} (or `rediss://` for TLS)"
        ));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    check_host_port(host_port).map_err(|m| format!("`{shown}`: {m}; {NODE_EXAMPLE}"))?;
    let db = match path.trim_end_matches('/') {
        "" => 0,
        digits => digits
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| {
                format!("`{shown}`: the database `/{digits}` is not a number; {NODE_EXAMPLE}")
            })?,
    };
    redis::Client::open(url)
        .map_err(|e| format!("`{shown}` is not a usable Redis URL ({e}); {NODE_EXAMPLE}"))?;
    Ok(db)
}

fn check_host_port(host_port: &str) -> Result<(), String> {
    let (host, port) = match host_port.rsplit_once(':') {
        // An IPv6 address without a port: `[::1]`.
        Some((_, p)) if p.ends_with(']') => (host_port, None),
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if let Some(port) = port {
        if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
            return Err(format!("the port `{port}` is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// Splits `[user:pass@]h1:p1,h2:p2` into one `redis://` (or `rediss://`) URL per node.
fn cluster_nodes(location: &str, tls: bool) -> Result<Vec<String>, String> {
    let scheme = if tls { "rediss" } else { "redis" };
    let (userinfo, hosts) = match location.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, location),
    };
    let (hosts, path) = hosts.split_once('/').unwrap_or((hosts, ""));
    if !matches!(path.trim_end_matches('/'), "" | "0") {
        return Err(format!(
            "Redis Cluster has only database 0, so `/{path}` cannot be used; {CLUSTER_EXAMPLE}"
        ));
    }
    let mut nodes = Vec::new();
    for node in hosts.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        check_host_port(node).map_err(|m| format!("node `{node}`: {m}; {CLUSTER_EXAMPLE}"))?;
        let url = match userinfo {
            Some(u) => format!("{scheme}://{u}@{node}"),
            None => format!("{scheme}://{node}"),
        };
        redis::Client::open(url.as_str())
            .map_err(|e| format!("node `{node}` is not usable ({e}); {CLUSTER_EXAMPLE}"))?;
        nodes.push(url);
    }
    if nodes.is_empty() {
        return Err(format!("no nodes given; {CLUSTER_EXAMPLE}"));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use webcache_core::CacheConfig;

    fn parse(url: &str) -> Result<RedisConfig, String> {
        let mut spec = CacheConfig::from_url("default", url)
            .map_err(|e| e.to_string())?
            .backend;
        RedisConfig::from_spec(&mut spec).map_err(|e| e.to_string())
    }

    #[test]
    fn single_node_with_db_and_options() {
        let c = parse("redis://u:secret@127.0.0.1:6379/2?connect_timeout=0.5&response_timeout=2")
            .unwrap();
        assert_eq!(
            c.target,
            Target::Primary {
                primary: "redis://u:secret@127.0.0.1:6379/2".into(),
                replicas: vec![],
                db: 2
            }
        );
        assert_eq!(c.label, "redis://u:***@127.0.0.1:6379/2");
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.response_timeout, Duration::from_secs(2));
        assert_eq!(c.clear, ClearMode::Prefix);
    }

    #[test]
    fn replicas_and_cluster() {
        let c =
            parse("redis://h:1/3?replicas=redis://r1:2/3,redis://r2:3/3&wait_replicas=2").unwrap();
        let Target::Primary { replicas, .. } = &c.target else {
            panic!("{c:?}")
        };
        assert_eq!(replicas, &["redis://r1:2/3", "redis://r2:3/3"]);
        assert_eq!(c.wait_replicas, 2);
        let c =
            parse("redis+cluster://a:7000,b:7001?read_from_replicas=true&clear=flushdb").unwrap();
        assert_eq!(
            c.target,
            Target::Cluster {
                nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()],
                read_from_replicas: true
            }
        );
        assert_eq!(c.clear, ClearMode::FlushDb);
    }

    #[test]
    fn mistakes_name_the_field_and_show_an_example() {
        for (url, field, words) in [
            ("redis://h:port/2", "url", "the port `port`"),
            (
                "redis://h:6379/two",
                "url",
                "database `/two` is not a number",
            ),
            ("redis://:6379/2", "url", "host is missing"),
            ("redis://u:pw@h:0/2", "url", "`redis://u:***@h:0/2`"),
            (
                "redis://h/1?replicas=redis://r/2",
                "replicas",
                "uses database 2",
            ),
            (
                "redis://h/1?replicas=http://r/1",
                "replicas",
                "scheme `http`",
            ),
            (
                "redis://h/1?wait_replicas=1",
                "wait_replicas",
                "more than the 0 replicas",
            ),
            (
                "redis://h/1?connect_timeout=0",
                "connect_timeout",
                "0 would fail",
            ),
            ("redis://h/1?clear=all", "clear", "\"flushdb\""),
            (
                "redis://h/1?read_from_replicas=true",
                "read_from_replicas",
                "only for",
            ),
            (
                "redis://h/1?colour=red",
                "colour",
                "accepted options: connect_timeout",
            ),
            ("redis+cluster://a:1,b:x", "url", "node `b:x`"),
            ("redis+cluster://a:1/3", "url", "only database 0"),
            ("redis+cluster://", "url", "no nodes"),
            ("redis://h/1?tls=true", "tls", "`rediss://h/1`"),
            (
                "redis://h/1?tls_ca_file=/etc/hosts",
                "tls_ca_file",
                "`rediss://h/1`",
            ),
            (
                "rediss://h/1?tls_ca_file=/nonexistent/ca.pem",
                "tls_ca_file",
                "cannot read `/nonexistent/ca.pem`",
            ),
            (
                "redis+cluster://a:1?tls=true&tls_ca_file=/etc/hosts",
                "tls_ca_file",
                "trust store",
            ),
        ] {
            let err = parse(url).unwrap_err();
            assert!(err.contains(&format!("`{field}`")), "{url}: {err}");
            assert!(err.contains(words), "{url}: {err}");
            assert!(!err.contains(":pw@"), "password shown: {err}");
            if field == "url" {
                assert!(err.contains("for example"), "{url}: {err}");
            }
        }
    }
}
