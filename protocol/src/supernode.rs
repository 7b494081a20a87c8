//! The supernode state machine: membership checks, registrations, member lists, lookups,
//! hole-punch notices and the relay of end-to-end encrypted packets.
//!
//! The supernode never holds an edge-to-edge key: it authenticates the relay envelope with
//! its own session to each member and forwards the inner packet untouched.

use crate::control::{chunk_records, Control, NakCode, PeerRecord, Query, KEYS_PER_REMOVAL};
use crate::cookie::{self, CookieGuard, Verdict};
use crate::crypto::{Cipher, Handshake, RESP_NOISE_OVERHEAD};
use crate::io::{DropCounters, DropReason, Output, Traffic};
use crate::keys::{Mac, PrivateKey, PublicKey};
use crate::membership::{SignedBlob, CHUNK_BYTES};
use crate::rng::Rng;
use crate::session::Session;
use crate::wire::{self, Packet, WireError, RELAY_HEADER_LEN};
use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Timer granularity.
pub const TICK: Duration = Duration::from_millis(500);
/// Default registration interval told to edges.
pub const DEFAULT_REGISTER_INTERVAL: u16 = 10;
/// Removed keys a community remembers, to repeat the revocation to edges that missed it
/// (they ask for the member list when their registration shows a new epoch).
pub const REMEMBERED_REMOVALS: usize = 256;

/// One member as the community file states it.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Static key.
    pub key: PublicKey,
    /// Human name (may be empty).
    pub name: String,
    /// Overlay address it owns.
    pub address: IpAddr,
    /// Extra source ranges it owns.
    pub allowed_cidrs: Vec<IpNet>,
}

/// One community as configured.
#[derive(Debug, Clone)]
pub struct CommunityConfig {
    /// Name edges register with.
    pub name: String,
    /// The overlay network.
    pub network: IpNet,
    /// Members.
    pub nodes: Vec<NodeEntry>,
    /// Whether the supernode relays for this community (false: `relay_policy = "direct-only"`).
    pub relay: bool,
    /// The data-plane cipher every member must be configured with.
    pub cipher: Cipher,
    /// The administrator-signed member list the supernode carries to edges (already verified
    /// by whoever loaded it; `nodes` are its members). None: membership is the supernode's word.
    pub signed: Option<SignedBlob>,
    /// Enrolment with a join secret (None: only listed keys join).
    pub enrolment: Option<Enrolment>,
}

/// Enrolment: a key that is not listed may join if it proves it holds the join secret; it
/// gets the next free address of the pool, and keeps it (the shell persists each
/// [`Event::Enrolled`] and lists those nodes in `nodes` at the next start or reload).
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The join secret (what `join_secret_file` holds).
    pub secret: Vec<u8>,
    /// Addresses handed out, inside the community's network.
    pub pool: IpNet,
    /// Keys that may not enrol again (revoked by the operator).
    pub revoked: Vec<PublicKey>,
}

/// Supernode configuration.
#[derive(Debug, Clone)]
pub struct SupernodeConfig {
    /// Our static key.
    pub private_key: PrivateKey,
    /// Communities served.
    pub communities: Vec<CommunityConfig>,
    /// Seconds between an edge's registrations.
    pub register_interval: u16,
}

struct Registration {
    session: Session,
    previous: Option<Session>,
    endpoint: SocketAddr,
    locals: Vec<SocketAddr>,
    mac: Mac,
    instance: u64,
    last_seen: Instant,
    since: Instant,
}

struct Node {
    entry: NodeEntry,
    id: u32,
    last_timestamp: u64,
    reg: Option<Registration>,
    traffic: Traffic,
}

struct Community {
    name: String,
    network: IpNet,
    nodes: Vec<Node>,
    by_key: HashMap<PublicKey, usize>,
    by_id: HashMap<u32, usize>,
    epoch: u64,
    relay: bool,
    cipher: Cipher,
    /// Keys removed by a reload, newest last (bounded by [`REMEMBERED_REMOVALS`]).
    removed: VecDeque<PublicKey>,
    enrolment: Option<Enrolment>,
    /// The signed membership carried for edges.
    signed: Option<SignedBlob>,
}

/// What a [`Supernode::reload`] changed, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// (community, member) pairs added.
    pub added: Vec<(String, String)>,
    /// (community, member) pairs removed; their sessions were torn down and every
    /// registered member of the community was told.
    pub removed: Vec<(String, String)>,
    /// (community, member) pairs whose name, address or allowed ranges changed.
    pub changed: Vec<(String, String)>,
    /// Communities added.
    pub communities_added: Vec<String>,
    /// Communities removed (all their members were cut off).
    pub communities_removed: Vec<String>,
}

impl ReloadSummary {
    /// True if the reload changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == ReloadSummary::default()
    }
}

/// A refusal, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where the handshake came from.
    pub from: SocketAddr,
    /// The key that was refused.
    pub key: PublicKey,
    /// The community it asked for.
    pub community: String,
    /// Why, in words.
    pub reason: String,
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member registered (first time, or with a new instance or endpoint).
    Registered {
        /// Community.
        community: String,
        /// Member name or key.
        member: String,
        /// Observed endpoint.
        endpoint: SocketAddr,
    },
    /// A registration was refused.
    Refused(Refusal),
    /// A member stopped refreshing its registration.
    Expired {
        /// Community.
        community: String,
        /// Member name or key.
        member: String,
    },
    /// A key enrolled with the join secret and got an address: persist it.
    Enrolled {
        /// Community.
        community: String,
        /// The new member's key.
        key: PublicKey,
        /// The address it got from the pool.
        address: IpAddr,
        /// The name it is shown with.
        name: String,
    },
}

/// One member as `status` shows it.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// Key.
    pub public_key: PublicKey,
    /// Overlay address.
    pub address: IpAddr,
    /// Id here.
    pub id: u32,
    /// Registered now.
    pub registered: bool,
    /// Observed endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Announced local endpoints.
    pub local_endpoints: Vec<SocketAddr>,
    /// Its MAC.
    pub mac: Option<Mac>,
    /// Seconds since its last packet.
    pub last_seen_secs: Option<f64>,
    /// Seconds since it registered.
    pub registered_secs: Option<f64>,
    /// Control and relay traffic with it.
    pub traffic: Traffic,
}

/// One community as `status` shows it.
#[derive(Debug, Clone)]
pub struct CommunityStatus {
    /// Name.
    pub name: String,
    /// Network.
    pub network: IpNet,
    /// Membership version.
    pub epoch: u64,
    /// Relays allowed.
    pub relay: bool,
    /// Version of the signed membership carried (None: not signed).
    pub signed_version: Option<u64>,
    /// Members.
    pub members: Vec<MemberStatus>,
}

/// Supernode snapshot.
#[derive(Debug, Clone)]
pub struct SupernodeStatus {
    /// Our key.
    pub public_key: PublicKey,
    /// Communities.
    pub communities: Vec<CommunityStatus>,
    /// Drops by reason.
    pub drops: DropCounters,
    /// Registrations refused.
    pub refused: u64,
    /// Registration handshakes accepted (first joins, restarts and rekeys).
    pub registrations: u64,
    /// Cookie replies sent because initiations came faster than the guard's limit.
    pub cookie_replies: u64,
    /// Packets relayed.
    pub relay_packets: u64,
    /// Inner bytes relayed.
    pub relay_bytes: u64,
}

/// The supernode.
pub struct Supernode {
    key: PrivateKey,
    public: PublicKey,
    interval: u16,
    communities: Vec<Community>,
    sessions: HashMap<u32, (usize, usize)>,
    drops: DropCounters,
    refused: u64,
    registrations: u64,
    relay_packets: u64,
    relay_bytes: u64,
    next_tick: Instant,
    events: Vec<Event>,
    next_id: u32,
    guard: CookieGuard,
    rng: Rng,
}

fn label(n: &Node) -> String {
    if n.entry.name.is_empty() {
        n.entry.key.to_base64()
    } else {
        n.entry.name.clone()
    }
}

fn record(n: &Node) -> Option<PeerRecord> {
    let reg = n.reg.as_ref()?;
    let mut endpoints = vec![reg.endpoint];
    endpoints.extend(reg.locals.iter().filter(|e| **e != reg.endpoint));
    Some(PeerRecord {
        id: n.id,
        key: n.entry.key,
        name: n.entry.name.clone(),
        address: n.entry.address,
        mac: reg.mac,
        instance: reg.instance,
        allowed_cidrs: n.entry.allowed_cidrs.clone(),
        endpoints,
    })
}

/// Bytes of a `RegisterNak` besides its message: type, code, message length.
const NAK_OVERHEAD: usize = 3;

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn retire(sessions: &mut HashMap<u32, (usize, usize)>, s: Option<Session>) {
    if let Some(s) = s {
        sessions.remove(&s.local_index);
    }
}

impl Supernode {
    /// A new supernode.
    /// `rng` is the supernode's only source of randomness (session indices, cookie secrets,
    /// handshake ephemerals): the shell seeds it from the OS, tests with a constant.
    pub fn new(cfg: SupernodeConfig, now: Instant, mut rng: Rng) -> Supernode {
        let public = cfg.private_key.public_key();
        let mut sn = Supernode {
            public,
            key: cfg.private_key,
            interval: cfg.register_interval.max(1),
            communities: Vec::new(),
            sessions: HashMap::new(),
            drops: DropCounters::default(),
            refused: 0,
            registrations: 0,
            relay_packets: 0,
            relay_bytes: 0,
            next_tick: now,
            events: Vec::new(),
            next_id: 1,
            guard: CookieGuard::new(&public, cookie::DEFAULT_LIMIT, now, rng.fork()),
            rng,
        };
        sn.reload(
            cfg.communities,
            cfg.register_interval,
            &mut Output::default(),
        );
        sn
    }

    /// Applies a new membership (the community files were edited and the daemon got SIGHUP)
    /// without disturbing anyone it does not concern: members that stay keep their
    /// registration, id and sessions; new members may register at once; removed members'
    /// sessions are torn down here, and every registered member of their community is sent
    /// a `PeerRemoved` so that it tears down its own sessions with them. A member whose
    /// address changed is treated as removed and must register again with the new one.
    pub fn reload(
        &mut self,
        communities: Vec<CommunityConfig>,
        register_interval: u16,
        out: &mut Output,
    ) -> ReloadSummary {
        self.interval = register_interval.max(1);
        let mut summary = ReloadSummary::default();
        let mut old: Vec<Community> = std::mem::take(&mut self.communities);
        let initial = old.is_empty() && self.next_id == 1;
        for cfg in communities {
            let prev = old
                .iter()
                .position(|c| c.name == cfg.name)
                .map(|i| old.swap_remove(i));
            if prev.is_none() && !initial {
                summary.communities_added.push(cfg.name.clone());
            }
            let (mut prev_nodes, epoch, removed, prev_signed) = match prev {
                Some(p) => (p.nodes, p.epoch, p.removed, p.signed),
                None => (Vec::new(), 0, VecDeque::new(), None),
            };
            let signed_changed = cfg.signed != prev_signed;
            let mut comm = Community {
                name: cfg.name,
                network: cfg.network,
                nodes: Vec::new(),
                by_key: HashMap::new(),
                by_id: HashMap::new(),
                epoch: epoch + 1,
                relay: cfg.relay,
                removed,
                signed: cfg.signed,
                enrolment: cfg.enrolment,
                cipher: cfg.cipher,
            };
            let mut gone = Vec::new();
            for entry in cfg.nodes {
                let kept = prev_nodes
                    .iter()
                    .position(|n| n.entry.key == entry.key)
                    .map(|i| prev_nodes.swap_remove(i));
                let node = match kept {
                    Some(mut n) => {
                        if n.entry.address != entry.address {
                            // Its peers must forget the old binding; it registers anew.
                            gone.push(n.entry.key);
                            n.reg = None;
                        }
                        if n.entry.address != entry.address
                            || n.entry.name != entry.name
                            || n.entry.allowed_cidrs != entry.allowed_cidrs
                        {
                            n.entry = entry;
                            summary.changed.push((comm.name.clone(), label(&n)));
                        }
                        n
                    }
                    None => {
                        let id = self.next_id;
                        self.next_id += 1;
                        comm.removed.retain(|k| *k != entry.key);
                        let n = Node {
                            entry,
                            id,
                            last_timestamp: 0,
                            reg: None,
                            traffic: Traffic::default(),
                        };
                        if !initial {
                            summary.added.push((comm.name.clone(), label(&n)));
                        }
                        n
                    }
                };
                let i = comm.nodes.len();
                comm.by_key.insert(node.entry.key, i);
                comm.by_id.insert(node.id, i);
                comm.nodes.push(node);
            }
            for n in prev_nodes {
                summary.removed.push((comm.name.clone(), label(&n)));
                gone.push(n.entry.key);
            }
            for k in &gone {
                comm.removed.retain(|x| x != k);
                comm.removed.push_back(*k);
            }
            while comm.removed.len() > REMEMBERED_REMOVALS {
                comm.removed.pop_front();
            }
            self.communities.push(comm);
            let c = self.communities.len() - 1;
            self.announce_removals(c, &gone, out);
            if signed_changed {
                // A new signed list (a revocation, an address move) goes out at once; edges
                // verify it and tear down sessions with members no longer on it.
                for n in 0..self.communities[c].nodes.len() {
                    self.send_signed(c, n, out);
                }
            }
        }
        // Communities no longer configured: their members are cut off from each other.
        for mut comm in old {
            summary.communities_removed.push(comm.name.clone());
            let keys: Vec<PublicKey> = comm.nodes.iter().map(|n| n.entry.key).collect();
            for node in comm.nodes.iter_mut() {
                Self::send_removals(node, &keys, out);
            }
        }
        // Indexes moved: rebuild the session table from the registrations that survived.
        self.sessions.clear();
        for (c, comm) in self.communities.iter().enumerate() {
            for (n, node) in comm.nodes.iter().enumerate() {
                if let Some(reg) = &node.reg {
                    for s in std::iter::once(&reg.session).chain(reg.previous.as_ref()) {
                        self.sessions.insert(s.local_index, (c, n));
                    }
                }
            }
        }
        for c in 0..self.communities.len() {
            self.push_lists(c, None, out);
        }
        summary
    }

    fn announce_removals(&mut self, c: usize, keys: &[PublicKey], out: &mut Output) {
        if keys.is_empty() {
            return;
        }
        for node in self.communities[c].nodes.iter_mut() {
            Self::send_removals(node, keys, out);
        }
    }

    /// Sends `keys` to `node` as `PeerRemoved` messages (no-op if it is not registered).
    fn send_removals(node: &mut Node, keys: &[PublicKey], out: &mut Output) {
        let Some(reg) = node.reg.as_mut() else { return };
        for chunk in keys.chunks(KEYS_PER_REMOVAL) {
            let msg = Control::PeerRemoved {
                keys: chunk.to_vec(),
            };
            let start = out.buf.len();
            reg.session.seal_data(&msg.encode(), &mut out.buf);
            out.transmit_from(start, reg.endpoint);
            node.traffic.tx_packets += 1;
        }
    }

    /// Our key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The sizes of the supernode's tables, by name, to check memory bounds in tests and
    /// fuzz targets: `sessions` (indices of live sessions), `registrations`, `nodes`
    /// (configured members, fixed), `locals` (announced endpoints, all members), `events`.
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let nodes = self.communities.iter().flat_map(|c| c.nodes.iter());
        let regs = nodes.clone().filter_map(|n| n.reg.as_ref());
        vec![
            ("sessions", self.sessions.len()),
            ("registrations", regs.clone().count()),
            ("nodes", nodes.count()),
            ("locals", regs.map(|r| r.locals.len()).sum()),
            ("events", self.events.len()),
        ]
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Handles one UDP datagram.
    pub fn handle_udp(&mut self, now: Instant, src: SocketAddr, pkt: &mut [u8], out: &mut Output) {
        let decoded = match wire::decode(pkt) {
            Ok(p) => p,
            Err(WireError::BadVersion(_)) => return self.drops.add(DropReason::BadVersion),
            Err(WireError::Malformed) => return self.drops.add(DropReason::Malformed),
        };
        match decoded {
            Packet::Init { sender, .. } => match self.guard.check(now, src, pkt, out) {
                Verdict::Process { end } => {
                    let noise = pkt[wire::INIT_HEADER_LEN..end].to_vec();
                    self.on_init(now, src, sender, &noise, out)
                }
                Verdict::CookieSent => {}
                Verdict::BadMac2 => self.drops.add(DropReason::BadCookie),
            },
            Packet::Resp { .. } | Packet::CookieReply { .. } => {
                self.drops.add(DropReason::Malformed)
            }
            Packet::Data { receiver, counter } => {
                self.on_data(now, src, receiver, counter, pkt, out)
            }
            Packet::Relay {
                receiver,
                counter,
                peer,
            } => self.on_relay(now, src, receiver, counter, peer, pkt, out),
        }
    }

    fn on_init(
        &mut self,
        now: Instant,
        src: SocketAddr,
        sender: u32,
        noise: &[u8],
        out: &mut Output,
    ) {
        let (hs, remote, payload) = match Handshake::respond_with(
            Cipher::ChaCha20Poly1305,
            &self.key,
            noise,
            &mut self.rng,
        ) {
            Ok(x) => x,
            Err(_) => return self.drops.add(DropReason::HandshakeFailed),
        };
        let Ok(Control::Register {
            community,
            address,
            mac,
            instance,
            timestamp,
            endpoints,
            join,
            cipher,
            ..
        }) = Control::decode(&payload)
        else {
            return self.drops.add(DropReason::Malformed);
        };
        let enrolled = match join {
            Some(proof) => self.enrol(&community, &remote, &proof, timestamp),
            None => Ok(None),
        };
        let (address, assigned) = match &enrolled {
            Ok(Some(a)) => (a.0, Some(*a)),
            _ => (address, None),
        };
        let verdict = match enrolled {
            Err(e) => Err(e),
            Ok(_) => self
                .check_registration(&community, &remote, address, mac)
                .and_then(|x| self.check_cipher(x.0, &remote, cipher).map(|()| x)),
        };
        let (c, n) = match verdict {
            Ok(x) => x,
            Err((code, reason)) => {
                // Answer with the refusal so the operator of the edge sees why; the answer is
                // smaller than the initiation, and no state is kept.
                self.refused += 1;
                self.drops.add(DropReason::NotMember);
                self.events.push(Event::Refused(Refusal {
                    from: src,
                    key: remote,
                    community,
                    reason: reason.clone(),
                }));
                // No amplification: the refusal is never larger than the initiation it
                // answers (the message is cut to fit; edges pad their initiation to
                // REGISTER_INIT_MIN so that a whole explanation fits).
                let room = (wire::INIT_HEADER_LEN + noise.len())
                    .saturating_sub(wire::RESP_HEADER_LEN + RESP_NOISE_OVERHEAD + NAK_OVERHEAD);
                let start = out.buf.len();
                wire::put_resp_header(&mut out.buf, 0, sender);
                let nak = Control::RegisterNak {
                    code,
                    message: cut_at_char(&reason, room).to_string(),
                }
                .encode();
                if hs.finish_response(&nak, &mut out.buf).is_ok() {
                    out.transmit_from(start, src);
                } else {
                    out.buf.truncate(start);
                }
                return;
            }
        };
        let node = &mut self.communities[c].nodes[n];
        if timestamp <= node.last_timestamp {
            // A replayed (or reordered old) initiation.
            return self.drops.add(DropReason::Replay);
        }
        node.last_timestamp = timestamp;
        let local_index = loop {
            let i = self.rng.next_u32();
            if i != 0 && !self.sessions.contains_key(&i) {
                break i;
            }
        };
        let comm = &mut self.communities[c];
        let node = &mut comm.nodes[n];
        let changed = node.reg.as_ref().is_none_or(|r| {
            r.instance != instance || r.endpoint != src || r.mac != mac || r.locals != endpoints
        });
        if changed {
            comm.epoch += 1;
        }
        let ack = Control::RegisterAck {
            id: node.id,
            observed: src,
            epoch: comm.epoch,
            interval: self.interval,
            relay: comm.relay,
            membership: comm.signed.as_ref().map_or(0, |s| s.version),
            assigned,
        };
        let start = out.buf.len();
        wire::put_resp_header(&mut out.buf, local_index, sender);
        let keys = match hs.finish_response(&ack.encode(), &mut out.buf) {
            Ok(k) => k,
            Err(_) => {
                out.buf.truncate(start);
                return self.drops.add(DropReason::HandshakeFailed);
            }
        };
        out.transmit_from(start, src);
        self.registrations += 1;
        let session = Session::new(local_index, sender, keys, now, false);
        self.sessions.insert(local_index, (c, n));
        let (previous, since) = match node.reg.take() {
            // Same process re-keying: keep the old session for packets in flight.
            Some(old) if old.instance == instance => {
                retire(&mut self.sessions, old.previous);
                (Some(old.session), old.since)
            }
            // A restarted edge replaces its old registration at once.
            Some(old) => {
                retire(&mut self.sessions, Some(old.session));
                retire(&mut self.sessions, old.previous);
                (None, now)
            }
            None => (None, now),
        };
        node.reg = Some(Registration {
            session,
            previous,
            endpoint: src,
            locals: endpoints,
            mac,
            instance,
            last_seen: now,
            since,
        });
        if changed {
            self.events.push(Event::Registered {
                community: comm.name.clone(),
                member: label(node),
                endpoint: src,
            });
            self.push_member(c, n, Some(n), out);
        }
    }

    /// A Register with a join proof: the key's address (listed or enrolled before), or a new
    /// one from the pool if the proof holds. `Ok(None)` leaves it to the membership check.
    fn enrol(
        &mut self,
        community: &str,
        key: &PublicKey,
        proof: &[u8; 32],
        timestamp: u64,
    ) -> Result<Option<(IpAddr, u8)>, (NakCode, String)> {
        let Some(c) = self.communities.iter().position(|x| x.name == community) else {
            return Ok(None);
        };
        let comm = &mut self.communities[c];
        let prefix = comm.network.prefix_len();
        if let Some(&n) = comm.by_key.get(key) {
            return Ok(Some((comm.nodes[n].entry.address, prefix)));
        }
        let Some(e) = comm.enrolment.as_ref() else {
            return Err((
                NakCode::NotMember,
                format!("refused key {key}: community '{community}' does not take enrolments (the supernode has no `join_secret_file` for it); list the key in the community file instead"),
            ));
        };
        let expect = crate::control::join_proof(&e.secret, key, community, timestamp);
        if expect != *proof {
            return Err((
                NakCode::NotMember,
                format!("refused key {key}: its join proof does not match community '{community}''s join secret (check `join_secret_file` on both sides)"),
            ));
        }
        if e.revoked.contains(key) {
            return Err((
                NakCode::NotMember,
                format!("refused key {key}: its enrolment in community '{community}' was revoked"),
            ));
        }
        let used: std::collections::HashSet<IpAddr> =
            comm.nodes.iter().map(|n| n.entry.address).collect();
        let Some(address) = e.pool.hosts().find(|a| !used.contains(a)) else {
            return Err((
                NakCode::Other,
                format!("refused key {key}: the address pool {} of community '{community}' is exhausted", e.pool),
            ));
        };
        let name = format!("enrolled-{}", &key.to_base64()[..8]);
        let id = self.next_id;
        self.next_id += 1;
        let i = comm.nodes.len();
        comm.by_key.insert(*key, i);
        comm.by_id.insert(id, i);
        comm.nodes.push(Node {
            entry: NodeEntry {
                key: *key,
                name: name.clone(),
                address,
                allowed_cidrs: Vec::new(),
            },
            id,
            last_timestamp: 0,
            reg: None,
            traffic: Traffic::default(),
        });
        self.events.push(Event::Enrolled {
            community: community.to_string(),
            key: *key,
            address,
            name,
        });
        Ok(Some((address, prefix)))
    }

    /// Both ends must use the community's cipher: refuse an edge configured otherwise, with
    /// a message naming the key to set (peers could never complete a handshake with it).
    fn check_cipher(&self, c: usize, key: &PublicKey, code: u8) -> Result<(), (NakCode, String)> {
        let want = self.communities[c].cipher;
        if code == want.code() {
            return Ok(());
        }
        let have =
            Cipher::from_code(code).map_or("a cipher this supernode does not know", Cipher::name);
        Err((
            NakCode::CipherMismatch,
            format!(
                "refused key {key}: community '{}' uses cipher {want} but this edge is configured                  with {have} (set cipher = \"{want}\" in the edge config, or change the                  community's cipher on the supernode)",
                self.communities[c].name
            ),
        ))
    }

    fn check_registration(
        &self,
        community: &str,
        key: &PublicKey,
        address: IpAddr,
        mac: Mac,
    ) -> Result<(usize, usize), (NakCode, String)> {
        let Some(c) = self.communities.iter().position(|x| x.name == community) else {
            return Err((
                NakCode::UnknownCommunity,
                format!(
                    "refused key {key}: community '{community}' does not exist on this supernode"
                ),
            ));
        };
        let comm = &self.communities[c];
        let Some(&n) = comm.by_key.get(key) else {
            return Err((
                NakCode::NotMember,
                format!(
                    "refused key {key}: not a member of community '{community}' (add a [[community.node]] \
                     with this public_key to the supernode's community file)"
                ),
            ));
        };
        let node = &comm.nodes[n];
        if node.entry.address != address {
            let owner = comm
                .nodes
                .iter()
                .find(|x| x.entry.address == address)
                .map(label);
            let whose = match owner {
                Some(o) => format!("it belongs to member '{o}'"),
                None => "no member owns it".to_string(),
            };
            return Err((
                NakCode::AddressNotOwned,
                format!(
                    "refused key {key}: it claims address {address} but {whose}; this key owns {} in \
                     community '{community}' (set [interface] address accordingly)",
                    node.entry.address
                ),
            ));
        }
        if let Some(other) = comm
            .nodes
            .iter()
            .find(|x| x.entry.key != *key && x.reg.as_ref().is_some_and(|r| r.mac == mac))
        {
            return Err((
                NakCode::MacInUse,
                format!(
                    "refused key {key}: MAC {mac} is already used by member '{}'",
                    label(other)
                ),
            ));
        }
        Ok((c, n))
    }

    fn find_session(&mut self, receiver: u32) -> Option<(usize, usize, &mut Session)> {
        let (c, n) = *self.sessions.get(&receiver)?;
        let reg = self.communities[c].nodes[n].reg.as_mut()?;
        let s = if reg.session.local_index == receiver {
            &mut reg.session
        } else {
            reg.previous
                .as_mut()
                .filter(|s| s.local_index == receiver)?
        };
        Some((c, n, s))
    }

    fn on_data(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let Some((c, n, session)) = self.find_session(receiver) else {
            return self.drops.add(DropReason::UnknownSession);
        };
        let range = match session.open_data(counter, pkt) {
            Ok(r) => r,
            Err(e) => return self.drops.add(e.into()),
        };
        self.seen(now, c, n, src, out);
        self.communities[c].nodes[n].traffic.rx_packets += 1;
        let msg = match Control::decode(&pkt[range]) {
            Ok(m) => m,
            Err(_) => return self.drops.add(DropReason::Malformed),
        };
        match msg {
            Control::Register {
                community,
                address,
                mac,
                instance,
                endpoints,
                cipher,
                ..
            } => {
                let key = self.communities[c].nodes[n].entry.key;
                let same_community = self.communities[c].name == community;
                if let Err((code, message)) = self
                    .check_registration(&community, &key, address, mac)
                    .and_then(|x| self.check_cipher(x.0, &key, cipher).map(|()| x))
                    .and_then(|x| {
                        if x == (c, n) && same_community {
                            Ok(x)
                        } else {
                            Err((
                                NakCode::Other,
                                "registration does not match its session".to_string(),
                            ))
                        }
                    })
                {
                    self.send(c, n, &Control::RegisterNak { code, message }, out);
                    return;
                }
                let comm = &mut self.communities[c];
                let node = &mut comm.nodes[n];
                let reg = node.reg.as_mut().expect("found by session");
                let changed = reg.instance != instance || reg.mac != mac || reg.locals != endpoints;
                reg.instance = instance;
                reg.mac = mac;
                reg.locals = endpoints;
                if changed {
                    comm.epoch += 1;
                    self.push_member(c, n, Some(n), out);
                }
                let comm = &self.communities[c];
                let node = &comm.nodes[n];
                let ack = Control::RegisterAck {
                    id: node.id,
                    observed: node.reg.as_ref().expect("registered").endpoint,
                    epoch: comm.epoch,
                    interval: self.interval,
                    relay: comm.relay,
                    membership: comm.signed.as_ref().map_or(0, |s| s.version),
                    assigned: None,
                };
                self.send(c, n, &ack, out);
            }
            Control::SyncRequest => self.send_list(c, n, out),
            Control::SignedListRequest => self.send_signed(c, n, out),
            Control::Lookup { txid, query } => {
                let comm = &self.communities[c];
                let found = comm.nodes.iter().position(|x| {
                    x.reg.is_some()
                        && match query {
                            Query::Key(k) => x.entry.key == k,
                            Query::Mac(m) => x.reg.as_ref().is_some_and(|r| r.mac == m),
                            Query::Ip(ip) => {
                                x.entry.address == ip
                                    || x.entry.allowed_cidrs.iter().any(|n| n.contains(&ip))
                            }
                        }
                });
                let rec = found.and_then(|i| record(&comm.nodes[i]));
                self.send(c, n, &Control::LookupReply { txid, record: rec }, out);
                // Tell the target too, so both sides send to each other now (hole punching).
                if let Some(t) = found.filter(|t| *t != n) {
                    if let Some(me) = record(&self.communities[c].nodes[n]) {
                        self.send(c, t, &Control::PeerNotify { record: me }, out);
                    }
                }
            }
            Control::RegisterAck { .. }
            | Control::RegisterNak { .. }
            | Control::PeerList { .. }
            | Control::LookupReply { .. }
            | Control::PeerNotify { .. }
            | Control::PeerRemoved { .. }
            | Control::SignedList { .. }
            | Control::PeerUpdate { .. }
            | Control::Unknown(_) => {}
        }
    }

    /// Sends a control message to the registered member with `key` (tests play a
    /// compromised supernode with it).
    #[cfg(test)]
    pub(crate) fn test_send(&mut self, key: &PublicKey, msg: &Control, out: &mut Output) {
        for c in 0..self.communities.len() {
            if let Some(&n) = self.communities[c].by_key.get(key) {
                self.send(c, n, msg, out);
            }
        }
    }

    /// Sends member (c, n) the community's signed membership in chunks (no-op if the
    /// community has none or the member is not registered).
    fn send_signed(&mut self, c: usize, n: usize, out: &mut Output) {
        let Some(signed) = self.communities[c].signed.clone() else {
            return;
        };
        if self.communities[c].nodes[n].reg.is_none() {
            return;
        }
        let chunks = signed.bytes.chunks(CHUNK_BYTES);
        let total = chunks.len() as u16;
        for (i, data) in chunks.enumerate() {
            let msg = Control::SignedList {
                version: signed.version,
                chunk: i as u16,
                chunks: total,
                data: data.to_vec(),
            };
            self.send(c, n, &msg, out);
        }
    }

    /// An authenticated packet from member (c, n) arrived from `src`: refresh it, and follow
    /// it if its endpoint moved (roaming, NAT rebinding).
    fn seen(&mut self, now: Instant, c: usize, n: usize, src: SocketAddr, out: &mut Output) {
        let comm = &mut self.communities[c];
        let reg = comm.nodes[n].reg.as_mut().expect("found by session");
        reg.last_seen = now;
        if reg.endpoint != src {
            reg.endpoint = src;
            comm.epoch += 1;
            self.push_member(c, n, None, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_relay(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        to: u32,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let Some((c, n, session)) = self.find_session(receiver) else {
            return self.drops.add(DropReason::UnknownSession);
        };
        let inner = match session.open_relay(counter, pkt) {
            Ok(r) => r,
            Err(e) => return self.drops.add(e.into()),
        };
        self.seen(now, c, n, src, out);
        let comm = &mut self.communities[c];
        if !comm.relay {
            return self.drops.add(DropReason::RelayDenied);
        }
        let from = comm.nodes[n].id;
        comm.nodes[n].traffic.rx_packets += 1;
        comm.nodes[n].traffic.rx_bytes += inner.len() as u64;
        // Only within the community: ids of other communities are not in `by_id`.
        let Some(&t) = comm.by_id.get(&to) else {
            return self.drops.add(DropReason::NoRoute);
        };
        let target = &mut comm.nodes[t];
        let Some(reg) = target.reg.as_mut() else {
            return self.drops.add(DropReason::NoRoute);
        };
        let start = out.buf.len();
        out.buf.resize(start + RELAY_HEADER_LEN, 0);
        out.buf.extend_from_slice(&pkt[inner.clone()]);
        reg.session.seal_relay(from, &mut out.buf, start);
        out.transmit_from(start, reg.endpoint);
        target.traffic.tx_packets += 1;
        target.traffic.tx_bytes += inner.len() as u64;
        self.relay_packets += 1;
        self.relay_bytes += inner.len() as u64;
    }

    fn send(&mut self, c: usize, n: usize, msg: &Control, out: &mut Output) {
        self.send_encoded(c, n, &msg.encode(), out);
    }

    /// Seals an encoded control message to member (c, n); no-op if it is not registered.
    fn send_encoded(&mut self, c: usize, n: usize, msg: &[u8], out: &mut Output) {
        let node = &mut self.communities[c].nodes[n];
        let Some(reg) = node.reg.as_mut() else { return };
        let start = out.buf.len();
        reg.session.seal_data(msg, &mut out.buf);
        out.transmit_from(start, reg.endpoint);
        node.traffic.tx_packets += 1;
    }

    fn send_list(&mut self, c: usize, n: usize, out: &mut Output) {
        // Revocations first, for an edge that missed the push when they happened.
        let comm = &mut self.communities[c];
        if !comm.removed.is_empty() {
            let keys: Vec<PublicKey> = comm.removed.iter().copied().collect();
            Self::send_removals(&mut comm.nodes[n], &keys, out);
        }
        let comm = &self.communities[c];
        let epoch = comm.epoch;
        let records: Vec<PeerRecord> = comm.nodes.iter().filter_map(record).collect();
        let chunks = chunk_records(records);
        let total = chunks.len() as u16;
        for (i, records) in chunks.into_iter().enumerate() {
            self.send(
                c,
                n,
                &Control::PeerList {
                    epoch,
                    chunk: i as u16,
                    chunks: total,
                    records,
                },
                out,
            );
        }
    }

    /// Tells every registered member except `skip` that member `n` registered or changed:
    /// the step from the previous epoch to the current one, one record. Members whose copy is
    /// not at the previous epoch ask for the whole list. A registration costs the supernode
    /// one record per member instead of the whole list per member.
    fn push_member(&mut self, c: usize, n: usize, skip: Option<usize>, out: &mut Output) {
        if let Some(r) = record(&self.communities[c].nodes[n]) {
            self.push_update(c, vec![r], Vec::new(), skip, out);
        }
    }

    /// Sends every registered member except `skip` the step from the previous epoch to the
    /// current one: `records` added or changed, `gone` no longer registered.
    fn push_update(
        &mut self,
        c: usize,
        records: Vec<PeerRecord>,
        gone: Vec<PublicKey>,
        skip: Option<usize>,
        out: &mut Output,
    ) {
        let epoch = self.communities[c].epoch;
        let msg = Control::PeerUpdate {
            from: epoch.saturating_sub(1),
            epoch,
            records,
            gone,
        };
        self.send_to_all(c, skip, &msg, out);
    }

    /// Sends `msg` to every registered member of community `c` except `skip`.
    fn send_to_all(&mut self, c: usize, skip: Option<usize>, msg: &Control, out: &mut Output) {
        let bytes = msg.encode();
        for node in 0..self.communities[c].nodes.len() {
            if Some(node) != skip {
                self.send_encoded(c, node, &bytes, out);
            }
        }
    }

    /// Sends the member list to every registered member except `skip` (which asks by itself
    /// when its acknowledgement shows a new epoch).
    fn push_lists(&mut self, c: usize, skip: Option<usize>, out: &mut Output) {
        for n in 0..self.communities[c].nodes.len() {
            if Some(n) != skip && self.communities[c].nodes[n].reg.is_some() {
                self.send_list(c, n, out);
            }
        }
    }

    /// When the next timer is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Expires registrations that stopped refreshing.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let expiry = Duration::from_secs(u64::from(self.interval) * 3 + 5);
        for c in 0..self.communities.len() {
            let mut gone = Vec::new();
            let comm = &mut self.communities[c];
            for node in comm.nodes.iter_mut() {
                if node
                    .reg
                    .as_ref()
                    .is_some_and(|r| now.saturating_duration_since(r.last_seen) >= expiry)
                {
                    let reg = node.reg.take().expect("checked");
                    retire(&mut self.sessions, Some(reg.session));
                    retire(&mut self.sessions, reg.previous);
                    self.events.push(Event::Expired {
                        community: comm.name.clone(),
                        member: label(node),
                    });
                    gone.push(node.entry.key);
                }
            }
            if gone.is_empty() {
                continue;
            }
            comm.epoch += 1;
            if gone.len() > KEYS_PER_REMOVAL {
                self.push_lists(c, None, out);
            } else {
                self.push_update(c, Vec::new(), gone, None, out);
            }
        }
    }

    /// A snapshot for `status`.
    pub fn status(&self, now: Instant) -> SupernodeStatus {
        let secs = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
        SupernodeStatus {
            public_key: self.public,
            communities: self
                .communities
                .iter()
                .map(|c| CommunityStatus {
                    name: c.name.clone(),
                    network: c.network,
                    epoch: c.epoch,
                    relay: c.relay,
                    signed_version: c.signed.as_ref().map(|s| s.version),
                    members: c
                        .nodes
                        .iter()
                        .map(|n| MemberStatus {
                            name: n.entry.name.clone(),
                            public_key: n.entry.key,
                            address: n.entry.address,
                            id: n.id,
                            registered: n.reg.is_some(),
                            endpoint: n.reg.as_ref().map(|r| r.endpoint),
                            local_endpoints: n
                                .reg
                                .as_ref()
                                .map(|r| r.locals.clone())
                                .unwrap_or_default(),
                            mac: n.reg.as_ref().map(|r| r.mac),
                            last_seen_secs: n.reg.as_ref().map(|r| secs(r.last_seen)),
                            registered_secs: n.reg.as_ref().map(|r| secs(r.since)),
                            traffic: n.traffic,
                        })
                        .collect(),
                })
                .collect(),
            drops: self.drops.clone(),
            refused: self.refused,
            registrations: self.registrations,
            cookie_replies: self.guard.replies,
            relay_packets: self.relay_packets,
            relay_bytes: self.relay_bytes,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_key(n: u8) -> PrivateKey {
        let mut k = [n; 32];
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        PrivateKey(k)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Found by the `session_mix` fuzz target (docs/fuzzing.md, crash 1): a handshake
    /// initiation from a key that is no member, with an unpadded Register, was answered by a
    /// refusal of 235 bytes for its 139: a 1.7x amplification towards a spoofed source. These
    /// are the exact 139 bytes (initiator key [30; 32], supernode key [1; 32], both clamped).
    #[test]
    fn refusal_is_never_larger_than_the_initiation() {
        let init = hex(
            "010100000403020140c4702f3c00472d71accbc68a306089fb7f312e9d59693d1c809330a7fbd16c4eab\
             ce23307466e1f661d3d8f4daeea91e05cef0502ef9db2f3b0a83740e1d7da2c830394b5b2327f8187cae0f\
             5512e60c5e5a04dfd2a4f291b19124c55bb131cddae55c28b41d09fdd4de0e958b960633ce4cf96b794f0f0c\
             c516968b7fe308aa7705",
        );
        assert_eq!(init.len(), 139);
        let now = Instant::now();
        let member = fixed_key(2).public_key();
        let mut sn = Supernode::new(
            SupernodeConfig {
                private_key: fixed_key(1),
                communities: vec![CommunityConfig {
                    name: "fuzz".into(),
                    network: "10.77.0.0/24".parse().unwrap(),
                    nodes: vec![NodeEntry {
                        key: member,
                        name: "m0".into(),
                        address: "10.77.0.1".parse().unwrap(),
                        allowed_cidrs: vec![],
                    }],
                    relay: true,
                    signed: None,
                    enrolment: None,
                    cipher: Default::default(),
                }],
                register_interval: 10,
            },
            now,
            Rng::from_seed([1; 32]),
        );
        let src: SocketAddr = "198.18.0.200:50000".parse().unwrap();
        let mut out = Output::default();
        let mut pkt = init.clone();
        sn.handle_udp(now, src, &mut pkt, &mut out);
        assert_eq!(out.transmits.len(), 1, "the refusal is still sent");
        let t = &out.transmits[0];
        assert_eq!(t.dst, src);
        assert!(
            t.range.len() <= init.len(),
            "{} bytes answered {}",
            t.range.len(),
            init.len()
        );
        assert!(matches!(
            wire::decode(out.bytes(t)),
            Ok(Packet::Resp {
                sender: 0,
                receiver: 0x0102_0304,
                ..
            })
        ));
        assert_eq!(sn.status(now).refused, 1);
        assert_eq!(cut_at_char("héllo", 2), "h");
        assert_eq!(cut_at_char("héllo", 3), "hé");
        assert_eq!(cut_at_char("abc", 10), "abc");
    }
}
