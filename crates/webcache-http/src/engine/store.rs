//! [`PageStore`]: pages in the cache backend. Finding a request's page (one read in the common
//! case, see [`crate::key`]), storing a page after the client was answered, and dropping a
//! URL's pages with all their variants.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use webcache_core::backend::LogThrottle;
use webcache_core::{Cache, Timeout};

use crate::key::{self, VaryMemo};
use crate::stored::{self, Entry, StoredResponse, VaryList};

/// The most variants a URL's vary entry lists; storing one more drops the oldest (from the
/// list and from the backend), so that every stored variant stays listed and invalidation stays
/// complete.
const MAX_VARIANTS: usize = 256;
/// The most bytes of pages being written in the background at once. A backend that is slow but
/// not failing (so the circuit breaker stays closed) would otherwise let pages pile up in memory
/// for the whole store timeout; past this, a page is answered but not stored.
const MAX_WRITING_BYTES: usize = 64 << 20;
/// How often backend failures are logged as warnings (the rest go to debug).
const WARN_EVERY: Duration = webcache_core::DEGRADE_LOG_INTERVAL;

/// How a lookup reads entries: awaiting the backend, or only what is at hand.
trait Reads {
    /// Why a read was not made.
    type Error;
    /// The entry under `key`.
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, Self::Error>> + Send;
}

/// Reads that wait for the backend ([`PageStore::lookup`]).
struct Awaiting<'a>(&'a PageStore);

impl Reads for Awaiting<'_> {
    type Error = Infallible;
    async fn read(&self, key: &str) -> Result<Option<Entry>, Infallible> {
        Ok(self.0.read(key).await)
    }
}

/// Reads of what is at hand only ([`PageStore::lookup_now`]).
struct AtOnce<'a>(&'a PageStore);

/// A read that needs I/O, in a lookup that must not wait.
struct NotNow;

impl Reads for AtOnce<'_> {
    type Error = NotNow;
    async fn read(&self, key: &str) -> Result<Option<Entry>, NotNow> {
        self.0.read_now(key).ok_or(NotNow)
    }
}

/// What a lookup found.
pub(crate) struct Lookup {
    /// The stored page for this request, if any (fresh or not).
    pub(crate) page: Option<StoredResponse>,
    /// The variant's key when the URL's pages vary (a miss computes under it); `None`: the
    /// page's own key, the primary (not copied on every hit).
    pub(crate) variant: Option<String>,
}

impl Lookup {
    /// The key a miss for this request computes under: the variant's, or `primary`.
    pub(crate) fn flight_key<'a>(&'a self, primary: &'a str) -> &'a str {
        self.variant.as_deref().unwrap_or(primary)
    }
}

/// The state shared by every service made by one layer.
#[derive(Debug)]
pub(crate) struct StoreState {
    memo: VaryMemo,
    pending: Pending,
    /// Writes under way per URL: an invalidation of the URL undoes all of them.
    writes: Writes,
    /// Writes under way per page key: dropping one page (one variant) undoes only its own.
    page_writes: Writes,
    vary_locks: VaryLocks,
    /// Bytes of pages being written in the background (see [`MAX_WRITING_BYTES`]).
    writing_bytes: AtomicUsize,
    /// Whether a response of this layer carried tags: from then on every miss pins the tag
    /// versions (see [`PageStore::pin`]); a site without tags never pays for it.
    tags_seen: AtomicBool,
    warn: LogThrottle,
}

impl Default for StoreState {
    fn default() -> Self {
        StoreState {
            memo: VaryMemo::default(),
            pending: Pending::default(),
            writes: Writes::default(),
            page_writes: Writes::default(),
            vary_locks: VaryLocks::default(),
            writing_bytes: AtomicUsize::new(0),
            tags_seen: AtomicBool::new(false),
            warn: LogThrottle::new(WARN_EVERY),
        }
    }
}

/// Pages in a cache, as one layer stores them.
#[derive(Clone)]
pub(crate) struct PageStore {
    pub(crate) cache: Cache,
    pub(crate) store_timeout: Duration,
    pub(crate) state: Arc<StoreState>,
}

impl PageStore {
    /// Finds the page for a request.
    pub(crate) async fn lookup(&self, primary: &str, request: &HeaderMap) -> Lookup {
        let Ok(found) = self.lookup_with(primary, request, Awaiting(self)).await;
        found
    }

    /// [`lookup`](Self::lookup) when the backend has every entry it reads at hand (see
    /// [`Cache::get_bytes_now`]): the page cache then answers a hit without a future. `None`
    /// when a read needs I/O (the lookup is then made with `lookup`; an entry this one had
    /// already read at hand, as a near tier may hold a URL's variant but not its vary list, is
    /// read again there).
    pub(crate) fn lookup_now(&self, primary: &str, request: &HeaderMap) -> Option<Lookup> {
        let lookup = pin!(self.lookup_with(primary, request, AtOnce(self)));
        // Every read answers on its first poll, so the lookup does too: nothing waits, and
        // nothing could wake it (hence the no-op waker).
        match lookup.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(found) => found.ok(),
            Poll::Pending => None,
        }
    }

    /// The lookup's rules, whichever way its reads are made: the variant the URL's vary memo
    /// names first, then the primary key (a page, or the URL's vary list and its variant).
    async fn lookup_with<R: Reads>(
        &self,
        primary: &str,
        request: &HeaderMap,
        reads: R,
    ) -> Result<Lookup, R::Error> {
        let remembered = self.state.memo.get(primary);
        let mut remembered_variant = None;
        if let Some(names) = &remembered {
            let variant = key::variant_key_for(primary, names, request);
            if let Some(Entry::Page(page)) = reads.read(&variant).await? {
                if page.matches(request) {
                    return Ok(Lookup {
                        page: Some(page),
                        variant: Some(variant),
                    });
                }
            }
            remembered_variant = Some(variant);
        }
        Ok(match reads.read(primary).await? {
            Some(Entry::Page(page)) if page.vary.is_empty() => {
                if remembered.is_some() {
                    self.state.memo.remember(primary, &[]);
                }
                Lookup {
                    page: Some(page),
                    variant: None,
                }
            }
            Some(Entry::Vary(list)) => {
                self.state.memo.remember(primary, &list.names);
                let variant = key::variant_key_for(primary, &list.names, request);
                let page = if remembered.as_deref() == Some(&list.names[..]) {
                    None // already read above
                } else {
                    match reads.read(&variant).await? {
                        Some(Entry::Page(page)) if page.matches(request) => Some(page),
                        _ => None,
                    }
                };
                Lookup {
                    page,
                    variant: Some(variant),
                }
            }
            _ => Lookup {
                page: None,
                variant: remembered_variant,
            },
        })
    }

    /// Reads and decodes one entry: a store not yet confirmed by the backend first, then the
    /// backend. A corrupt entry is a miss and a warning.
    ///
    /// A tagged page being written is served from memory only while its write would stand:
    /// once one of its tags is invalidated (by anyone, through any handle: the versions are
    /// in the backend), the write is skipped or its entry reads as a miss, and so must the
    /// copy in memory. One `get_many` of the tag versions, as a read of the stored page costs.
    async fn read(&self, key: &str) -> Option<Entry> {
        if let Some(written) = self.state.pending.get(key) {
            let Some(writer) = &written.tagged else {
                return Some(written.entry);
            };
            match writer.pinned_tags_current().await {
                Ok(true) => return Some(written.entry),
                Ok(false) => self.state.pending.remove(key, written.ticket),
                Err(e) => self.warn_backend("get_many", &e),
            }
        }
        self.read_backend(key).await
    }

    async fn read_backend(&self, key: &str) -> Option<Entry> {
        self.read_backend_strict(key).await.unwrap_or_else(|e| {
            self.warn_backend("get", &e);
            None
        })
    }

    /// Reads and decodes one entry from the backend; a corrupt entry is a miss and a warning,
    /// a failing backend an error.
    async fn read_backend_strict(&self, key: &str) -> Result<Option<Entry>, webcache_core::Error> {
        let raw = self.cache.get_bytes(key).await?;
        Ok(raw.and_then(|raw| self.decode(key, raw)))
    }

    /// Decodes a stored entry; a corrupt one is a miss and a warning.
    fn decode(&self, key: &str, raw: bytes::Bytes) -> Option<Entry> {
        stored::decode(raw)
            .inspect_err(|e| tracing::warn!(key, "{e}; treated as a miss"))
            .ok()
    }

    /// [`read`](Self::read) when the answer is at hand: `None` when it needs I/O (the backend's,
    /// or a check of a pending tagged write's tags).
    fn read_now(&self, key: &str) -> Option<Option<Entry>> {
        if let Some(written) = self.state.pending.get(key) {
            return written.tagged.is_none().then_some(Some(written.entry));
        }
        let raw = self.cache.get_bytes_now(key)?.unwrap_or_else(|e| {
            self.warn_backend("get", &e);
            None
        });
        Some(raw.and_then(|raw| self.decode(key, raw)))
    }

    /// Stores `page` in the background: the client is answered at once, a slow or frozen
    /// backend delays nobody, and the write gives up after the store timeout. Until the
    /// backend confirms, this process serves the page from memory, so a client that asks again
    /// at once gets a hit.
    ///
    /// The page entry is written through `writer`: the cache handle carrying the page's tags,
    /// pinned before the inner service was called (see [`PageStore::pin`]).
    pub(crate) fn store_later(
        &self,
        primary: &str,
        page: Arc<StoredResponse>,
        keep: Duration,
        writer: Cache,
    ) {
        // The page is held twice while it is written (the page and its encoded form).
        let weight = page.body.len().saturating_mul(2).saturating_add(4096);
        let reserved =
            self.state
                .writing_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                    now.checked_add(weight)
                        .filter(|total| *total <= MAX_WRITING_BYTES)
                });
        if reserved.is_err() {
            tracing::debug!(
                key = primary,
                "the backend is behind on writes; page answered but not stored"
            );
            return;
        }
        let names = page.vary_names();
        // The page's copy is checked against its tags when read (see `read`); the vary entry
        // carries none.
        let tagged = (!writer.tags().is_empty()).then(|| writer.clone());
        let page_entry = Entry::Page(StoredResponse::clone(&page));
        let page_key = self.page_key(primary, &page);
        let keys = if names.is_empty() {
            vec![(page_key.clone(), page_entry, tagged)]
        } else {
            let id = key::variant_id(&names, &page.vary_values());
            let vary = Entry::Vary(VaryList {
                names: names.clone(),
                variants: vec![id],
            });
            vec![
                (primary.to_owned(), vary, None),
                (page_key.clone(), page_entry, tagged),
            ]
        };
        let tickets: Vec<(String, u64)> = keys
            .into_iter()
            .map(|(k, entry, tagged)| (k.clone(), self.state.pending.insert(k, entry, tagged)))
            .collect();
        self.state.memo.remember(primary, &names);
        let epoch = self.state.writes.begin(primary);
        let page_epoch = self.state.page_writes.begin(&page_key);
        let store = self.clone();
        let primary = primary.to_owned();
        tokio::spawn(async move {
            let write = store.store(&primary, &page, keep, &writer);
            if tokio::time::timeout(store.store_timeout, write)
                .await
                .is_err()
            {
                tracing::warn!(
                    alias = %store.cache.alias(),
                    "page cache backend did not take a page within {:?}; not stored",
                    store.store_timeout
                );
            }
            // Both ended whatever happened (each keeps a count of the writes under way).
            let url_stands = store.state.writes.end(&primary, epoch);
            let page_stands = store.state.page_writes.end(&page_key, page_epoch);
            let undo: Vec<String> = if !url_stands {
                // The URL was invalidated while this page was being written: what was written
                // may have landed after the invalidation's delete, so it goes too.
                tickets.iter().map(|(k, _)| k.clone()).collect()
            } else if !page_stands {
                // This page was dropped (a revalidation said not to keep it): its own entry
                // goes, not the URL's vary list, by which the other variants are found.
                vec![page_key]
            } else {
                Vec::new()
            };
            if !undo.is_empty() {
                if let Err(e) = store.cache.delete_many(&undo).await {
                    store.warn_backend("delete_many", &e);
                }
            }
            for (key, ticket) in tickets {
                store.state.pending.remove(&key, ticket);
            }
            store
                .state
                .writing_bytes
                .fetch_sub(weight, Ordering::AcqRel);
        });
    }

    /// Writes a page through `writer` (which carries its tags) and, for a page that varies, its
    /// URL's vary entry listing it. The vary entry carries no tags: a variant whose tags were
    /// invalidated is a miss by itself, and the others stay reachable.
    pub(crate) async fn store(
        &self,
        primary: &str,
        page: &StoredResponse,
        keep: Duration,
        writer: &Cache,
    ) {
        let names = page.vary_names();
        let timeout = Timeout::After(keep);
        let cache = &self.cache;
        let result = if names.is_empty() {
            writer.set_bytes(primary, &page.encode(), timeout).await
        } else {
            let id = key::variant_id(&names, &page.vary_values());
            match writer
                .set_bytes(&key::variant_key(primary, &id), &page.encode(), timeout)
                .await
            {
                Ok(()) => {
                    // The vary entry is read, extended and written back: one writer per URL at a
                    // time in this process, so concurrent variants never drop each other.
                    let lock = self.state.vary_locks.get(primary);
                    let _held = lock.lock().await;
                    let list = self.listed_with(primary, names, id).await;
                    let written = cache
                        .set_bytes(primary, &stored::encode_vary(&list), timeout)
                        .await;
                    drop(_held);
                    self.state.vary_locks.release(primary, &lock);
                    written
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            self.warn_backend("set", &e);
        }
    }

    /// The URL's vary list with variant `id` added (the oldest dropped, and deleted, past the
    /// bound). A list for other header names is replaced: its variants are unreachable now.
    async fn listed_with(&self, primary: &str, names: Vec<HeaderName>, id: String) -> VaryList {
        let mut list = match self.read_backend(primary).await {
            Some(Entry::Vary(old)) if old.names == names => old,
            Some(Entry::Vary(old)) => {
                self.delete_variants(primary, &old.variants).await;
                VaryList {
                    names,
                    variants: Vec::new(),
                }
            }
            _ => VaryList {
                names,
                variants: Vec::new(),
            },
        };
        list.variants.retain(|v| *v != id);
        list.variants.push(id);
        if list.variants.len() > MAX_VARIANTS {
            let dropped: Vec<String> = list
                .variants
                .drain(..list.variants.len() - MAX_VARIANTS)
                .collect();
            self.delete_variants(primary, &dropped).await;
        }
        list
    }

    async fn delete_variants(&self, primary: &str, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let keys: Vec<String> = ids.iter().map(|id| key::variant_key(primary, id)).collect();
        if let Err(e) = self.cache.delete_many(&keys).await {
            self.warn_backend("delete_many", &e);
        }
    }

    /// Removes a stored page of `primary` (not the URL's other variants); writes of that page
    /// under way undo themselves, so an older copy cannot land after the delete. Writes of the
    /// URL's other variants stand: undoing them would drop pages nothing said to drop.
    pub(crate) async fn drop_page(&self, primary: &str, page: &StoredResponse) {
        let key = self.page_key(primary, page);
        self.state.page_writes.invalidated(&key);
        self.delete(&key).await;
    }

    /// Removes one entry.
    pub(crate) async fn delete(&self, key: &str) {
        self.state.pending.remove_all(key);
        if let Err(e) = self.cache.delete(key).await {
            self.warn_backend("delete", &e);
        }
    }

    /// From now on, every miss pins the tag versions (see [`pin`](Self::pin)), as if a tagged
    /// response had been seen.
    pub(crate) fn expect_tags(&self) {
        self.state.tags_seen.store(true, Ordering::Relaxed);
    }

    /// Pins the tag versions before the inner service reads the data a page is built from, so
    /// a page built before an invalidation of its tags is never stored after it (webcache-core's
    /// tags): the handle the page is written through. `None` until this layer has seen a tagged
    /// response (a site without tags pays no round trip); when the backend cannot tell, the
    /// plain cache (versions read at write time).
    pub(crate) async fn pin(&self) -> Option<Cache> {
        if !self.state.tags_seen.load(Ordering::Relaxed) {
            return None;
        }
        Some(match self.cache.pin_tags().await {
            Ok(pinned) => pinned,
            Err(e) => {
                self.warn_backend("pin_tags", &e);
                self.cache.clone()
            }
        })
    }

    /// The handle a page with `tags` is written through, given what [`pin`](Self::pin) gave
    /// before the inner service was called; `None` when the page must not be stored: the
    /// first tagged page of this layer was not pinned (nothing told the layer to), so it is
    /// answered but not stored, and every later miss pins.
    pub(crate) fn writer(&self, pinned: Option<Cache>, tags: Vec<String>) -> Option<Cache> {
        if tags.is_empty() {
            return Some(pinned.unwrap_or_else(|| self.cache.clone()));
        }
        self.state.tags_seen.store(true, Ordering::Relaxed);
        pinned.map(|pinned| pinned.tagged(tags))
    }

    /// The key `page` (a page of `primary`) is stored under: `primary`, or its variant's key.
    fn page_key(&self, primary: &str, page: &StoredResponse) -> String {
        let names = page.vary_names();
        if names.is_empty() {
            primary.to_owned()
        } else {
            key::variant_key(primary, &key::variant_id(&names, &page.vary_values()))
        }
    }

    /// The tags the stored entry of `page` (a page of `primary`) carries, so that a page stored
    /// anew (after a revalidation) keeps them. One read.
    pub(crate) async fn stored_tags(&self, primary: &str, page: &StoredResponse) -> Vec<String> {
        match self.cache.get_raw(&self.page_key(primary, page)).await {
            Ok(Some(raw)) => webcache_core::backend::entry::tags(&raw)
                .map(|tags| tags.into_iter().map(|(t, _)| t.to_owned()).collect())
                .unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(e) => {
                self.warn_backend("get", &e);
                Vec::new()
            }
        }
    }

    /// Removes a URL's page, or its vary entry and every variant it lists: one read and one
    /// delete, whatever the size of the keyspace. Returns whether anything was stored.
    pub(crate) async fn invalidate(&self, primary: &str) -> Result<bool, webcache_core::Error> {
        // First: writes under way learn of it (and undo themselves), so none can land after the
        // delete below and bring the page back.
        self.state.writes.invalidated(primary);
        let pending = self.state.pending.remove_prefixed(primary);
        let mut keys = vec![primary.to_owned()];
        if let Some(Entry::Vary(list)) = self.read_backend_strict(primary).await? {
            keys.extend(list.variants.iter().map(|id| key::variant_key(primary, id)));
        }
        Ok(self.cache.delete_many(&keys).await? > 0 || pending)
    }

    /// Drops this process's pages not yet confirmed by the backend (an invalidation by tag
    /// cannot tell which of them carry the tag).
    pub(crate) fn forget_pending(&self) {
        self.state.pending.remove_prefixed("");
    }

    /// Logs a backend failure: a warning at most every 10 s, debug otherwise.
    pub(crate) fn warn_backend(&self, operation: &'static str, error: &webcache_core::Error) {
        if self.state.warn.ready() {
            tracing::warn!(
                alias = %self.cache.alias(),
                operation,
                "page cache backend failed; serving without the cache: {error}"
            );
        } else {
            tracing::debug!(operation, "page cache backend failed: {error}");
        }
    }
}

/// Entries written to the backend in the background and not yet confirmed, so this process
/// reads its own writes. Empty almost always: checked without a lock first.
#[derive(Debug, Default)]
struct Pending {
    map: Mutex<HashMap<String, Written>>,
    len: AtomicUsize,
    next: AtomicU64,
}

/// An entry being written.
#[derive(Debug, Clone)]
struct Written {
    /// What removes it (and not a newer write of the same key).
    ticket: u64,
    entry: Entry,
    /// The handle it is written through, when that handle carries tags: whether its write
    /// would stand is asked on each read (see [`PageStore::read`]).
    tagged: Option<Cache>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Written>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Option<Written> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(key).cloned()
    }

    /// Adds an entry; returns the ticket that removes it (and not a newer one).
    fn insert(&self, key: String, entry: Entry, tagged: Option<Cache>) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        map.insert(
            key,
            Written {
                ticket,
                entry,
                tagged,
            },
        );
        self.len.store(map.len(), Ordering::Release);
        ticket
    }

    fn remove(&self, key: &str, ticket: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|w| w.ticket == ticket) {
            map.remove(key);
        }
        self.len.store(map.len(), Ordering::Release);
    }

    fn remove_all(&self, key: &str) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut map = self.lock();
        map.remove(key);
        self.len.store(map.len(), Ordering::Release);
    }

    /// Removes the entries of `primary` (its variants included); returns whether there were.
    fn remove_prefixed(&self, primary: &str) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut map = self.lock();
        let before = map.len();
        map.retain(|k, _| !k.starts_with(primary));
        self.len.store(map.len(), Ordering::Release);
        map.len() < before
    }
}

/// The URLs with page writes under way, and whether each was invalidated meanwhile. Holds only
/// URLs being written, so it stays small.
#[derive(Debug, Default)]
struct Writes {
    /// Primary key -> (invalidations seen, writes under way).
    map: Mutex<HashMap<String, (u64, usize)>>,
}

impl Writes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, usize)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write of `primary` (a URL, or a page's key) begins; returns the epoch to give to
    /// [`Self::end`].
    fn begin(&self, primary: &str) -> u64 {
        let mut map = self.lock();
        let entry = map.entry(primary.to_owned()).or_insert((0, 0));
        entry.1 += 1;
        entry.0
    }

    fn invalidated(&self, primary: &str) {
        if let Some(entry) = self.lock().get_mut(primary) {
            entry.0 += 1;
        }
    }

    /// A write of `primary` ended; returns whether no invalidation happened since it began.
    fn end(&self, primary: &str, epoch: u64) -> bool {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(primary) else {
            return true;
        };
        let valid = entry.0 == epoch;
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            map.remove(primary);
        }
        valid
    }
}

/// One lock per URL whose vary entry is being rewritten; entries go when unused.
#[derive(Debug, Default)]
struct VaryLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl VaryLocks {
    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, primary: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock_map()
            .entry(primary.to_owned())
            .or_default()
            .clone()
    }

    fn release(&self, primary: &str, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.lock_map();
        // 2 = the map's reference and ours: nobody else waits for it.
        if Arc::strong_count(lock) <= 2 {
            map.remove(primary);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, StatusCode};
    use webcache_core::backends::{LocMemBackend, LocMemConfig};
    use webcache_core::CacheOptions;

    use super::*;

    fn store() -> PageStore {
        let backend = Arc::new(LocMemBackend::private(LocMemConfig::default()));
        PageStore {
            cache: Cache::new(backend, CacheOptions::default()),
            store_timeout: Duration::from_secs(60),
            state: Arc::default(),
        }
    }

    /// A page that varies on `accept-language`, stored for `lang`.
    fn variant(lang: &'static str) -> StoredResponse {
        StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(lang.as_bytes()),
            stored_at: SystemTime::now(),
            fresh_for: Duration::from_secs(60),
            initial_age: Duration::ZERO,
            vary: vec![(
                HeaderName::from_static("accept-language"),
                Some(Bytes::from_static(lang.as_bytes())),
            )],
        }
    }

    /// A store in which `stored` was being written (spawned, not yet run: the test's runtime
    /// has one thread) when `dropped` was dropped; returned once every write has ended
    /// (generous: the writes are to locmem).
    async fn store_then_drop(
        primary: &str,
        stored: &StoredResponse,
        dropped: &StoredResponse,
    ) -> PageStore {
        let store = store();
        let keep = Duration::from_secs(60);
        store.store_later(primary, Arc::new(stored.clone()), keep, store.cache.clone());
        store.drop_page(primary, dropped).await;
        for _ in 0..1000 {
            if store.state.writing_bytes.load(Ordering::Acquire) == 0 {
                return store;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("background writes did not end within 10 s");
    }

    /// A revalidation that drops one variant while another variant of the URL is still being
    /// written (a slow backend, a busy machine) leaves that other variant stored. Before,
    /// dropping a page undid every write of its URL under way, the vary list included, and the
    /// other variant was a miss (seen as a flaky `rfc9111_4_3_4` test over Redis).
    #[tokio::test]
    async fn dropping_one_variant_leaves_another_variants_write_standing() {
        let primary = "page:/lang";
        let (de, en) = (variant("de"), variant("en"));
        let store = store_then_drop(primary, &de, &en).await;
        match store.read_backend(&store.page_key(primary, &de)).await {
            Some(Entry::Page(page)) => assert_eq!(page.body, Bytes::from_static(b"de")),
            _ => panic!("the other variant's write was undone"),
        }
        assert!(
            matches!(store.read_backend(primary).await, Some(Entry::Vary(_))),
            "the URL's vary list was undone"
        );
    }

    /// The page dropped is undone when its own write was under way: an older copy of it cannot
    /// land after the delete.
    #[tokio::test]
    async fn dropping_a_page_undoes_its_own_write_under_way() {
        let primary = "page:/lang";
        let en = variant("en");
        let store = store_then_drop(primary, &en, &en).await;
        let key = store.page_key(primary, &en);
        assert!(store.read_backend(&key).await.is_none());
    }
}
