//! `del KEY...`: delete keys.

use webcache::Cache;

use super::{OpError, Reply};

pub(super) async fn run(cache: &Cache, keys: &[String]) -> Result<Reply, OpError> {
    let removed = cache.delete_many(keys).await?;
    Ok(Reply::Deleted {
        asked: keys.len(),
        removed,
    })
}
