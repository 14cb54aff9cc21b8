//! `clear --yes`: delete every key of the cache (its prefix, every version).

use futures::StreamExt;
use webcache::backend::FirstFailure;
use webcache::{Cache, Error};

use super::{addressed, Address, OpError, Reply};

const BATCH: usize = 1000;

/// Deletes the cache's keys in batches, reporting progress, when the backend can list keys;
/// otherwise one `clear` call.
pub(super) async fn run(
    cache: &Cache,
    confirmed: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Reply, OpError> {
    if !confirmed {
        return Err(OpError::Usage(
            "clear deletes every key of the cache; add --yes to confirm".into(),
        ));
    }
    let pattern = format!(
        "{}*",
        webcache::glob_escape(&format!("{}:", cache.options().key_prefix))
    );
    let mut keys = cache.scan(&pattern);
    // The keys found are stored keys: deleted as they are, through the cache's own rules.
    let stored = addressed(
        cache,
        Address {
            version: None,
            raw: true,
        },
    );
    let mut batch = Vec::with_capacity(BATCH);
    let mut removed = 0u64;
    let mut done = false;
    // A listing that fails part-way (one server of several down) goes on with the others:
    // what it still finds is deleted, and the first failure is the answer.
    let mut failures = FirstFailure::default();
    while !done {
        match keys.next().await {
            Some(Err(Error::Unsupported { .. })) => {
                cache.clear().await?;
                return Ok(Reply::Cleared(None));
            }
            Some(found) => batch.extend(failures.keep(found)),
            None => done = true,
        }
        if batch.len() >= BATCH || (done && !batch.is_empty()) {
            if let Some(n) = failures.keep(stored.delete_many(&batch).await) {
                removed += n;
            }
            batch.clear();
            progress(removed);
        }
    }
    Ok(Reply::Cleared(Some(failures.or(removed)?)))
}
