//! The supernode state machine: membership checks, registrations, member lists, lookups,
//! hole-punch notices and the relay of end-to-end encrypted packets.
//!
//! The supernode never holds an edge-to-edge key: it authenticates the relay envelope with
//! its own session to each member and forwards the inner packet untouched.

use crate::control::{chunk_records, Control, NakCode, PeerRecord, Query};
use crate::crypto::{Cipher, Handshake};
use crate::io::{DropCounters, DropReason, Output, Traffic};
use crate::keys::{Mac, PrivateKey, PublicKey};
use crate::session::Session;
use crate::wire::{self, Packet, WireError, RELAY_HEADER_LEN};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Timer granularity.
pub const TICK: Duration = Duration::from_millis(500);
/// Default registration interval told to edges.
pub const DEFAULT_REGISTER_INTERVAL: u16 = 10;

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
    relay_packets: u64,
    relay_bytes: u64,
    next_tick: Instant,
    events: Vec<Event>,
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

fn retire(sessions: &mut HashMap<u32, (usize, usize)>, s: Option<Session>) {
    if let Some(s) = s {
        sessions.remove(&s.local_index);
    }
}

impl Supernode {
    /// A new supernode.
    pub fn new(cfg: SupernodeConfig, now: Instant) -> Supernode {
        let mut sn = Supernode {
            public: cfg.private_key.public_key(),
            key: cfg.private_key,
            interval: cfg.register_interval.max(1),
            communities: Vec::new(),
            sessions: HashMap::new(),
            drops: DropCounters::default(),
            refused: 0,
            relay_packets: 0,
            relay_bytes: 0,
            next_tick: now,
            events: Vec::new(),
        };
        let mut next_id = 1u32;
        for c in cfg.communities {
            let mut comm = Community {
                name: c.name,
                network: c.network,
                nodes: Vec::new(),
                by_key: HashMap::new(),
                by_id: HashMap::new(),
                epoch: 1,
                relay: c.relay,
                cipher: c.cipher,
            };
            for entry in c.nodes {
                let i = comm.nodes.len();
                comm.by_key.insert(entry.key, i);
                comm.by_id.insert(next_id, i);
                comm.nodes.push(Node {
                    entry,
                    id: next_id,
                    last_timestamp: 0,
                    reg: None,
                    traffic: Traffic::default(),
                });
                next_id += 1;
            }
            sn.communities.push(comm);
        }
        sn
    }

    /// Our key.
    pub fn public_key(&self) -> PublicKey {
        self.public
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
            Packet::Init { sender, noise } => {
                let noise = noise.to_vec();
                self.on_init(now, src, sender, &noise, out)
            }
            Packet::Resp { .. } => self.drops.add(DropReason::Malformed),
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
        let (hs, remote, payload) = match Handshake::respond(&self.key, noise) {
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
            cipher,
            ..
        }) = Control::decode(&payload)
        else {
            return self.drops.add(DropReason::Malformed);
        };
        let verdict = self
            .check_registration(&community, &remote, address, mac)
            .and_then(|x| self.check_cipher(x.0, &remote, cipher).map(|()| x));
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
                let start = out.buf.len();
                wire::put_resp_header(&mut out.buf, 0, sender);
                let nak = Control::RegisterNak {
                    code,
                    message: reason,
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
            let i = crate::random_u32();
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
            self.push_lists(c, Some(n), out);
        }
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
                    self.push_lists(c, Some(n), out);
                }
                let comm = &self.communities[c];
                let node = &comm.nodes[n];
                let ack = Control::RegisterAck {
                    id: node.id,
                    observed: node.reg.as_ref().expect("registered").endpoint,
                    epoch: comm.epoch,
                    interval: self.interval,
                    relay: comm.relay,
                };
                self.send(c, n, &ack, out);
            }
            Control::SyncRequest => self.send_list(c, n, out),
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
            | Control::Unknown(_) => {}
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
            self.push_lists(c, None, out);
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
        let node = &mut self.communities[c].nodes[n];
        let Some(reg) = node.reg.as_mut() else { return };
        let start = out.buf.len();
        reg.session.seal_data(&msg.encode(), &mut out.buf);
        out.transmit_from(start, reg.endpoint);
        node.traffic.tx_packets += 1;
    }

    fn send_list(&mut self, c: usize, n: usize, out: &mut Output) {
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
            let mut changed = false;
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
                    changed = true;
                }
            }
            if changed {
                comm.epoch += 1;
                self.push_lists(c, None, out);
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
            relay_packets: self.relay_packets,
            relay_bytes: self.relay_bytes,
        }
    }
}
