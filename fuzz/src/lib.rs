//! Shared pieces of the metalvpc fuzz targets: fixed keys and addresses, structured
//! generators for control messages, the invariants every state-machine target checks, and a
//! small simulated overlay (a supernode and two edges with known keys) whose genuine packets
//! the `session_mix` target delivers, drops, replays, spoofs and mutates.
//!
//! Nothing here opens a socket or a file: the targets run the sans-IO cores and the pure
//! parsers only, and every address is in 198.18.0.0/15.

use arbitrary::{Result, Unstructured};
use ipnet::IpNet;
use metalvpc_protocol::control::{
    Control, Join, NakCode, PeerRecord, Query, MAX_ALLOWED_CIDRS, MAX_ENDPOINTS, RECORDS_PER_LIST,
};
use metalvpc_protocol::edge::{Edge, EdgeConfig};
use metalvpc_protocol::supernode::{CommunityConfig, NodeEntry, Supernode, SupernodeConfig};
use metalvpc_protocol::wire::MAX_PACKET;
use metalvpc_protocol::{Mac, Output, PrivateKey, PublicKey};
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A fixed private key, so that every run builds the same identities.
pub fn key(n: u8) -> PrivateKey {
    let mut k = [n; 32];
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    PrivateKey(k)
}

/// An underlay address in the benchmarking range 198.18.0.0/15 (never routed anywhere).
pub fn underlay(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(198, 18, 0, host).into(), port)
}

// ---------------------------------------------------------------------------------------------
// Structured control messages

fn arb_ip(u: &mut Unstructured<'_>) -> Result<IpAddr> {
    Ok(if u.arbitrary::<bool>()? {
        IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?))
    } else {
        IpAddr::V6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?))
    })
}

fn arb_sockaddr(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    Ok(SocketAddr::new(arb_ip(u)?, u.arbitrary()?))
}

fn arb_vec<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    f: impl Fn(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| f(u)).collect()
}

fn arb_record(u: &mut Unstructured<'_>) -> Result<PeerRecord> {
    Ok(PeerRecord {
        id: u.arbitrary()?,
        key: PublicKey(u.arbitrary()?),
        name: u.arbitrary()?,
        address: arb_ip(u)?,
        mac: Mac(u.arbitrary()?),
        instance: u.arbitrary()?,
        // Past the limits on purpose: the encoder must cut, and the decoder must agree.
        allowed_cidrs: arb_vec(u, MAX_ALLOWED_CIDRS + 4, |u| {
            let ip = arb_ip(u)?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            Ok(IpNet::new(ip, u.int_in_range(0..=max)?).expect("prefix in range"))
        })?,
        endpoints: arb_vec(u, MAX_ENDPOINTS + 4, arb_sockaddr)?,
        ipv6_router: u.arbitrary()?,
    })
}

/// Any enrolment field of a Register (none, a join-secret proof, a token id and proof).
pub fn arb_join(u: &mut Unstructured<'_>) -> Result<Option<Join>> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => None,
        1 => Some(Join::Secret(u.arbitrary()?)),
        _ => Some(Join::Token {
            id: u.arbitrary()?,
            proof: u.arbitrary()?,
        }),
    })
}

/// Any control message, including ones the encoder has to cut (strings over 255 bytes,
/// lists over their limits).
pub fn arb_control(u: &mut Unstructured<'_>) -> Result<Control> {
    Ok(match u.int_in_range(0..=12u8)? {
        0 => Control::Register {
            max_version: u.arbitrary()?,
            community: u.arbitrary()?,
            address: arb_ip(u)?,
            mac: Mac(u.arbitrary()?),
            instance: u.arbitrary()?,
            timestamp: u.arbitrary()?,
            endpoints: arb_vec(u, MAX_ENDPOINTS + 4, arb_sockaddr)?,
            cipher: u.arbitrary()?,
            join: arb_join(u)?,
        },
        1 => Control::RegisterAck {
            id: u.arbitrary()?,
            observed: arb_sockaddr(u)?,
            epoch: u.arbitrary()?,
            interval: u.arbitrary()?,
            relay: u.arbitrary()?,
            membership: u.arbitrary()?,
            assigned: if u.arbitrary()? {
                Some((arb_ip(u)?, u.arbitrary()?))
            } else {
                None
            },
        },
        2 => Control::RegisterNak {
            code: *u.choose(&[
                NakCode::NotMember,
                NakCode::AddressNotOwned,
                NakCode::UnknownCommunity,
                NakCode::MacInUse,
                NakCode::RateLimited,
                NakCode::Other,
            ])?,
            message: u.arbitrary()?,
        },
        3 => Control::SyncRequest,
        4 => Control::PeerList {
            epoch: u.arbitrary()?,
            chunk: u.arbitrary()?,
            chunks: u.arbitrary()?,
            records: arb_vec(u, RECORDS_PER_LIST + 2, arb_record)?,
        },
        5 => Control::Lookup {
            txid: u.arbitrary()?,
            query: match u.int_in_range(0..=2u8)? {
                0 => Query::Mac(Mac(u.arbitrary()?)),
                1 => Query::Ip(arb_ip(u)?),
                _ => Query::Key(PublicKey(u.arbitrary()?)),
            },
        },
        6 => Control::LookupReply {
            txid: u.arbitrary()?,
            record: if u.arbitrary()? {
                Some(arb_record(u)?)
            } else {
                None
            },
        },
        7 => Control::PeerNotify {
            record: arb_record(u)?,
        },
        8 => Control::PeerRemoved {
            keys: arb_vec(u, metalvpc_protocol::control::KEYS_PER_REMOVAL + 4, |u| {
                Ok(metalvpc_protocol::PublicKey(u.arbitrary()?))
            })?,
        },
        9 => Control::PeerUpdate {
            from: u.arbitrary()?,
            epoch: u.arbitrary()?,
            records: arb_vec(u, RECORDS_PER_LIST + 2, arb_record)?,
            gone: arb_vec(u, metalvpc_protocol::control::KEYS_PER_REMOVAL + 4, |u| {
                Ok(metalvpc_protocol::PublicKey(u.arbitrary()?))
            })?,
        },
        10 => Control::PathChallenge {
            nonce: u.arbitrary()?,
        },
        11 => Control::PathResponse {
            nonce: u.arbitrary()?,
        },
        _ => {
            // Type bytes 1..=12, 16 and 17 are known messages; an unknown one is anything else.
            let t: u8 = u.arbitrary()?;
            let known = (1..=12).contains(&t) || t == 16 || t == 17;
            Control::Unknown(if known { t + 100 } else { t })
        }
    })
}

/// A string as the encoder writes it: at most 255 bytes, cut at a char boundary.
pub fn cut_str(s: &str) -> String {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn cut_record(r: &PeerRecord) -> PeerRecord {
    PeerRecord {
        name: cut_str(&r.name),
        allowed_cidrs: r
            .allowed_cidrs
            .iter()
            .take(MAX_ALLOWED_CIDRS)
            .map(IpNet::trunc)
            .collect(),
        endpoints: r.endpoints.iter().take(MAX_ENDPOINTS).copied().collect(),
        ..r.clone()
    }
}

/// What `Control::decode(&m.encode())` must give back: `m` with its strings and lists cut
/// as the encoder cuts them and its CIDRs without host bits.
pub fn as_encoded(m: &Control) -> Control {
    match m {
        Control::Register {
            max_version,
            community,
            address,
            mac,
            instance,
            timestamp,
            endpoints,
            cipher,
            join,
        } => Control::Register {
            max_version: *max_version,
            community: cut_str(community),
            address: *address,
            mac: *mac,
            instance: *instance,
            timestamp: *timestamp,
            endpoints: endpoints.iter().take(MAX_ENDPOINTS).copied().collect(),
            cipher: *cipher,
            join: *join,
        },
        Control::PeerRemoved { keys } => Control::PeerRemoved {
            keys: keys
                .iter()
                .take(metalvpc_protocol::control::KEYS_PER_REMOVAL)
                .copied()
                .collect(),
        },
        Control::RegisterNak { code, message } => Control::RegisterNak {
            code: *code,
            message: cut_str(message),
        },
        Control::PeerList {
            epoch,
            chunk,
            chunks,
            records,
        } => Control::PeerList {
            epoch: *epoch,
            chunk: *chunk,
            chunks: *chunks,
            records: records
                .iter()
                .take(RECORDS_PER_LIST)
                .map(cut_record)
                .collect(),
        },
        Control::LookupReply { txid, record } => Control::LookupReply {
            txid: *txid,
            record: record.as_ref().map(cut_record),
        },
        Control::PeerNotify { record } => Control::PeerNotify {
            record: cut_record(record),
        },
        Control::PeerUpdate {
            from,
            epoch,
            records,
            gone,
        } => Control::PeerUpdate {
            from: *from,
            epoch: *epoch,
            records: records
                .iter()
                .take(RECORDS_PER_LIST)
                .map(cut_record)
                .collect(),
            gone: gone
                .iter()
                .take(metalvpc_protocol::control::KEYS_PER_REMOVAL)
                .copied()
                .collect(),
        },
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Invariants on what a state machine hands back

/// Most datagrams one input (one datagram, frame or timer run) may make a node send.
pub const MAX_TRANSMITS_PER_STEP: usize = 256;

/// Checks one step's output: ranges inside the arena, no datagram over `MAX_PACKET`, a
/// bounded number of them, and frames no longer than the largest packet. Returns the bytes
/// sent to `to` (for the amplification check).
pub fn check_output(out: &Output, to: Option<SocketAddr>) -> usize {
    assert!(
        out.transmits.len() <= MAX_TRANSMITS_PER_STEP,
        "{} datagrams for one input",
        out.transmits.len()
    );
    let mut to_src = 0;
    for t in &out.transmits {
        assert!(t.range.start <= t.range.end && t.range.end <= out.buf.len());
        let n = t.range.len();
        assert!(n <= MAX_PACKET, "a datagram of {n} bytes");
        assert!(n >= 4, "a datagram of {n} bytes has no header");
        if Some(t.dst) == to {
            to_src += n;
        }
    }
    for f in &out.frames {
        assert!(f.start <= f.end && f.end <= out.buf.len());
        assert!(
            f.len() >= 14 && f.len() <= MAX_PACKET,
            "a frame of {} bytes",
            f.len()
        );
    }
    to_src
}

/// The amplification rule: what a node sends back to the source of an unauthenticated
/// datagram is never larger than that datagram.
pub fn check_no_amplification(sent_back: usize, received: usize, what: &str) {
    assert!(
        sent_back <= received,
        "amplification: {sent_back} bytes sent back for an unauthenticated {received}-byte {what}"
    );
}

fn size(sizes: &[(&'static str, usize)], name: &str) -> usize {
    sizes
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no table {name}"))
        .1
}

/// The edge's tables stay within their limits: `members` is how many other members any
/// supernode could list, `links` the number of supernodes.
pub fn check_edge_tables(edge: &Edge, members: usize, links: usize) {
    let s = edge.table_sizes();
    let peers = size(&s, "peers_live");
    assert!(
        peers <= members,
        "{peers} peers but {members} members: {s:?}"
    );
    assert!(size(&s, "peers") <= members, "{s:?}");
    assert!(size(&s, "by_key") <= members, "{s:?}");
    assert!(size(&s, "by_mac") <= members, "{s:?}");
    assert!(size(&s, "last_path") <= members, "{s:?}");
    // Per link: pending, current, previous. Per peer: pending, current, previous, unconfirmed.
    assert!(size(&s, "index") <= 3 * links + 4 * peers, "{s:?}");
    assert!(size(&s, "queue_max") <= 32, "{s:?}");
    assert!(
        size(&s, "lookups") <= metalvpc_protocol::edge::MAX_LOOKUPS,
        "{s:?}"
    );
    // Each live peer's endpoints and direct path, its relay id at each link.
    assert!(
        size(&s, "by_endpoint") <= peers * (MAX_ENDPOINTS + 1),
        "{s:?}"
    );
    assert!(size(&s, "by_relay") <= peers * links, "{s:?}");
    assert!(
        size(&s, "list_chunks") <= links * usize::from(u16::MAX),
        "{s:?}"
    );
}

/// The supernode's tables stay within their limits.
pub fn check_supernode_tables(sn: &Supernode) {
    let s = sn.table_sizes();
    let nodes = size(&s, "nodes");
    let regs = size(&s, "registrations");
    let pending = size(&s, "pending");
    assert!(regs <= nodes && pending <= nodes, "{s:?}");
    // A registration holds a current and a previous session; a pending one, one more.
    assert!(size(&s, "sessions") <= 2 * regs + pending, "{s:?}");
    assert!(
        size(&s, "locals") <= metalvpc_protocol::supernode::MAX_LOCALS * regs,
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A small overlay with known keys

/// The community of the simulated overlay.
pub const COMMUNITY: &str = "fuzz";
/// Key numbers: the supernode, the two running edges, a third member that never runs.
pub const SN_KEY: u8 = 1;
/// Key numbers of the members (edges 0 and 1 run; the third is listed only).
pub const MEMBER_KEYS: [u8; 3] = [2, 3, 4];

/// The supernode's address.
pub fn sn_addr() -> SocketAddr {
    underlay(1, 7654)
}

/// Overlay address of member `i`.
pub fn member_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1 + i as u8))
}

/// The supernode's configuration: one community with the three members.
pub fn supernode_config(relay: bool) -> SupernodeConfig {
    SupernodeConfig {
        private_key: key(SN_KEY),
        communities: vec![CommunityConfig {
            name: COMMUNITY.into(),
            network: "10.77.0.0/24".parse().unwrap(),
            nodes: MEMBER_KEYS
                .iter()
                .enumerate()
                .map(|(i, k)| NodeEntry {
                    key: key(*k).public_key(),
                    name: format!("m{i}"),
                    address: member_ip(i),
                    allowed_cidrs: vec!["10.244.0.0/24".parse().unwrap()],
                    ipv6_router: false,
                })
                .collect(),
            relay,
            signed: None,
            enrolment: None,
            cipher: Default::default(),
        }],
        register_interval: 10,
    }
}

/// An edge's configuration: `key_n` claiming `address` in `community`.
pub fn edge_config(key_n: u8, community: &str, address: IpAddr, relay: bool) -> EdgeConfig {
    EdgeConfig {
        relay,
        ..EdgeConfig::new(
            community,
            key(key_n),
            address,
            vec![(sn_addr(), key(SN_KEY).public_key())],
        )
    }
}

/// An IPv4 frame from `src` (MAC, IP) to `dst`, carrying `payload`.
pub fn ip_frame(dst: Mac, src: Mac, src_ip: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[12..16].copy_from_slice(&src_ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// A datagram on the simulated underlay.
#[derive(Clone)]
pub struct Datagram {
    /// Who sent it.
    pub src: SocketAddr,
    /// Where it goes.
    pub dst: SocketAddr,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Frames an edge writes to its TAP itself whatever the peer sent: ARP (gratuitous ARP for
/// a peer's new MAC) and ICMP/ICMPv6 "too big" answers to frames it was to send.
fn made_by_edge_itself(f: &[u8]) -> bool {
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0806 => true,
        0x0800 => f.len() >= 36 && f[23] == 1 && f[34] == 3 && f[35] == 4,
        0x86dd => f.len() >= 55 && f[20] == 58 && f[54] == 2,
        _ => false,
    }
}

/// Datagrams in flight and already delivered are each kept to this many.
const KEEP: usize = 128;

/// The overlay: a supernode and two edges, the datagrams in flight, and what was delivered.
pub struct Overlay {
    /// Simulated time.
    pub now: Instant,
    /// The supernode.
    pub sn: Supernode,
    /// The two running edges.
    pub edges: [Edge; 2],
    /// Their underlay addresses.
    pub edge_addrs: [SocketAddr; 2],
    /// In flight.
    pub wire: VecDeque<Datagram>,
    /// Genuine datagrams already delivered once (for replays and mutations).
    pub history: VecDeque<Datagram>,
    /// Every frame written into an edge's TAP device by the harness: the only frames any
    /// edge may ever deliver.
    pub injected: HashSet<Vec<u8>>,
    /// Frames delivered, per edge.
    pub delivered: [usize; 2],
    out: Output,
}

impl Overlay {
    /// A fresh overlay at `now`; `relay` sets both the community's and the edges' policy.
    pub fn new(relay: bool) -> Overlay {
        let now = Instant::now();
        let unix = 1_700_000_000_000_000;
        Overlay {
            now,
            sn: Supernode::new(
                supernode_config(relay),
                now,
                metalvpc_protocol::Rng::from_seed([1; 32]),
            ),
            edges: [0, 1].map(|i| {
                Edge::new(
                    edge_config(MEMBER_KEYS[i], COMMUNITY, member_ip(i), relay),
                    now,
                    unix,
                    metalvpc_protocol::Rng::from_seed([10 + i as u8; 32]),
                )
            }),
            edge_addrs: [underlay(11, 7655), underlay(12, 7655)],
            wire: VecDeque::new(),
            history: VecDeque::new(),
            injected: HashSet::new(),
            delivered: [0, 0],
            out: Output::default(),
        }
    }

    /// Frames an edge writes to its own TAP from what it knows, not from what arrived: ARP
    /// answers and gratuitous ARP (neighbour suppression, a peer's new MAC), ICMP
    /// "fragmentation needed" / ICMPv6 "packet too big", neighbour advertisements (only in
    /// answer to its own TAP's solicitation, `local`), and a TCP SYN whose MSS it lowered (the
    /// same headers as an injected frame).
    fn made_by_the_edge(&self, f: &[u8], local: bool) -> bool {
        if f.len() < 14 {
            return false;
        }
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        match ethertype {
            0x0806 => true,
            0x0800 if f.len() >= 36 && f[23] == 1 => f[34] == 3 && f[35] == 4,
            0x86dd if f.len() >= 55 && f[20] == 58 && (f[54] == 2 || (local && f[54] == 136)) => {
                true
            }
            0x0800 | 0x86dd => self
                .injected
                .iter()
                .any(|i| i.len() == f.len() && i[..34.min(f.len())] == f[..34.min(f.len())]),
            _ => false,
        }
    }

    /// What an edge guarantees of a frame it delivers from its peer (edge `1 - e`): the
    /// peer's source MAC, and for IPv6 its own source address and neighbour discovery
    /// speaking only for itself (`icmpv6::check` with the peer's identity).
    fn check_from_peer(&self, e: usize, f: &[u8]) {
        let (mac, _) = self.identity(1 - e);
        if made_by_edge_itself(f) {
            return;
        }
        assert_eq!(
            metalvpc_protocol::eth::src_mac(f),
            mac,
            "edge {e} delivered a frame from another MAC than its peer's: {f:02x?}"
        );
        if u16::from_be_bytes([f[12], f[13]]) == 0x86dd {
            let ll = metalvpc_protocol::neighbor::link_local(mac);
            let owns = |a: Ipv6Addr| a == ll;
            let who = metalvpc_protocol::icmpv6::Sender {
                mac,
                owns: &owns,
                router: false,
            };
            assert_eq!(
                metalvpc_protocol::icmpv6::check(f, &who),
                Ok(()),
                "edge {e} delivered an IPv6 frame its peer may not send: {f:02x?}"
            );
        }
    }

    /// Takes what the last step produced: datagrams go on the wire (bounded), frames are
    /// checked against what was injected (and, when they came from the peer rather than
    /// being the edge's answer to its own TAP, against what the peer may send). Returns the
    /// bytes sent to `to`.
    fn collect(
        &mut self,
        from: SocketAddr,
        edge: Option<usize>,
        to: Option<SocketAddr>,
        local: bool,
    ) -> usize {
        let to_src = check_output(&self.out, to);
        for t in &self.out.transmits {
            if self.wire.len() >= KEEP {
                self.wire.pop_front();
            }
            self.wire.push_back(Datagram {
                src: from,
                dst: t.dst,
                bytes: self.out.bytes(t).to_vec(),
            });
        }
        for f in &self.out.frames {
            let frame = &self.out.buf[f.clone()];
            assert!(
                self.injected.contains(frame) || self.made_by_the_edge(frame, local),
                "edge {edge:?} delivered a frame no TAP device sent: {frame:02x?}"
            );
            if let (Some(e), false) = (edge, local) {
                self.check_from_peer(e, frame);
            }
            if let (Some(e), true) = (edge, self.injected.contains(frame)) {
                self.delivered[e] += 1;
            }
        }
        self.out.clear();
        let _ = self.sn.drain_events().count();
        for e in &mut self.edges {
            let _ = e.drain_events().count();
        }
        to_src
    }

    /// Hands `bytes` from `src` to whoever owns `dst`; returns the bytes sent back to `src`,
    /// or None when nobody owns `dst`.
    pub fn deliver(&mut self, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> Option<usize> {
        let mut pkt = bytes.to_vec();
        if dst == sn_addr() {
            self.sn.handle_udp(self.now, src, &mut pkt, &mut self.out);
            Some(self.collect(sn_addr(), None, Some(src), false))
        } else if let Some(i) = self.edge_addrs.iter().position(|a| *a == dst) {
            self.edges[i].handle_udp(self.now, src, &mut pkt, &mut self.out);
            Some(self.collect(dst, Some(i), Some(src), false))
        } else {
            None
        }
    }

    /// Delivers the in-flight datagram `i` intact, from its real source.
    pub fn deliver_genuine(&mut self, i: usize) {
        if self.wire.is_empty() {
            return;
        }
        let d = self.wire.remove(i % self.wire.len()).expect("in range");
        self.deliver(d.src, d.dst, &d.bytes);
        if self.history.len() >= KEEP {
            self.history.pop_front();
        }
        self.history.push_back(d);
    }

    /// Delivers everything in flight, up to `budget` datagrams.
    pub fn deliver_all(&mut self, budget: usize) {
        for _ in 0..budget {
            if self.wire.is_empty() {
                return;
            }
            self.deliver_genuine(0);
        }
    }

    /// Writes `frame` into edge `e`'s TAP device.
    pub fn frame(&mut self, e: usize, frame: &[u8]) {
        self.injected.insert(frame.to_vec());
        self.edges[e].handle_frame(self.now, frame, &mut self.out);
        let from = self.edge_addrs[e];
        self.collect(from, Some(e), None, true);
    }

    /// Moves time forward and runs every timer that is due.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.sn.handle_timeout(self.now, &mut self.out);
        self.collect(sn_addr(), None, None, false);
        for e in 0..2 {
            self.edges[e].handle_timeout(self.now, &mut self.out);
            let from = self.edge_addrs[e];
            self.collect(from, Some(e), None, true);
        }
    }

    /// Checks every node's tables.
    pub fn check_tables(&self) {
        check_supernode_tables(&self.sn);
        for e in &self.edges {
            check_edge_tables(e, MEMBER_KEYS.len() - 1, 1);
        }
    }

    /// MAC and overlay IPv4 address of edge `e`.
    pub fn identity(&self, e: usize) -> (Mac, [u8; 4]) {
        let k = key(MEMBER_KEYS[e]).public_key();
        let IpAddr::V4(ip) = member_ip(e) else {
            unreachable!()
        };
        (k.derived_mac(), ip.octets())
    }
}
