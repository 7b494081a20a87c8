//! A deterministic in-process network for the protocol core: supernodes and edges exchange
//! datagrams through a simulated underlay with fake time and a filter that can block paths.

use crate::edge::{Command, Edge, EdgeConfig};
use crate::io::{DropReason, Output};
use crate::keys::{Mac, PrivateKey, PublicKey};
use crate::rng::Rng;
use crate::supernode::{CommunityConfig, NodeEntry, ReloadSummary, Supernode, SupernodeConfig};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) struct SimEdge {
    pub(crate) addr: SocketAddr,
    pub(crate) key: PrivateKey,
    pub(crate) cfg: EdgeConfig,
    pub(crate) edge: Edge,
    pub(crate) delivered: Vec<Vec<u8>>,
}

pub(crate) struct Net {
    pub(crate) now: Instant,
    pub(crate) sn_addr: SocketAddr,
    pub(crate) sn_key: PrivateKey,
    pub(crate) sn_cfg: SupernodeConfig,
    pub(crate) sn: Supernode,
    pub(crate) sn_down: bool,
    pub(crate) edges: Vec<SimEdge>,
    pub(crate) wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub(crate) blocked: HashSet<(SocketAddr, SocketAddr)>,
    /// Largest IP packet (UDP payload + 28) each direction carries; larger ones vanish.
    pub(crate) path_mtu: std::collections::HashMap<(SocketAddr, SocketAddr), usize>,
    /// Every datagram that reached the supernode.
    pub(crate) sn_capture: Vec<Vec<u8>>,
    /// Every datagram that left each edge: (from, to, bytes).
    pub(crate) capture: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub(crate) out: Output,
    /// `admin_key` of edges added from now on.
    pub(crate) admin: Option<crate::membership::AdminPublicKey>,
}

pub(crate) fn addr(i: u8, port: u16) -> SocketAddr {
    SocketAddr::new([198, 18, 0, i].into(), port)
}

/// An IPv4/UDP-ish frame from `src` to `dst` carrying `payload` (enough for our checks).
pub(crate) fn ip_frame(dst: Mac, src: Mac, src_ip: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[12..16].copy_from_slice(&src_ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

impl Net {
    /// A supernode with communities `(name, [(node name, address)])`; edges are added later.
    #[allow(clippy::type_complexity)]
    pub(crate) fn new(communities: &[(&str, &[(&str, [u8; 4])])]) -> (Net, Vec<PrivateKey>) {
        let now = Instant::now();
        // Keys from a fixed seed: a scenario run twice sends the same bytes.
        let mut rng = Rng::from_seed([42; 32]);
        let sn_key = PrivateKey::from_rng(&mut rng);
        let mut keys = Vec::new();
        let communities = communities
            .iter()
            .map(|(name, nodes)| CommunityConfig {
                name: name.to_string(),
                network: "10.0.0.0/16".parse().unwrap(),
                nodes: nodes
                    .iter()
                    .map(|(n, a)| {
                        let k = PrivateKey::from_rng(&mut rng);
                        keys.push(k.clone());
                        NodeEntry {
                            key: k.public_key(),
                            name: n.to_string(),
                            address: std::net::Ipv4Addr::from(*a).into(),
                            allowed_cidrs: vec!["10.244.0.0/24".parse().unwrap()],
                            ipv6_router: false,
                        }
                    })
                    .collect(),
                relay: true,
                signed: None,
                enrolment: None,
                cipher: Default::default(),
            })
            .collect();
        let sn_cfg = SupernodeConfig {
            private_key: sn_key.clone(),
            communities,
            register_interval: 10,
        };
        let net = Net {
            now,
            sn_addr: addr(1, 7654),
            sn: Supernode::new(sn_cfg.clone(), now, Rng::from_seed([1; 32])),
            sn_cfg,
            sn_key,
            sn_down: false,
            edges: Vec::new(),
            wire: VecDeque::new(),
            blocked: HashSet::new(),
            path_mtu: Default::default(),
            sn_capture: Vec::new(),
            capture: Vec::new(),
            out: Output::default(),
            admin: None,
        };
        (net, keys)
    }

    pub(crate) fn add_edge(
        &mut self,
        community: &str,
        key: &PrivateKey,
        address: [u8; 4],
    ) -> usize {
        let i = self.edges.len();
        let a = addr(11 + i as u8, 7655);
        let cfg = EdgeConfig {
            admin_key: self.admin,
            // A static edge knows the community network (as `interface.address` says it).
            network: (address != [0; 4]).then(|| "10.0.0.0/16".parse().unwrap()),
            ..EdgeConfig::new(
                community,
                key.clone(),
                std::net::Ipv4Addr::from(address).into(),
                vec![(self.sn_addr, self.sn_key.public_key())],
            )
        };
        let edge = Edge::new(
            cfg.clone(),
            self.now,
            1_700_000_000_000_000,
            Rng::from_seed([11 + i as u8; 32]),
        );
        self.edges.push(SimEdge {
            addr: a,
            key: key.clone(),
            cfg,
            edge,
            delivered: Vec::new(),
        });
        i
    }

    pub(crate) fn restart_edge(&mut self, i: usize) {
        let e = &mut self.edges[i];
        e.edge = Edge::new(
            e.cfg.clone(),
            self.now,
            1_700_000_000_000_000 + 10_000_000_000,
            Rng::from_seed([111 + i as u8; 32]),
        );
        e.delivered.clear();
    }

    pub(crate) fn restart_supernode(&mut self) {
        self.sn = Supernode::new(self.sn_cfg.clone(), self.now, Rng::from_seed([2; 32]));
    }

    pub(crate) fn block(&mut self, a: usize, b: usize) {
        let (x, y) = (self.edges[a].addr, self.edges[b].addr);
        self.blocked.insert((x, y));
        self.blocked.insert((y, x));
    }

    pub(crate) fn unblock_all(&mut self) {
        self.blocked.clear();
    }

    pub(crate) fn collect(&mut self, from: SocketAddr) {
        for t in &self.out.transmits {
            let bytes = self.out.bytes(t).to_vec();
            self.capture.push((from, t.dst, bytes.clone()));
            self.wire.push_back((from, t.dst, bytes));
        }
    }

    pub(crate) fn drain_edge(&mut self, i: usize) {
        let from = self.edges[i].addr;
        self.collect(from);
        for f in &self.out.frames {
            self.edges[i]
                .delivered
                .push(self.out.buf[f.clone()].to_vec());
        }
        self.out.clear();
    }

    pub(crate) fn deliver_all(&mut self) {
        let mut budget = 100_000;
        while let Some((src, dst, mut pkt)) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "packet storm");
            if self.blocked.contains(&(src, dst)) {
                continue;
            }
            if self
                .path_mtu
                .get(&(src, dst))
                .is_some_and(|m| pkt.len() + 28 > *m)
            {
                continue;
            }
            if dst == self.sn_addr {
                if self.sn_down {
                    continue;
                }
                self.sn_capture.push(pkt.clone());
                self.sn.handle_udp(self.now, src, &mut pkt, &mut self.out);
                self.collect(self.sn_addr);
                self.out.clear();
            } else if let Some(i) = self.edges.iter().position(|e| e.addr == dst) {
                self.edges[i]
                    .edge
                    .handle_udp(self.now, src, &mut pkt, &mut self.out);
                self.drain_edge(i);
            }
        }
    }

    pub(crate) fn run(&mut self, dur: Duration) {
        let end = self.now + dur;
        while self.now < end {
            self.now += Duration::from_millis(50);
            if !self.sn_down {
                self.sn.handle_timeout(self.now, &mut self.out);
                self.collect(self.sn_addr);
                self.out.clear();
            }
            for i in 0..self.edges.len() {
                self.edges[i].edge.handle_timeout(self.now, &mut self.out);
                self.drain_edge(i);
            }
            self.deliver_all();
        }
    }

    pub(crate) fn send_frame(&mut self, from: usize, frame: &[u8]) {
        self.edges[from]
            .edge
            .handle_frame(self.now, frame, &mut self.out);
        self.drain_edge(from);
        self.deliver_all();
    }

    pub(crate) fn mac(&self, i: usize) -> Mac {
        self.edges[i].cfg.mac
    }

    pub(crate) fn ip(&self, i: usize) -> [u8; 4] {
        match self.edges[i].cfg.address {
            std::net::IpAddr::V4(a) => a.octets(),
            _ => unreachable!(),
        }
    }

    /// Sends a unicast frame from `a` to `b` and says whether `b` got exactly it.
    pub(crate) fn unicast(&mut self, a: usize, b: usize, marker: &[u8]) -> bool {
        let f = ip_frame(self.mac(b), self.mac(a), self.ip(a), marker);
        let before = self.edges[b].delivered.len();
        self.send_frame(a, &f);
        self.run(Duration::from_millis(100));
        self.edges[b].delivered[before..].contains(&f)
    }

    pub(crate) fn path(&self, a: usize, b: usize) -> &'static str {
        let key = self.edges[b].key.public_key();
        let st = self.edges[a].edge.status(self.now);
        st.peers
            .iter()
            .find(|p| p.public_key == key)
            .map_or("unknown", |p| p.path)
    }

    pub(crate) fn drops(&self, i: usize, r: DropReason) -> u64 {
        self.edges[i].edge.status(self.now).drops.get(r)
    }
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Community "prod" with the first `n` of the members a (10.0.0.1), b (10.0.0.2) and
/// c (10.0.0.3); no edges yet.
pub(crate) fn prod(n: usize) -> (Net, Vec<PrivateKey>) {
    let members = [
        ("a", [10, 0, 0, 1]),
        ("b", [10, 0, 0, 2]),
        ("c", [10, 0, 0, 3]),
    ];
    Net::new(&[("prod", &members[..n])])
}

impl Net {
    /// An edge of "prod" for each of `keys`, the i-th at 10.0.0.(1 + i) (as in [`prod`]).
    pub(crate) fn add_edges(&mut self, keys: &[PrivateKey]) {
        for (i, k) in keys.iter().enumerate() {
            self.add_edge("prod", k, [10, 0, 0, 1 + i as u8]);
        }
    }
}

/// [`prod`] with an edge for each of its `n` members, run for 3 s (registered, sessions up).
pub(crate) fn prod_edges(n: usize) -> (Net, Vec<PrivateKey>) {
    let (mut net, keys) = prod(n);
    net.add_edges(&keys);
    net.run(Duration::from_secs(3));
    (net, keys)
}

pub(crate) fn two_edges() -> Net {
    prod_edges(2).0
}

/// The datagrams a scenario makes: two edges register, talk direct, lose the direct path
/// (relay), get it back, and one edge restarts.
fn scenario_trace() -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"one"));
    net.block(0, 1);
    net.run(Duration::from_secs(20));
    assert!(net.unicast(0, 1, b"two"));
    net.unblock_all();
    net.run(Duration::from_secs(10));
    net.restart_edge(1);
    net.run(Duration::from_secs(5));
    assert!(net.unicast(1, 0, b"three"));
    std::mem::take(&mut net.capture)
}

#[test]
fn a_scenario_run_twice_sends_the_same_bytes() {
    let (a, b) = (scenario_trace(), scenario_trace());
    assert!(a.len() > 50, "the scenario sent {} datagrams", a.len());
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_difference, None, "traces diverge");
    assert_eq!(a.len(), b.len());
}

#[test]
fn edges_register_and_talk_directly() {
    let mut net = two_edges();
    for e in &net.edges {
        assert!(e.edge.is_registered());
    }
    // Only the first handshake went every way at once (its relayed copies); data goes direct.
    let relayed = net.sn.status(net.now).relay_packets;
    assert!(net.unicast(0, 1, b"hello b"));
    assert!(net.unicast(1, 0, b"hello a"));
    assert_eq!(net.path(0, 1), "direct");
    assert_eq!(net.path(1, 0), "direct");
    let st = net.sn.status(net.now);
    assert!(st.communities[0].members.iter().all(|m| m.registered));
    assert_eq!(st.relay_packets, relayed);
}

#[test]
fn broadcast_reaches_every_peer_once() {
    let (mut net, _) = prod_edges(3);
    let f = ip_frame(Mac::BROADCAST, net.mac(0), net.ip(0), b"who has");
    net.send_frame(0, &f);
    net.run(Duration::from_millis(200));
    assert_eq!(
        net.edges[1].delivered.iter().filter(|x| **x == f).count(),
        1
    );
    assert_eq!(
        net.edges[2].delivered.iter().filter(|x| **x == f).count(),
        1
    );
    assert!(!net.edges[0].delivered.contains(&f), "own broadcast echoed");
}

#[test]
fn learning_a_peer_or_its_new_mac_refreshes_the_kernels_neighbour_entry() {
    let mut net = two_edges();
    let garp = crate::eth::gratuitous_arp(net.mac(1), [10, 0, 0, 2].into());
    let count = |net: &Net| {
        net.edges[0]
            .delivered
            .iter()
            .filter(|x| **x == garp)
            .count()
    };
    assert_eq!(count(&net), 1, "a announces b's MAC to its kernel once");
    // Lists pushed again (a reload, a supernode restart): nothing new to announce.
    net.reload(|_| {});
    net.run(Duration::from_secs(1));
    assert_eq!(count(&net), 1);
    // b comes back with another MAC: announced again, with the new one.
    net.edges[1].cfg.mac = Mac([2, 9, 9, 9, 9, 9]);
    net.restart_edge(1);
    net.run(Duration::from_secs(3));
    let new = crate::eth::gratuitous_arp(Mac([2, 9, 9, 9, 9, 9]), [10, 0, 0, 2].into());
    assert!(net.edges[0].delivered.iter().any(|x| **x == new));
}

#[test]
fn first_frame_before_any_session_is_queued_not_lost() {
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    // Registered, but before the eager handshake could finish: send at once.
    net.run(Duration::from_millis(150));
    let f = ip_frame(net.mac(0), net.mac(1), net.ip(1), b"early");
    net.send_frame(1, &f);
    net.run(Duration::from_secs(3));
    assert!(net.edges[0].delivered.contains(&f));
}

#[test]
fn blocked_direct_path_relays_ciphertext_then_upgrades() {
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    net.block(0, 1);
    net.run(Duration::from_secs(3));
    let marker = b"SECRET-PAYLOAD-MARKER-0123456789";
    assert!(net.unicast(0, 1, marker));
    assert!(net.unicast(1, 0, marker));
    assert_eq!(net.path(0, 1), "relay");
    assert_eq!(net.path(1, 0), "relay");
    assert!(net.sn.status(net.now).relay_packets > 0);
    assert!(
        net.sn_capture.iter().all(|p| !contains(p, marker)),
        "supernode saw plaintext"
    );
    net.unblock_all();
    net.run(Duration::from_secs(6));
    assert_eq!(net.path(0, 1), "direct");
    assert_eq!(net.path(1, 0), "direct");
    assert!(net.unicast(0, 1, b"direct now"));
    // A dead direct path falls back to relay within DIRECT_TIMEOUT plus a tick.
    net.block(0, 1);
    net.run(crate::edge::DIRECT_TIMEOUT + Duration::from_secs(1));
    assert_eq!(net.path(0, 1), "relay");
    assert!(net.unicast(0, 1, b"relayed again"));
}

#[test]
fn an_idle_relayed_peer_stays_up() {
    // Found in the demo: probes to a relayed peer's (blocked) endpoints counted as traffic,
    // so no keepalive went through the relay, and after DEAD_AFTER an idle but healthy
    // relayed peer was shown as down.
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    net.block(0, 1);
    net.run(Duration::from_secs(3));
    assert!(net.unicast(0, 1, b"hello"));
    net.run(crate::edge::DEAD_AFTER * 3);
    for (a, b) in [(0, 1), (1, 0)] {
        let key = net.edges[b].key.public_key();
        let st = net.edges[a].edge.status(net.now);
        let p = st.peers.iter().find(|p| p.public_key == key).unwrap();
        assert_eq!(p.path, "relay", "{}", p.path_reason);
        assert!(
            p.last_rx_secs.is_some_and(|s| s < 12.0),
            "{:?}",
            p.last_rx_secs
        );
        // Pings through the relay measure its round trip (the simulator delivers at once).
        assert!(
            p.rtt_secs.is_some_and(|r| r < 0.1),
            "relayed RTT {:?}",
            p.rtt_secs
        );
    }
}

/// Bytes the supernode has sent so far (from the capture).
pub(crate) fn sn_bytes_sent(net: &Net) -> usize {
    net.capture
        .iter()
        .filter(|(from, _, _)| *from == net.sn_addr)
        .map(|(_, _, b)| b.len())
        .sum()
}

#[test]
fn a_registration_costs_the_supernode_one_record_per_member_not_the_whole_list() {
    // 40 members join one after the other. Each join sends the others one record (a
    // PeerUpdate) and the newcomer the whole list: linear in the members, where pushing the
    // whole list to everyone was quadratic (about 40 × 40 records for the last join).
    const N: usize = 40;
    let names: Vec<String> = (0..N).map(|i| format!("n{i}")).collect();
    let nodes: Vec<(&str, [u8; 4])> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), [10, 0, 1, i as u8 + 1]))
        .collect();
    let (mut net, keys) = Net::new(&[("prod", &nodes)]);
    let mut per_join = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let before = sn_bytes_sent(&net);
        net.add_edge("prod", key, [10, 0, 1, i as u8 + 1]);
        net.run(Duration::from_millis(500));
        per_join.push(sn_bytes_sent(&net) - before);
    }
    net.run(Duration::from_secs(2));
    for i in 0..N {
        let st = net.edges[i].edge.status(net.now);
        assert_eq!(
            st.peers.len(),
            N - 1,
            "edge {i} knows {} peers",
            st.peers.len()
        );
    }
    // Every edge is at the supernode's epoch, reached by updates: no whole list beyond
    // the one each newcomer asked for.
    let lists = net
        .capture
        .iter()
        .filter(|(from, _, _)| *from == net.sn_addr)
        .count();
    let last = per_join[N - 1];
    let tenth = per_join[9];
    println!("supernode bytes for join 10: {tenth}, join {N}: {last}, packets in all: {lists}");
    // Pushing the whole list to everyone cost 143,563 bytes for the last join (12,001 for
    // the tenth). Now: the newcomer's list (~4.5 KB), one record to each of 39 others
    // (~6 KB), and the newcomer's first handshakes relayed to its 39 peers: 26,212 bytes.
    assert!(last < 40_000, "last join cost {last} bytes");
    assert!(last < tenth * 6, "join {N}: {last} bytes, join 10: {tenth}");
}

#[test]
fn a_lost_update_is_healed_by_a_whole_list() {
    let (mut net, keys) = prod(3);
    net.add_edges(&keys[..2]);
    net.run(Duration::from_secs(2));
    // The supernode's update about c never reaches a: a learns about c from the next
    // update (a step it cannot apply, so it asks for the whole list) or its next
    // registration.
    net.blocked.insert((net.sn_addr, net.edges[0].addr));
    net.add_edge("prod", &keys[2], [10, 0, 0, 3]);
    net.run(Duration::from_millis(300));
    net.unblock_all();
    assert!(!net.knows(0, 2), "a cannot know c yet");
    let epoch = |net: &Net| net.sn.status(net.now).communities[0].epoch;
    assert!(net.edges[0].edge.test_epoch(0) < Some(epoch(&net)));
    // b restarts: a new instance is a change, pushed as an update a cannot apply. a asks
    // for the whole list at once (its next registration is 10 s away).
    net.restart_edge(1);
    net.run(Duration::from_secs(2));
    assert_eq!(net.edges[0].edge.test_epoch(0), Some(epoch(&net)));
    assert!(net.knows(0, 2), "a learned c from the whole list");
    assert!(net.unicast(0, 2, b"hello c"));
}

#[test]
fn replayed_data_packet_is_dropped_and_counted() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"original"));
    let (a, b) = (net.edges[0].addr, net.edges[1].addr);
    let pkt = net
        .capture
        .iter()
        .rev()
        .find(|(f, t, p)| *f == a && *t == b && p[1] == crate::wire::TYPE_DATA && p.len() > 40)
        .map(|x| x.2.clone())
        .unwrap();
    let before_delivered = net.edges[1].delivered.len();
    let before = net.drops(1, DropReason::Replay);
    net.wire.push_back((a, b, pkt));
    net.deliver_all();
    assert_eq!(net.drops(1, DropReason::Replay), before + 1);
    assert_eq!(net.edges[1].delivered.len(), before_delivered);
}

#[test]
fn spoofed_source_is_dropped() {
    let mut net = two_edges();
    // A frame from a's MAC but with an IP a does not own.
    let f = ip_frame(net.mac(1), net.mac(0), [10, 0, 0, 99], b"spoof");
    let before = net.drops(1, DropReason::SourceMismatch);
    net.send_frame(0, &f);
    net.run(Duration::from_millis(100));
    assert!(!net.edges[1].delivered.contains(&f));
    assert_eq!(net.drops(1, DropReason::SourceMismatch), before + 1);
    // From an allowed CIDR it passes.
    let ok = ip_frame(net.mac(1), net.mac(0), [10, 244, 0, 7], b"pod");
    net.send_frame(0, &ok);
    assert!(net.edges[1].delivered.contains(&ok));
}

#[test]
fn supernode_restart_keeps_direct_tunnels_and_edges_reregister() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"before"));
    net.sn_down = true;
    net.restart_supernode();
    // While it is down and after it comes back, the direct tunnel carries every frame.
    for i in 0..20 {
        assert!(net.unicast(0, 1, format!("during {i}").as_bytes()));
        net.run(Duration::from_millis(400));
    }
    net.sn_down = false;
    let start = net.now;
    while !net.sn.status(net.now).communities[0]
        .members
        .iter()
        .all(|m| m.registered)
    {
        net.run(Duration::from_millis(250));
        assert!(
            net.now - start < Duration::from_secs(20),
            "edges did not re-register"
        );
    }
    assert!(net.unicast(1, 0, b"after"));
    assert_eq!(net.path(0, 1), "direct");
}

#[test]
fn restarted_edge_is_accepted_at_once_and_tunnels_recover() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"before"));
    net.restart_edge(1);
    net.run(Duration::from_secs(2));
    assert!(
        net.edges[1].edge.is_registered(),
        "no lock-out of a restarted member"
    );
    assert!(net.unicast(0, 1, b"after restart a->b"));
    assert!(net.unicast(1, 0, b"after restart b->a"));
}

#[test]
fn non_member_and_wrong_address_are_refused() {
    let (mut net, keys) = prod(2);
    let stranger = PrivateKey::generate();
    net.add_edge("prod", &stranger, [10, 0, 0, 9]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 1]); // b claims a's address
    net.run(Duration::from_secs(3));
    let s0 = net.edges[0].edge.status(net.now);
    assert!(!s0.supernodes[0].registered);
    assert!(s0.supernodes[0]
        .error
        .as_deref()
        .unwrap()
        .contains("not a member"));
    // The edge pads its initiation, so the whole explanation fits in a refusal that is not
    // larger than the initiation (no amplification: see supernode.rs).
    assert!(s0.supernodes[0]
        .error
        .as_deref()
        .unwrap()
        .ends_with("to the supernode's community file)"));
    let s1 = net.edges[1].edge.status(net.now);
    assert!(!s1.supernodes[0].registered);
    assert!(s1.supernodes[0]
        .error
        .as_deref()
        .unwrap()
        .contains("belongs to member 'a'"));
    let refused: Vec<_> = net.sn.drain_events().collect();
    let stranger_key = stranger.public_key().to_base64();
    assert!(refused.iter().any(
        |e| matches!(e, crate::supernode::Event::Refused(r) if r.key.to_base64() == stranger_key)
    ));
    assert_eq!(net.sn.status(net.now).refused as usize, refused.len());
}

#[test]
fn communities_are_isolated() {
    let (mut net, keys) = Net::new(&[
        ("red", &[("r1", [10, 0, 0, 1]), ("r2", [10, 0, 0, 2])]),
        ("blue", &[("b1", [10, 0, 0, 3])]),
    ]);
    net.add_edge("red", &keys[0], [10, 0, 0, 1]);
    net.add_edge("red", &keys[1], [10, 0, 0, 2]);
    net.add_edge("blue", &keys[2], [10, 0, 0, 3]);
    net.run(Duration::from_secs(3));
    assert!(net.edges[2].edge.is_registered());
    let f = ip_frame(Mac::BROADCAST, net.mac(2), net.ip(2), b"blue hello");
    net.send_frame(2, &f);
    net.run(Duration::from_secs(1));
    assert!(!net.edges[0].delivered.contains(&f));
    assert!(net.edges[2].edge.status(net.now).peers.is_empty());
    assert_eq!(net.edges[0].edge.status(net.now).peers.len(), 1);
    // A handshake from blue to red's key is not answered: red does not know blue's key.
    let red_key: PublicKey = keys[0].public_key();
    assert!(!net.edges[2]
        .edge
        .status(net.now)
        .peers
        .iter()
        .any(|p| p.public_key == red_key));
}

#[test]
fn random_datagrams_are_counted_never_fatal() {
    let mut net = two_edges();
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (b, sn) = (net.edges[1].addr, net.sn_addr);
    let before_edge = net.edges[1].edge.status(net.now).drops.total();
    let before_sn = net.sn.status(net.now).drops.total();
    for i in 0..3000 {
        let len = (rnd() % 300) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 3 == 0 && p.len() > 2 {
            p[0] = 1; // a valid version, so the deeper decoders are exercised too
            p[1] = (rnd() % 6) as u8;
        }
        net.wire
            .push_back((addr(99, 1), if i % 2 == 0 { b } else { sn }, p));
    }
    net.deliver_all();
    assert!(net.edges[1].edge.status(net.now).drops.total() >= before_edge + 1400);
    assert!(net.sn.status(net.now).drops.total() >= before_sn + 1400);
    assert!(net.unicast(0, 1, b"still alive"));
}

#[test]
fn sessions_rekey_by_time_without_losing_traffic() {
    let mut net = two_edges();
    let first = net.edges[0].edge.status(net.now).peers[0]
        .last_handshake_secs
        .unwrap();
    assert!(first < 5.0);
    // Well past REKEY_AFTER (120 s) and REJECT_AFTER (180 s), with traffic all along.
    for i in 0..40 {
        net.run(Duration::from_secs(10));
        assert!(
            net.unicast(0, 1, format!("a->b {i}").as_bytes()),
            "lost at {}s",
            i * 10
        );
        assert!(
            net.unicast(1, 0, format!("b->a {i}").as_bytes()),
            "lost at {}s",
            i * 10
        );
    }
    for i in 0..2 {
        let st = net.edges[i].edge.status(net.now);
        let hs = st.peers[0].last_handshake_secs.unwrap();
        assert!(
            hs < 150.0,
            "edge {i} has not rekeyed: last handshake {hs}s ago"
        );
        assert_eq!(st.peers[0].path, "direct");
    }
}

#[test]
fn lost_handshakes_are_retried() {
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    // The supernode is unreachable at first: edges keep trying with backoff.
    net.sn_down = true;
    net.run(Duration::from_secs(5));
    assert!(!net.edges[0].edge.is_registered());
    net.sn_down = false;
    net.run(Duration::from_secs(10));
    assert!(net.edges[0].edge.is_registered() && net.edges[1].edge.is_registered());
    assert!(net.unicast(0, 1, b"late but fine"));
}

#[test]
fn lookups_by_mac_ip_and_key_find_registered_members() {
    use crate::control::{Control, Query};
    let mut net = two_edges();
    let b_mac = net.mac(1);
    let b_key = net.edges[1].key.public_key();
    for (txid, q) in [
        (1, Query::Mac(b_mac)),
        (2, Query::Ip("10.0.0.2".parse().unwrap())),
        (3, Query::Key(b_key)),
    ] {
        let reply = net.sn_lookup(0, txid, q);
        let Some(Control::LookupReply {
            txid: t,
            record: Some(r),
        }) = reply
        else {
            panic!("{q:?}: {reply:?}")
        };
        assert_eq!(t, txid);
        assert_eq!(r.key, b_key);
        assert_eq!(r.mac, b_mac);
        assert_eq!(r.endpoints[0], net.edges[1].addr);
    }
    // An address inside b's allowed CIDRs finds b; an unknown one finds nobody.
    let reply = net.sn_lookup(0, 4, Query::Ip("10.244.0.9".parse().unwrap()));
    assert!(matches!(
        reply,
        Some(Control::LookupReply {
            record: Some(_),
            ..
        })
    ));
    let reply = net.sn_lookup(0, 5, Query::Ip("10.0.0.77".parse().unwrap()));
    assert_eq!(
        reply,
        Some(Control::LookupReply {
            txid: 5,
            record: None
        })
    );
}

impl Net {
    /// Sends a lookup from edge `i` (over its real supernode session) and returns the reply,
    /// opened with the edge's own session keys by a test-only hook.
    pub(crate) fn sn_lookup(
        &mut self,
        i: usize,
        txid: u32,
        q: crate::control::Query,
    ) -> Option<crate::control::Control> {
        let msg = crate::control::Control::Lookup { txid, query: q };
        self.edges[i].edge.test_send_control(0, &msg, &mut self.out);
        let from = self.edges[i].addr;
        let mut pkt = self.out.bytes(&self.out.transmits[0]).to_vec();
        self.out.clear();
        self.sn.handle_udp(self.now, from, &mut pkt, &mut self.out);
        let mut replies: Vec<Vec<u8>> = self
            .out
            .transmits
            .iter()
            .filter(|t| t.dst == from)
            .map(|t| self.out.bytes(t).to_vec())
            .collect();
        self.out.clear();
        let mut reply = replies.pop()?;
        self.edges[i].edge.test_open_control(&mut reply)
    }
}

#[test]
fn direct_only_community_never_relays_and_says_why() {
    let (mut net, keys) = prod(2);
    net.sn_cfg.communities[0].relay = false;
    net.restart_supernode();
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
    net.block(0, 1);
    net.run(Duration::from_secs(5));
    assert!(!net.unicast(0, 1, b"must not be relayed"));
    assert_eq!(net.sn.status(net.now).relay_packets, 0);
    let st = net.edges[0].edge.status(net.now);
    assert_eq!(st.peers[0].path, "none");
    assert!(
        st.peers[0].path_reason.contains("direct-only"),
        "{}",
        st.peers[0].path_reason
    );
    net.unblock_all();
    net.run(Duration::from_secs(10));
    assert!(net.unicast(0, 1, b"direct works"));
    assert_eq!(net.path(0, 1), "direct");
}

#[test]
fn direct_only_edge_policy_is_honoured_and_status_explains_relay() {
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    net.edges[0].cfg.relay = false;
    net.restart_edge(0);
    net.block(0, 1);
    net.run(Duration::from_secs(5));
    assert!(!net.unicast(0, 1, b"a may not use relays"));
    let reason = net.edges[0].edge.status(net.now).peers[0]
        .path_reason
        .clone();
    assert!(reason.contains("direct-only on this edge"), "{reason}");
    // b may relay, but a never answers over the relay, so b has no usable session either;
    // once the path opens, both go direct.
    net.unblock_all();
    net.run(Duration::from_secs(10));
    assert!(net.unicast(0, 1, b"direct"));
    assert!(net.unicast(1, 0, b"direct back"));
}

#[test]
fn relay_reason_names_the_endpoints_being_probed() {
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    net.block(0, 1);
    net.run(Duration::from_secs(3));
    assert!(net.unicast(0, 1, b"relayed"));
    let p = &net.edges[0].edge.status(net.now).peers[0];
    assert_eq!(p.path, "relay");
    assert!(
        p.path_reason.contains(&net.edges[1].addr.to_string()),
        "{}",
        p.path_reason
    );
}

#[test]
fn one_way_blocked_path_is_not_taken_for_direct() {
    // b may receive from a but cannot send to it (egress filtering on b): a direct path
    // needs both directions, proven by a pong, so both sides must stay relayed.
    let (mut net, keys) = prod(2);
    net.add_edges(&keys);
    let (a, b) = (net.edges[0].addr, net.edges[1].addr);
    net.blocked.insert((b, a));
    net.run(Duration::from_secs(12));
    assert!(net.unicast(0, 1, b"a to b"));
    assert!(net.unicast(1, 0, b"b to a"));
    assert_eq!(net.path(0, 1), "relay");
    assert_eq!(net.path(1, 0), "relay");
}

#[test]
fn roaming_edge_recovers_without_restart() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"before"));
    assert_eq!(net.path(0, 1), "direct");
    // b's underlay address changes (new DHCP lease, NAT rebinding): same process, new source.
    let new = addr(77, 40000);
    net.edges[1].addr = new;
    let start = net.now;
    // b keeps talking (keepalives); a learns the new endpoint from the first authenticated
    // packet and a pong.
    while !net.unicast(0, 1, b"after roaming") {
        net.run(Duration::from_millis(500));
        assert!(
            net.now - start < Duration::from_secs(10),
            "no recovery after roaming"
        );
    }
    net.run(Duration::from_secs(1));
    assert_eq!(net.path(0, 1), "direct");
    let st = net.edges[0].edge.status(net.now);
    assert_eq!(st.peers[0].endpoint, Some(new));
}

#[test]
fn a_dead_peer_is_shown_down() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"alive"));
    // b vanishes (power cut): nothing more from it, and the supernode cannot reach it either.
    net.sn_down = true;
    net.block(0, 1);
    net.run(crate::edge::DEAD_AFTER + Duration::from_secs(1));
    let p = &net.edges[0].edge.status(net.now).peers[0];
    assert_eq!(p.path, "none");
    assert!(
        p.path_reason.contains("down or unreachable"),
        "{}",
        p.path_reason
    );
}

impl Net {
    /// Reloads the supernode with its communities edited by `edit`.
    pub(crate) fn reload(&mut self, edit: impl FnOnce(&mut Vec<CommunityConfig>)) -> ReloadSummary {
        edit(&mut self.sn_cfg.communities);
        let s = self.sn.reload(
            self.sn_cfg.communities.clone(),
            self.sn_cfg.register_interval,
            &mut self.out,
        );
        self.collect(self.sn_addr);
        self.out.clear();
        s
    }

    pub(crate) fn knows(&self, a: usize, b: usize) -> bool {
        self.path(a, b) != "unknown"
    }
}

pub(crate) fn node(name: &str, key: &PrivateKey, a: [u8; 4]) -> NodeEntry {
    NodeEntry {
        key: key.public_key(),
        name: name.to_string(),
        address: std::net::Ipv4Addr::from(a).into(),
        allowed_cidrs: vec![],
        ipv6_router: false,
    }
}

#[test]
fn reload_adds_and_removes_members_without_touching_the_others() {
    let (mut net, keys) = prod(3);
    net.add_edges(&keys);
    let dkey = PrivateKey::generate();
    let d = net.add_edge("prod", &dkey, [10, 0, 0, 4]);
    net.run(Duration::from_secs(3));
    assert!(!net.edges[d].edge.is_registered(), "d is not a member yet");
    for (x, y) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2)] {
        assert!(net.unicast(x, y, b"before"), "{x}->{y}");
    }
    let c_key = keys[2].public_key();

    // Remove c, add d; a and b's tunnel must not notice.
    let summary = net.reload(|cs| {
        cs[0].nodes.retain(|n| n.key != c_key);
        cs[0].nodes.push(node("d", &dkey, [10, 0, 0, 4]));
    });
    assert_eq!(summary.removed, vec![("prod".to_string(), "c".to_string())]);
    assert_eq!(summary.added, vec![("prod".to_string(), "d".to_string())]);
    assert!(summary.changed.is_empty());
    net.deliver_all();
    // The removal arrived at once (one delivery round, no timer needed).
    assert!(!net.knows(0, 2), "a still knows c");
    assert!(!net.knows(1, 2), "b still knows c");
    assert!(net.unicast(0, 1, b"during a->b"));
    assert!(net.unicast(1, 0, b"during b->a"));
    assert!(!net.unicast(2, 0, b"c after removal"), "c still reaches a");
    assert!(!net.unicast(0, 2, b"a to c after removal"));
    let ev: Vec<_> = net.edges[0].edge.drain_events().collect();
    assert!(ev
        .iter()
        .any(|e| matches!(e, crate::edge::Event::PeerRemoved { peer, .. } if peer == "c")));

    // d registers within its retry interval and talks to a; c is refused from now on.
    net.run(Duration::from_secs(12));
    assert!(net.edges[d].edge.is_registered(), "d did not join");
    assert!(net.unicast(d, 0, b"d->a"));
    assert!(net.unicast(0, d, b"a->d"));
    assert!(!net.edges[2].edge.is_registered());
    assert!(net.edges[2].edge.status(net.now).supernodes[0]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("not a member"));
    assert!(!net.unicast(2, 1, b"c->b later"));
    assert!(net.unicast(0, 1, b"after a->b"));
}

#[test]
fn a_lost_removal_is_repeated_when_the_edge_next_syncs() {
    let (mut net, keys) = prod_edges(3);
    assert!(net.unicast(0, 2, b"a->c"));
    let c_key = keys[2].public_key();
    net.reload(|cs| cs[0].nodes.retain(|n| n.key != c_key));
    // The push to a is lost on the way.
    let a_addr = net.edges[0].addr;
    net.wire.retain(|(_, dst, _)| *dst != a_addr);
    net.deliver_all();
    assert!(net.knows(0, 2), "a never got the removal");
    assert!(!net.knows(1, 2));
    // a's next registration shows a new epoch; it asks for the list and hears it again.
    let start = net.now;
    while net.knows(0, 2) {
        net.run(Duration::from_millis(250));
        assert!(
            net.now - start <= Duration::from_secs(11),
            "removal not repeated within one registration interval"
        );
    }
    assert!(!net.unicast(2, 0, b"c->a"));
    assert!(net.unicast(0, 1, b"a->b"));
}

#[test]
fn reload_that_changes_an_address_or_ranges_updates_peers() {
    let (mut net, keys) = prod_edges(2);
    // b may now send from 10.9.0.0/24 (a floating address range).
    let frame = ip_frame(net.mac(0), net.mac(1), [10, 9, 0, 5], b"floating");
    net.send_frame(1, &frame);
    net.run(Duration::from_millis(100));
    assert!(!net.edges[0].delivered.contains(&frame), "not allowed yet");
    let b_key = keys[1].public_key();
    let s = net.reload(|cs| {
        for n in cs[0].nodes.iter_mut().filter(|n| n.key == b_key) {
            n.allowed_cidrs = vec!["10.9.0.0/24".parse().unwrap()];
        }
    });
    assert_eq!(s.changed, vec![("prod".to_string(), "b".to_string())]);
    assert!(s.removed.is_empty() && s.added.is_empty());
    net.run(Duration::from_millis(200));
    let before = net.edges[0].delivered.len();
    net.send_frame(1, &frame);
    net.run(Duration::from_millis(100));
    assert!(net.edges[0].delivered[before..].contains(&frame));
}

#[test]
fn reload_without_changes_keeps_everything() {
    let mut net = two_edges();
    let before = net.sn.status(net.now);
    let s = net.reload(|_| {});
    assert!(s.is_empty(), "{s:?}");
    net.deliver_all();
    let after = net.sn.status(net.now);
    for (x, y) in before.communities[0]
        .members
        .iter()
        .zip(&after.communities[0].members)
    {
        assert_eq!((x.id, x.registered), (y.id, y.registered));
    }
    assert!(net.unicast(0, 1, b"still"));
    assert!(net.unicast(1, 0, b"still"));
}

#[test]
fn removing_a_community_cuts_its_members_off_from_each_other() {
    let (mut net, keys) = Net::new(&[
        ("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])]),
        ("lab", &[("x", [10, 0, 0, 1])]),
    ]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
    net.run(Duration::from_secs(3));
    assert!(net.unicast(0, 1, b"x"));
    let s = net.reload(|cs| cs.retain(|c| c.name != "prod"));
    assert_eq!(s.communities_removed, vec!["prod".to_string()]);
    net.deliver_all();
    assert!(!net.knows(0, 1));
    assert!(!net.unicast(0, 1, b"y"));
}

#[test]
fn edge_reload_changes_supernodes_and_keepalive_but_keeps_tunnels() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"before"));
    // Drop the only supernode: the direct tunnel carries on.
    let (added, removed) = net.edges[0]
        .edge
        .reload(&[], Duration::from_secs(2), net.now);
    assert!(added.is_empty());
    assert_eq!(removed, vec![net.sn_addr]);
    assert!(net.edges[0].edge.status(net.now).supernodes.is_empty());
    for i in 0..10 {
        assert!(net.unicast(0, 1, format!("{i}").as_bytes()));
        net.run(Duration::from_millis(500));
    }
    assert!(!net.edges[0].edge.is_registered());
    // Put it back: registered again within a second.
    let sn = (net.sn_addr, net.sn_key.public_key());
    let (added, _) = net.edges[0]
        .edge
        .reload(&[sn], Duration::from_secs(2), net.now);
    assert_eq!(added, vec![net.sn_addr]);
    net.run(Duration::from_secs(1));
    assert!(net.edges[0].edge.is_registered());
    assert!(net.unicast(1, 0, b"after"));
    // Keepalives now every 2 s: count what a sends to b over 10 idle seconds.
    let b_addr = net.edges[1].addr;
    let a_addr = net.edges[0].addr;
    net.run(Duration::from_secs(1));
    let from = net.capture.len();
    net.run(Duration::from_secs(10));
    let sent = net.capture[from..]
        .iter()
        .filter(|(s, d, _)| *s == a_addr && *d == b_addr)
        .count();
    assert!((4..=7).contains(&sent), "{sent} packets a->b in 10 s");
}

/// A handshake initiation of random bytes (it costs the responder its Diffie-Hellman
/// unless a cookie is required).
pub(crate) fn junk_init(seed: u32) -> Vec<u8> {
    let mut p = vec![0u8; 150];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(2654435761).wrapping_add(i as u32 * 40503) >> 13) as u8;
    }
    p[..4].copy_from_slice(&[crate::wire::VERSION, crate::wire::TYPE_HANDSHAKE_INIT, 0, 0]);
    p
}

#[test]
fn an_initiation_flood_triggers_cookies_and_members_still_register() {
    let mut net = two_edges();
    let mut seed = 0u32;
    let start = net.now;
    let mut flood_replies = 0usize;
    let mut restarted = false;
    while !restarted || !net.edges[1].edge.is_registered() {
        if !restarted && net.now - start >= Duration::from_millis(200) {
            net.restart_edge(1);
            restarted = true;
        }
        // 100 junk initiations per 50 ms step from spoofed sources: 2000/s.
        for _ in 0..100 {
            seed += 1;
            let src = SocketAddr::new(
                [198, 18, 9, (seed % 250) as u8].into(),
                1000 + (seed % 5000) as u16,
            );
            let mut p = junk_init(seed);
            net.sn.handle_udp(net.now, src, &mut p, &mut net.out);
            for t in &net.out.transmits {
                let len = net.out.bytes(t).len();
                assert!(len < p.len(), "reply of {len} bytes to {} bytes", p.len());
                flood_replies += 1;
            }
            net.out.clear();
        }
        net.run(Duration::from_millis(50));
        assert!(
            net.now - start < Duration::from_secs(10),
            "the restarted member did not register under the flood"
        );
    }
    let st = net.sn.status(net.now);
    println!(
        "registered after {:?} under the flood; {} cookie replies, {flood_replies} replies to junk",
        net.now - start,
        st.cookie_replies
    );
    assert!(st.cookie_replies > 0, "no cookie was ever required");
    assert!(flood_replies > 0, "junk was processed without a cookie");
    assert!(net.unicast(0, 1, b"after the flood"));
}

#[test]
fn edges_answer_cookies_from_a_busy_peer() {
    let mut net = two_edges();
    // Make b busy: junk initiations straight at it.
    let b_addr = net.edges[1].addr;
    for seed in 0..300 {
        let mut p = junk_init(seed);
        let src = SocketAddr::new([198, 18, 9, 1].into(), 2000 + seed as u16);
        net.edges[1]
            .edge
            .handle_udp(net.now, src, &mut p, &mut net.out);
        net.out.clear();
    }
    // a restarts and handshakes with busy b directly: one cookie round trip, then a session.
    net.restart_edge(0);
    net.run(Duration::from_millis(100));
    assert!(net.unicast(0, 1, b"through the cookie"));
    let st = net.edges[1].edge.status(net.now);
    assert!(st.cookie_replies > 0, "b never asked for a cookie");
    let _ = b_addr;
}

#[test]
fn arp_for_a_member_is_answered_locally_instead_of_flooded() {
    let names: Vec<(String, [u8; 4])> = (0..10)
        .map(|i| (format!("n{i}"), [10, 0, 0, 1 + i as u8]))
        .collect();
    let nodes: Vec<(&str, [u8; 4])> = names.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let (mut net, keys) = Net::new(&[("prod", &nodes)]);
    for (i, k) in keys.iter().enumerate() {
        net.add_edge("prod", k, [10, 0, 0, 1 + i as u8]);
    }
    // n9 runs without suppression, for the comparison.
    net.edges[9].cfg.neighbor_suppression = false;
    net.restart_edge(9);
    net.run(Duration::from_secs(3));
    let arp = |net: &Net, from: usize, target: [u8; 4]| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&net.mac(from).0);
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&net.mac(from).0);
        f.extend_from_slice(&net.ip(from));
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    };
    let flooded = |net: &Net, i: usize| net.edges[i].edge.status(net.now).flooded_frames;
    let before = flooded(&net, 0);
    let delivered = net.edges[0].delivered.len();
    net.send_frame(0, &arp(&net, 0, [10, 0, 0, 6]));
    let after = flooded(&net, 0);
    let reply = net.edges[0].delivered[delivered..]
        .iter()
        .find(|f| f.len() == 42 && f[20..22] == [0, 2])
        .expect("an ARP reply on a's TAP")
        .clone();
    assert_eq!(&reply[22..28], &net.mac(5).0, "answered with n5's MAC");
    println!(
        "with suppression: {} frames flooded for one ARP",
        after - before
    );
    assert_eq!(after, before, "flooded despite suppression");
    // Without suppression: one copy per peer (9).
    let before = flooded(&net, 9);
    net.send_frame(9, &arp(&net, 9, [10, 0, 0, 6]));
    let without = flooded(&net, 9) - before;
    println!("without suppression: {without} frames flooded for one ARP");
    assert_eq!(without, 9);
    // An address no member owns (a floating one) is flooded as before.
    let before = flooded(&net, 0);
    net.send_frame(0, &arp(&net, 0, [10, 0, 0, 200]));
    assert_eq!(flooded(&net, 0) - before, 9);
}

// ----------------------------------------------------------------------------------------
// Signed membership: a supernode that serves a tampered member list.

use crate::membership::{AdminKey, Membership, SignedBlob, SignedMember};

/// The signed list of `nodes` at `version`.
pub(crate) fn signed_blob(admin: &AdminKey, version: u64, nodes: &[NodeEntry]) -> SignedBlob {
    let m = Membership {
        community: "prod".into(),
        version,
        members: nodes.iter().map(SignedMember::from).collect(),
    };
    m.validate().unwrap();
    SignedBlob {
        version,
        bytes: m.sign(admin),
    }
}

/// Community "prod" with a (10.0.0.1), b (10.0.0.2) and r (10.0.0.3) in the supernode's
/// config; the administrator signed only a and b (version 5), unless `sign_all`. `tamper`
/// edits the supernode's nodes after signing (what a compromised supernode would serve).
/// Edges a, b, r run with the administrator's key.
pub(crate) fn signed_net(
    sign_all: bool,
    tamper: impl FnOnce(&mut Vec<NodeEntry>),
) -> (Net, AdminKey) {
    let (mut net, keys) = Net::new(&[(
        "prod",
        &[
            ("a", [10, 0, 0, 1]),
            ("b", [10, 0, 0, 2]),
            ("r", [10, 0, 0, 3]),
        ],
    )]);
    let admin = AdminKey::generate();
    let nodes = net.sn_cfg.communities[0].nodes.clone();
    let signed = if sign_all { &nodes[..] } else { &nodes[..2] };
    net.sn_cfg.communities[0].signed = Some(signed_blob(&admin, 5, signed));
    tamper(&mut net.sn_cfg.communities[0].nodes);
    net.restart_supernode();
    net.admin = Some(admin.public_key());
    for (i, k) in keys.iter().enumerate() {
        let n = &net.sn_cfg.communities[0].nodes;
        let addr =
            n.iter()
                .find(|x| x.key == k.public_key())
                .map_or([10, 0, 0, 1 + i as u8], |x| match x.address {
                    std::net::IpAddr::V4(a) => a.octets(),
                    _ => unreachable!(),
                });
        net.add_edge("prod", k, addr);
    }
    net.run(Duration::from_secs(3));
    (net, admin)
}

impl Net {
    pub(crate) fn membership(&self, i: usize) -> crate::edge::MembershipStatus {
        self.edges[i].edge.status(self.now).membership.unwrap()
    }
}

#[test]
fn signed_members_talk_but_a_member_the_supernode_added_is_refused() {
    let (mut net, _) = signed_net(false, |_| {});
    for i in 0..3 {
        assert!(
            net.edges[i].edge.is_registered(),
            "edge {i}: the supernode admits all three"
        );
    }
    assert_eq!(net.membership(0).version, Some(5));
    assert_eq!(net.membership(0).members, 2);
    assert!(net.unicast(0, 1, b"a->b"));
    assert!(net.unicast(1, 0, b"b->a"));
    // r is on the supernode's list, not on the signed one: nobody takes it as a peer.
    assert!(!net.unicast(2, 0, b"r->a"));
    assert!(!net.unicast(0, 2, b"a->r"));
    assert!(!net.knows(0, 2) && !net.knows(1, 2));
    assert!(net.drops(0, DropReason::NotSigned) > 0);
    assert!(net.drops(1, DropReason::NotSigned) > 0);
    // r's own handshakes to a find no peer there.
    net.run(Duration::from_secs(10));
    assert!(!net.unicast(2, 1, b"r->b later"));
    assert!(net.unicast(0, 1, b"a->b later"));

    // The control: the same supernode with edges that have no admin_key lets r in.
    let (mut open, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("r", [10, 0, 0, 3])])]);
    open.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    open.add_edge("prod", &keys[1], [10, 0, 0, 3]);
    open.run(Duration::from_secs(3));
    assert!(open.unicast(1, 0, b"r->a without admin_key"));
    assert!(open.edges[0].edge.status(open.now).membership.is_none());
}

#[test]
fn a_moved_address_or_widened_ranges_from_the_supernode_are_refused() {
    // The supernode moves b to 10.0.0.9 (b's edge claims it, so the supernode admits it).
    let (mut net, _) = signed_net(true, |nodes| {
        nodes[1].address = [10, 0, 0, 9].into();
    });
    assert!(net.edges[1].edge.is_registered());
    assert!(
        !net.knows(0, 1),
        "a took b at an address the admin never signed"
    );
    assert!(!net.unicast(1, 0, b"b from the moved address"));
    assert!(net.drops(0, DropReason::NotSigned) > 0);
    assert!(net.unicast(0, 2, b"a->r unaffected"));

    // The supernode widens r's allowed_cidrs to cover a's address: r could then send as a.
    let (mut net, _) = signed_net(true, |nodes| {
        nodes[2].allowed_cidrs = vec!["10.0.0.0/24".parse().unwrap()];
    });
    assert!(!net.knows(0, 2) && !net.knows(1, 2));
    assert!(!net.unicast(2, 1, b"r"));
    assert!(net.drops(1, DropReason::NotSigned) > 0);
    assert!(net.unicast(0, 1, b"a->b unaffected"));
    // The ranges a peer may send from are the signed ones.
    let st = net.edges[0].edge.status(net.now);
    let b = st.peers.iter().find(|p| p.name == "b").unwrap();
    assert_eq!(
        b.allowed_cidrs,
        vec!["10.244.0.0/24".parse::<ipnet::IpNet>().unwrap()]
    );

    // The supernode gives r the MAC of a: b must not send a's frames to r.
    let (mut net, _) = signed_net(true, |_| {});
    let a_mac = net.mac(0);
    let r_key = net.edges[2].key.public_key();
    let before = net.drops(1, DropReason::NotSigned);
    let forged = crate::control::Control::PeerNotify {
        record: crate::control::PeerRecord {
            id: 3,
            key: r_key,
            name: "r".into(),
            address: [10, 0, 0, 3].into(),
            mac: a_mac,
            instance: 1,
            allowed_cidrs: vec!["10.244.0.0/24".parse().unwrap()],
            endpoints: vec![],
            ipv6_router: false,
        },
    };
    net.sn_push(1, &forged);
    assert_eq!(net.drops(1, DropReason::NotSigned), before + 1);
    assert!(net.unicast(1, 0, b"b->a still goes to a"));
}

impl Net {
    /// Sends edge `i` a control message from the supernode (as a compromised one would).
    pub(crate) fn sn_push(&mut self, i: usize, msg: &crate::control::Control) {
        let key = self.edges[i].key.public_key();
        self.sn.test_send(&key, msg, &mut self.out);
        self.collect(self.sn_addr);
        self.out.clear();
        self.deliver_all();
    }
}

#[test]
fn an_older_list_is_refused_and_a_newer_one_revokes() {
    let (mut net, admin) = signed_net(true, |_| {});
    assert!(net.unicast(0, 2, b"a->r"));
    assert!(net.unicast(1, 2, b"b->r"));
    let all = net.sn_cfg.communities[0].nodes.clone();

    // Version 6 drops r; the supernode keeps r in its own config (it would like r to stay).
    let v6 = signed_blob(&admin, 6, &all[..2]);
    let v6_bytes = v6.bytes.clone();
    net.reload(|cs| cs[0].signed = Some(v6));
    net.deliver_all();
    // Torn down at once, on the push that follows the reload (no timer needed).
    assert!(!net.knows(0, 2) && !net.knows(1, 2));
    assert_eq!(net.membership(0).version, Some(6));
    let ev: Vec<_> = net.edges[0].edge.drain_events().collect();
    assert!(ev
        .iter()
        .any(|e| matches!(e, crate::edge::Event::PeerRemoved { peer, .. } if peer == "r")));
    // The core tells the shell to keep exactly the new list for the next start.
    let persisted = |net: &mut Net, i: usize| -> Vec<Vec<u8>> {
        net.edges[i]
            .edge
            .drain_commands()
            .filter_map(|c| match c {
                Command::PersistMembership(b) => Some(b),
                _ => None,
            })
            .collect()
    };
    // (version 5 at the start, then 6)
    assert_eq!(persisted(&mut net, 0).last(), Some(&v6_bytes));
    assert_eq!(persisted(&mut net, 1).last(), Some(&v6_bytes));
    assert!(!net.unicast(2, 0, b"r after revocation"));
    net.run(Duration::from_secs(25));
    assert!(!net.unicast(2, 1, b"r later"));
    assert!(net.unicast(0, 1, b"a->b"));

    // The supernode replays version 5 (which had r): refused as a rollback.
    let v5 = signed_blob(&admin, 5, &all);
    net.reload(|cs| cs[0].signed = Some(v5));
    net.run(Duration::from_secs(12));
    assert_eq!(net.membership(0).version, Some(6));
    assert!(net.membership(0).error.unwrap().contains("rollback"));
    assert!(!net.knows(0, 2));
    assert!(!net.unicast(2, 0, b"r after the replay"));

    // A list signed by another key: refused.
    let forged = signed_blob(&AdminKey::generate(), 99, &all);
    net.reload(|cs| cs[0].signed = Some(forged));
    net.run(Duration::from_secs(12));
    assert_eq!(net.membership(1).version, Some(6));
    assert!(net.membership(1).error.unwrap().contains("signature"));
    assert!(!net.unicast(2, 1, b"r after the forgery"));
    // Neither the rollback nor the forgery is kept.
    assert_eq!(persisted(&mut net, 0), Vec::<Vec<u8>>::new());
    assert_eq!(persisted(&mut net, 1), Vec::<Vec<u8>>::new());

    // An edge restarted with its cached copy (version 6) refuses the replayed 5 too.
    net.reload(|cs| cs[0].signed = Some(signed_blob(&admin, 5, &all)));
    net.edges[0].cfg.membership = Some(v6_bytes);
    net.restart_edge(0);
    net.run(Duration::from_secs(5));
    assert_eq!(net.membership(0).version, Some(6));
    assert!(!net.unicast(2, 0, b"r after a's restart"));
    assert!(net.unicast(1, 0, b"b->a after a's restart"));
    // The cached copy it started from is not written back.
    assert_eq!(persisted(&mut net, 0), Vec::<Vec<u8>>::new());
}

#[test]
fn an_edge_without_a_list_refuses_everyone_until_one_arrives() {
    // A supernode that carries no signed list cannot admit anyone to admin_key edges.
    let (mut net, _) = signed_net(true, |_| {});
    net.sn_cfg.communities[0].signed = None;
    net.restart_supernode();
    net.restart_edge(0);
    net.restart_edge(1);
    net.run(Duration::from_secs(20));
    assert!(net.edges[0].edge.is_registered());
    assert_eq!(net.membership(0).version, None);
    assert!(!net.knows(0, 1));
    assert!(!net.unicast(1, 0, b"no list, no peers"));
}

#[test]
fn a_smaller_path_mtu_is_found_and_too_large_frames_get_icmp() {
    let mut net = two_edges();
    let (a, b) = (net.edges[0].addr, net.edges[1].addr);
    net.path_mtu.insert((a, b), 1400);
    net.path_mtu.insert((b, a), 1400);
    // A new direct path is probed at once; the round takes 2 s.
    net.restart_edge(0);
    net.run(Duration::from_secs(4));
    assert!(net.unicast(0, 1, b"up"));
    let st = net.edges[0].edge.status(net.now);
    let peer = st.peers.iter().find(|p| p.name == "b").expect("a knows b");
    assert_eq!(peer.path_mtu, Some(1400), "{peer:?}");
    // 1400 outer - 28 - 32 (our header and tag) - 14 (inner Ethernet) = 1326-byte IP packets fit.
    let (to, from, ip) = (net.mac(1), net.mac(0), net.ip(0));
    let frame = |len: usize| {
        let mut f = ip_frame(to, from, ip, &vec![0u8; len - 20]);
        f[14 + 6] = 0x40; // don't fragment
        f
    };
    let fits = frame(1326);
    let before = net.edges[1].delivered.len();
    net.send_frame(0, &fits);
    net.run(Duration::from_millis(100));
    assert!(
        net.edges[1].delivered[before..].contains(&fits),
        "a 1326-byte packet did not cross"
    );
    let big = frame(1327);
    let a_before = net.edges[0].delivered.len();
    net.send_frame(0, &big);
    net.run(Duration::from_millis(100));
    let icmp = net.edges[0].delivered[a_before..]
        .iter()
        .find(|f| f.len() > 34 && f[23] == 1 && f[34] == 3 && f[35] == 4)
        .expect("an ICMP fragmentation-needed on a's TAP");
    assert_eq!(u16::from_be_bytes([icmp[40], icmp[41]]), 1326);
    assert_eq!(net.drops(0, DropReason::TooBig), 1);
}

#[test]
fn tcp_syns_crossing_the_overlay_get_their_mss_clamped() {
    let mut net = two_edges();
    assert!(net.unicast(0, 1, b"up"));
    // A SYN from a pod with a 1500-byte MTU (MSS 1460) leaves a clamped to 1390 - 40.
    let mut syn = ip_frame(net.mac(1), net.mac(0), net.ip(0), &[0u8; 24]);
    syn[14] = 0x45;
    syn[14 + 9] = 6;
    let tcp = 34;
    syn[tcp + 12] = 6 << 4;
    syn[tcp + 13] = 0x02;
    syn[tcp + 20..tcp + 24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let before = net.edges[1].delivered.len();
    net.send_frame(0, &syn);
    net.run(Duration::from_millis(100));
    let got = net.edges[1].delivered[before..]
        .iter()
        .find(|f| f.len() == syn.len())
        .expect("the SYN crossed");
    assert_eq!(u16::from_be_bytes([got[tcp + 22], got[tcp + 23]]), 1350);
}

#[test]
fn enrolment_hands_out_stable_addresses_from_the_pool() {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1])])]);
    net.sn_cfg.communities[0].enrolment = Some(crate::supernode::Enrolment::new(
        Some(b"correct horse".to_vec()),
        "10.0.0.128/30".parse().unwrap(),
    ));
    net.restart_supernode();
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    let newcomer = PrivateKey::generate();
    let n = net.add_edge("prod", &newcomer, [0, 0, 0, 0]);
    net.edges[n].edge.set_join_secret(b"correct horse".to_vec());
    net.run(Duration::from_secs(3));
    assert!(
        net.edges[n].edge.is_registered(),
        "the newcomer did not enrol"
    );
    let got = net.edges[n].edge.address();
    assert_eq!(got, "10.0.0.129".parse::<std::net::IpAddr>().unwrap());
    let ev: Vec<_> = net.edges[n].edge.drain_events().collect();
    assert!(ev
        .iter()
        .any(|e| matches!(e, crate::edge::Event::AddressAssigned { address, prefix: 16, .. } if *address == got)));
    // The core tells the shell to configure it on the TAP, once.
    let cmds: Vec<_> = net.edges[n].edge.drain_commands().collect();
    assert_eq!(
        cmds,
        vec![Command::ApplyAddress {
            address: [10, 0, 0, 129].into(),
            prefix: 16
        }]
    );
    let sn_ev: Vec<_> = net.sn.drain_events().collect();
    assert!(sn_ev.iter().any(
        |e| matches!(e, crate::supernode::Event::Enrolled { address, .. } if *address == got)
    ));
    // It talks from its new address; a knows it.
    net.edges[n].cfg.address = got;
    assert!(net.unicast(n, 0, b"hello from the newcomer"));
    // A restart keeps the address.
    net.restart_edge(n);
    net.edges[n].edge.set_join_secret(b"correct horse".to_vec());
    net.run(Duration::from_secs(2));
    assert_eq!(net.edges[n].edge.address(), got);
    assert!(net.unicast(0, n, b"after the edge restart"));
    // And a supernode restart (it knows the key from the start, as from the store).
    let e = net.sn_cfg.communities[0].enrolment.clone();
    net.sn_cfg.communities[0].nodes.push(NodeEntry {
        key: newcomer.public_key(),
        name: "enrolled".into(),
        address: got,
        allowed_cidrs: vec![],
        ipv6_router: false,
    });
    net.sn_cfg.communities[0].enrolment = e;
    net.restart_supernode();
    net.restart_edge(n);
    net.edges[n].edge.set_join_secret(b"correct horse".to_vec());
    net.run(Duration::from_secs(20));
    assert_eq!(net.edges[n].edge.address(), got);
    assert!(net.unicast(0, n, b"after both restarts a->n"));
    assert!(net.unicast(n, 0, b"after both restarts n->a"));
    // A wrong secret is refused; the pool does not shrink for it.
    let stranger = PrivateKey::generate();
    let s = net.add_edge("prod", &stranger, [0, 0, 0, 0]);
    net.edges[s].edge.set_join_secret(b"wrong".to_vec());
    net.run(Duration::from_secs(3));
    assert!(!net.edges[s].edge.is_registered());
    let err = net.edges[s].edge.status(net.now).supernodes[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("join proof"), "{err}");
    // Exhaustion: a /30 pool has two host addresses.
    for _ in 0..2 {
        let k = PrivateKey::generate();
        let i = net.add_edge("prod", &k, [0, 0, 0, 0]);
        net.edges[i].edge.set_join_secret(b"correct horse".to_vec());
    }
    net.run(Duration::from_secs(3));
    let last = net.edges.len() - 1;
    let err = net.edges[last].edge.status(net.now).supernodes[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("exhausted"), "{err}");
}

#[test]
fn aes_community_works_and_a_cipher_mismatch_is_refused_with_the_fix() {
    use crate::crypto::Cipher;
    let (mut net, keys) = prod(3);
    net.sn_cfg.communities[0].cipher = Cipher::Aes256Gcm;
    net.restart_supernode();
    for (i, key) in keys.iter().enumerate() {
        net.add_edge("prod", key, [10, 0, 0, 1 + i as u8]);
    }
    // a and b are configured for AES like the community; c keeps the default.
    for i in 0..2 {
        net.edges[i].cfg.cipher = Cipher::Aes256Gcm;
        net.restart_edge(i);
    }
    net.run(Duration::from_secs(3));
    assert!(net.edges[0].edge.is_registered() && net.edges[1].edge.is_registered());
    assert!(net.unicast(0, 1, b"over aes-256-gcm"));
    assert!(net.unicast(1, 0, b"and back"));
    assert_eq!(net.path(0, 1), "direct");
    let st = net.edges[2].edge.status(net.now);
    assert!(!st.supernodes[0].registered);
    let err = st.supernodes[0].error.as_deref().unwrap();
    assert!(
        err.contains("uses cipher aes-256-gcm") && err.contains("chacha20-poly1305"),
        "{err}"
    );
    assert!(!net.unicast(2, 0, b"never"));
}

#[test]
fn a_tcp_fallback_connection_sending_only_junk_is_closed_after_10_s_and_a_registered_one_is_kept() {
    use crate::supernode::Command;
    let mut net = two_edges();
    // Edge 0's datagrams stand for frames over a TCP fallback connection; another
    // connection from 198.18.0.99 sends junk frames (3 bytes, and 100 bytes of 0xff) every
    // second: none authenticates, so none keeps it open.
    let (active, junk) = (net.edges[0].addr, addr(99, 40000));
    assert!(net.sn.tcp_opened(net.now, active));
    assert!(net.sn.tcp_opened(net.now, junk));
    // As over a real connection, the edge handshakes again at once over it.
    let sn = net.sn_addr;
    net.edges[0].edge.tcp_connected(net.now, sn);
    let mut out = Output::default();
    let mut closed = Vec::new();
    let mut closed_at = None;
    for s in 0..30 {
        net.sn.handle_udp(net.now, junk, &mut [1, 2, 3], &mut out);
        net.sn.handle_udp(net.now, junk, &mut [0xff; 100], &mut out);
        net.run(Duration::from_secs(1));
        let got: Vec<Command> = net.sn.drain_commands().collect();
        if !got.is_empty() && closed_at.is_none() {
            closed_at = Some(s + 1);
        }
        closed.extend(got);
    }
    assert_eq!(closed, vec![Command::CloseTcp(junk)]);
    let t = closed_at.unwrap();
    assert!((10..=11).contains(&t), "closed after {t} s, not 10");
    // The registered edge refreshes every few seconds, authenticated: its connection stays.
    net.run(Duration::from_secs(300));
    assert_eq!(net.sn.drain_commands().count(), 0);
    assert!(net.edges[0].edge.is_registered());
}

/// The commands edge `i` has decided since the last call, but for membership persistence.
fn tcp_commands(net: &mut Net, i: usize) -> Vec<Command> {
    net.edges[i]
        .edge
        .drain_commands()
        .filter(|c| matches!(c, Command::ConnectTcp(_) | Command::CloseTcp(_)))
        .collect()
}

#[test]
fn a_silent_supernode_is_tried_over_tcp_every_10_s_until_connected() {
    let (mut net, keys) = prod(1);
    // UDP to the supernode goes nowhere.
    net.sn_down = true;
    net.add_edges(&keys);
    let sn = net.sn_addr;
    // Silent once three handshakes (at 0, 1 and 3 s) went unanswered.
    net.run(Duration::from_secs(3));
    assert_eq!(tcp_commands(&mut net, 0), vec![]);
    let mut tried_at = Vec::new();
    for s in 0..40 {
        net.run(Duration::from_secs(1));
        if tcp_commands(&mut net, 0) == vec![Command::ConnectTcp(sn)] {
            tried_at.push(s);
            // The connect fails (as a refused or timed-out connect does).
            net.edges[0].edge.tcp_closed(sn);
        }
    }
    assert!(tried_at.len() >= 3, "tried at {tried_at:?}");
    for w in tried_at.windows(2) {
        assert!(w[1] - w[0] >= 10, "tried again within 10 s: {tried_at:?}");
        assert!(w[1] - w[0] <= 11, "retry late: {tried_at:?}");
    }
    // Connected: the supernode is reached (the sim stands in for the TCP path by letting
    // its datagrams through), and no further attempt is made while the connection lasts.
    net.edges[0].edge.tcp_connected(net.now, sn);
    net.sn_down = false;
    net.run(Duration::from_secs(30));
    assert!(net.edges[0].edge.is_registered());
    assert_eq!(tcp_commands(&mut net, 0), vec![]);
    assert!(net.edges[0].edge.status(net.now).supernodes[0].tcp);
    // A reload that removes the supernode closes the connection.
    net.edges[0]
        .edge
        .reload(&[], crate::edge::DEFAULT_KEEPALIVE, net.now);
    assert_eq!(tcp_commands(&mut net, 0), vec![Command::CloseTcp(sn)]);
}

#[test]
fn a_reachable_supernode_is_never_tried_over_tcp() {
    let (mut net, _) = prod_edges(2);
    net.run(Duration::from_secs(60));
    assert_eq!(tcp_commands(&mut net, 0), vec![]);
    assert!(!net.edges[0].edge.status(net.now).supernodes[0].tcp);
}
