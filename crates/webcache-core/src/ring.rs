//! Consistent hashing of keys onto servers: a ketama-style ring.
//!
//! Each server gets 160 points on a 32-bit circle, four from each of 40 MD5 digests of
//! `host:port-N` (modelled on libketama's layout for equally weighted servers); a key goes to the
//! first point at or after the first four bytes of its own MD5 digest. Adding or removing one
//! of `n` servers therefore moves only about `1/n` of the keys, and every client configured
//! with the same server list agrees on where each key lives.
//!
//! A server taken out after failures keeps its points: a lookup walks on past them to the next
//! point of a server still in the ring, which is exactly where a ring built without that server
//! would put the key. So only the keys of the missing server move, and they all go back when it
//! returns.
//!
//! One home for the ring: the memcached backend and the Redis backend's client-side shards
//! (`redis://h1,h2/0`) both use it, so a key lands on the same position of the server list with
//! either backend. It is public for backend crates; applications have no use for it.

use md5::{Digest, Md5};

/// Digests per server; each yields four points.
const DIGESTS_PER_SERVER: u32 = 40;

/// A ring over a fixed list of servers: which server of the list holds a key.
#[derive(Debug, Clone)]
pub struct Ring {
    /// `(point, server index)`, sorted by point.
    points: Vec<(u32, usize)>,
    servers: usize,
}

impl Ring {
    /// A ring over `servers` (their `host:port` names, in configuration order).
    pub fn new<S: AsRef<str>>(servers: &[S]) -> Ring {
        let mut points = Vec::with_capacity(servers.len() * DIGESTS_PER_SERVER as usize * 4);
        for (index, server) in servers.iter().enumerate() {
            for n in 0..DIGESTS_PER_SERVER {
                let digest = Md5::digest(format!("{}-{n}", server.as_ref()).as_bytes());
                for quarter in digest.chunks_exact(4) {
                    let point =
                        u32::from_le_bytes([quarter[0], quarter[1], quarter[2], quarter[3]]);
                    points.push((point, index));
                }
            }
        }
        points.sort_unstable();
        Ring {
            points,
            servers: servers.len(),
        }
    }

    /// The index of the server that holds `key` when every server is in the ring.
    pub fn server_for(&self, key: impl AsRef<[u8]>) -> usize {
        self.route(key, |_| true).0
    }

    /// `(owner, holder)`: the server that owns `key` when every server is in the ring, and the
    /// first server at or after the key's point for which `in_ring` holds (the owner itself
    /// when it is in). If no server is in, the owner.
    pub fn route(&self, key: impl AsRef<[u8]>, in_ring: impl Fn(usize) -> bool) -> (usize, usize) {
        if self.servers <= 1 {
            return (0, 0);
        }
        let digest = Md5::digest(key.as_ref());
        let hash = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let at = self.points.partition_point(|(point, _)| *point < hash);
        // Past the last point the circle wraps to the first.
        let mut walk = self.points[at..].iter().chain(&self.points[..at]);
        let Some(&(_, owner)) = walk.next() else {
            return (0, 0);
        };
        if in_ring(owner) {
            return (owner, owner);
        }
        let holder = walk
            .map(|&(_, server)| server)
            .find(|&server| server != owner && in_ring(server))
            .unwrap_or(owner);
        (owner, holder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> impl Iterator<Item = String> {
        (0..20_000).map(|i| format!("prefix:1:key-{i}"))
    }

    #[test]
    fn keys_spread_over_every_server() {
        let ring = Ring::new(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let mut counts = [0usize; 3];
        for key in keys() {
            counts[ring.server_for(&key)] += 1;
        }
        for count in counts {
            // 160 points per server keep the split within a few percent of a third.
            assert!((5_000..8_500).contains(&count), "uneven split: {counts:?}");
        }
    }

    #[test]
    fn adding_a_server_moves_only_a_fraction_of_keys() {
        let three = Ring::new(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let four = Ring::new(&[
            "10.0.0.1:11211",
            "10.0.0.2:11211",
            "10.0.0.3:11211",
            "10.0.0.4:11211",
        ]);
        let (mut moved, mut total) = (0usize, 0usize);
        for key in keys() {
            total += 1;
            let before = three.server_for(&key);
            let after = four.server_for(&key);
            if before != after {
                moved += 1;
                assert_eq!(after, 3, "a key moved between two old servers");
            }
        }
        let fraction = moved as f64 / total as f64;
        // Ideal is 1/4; modulo hashing would move about 3/4.
        assert!(
            (0.15..0.35).contains(&fraction),
            "moved {fraction:.3} of the keys"
        );
    }

    #[test]
    fn a_server_out_of_the_ring_sends_its_keys_where_a_ring_without_it_would() {
        let all = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"];
        let ring = Ring::new(&all);
        let without_second = Ring::new(&[all[0], all[2]]);
        for key in keys() {
            let (owner, holder) = ring.route(&key, |server| server != 1);
            let expected = [0, 2][without_second.server_for(&key)];
            assert_eq!(holder, expected, "{key}");
            if owner != 1 {
                assert_eq!(holder, owner, "{key} moved but its server is in the ring");
            }
        }
        // With nothing in the ring a key stays with its owner.
        assert!(keys().all(|k| {
            let (owner, holder) = ring.route(&k, |_| false);
            owner == holder
        }));
    }

    #[test]
    fn one_server_takes_everything() {
        let ring = Ring::new(&["127.0.0.1:11211"]);
        assert!(keys().all(|k| ring.server_for(&k) == 0));
    }
}
