//! Tags: invalidating every entry that was built from some data, at once, on every backend.
//!
//! # The design: tag versions checked on read
//!
//! Each tag has a **version**, a random 63-bit number stored under a key of its own
//! (`webcache.tag:<tag>`, under the cache's prefix and version `0`, so it is shared by every
//! version of the cache and never listed by [`keys`](Cache::keys)). An entry written through a
//! [tagged](Cache::tagged) handle records, in its header, each of its tags with the version it
//! had when the value was read. Reading a tagged entry fetches the current versions of its tags
//! (one `get_many` round trip, whatever the number of tags) and treats the entry as a miss unless
//! every one is still the recorded one. [`invalidate_tags`](Cache::invalidate_tags) writes a
//! new random version for each tag (one `set_many`): nothing is scanned or deleted, whatever the
//! number of entries carrying the tag, and the entries themselves go when their timeout ends
//! or when a write replaces them. This is Symfony's tag-aware cache, with the version checked
//! in the core's entry format, so every backend gets it without change.
//!
//! - **A missing version is never trusted.** A tag's version can vanish: evicted by an LRU
//!   backend, removed by [`clear`](Cache::clear), lost with a server. An entry whose tag has no
//!   version reads as a miss, and the next write creates a new random version (`add`, so two
//!   writers agree on one). A version cannot come back: versions are random, not counters, so an
//!   evicted tag that is recreated does not revive the entries written before it went.
//! - **Data read before an invalidation does not survive it.** A handle can
//!   [pin](Cache::pin_tags) the versions before the data is read; a write through it records the
//!   pinned versions, so if the tag was invalidated in between, the entry is a miss from the
//!   start (and the write is skipped rather than replace a newer entry). The `get_or_set`
//!   family pins before it computes, by itself. Tags added to a pinned handle after the pin
//!   (a page's tags are known only once the response is there) are covered by the cache's
//!   **generation**, a key that every invalidation changes too: if it changed since the pin,
//!   the write is skipped (at worst a later request computes again).
//! - **What it costs.** An untagged entry costs nothing (a test of one header bit). A tagged
//!   read costs one more round trip; a tagged write one `get_many` (and an `add` for a tag used
//!   for the first time). Each tag ever used leaves one small key without expiry.
//! - **Several processes** see an invalidation as soon as the backend does: the versions are
//!   ordinary entries in the shared backend. A near tier (`near_ttl`) keeps local copies of tag
//!   versions too: over a backend that reports changes (Redis) they are dropped at once, over
//!   others they are seen up to `near_ttl` late (the crate docs' near-tier section).
//! - **When the backend fails**, a tagged entry whose tags cannot be checked is a miss (or the
//!   error, without degrade mode), and a tagged write whose versions cannot be read is dropped.
//!   An invalidation never degrades: it returns the error, since a silent failure would leave
//!   stale data in place.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rand::Rng;

use super::Cache;
use crate::backend::Backend;
use crate::entry;
use crate::error::{Error, Result};
use crate::timeout::Expiry;

/// The most tags one entry may carry.
const MAX_TAGS_PER_ENTRY: usize = 64;
/// The longest tag name, in bytes.
const MAX_TAG_LEN: usize = 200;
/// The version under which tag versions are stored: one set for every version of the cache.
const TAG_KEYS_VERSION: i64 = 0;
/// The key prefix of tag versions.
const TAG_KEY_PREFIX: &str = "webcache.tag:";
/// The key of the generation, changed by every invalidation.
const GENERATION_KEY: &str = "webcache.tags";

/// The tags of a handle, and the versions pinned before its data was read.
#[derive(Debug, Default)]
pub(super) struct TagSet {
    names: Vec<String>,
    pinned: Option<Pinned>,
}

/// Versions read by [`Cache::pin_tags`].
#[derive(Debug, Clone)]
struct Pinned {
    /// The versions of the tags the handle had when it was pinned.
    versions: HashMap<String, u64>,
    /// The generation then.
    generation: u64,
}

/// What a write through a handle records, or why it is skipped.
enum Stamp {
    /// The tags and their versions to record (empty for an untagged handle).
    Tags(Vec<(String, u64)>),
    /// The write must not happen: a tag changed since the pin, or versions could not be read.
    Skip(&'static str),
}

impl Cache {
    /// A handle on the same cache whose writes carry `tags` (in addition to this handle's own):
    /// after [`invalidate_tags`](Cache::invalidate_tags) with any of them, the entries it wrote
    /// are misses for every process sharing the backend.
    ///
    /// Every write of the handle records the tags: `set`, `add`, `set_many`, the `get_or_set`
    /// family (which [pins](Cache::pin_tags) the versions before computing). Reads through any
    /// handle check them. A tag is any text of at most 200 bytes that the backend accepts in a
    /// key; an entry carries at most 64 tags. See the [crate docs](crate#tags-invalidation-beyond-expiry)
    /// for the design.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// use webcache::Cache;
    ///
    /// let cache = Cache::locmem();
    /// let products = cache.tagged(["products", "product:42"]);
    /// products.set("product:42:card", &"<div>Teapot, 12 EUR</div>", 600).await?;
    ///
    /// cache.invalidate_tags(["product:42"]).await?; // its price changed
    /// assert_eq!(cache.get::<String>("product:42:card").await?, None);
    /// # Ok(()) }
    /// ```
    pub fn tagged<I, S>(&self, tags: I) -> Cache
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = match &self.tags {
            Some(own) => TagSet {
                names: own.names.clone(),
                pinned: own.pinned.clone(),
            },
            None => TagSet::default(),
        };
        for tag in tags {
            let tag = tag.as_ref();
            if !set.names.iter().any(|t| t == tag) {
                set.names.push(tag.to_owned());
            }
        }
        let mut handle = self.clone();
        handle.tags = (!set.names.is_empty() || set.pinned.is_some()).then(|| Arc::new(set));
        handle
    }

    /// The tags this handle's writes carry.
    pub fn tags(&self) -> &[String] {
        self.tags.as_deref().map_or(&[], |t| &t.names)
    }

    /// A handle whose writes record the tag versions of now, before the data they store is
    /// read: if one of the tags is invalidated between this call and a write, the write is
    /// skipped, so a value built from data older than an invalidation never survives it.
    /// Tags added to the handle later ([`tagged`](Cache::tagged)) are covered too, by the
    /// cache's generation: a write after any invalidation since the pin is skipped.
    ///
    /// One round trip (creating a version for a tag never used before). The `get_or_set`
    /// family pins by itself; pin by hand around a plain `set`:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// # let cache = webcache::Cache::locmem();
    /// let product = cache.tagged(["product:42"]).pin_tags().await?;
    /// let price = 12; // read from the database after the pin
    /// cache.invalidate_tags(["product:42"]).await?; // another request changed it meanwhile
    /// product.set("product:42:price", &price, 600).await?; // skipped: the data is older
    /// assert_eq!(cache.get::<u32>("product:42:price").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn pin_tags(&self) -> Result<Cache> {
        self.pin().await?.ok_or_else(|| {
            Error::backend_msg(
                "cache",
                "the tag versions could not be read, so nothing can be pinned",
            )
        })
    }

    /// The handle a computed value is written through, taken before the computation: this
    /// one pinned when it has tags, itself otherwise; `None` when the versions cannot be read
    /// (the cache degrades): the value is then computed and not stored.
    pub(super) async fn handle_for_compute(&self) -> Result<Option<Cache>> {
        if self.tags.is_none() {
            return Ok(Some(self.clone()));
        }
        self.pin().await
    }

    /// [`pin_tags`](Cache::pin_tags); `None` when the backend failed and the cache degrades.
    async fn pin(&self) -> Result<Option<Cache>> {
        let names = self.tags().to_vec();
        let Some((versions, generation)) = self.current_versions(&names, true).await? else {
            return Ok(None);
        };
        let mut pinned = HashMap::with_capacity(names.len());
        for (name, version) in names.iter().zip(versions) {
            let Some(version) = version else {
                return Err(Error::backend_msg(
                    "cache",
                    format!("the version of tag `{name}` vanished while it was pinned"),
                ));
            };
            pinned.insert(name.clone(), version);
        }
        let Some(generation) = generation else {
            return Err(Error::backend_msg(
                "cache",
                "the tag generation vanished while it was pinned",
            ));
        };
        let mut handle = self.clone();
        handle.tags = Some(Arc::new(TagSet {
            names,
            pinned: Some(Pinned {
                versions: pinned,
                generation,
            }),
        }));
        Ok(Some(handle))
    }

    /// Makes every entry carrying any of `tags` a miss, in every process sharing the backend:
    /// one write of new versions, however many entries carry them. An error when the backend
    /// fails, even in degrade mode (a silent failure would leave stale data served).
    pub async fn invalidate_tags<I, S>(&self, tags: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut writes = Vec::new();
        for tag in tags {
            writes.push((
                self.tag_key(tag.as_ref())?,
                entry::encode_integer(new_version()),
            ));
        }
        if writes.is_empty() {
            return Ok(());
        }
        writes.push((self.generation_key()?, entry::encode_integer(new_version())));
        let backend: &Arc<dyn Backend> = &self.inner.backend;
        self.guard_strict("invalidate_tags", backend.set_many(writes, Expiry::Never))
            .await
    }

    /// The tags (with versions) a write of `key` through this handle records, or `None` when
    /// the write must be skipped (logged at debug level: it is the design working, not a
    /// fault).
    pub(super) async fn stamp_or_skip(&self, key: &str) -> Result<Option<Vec<(String, u64)>>> {
        match self.stamp().await? {
            Stamp::Tags(tags) => Ok(Some(tags)),
            Stamp::Skip(why) => {
                tracing::debug!(alias = %self.alias(), key, "tagged write skipped: {why}");
                Ok(None)
            }
        }
    }

    /// Whether a write through this handle would be stored now rather than skipped: no tag it
    /// pinned was invalidated since the pin (nor any tag at all, when tags were added after
    /// the pin), and the versions can be read. For a copy of a value kept outside the cache
    /// while it is written (a write under way), which must stop being served the moment the
    /// write would be skipped. The same check as the write's: one `get_many` (and, as the
    /// write would, an `add` for a tag never used before); `true` for a handle without tags.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// # let cache = webcache::Cache::locmem();
    /// let writer = cache.tagged(["price"]).pin_tags().await?;
    /// assert!(writer.pinned_tags_current().await?);
    /// cache.invalidate_tags(["price"]).await?;
    /// assert!(!writer.pinned_tags_current().await?); // a write through it would be skipped
    /// # Ok(()) }
    /// ```
    pub async fn pinned_tags_current(&self) -> Result<bool> {
        Ok(matches!(self.stamp().await?, Stamp::Tags(_)))
    }

    /// What a write through this handle records: the tags with their versions (pinned ones as
    /// pinned), or why the write must be skipped.
    async fn stamp(&self) -> Result<Stamp> {
        let Some(set) = self.tags.as_deref() else {
            return Ok(Stamp::Tags(Vec::new()));
        };
        if set.names.len() > MAX_TAGS_PER_ENTRY {
            return Err(Error::InvalidKey {
                key: set.names.join(","),
                reason: format!(
                    "an entry carries at most {MAX_TAGS_PER_ENTRY} tags, this one {}; use broader tags",
                    set.names.len()
                ),
            });
        }
        let Some((versions, generation)) = self.current_versions(&set.names, true).await? else {
            return Ok(Stamp::Skip("the tag versions could not be read"));
        };
        let mut stamped = Vec::with_capacity(set.names.len());
        let mut unpinned = false;
        for (name, version) in set.names.iter().zip(versions) {
            let Some(version) = version else {
                return Ok(Stamp::Skip("a tag version vanished during the write"));
            };
            match set.pinned.as_ref().and_then(|p| p.versions.get(name)) {
                Some(&pinned) if pinned != version => {
                    return Ok(Stamp::Skip("a tag was invalidated after the data was read"))
                }
                Some(_) => {}
                None => unpinned = true,
            }
            stamped.push((name.clone(), version));
        }
        if let Some(pinned) = &set.pinned {
            if unpinned && generation != Some(pinned.generation) {
                return Ok(Stamp::Skip("tags were invalidated after the data was read"));
            }
        }
        Ok(Stamp::Tags(stamped))
    }

    /// Whether the tags recorded in `raw` still have their recorded versions (true for an entry
    /// without tags). A tag that cannot be checked fails the check.
    pub(super) async fn tags_current(&self, raw: &Bytes) -> Result<bool> {
        if !entry::has_tags(raw) {
            return Ok(true);
        }
        let Ok(recorded) = entry::tags(raw) else {
            return Ok(false);
        };
        let names: Vec<String> = recorded.iter().map(|(n, _)| (*n).to_owned()).collect();
        let Some((current, _)) = self.current_versions(&names, false).await? else {
            return Ok(false);
        };
        Ok(all_current(&recorded, current))
    }

    /// [`tags_current`](Self::tags_current) when the backend has every version at hand
    /// ([`Backend::get_ready`]); `None` when one needs I/O.
    pub(super) fn tags_current_now(&self, raw: &Bytes) -> Option<Result<bool>> {
        if !entry::has_tags(raw) {
            return Some(Ok(true));
        }
        let Ok(recorded) = entry::tags(raw) else {
            return Some(Ok(false));
        };
        let keys = recorded
            .iter()
            .map(|(name, _)| self.tag_key(name))
            .collect::<Result<Vec<_>>>();
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => return Some(Err(e)),
        };
        let backend: &Arc<dyn Backend> = &self.inner.backend;
        let values = super::metrics_export::observe_ready(self, "get_many", || {
            keys.iter()
                .map(|key| backend.get_ready(key))
                .collect::<Option<Vec<_>>>()
        })?;
        let current = values
            .into_iter()
            .map(|v| v.as_ref().and_then(version_of))
            .collect();
        Some(Ok(all_current(&recorded, current)))
    }

    /// Drops from `values` the entries whose tags were invalidated, checking all of their tags
    /// in one round trip.
    pub(super) async fn retain_current(&self, values: &mut [Option<Bytes>]) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        for raw in values.iter().flatten() {
            if !entry::has_tags(raw) {
                continue;
            }
            for (name, _) in entry::tags(raw).unwrap_or_default() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        if names.is_empty() && !values.iter().flatten().any(|r| entry::has_tags(r)) {
            return Ok(());
        }
        let current: HashMap<String, u64> = match self.current_versions(&names, false).await? {
            Some((versions, _)) => names
                .into_iter()
                .zip(versions)
                .filter_map(|(name, version)| Some((name, version?)))
                .collect(),
            None => HashMap::new(),
        };
        for value in values.iter_mut() {
            let stale = value.as_ref().is_some_and(|raw| {
                entry::has_tags(raw)
                    && !entry::tags(raw).is_ok_and(|tags| {
                        tags.iter()
                            .all(|(name, version)| current.get(*name) == Some(version))
                    })
            });
            if stale {
                *value = None;
            }
        }
        Ok(())
    }

    /// The current versions of `names` (in order) and the generation, read in one round trip;
    /// with `create`, versions (and the generation) missing are created first. `None` when
    /// the backend failed and the cache degrades.
    async fn current_versions(
        &self,
        names: &[String],
        create: bool,
    ) -> Result<Option<(Vec<Option<u64>>, Option<u64>)>> {
        let mut keys = names
            .iter()
            .map(|n| self.tag_key(n))
            .collect::<Result<Vec<_>>>()?;
        keys.push(self.generation_key()?);
        let Some(mut found) = self.read_versions(&keys).await? else {
            return Ok(None);
        };
        if create && found.iter().any(Option::is_none) {
            let backend: &Arc<dyn Backend> = &self.inner.backend;
            for (key, version) in keys.iter().zip(&found) {
                if version.is_none() {
                    let fresh = entry::encode_integer(new_version());
                    let added = self
                        .guard(
                            "add",
                            async { backend.add(key, fresh, Expiry::Never).await.map(Some) },
                            || None,
                        )
                        .await?;
                    if added.is_none() {
                        return Ok(None);
                    }
                }
            }
            // Whoever added first won: read what is there now.
            let Some(again) = self.read_versions(&keys).await? else {
                return Ok(None);
            };
            found = again;
        }
        let generation = found.pop().flatten();
        Ok(Some((found, generation)))
    }

    /// Reads version keys; a value that is not a version (a foreign write) counts as missing.
    async fn read_versions(&self, keys: &[String]) -> Result<Option<Vec<Option<u64>>>> {
        let backend: &Arc<dyn Backend> = &self.inner.backend;
        let raw = self
            .guard(
                "get_many",
                async { backend.get_many(keys).await.map(Some) },
                || None,
            )
            .await?;
        Ok(raw.map(|values| {
            values
                .into_iter()
                .map(|v| v.as_ref().and_then(version_of))
                .collect()
        }))
    }

    /// The stored key of a tag's version.
    fn tag_key(&self, tag: &str) -> Result<String> {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(Error::InvalidKey {
                key: tag.chars().take(60).collect(),
                reason: format!("a tag is 1 to {MAX_TAG_LEN} bytes long"),
            });
        }
        self.make_key_version(&format!("{TAG_KEY_PREFIX}{tag}"), TAG_KEYS_VERSION)
    }

    fn generation_key(&self) -> Result<String> {
        self.make_key_version(GENERATION_KEY, TAG_KEYS_VERSION)
    }
}

/// A new tag version: random, so that a version evicted and recreated never equals the old
/// one, and positive, so that it is stored as a plain integer.
fn new_version() -> i64 {
    rand::rng().random_range(1..=i64::MAX)
}

/// A tag version read from the backend; a value that is not a version (a foreign write)
/// counts as missing.
fn version_of(raw: &Bytes) -> Option<u64> {
    entry::parse_integer(raw).and_then(|n| u64::try_from(n).ok())
}

/// Whether every recorded tag version is the current one.
fn all_current(recorded: &[(&str, u64)], current: Vec<Option<u64>>) -> bool {
    recorded
        .iter()
        .zip(current)
        .all(|((_, recorded), current)| current == Some(*recorded))
}
