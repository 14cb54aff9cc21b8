//! [`Caches`]: named cache aliases, as Django's `CACHES` setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use webcache_core::backend::{Backend, BackendFactory};
use webcache_core::backends::{DummyFactory, LocMemFactory};
use webcache_core::config::{BackendSpec, CacheConfig, CachesConfig, ConfigError};
use webcache_core::Cache;

/// The caches of an application by alias (`default`, `sessions`, ...).
///
/// Built from a `webcache.toml` file, from cache URLs, or from a parsed [`CachesConfig`]. The
/// `WEBCACHE_URL` environment variable overrides the `default` alias's URL in
/// [`from_toml_file`](Caches::from_toml_file) and [`from_env_or`](Caches::from_env_or).
#[derive(Debug, Clone)]
pub struct Caches {
    caches: BTreeMap<String, Cache>,
    /// The cache [`Caches::default_cache`] answers, chosen once at construction (where an
    /// empty configuration is already an error), so that reading it can never fail.
    default: Cache,
}

impl Caches {
    /// Builds every alias of `config`. Nothing is dialled here: each backend checks its
    /// configuration and connects on first use (a server that is down is an error of the first
    /// operation, or a miss in degrade mode, not of this constructor).
    pub async fn from_config(config: CachesConfig) -> Result<Self, ConfigError> {
        let mut caches = BTreeMap::new();
        for CacheConfig {
            options,
            mut backend,
            ..
        } in config.caches
        {
            let built = build_backend(&mut backend).await?;
            caches.insert(options.alias.clone(), Cache::new(built, options));
        }
        let Some(default) = caches
            .get("default")
            .or_else(|| caches.values().next())
            .cloned()
        else {
            return Err(ConfigError::Invalid {
                alias: "default".into(),
                field: "url".into(),
                message: "no cache is configured; add `[caches.default]` with a `url`, or set WEBCACHE_URL".into(),
            });
        };
        Ok(Caches { caches, default })
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

    /// The cache of the `default` alias, or else of the first configured alias (in name
    /// order). Every `Caches` holds at least one cache, so there is always one to answer.
    pub fn default_cache(&self) -> &Cache {
        &self.default
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

/// The factories of the backends compiled into this build (features decide the list).
fn compiled_in() -> Vec<Arc<dyn BackendFactory>> {
    vec![
        Arc::new(LocMemFactory),
        Arc::new(DummyFactory),
        #[cfg(feature = "redis")]
        Arc::new(webcache_redis::RedisFactory),
        #[cfg(feature = "memcached")]
        Arc::new(webcache_memcached::MemcachedFactory),
        #[cfg(feature = "sql")]
        Arc::new(webcache_sql::SqlFactory),
        #[cfg(feature = "file")]
        Arc::new(webcache_file::FileFactory),
    ]
}

/// The schemes of this repository's backends that this build leaves out, with the cargo
/// feature that brings each in: only so that the error can say which feature to enable.
const NOT_COMPILED_IN: &[(&str, &[&str])] = &[
    #[cfg(not(feature = "redis"))]
    (
        "redis",
        &[
            "redis",
            "rediss",
            "redis+unix",
            "redis+cluster",
            "redis+sentinel",
        ],
    ),
    #[cfg(not(feature = "memcached"))]
    ("memcached", &["memcached"]),
    #[cfg(not(feature = "sql"))]
    ("sql", &["sqlite", "postgres", "postgresql"]),
    #[cfg(not(feature = "file"))]
    ("file", &["file"]),
];

/// The factories [`Caches::register`] added, newest last.
static REGISTERED: RwLock<Vec<Arc<dyn BackendFactory>>> = RwLock::new(Vec::new());

/// Every factory this process knows: the registered ones first (newest first, so a later
/// registration wins), then the compiled-in ones.
fn factories() -> Vec<Arc<dyn BackendFactory>> {
    let registered = REGISTERED.read().unwrap_or_else(PoisonError::into_inner);
    registered
        .iter()
        .rev()
        .cloned()
        .chain(compiled_in())
        .collect()
}

impl Caches {
    /// Makes a backend's URL schemes known to every later [`Caches`] constructor and to
    /// [`build_backend`], process-wide: how a backend written outside this repository is
    /// configured by URL or in `webcache.toml`. A factory registered later wins over an earlier
    /// one and over the compiled-in backends for the schemes it answers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use webcache::backends::DummyFactory;
    /// // (a real factory would answer its own schemes)
    /// webcache::Caches::register(DummyFactory);
    /// assert!(webcache::Caches::from_url("dummy://").await.is_ok());
    /// # }
    /// ```
    pub fn register(factory: impl BackendFactory) {
        REGISTERED
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(factory));
    }
}

/// Builds the backend a [`BackendSpec`] describes with the factory that answers for its scheme:
/// one registered with [`Caches::register`], else one compiled into this build. A scheme of a
/// backend this build leaves out is an error naming the cargo feature to enable; an unknown
/// scheme is an error listing the known ones.
pub async fn build_backend(spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
    let factories = factories();
    if let Some(factory) = factories.iter().find(|f| f.answers(&spec.scheme)) {
        return factory.build(spec).await;
    }
    if let Some((feature, _)) = NOT_COMPILED_IN
        .iter()
        .find(|(_, schemes)| schemes.contains(&spec.scheme.as_str()))
    {
        return Err(spec.error(
            "url",
            format!(
                "the `{}` scheme needs webcache's `{feature}` cargo feature, which this build does not have",
                spec.scheme
            ),
        ));
    }
    let mut known: Vec<&str> = Vec::new();
    for factory in &factories {
        for scheme in factory.schemes() {
            if !known.contains(&scheme.name) {
                known.push(scheme.name);
            }
        }
    }
    Err(spec.error(
        "url",
        format!(
            "unknown scheme `{}` in `{}`; accepted schemes: {}; for example `locmem://` or `redis://127.0.0.1:6379/0`",
            spec.scheme,
            spec.redacted_url(),
            known.join(", ")
        ),
    ))
}
