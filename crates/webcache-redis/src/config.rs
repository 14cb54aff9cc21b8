//! Reading a Redis cache URL and its options into a [`RedisConfig`].

use std::time::Duration;

use webcache_core::config::{redact, BackendSpec, CacheConfig, ConfigError};

/// Connection attempts give up after this long unless `connect_timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Commands give up after this long unless `response_timeout` says otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

const NODE_EXAMPLE: &str =
    "expected `redis://[user:pass@]host:port/db`, for example `redis://127.0.0.1:6379/2`";
const UNIX_EXAMPLE: &str =
    "expected `redis+unix:///path/to/redis.sock`, database as the option `db` (0 if left out), for example `redis+unix:///run/redis/redis.sock?db=2`";
const CLUSTER_EXAMPLE: &str =
    "expected `redis+cluster://[user:pass@]host1:port1,host2:port2`, for example `redis+cluster://10.0.0.1:7000,10.0.0.2:7000`";
const SENTINEL_EXAMPLE: &str =
    "expected `redis+sentinel://[user:pass@]sentinel1:port,sentinel2:port/master-name/db`, for example `redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/2`";
const SHARDS_EXAMPLE: &str =
    "expected `redis://[user:pass@]host1:port1,host2:port2/db` (one independent server per shard), for example `redis://10.0.0.1:6379,10.0.0.2:6379/0`";

/// The options [`RedisFactory`](crate::RedisFactory) accepts besides the common ones.
pub(crate) const OPTIONS: &[&str] = &[
    "connect_timeout",
    "response_timeout",
    "replicas",
    "wait_replicas",
    "read_from_replicas",
    "clear",
    "tls",
    "tls_ca_file",
    "sentinel_password",
    "db",
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
    /// A master found through Redis Sentinel (`redis+sentinel://`), followed across failovers.
    Sentinel {
        /// One `redis://` (or `rediss://`) URL per sentinel, with `sentinel_password` if given.
        sentinels: Vec<String>,
        /// The name the sentinels know the master by (`mymaster`).
        service: String,
        /// The database number on the master and its replicas.
        db: i64,
        /// The user for the master and its replicas (the URL's `user:pass@`).
        username: Option<String>,
        /// The password for the master and its replicas.
        password: Option<String>,
        /// Whether the master and its replicas are reached over TLS (`tls=true`).
        tls: bool,
        /// Whether reads go to a replica the sentinels name.
        read_from_replicas: bool,
    },
    /// Independent servers, each holding the keys a consistent-hash ring gives it
    /// (`redis://h1:p1,h2:p2/db`).
    Shards {
        /// One `redis://` (or `rediss://`) URL per shard, in configuration order.
        shards: Vec<String>,
        /// The shards' `host:port` names, which place them on the ring.
        names: Vec<String>,
    },
}

/// Everything a [`RedisBackend`](crate::RedisBackend) needs to connect: built by
/// [`RedisConfig::single`] or from a URL, then adjusted through the fields
/// (`#[non_exhaustive]`, so an option added later breaks no caller).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// A configuration for one `redis://`, `rediss://` or `redis+unix://` URL with default
    /// options (a socket's database as its option: `redis+unix:///path?db=2`).
    pub fn single(url: &str) -> Result<Self, String> {
        if url.starts_with("redis+unix:") {
            let mut spec = CacheConfig::from_url("default", url)
                .map_err(|e| e.to_string())?
                .backend;
            return Self::from_spec(&mut spec).map_err(|e| e.to_string());
        }
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

    /// Reads a backend specification (`redis://`, `rediss://`, `redis+unix://`,
    /// `redis+cluster://` or `redis+sentinel://`, with the options [`RedisFactory`](crate::RedisFactory) lists); refuses unknown options.
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
        let sentinel_password = spec.take_str("sentinel_password");
        let unix_db: Option<i64> = spec.take("db", "a database number such as 0 or 2")?;
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
        if sentinel_password.is_some() && spec.scheme != "redis+sentinel" {
            return Err(spec.error(
                "sentinel_password",
                "only for `redis+sentinel://`; give a server's password in the URL (`redis://user:pass@host/db`)",
            ));
        }
        if unix_db.is_some() && spec.scheme != "redis+unix" {
            return Err(spec.error(
                "db",
                format!(
                    "only for `redis+unix://`; over TCP the database is the URL's path, e.g. `{}://host:6379/2`",
                    spec.scheme
                ),
            ));
        }
        let target = if spec.scheme == "redis+unix" {
            let given = [
                ("replicas", replicas.is_some()),
                ("wait_replicas", wait_replicas.is_some()),
                ("read_from_replicas", read_from_replicas.is_some()),
            ];
            if let Some((field, _)) = given.iter().find(|(_, given)| *given) {
                return Err(spec.error(
                    field,
                    "a `redis+unix://` server is reached alone (its replicas are on other machines); use `redis://` URLs for a primary with replicas",
                ));
            }
            if cluster_tls.is_some() || tls_root_cert.is_some() {
                return Err(spec.error(
                    "tls",
                    "a Unix socket is not encrypted (it never leaves the machine); drop `tls`/`tls_ca_file`",
                ));
            }
            let db = unix_db.unwrap_or(0);
            if db < 0 {
                return Err(spec.error("db", format!("`{db}` is below 0; {UNIX_EXAMPLE}")));
            }
            let primary = unix_url(&spec.location, db).map_err(|m| spec.error("url", m))?;
            Target::Primary {
                primary,
                replicas: Vec::new(),
                db,
            }
        } else if spec.scheme == "redis+sentinel" {
            if replicas.is_some() {
                return Err(spec.error(
                    "replicas",
                    "the sentinels name the replicas; drop `replicas` and use `read_from_replicas=true` to read from them",
                ));
            }
            if tls_root_cert.is_some() {
                // The client's sentinel connections take custom roots only with rustls, and
                // this build uses the system's TLS library.
                return Err(spec.error(
                    "tls_ca_file",
                    "is not supported with `redis+sentinel://`; add the CA to the system's trust store and use `tls=true`",
                ));
            }
            sentinel_target(
                &spec.location,
                cluster_tls.unwrap_or(false),
                sentinel_password.as_deref(),
                read_from_replicas.unwrap_or(false),
            )
            .map_err(|m| spec.error("url", m))?
        } else if spec.scheme == "redis+cluster" {
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
                    "only for `redis+cluster://` and `redis+sentinel://`; with one primary, list the replicas in `replicas=redis://host:port/db,...`",
                ));
            }
            if cluster_tls.is_some() {
                return Err(spec.error(
                    "tls",
                    format!("only for `redis+cluster://` and `redis+sentinel://`; for servers named in the URL use the `rediss://` scheme, e.g. `rediss://{}`", spec.location),
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
            if is_shard_list(&spec.location) {
                if replicas.is_some() || wait_replicas.is_some() {
                    return Err(spec.error(
                        "replicas",
                        "shards are independent servers without replicas here; drop `replicas`/`wait_replicas`, or use `redis+sentinel://` per shard group",
                    ));
                }
                let (shards, names) =
                    shard_urls(&spec.scheme, &spec.location).map_err(|m| spec.error("url", m))?;
                return Ok(RedisConfig {
                    target: Target::Shards { shards, names },
                    label,
                    connect_timeout,
                    response_timeout,
                    wait_replicas: 0,
                    clear,
                    tls_root_cert,
                });
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

/// The URL the client opens for the socket at `path` (`redis+unix:///path?db=N`), after
/// checking the path: absolute, no password (a socket is protected by its file permissions,
/// `unixsocketperm`), and only characters a URL carries as they are.
fn unix_url(path: &str, db: i64) -> Result<String, String> {
    if path.contains('@') {
        return Err(format!(
            "`{}`: a password is not taken for a socket; protect the socket with its file permissions (`unixsocketperm` in redis.conf); {UNIX_EXAMPLE}",
            redact(&format!("redis+unix://{path}"))
        ));
    }
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!(
            "`{path}` is not an absolute path to a socket; {UNIX_EXAMPLE}"
        ));
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-~".contains(c);
    if let Some(c) = path.chars().find(|c| !plain(*c)) {
        return Err(format!(
            "`{path}` holds `{c}`; give the socket a path of letters, digits and `/._-~`"
        ));
    }
    let url = format!("redis+unix://{path}?db={db}");
    redis::Client::open(url.as_str())
        .map_err(|e| format!("`{path}` is not a usable socket path ({e}); {UNIX_EXAMPLE}"))?;
    Ok(url)
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

/// Whether the location of a `redis://` URL lists several servers (`h1:p1,h2:p2/db`): client-
/// side sharding. No single host name holds a comma, so the list is not ambiguous.
fn is_shard_list(location: &str) -> bool {
    let authority = location.split('/').next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hosts.contains(',')
}

/// One URL per shard of `[user:pass@]h1:p1,h2:p2/db`, and the shards' `host:port` names
/// (their place on the ring).
fn shard_urls(scheme: &str, location: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let (userinfo, rest) = match location.split('/').next().unwrap_or("").rsplit_once('@') {
        Some((u, _)) => (Some(u), &location[u.len() + 1..]),
        None => (None, location),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let db = match path.trim_end_matches('/') {
        "" => 0,
        digits => digits
            .parse::<u32>()
            .map_err(|_| format!("the database `/{digits}` is not a number; {SHARDS_EXAMPLE}"))?,
    };
    let mut urls = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for node in hosts.split(',').map(str::trim) {
        if node.is_empty() {
            return Err(format!("an empty server in the list; {SHARDS_EXAMPLE}"));
        }
        check_host_port(node).map_err(|m| format!("shard `{node}`: {m}; {SHARDS_EXAMPLE}"))?;
        if names.iter().any(|n| n == node) {
            return Err(format!(
                "shard `{node}` is listed twice; list each server once; {SHARDS_EXAMPLE}"
            ));
        }
        let url = match userinfo {
            Some(u) => format!("{scheme}://{u}@{node}/{db}"),
            None => format!("{scheme}://{node}/{db}"),
        };
        redis::Client::open(url.as_str())
            .map_err(|e| format!("shard `{node}` is not usable ({e}); {SHARDS_EXAMPLE}"))?;
        urls.push(url);
        names.push(node.to_owned());
    }
    Ok((urls, names))
}

/// Reads `[user:pass@]s1:p1,s2:p2/service[/db]` into a [`Target::Sentinel`].
fn sentinel_target(
    location: &str,
    tls: bool,
    sentinel_password: Option<&str>,
    read_from_replicas: bool,
) -> Result<Target, String> {
    let authority = location.split('/').next().unwrap_or("");
    let (userinfo, rest) = match authority.rsplit_once('@') {
        Some((u, _)) => (Some(u), &location[u.len() + 1..]),
        None => (None, location),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut parts = path.trim_end_matches('/').split('/');
    let service = parts.next().unwrap_or("");
    if service.is_empty() {
        return Err(format!(
            "the master's name (as in the sentinels' `sentinel monitor NAME ...`) is missing; {SENTINEL_EXAMPLE}"
        ));
    }
    if service.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the master's name `{}` holds spaces or control characters; {SENTINEL_EXAMPLE}",
            service.escape_debug()
        ));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(digits) => digits
            .parse::<u32>()
            .map_err(|_| format!("the database `/{digits}` is not a number; {SENTINEL_EXAMPLE}"))?,
    };
    if let Some(extra) = parts.next() {
        return Err(format!(
            "`/{extra}` follows the database; {SENTINEL_EXAMPLE}"
        ));
    }
    // The URL's credentials are for the master and its replicas, decoded as a URL would be.
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let probe = redis::IntoConnectionInfo::into_connection_info(
                format!("redis://{info}@localhost").as_str(),
            )
            .map_err(|e| format!("the user or password is not usable ({e}); {SENTINEL_EXAMPLE}"))?;
            let settings = probe.redis_settings();
            (
                settings.username().map(str::to_owned),
                settings.password().map(str::to_owned),
            )
        }
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let auth = match sentinel_password {
        None => String::new(),
        Some(p) => format!(
            ":{}@",
            percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC)
        ),
    };
    let mut sentinels = Vec::new();
    for node in hosts.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        check_host_port(node).map_err(|m| format!("sentinel `{node}`: {m}; {SENTINEL_EXAMPLE}"))?;
        let url = format!("{scheme}://{auth}{node}");
        redis::Client::open(url.as_str())
            .map_err(|e| format!("sentinel `{node}` is not usable ({e}); {SENTINEL_EXAMPLE}"))?;
        sentinels.push(url);
    }
    if sentinels.is_empty() {
        return Err(format!("no sentinels given; {SENTINEL_EXAMPLE}"));
    }
    Ok(Target::Sentinel {
        sentinels,
        service: service.to_owned(),
        db: i64::from(db),
        username,
        password,
        tls,
        read_from_replicas,
    })
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
    fn sentinel_urls() {
        let c = parse(
            "redis+sentinel://u:p%40ss@s1:26379,s2:26380/mymaster/2?read_from_replicas=true&sentinel_password=s%20pw&wait_replicas=1",
        )
        .unwrap();
        assert_eq!(
            c.target,
            Target::Sentinel {
                sentinels: vec![
                    "redis://:s%20pw@s1:26379".into(),
                    "redis://:s%20pw@s2:26380".into()
                ],
                service: "mymaster".into(),
                db: 2,
                username: Some("u".into()),
                password: Some("p@ss".into()),
                tls: false,
                read_from_replicas: true,
            }
        );
        assert_eq!(c.wait_replicas, 1);
        assert_eq!(
            c.label,
            "redis+sentinel://u:***@s1:26379,s2:26380/mymaster/2"
        );
        let c = parse("redis+sentinel://s1:26379/cache?tls=true").unwrap();
        let Target::Sentinel {
            sentinels,
            db,
            tls,
            password,
            ..
        } = &c.target
        else {
            panic!("{c:?}")
        };
        assert_eq!(sentinels, &["rediss://s1:26379"]);
        assert_eq!((*db, *tls, password.as_deref()), (0, true, None));
    }

    #[test]
    fn unix_socket_urls() {
        let c = parse("redis+unix:///run/redis/redis-server.sock?db=2&response_timeout=2").unwrap();
        assert_eq!(
            c.target,
            Target::Primary {
                primary: "redis+unix:///run/redis/redis-server.sock?db=2".into(),
                replicas: vec![],
                db: 2
            }
        );
        assert_eq!(c.response_timeout, Duration::from_secs(2));
        let Target::Primary { primary, db, .. } = parse("redis+unix:///tmp/r.sock").unwrap().target
        else {
            panic!("not a primary")
        };
        assert_eq!((primary.as_str(), db), ("redis+unix:///tmp/r.sock?db=0", 0));
        // `RedisBackend::from_url`'s form reads it the same way.
        let single = RedisConfig::single("redis+unix:///tmp/r.sock?db=3").unwrap();
        assert_eq!(
            single.target,
            Target::Primary {
                primary: "redis+unix:///tmp/r.sock?db=3".into(),
                replicas: vec![],
                db: 3
            }
        );
        // Each mistake is named, with what to write instead.
        for (url, field, words) in [
            ("redis+unix://tmp/r.sock", "url", "not an absolute path"),
            ("redis+unix:///", "url", "not an absolute path"),
            ("redis+unix://u:secret@/tmp/r.sock", "url", "unixsocketperm"),
            ("redis+unix:///tmp/my redis.sock", "url", "letters, digits"),
            ("redis+unix:///tmp/r.sock?db=-1", "db", "below 0"),
            ("redis+unix:///tmp/r.sock?db=two", "db", "database number"),
            (
                "redis+unix:///tmp/r.sock?replicas=redis://h:1/0",
                "replicas",
                "redis://",
            ),
            (
                "redis+unix:///tmp/r.sock?read_from_replicas=true",
                "read_from_replicas",
                "alone",
            ),
            ("redis+unix:///tmp/r.sock?tls=true", "tls", "not encrypted"),
            ("redis://h:6379/0?db=2", "db", "URL's path"),
        ] {
            let error = parse(url).unwrap_err();
            assert!(
                error.contains(field) && error.contains(words),
                "{url}: {error}"
            );
            assert!(!error.contains("secret"), "{url}: {error}");
        }
    }

    /// The TOML form: the URL in `url`, the options as fields of the alias.
    #[test]
    fn sentinel_and_shards_from_toml() {
        let text = r#"
            [caches.default]
            url = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
            read_from_replicas = true
            wait_replicas = 1
            sentinel_password = "s3cret"
            tls = true

            [caches.sharded]
            url = "redis://10.0.0.1:6379,10.0.0.2:6379/1"
            response_timeout = 0.5
        "#;
        let caches = webcache_core::config::CachesConfig::from_toml_str(
            text,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut spec = caches.get("default").unwrap().backend.clone();
        let c = RedisConfig::from_spec(&mut spec).unwrap();
        let Target::Sentinel {
            sentinels,
            db,
            tls,
            read_from_replicas,
            ..
        } = &c.target
        else {
            panic!("{c:?}")
        };
        assert_eq!(
            sentinels,
            &[
                "rediss://:s3cret@10.0.0.1:26379",
                "rediss://:s3cret@10.0.0.2:26379"
            ]
        );
        assert_eq!(
            (*db, *tls, *read_from_replicas, c.wait_replicas),
            (2, true, true, 1)
        );
        let mut spec = caches.get("sharded").unwrap().backend.clone();
        let c = RedisConfig::from_spec(&mut spec).unwrap();
        assert!(matches!(&c.target, Target::Shards { shards, .. } if shards.len() == 2));
        assert_eq!(c.response_timeout, Duration::from_millis(500));
    }

    #[test]
    fn shard_lists() {
        let c = parse("redis://u:pw@h1:6379, h2:6380 ,[::1]:6381/3?clear=flushdb").unwrap();
        assert_eq!(
            c.target,
            Target::Shards {
                shards: vec![
                    "redis://u:pw@h1:6379/3".into(),
                    "redis://u:pw@h2:6380/3".into(),
                    "redis://u:pw@[::1]:6381/3".into()
                ],
                names: vec!["h1:6379".into(), "h2:6380".into(), "[::1]:6381".into()],
            }
        );
        let c = parse("rediss://h1,h2").unwrap();
        let Target::Shards { shards, .. } = &c.target else {
            panic!("{c:?}")
        };
        assert_eq!(shards, &["rediss://h1/0", "rediss://h2/0"]);
        // One server stays one server.
        assert!(matches!(
            parse("redis://h1:6379/0").unwrap().target,
            Target::Primary { .. }
        ));
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
            ("redis+sentinel://s1:26379", "url", "master's name"),
            ("redis+sentinel://s1:26379/", "url", "master's name"),
            ("redis+sentinel:///mymaster", "url", "no sentinels"),
            ("redis+sentinel://s1:x/mymaster", "url", "sentinel `s1:x`"),
            (
                "redis+sentinel://s1/mymaster/two",
                "url",
                "`/two` is not a number",
            ),
            ("redis+sentinel://s1/mymaster/2/9", "url", "`/9` follows"),
            (
                "redis+sentinel://s1/mymaster?replicas=redis://r/0",
                "replicas",
                "read_from_replicas=true",
            ),
            (
                "redis+sentinel://s1/m?tls=true&tls_ca_file=/etc/hosts",
                "tls_ca_file",
                "trust store",
            ),
            (
                "redis://h/1?sentinel_password=x",
                "sentinel_password",
                "only for `redis+sentinel://`",
            ),
            ("redis://h1,h2:x/0", "url", "shard `h2:x`"),
            ("redis://h1,,h2/0", "url", "empty server"),
            ("redis://h1,h1/0", "url", "listed twice"),
            ("redis://h1,h2/x", "url", "`/x` is not a number"),
            (
                "redis://h1,h2/0?replicas=redis://r/0",
                "replicas",
                "without replicas",
            ),
            (
                "redis://h1,h2/0?wait_replicas=1",
                "replicas",
                "without replicas",
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Whatever follows a Redis scheme, reading it never panics, and what is accepted is
        /// what was written: every sentinel, shard or node URL built from it parses again as
        /// a Redis URL, and a shard list keeps its servers in order.
        #[test]
        fn any_location_is_read_without_panic(
            scheme in proptest::sample::select(vec!["redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster"]),
            location in "([a-z0-9:@%,/\\[\\]. -]|\\PC){0,40}",
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let noisy = String::from_utf8_lossy(&noise);
            for url in [format!("{scheme}://{location}"), format!("{scheme}://{noisy}")] {
                let Ok(config) = parse(&url) else { continue };
                match config.target {
                    Target::Sentinel { sentinels, service, .. } => {
                        proptest::prop_assert!(!service.is_empty());
                        for s in sentinels {
                            proptest::prop_assert!(redis::Client::open(s.as_str()).is_ok(), "{}", s);
                        }
                    }
                    Target::Shards { shards, names } => {
                        proptest::prop_assert_eq!(shards.len(), names.len());
                        proptest::prop_assert!(shards.len() >= 2);
                        for (shard, name) in shards.iter().zip(&names) {
                            proptest::prop_assert!(shard.contains(name.as_str()));
                            proptest::prop_assert!(parse_node_url(shard).is_ok(), "{}", shard);
                        }
                    }
                    Target::Cluster { nodes, .. } => {
                        for n in nodes {
                            proptest::prop_assert!(redis::Client::open(n.as_str()).is_ok(), "{}", n);
                        }
                    }
                    Target::Primary { primary, db, .. } if scheme == "redis+unix" => {
                        // The socket's URL holds the path as written and the database, nothing
                        // else (no option or password slipped in through the path).
                        let path = primary
                            .strip_prefix("redis+unix://")
                            .and_then(|rest| rest.strip_suffix(&format!("?db={db}")));
                        proptest::prop_assert!(
                            path.is_some_and(|p| p.starts_with('/') && url.starts_with(&format!("redis+unix://{p}"))),
                            "{} from {}", primary, url
                        );
                        proptest::prop_assert!(redis::Client::open(primary.as_str()).is_ok(), "{}", primary);
                    }
                    Target::Primary { primary, .. } => {
                        proptest::prop_assert!(parse_node_url(&primary).is_ok(), "{}", primary);
                    }
                }
            }
        }
    }
}
