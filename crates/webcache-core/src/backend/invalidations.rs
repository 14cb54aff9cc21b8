//! Invalidations: how a shared backend tells a process's near tier that entries changed.
//!
//! A near tier ([`NearCache`](crate::backends::NearCache), `near_ttl=SECONDS`) keeps local
//! copies of a shared backend's entries. Without help it cannot know when *another* process
//! writes, so a copy may be read up to `near_ttl` late. A backend that can report every change
//! made by anyone (Redis does, with client-side caching) implements [`Invalidations`] and
//! offers it with [`offer_invalidations`]; the near tier then subscribes, drops a copy as soon
//! as its key is reported changed, and trusts its copies only while the report is
//! [connected](InvalidationFeed::connected): before the first connection, and from a break until
//! the next connection, every read goes to the shared backend, and reconnecting drops every
//! copy (changes made during the break were not reported).
//!
//! Backends without it keep the plain bound: a copy lives at most `near_ttl`.

use std::any::{Any, TypeId};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;

use crate::backend::Backend;
use crate::backends::LocMemBackend;
use crate::timeout::Expiry;

/// A backend that reports changes to its entries, made by any client, to a subscriber.
///
/// Implementations report:
/// - [`keys_changed`](InvalidationFeed::keys_changed) for every key written, deleted, expired
///   or evicted (reporting more keys than changed is harmless: a copy is dropped and read
///   again);
/// - [`all_changed`](InvalidationFeed::all_changed) when they cannot tell which keys changed
///   (the store was flushed);
/// - [`connected`](InvalidationFeed::connected) once reports flow (every change from then on
///   will be reported), and [`disconnected`](InvalidationFeed::disconnected) as soon as they
///   might not (a lost connection, a missed heartbeat), then `connected` again when they
///   flow again.
///
/// Make the implementation visible through `dyn Backend` with [`offer_invalidations`].
pub trait Invalidations: Send + Sync {
    /// Starts reporting to `feed`, in the background, until [`InvalidationFeed::is_closed`]
    /// (the subscriber is gone). Must not block: connections are made by the background work.
    ///
    /// Returns `false` when this instance cannot report (a configuration without the means):
    /// the near tier then keeps the plain `near_ttl` bound.
    fn subscribe(&self, feed: InvalidationFeed) -> bool;
}

/// Where a backend reports changes to one subscriber (a near tier). Cheap to clone; holds
/// the subscriber weakly, so a dropped near tier is not kept alive by its backend.
#[derive(Clone, Debug)]
pub struct InvalidationFeed {
    copies: Weak<Copies>,
}

impl InvalidationFeed {
    pub(crate) fn new(copies: Weak<Copies>) -> Self {
        InvalidationFeed { copies }
    }

    /// These keys (final keys, as stored) changed: their copies are dropped.
    pub async fn keys_changed(&self, keys: &[&str]) {
        if let Some(copies) = self.copies.upgrade() {
            for key in keys {
                copies.changed(key).await;
            }
        }
    }

    /// Anything may have changed: every copy is dropped.
    pub async fn all_changed(&self) {
        if let Some(copies) = self.copies.upgrade() {
            copies.all_changed().await;
        }
    }

    /// Reports flow: from now on every change is reported. Drops every copy (changes made
    /// before may not have been reported) and then trusts new copies.
    pub async fn connected(&self) {
        if let Some(copies) = self.copies.upgrade() {
            copies.connected().await;
        }
    }

    /// Reports may be missed from now on: copies are not trusted until
    /// [`connected`](Self::connected). Never waits, so that it can be called from `Drop` (a
    /// reporting task that is cancelled must leave its subscribers untrusting).
    pub fn disconnected(&self) {
        if let Some(copies) = self.copies.upgrade() {
            copies.disconnected();
        }
    }

    /// Whether the subscriber is gone (the backend may stop reporting to it).
    pub fn is_closed(&self) -> bool {
        self.copies.strong_count() == 0
    }
}

/// Recovers `&dyn Invalidations` from a `&dyn Any` of one backend type.
type Cast = for<'a> fn(&'a dyn Any) -> Option<&'a dyn Invalidations>;

/// The backend types that offered their [`Invalidations`].
static OFFERS: RwLock<Vec<(TypeId, Cast)>> = RwLock::new(Vec::new());

/// Declares that backend type `B` reports its changes, so that a near tier over a
/// `dyn Backend` of that type subscribes to them. Call it once before building caches (a
/// backend's constructor is a good place); calling it again does nothing.
pub fn offer_invalidations<B: Backend + Invalidations>() {
    fn cast<B: Backend + Invalidations>(any: &dyn Any) -> Option<&dyn Invalidations> {
        any.downcast_ref::<B>().map(|b| b as &dyn Invalidations)
    }
    let id = TypeId::of::<B>();
    let mut offers = OFFERS.write().unwrap_or_else(|p| p.into_inner());
    if !offers.iter().any(|(offered, _)| *offered == id) {
        offers.push((id, cast::<B>));
    }
}

/// `backend`'s [`Invalidations`], if its type offered them.
pub(crate) fn invalidations_of(backend: &dyn Backend) -> Option<&dyn Invalidations> {
    let any = backend.as_any();
    let id = any.type_id();
    let offers = OFFERS.read().unwrap_or_else(|p| p.into_inner());
    let cast = offers.iter().find(|(offered, _)| *offered == id)?.1;
    drop(offers);
    cast(any)
}

/// Counters bumped by reported changes, one per group of keys (by hash): a read that began
/// before a change to its key must not keep what it read. More groups, fewer reads that are
/// not kept because an unrelated key of the same group changed meanwhile.
const STRIPES: usize = 1024;

/// A near tier's local copies, and whether they can be trusted: shared by the
/// [`NearCache`](crate::backends::NearCache) and the [`InvalidationFeed`] its backend reports to.
#[derive(Debug)]
pub(crate) struct Copies {
    pub(crate) store: LocMemBackend,
    /// Whether the backend reports changes (otherwise copies live at most `near_ttl`).
    tracked: AtomicBool,
    /// Whether copies may be served: always for a backend without [`Invalidations`]; for one
    /// with them, only while its reports are connected.
    trusted: AtomicBool,
    /// Bumped when anything may have changed (all changed, connected, disconnected).
    epoch: AtomicU64,
    /// Bumped when a key of the stripe changed.
    stripes: Box<[AtomicU64]>,
}

/// What the counters of a key were when a read of the shared backend began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    epoch: u64,
    stripe: u64,
}

impl Copies {
    /// Copies in `store`; trusted from the start unless `tracked` (reports must connect first).
    pub(crate) fn new(store: LocMemBackend, tracked: bool) -> Self {
        Copies {
            store,
            tracked: AtomicBool::new(tracked),
            trusted: AtomicBool::new(!tracked),
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether copies may be served now (one atomic load: the hit path).
    #[inline]
    pub(crate) fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// What `stats` says about the reports.
    pub(crate) fn state(&self) -> &'static str {
        match (self.tracked.load(Ordering::Relaxed), self.trusted()) {
            (false, _) => "none (copies live at most near_ttl)",
            (true, true) => "connected",
            (true, false) => "disconnected (copies not served)",
        }
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.stripes[index]
    }

    /// Taken before reading `key` from the shared backend; `None` when copies are not trusted
    /// (nothing read now is kept).
    pub(crate) fn stamp(&self, key: &str) -> Option<Stamp> {
        if !self.trusted() {
            return None;
        }
        Some(Stamp {
            epoch: self.epoch.load(Ordering::SeqCst),
            stripe: self.stripe(key).load(Ordering::SeqCst),
        })
    }

    /// Keeps `value` as the copy of `key`, read from (or written to) the shared backend after
    /// `stamp`, unless a change to `key` was reported since.
    ///
    /// The copy is stored first and checked after: a change reported before the check is
    /// seen by it, one reported after it drops the stored copy itself.
    pub(crate) async fn keep(&self, key: &str, value: Bytes, expiry: Expiry, stamp: Option<Stamp>) {
        let Some(stamp) = stamp else { return };
        // The local copy is an optimisation: locmem cannot fail, and if it could, the shared
        // backend would still hold the truth.
        let _ = self.store.set(key, value, expiry).await;
        let now = Stamp {
            epoch: self.epoch.load(Ordering::SeqCst),
            stripe: self.stripe(key).load(Ordering::SeqCst),
        };
        if now != stamp {
            self.forget(key).await;
        }
    }

    /// Drops the copy of `key`.
    pub(crate) async fn forget(&self, key: &str) {
        let _ = self.store.delete(key).await;
    }

    async fn changed(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
        self.forget(key).await;
    }

    async fn all_changed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.store.clear(None).await;
    }

    async fn connected(&self) {
        self.all_changed().await;
        self.trusted.store(true, Ordering::Release);
    }

    fn disconnected(&self) {
        self.trusted.store(false, Ordering::Release);
        // Reads in flight began while reports flowed; they must not keep what they read.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// A near tier's copies, subscribed to `far`'s [`Invalidations`] when it offers them.
pub(crate) fn copies_over(far: &dyn Backend, store: LocMemBackend) -> Arc<Copies> {
    match invalidations_of(far) {
        None => Arc::new(Copies::new(store, false)),
        Some(source) => {
            let copies = Arc::new(Copies::new(store, true));
            if !source.subscribe(InvalidationFeed::new(Arc::downgrade(&copies))) {
                copies.tracked.store(false, Ordering::Relaxed);
                copies.trusted.store(true, Ordering::Release);
            }
            copies
        }
    }
}
