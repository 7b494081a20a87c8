//! A deterministic in-process network for the protocol core: supernodes and edges exchange
//! datagrams through a simulated underlay with fake time and a filter that can block paths.

use crate::edge::{Edge, EdgeConfig};
use crate::io::{DropReason, Output};
use crate::keys::{Mac, PrivateKey, PublicKey};
use crate::supernode::{CommunityConfig, NodeEntry, Supernode, SupernodeConfig};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct SimEdge {
    addr: SocketAddr,
    key: PrivateKey,
    cfg: EdgeConfig,
    edge: Edge,
    delivered: Vec<Vec<u8>>,
}

struct Net {
    now: Instant,
    sn_addr: SocketAddr,
    sn_key: PrivateKey,
    sn_cfg: SupernodeConfig,
    sn: Supernode,
    sn_down: bool,
    edges: Vec<SimEdge>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    blocked: HashSet<(SocketAddr, SocketAddr)>,
    /// Every datagram that reached the supernode.
    sn_capture: Vec<Vec<u8>>,
    /// Every datagram that left each edge: (from, to, bytes).
    capture: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    out: Output,
}

fn addr(i: u8, port: u16) -> SocketAddr {
    SocketAddr::new([198, 18, 0, i].into(), port)
}

/// An IPv4/UDP-ish frame from `src` to `dst` carrying `payload` (enough for our checks).
fn ip_frame(dst: Mac, src: Mac, src_ip: [u8; 4], payload: &[u8]) -> Vec<u8> {
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
    fn new(communities: &[(&str, &[(&str, [u8; 4])])]) -> (Net, Vec<PrivateKey>) {
        let now = Instant::now();
        let sn_key = PrivateKey::generate();
        let mut keys = Vec::new();
        let communities = communities
            .iter()
            .map(|(name, nodes)| CommunityConfig {
                name: name.to_string(),
                network: "10.0.0.0/16".parse().unwrap(),
                nodes: nodes
                    .iter()
                    .map(|(n, a)| {
                        let k = PrivateKey::generate();
                        keys.push(k.clone());
                        NodeEntry {
                            key: k.public_key(),
                            name: n.to_string(),
                            address: std::net::Ipv4Addr::from(*a).into(),
                            allowed_cidrs: vec!["10.244.0.0/24".parse().unwrap()],
                        }
                    })
                    .collect(),
                relay: true,
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
            sn: Supernode::new(sn_cfg.clone(), now),
            sn_cfg,
            sn_key,
            sn_down: false,
            edges: Vec::new(),
            wire: VecDeque::new(),
            blocked: HashSet::new(),
            sn_capture: Vec::new(),
            capture: Vec::new(),
            out: Output::default(),
        };
        (net, keys)
    }

    fn add_edge(&mut self, community: &str, key: &PrivateKey, address: [u8; 4]) -> usize {
        let i = self.edges.len();
        let a = addr(11 + i as u8, 7655);
        let cfg = EdgeConfig {
            community: community.to_string(),
            private_key: key.clone(),
            address: std::net::Ipv4Addr::from(address).into(),
            mac: key.public_key().derived_mac(),
            supernodes: vec![(self.sn_addr, self.sn_key.public_key())],
            local_endpoints: vec![],
            keepalive: crate::edge::DEFAULT_KEEPALIVE,
            relay: true,
            cipher: Default::default(),
        };
        let edge = Edge::new(cfg.clone(), self.now, 1_700_000_000_000_000);
        self.edges.push(SimEdge {
            addr: a,
            key: key.clone(),
            cfg,
            edge,
            delivered: Vec::new(),
        });
        i
    }

    fn restart_edge(&mut self, i: usize) {
        let e = &mut self.edges[i];
        e.edge = Edge::new(
            e.cfg.clone(),
            self.now,
            1_700_000_000_000_000 + 10_000_000_000,
        );
        e.delivered.clear();
    }

    fn restart_supernode(&mut self) {
        self.sn = Supernode::new(self.sn_cfg.clone(), self.now);
    }

    fn block(&mut self, a: usize, b: usize) {
        let (x, y) = (self.edges[a].addr, self.edges[b].addr);
        self.blocked.insert((x, y));
        self.blocked.insert((y, x));
    }

    fn unblock_all(&mut self) {
        self.blocked.clear();
    }

    fn collect(&mut self, from: SocketAddr) {
        for t in &self.out.transmits {
            let bytes = self.out.bytes(t).to_vec();
            self.capture.push((from, t.dst, bytes.clone()));
            self.wire.push_back((from, t.dst, bytes));
        }
    }

    fn drain_edge(&mut self, i: usize) {
        let from = self.edges[i].addr;
        self.collect(from);
        for f in &self.out.frames {
            self.edges[i]
                .delivered
                .push(self.out.buf[f.clone()].to_vec());
        }
        self.out.clear();
    }

    fn deliver_all(&mut self) {
        let mut budget = 100_000;
        while let Some((src, dst, mut pkt)) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "packet storm");
            if self.blocked.contains(&(src, dst)) {
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

    fn run(&mut self, dur: Duration) {
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

    fn send_frame(&mut self, from: usize, frame: &[u8]) {
        self.edges[from]
            .edge
            .handle_frame(self.now, frame, &mut self.out);
        self.drain_edge(from);
        self.deliver_all();
    }

    fn mac(&self, i: usize) -> Mac {
        self.edges[i].cfg.mac
    }

    fn ip(&self, i: usize) -> [u8; 4] {
        match self.edges[i].cfg.address {
            std::net::IpAddr::V4(a) => a.octets(),
            _ => unreachable!(),
        }
    }

    /// Sends a unicast frame from `a` to `b` and says whether `b` got exactly it.
    fn unicast(&mut self, a: usize, b: usize, marker: &[u8]) -> bool {
        let f = ip_frame(self.mac(b), self.mac(a), self.ip(a), marker);
        let before = self.edges[b].delivered.len();
        self.send_frame(a, &f);
        self.run(Duration::from_millis(100));
        self.edges[b].delivered[before..].contains(&f)
    }

    fn path(&self, a: usize, b: usize) -> &'static str {
        let key = self.edges[b].key.public_key();
        let st = self.edges[a].edge.status(self.now);
        st.peers
            .iter()
            .find(|p| p.public_key == key)
            .map_or("unknown", |p| p.path)
    }

    fn drops(&self, i: usize, r: DropReason) -> u64 {
        self.edges[i].edge.status(self.now).drops.get(r)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn two_edges() -> Net {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
    net.run(Duration::from_secs(3));
    net
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
    let (mut net, keys) = Net::new(&[(
        "prod",
        &[
            ("a", [10, 0, 0, 1]),
            ("b", [10, 0, 0, 2]),
            ("c", [10, 0, 0, 3]),
        ],
    )]);
    for (i, k) in keys.iter().enumerate() {
        net.add_edge("prod", k, [10, 0, 0, 1 + i as u8]);
    }
    net.run(Duration::from_secs(3));
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
    assert!(net.edges[0].delivered.is_empty());
}

#[test]
fn first_frame_before_any_session_is_queued_not_lost() {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
    // Registered, but before the eager handshake could finish: send at once.
    net.run(Duration::from_millis(150));
    let f = ip_frame(net.mac(0), net.mac(1), net.ip(1), b"early");
    net.send_frame(1, &f);
    net.run(Duration::from_secs(3));
    assert!(net.edges[0].delivered.contains(&f));
}

#[test]
fn blocked_direct_path_relays_ciphertext_then_upgrades() {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
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
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
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
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
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
    fn sn_lookup(
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
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
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
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
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
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
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
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 2])])]);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.add_edge("prod", &keys[1], [10, 0, 0, 2]);
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

#[test]
fn aes_community_works_and_a_cipher_mismatch_is_refused_with_the_fix() {
    use crate::crypto::Cipher;
    let (mut net, keys) = Net::new(&[(
        "prod",
        &[
            ("a", [10, 0, 0, 1]),
            ("b", [10, 0, 0, 2]),
            ("c", [10, 0, 0, 3]),
        ],
    )]);
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
