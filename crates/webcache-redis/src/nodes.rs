//! Which server a key lives on, for the per-node circuit breakers
//! ([`NodeBreakers`](webcache_core::backend::NodeBreakers)) of a Redis Cluster: the key's hash
//! slot, and the slot ranges each master serves (read from `CLUSTER NODES`, refreshed in the
//! background). Shards need none of this: the ring names the shard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cluster_nodes::SLOTS;

/// How long a slot map is used before it is read again (in the background: calls never wait
/// for it). A map that is out of date only mislabels which node's breaker a call counts for,
/// and a trial call through the cluster client, which follows `MOVED`, clears that up.
pub(crate) const SLOT_MAP_AGE: Duration = Duration::from_secs(5);

/// The hash slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) of the key, or of its
/// hash tag (the text between the first `{` and the next `}`, when not empty), modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The last slot map read, and when.
#[derive(Debug, Default)]
pub(crate) struct SlotMap {
    state: Mutex<MapState>,
    refreshing: AtomicBool,
}

#[derive(Debug, Default)]
struct MapState {
    ranges: Vec<(u16, u16, String)>,
    read_at: Option<Instant>,
}

impl SlotMap {
    fn lock(&self) -> MutexGuard<'_, MapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master serving `key`'s slot, as last read; and whether the map is due a refresh
    /// (never read, or older than [`SLOT_MAP_AGE`]).
    pub(crate) fn node_of(&self, key: &[u8]) -> (Option<String>, bool) {
        let slot = slot(key);
        let state = self.lock();
        let due = state.read_at.is_none_or(|at| at.elapsed() >= SLOT_MAP_AGE);
        let at = state.ranges.partition_point(|(first, _, _)| *first <= slot);
        let node = at
            .checked_sub(1)
            .and_then(|i| state.ranges.get(i))
            .filter(|(_, last, _)| slot <= *last)
            .map(|(_, _, node)| node.clone());
        (node, due)
    }

    /// Claims the one refresh that may run at a time.
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Ends a claimed refresh with what was read (`None`: the read failed; try again on a
    /// later call).
    pub(crate) fn refreshed(&self, ranges: Option<Vec<(u16, u16, String)>>) {
        if let Some(ranges) = ranges {
            let mut state = self.lock();
            state.ranges = ranges;
            state.read_at = Some(Instant::now());
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use redis::cluster_routing::Slot;

    use super::*;

    #[test]
    fn the_slot_map_names_a_keys_master() {
        let ranges = vec![
            (0, 5460, "127.0.0.1:30001".to_owned()),
            (5461, 10922, "127.0.0.1:30002".to_owned()),
            (10923, 16383, "127.0.0.1:30003".to_owned()),
        ];
        let map = SlotMap::default();
        assert_eq!(map.node_of(b"k"), (None, true));
        assert!(map.claim_refresh());
        assert!(!map.claim_refresh());
        map.refreshed(Some(ranges));
        // `foo` hashes to slot 12182, `{foo}bar` too.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(
            map.node_of(b"{foo}bar"),
            (Some("127.0.0.1:30003".to_owned()), false)
        );
        assert!(map.claim_refresh());
    }

    proptest! {
        /// The slot is the one the Redis client computes, hash tags included.
        #[test]
        fn slots_match_the_redis_client(key in proptest::collection::vec(any::<u8>(), 0..40), tag in any::<bool>()) {
            let key = if tag { [b"x{".as_slice(), &key, b"}y"].concat() } else { key };
            prop_assert_eq!(Slot::new(slot(&key)), Some(Slot::for_key(&key)));
        }

    }
}
