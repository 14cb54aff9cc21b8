//! `incr KEY [BY]` and `decr KEY [BY]`: add to (or subtract from) an integer value.

use webcache::Cache;

use super::{OpError, Reply};

pub(super) async fn run(cache: &Cache, key: &str, by: i64) -> Result<Reply, OpError> {
    Ok(Reply::Number(cache.incr(key, by).await?))
}
