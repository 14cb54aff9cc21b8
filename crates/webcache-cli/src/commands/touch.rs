//! `touch KEY SECONDS`: a new timeout (0 expires the key now).

use webcache::Cache;

use super::{timeout, OpError, Reply};

pub(super) async fn run(cache: &Cache, key: &str, seconds: f64) -> Result<Reply, OpError> {
    let timeout = timeout(Some(seconds), false)?;
    Ok(Reply::Touched(cache.touch(key, timeout).await?))
}
