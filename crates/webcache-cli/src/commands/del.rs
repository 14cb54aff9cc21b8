//! `del KEY...`: delete keys; `del --pattern GLOB...`: every key matching.

use futures::StreamExt;
use webcache::Cache;

use super::{addressed, keys, Address, OpError, Reply};

/// Keys deleted per backend call by `del --pattern`.
const BATCH: usize = 1000;

pub(super) async fn run(cache: &Cache, keys: &[String]) -> Result<Reply, OpError> {
    let removed = cache.delete_many(keys).await?;
    Ok(Reply::Deleted {
        asked: keys.len(),
        removed,
    })
}

/// Deletes the keys matching `patterns` in batches as they are listed, telling `progress` how
/// many are gone after each batch.
pub(super) async fn matching(
    cache: &Cache,
    patterns: &[String],
    address: Address,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Reply, OpError> {
    let deleting = addressed(cache, address);
    let mut removed = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    for pattern in patterns {
        let mut found = keys::list(cache, pattern, address);
        loop {
            let next = found.next().await.transpose()?;
            if let Some(key) = next.as_ref() {
                batch.push(key.clone());
            }
            if batch.len() >= BATCH || (next.is_none() && !batch.is_empty()) {
                removed += deleting.delete_many(&batch).await?;
                batch.clear();
                progress(removed);
            }
            if next.is_none() {
                break;
            }
        }
    }
    Ok(Reply::DeletedMatching(removed))
}
