//! `invalidate --tag T` and `purge URL`: invalidation beyond expiry, from the command line.

use webcache::http::{Pages, PurgeError};
use webcache::Cache;

use super::{OpError, Reply};

/// Invalidates tags (values and pages carrying them become misses).
pub(super) async fn tags(cache: &Cache, tags: &[String]) -> Result<Reply, OpError> {
    cache.invalidate_tags(tags).await?;
    Ok(Reply::Invalidated(tags.len()))
}

/// Drops a URL's page with all its variants.
pub(super) async fn purge(cache: &Cache, url: &str, key_prefix: &str) -> Result<Reply, OpError> {
    match Pages::new(cache.clone(), key_prefix).purge(url).await {
        Ok(purged) => Ok(Reply::Purged(purged)),
        Err(PurgeError::Cache(e)) => Err(e.into()),
        Err(e) => Err(OpError::Usage(e.to_string())),
    }
}
