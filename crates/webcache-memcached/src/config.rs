//! The `memcached://` URL and its options.

use std::sync::Arc;
use std::time::Duration;

use webcache_core::backend::async_trait;
use webcache_core::backend::{Backend, BackendFactory, Scheme};
use webcache_core::config::{BackendSpec, ConfigError};

use crate::MemcachedBackend;

/// The server of a URL (or configuration) that names none.
pub(crate) const DEFAULT_SERVER: &str = "127.0.0.1:11211";

/// Options of a `memcached://` URL, with their defaults: built by [`MemcachedConfig::new`] or
/// from a URL, then adjusted through the fields (`#[non_exhaustive]`, so an option added later
/// breaks no caller).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemcachedConfig {
    /// `host:port` of each server, in order (the order does not matter for hashing).
    pub servers: Vec<String>,
    /// Connections per server (`pool_size`, default 16).
    pub pool_size: usize,
    /// Bound on connecting (`connect_timeout`, default 1 s).
    pub connect_timeout: Duration,
    /// Bound on one request (`io_timeout`, default 2 s).
    pub io_timeout: Duration,
    /// First wait before retrying a dead server (`retry_after`, default 1 s), doubled after
    /// each failure up to 30 s.
    pub retry_after: Duration,
    /// Whether a server that failed `server_failure_limit` times in a row leaves the ring, its
    /// keys going to the other servers until it answers again (`remove_failed_servers`,
    /// default true). Without it a dead server's keys fail (misses with `on_error=degrade`)
    /// until it is back.
    pub remove_failed_servers: bool,
    /// Consecutive failed attempts that take a server out of the ring (`server_failure_limit`,
    /// default 2: the first failure and the retry `retry_after` later).
    pub server_failure_limit: u32,
}

impl MemcachedConfig {
    /// The configuration for these `host:port` servers with default settings.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        MemcachedConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            remove_failed_servers: true,
            server_failure_limit: 2,
        }
    }
}

/// The options a `memcached://` URL accepts besides the common ones.
const OPTIONS: &[&str] = &[
    "pool_size",
    "connect_timeout",
    "io_timeout",
    "retry_after",
    "remove_failed_servers",
    "server_failure_limit",
];

/// Builds the backend a cache URL describes: `memcached://h1:11211,h2:11211?pool_size=16`.
///
/// No connection is made here: a server that is down when the application starts is only a
/// source of misses until it comes up.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemcachedFactory;

#[async_trait]
impl BackendFactory for MemcachedFactory {
    fn schemes(&self) -> &[Scheme] {
        &[Scheme {
            name: "memcached",
            usage: "memcached://h1:11211,h2:11211",
        }]
    }

    fn options(&self) -> &[&str] {
        OPTIONS
    }

    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        Ok(Arc::new(MemcachedBackend::from_spec(spec)?))
    }
}

impl MemcachedBackend {
    /// Parses a `memcached://` spec (see [`MemcachedFactory`](crate::MemcachedFactory)).
    pub fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        Ok(MemcachedBackend::new(&parse_config(spec)?))
    }
}

/// The configuration a `memcached://` spec describes (see [`MemcachedFactory`](crate::MemcachedFactory)).
fn parse_config(spec: &mut BackendSpec) -> Result<MemcachedConfig, ConfigError> {
    let mut config = MemcachedConfig::new(parse_servers(spec)?);
    if let Some(n) = spec.take::<usize>("pool_size", "a whole number of connections such as 16")? {
        if n == 0 {
            return Err(spec.error(
                "pool_size",
                "0 connections cannot serve anything; use 1 or more",
            ));
        }
        config.pool_size = n;
    }
    if let Some(remove) = spec.take::<bool>("remove_failed_servers", "true or false")? {
        config.remove_failed_servers = remove;
    }
    if let Some(n) = spec.take::<u32>(
        "server_failure_limit",
        "a whole number of consecutive failures such as 2",
    )? {
        if n == 0 {
            return Err(spec.error(
                "server_failure_limit",
                "0 failures would take servers out before they fail; use 1 or more",
            ));
        }
        config.server_failure_limit = n;
    }
    for (name, slot) in [
        ("connect_timeout", &mut config.connect_timeout),
        ("io_timeout", &mut config.io_timeout),
        ("retry_after", &mut config.retry_after),
    ] {
        if let Some(d) = spec.take_seconds(name)? {
            if d.is_zero() {
                return Err(spec.error(name, "must be more than 0 seconds"));
            }
            *slot = d;
        }
    }
    spec.finish(OPTIONS)?;
    Ok(config)
}

/// Parses `host:port` lists separated by `,` or `;` (port 11211 when omitted).
fn parse_servers(spec: &BackendSpec) -> Result<Vec<String>, ConfigError> {
    let location = spec.location.trim().trim_end_matches('/');
    if location.is_empty() {
        return Ok(vec![DEFAULT_SERVER.to_owned()]);
    }
    let mut servers = Vec::new();
    for part in location.split([',', ';']).map(str::trim) {
        if part.is_empty() {
            return Err(spec.error("url", format!("`{location}` has an empty server entry; separate servers with `,` as in memcached://h1:11211,h2:11211")));
        }
        if part.contains('/') || part.contains('@') {
            return Err(spec.error("url", format!("`{part}` is not a `host:port` server; memcached URLs take no path or credentials, as in memcached://h1:11211,h2:11211")));
        }
        let server = match part.rsplit_once(':') {
            // `[::1]:11211` and `host:11211`.
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
                port.parse::<u16>().map_err(|_| {
                    spec.error("url", format!("`{port}` in `{part}` is not a port number"))
                })?;
                part.to_owned()
            }
            _ => format!("{part}:11211"),
        };
        if servers.contains(&server) {
            return Err(spec.error("url", format!("server `{server}` is listed twice")));
        }
        servers.push(server);
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use webcache_core::config::CacheConfig;
    use webcache_core::config::CachesConfig;

    fn servers(url: &str) -> Result<Vec<String>, ConfigError> {
        parse_servers(&CacheConfig::from_url("default", url)?.backend)
    }

    #[test]
    fn server_lists() {
        assert_eq!(servers("memcached://h1:1,h2:2").unwrap(), ["h1:1", "h2:2"]);
        assert_eq!(
            servers("memcached://h1;h2:2").unwrap(),
            ["h1:11211", "h2:2"]
        );
        assert_eq!(servers("memcached://").unwrap(), ["127.0.0.1:11211"]);
        assert_eq!(servers("memcached://[::1]:5").unwrap(), ["[::1]:5"]);
        let err = servers("memcached://h1:x").unwrap_err().to_string();
        assert!(err.contains("not a port number"), "{err}");
        let err = servers("memcached://h1,,h2").unwrap_err().to_string();
        assert!(err.contains("empty server entry"), "{err}");
        let err = servers("memcached://h1,h1:11211").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn failover_options_from_toml_and_urls() {
        let toml = r#"
            [caches.default]
            url = "memcached://h1,h2"
            remove_failed_servers = false
            server_failure_limit = 3
            retry_after = 0.5
        "#;
        let caches =
            CachesConfig::from_toml_str(toml, std::path::Path::new("webcache.toml")).unwrap();
        let mut spec = caches.get("default").unwrap().backend.clone();
        let config = parse_config(&mut spec).unwrap();
        assert!(!config.remove_failed_servers);
        assert_eq!(config.server_failure_limit, 3);
        assert_eq!(config.retry_after, Duration::from_millis(500));

        let mut spec = CacheConfig::from_url("default", "memcached://h1,h2")
            .unwrap()
            .backend;
        let defaults = parse_config(&mut spec).unwrap();
        assert!(defaults.remove_failed_servers);
        assert_eq!(defaults.server_failure_limit, 2);
        let mut spec = CacheConfig::from_url(
            "default",
            "memcached://h1,h2?remove_failed_servers=false&server_failure_limit=5",
        )
        .unwrap()
        .backend;
        let config = parse_config(&mut spec).unwrap();
        assert!(!config.remove_failed_servers);
        assert_eq!(config.server_failure_limit, 5);
    }

    #[test]
    fn options_are_checked() {
        let mut spec = CacheConfig::from_url("default", "memcached://h1?pool_size=0")
            .unwrap()
            .backend;
        let err = MemcachedBackend::from_spec(&mut spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_size"), "{err}");
        let mut spec = CacheConfig::from_url("default", "memcached://h1?pool=3")
            .unwrap()
            .backend;
        let err = MemcachedBackend::from_spec(&mut spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("accepted options: pool_size, connect_timeout"),
            "{err}"
        );
        for (url, field) in [
            (
                "memcached://h1?server_failure_limit=0",
                "server_failure_limit",
            ),
            (
                "memcached://h1?server_failure_limit=-1",
                "server_failure_limit",
            ),
            (
                "memcached://h1?remove_failed_servers=yes",
                "remove_failed_servers",
            ),
        ] {
            let mut spec = CacheConfig::from_url("default", url).unwrap().backend;
            let err = MemcachedBackend::from_spec(&mut spec)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{url}: {err}");
        }
    }
}
