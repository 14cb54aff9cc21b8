//! [`Caches`]: named cache aliases, as Django's `CACHES` setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use webcache_core::backends::{Dummy, LocMem};
use webcache_core::config::{BackendSpec, CacheConfig, CachesConfig, ConfigError};
use webcache_core::{Backend, Cache};

/// The caches of an application by alias (`default`, `sessions`, ...).
///
/// Built from a `webcache.toml` file, from cache URLs, or from a parsed [`CachesConfig`]. The
/// `WEBCACHE_URL` environment variable overrides the `default` alias's URL in
/// [`from_toml_file`](Caches::from_toml_file) and [`from_env_or`](Caches::from_env_or).
#[derive(Debug, Clone)]
pub struct Caches {
    caches: BTreeMap<String, Cache>,
}

impl Caches {
    /// Builds every alias of `config`, connecting to servers where the backend needs to.
    pub async fn from_config(config: CachesConfig) -> Result<Self, ConfigError> {
        let mut caches = BTreeMap::new();
        for CacheConfig {
            options,
            mut backend,
        } in config.caches
        {
            let built = build_backend(&mut backend).await?;
            caches.insert(options.alias.clone(), Cache::new(built, options));
        }
        if caches.is_empty() {
            return Err(ConfigError::Invalid {
                alias: "default".into(),
                field: "url".into(),
                message: "no cache is configured; add `[caches.default]` with a `url`, or set WEBCACHE_URL".into(),
            });
        }
        Ok(Caches { caches })
    }

    /// Builds the aliases of `(alias, url)` pairs.
    pub async fn from_urls<'a>(
        urls: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        Self::from_config(CachesConfig::from_urls(urls)?).await
    }

    /// A single `default` alias from a URL.
    pub async fn from_url(url: &str) -> Result<Self, ConfigError> {
        Self::from_urls([("default", url)]).await
    }

    /// Reads `webcache.toml` (or any path), then applies `WEBCACHE_URL`.
    pub async fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_config(CachesConfig::from_toml_file(path)?.with_env()?).await
    }

    /// A `default` alias from `WEBCACHE_URL`, or from `fallback` when it is not set.
    pub async fn from_env_or(fallback: &str) -> Result<Self, ConfigError> {
        Self::from_config(CachesConfig::from_urls([("default", fallback)])?.with_env()?).await
    }

    /// The cache called `alias`, or an error that lists the configured aliases.
    pub fn get(&self, alias: &str) -> Result<&Cache, ConfigError> {
        self.caches
            .get(alias)
            .ok_or_else(|| ConfigError::UnknownAlias {
                alias: alias.to_owned(),
                known: self.aliases().collect::<Vec<_>>().join(", "),
            })
    }

    /// The `default` alias, or else the first configured one.
    pub fn default(&self) -> &Cache {
        self.caches
            .get("default")
            .or_else(|| self.caches.values().next())
            .expect("Caches always holds at least one cache")
    }

    /// The configured aliases, in name order.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.caches.keys().map(String::as_str)
    }

    /// Closes every backend.
    pub async fn close(&self) {
        for cache in self.caches.values() {
            if let Err(e) = cache.close().await {
                tracing::warn!(alias = cache.alias(), "closing the cache failed: {e}");
            }
        }
    }
}

/// Builds the backend a [`BackendSpec`] describes, with every backend compiled into this build.
/// A scheme whose backend is not compiled in is an error naming the cargo feature to enable.
pub async fn build_backend(spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
    match spec.scheme.as_str() {
        "locmem" => Ok(Arc::new(LocMem::from_spec(spec)?)),
        "dummy" => {
            spec.finish(&[])?;
            Ok(Arc::new(Dummy))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+cluster" | "redis+sentinel" => {
            webcache_redis::from_spec(spec).await
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+cluster" | "redis+sentinel" => feature_missing(spec, "redis"),
        #[cfg(feature = "memcached")]
        "memcached" => webcache_memcached::from_spec(spec).await,
        #[cfg(not(feature = "memcached"))]
        "memcached" => feature_missing(spec, "memcached"),
        #[cfg(feature = "sql")]
        "sqlite" | "postgres" | "postgresql" => webcache_sql::from_spec(spec).await,
        #[cfg(not(feature = "sql"))]
        "sqlite" | "postgres" | "postgresql" => feature_missing(spec, "sql"),
        #[cfg(feature = "file")]
        "file" => webcache_file::from_spec(spec).await,
        #[cfg(not(feature = "file"))]
        "file" => feature_missing(spec, "file"),
        other => Err(spec.error("url", format!("unknown scheme `{other}`"))),
    }
}

#[allow(dead_code)] // unused when every backend feature is enabled
fn feature_missing(spec: &BackendSpec, feature: &str) -> Result<Arc<dyn Backend>, ConfigError> {
    Err(spec.error(
        "url",
        format!(
            "the `{}` scheme needs webcache's `{feature}` cargo feature, which this build does not have",
            spec.scheme
        ),
    ))
}
