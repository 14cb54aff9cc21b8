//! Which server a key lives on, for the per-node circuit breakers
//! ([`NodeBreakers`](webcache_core::backend::NodeBreakers)) of a Redis Cluster: the key's hash
//! slot, and the slot ranges each master serves (read from `CLUSTER NODES`, refreshed in the
//! background). Shards need none of this: the ring names the shard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Redis Cluster's number of hash slots.
const SLOTS: u16 = 16384;

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

/// The slot ranges (first, last, `host:port`) of every master that serves slots, failing ones
/// included (their keys still hash there: that is what their breaker is for), from
/// `CLUSTER NODES` output. Slots being imported or migrated (`[..]`) are left out.
pub(crate) fn slot_ranges_from_cluster_nodes(text: &str) -> Vec<(u16, u16, String)> {
    let mut ranges = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(address), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") {
            continue;
        }
        let Some(host_port) = address.split(['@', ',']).next() else {
            continue;
        };
        let Some((host, port)) = host_port.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let node = format!("{}:{port}", host.trim_matches(['[', ']']));
        // Fields 4 to 8: master id, ping, pong, epoch, link state; then the slots.
        for slots in line.split_whitespace().skip(8) {
            let (first, last) = match slots.split_once('-') {
                Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                None => (slots.parse::<u16>(), slots.parse::<u16>()),
            };
            if let (Ok(first), Ok(last)) = (first, last) {
                if first <= last && last < SLOTS {
                    ranges.push((first, last, node.clone()));
                }
            }
        }
    }
    ranges.sort_unstable();
    ranges
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

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    #[test]
    fn slot_ranges_are_read_from_cluster_nodes() {
        let ranges = slot_ranges_from_cluster_nodes(NODES);
        assert_eq!(
            ranges,
            [
                (0, 5460, "127.0.0.1:30001".to_owned()),
                (5461, 10922, "127.0.0.1:30002".to_owned()),
                (10923, 16383, "127.0.0.1:30003".to_owned()),
            ]
        );
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

        /// Whatever a server sends as `CLUSTER NODES`, reading it never panics and every range
        /// is a real slot range.
        #[test]
        fn cluster_nodes_output_is_read_without_panic(text in "(([0-9a-f]{2} )?[0-9.:@\\[\\],a-z]{0,24} (master|myself,master|slave|master,fail)? ?[-0-9 a-z]{0,30}\n){0,6}", noise in any::<Vec<u8>>()) {
            for text in [text, String::from_utf8_lossy(&noise).into_owned()] {
                for (first, last, _) in slot_ranges_from_cluster_nodes(&text) {
                    prop_assert!(first <= last && last < SLOTS);
                }
            }
        }
    }
}
