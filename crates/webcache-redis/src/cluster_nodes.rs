//! Reading `CLUSTER NODES` output: the one place that knows its line format. Scans list the
//! masters that hold keys, client tracking subscribes to every node that serves reads, and the
//! per-node breakers map slots to masters; all three read lines here.
//!
//! The text comes from a server, so it is untrusted: a line that does not read as a node (too
//! few fields, no `host:port`, an empty host, port 0) is skipped, never guessed at.

use std::collections::BTreeSet;

/// Redis Cluster's number of hash slots.
pub(crate) const SLOTS: u16 = 16384;

/// One node line: `<id> <host:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch>
/// <link-state> <slot> ...`.
struct NodeLine<'a> {
    host: &'a str,
    port: u16,
    master: bool,
    replica: bool,
    /// Flagged `fail`, `handshake` or `noaddr`: not a node to send commands to.
    failing: bool,
    /// The slot fields (ninth onwards); empty for a replica or a master without slots.
    slots: Vec<&'a str>,
}

impl<'a> NodeLine<'a> {
    fn read(line: &'a str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let _id = fields.next()?;
        let address = fields.next()?;
        let flags = fields.next()?;
        // Master id, ping, pong, epoch, link state; then the slots.
        let slots = fields.skip(5).collect();
        let host_port = address.split(['@', ',']).next()?;
        let (host, port) = host_port.rsplit_once(':')?;
        // IPv6 addresses are written in brackets; the client wants them bare.
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.strip_suffix(']')?,
            None => host,
        };
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        if host.is_empty() || host.contains(['[', ']']) {
            return None;
        }
        let flags = || flags.split(',');
        Some(Self {
            host,
            port,
            master: flags().any(|f| f == "master"),
            replica: flags().any(|f| matches!(f, "slave" | "replica")),
            failing: flags().any(|f| matches!(f, "fail" | "handshake" | "noaddr")),
            slots,
        })
    }

    /// A master that holds keys (a master without slots holds none).
    fn master_with_slots(&self) -> bool {
        self.master && !self.slots.is_empty()
    }
}

fn node_lines(text: &str) -> impl Iterator<Item = NodeLine<'_>> {
    text.lines().filter_map(NodeLine::read)
}

/// The name of a Cluster node, as its circuit breaker and its errors know it: `host:port`.
pub(crate) fn node_name(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// The `host:port` of every master that serves slots, in the order listed: the nodes that
/// hold keys. Failing ones are included: their keys are still theirs (no replica took their
/// slots over), so a walk over every key (`clear`, `keys`, `delete_pattern`) must meet their
/// failure rather than skip their keys and report success.
pub(crate) fn masters(text: &str) -> Vec<(String, u16)> {
    node_lines(text)
        .filter(|n| n.master_with_slots())
        .map(|n| (n.host.to_owned(), n.port))
        .collect()
}

/// The `host:port` of every node that serves reads: masters with slots, and their replicas
/// when `with_replicas`. Failing nodes are left out.
pub(crate) fn read_nodes(text: &str, with_replicas: bool) -> BTreeSet<(String, u16)> {
    node_lines(text)
        .filter(|n| !n.failing && (n.master_with_slots() || (with_replicas && n.replica)))
        .map(|n| (n.host.to_owned(), n.port))
        .collect()
}

/// The slot ranges (first, last, `host:port`) of every master that serves slots, failing ones
/// included (their keys still hash there: that is what their breaker is for), sorted. Slots
/// being imported or migrated (`[..]`) and ranges outside 0..16384 are left out.
pub(crate) fn slot_ranges(text: &str) -> Vec<(u16, u16, String)> {
    let mut ranges = Vec::new();
    for node in node_lines(text).filter(|n| n.master) {
        let name = node_name(node.host, node.port);
        for slots in &node.slots {
            let (first, last) = match slots.split_once('-') {
                Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                None => (slots.parse::<u16>(), slots.parse::<u16>()),
            };
            if let (Ok(first), Ok(last)) = (first, last) {
                if first <= last && last < SLOTS {
                    ranges.push((first, last, name.clone()));
                }
            }
        }
    }
    ranges.sort_unstable();
    ranges
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODES: &str = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003,host.example master,fail - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]
bbbb 127.0.0.1:30010@40010 master - 0 0 1 connected
cccc 127.0.0.1:30011@40011 slave,fail e7d1 0 0 1 connected
dddd [::1]:30012@40012 replica e7d1 0 0 1 connected
";

    fn nodes(ports: &[u16]) -> BTreeSet<(String, u16)> {
        ports.iter().map(|p| ("127.0.0.1".to_owned(), *p)).collect()
    }

    #[test]
    fn masters_serving_slots_in_order_failing_ones_included() {
        assert_eq!(
            masters(NODES),
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }

    #[test]
    fn read_nodes_add_replicas_when_asked() {
        assert_eq!(read_nodes(NODES, false), nodes(&[30001, 30002]));
        let mut with_replicas = nodes(&[30001, 30002, 30004]);
        with_replicas.insert(("::1".to_owned(), 30012));
        assert_eq!(read_nodes(NODES, true), with_replicas);
    }

    #[test]
    fn slot_ranges_include_failing_masters() {
        assert_eq!(
            slot_ranges(NODES),
            [
                (0, 5460, "127.0.0.1:30001".to_owned()),
                (5461, 10922, "127.0.0.1:30002".to_owned()),
                (10923, 16383, "127.0.0.1:30003".to_owned()),
            ]
        );
    }

    /// Found by the property test below (CI, 2026-12-01): an address with no host, such as
    /// `:01@`, was read as the node `("", 1)`; a host with a stray bracket was kept.
    #[test]
    fn a_line_without_a_host_or_port_is_skipped() {
        for address in [
            ":01@",
            ":6379",
            "[]:6379",
            ".]a:1",
            "[::1:6379",
            "127.0.0.1:0",
            "127.0.0.1:",
            "127.0.0.1",
        ] {
            let text = format!("aa {address} master - 0 0 1 connected 0-16383\n");
            assert_eq!(masters(&text), vec![], "{address}");
            assert_eq!(read_nodes(&text, true), BTreeSet::new(), "{address}");
            assert_eq!(slot_ranges(&text), vec![], "{address}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever a server sends as `CLUSTER NODES`, reading it never panics; every node
        /// yielded has a host and a port written together on one of its lines, and every
        /// range is a real slot range.
        #[test]
        fn any_output_is_read_without_panic(
            text in "(([0-9a-f]{2} )?[0-9.:@\\[\\],a-z]{0,24} (master|myself,master|slave|master,fail)? ?[-0-9 a-z]{0,30}\n){0,6}",
            noise in any::<Vec<u8>>(),
            with_replicas in any::<bool>(),
        ) {
            let written = |host: &str, port: u16| {
                !host.is_empty() && port != 0 && text.lines().any(|line| {
                    let line = line.replace(['[', ']'], "");
                    line.match_indices(host).any(|(at, _)| {
                        let rest = &line[at + host.len()..];
                        rest.strip_prefix(':').and_then(|r| {
                            let digits = r.split(|c: char| !c.is_ascii_digit()).next()?;
                            digits.parse::<u16>().ok()
                        }) == Some(port)
                    })
                })
            };
            for (host, port) in masters(&text).into_iter().chain(read_nodes(&text, with_replicas)) {
                prop_assert!(written(&host, port), "{}:{} not on a line of {:?}", host, port, text);
            }
            for (first, last, _) in slot_ranges(&text) {
                prop_assert!(first <= last && last < SLOTS);
            }
            let noise = String::from_utf8_lossy(&noise);
            let _ = (masters(&noise), read_nodes(&noise, with_replicas), slot_ranges(&noise));
        }
    }
}
