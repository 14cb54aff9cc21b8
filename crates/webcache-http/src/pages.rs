//! [`Pages`]: the pages a page-cache layer stores, from code: purge a URL with all its
//! variants (Django's `get_cache_key` plus a delete), invalidate tags.

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Uri};
use webcache_core::Cache;

use crate::engine::{PageStore, StoreState};
use crate::key;
use crate::page_key::KeyRules;

/// Why a URL cannot be purged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The URL is not absolute (`http://host/path?query`).
    #[error("`{url}` is not an absolute URL; give scheme, host and path, e.g. http://example.com/products?page=2")]
    InvalidUrl {
        /// The URL as given.
        url: String,
    },
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] webcache_core::Error),
}

/// A handle on the pages stored in a cache by page-cache layers with one key prefix: purge a
/// URL, invalidate tags. Get one from the layer ([`CachePageLayer::pages`](crate::CachePageLayer::pages))
/// or, in another process or a tool, from the cache and the layer's key prefix.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), webcache::http::PurgeError> {
/// use webcache::Cache;
/// use webcache::http::{Pages, DEFAULT_KEY_PREFIX};
///
/// let pages = Pages::new(Cache::locmem(), DEFAULT_KEY_PREFIX);
/// let was_stored = pages.purge("http://example.com/products?page=2").await?;
/// assert!(!was_stored);
/// pages.invalidate_tags(["products"]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pages {
    keys: KeyRules,
    store: PageStore,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("cache", &self.store.cache)
            .field("keys", &self.keys)
            .finish()
    }
}

impl Pages {
    /// The pages that layers with `key_prefix` ([`DEFAULT_KEY_PREFIX`](crate::DEFAULT_KEY_PREFIX)
    /// unless set) store in `cache`.
    pub fn new(cache: Cache, key_prefix: impl Into<String>) -> Self {
        Pages {
            keys: KeyRules::new(key_prefix.into()),
            store: PageStore {
                cache,
                store_timeout: crate::DEFAULT_STORE_TIMEOUT,
                state: std::sync::Arc::new(StoreState::default()),
            },
        }
    }

    pub(crate) fn with_store(keys: KeyRules, store: PageStore) -> Self {
        Pages { keys, store }
    }

    /// The keys under which the page of `url` (or its vary entry) is stored: Django's
    /// `get_cache_key`. A request in origin form (`GET /path`, what servers see) is keyed as
    /// `http`, whatever the scheme the client used, so an `https` URL has two candidate keys.
    /// Query parameters are keyed by the layer's rules (from [`CachePageLayer::pages`](crate::CachePageLayer::pages);
    /// the default rules otherwise); pages keyed on headers, cookies or a computed value are
    /// not found from a URL alone: tag them and invalidate the tag.
    pub fn cache_keys(&self, url: &str) -> Result<Vec<String>, PurgeError> {
        let invalid = || PurgeError::InvalidUrl {
            url: url.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(invalid());
        };
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid())?;
        headers.insert(HOST, host);
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut keys = vec![self.keys.primary_key(&uri, &headers, None)];
        if scheme != "http" {
            let origin_form: Uri = path.parse().map_err(|_| invalid())?;
            keys.push(self.keys.primary_key(&origin_form, &headers, None));
        }
        Ok(keys)
    }

    /// Drops the page of `url` with all its variants, in every process sharing the cache;
    /// returns whether anything was stored. One read and one delete per candidate key.
    pub async fn purge(&self, url: &str) -> Result<bool, PurgeError> {
        let mut any = false;
        for key in self.cache_keys(url)? {
            any |= self.purge_key(&key).await?;
        }
        Ok(any)
    }

    /// Drops the page stored under `primary` (a key from the engine's own computation).
    /// Its stored ranges (206 answers) go too.
    pub(crate) async fn purge_key(&self, primary: &str) -> Result<bool, webcache_core::Error> {
        let ranges = self.store.invalidate(&key::range_primary(primary)).await?;
        Ok(self.store.invalidate(primary).await? | ranges)
    }

    /// The store of these pages.
    pub(crate) fn store(&self) -> &PageStore {
        &self.store
    }

    /// The key rules of these pages.
    pub(crate) fn keys(&self) -> &KeyRules {
        &self.keys
    }

    /// Makes every page carrying any of `tags` a miss, in every process sharing the cache
    /// ([`Cache::invalidate_tags`]); this process's pages still being written are dropped too.
    pub async fn invalidate_tags<I, S>(&self, tags: I) -> Result<(), PurgeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.store.cache.invalidate_tags(tags).await?;
        self.store.forget_pending();
        Ok(())
    }
}
