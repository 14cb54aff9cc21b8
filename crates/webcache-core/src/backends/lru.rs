//! An exact least-recently-used map with byte accounting: the storage of
//! [`LocMemBackend`](super::LocMemBackend).
//!
//! A hash map from key to slot, and the slots linked in recency order (most recent at the
//! head). Links are indices into one `Vec`, so the list is safe Rust with no allocation per
//! promotion. Exact order and exact counts are the point: Django's locmem evicts the least
//! recently used entry and its bounds hold right after every write, which a concurrent cache
//! with batched maintenance (moka) cannot promise.

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use arrayvec::ArrayString;
use bytes::Bytes;
use hashbrown::HashTable;

/// No slot: the end of the list.
const NIL: usize = usize::MAX;

/// Keys up to this many bytes are kept in their slot (a page key, `:1:views.cache_page.GET.`
/// and 32 hex digits, is 56): the lookup that compares the key then reads the slot it reads
/// anyway, where a key of its own allocation would be one more trip to memory on every hit.
const INLINE_KEY: usize = 72;

/// One stored value.
#[derive(Clone)]
pub(super) struct Item {
    pub(super) value: Bytes,
    pub(super) expires_at: Option<Instant>,
}

impl Item {
    pub(super) fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// A key where it is stored: in its slot when short, else on the heap.
pub(super) enum SlotKey {
    Inline(ArrayString<INLINE_KEY>),
    Heap(Box<str>),
}

impl SlotKey {
    fn new(key: &str) -> Self {
        ArrayString::from(key).map_or_else(|_| SlotKey::Heap(key.into()), SlotKey::Inline)
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            SlotKey::Inline(key) => key,
            SlotKey::Heap(key) => key,
        }
    }
}

struct Slot {
    prev: usize,
    next: usize,
    /// `None` for a slot on the free list.
    held: Option<Held>,
}

struct Held {
    key: SlotKey,
    item: Item,
    /// What this entry counts for against the byte bound.
    weight: u64,
}

impl Slot {
    fn holds(&self, key: &str) -> bool {
        self.held.as_ref().is_some_and(|h| h.key.as_str() == key)
    }

    fn key(&self) -> &str {
        self.held.as_ref().map_or("", |h| h.key.as_str())
    }
}

/// The map; callers hold it behind a lock.
pub(super) struct Lru {
    /// Slot numbers, found by their key's hash (keyed per map: keys come from outside, and a
    /// chosen set of colliding keys must not turn lookups linear).
    index: HashTable<usize>,
    hasher: RandomState,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to go.
    tail: usize,
    weight: u64,
    /// Whether a read makes its entry the most recent. Only a bounded store evicts, so only its
    /// order of reads is ever asked for; elsewhere promoting on every hit would cost two random
    /// memory trips (the neighbours' links) and a write to lines other cores read, for nothing.
    reads_count: bool,
}

impl Lru {
    /// An empty map; `reads_count` says whether [`get`](Self::get) counts as a use.
    pub(super) fn new(reads_count: bool) -> Self {
        Lru {
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            weight: 0,
            reads_count,
        }
    }

    /// Number of entries (live or expired but not yet dropped).
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Sum of the entries' weights.
    pub(super) fn weight(&self) -> u64 {
        self.weight
    }

    /// The slot holding `key`.
    fn find(&self, key: &str) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(key), |&i| slots[i].holds(key))
            .copied()
    }

    /// The entry under `key`, made the most recently used (if reads count).
    pub(super) fn get(&mut self, key: &str) -> Option<&mut Item> {
        let i = self.find(key)?;
        if self.reads_count {
            self.promote(i);
        }
        self.slots[i].held.as_mut().map(|h| &mut h.item)
    }

    /// The entry under `key`, leaving the order alone (Django's `has_key` and `touch` do not
    /// count as a use).
    pub(super) fn peek(&mut self, key: &str) -> Option<&mut Item> {
        let i = self.find(key)?;
        self.slots[i].held.as_mut().map(|h| &mut h.item)
    }

    /// Stores `item` under `key` as the most recently used entry; returns the older item.
    pub(super) fn insert(&mut self, key: &str, item: Item, weight: u64) -> Option<Item> {
        if let Some(i) = self.find(key) {
            self.promote(i);
            let held = self.slots[i].held.as_mut()?;
            self.weight = self.weight - held.weight + weight;
            held.weight = weight;
            return Some(std::mem::replace(&mut held.item, item));
        }
        let held = Some(Held {
            key: SlotKey::new(key),
            item,
            weight,
        });
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i].held = held;
                i
            }
            None => {
                self.slots.push(Slot {
                    prev: NIL,
                    next: NIL,
                    held,
                });
                self.slots.len() - 1
            }
        };
        self.link_front(i);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), i, |&j| {
            hasher.hash_one(slots[j].key())
        });
        self.weight += weight;
        None
    }

    /// Removes `key`; returns its item.
    pub(super) fn remove(&mut self, key: &str) -> Option<Item> {
        let slots = &self.slots;
        let found = self
            .index
            .find_entry(self.hasher.hash_one(key), |&i| slots[i].holds(key));
        let i = found.ok()?.remove().0;
        self.release(i).map(|(_, item)| item)
    }

    /// Removes and returns the least recently used entry.
    pub(super) fn pop_lru(&mut self) -> Option<(SlotKey, Item)> {
        let tail = self.tail;
        if tail == NIL {
            return None;
        }
        // Its key's hash finds its index entry, without comparing keys.
        let hash = self.hasher.hash_one(self.slots[tail].key());
        self.index.find_entry(hash, |&i| i == tail).ok()?.remove();
        self.release(tail)
    }

    /// Removes everything; returns the items so the caller can drop them outside its lock.
    pub(super) fn take_all(&mut self) -> Vec<Item> {
        let items = self
            .slots
            .drain(..)
            .filter_map(|s| s.held.map(|h| h.item))
            .collect();
        *self = Lru::new(self.reads_count);
        items
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Item)> {
        self.slots
            .iter()
            .filter_map(|s| s.held.as_ref().map(|h| (h.key.as_str(), &h.item)))
    }

    fn release(&mut self, i: usize) -> Option<(SlotKey, Item)> {
        self.unlink(i);
        let held = self.slots[i].held.take()?;
        self.free.push(i);
        self.weight -= held.weight;
        Some((held.key, held.item))
    }

    fn promote(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    fn link_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.slots[h].prev = i,
        }
        self.head = i;
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[i].prev = NIL;
        self.slots[i].next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(n: u8) -> Item {
        Item {
            value: Bytes::from(vec![n]),
            expires_at: None,
        }
    }

    /// The order from least to most recently used, by popping everything.
    fn drain_order(lru: &mut Lru) -> Vec<String> {
        std::iter::from_fn(|| lru.pop_lru().map(|(k, _)| k.as_str().to_owned())).collect()
    }

    /// Key number `k`: short ones (kept in their slot), one of exactly the inline size, and
    /// longer ones (kept on the heap).
    fn key(k: u8) -> String {
        match k {
            0..6 => k.to_string(),
            6 => "6".repeat(INLINE_KEY),
            _ => format!("{k}{}", "-".repeat(INLINE_KEY)),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Get(u8),
        Peek(u8),
        Remove(u8),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 1u8..50).prop_map(|(k, w)| Op::Insert(k, w)),
            (0u8..12).prop_map(Op::Get),
            (0u8..12).prop_map(Op::Peek),
            (0u8..12).prop_map(Op::Remove),
            Just(Op::Pop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The map agrees with a plain model (a Vec in recency order) after any sequence of
        /// operations: same order, same weight, same contents; reads move an entry only when
        /// they count.
        #[test]
        fn matches_a_model(
            ops in proptest::collection::vec(op(), 0..200),
            reads_count in any::<bool>(),
        ) {
            let mut lru = Lru::new(reads_count);
            // Least recently used first: (key, weight, value).
            let mut model: Vec<(String, u64, u8)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, w) => {
                        let key = key(k);
                        let old = lru.insert(&key, item(w), u64::from(w)).map(|i| i.value[0]);
                        let pos = model.iter().position(|(mk, _, _)| *mk == key);
                        prop_assert_eq!(old, pos.map(|p| model[p].2));
                        if let Some(p) = pos { model.remove(p); }
                        model.push((key, u64::from(w), w));
                    }
                    Op::Get(k) => {
                        let key = key(k);
                        let got = lru.get(&key).map(|i| i.value[0]);
                        let pos = model.iter().position(|(mk, _, _)| *mk == key);
                        prop_assert_eq!(got, pos.map(|p| model[p].2));
                        if let Some(p) = pos.filter(|_| reads_count) {
                            let e = model.remove(p);
                            model.push(e);
                        }
                    }
                    Op::Peek(k) => {
                        let key = key(k);
                        let got = lru.peek(&key).map(|i| i.value[0]);
                        prop_assert_eq!(got, model.iter().find(|(mk, _, _)| *mk == key).map(|e| e.2));
                    }
                    Op::Remove(k) => {
                        let key = key(k);
                        let got = lru.remove(&key).map(|i| i.value[0]);
                        let pos = model.iter().position(|(mk, _, _)| *mk == key);
                        prop_assert_eq!(got, pos.map(|p| model.remove(p).2));
                    }
                    Op::Pop => {
                        let got = lru.pop_lru().map(|(k, i)| (k.as_str().to_owned(), i.value[0]));
                        let want = (!model.is_empty()).then(|| model.remove(0)).map(|(k, _, v)| (k, v));
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(lru.len(), model.len());
                prop_assert_eq!(lru.weight(), model.iter().map(|e| e.1).sum::<u64>());
                prop_assert_eq!(lru.iter().count(), model.len());
            }
            let order = drain_order(&mut lru);
            let want: Vec<String> = model.into_iter().map(|e| e.0).collect();
            prop_assert_eq!(order, want);
            prop_assert_eq!(lru.weight(), 0);
        }
    }

    /// Enough keys that the index grows many times (rehashing from the slots' keys), short and
    /// long mixed: every one is found, removal and eviction find the right index entries.
    #[test]
    fn many_keys_through_growth_removal_and_eviction() {
        let mut lru = Lru::new(true);
        let name = |n: usize| {
            if n.is_multiple_of(3) {
                format!("{n}{}", "~".repeat(INLINE_KEY))
            } else {
                format!(":1:views.cache_page.GET.{n:032x}")
            }
        };
        for n in 0..10_000 {
            assert!(lru.insert(&name(n), item(1), 1).is_none());
        }
        assert_eq!((lru.len(), lru.weight()), (10_000, 10_000));
        for n in 0..10_000 {
            assert!(lru.peek(&name(n)).is_some(), "{}", name(n));
        }
        for n in (0..10_000).step_by(2) {
            assert!(lru.remove(&name(n)).is_some());
        }
        assert!(lru.get(&name(0)).is_none());
        let order = drain_order(&mut lru);
        let want: Vec<String> = (1..10_000).step_by(2).map(name).collect();
        assert_eq!(order, want);
        assert_eq!((lru.len(), lru.weight()), (0, 0));
    }

    #[test]
    fn take_all_empties_and_the_map_is_reusable() {
        let mut lru = Lru::new(true);
        lru.insert("a", item(1), 5);
        lru.insert("b", item(2), 5);
        assert_eq!(lru.take_all().len(), 2);
        assert_eq!((lru.len(), lru.weight()), (0, 0));
        assert!(lru.pop_lru().is_none());
        lru.insert("c", item(3), 1);
        assert_eq!(drain_order(&mut lru), ["c"]);
    }
}
