//! [`HeadMemo`]: the decoded heads of pages read lately, so that a page read again is not
//! decoded again.
//!
//! A hit decodes its stored entry into a status, a header map and the rest (see
//! [`crate::stored`]): about a fifth of what the layer does for a hit, spent again on every
//! hit of the same page. The memo keeps, for a few thousand pages, the bytes of a page's head
//! (everything before the body) with that head decoded. A read whose bytes begin with a
//! remembered head is that page: the stored layout is read front to back and every length is
//! in the head, so equal head bytes decode to an equal head, and the rest is the body. Nothing
//! needs invalidating: a page written anew has other head bytes (its `stored_at` at least), and
//! a page that is gone is never read. What the backend returns stays the only truth.
//!
//! Bounded: [`SLOTS`] slots, each holding one head of at most [`MAX_HEAD`] bytes (about 3 MB
//! at most with the headers of common pages). A head enters an empty slot when it is read
//! twice in a row there, and replaces another only after [`MISSES_BEFORE_REPLACING`] reads in
//! a row found something else in its slot. A working set larger than the memo (10,000 pages,
//! or a million, read uniformly) then keeps the heads it has instead of trading them on every
//! read (each trade is a copy and a second decoding), and a page that became hot takes a slot
//! whose head went cold. The memo's headers share its own copy of the head, never a stored
//! buffer: it keeps no page's body alive.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use crate::stored::{self, Corrupt, Entry, StoredResponse};

/// How many heads the memo holds.
pub(crate) const SLOTS: usize = 4096;
/// The largest head remembered; pages with more header bytes are decoded on every read.
pub(crate) const MAX_HEAD: usize = 4096;
/// How many reads in a row must find another page than a slot's head before the head may be
/// replaced.
pub(crate) const MISSES_BEFORE_REPLACING: u32 = 8;

/// See the [module](self).
pub(crate) struct HeadMemo {
    slots: Box<[Slot]>,
    hasher: foldhash::fast::FixedState,
}

#[derive(Default)]
struct Slot {
    head: ArcSwapOption<Head>,
    /// The hash of the head last read here and not remembered: read again next, it may enter.
    seen: AtomicU64,
    /// Reads in a row that found another page than `head`, up to
    /// [`MISSES_BEFORE_REPLACING`].
    misses: AtomicU32,
}

/// A page's head bytes, decoded (its body empty; its header values slices of `bytes`).
struct Head {
    bytes: Bytes,
    page: StoredResponse,
}

impl Default for HeadMemo {
    fn default() -> Self {
        HeadMemo {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl std::fmt::Debug for HeadMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self
            .slots
            .iter()
            .filter(|s| s.head.load().is_some())
            .count();
        f.debug_struct("HeadMemo").field("held", &held).finish()
    }
}

impl HeadMemo {
    /// Decodes the entry `raw` read under `key`, from a remembered head when `raw` begins with
    /// one: the same answer as [`stored::decode`], without decoding the headers again.
    pub(crate) fn decode(&self, key: &str, raw: &Bytes) -> Result<Entry, Corrupt> {
        let slot = &self.slots[self.slot_of(key)];
        let held = slot.head.load();
        if let Some(head) = &*held {
            if raw.starts_with(&head.bytes) {
                // Written only when it changes: a hot page's hits leave the line shared.
                if slot.misses.load(Ordering::Relaxed) != 0 {
                    slot.misses.store(0, Ordering::Relaxed);
                }
                let body = raw.slice(head.bytes.len()..);
                return Ok(Entry::Page(head.page_with(body)));
            }
        }
        let entry = stored::decode(raw.clone())?;
        if let Entry::Page(page) = &entry {
            // Counted up to the bound and no further: a slot whose reads never settle (a
            // million pages read uniformly) stops writing its line, and the count cannot wrap.
            // Two reads racing may count one miss: the bound is a heuristic.
            let misses = slot.misses.load(Ordering::Relaxed);
            if misses < MISSES_BEFORE_REPLACING {
                slot.misses.store(misses + 1, Ordering::Relaxed);
            }
            let due = held.is_none() || misses + 1 >= MISSES_BEFORE_REPLACING;
            let len = raw.len() - page.body.len();
            if due && len <= MAX_HEAD {
                let seen = self.hasher.hash_one(&raw[..len]);
                if slot.seen.swap(seen, Ordering::Relaxed) == seen {
                    drop(held);
                    self.remember(slot, &raw[..len]);
                    slot.misses.store(0, Ordering::Relaxed);
                }
            }
        }
        Ok(entry)
    }

    /// Decodes a copy of `head` (a page's head bytes, just decoded whole) into `slot`.
    fn remember(&self, slot: &Slot, head: &[u8]) {
        let bytes = Bytes::copy_from_slice(head);
        if let Ok(Entry::Page(page)) = stored::decode(bytes.clone()) {
            slot.head.store(Some(Arc::new(Head { bytes, page })));
        }
    }

    fn slot_of(&self, key: &str) -> usize {
        // The high bits: foldhash's low bits are its weakest.
        (self.hasher.hash_one(key) >> (64 - SLOTS.trailing_zeros())) as usize
    }
}

impl Head {
    /// The remembered page with `body`.
    fn page_with(&self, body: Bytes) -> StoredResponse {
        let page = &self.page;
        StoredResponse {
            status: page.status,
            headers: page.headers.clone(),
            body,
            stored_at: page.stored_at,
            fresh_for: page.fresh_for,
            initial_age: page.initial_age,
            vary: page.vary.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
    use proptest::prelude::*;
    use webcache_core::backend::unix_ms;

    use super::*;

    fn page(value: &str, body: &'static [u8], stored_ms: u64) -> Bytes {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        headers.insert("x-value", HeaderValue::from_str(value).unwrap());
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            stored_at: unix_ms::time(stored_ms),
            fresh_for: Duration::from_secs(60),
            initial_age: Duration::from_secs(1),
            vary: vec![(
                HeaderName::from_static("accept"),
                Some(Bytes::from_static(b"text/html")),
            )],
        }
        .encode()
    }

    /// The memo's answer and the decoder's, compared field by field (`Entry` has no `Eq`).
    fn same(memo: &Result<Entry, Corrupt>, plain: &Result<Entry, Corrupt>) -> bool {
        match (memo, plain) {
            (Ok(Entry::Page(a)), Ok(Entry::Page(b))) => {
                a.status == b.status
                    && a.headers == b.headers
                    && a.body == b.body
                    && a.stored_at == b.stored_at
                    && a.fresh_for == b.fresh_for
                    && a.initial_age == b.initial_age
                    && a.vary == b.vary
            }
            (Ok(Entry::Vary(a)), Ok(Entry::Vary(b))) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        }
    }

    /// Whether `entry`'s header values are slices of `raw` (decoded from it) rather than of
    /// the memo's own copy of the head.
    fn decoded_from(entry: &Result<Entry, Corrupt>, raw: &Bytes) -> bool {
        let Ok(Entry::Page(page)) = entry else {
            panic!("not a page")
        };
        let value = page.headers["x-value"].as_bytes().as_ptr() as usize;
        let start = raw.as_ptr() as usize;
        (start..start + raw.len()).contains(&value)
    }

    #[test]
    fn a_page_read_twice_is_answered_from_its_head_after() {
        let memo = HeadMemo::default();
        let raw = page("one", b"body", 1_700_000_000_000);
        let plain = stored::decode(raw.clone());
        // The first two reads decode (the second one remembers); the third does not.
        for read in 0..3 {
            let again = Bytes::copy_from_slice(&raw);
            let got = memo.decode("k", &again);
            assert!(same(&got, &plain), "read {read}");
            assert_eq!(decoded_from(&got, &again), read < 2, "read {read}");
        }
    }

    #[test]
    fn a_page_written_anew_is_decoded_anew() {
        let memo = HeadMemo::default();
        let old = page("old", b"old body", 1_700_000_000_000);
        for _ in 0..2 {
            memo.decode("k", &old).unwrap();
        }
        // Another value, another time, another body: none of it comes from the old head.
        for new in [
            page("new", b"old body", 1_700_000_000_000),
            page("old", b"old body", 1_700_000_000_001),
            page("old", b"another body", 1_700_000_000_000),
        ] {
            let got = memo.decode("k", &new);
            assert!(same(&got, &stored::decode(new.clone())));
        }
        // The same head with another body: the body is the one read.
        let Ok(Entry::Page(got)) = memo.decode("k", &page("old", b"other", 1_700_000_000_000))
        else {
            panic!("not a page")
        };
        assert_eq!(&got.body[..], b"other");
    }

    /// Two pages that share a slot and are read in turn (a working set larger than the memo)
    /// do not trade places on every read: the head held stays until reads in a row miss it.
    #[test]
    fn a_head_in_use_stays_and_a_cold_one_gives_way() {
        let memo = HeadMemo::default();
        let (a, b) = (page("a", b"body", 1), page("b", b"body", 2));
        for _ in 0..2 {
            memo.decode("k", &a).unwrap();
        }
        for round in 0..20 {
            assert!(
                !decoded_from(&memo.decode("k", &a), &a),
                "round {round}: a held"
            );
            assert!(
                decoded_from(&memo.decode("k", &b), &b),
                "round {round}: b decoded"
            );
        }
        // A is not read any more: after reads in a row that miss it, B takes the slot.
        let reads = (0..=MISSES_BEFORE_REPLACING + 1)
            .take_while(|_| decoded_from(&memo.decode("k", &b), &b))
            .count();
        assert!(
            reads <= MISSES_BEFORE_REPLACING as usize + 1,
            "{reads} reads"
        );
        assert!(!decoded_from(&memo.decode("k", &b), &b), "b held now");
        assert!(decoded_from(&memo.decode("k", &a), &a), "a decoded now");
    }

    #[test]
    fn the_memo_keeps_no_stored_buffer_alive() {
        let memo = HeadMemo::default();
        let raw = page("one", b"body", 1_700_000_000_000);
        for _ in 0..3 {
            drop(memo.decode("k", &raw).unwrap());
        }
        assert!(
            raw.is_unique(),
            "the memo holds a copy of the head, not the buffer"
        );
    }

    #[test]
    fn vary_lists_and_corrupt_entries_decode_as_without_the_memo() {
        let memo = HeadMemo::default();
        let list = stored::VaryList {
            names: vec![HeaderName::from_static("cookie")],
            variants: vec!["ab".into()],
        };
        let vary = stored::encode_vary(&list);
        for _ in 0..3 {
            assert!(same(
                &memo.decode("k", &vary),
                &stored::decode(vary.clone())
            ));
            assert!(memo.decode("k", &Bytes::from_static(b"P\x01junk")).is_err());
        }
    }

    proptest! {
        /// The memo answers what the decoder answers, for any bytes read after a page was
        /// remembered under the same key: the page itself, any change of one of its bytes,
        /// any cut, anything appended, and arbitrary bytes.
        #[test]
        fn the_memo_answers_what_the_decoder_answers(
            flip in any::<prop::sample::Index>(),
            to in any::<u8>(),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            noise in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let memo = HeadMemo::default();
            let raw = page("value", b"the body", 1_700_000_000_000);
            for _ in 0..2 {
                memo.decode("k", &raw).unwrap();
            }
            let mut flipped = raw.to_vec();
            flipped[flip.index(raw.len())] = to;
            let mut longer = raw.to_vec();
            longer.extend_from_slice(&tail);
            for read in [
                raw.clone(),
                Bytes::from(flipped),
                raw.slice(..cut.index(raw.len() + 1)),
                Bytes::from(longer),
                Bytes::from(noise.clone()),
            ] {
                let got = memo.decode("k", &read);
                prop_assert!(same(&got, &stored::decode(read)));
            }
        }
    }
}
