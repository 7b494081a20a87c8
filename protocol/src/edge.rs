//! The edge state machine: registration with supernodes, peer sessions, path choice
//! (direct or relayed), and the forwarding of Ethernet frames.
//!
//! Feed it UDP datagrams ([`Edge::handle_udp`]), frames read from the TAP device
//! ([`Edge::handle_frame`]) and time ([`Edge::handle_timeout`]); it fills an [`Output`] with
//! datagrams to send and frames to write to the TAP device.
//!
//! Paths. A peer is reached *direct* while an authenticated packet arrived from its endpoint
//! within [`DIRECT_TIMEOUT`]; otherwise through a supernode (*relay*), with the packet still
//! end-to-end encrypted. While relayed, the edge sends a keepalive to each of the peer's
//! endpoints every [`PROBE_INTERVAL`]; the first one that arrives authenticated switches both
//! sides to direct.

use crate::control::{Control, PeerRecord, Query};
use crate::cookie::{self, CookieGuard, Verdict};
use crate::crypto::{Cipher, Handshake};
use crate::eth::{self, SourceIp};
use crate::io::{DropCounters, DropReason, Output, Traffic};
use crate::keys::{Mac, PrivateKey, PublicKey};
use crate::membership::{AdminPublicKey, Membership, MAX_CHUNKS, MAX_MEMBERSHIP_BYTES};
use crate::neighbor;
use crate::pmtu;
use crate::rng::Rng;
use crate::session::{Session, REJECT_AFTER_SECS, REKEY_AFTER_SECS};
use crate::wire::{self, Packet, WireError, RELAY_HEADER_LEN};
use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Granularity of the edge's timers.
pub const TICK: Duration = Duration::from_millis(250);
/// A direct path is used while an authenticated packet came over it within this time.
pub const DIRECT_TIMEOUT: Duration = Duration::from_secs(15);
/// While relayed, probe the peer's endpoints this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Default interval of keepalives to peers (holds NAT mappings, proves direct paths).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);
/// A registration not acknowledged within this time is sent again.
pub const ACK_RETRY: Duration = Duration::from_secs(2);
/// A supernode that has acknowledged nothing for this long gets a new handshake.
pub const LINK_LOST: Duration = Duration::from_secs(6);
/// A supernode that refused us is asked again after this long (membership may change).
pub const REFUSED_RETRY: Duration = Duration::from_secs(10);
/// Longest wait between handshake attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Frames held per peer while its handshake runs.
pub const QUEUE_LIMIT: usize = 32;
/// A peer that sent nothing authenticated (not even a keepalive) for this long is shown as
/// down in `status` (3 keepalives at the default interval, plus margin).
pub const DEAD_AFTER: Duration = Duration::from_secs(20);
/// Least time between two requests for the whole member list made because our copy fell out
/// of step with the supernode's updates.
const SYNC_RETRY: Duration = Duration::from_secs(1);
/// A peer no supernode lists and that sent nothing for this long is forgotten.
pub const PEER_EXPIRY: Duration = Duration::from_secs(120);
/// One-byte edge-to-edge messages inside a data packet (a frame is at least 14 bytes, a
/// keepalive 0): "answer me straight back", and that answer. A direct path counts as working
/// only once a pong came back over it, which proves both directions.
const MSG_PROBE: u8 = 1;
const MSG_PONG: u8 = 2;
/// Through the relay: "answer me back the same way" (the relayed path's RTT; also the
/// relayed keepalive), and that answer. Older edges ignore one-byte relayed messages.
const MSG_RELAY_PING: u8 = 3;
const MSG_RELAY_PONG: u8 = 4;
/// How often a direct path's MTU is probed again.
pub const PMTU_INTERVAL: Duration = Duration::from_secs(600);
/// How long a probe round waits for acknowledgements.
const PMTU_ROUND: Duration = Duration::from_secs(2);
/// A round that got no acknowledgement at all is repeated after this long.
const PMTU_RETRY: Duration = Duration::from_secs(30);
/// The Register payload of a handshake initiation to a supernode is padded to at least this
/// many bytes: then the initiation (8 + 96 + payload) is as large as the largest refusal
/// (12 + 48 + 3 + a 255-byte message), which a supernode never makes larger than the
/// initiation it answers (no amplification).
pub const REGISTER_INIT_PAYLOAD_MIN: usize =
    wire::RESP_HEADER_LEN + crate::crypto::RESP_NOISE_OVERHEAD + 3 + 255
        - wire::INIT_HEADER_LEN
        - crate::crypto::INIT_NOISE_OVERHEAD;
/// A responder session the initiator never confirmed is dropped after this long.
const UNCONFIRMED_EXPIRY: Duration = Duration::from_secs(15);

/// What the edge needs to know at start.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Community name.
    pub community: String,
    /// Our static key.
    pub private_key: PrivateKey,
    /// Our overlay address.
    pub address: IpAddr,
    /// Our overlay MAC.
    pub mac: Mac,
    /// Supernodes: underlay address and static public key.
    pub supernodes: Vec<(SocketAddr, PublicKey)>,
    /// Our local underlay endpoints, announced to peers for LAN shortcuts.
    pub local_endpoints: Vec<SocketAddr>,
    /// Keepalive interval towards peers.
    pub keepalive: Duration,
    /// Whether this edge may use supernode relays (false: `relay_policy = "direct-only"`).
    pub relay: bool,
    /// Answer ARP and neighbour solicitations for members' addresses locally
    /// (`neighbor_suppression`, see [`crate::neighbor`]).
    pub neighbor_suppression: bool,
    /// The TAP device's MTU (the largest IP packet a frame from it carries).
    pub mtu: u32,
    /// The community's join secret (`join_secret_file`): with `address` unspecified, the
    /// supernode assigns one from its pool.
    pub join_secret: Option<Vec<u8>>,
    /// Lower the MSS of TCP SYNs crossing the overlay to what fits (`mss_clamp`).
    pub mss_clamp: bool,
    /// The administrator's key (`admin_key`): when set, a peer is accepted only if the newest
    /// valid signed membership names it, with the address and ranges signed.
    pub admin_key: Option<AdminPublicKey>,
    /// A signed membership kept from an earlier run (`membership_cache`): the floor for
    /// rollback protection and the member list until a supernode sends a newer one.
    pub membership: Option<Vec<u8>>,
    /// The community's data-plane cipher for peer sessions (the supernode refuses a
    /// registration whose cipher differs from the community's).
    pub cipher: Cipher,
}

/// Where a packet came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct(SocketAddr),
    Relay { link: usize, id: u32 },
}

/// Owner of a local session index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Link(usize),
    Peer(usize),
}

struct Pending {
    local_index: u32,
    hs: Handshake,
    sent: Instant,
    attempts: u32,
    /// The initiation as sent, to send again with `mac2` if the responder asks for a cookie.
    init: Vec<u8>,
}

/// Our connection to one supernode.
struct Link {
    addr: SocketAddr,
    key: PublicKey,
    session: Option<Session>,
    previous: Option<Session>,
    pending: Option<Pending>,
    attempts: u32,
    next_handshake: Instant,
    registered: bool,
    id: Option<u32>,
    observed: Option<SocketAddr>,
    error: Option<String>,
    interval: Duration,
    next_register: Instant,
    awaiting_ack: Option<Instant>,
    last_register_sent: Instant,
    last_ack: Option<Instant>,
    registered_at: Option<Instant>,
    epoch_applied: Option<u64>,
    staging: Option<ListStaging>,
    /// When we last asked for the whole member list because our copy was out of step.
    sync_sent: Option<Instant>,
    /// The supernode relays for our community (from its acknowledgement).
    relays: bool,
    /// When an authenticated answer last came from it.
    last_answer: Option<Instant>,
    /// Taken out of the configuration by a reload: no handshakes, not shown. The slot stays
    /// so that link indexes (in paths, sessions and peers' relay ids) never move.
    retired: bool,
    /// A signed membership being received in chunks.
    signed_staging: Option<SignedStaging>,
    /// The last signed version this supernode offered that we refused (not asked for again).
    signed_refused: Option<u64>,
}

impl Link {
    fn new(addr: SocketAddr, key: PublicKey, now: Instant) -> Link {
        Link {
            addr,
            key,
            session: None,
            previous: None,
            pending: None,
            attempts: 0,
            next_handshake: now,
            registered: false,
            id: None,
            observed: None,
            error: None,
            interval: Duration::from_secs(10),
            next_register: now,
            awaiting_ack: None,
            last_register_sent: now,
            last_ack: None,
            registered_at: None,
            epoch_applied: None,
            staging: None,
            sync_sent: None,
            relays: true,
            last_answer: None,
            retired: false,
            signed_staging: None,
            signed_refused: None,
        }
    }

    /// The current or previous session with local index `receiver`.
    fn session_for(&mut self, receiver: u32) -> Option<&mut Session> {
        [self.session.as_mut(), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|s| s.local_index == receiver)
    }
}

struct SignedStaging {
    version: u64,
    chunks: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

struct ListStaging {
    epoch: u64,
    chunks: Vec<Option<Vec<PeerRecord>>>,
}

/// A peer we know from a supernode.
struct Peer {
    key: PublicKey,
    name: String,
    address: IpAddr,
    mac: Mac,
    instance: u64,
    allowed: Vec<IpNet>,
    endpoints: Vec<SocketAddr>,
    /// This peer's id at each supernode (None: that supernode does not list it now).
    relay_ids: Vec<Option<u32>>,
    current: Option<Session>,
    previous: Option<Session>,
    unconfirmed: Option<Session>,
    pending: Option<Pending>,
    /// (initiator index, timestamp, response bytes) of the last initiation we answered, to
    /// answer copies that arrive over other paths without another Diffie-Hellman.
    last_response: Option<(u32, u64, Vec<u8>)>,
    last_init_timestamp: u64,
    /// Our index of the last initiation that completed: further answers to it (copies sent
    /// over other paths) are expected and ignored without counting a drop.
    completed_index: Option<u32>,
    direct: Option<SocketAddr>,
    /// When a pong (or handshake response) last came straight from `direct`: the proof that
    /// both directions of the direct path work.
    last_direct_rx: Option<Instant>,
    /// Rate limit for probing a new endpoint that data arrived from (roaming).
    last_roam_probe: Option<Instant>,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    last_probe: Option<Instant>,
    /// A periodic probe is out and its pong not yet back (the RTT sample).
    awaiting_pong: bool,
    /// Round-trip time of the direct path, from the last periodic probe and its pong.
    rtt: Option<Duration>,
    /// When the last ping through the relay went out, while its pong is awaited.
    relay_ping: Option<Instant>,
    /// When the last ping through the relay went out (answered or not).
    last_relay_ping: Option<Instant>,
    /// Round-trip time through the relay, from the last ping and its pong.
    relay_rtt: Option<Duration>,
    /// The direct path's MTU (largest outer IP packet acknowledged by the peer), once probed.
    pmtu: Option<u16>,
    /// A path MTU probe round in progress: when it started and the largest size acknowledged.
    pmtu_round: Option<(Instant, u16)>,
    /// When to probe the path MTU again.
    pmtu_next: Option<Instant>,
    last_handshake: Option<Instant>,
    queue: VecDeque<Vec<u8>>,
    traffic: Traffic,
    drops: DropCounters,
    created: Instant,
}

impl Peer {
    /// Supernode `l` no longer lists this peer: it cannot relay to it (sessions stay).
    fn unlisted_by(&mut self, l: usize) {
        if let Some(id) = self.relay_ids.get_mut(l) {
            *id = None;
        }
    }

    fn direct_active(&self, now: Instant) -> Option<SocketAddr> {
        let last = self.last_direct_rx?;
        (now.saturating_duration_since(last) < DIRECT_TIMEOUT).then_some(self.direct?)
    }
    fn allows(&self, ip: IpAddr) -> bool {
        ip == self.address || self.allowed.iter().any(|n| n.contains(&ip))
    }
    fn listed(&self) -> bool {
        self.relay_ids.iter().any(Option::is_some)
    }
}

/// One supernode as `status` shows it.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    /// Underlay address.
    pub address: SocketAddr,
    /// Its key.
    pub public_key: PublicKey,
    /// Registration accepted and fresh.
    pub registered: bool,
    /// Our id there.
    pub id: Option<u32>,
    /// Our endpoint as it sees it.
    pub observed_endpoint: Option<SocketAddr>,
    /// Last refusal or failure, for the operator.
    pub error: Option<String>,
    /// Seconds since the last acknowledgement.
    pub last_ack_secs: Option<f64>,
    /// Seconds since this registration began.
    pub registered_secs: Option<f64>,
}

/// One peer as `status` shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Name from the community file.
    pub name: String,
    /// Static key.
    pub public_key: PublicKey,
    /// Overlay address.
    pub address: IpAddr,
    /// Overlay MAC.
    pub mac: Mac,
    /// Extra ranges it may send from.
    pub allowed_cidrs: Vec<IpNet>,
    /// "direct", "relay" or "none".
    pub path: &'static str,
    /// Why the path is what it is, in words for the operator.
    pub path_reason: String,
    /// Underlay endpoint in use (direct) or the supernode relaying (relay).
    pub endpoint: Option<SocketAddr>,
    /// Endpoints the supernode reported.
    pub endpoints: Vec<SocketAddr>,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<f64>,
    /// Seconds since the last authenticated packet.
    pub last_rx_secs: Option<f64>,
    /// Round-trip time of the path in use, in seconds: a direct path's from probes and their
    /// pongs, a relayed one's from pings through the supernode (None until the first answer,
    /// and while the peer is down).
    pub rtt_secs: Option<f64>,
    /// The direct path's MTU (largest outer IP packet that gets through), once probed.
    pub path_mtu: Option<u16>,
    /// Whether a session is up.
    pub session: bool,
    /// Traffic counters.
    pub traffic: Traffic,
    /// Drops attributed to this peer.
    pub drops: DropCounters,
}

/// A snapshot of the edge for `status`.
#[derive(Debug, Clone)]
pub struct EdgeStatus {
    /// Our key.
    pub public_key: PublicKey,
    /// Our MAC.
    pub mac: Mac,
    /// Random per start.
    pub instance: u64,
    /// Supernodes.
    pub supernodes: Vec<LinkStatus>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Drops not attributable to one peer, plus the sum of the peers'.
    pub drops: DropCounters,
    /// Cookie replies sent because initiations came faster than the guard's limit.
    pub cookie_replies: u64,
    /// ARP requests and neighbour solicitations answered locally.
    pub neighbor_answered: u64,
    /// Copies of broadcast and multicast frames sent to peers (one per peer per frame).
    pub flooded_frames: u64,
    /// Signed membership: None without `admin_key`.
    pub membership: Option<MembershipStatus>,
}

/// The signed membership as `status` shows it (edges with `admin_key`).
#[derive(Debug, Clone)]
pub struct MembershipStatus {
    /// The administrator key configured.
    pub admin_key: AdminPublicKey,
    /// Version of the newest valid list (None: none received yet, so every peer is refused).
    pub version: Option<u64>,
    /// Members on it.
    pub members: usize,
    /// The last list refused, and why.
    pub error: Option<String>,
}

/// Something the shell may want to log or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A supernode accepted our registration (first time or after a loss).
    Registered {
        /// Which.
        supernode: SocketAddr,
        /// Our endpoint as seen by it.
        observed: SocketAddr,
    },
    /// A supernode refused us.
    Refused {
        /// Which.
        supernode: SocketAddr,
        /// Its explanation.
        message: String,
    },
    /// A supernode stopped answering.
    LinkLost {
        /// Which.
        supernode: SocketAddr,
    },
    /// A supernode assigned our overlay address (enrolment): configure it.
    AddressAssigned {
        /// The address.
        address: IpAddr,
        /// Its prefix length (the community's network).
        prefix: u8,
        /// Which supernode.
        supernode: SocketAddr,
    },
    /// A session with a peer came up.
    PeerUp {
        /// Peer name or key.
        peer: String,
    },
    /// A supernode said this peer is no longer a member: its sessions were torn down.
    PeerRemoved {
        /// Peer name or key.
        peer: String,
        /// The supernode that said so.
        supernode: SocketAddr,
    },
    /// Nothing authenticated came from a peer (not even a keepalive) for [`DEAD_AFTER`]:
    /// it is down or unreachable. The next `PathChanged` means it is back.
    PeerDown {
        /// Peer name or key.
        peer: String,
        /// Seconds since its last packet.
        silent_secs: u64,
    },
    /// A newer valid signed membership was accepted (the shell may persist
    /// [`Edge::signed_membership`]); peers no longer on it were torn down (`PeerRemoved`).
    MembershipAccepted {
        /// Its version.
        version: u64,
        /// Members on it.
        members: usize,
        /// The supernode that sent it (None: the cached copy at start).
        supernode: Option<SocketAddr>,
    },
    /// A signed membership was refused (bad signature, another community, not newer).
    MembershipRefused {
        /// The supernode that sent it (None: the cached copy at start).
        supernode: Option<SocketAddr>,
        /// Why, in words.
        reason: String,
    },
    /// The path MTU probe found a (new) MTU for the direct path to a peer.
    PathMtu {
        /// Peer name or key.
        peer: String,
        /// The largest outer IP packet that gets through.
        mtu: u16,
        /// The largest frame payload (inner IP packet) that then fits.
        inner: u16,
    },
    /// A peer's path changed.
    PathChanged {
        /// Peer name or key.
        peer: String,
        /// "direct" or "relay".
        path: &'static str,
        /// Endpoint (direct) or supernode (relay).
        endpoint: Option<SocketAddr>,
    },
}

/// The edge.
pub struct Edge {
    cfg: EdgeConfig,
    public: PublicKey,
    instance: u64,
    base_instant: Instant,
    base_unix_micros: u64,
    last_timestamp: u64,
    links: Vec<Link>,
    peers: Vec<Option<Peer>>,
    by_key: HashMap<PublicKey, usize>,
    by_mac: HashMap<Mac, usize>,
    index: HashMap<u32, Owner>,
    drops: DropCounters,
    next_tick: Instant,
    next_txid: u32,
    lookups: HashMap<Query, Instant>,
    events: Vec<Event>,
    last_path: HashMap<usize, &'static str>,
    guard: CookieGuard,
    /// Session indices, the instance id and handshake ephemerals come from here.
    rng: Rng,
    neighbor_answered: u64,
    flooded_frames: u64,
    /// The newest valid signed membership (with `admin_key`), and its bytes.
    signed: Option<(Membership, Vec<u8>)>,
    membership_error: Option<String>,
}

/// True for an IPv4 or IPv6 TCP segment with SYN set (a cheap look before copying).
fn is_tcp_syn(f: &[u8]) -> bool {
    let ethertype = eth::ethertype(f);
    let (proto, tcp) = match ethertype {
        eth::ETHERTYPE_IPV4 if f.len() > 23 => (f[23], 14 + usize::from(f[14] & 0x0f) * 4),
        eth::ETHERTYPE_IPV6 if f.len() > 20 => (f[20], 54),
        _ => return false,
    };
    proto == 6 && f.get(tcp + 13).is_some_and(|flags| flags & 0x02 != 0)
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(3)).min(MAX_BACKOFF)
}

fn peer_label(p: &Peer) -> String {
    if p.name.is_empty() {
        p.key.to_base64()
    } else {
        p.name.clone()
    }
}

/// Sends `build`'s packet over `path`; a relayed packet is wrapped in the supernode session.
fn emit(
    out: &mut Output,
    links: &mut [Link],
    path: Path,
    build: impl FnOnce(&mut Vec<u8>),
) -> bool {
    let start = out.buf.len();
    match path {
        Path::Direct(ep) => {
            build(&mut out.buf);
            out.transmit_from(start, ep);
            true
        }
        Path::Relay { link, id } => {
            let Some(l) = links.get_mut(link) else {
                return false;
            };
            let Some(s) = l.session.as_mut().filter(|_| l.registered) else {
                return false;
            };
            out.buf.resize(start + RELAY_HEADER_LEN, 0);
            build(&mut out.buf);
            s.seal_relay(id, &mut out.buf, start);
            out.transmit_from(start, l.addr);
            true
        }
    }
}

/// The relay through the first registered supernode that lists the peer and relays for us.
fn relay_path(peer: &Peer, links: &[Link], allow: bool) -> Option<Path> {
    if !allow {
        return None;
    }
    links.iter().enumerate().find_map(|(i, l)| {
        let id = peer.relay_ids.get(i).copied().flatten()?;
        (l.registered && l.relays && l.session.is_some()).then_some(Path::Relay { link: i, id })
    })
}

fn choose_path(peer: &Peer, links: &[Link], now: Instant, allow_relay: bool) -> Option<Path> {
    if let Some(ep) = peer.direct_active(now) {
        return Some(Path::Direct(ep));
    }
    if let Some(relay) = relay_path(peer, links, allow_relay) {
        return Some(relay);
    }
    peer.endpoints.first().map(|e| Path::Direct(*e))
}

impl Edge {
    /// A new edge. `unix_micros` is the wall clock at `now` (used only to timestamp
    /// handshakes, so that replayed initiations are recognised); `rng` is the edge's only
    /// source of randomness (the shell seeds it from the OS, tests with a constant).
    pub fn new(cfg: EdgeConfig, now: Instant, unix_micros: u64, mut rng: Rng) -> Edge {
        let links = cfg
            .supernodes
            .iter()
            .map(|(addr, key)| Link::new(*addr, *key, now))
            .collect();
        let public = cfg.private_key.public_key();
        let mut edge = Edge {
            public,
            cfg,
            instance: rng.next_u64(),
            base_instant: now,
            base_unix_micros: unix_micros,
            last_timestamp: 0,
            links,
            peers: Vec::new(),
            by_key: HashMap::new(),
            by_mac: HashMap::new(),
            index: HashMap::new(),
            drops: DropCounters::default(),
            next_tick: now,
            next_txid: 1,
            lookups: HashMap::new(),
            events: Vec::new(),
            last_path: HashMap::new(),
            guard: CookieGuard::new(&public, cookie::DEFAULT_LIMIT, now, rng.fork()),
            rng,
            neighbor_answered: 0,
            flooded_frames: 0,
            signed: None,
            membership_error: None,
        };
        if let Some(bytes) = edge.cfg.membership.take() {
            edge.accept_signed(now, None, bytes, &mut Output::default());
        }
        edge
    }

    /// The newest valid signed membership's bytes (to persist for the next start).
    pub fn signed_membership(&self) -> Option<&[u8]> {
        self.signed.as_ref().map(|(_, b)| b.as_slice())
    }

    /// Verifies a complete signed membership and, if it is valid, for our community and newer
    /// than ours, makes it the list peers are checked against: peers not on it (or whose
    /// address or ranges it changed) are torn down, and the supernodes are asked for their
    /// records again (some may have been refused before the list arrived).
    fn accept_signed(
        &mut self,
        now: Instant,
        link: Option<usize>,
        bytes: Vec<u8>,
        out: &mut Output,
    ) -> bool {
        let Some(admin) = self.cfg.admin_key else {
            return false;
        };
        let from = link.map(|l| self.links[l].addr);
        let current = self.signed.as_ref().map(|(m, _)| m.version);
        let verdict = match Membership::verify(&bytes, &admin) {
            Err(e) => Err(format!("signed membership refused: {e}")),
            Ok(m) if m.community != self.cfg.community => Err(format!(
                "signed membership refused: it is for community '{}', not '{}'",
                m.community, self.cfg.community
            )),
            Ok(m) if current.is_some_and(|v| m.version < v) => Err(format!(
                "signed membership refused: version {} is older than version {} already seen (a rollback)",
                m.version,
                current.unwrap_or_default()
            )),
            Ok(m) if current == Some(m.version) => {
                if self.signed.as_ref().is_some_and(|(_, b)| *b == bytes) {
                    return true; // the list we have
                }
                Err(format!(
                    "signed membership refused: another list with version {} than the one already accepted",
                    m.version
                ))
            }
            Ok(m) => Ok(m),
        };
        let m = match verdict {
            Ok(m) => m,
            Err(reason) => {
                if self.membership_error.as_deref() != Some(reason.as_str()) {
                    self.events.push(Event::MembershipRefused {
                        supernode: from,
                        reason: reason.clone(),
                    });
                }
                self.membership_error = Some(reason);
                return false;
            }
        };
        // Revocation: peers the new list does not vouch for go, sessions and all.
        for p in 0..self.peers.len() {
            let Some(peer) = self.peers[p].as_ref() else {
                continue;
            };
            if m.get(&peer.key)
                .is_some_and(|s| s.matches(peer.address, &peer.allowed))
            {
                continue;
            }
            self.events.push(Event::PeerRemoved {
                peer: peer_label(peer),
                supernode: from.unwrap_or(
                    self.links
                        .first()
                        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.addr),
                ),
            });
            self.forget_peer(p);
        }
        self.events.push(Event::MembershipAccepted {
            version: m.version,
            members: m.members.len(),
            supernode: from,
        });
        self.membership_error = None;
        self.signed = Some((m, bytes));
        // Records refused while we had no (or an older) list: ask for them again.
        for l in 0..self.links.len() {
            let link = &mut self.links[l];
            link.epoch_applied = None;
            link.staging = None;
            if link.registered && !link.retired {
                self.send_control(l, &Control::SyncRequest, out);
            }
        }
        self.next_tick = self.next_tick.min(now);
        true
    }

    /// With `admin_key`: is this record what the signed membership says (key listed, same
    /// address and ranges, a MAC no other member uses)? Without: always.
    fn vouched(&self, r: &PeerRecord) -> bool {
        if self.cfg.admin_key.is_none() {
            return true;
        }
        let Some((m, _)) = &self.signed else {
            return false;
        };
        let Some(member) = m.get(&r.key) else {
            return false;
        };
        if !member.matches(r.address, &r.allowed_cidrs) {
            return false;
        }
        // A MAC another member holds would divert its frames to this one.
        let me = self.by_key.get(&r.key).copied();
        let taken = self.by_mac.get(&r.mac).is_some_and(|&q| {
            Some(q) != me && self.peers[q].as_ref().is_some_and(|x| x.mac == r.mac)
        });
        !(taken || r.mac.is_group() || r.mac == self.cfg.mac)
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Our overlay address (unspecified until a supernode assigns one, with enrolment).
    pub fn address(&self) -> IpAddr {
        self.cfg.address
    }

    /// Sets the join secret (tests and tools; normally given in [`EdgeConfig`]).
    pub fn set_join_secret(&mut self, secret: Vec<u8>) {
        self.cfg.join_secret = Some(secret);
    }

    /// Applies a new supernode list and keepalive interval (the config was edited and the
    /// daemon got SIGHUP). Supernodes that stay keep their registration; new ones are
    /// contacted at once; removed ones are dropped (their sessions closed, relays through
    /// them no longer used). Sessions with peers are not touched: a direct tunnel carries on.
    /// Returns the supernodes (added, removed).
    pub fn reload(
        &mut self,
        supernodes: &[(SocketAddr, PublicKey)],
        keepalive: Duration,
        now: Instant,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        self.cfg.keepalive = keepalive;
        self.cfg.supernodes = supernodes.to_vec();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for l in 0..self.links.len() {
            let link = &self.links[l];
            let wanted = supernodes.contains(&(link.addr, link.key));
            if link.retired != wanted {
                continue;
            }
            if wanted {
                self.links[l] = Link::new(link.addr, link.key, now);
                added.push(self.links[l].addr);
                continue;
            }
            let link = &mut self.links[l];
            link.retired = true;
            link.registered = false;
            removed.push(link.addr);
            for s in [link.session.take(), link.previous.take()] {
                Self::retire(&mut self.index, s);
            }
            Self::retire_pending(&mut self.index, link.pending.take());
            for peer in self.peers.iter_mut().flatten() {
                peer.relay_ids[l] = None;
            }
        }
        for &(addr, key) in supernodes {
            if !self.links.iter().any(|x| x.addr == addr && x.key == key) {
                self.links.push(Link::new(addr, key, now));
                for peer in self.peers.iter_mut().flatten() {
                    peer.relay_ids.push(None);
                }
                added.push(addr);
            }
        }
        self.next_tick = now;
        (added, removed)
    }

    /// The sizes of the edge's tables, by name, to check memory bounds in tests and fuzz
    /// targets: `peers` (slots), `peers_live`, `by_key`, `by_mac`, `index`, `lookups`,
    /// `events`, `last_path`, `queued` (frames waiting, all peers), `queue_max` (the longest
    /// queue), `list_chunks` (member-list chunks being assembled, all supernodes).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let live = self.peers.iter().flatten();
        vec![
            ("peers", self.peers.len()),
            ("peers_live", live.clone().count()),
            ("by_key", self.by_key.len()),
            ("by_mac", self.by_mac.len()),
            ("index", self.index.len()),
            ("lookups", self.lookups.len()),
            ("events", self.events.len()),
            ("last_path", self.last_path.len()),
            ("queued", live.clone().map(|p| p.queue.len()).sum()),
            ("queue_max", live.map(|p| p.queue.len()).max().unwrap_or(0)),
            (
                "list_chunks",
                self.links
                    .iter()
                    .filter_map(|l| l.staging.as_ref())
                    .map(|s| s.chunks.len())
                    .sum(),
            ),
        ]
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// True once at least one supernode accepted our registration.
    pub fn is_registered(&self) -> bool {
        self.links.iter().any(|l| l.registered)
    }

    /// Supernodes that have not answered anything for a while although we keep trying
    /// (outbound UDP may be blocked): the shell may then try its TCP fallback.
    pub fn silent_supernodes(&self, now: Instant) -> Vec<SocketAddr> {
        self.links
            .iter()
            .filter(|l| {
                !l.registered
                    && !l.retired
                    && l.attempts >= 3
                    && l.last_answer
                        .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
            })
            .map(|l| l.addr)
            .collect()
    }

    /// The shell has a new way to reach supernode `addr` (its TCP fallback connected):
    /// handshake again at the next timer instead of waiting out the backoff.
    pub fn retry_supernode(&mut self, addr: SocketAddr, now: Instant) {
        for l in self.links.iter_mut().filter(|l| l.addr == addr) {
            Self::retire_pending(&mut self.index, l.pending.take());
            l.next_handshake = now;
        }
        self.next_tick = self.next_tick.min(now);
    }

    /// Replaces the local endpoints announced at the next registration.
    pub fn set_local_endpoints(&mut self, eps: Vec<SocketAddr>) {
        self.cfg.local_endpoints = eps;
    }

    fn timestamp(&mut self, now: Instant) -> u64 {
        let wall = self.base_unix_micros
            + now.saturating_duration_since(self.base_instant).as_micros() as u64;
        self.last_timestamp = wall.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    fn new_index(&mut self, owner: Owner) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if i != 0 && !self.index.contains_key(&i) {
                self.index.insert(i, owner);
                return i;
            }
        }
    }

    fn retire(index: &mut HashMap<u32, Owner>, s: Option<Session>) {
        if let Some(s) = s {
            index.remove(&s.local_index);
        }
    }

    fn retire_pending(index: &mut HashMap<u32, Owner>, p: Option<Pending>) {
        if let Some(p) = p {
            index.remove(&p.local_index);
        }
    }

    fn drop_peer(&mut self, p: Option<usize>, r: DropReason) {
        self.drops.add(r);
        if let Some(peer) = p
            .and_then(|p| self.peers.get_mut(p))
            .and_then(Option::as_mut)
        {
            peer.drops.add(r);
        }
    }

    // ------------------------------------------------------------------------------------
    // Input: UDP

    /// Handles one UDP datagram from `src`. The packet is decrypted in place.
    pub fn handle_udp(&mut self, now: Instant, src: SocketAddr, pkt: &mut [u8], out: &mut Output) {
        self.handle_packet(now, Path::Direct(src), src, pkt, out);
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        path: Path,
        src: SocketAddr,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let decoded = match wire::decode(pkt) {
            Ok(p) => p,
            Err(WireError::BadVersion(_)) => return self.drops.add(DropReason::BadVersion),
            Err(WireError::Malformed) => return self.drops.add(DropReason::Malformed),
        };
        match decoded {
            Packet::Init { sender, noise } => {
                // Direct initiations prove their address under load; relayed ones are
                // vouched for by the supernode session that carried them.
                let verdict = match path {
                    Path::Direct(src) => self.guard.check(now, src, pkt, out),
                    Path::Relay { .. } => Verdict::Process {
                        end: wire::INIT_HEADER_LEN + noise.len(),
                    },
                };
                match verdict {
                    Verdict::Process { end } => {
                        let noise = pkt[wire::INIT_HEADER_LEN..end].to_vec();
                        self.on_init(now, path, sender, &noise, out)
                    }
                    Verdict::CookieSent => {}
                    Verdict::BadMac2 => self.drops.add(DropReason::BadCookie),
                }
            }
            Packet::CookieReply { receiver } => self.on_cookie(path, receiver, pkt, out),
            Packet::Resp {
                sender,
                receiver,
                noise,
            } => {
                let noise = noise.to_vec();
                self.on_response(now, path, sender, receiver, &noise, out)
            }
            Packet::Data { receiver, counter } => {
                self.on_data(now, path, receiver, counter, pkt, out)
            }
            Packet::Relay {
                receiver,
                counter,
                peer,
            } => {
                if let Path::Relay { .. } = path {
                    return self.drops.add(DropReason::Malformed);
                }
                if !self.cfg.relay {
                    // relay_policy = "direct-only": nothing goes through a supernode, either way.
                    return self.drops.add(DropReason::RelayDenied);
                }
                self.on_relay(now, src, receiver, counter, peer, pkt, out)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_relay(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        from: u32,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let Some(Owner::Link(l)) = self.index.get(&receiver).copied() else {
            return self.drops.add(DropReason::UnknownSession);
        };
        let Some(session) = self.links[l].session_for(receiver) else {
            return self.drops.add(DropReason::UnknownSession);
        };
        let inner = match session.open_relay(counter, pkt) {
            Ok(r) => r,
            Err(e) => return self.drops.add(e.into()),
        };
        self.handle_packet(
            now,
            Path::Relay { link: l, id: from },
            src,
            &mut pkt[inner],
            out,
        );
    }

    fn on_init(&mut self, now: Instant, path: Path, sender: u32, noise: &[u8], out: &mut Output) {
        let (hs, remote, payload) = match Handshake::respond_with(
            self.cfg.cipher,
            &self.cfg.private_key,
            noise,
            &mut self.rng,
        ) {
            Ok(x) => x,
            Err(_) => return self.drops.add(DropReason::HandshakeFailed),
        };
        let Some(&p) = self.by_key.get(&remote) else {
            // Not vouched for by a supernode (yet): ask, and let the initiator retry.
            self.drops.add(DropReason::UnknownPeer);
            self.lookup(now, Query::Key(remote), out);
            return;
        };
        let Ok(ts) = <[u8; 8]>::try_from(payload.get(..8).unwrap_or(&[])).map(u64::from_le_bytes)
        else {
            return self.drop_peer(Some(p), DropReason::Malformed);
        };
        let peer = self.peers[p].as_mut().expect("indexed peer exists");
        if let Some((idx, t, bytes)) = &peer.last_response {
            if *idx == sender && *t == ts {
                // The same initiation over another path: answer there too.
                let bytes = bytes.clone();
                emit(out, &mut self.links, path, |b| b.extend_from_slice(&bytes));
                return;
            }
        }
        if ts <= peer.last_init_timestamp {
            return self.drop_peer(Some(p), DropReason::Replay);
        }
        let local_index = self.new_index(Owner::Peer(p));
        let peer = self.peers[p].as_mut().expect("indexed peer exists");
        let mut msg = Vec::with_capacity(128);
        wire::put_resp_header(&mut msg, local_index, sender);
        let keys = match hs.finish_response(&[], &mut msg) {
            Ok(k) => k,
            Err(_) => {
                self.index.remove(&local_index);
                return self.drop_peer(Some(p), DropReason::HandshakeFailed);
            }
        };
        peer.last_init_timestamp = ts;
        let old = peer
            .unconfirmed
            .replace(Session::new(local_index, sender, keys, now, false));
        Self::retire(&mut self.index, old);
        emit(out, &mut self.links, path, |b| b.extend_from_slice(&msg));
        peer.last_response = Some((sender, ts, msg));
    }

    /// A busy responder wants proof of our address: send the pending initiation again with
    /// `mac2`, over the path the reply came by.
    fn on_cookie(&mut self, path: Path, receiver: u32, reply: &[u8], out: &mut Output) {
        let (responder, init) = match self.index.get(&receiver).copied() {
            Some(Owner::Peer(p)) => {
                let peer = self.peers[p].as_ref().expect("indexed peer exists");
                match peer.pending.as_ref().filter(|x| x.local_index == receiver) {
                    Some(x) => (peer.key, &x.init),
                    None => return self.drops.add(DropReason::Stale),
                }
            }
            Some(Owner::Link(l)) => {
                let link = &self.links[l];
                match link.pending.as_ref().filter(|x| x.local_index == receiver) {
                    Some(x) => (link.key, &x.init),
                    None => return self.drops.add(DropReason::Stale),
                }
            }
            None => return self.drops.add(DropReason::UnknownSession),
        };
        let Some(again) = cookie::answer(&responder, init, reply) else {
            return self.drops.add(DropReason::BadCookie);
        };
        emit(out, &mut self.links, path, |b| b.extend_from_slice(&again));
    }

    fn on_response(
        &mut self,
        now: Instant,
        path: Path,
        sender: u32,
        receiver: u32,
        noise: &[u8],
        out: &mut Output,
    ) {
        match self.index.get(&receiver).copied() {
            Some(Owner::Peer(p)) => {
                let peer = self.peers[p].as_mut().expect("indexed peer exists");
                let Some(pending) = peer.pending.take_if(|x| x.local_index == receiver) else {
                    if peer.completed_index == Some(receiver) {
                        return; // the same answer over a second path
                    }
                    return self.drop_peer(Some(p), DropReason::Stale);
                };
                peer.completed_index = Some(receiver);
                let keys = match pending.hs.finish_initiation(noise) {
                    Ok((k, _)) => k,
                    Err(_) => {
                        self.index.remove(&receiver);
                        return self.drop_peer(Some(p), DropReason::HandshakeFailed);
                    }
                };
                let old = peer.previous.take();
                peer.previous = peer
                    .current
                    .replace(Session::new(receiver, sender, keys, now, true));
                Self::retire(&mut self.index, old);
                peer.last_handshake = Some(now);
                peer.last_rx = Some(now);
                if let Path::Direct(src) = path {
                    peer.direct = Some(src);
                    peer.last_direct_rx = Some(now);
                }
                if peer.previous.is_none() {
                    self.events.push(Event::PeerUp {
                        peer: peer_label(peer),
                    });
                }
                self.flush_queue(now, p, out);
            }
            Some(Owner::Link(l)) => {
                if path != Path::Direct(self.links[l].addr) {
                    return self.drops.add(DropReason::Stale);
                }
                let link = &mut self.links[l];
                let Some(pending) = link.pending.take_if(|x| x.local_index == receiver) else {
                    return self.drops.add(DropReason::Stale);
                };
                let (keys, payload) = match pending.hs.finish_initiation(noise) {
                    Ok(x) => x,
                    Err(_) => {
                        self.index.remove(&receiver);
                        return self.drops.add(DropReason::HandshakeFailed);
                    }
                };
                let session = Session::new(receiver, sender, keys, now, true);
                link.last_answer = Some(now);
                match Control::decode(&payload) {
                    Ok(Control::RegisterAck { .. }) => {
                        let old = link.previous.take();
                        link.previous = link.session.replace(session);
                        Self::retire(&mut self.index, old);
                        link.attempts = 0;
                        let msg = Control::decode(&payload).expect("decoded above");
                        self.on_control(now, l, msg, out);
                    }
                    Ok(Control::RegisterNak { message, .. }) => {
                        self.index.remove(&receiver);
                        self.refused(now, l, message);
                    }
                    _ => {
                        self.index.remove(&receiver);
                        self.drops.add(DropReason::Malformed);
                    }
                }
            }
            None => self.drops.add(DropReason::Stale),
        }
    }

    fn refused(&mut self, now: Instant, l: usize, message: String) {
        let link = &mut self.links[l];
        link.registered = false;
        Self::retire(&mut self.index, link.session.take());
        Self::retire(&mut self.index, link.previous.take());
        link.next_handshake = now + REFUSED_RETRY;
        link.awaiting_ack = None;
        if link.error.as_deref() != Some(message.as_str()) {
            self.events.push(Event::Refused {
                supernode: link.addr,
                message: message.clone(),
            });
        }
        link.error = Some(message);
    }

    fn on_data(
        &mut self,
        now: Instant,
        path: Path,
        receiver: u32,
        counter: u64,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        match self.index.get(&receiver).copied() {
            None => {
                self.drops.add(DropReason::UnknownSession);
                // A peer uses a session we do not have: we restarted, or it missed our
                // restart. Offer a new one now rather than waiting for it to notice (one
                // handshake at a time per peer, so this cannot be used to make us flood).
                if let Some(p) = self.peer_on_path(path) {
                    let peer = self.peers[p].as_ref().expect("found");
                    let fresh = peer.current.as_ref().is_some_and(|s| s.age(now) < 2);
                    if peer.pending.is_none() && !fresh {
                        self.start_handshake(now, p, out);
                    }
                }
            }
            Some(Owner::Link(l)) => {
                if !matches!(path, Path::Direct(_)) {
                    return self.drops.add(DropReason::Malformed);
                }
                let Some(session) = self.links[l].session_for(receiver) else {
                    return self.drops.add(DropReason::Stale);
                };
                let range = match session.open_data(counter, pkt) {
                    Ok(r) => r,
                    Err(e) => return self.drops.add(e.into()),
                };
                self.links[l].last_answer = Some(now);
                match Control::decode(&pkt[range]) {
                    Ok(msg) => self.on_control(now, l, msg, out),
                    Err(_) => self.drops.add(DropReason::Malformed),
                }
            }
            Some(Owner::Peer(p)) => self.on_peer_data(now, path, p, receiver, counter, pkt, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_peer_data(
        &mut self,
        now: Instant,
        path: Path,
        p: usize,
        receiver: u32,
        counter: u64,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let peer = self.peers[p].as_mut().expect("indexed peer exists");
        let slot = if peer
            .current
            .as_ref()
            .is_some_and(|s| s.local_index == receiver)
        {
            &mut peer.current
        } else if peer
            .unconfirmed
            .as_ref()
            .is_some_and(|s| s.local_index == receiver)
        {
            &mut peer.unconfirmed
        } else if peer
            .previous
            .as_ref()
            .is_some_and(|s| s.local_index == receiver)
        {
            &mut peer.previous
        } else {
            return self.drop_peer(Some(p), DropReason::Stale);
        };
        let session = slot.as_mut().expect("slot checked above");
        if !session.usable(now) {
            return self.drop_peer(Some(p), DropReason::Expired);
        }
        let range = match session.open_data(counter, pkt) {
            Ok(r) => r,
            Err(e) => return self.drop_peer(Some(p), e.into()),
        };
        // The initiator has proved it holds the keys: the responder session goes live.
        if peer
            .unconfirmed
            .as_ref()
            .is_some_and(|s| s.local_index == receiver)
        {
            let mut s = peer.unconfirmed.take().expect("checked");
            s.confirmed = true;
            let old = peer.previous.take();
            peer.previous = peer.current.replace(s);
            Self::retire(&mut self.index, old);
            peer.last_handshake = Some(now);
            if peer.previous.is_none() {
                self.events.push(Event::PeerUp {
                    peer: peer_label(peer),
                });
            }
        }
        peer.last_rx = Some(now);
        let frame_len = range.len();
        match (frame_len, path) {
            (0, _) => {}
            (1, Path::Direct(src)) => {
                let msg = pkt[range.start];
                return self.on_edge_message(now, p, msg, src, out);
            }
            (1, Path::Relay { .. }) => {
                let msg = pkt[range.start];
                return self.on_relayed_message(now, p, msg, path, out);
            }
            (n, _) if n < eth::ETH_HEADER_LEN => {
                return self.drop_peer(Some(p), DropReason::Malformed)
            }
            _ => {
                let frame = &pkt[range];
                if let Some((ack, size)) = pmtu::parse_probe(frame) {
                    if eth::src_mac(frame) != peer.mac {
                        return self.drop_peer(Some(p), DropReason::SourceMismatch);
                    }
                    return self.on_mtu_probe(now, p, ack, size, path, out);
                }
                if let Err(r) = Self::check_frame(peer, self.cfg.mac, frame) {
                    return self.drop_peer(Some(p), r);
                }
                peer.traffic.rx_packets += 1;
                peer.traffic.rx_bytes += frame_len as u64;
                let start = out.buf.len();
                out.buf.extend_from_slice(frame);
                if self.cfg.mss_clamp {
                    let mss = self.mss_for(p);
                    pmtu::clamp_mss(&mut out.buf[start..], mss);
                }
                out.frames.push(start..out.buf.len());
            }
        }
        if let Path::Direct(src) = path {
            // Authenticated traffic straight from an endpoint we are not using (the peer is
            // new, roamed, or its NAT mapping changed): ask it for a pong, at most once a second.
            let peer = self.peers[p].as_mut().expect("exists");
            if peer.direct_active(now) != Some(src)
                && peer
                    .last_roam_probe
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                peer.last_roam_probe = Some(now);
                self.send_small(now, p, &[MSG_PROBE], Path::Direct(src), out);
            }
        }
        if !self.queue_empty(p) {
            self.flush_queue(now, p, out);
        }
    }

    /// The peer a packet came from, by its path: the relay's source id, or a direct
    /// endpoint we know for it.
    fn peer_on_path(&self, path: Path) -> Option<usize> {
        self.peers.iter().position(|x| {
            x.as_ref().is_some_and(|peer| match path {
                Path::Direct(src) => peer.direct == Some(src) || peer.endpoints.contains(&src),
                Path::Relay { link, id } => peer.relay_ids.get(link) == Some(&Some(id)),
            })
        })
    }

    /// An MTU probe from the peer (answer it over the path it came by) or the answer to ours.
    fn on_mtu_probe(
        &mut self,
        now: Instant,
        p: usize,
        ack: bool,
        size: u16,
        path: Path,
        out: &mut Output,
    ) {
        let peer = self.peers[p].as_mut().expect("exists");
        if ack {
            if let Some((_, best)) = peer.pmtu_round.as_mut() {
                *best = (*best).max(size);
            }
            return;
        }
        let frame = pmtu::probe_frame(peer.mac, self.cfg.mac, true, size, 0);
        let Some(session) = peer.current.as_mut().filter(|s| s.usable(now)) else {
            return;
        };
        emit(out, &mut self.links, path, |b| session.seal_data(&frame, b));
    }

    /// Bytes of IP and UDP header in front of a datagram to `ep`.
    fn outer_header(ep: SocketAddr) -> usize {
        if ep.is_ipv4() {
            28
        } else {
            48
        }
    }

    /// The largest frame (Ethernet header included) the direct path to `p` carries, once
    /// probed.
    fn direct_frame_limit(&self, p: usize, ep: SocketAddr) -> Option<usize> {
        let peer = self.peers[p].as_ref()?;
        let m = usize::from(peer.pmtu?);
        m.checked_sub(Self::outer_header(ep) + wire::DATA_OVERHEAD)
    }

    /// The MSS that fits both the TAP and, once probed, the direct path to `p` (IPv4 terms;
    /// `clamp_mss` takes 20 more off for IPv6).
    fn mss_for(&self, p: usize) -> u16 {
        let mut ip_mtu = self.cfg.mtu as usize;
        let peer = self.peers[p].as_ref();
        if let (Some(peer), Some(ep)) = (peer, peer.and_then(|x| x.direct)) {
            if let Some(limit) = self.direct_frame_limit(p, ep) {
                ip_mtu = ip_mtu.min(limit.saturating_sub(eth::ETH_HEADER_LEN));
            }
            let _ = peer;
        }
        ip_mtu.saturating_sub(40).clamp(536, 65_495) as u16
    }

    /// Sends one probe of each candidate size over the direct path to `p`.
    fn start_mtu_round(&mut self, now: Instant, p: usize, ep: SocketAddr, out: &mut Output) {
        let hdr = Self::outer_header(ep) + wire::DATA_OVERHEAD;
        let largest = self.cfg.mtu as usize + eth::ETH_HEADER_LEN + hdr;
        let mut sizes: Vec<u16> = std::iter::once(largest.min(usize::from(u16::MAX)) as u16)
            .chain(pmtu::CANDIDATES)
            .filter(|s| usize::from(*s) <= largest && usize::from(*s) > hdr + 23)
            .collect();
        sizes.dedup();
        // Smallest first: each probe then leaves as a datagram of its own (a shell that
        // batches equal-or-shrinking datagrams into one UDP GSO send cannot merge them).
        sizes.reverse();
        let (mac, our_mac) = {
            let peer = self.peers[p].as_mut().expect("exists");
            peer.pmtu_round = Some((now, 0));
            peer.pmtu_next = Some(now + PMTU_INTERVAL);
            (peer.mac, self.cfg.mac)
        };
        for size in sizes {
            let frame = pmtu::probe_frame(mac, our_mac, false, size, usize::from(size) - hdr);
            let peer = self.peers[p].as_mut().expect("exists");
            let Some(session) = peer.current.as_mut().filter(|s| s.usable(now)) else {
                return;
            };
            emit(out, &mut self.links, Path::Direct(ep), |b| {
                session.seal_data(&frame, b)
            });
        }
    }

    /// Ends a probe round after [`PMTU_ROUND`]: the largest size acknowledged is the path's MTU.
    fn finish_mtu_round(&mut self, now: Instant, p: usize) {
        let peer = self.peers[p].as_mut().expect("exists");
        let Some((started, best)) = peer.pmtu_round else {
            return;
        };
        if now.saturating_duration_since(started) < PMTU_ROUND {
            return;
        }
        peer.pmtu_round = None;
        if best == 0 {
            // Nothing came back (loss, or the peer is busy): try again soon.
            peer.pmtu_next = Some(now + PMTU_RETRY);
            return;
        }
        if peer.pmtu != Some(best) {
            peer.pmtu = Some(best);
            let hdr = peer.direct.map_or(28, Self::outer_header) + wire::DATA_OVERHEAD;
            let inner = usize::from(best).saturating_sub(hdr + eth::ETH_HEADER_LEN) as u16;
            self.events.push(Event::PathMtu {
                peer: peer_label(peer),
                mtu: best,
                inner,
            });
        }
    }

    /// A probe or pong that came straight from `src`.
    fn on_edge_message(
        &mut self,
        now: Instant,
        p: usize,
        msg: u8,
        src: SocketAddr,
        out: &mut Output,
    ) {
        match msg {
            MSG_PROBE => {
                self.send_small(now, p, &[MSG_PONG], Path::Direct(src), out);
                // Probe back, so that our side learns the path works too (one round trip).
                let peer = self.peers[p].as_mut().expect("exists");
                if peer.direct_active(now) != Some(src)
                    && peer.last_roam_probe.is_none_or(|t| {
                        now.saturating_duration_since(t) >= Duration::from_millis(200)
                    })
                {
                    peer.last_roam_probe = Some(now);
                    self.send_small(now, p, &[MSG_PROBE], Path::Direct(src), out);
                }
            }
            MSG_PONG => {
                let peer = self.peers[p].as_mut().expect("exists");
                if let (true, Some(sent)) = (peer.awaiting_pong, peer.last_probe) {
                    peer.rtt = Some(now.saturating_duration_since(sent));
                    peer.awaiting_pong = false;
                }
                peer.direct = Some(src);
                peer.last_direct_rx = Some(now);
            }
            _ => {} // a later version's message: ignore
        }
    }

    /// A one-byte message that came through a relay.
    fn on_relayed_message(
        &mut self,
        now: Instant,
        p: usize,
        msg: u8,
        path: Path,
        out: &mut Output,
    ) {
        match msg {
            MSG_RELAY_PING => {
                self.send_small(now, p, &[MSG_RELAY_PONG], path, out);
            }
            MSG_RELAY_PONG => {
                let peer = self.peers[p].as_mut().expect("exists");
                if let Some(sent) = peer.relay_ping.take() {
                    peer.relay_rtt = Some(now.saturating_duration_since(sent));
                }
            }
            _ => {} // a later version's message: ignore
        }
    }

    fn queue_empty(&self, p: usize) -> bool {
        self.peers[p].as_ref().is_none_or(|x| x.queue.is_empty())
    }

    /// Anti-spoofing: the frame must come from the peer's MAC and from an address it owns,
    /// and be addressed to us or to a group.
    fn check_frame(peer: &Peer, our_mac: Mac, frame: &[u8]) -> Result<(), DropReason> {
        if eth::src_mac(frame) != peer.mac {
            return Err(DropReason::SourceMismatch);
        }
        // An ARP message must name the sender's own MAC too, or it could point a neighbour
        // entry at someone else's.
        if eth::arp_sender_mac(frame).is_some_and(|m| m != peer.mac) {
            return Err(DropReason::SourceMismatch);
        }
        let dst = eth::dst_mac(frame);
        if !dst.is_group() && dst != our_mac {
            return Err(DropReason::NotForUs);
        }
        match eth::source_ip(frame) {
            SourceIp::Addr(ip) if !peer.allows(ip) => Err(DropReason::SourceMismatch),
            SourceIp::Addr(_) | SourceIp::None => Ok(()),
            SourceIp::Truncated => Err(DropReason::Malformed),
            SourceIp::Unsupported => Err(DropReason::Unsupported),
        }
    }

    fn on_control(&mut self, now: Instant, l: usize, msg: Control, out: &mut Output) {
        match msg {
            Control::RegisterAck {
                id,
                observed,
                epoch,
                interval,
                relay,
                membership,
                assigned,
            } => {
                if let Some((ip, prefix)) = assigned {
                    if ip != self.cfg.address {
                        self.cfg.address = ip;
                        self.events.push(Event::AddressAssigned {
                            address: ip,
                            prefix,
                            supernode: self.links[l].addr,
                        });
                    }
                }
                // A newer signed membership than ours: ask for it first (the records that
                // follow are checked against it).
                let have = self.signed.as_ref().map_or(0, |(m, _)| m.version);
                if self.cfg.admin_key.is_some()
                    && membership > have
                    && self.links[l].signed_refused != Some(membership)
                {
                    self.send_control(l, &Control::SignedListRequest, out);
                }
                let link = &mut self.links[l];
                let first = !link.registered;
                link.relays = relay;
                link.registered = true;
                link.id = Some(id);
                link.observed = Some(observed);
                link.error = None;
                link.interval = Duration::from_secs(u64::from(interval.clamp(1, 3600)));
                link.awaiting_ack = None;
                link.last_ack = Some(now);
                link.next_register = now + link.interval;
                if first {
                    // A new registration (ours or a restarted supernode's): epochs from
                    // before mean nothing now, so start from a whole list.
                    link.epoch_applied = None;
                    link.staging = None;
                    link.sync_sent = None;
                    link.registered_at = Some(now);
                    self.events.push(Event::Registered {
                        supernode: link.addr,
                        observed,
                    });
                }
                if link.epoch_applied != Some(epoch) {
                    self.request_sync(now, l, out);
                }
            }
            Control::RegisterNak { message, .. } => self.refused(now, l, message),
            Control::PeerUpdate {
                from,
                epoch,
                records,
                gone,
            } => {
                let link = &mut self.links[l];
                if link.epoch_applied == Some(from) {
                    link.epoch_applied = Some(epoch);
                    for r in records {
                        self.upsert_peer(now, l, r, out);
                    }
                    // Not registered with this supernode any more: it cannot relay to them.
                    // Sessions stay, as for a peer missing from a whole list.
                    for key in gone {
                        if let Some(&p) = self.by_key.get(&key) {
                            self.peers[p]
                                .as_mut()
                                .expect("indexed peer exists")
                                .unlisted_by(l);
                        }
                    }
                } else if link.epoch_applied != Some(epoch) {
                    // We missed a step (a lost update) or a whole list is on its way.
                    self.request_sync(now, l, out);
                }
            }
            Control::PeerList {
                epoch,
                chunk,
                chunks,
                records,
            } => {
                let chunks = usize::from(chunks.max(1));
                let chunk = usize::from(chunk);
                if chunk >= chunks {
                    return self.drops.add(DropReason::Malformed);
                }
                let link = &mut self.links[l];
                let staging = link.staging.get_or_insert_with(|| ListStaging {
                    epoch,
                    chunks: Vec::new(),
                });
                if staging.epoch != epoch || staging.chunks.len() != chunks {
                    *staging = ListStaging {
                        epoch,
                        chunks: vec![None; chunks],
                    };
                }
                staging.chunks[chunk] = Some(records);
                if staging.chunks.iter().all(Option::is_some) {
                    let staging = link.staging.take().expect("present");
                    link.epoch_applied = Some(staging.epoch);
                    let all: Vec<PeerRecord> =
                        staging.chunks.into_iter().flatten().flatten().collect();
                    self.apply_list(now, l, all, out);
                }
            }
            Control::LookupReply {
                record: Some(r), ..
            } => {
                self.upsert_peer(now, l, r, out);
            }
            Control::PeerNotify { record } => {
                let key = record.key;
                self.upsert_peer(now, l, record, out);
                // Someone is trying to reach us: open our side of the path now. Without a
                // session, and without a relay to carry its handshake, we start one ourselves:
                // our initiation opens our NAT towards the peer (the hole punch).
                if let Some(&p) = self.by_key.get(&key) {
                    let peer = self.peers[p].as_ref().expect("indexed peer exists");
                    if peer.current.is_some() {
                        self.probe(now, p, out);
                    } else if peer.pending.is_none()
                        && relay_path(peer, &self.links, self.cfg.relay).is_none()
                    {
                        self.start_handshake(now, p, out);
                    }
                }
            }
            Control::PeerRemoved { keys } => {
                for key in keys {
                    let Some(&p) = self.by_key.get(&key) else {
                        continue;
                    };
                    let peer = self.peers[p].as_ref().expect("indexed peer exists");
                    self.events.push(Event::PeerRemoved {
                        peer: peer_label(peer),
                        supernode: self.links[l].addr,
                    });
                    self.forget_peer(p);
                }
            }
            Control::SignedList {
                version,
                chunk,
                chunks,
                data,
            } => self.on_signed_chunk(now, l, version, chunk, chunks, data, out),
            Control::LookupReply { record: None, .. }
            | Control::Register { .. }
            | Control::SignedListRequest
            | Control::SyncRequest
            | Control::Lookup { .. }
            | Control::Unknown(_) => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_signed_chunk(
        &mut self,
        now: Instant,
        l: usize,
        version: u64,
        chunk: u16,
        chunks: u16,
        data: Vec<u8>,
        out: &mut Output,
    ) {
        if self.cfg.admin_key.is_none() {
            return;
        }
        let (chunk, chunks) = (usize::from(chunk), usize::from(chunks));
        if chunks == 0 || chunk >= chunks || chunks > MAX_CHUNKS {
            return self.drops.add(DropReason::Malformed);
        }
        let link = &mut self.links[l];
        let staging = link.signed_staging.get_or_insert_with(|| SignedStaging {
            version,
            chunks: Vec::new(),
            bytes: 0,
        });
        if staging.version != version || staging.chunks.len() != chunks {
            *staging = SignedStaging {
                version,
                chunks: vec![None; chunks],
                bytes: 0,
            };
        }
        if let Some(old) = &staging.chunks[chunk] {
            staging.bytes -= old.len();
        }
        staging.bytes += data.len();
        if staging.bytes > MAX_MEMBERSHIP_BYTES {
            link.signed_staging = None;
            return self.drops.add(DropReason::Malformed);
        }
        staging.chunks[chunk] = Some(data);
        if staging.chunks.iter().all(Option::is_some) {
            let staging = link.signed_staging.take().expect("present");
            let bytes: Vec<u8> = staging.chunks.into_iter().flatten().flatten().collect();
            if !self.accept_signed(now, Some(l), bytes, out) {
                // Not asked for again from this supernode until it offers another version.
                self.links[l].signed_refused = Some(version);
            }
        }
    }

    fn apply_list(&mut self, now: Instant, l: usize, records: Vec<PeerRecord>, out: &mut Output) {
        let listed: std::collections::HashSet<PublicKey> = records.iter().map(|r| r.key).collect();
        for r in records {
            self.upsert_peer(now, l, r, out);
        }
        // A supernode that no longer lists a peer cannot relay to it. Its session, if any,
        // stays: a supernode restart must not cut tunnels that work without it.
        for peer in self.peers.iter_mut().flatten() {
            if !listed.contains(&peer.key) {
                peer.unlisted_by(l);
            }
        }
    }

    fn upsert_peer(&mut self, now: Instant, l: usize, r: PeerRecord, out: &mut Output) {
        if r.key == self.public {
            return;
        }
        if !self.vouched(&r) {
            let p = self.by_key.get(&r.key).copied();
            return self.drop_peer(p, DropReason::NotSigned);
        }
        // A new peer, or a new MAC for a known one (a restart with another `mac`, a rotated
        // key): tell our kernel, whose neighbour entry for that address may point at a MAC
        // nobody owns any more. Without this it keeps it until the entry goes stale (~15 s).
        let known_mac = self
            .by_key
            .get(&r.key)
            .and_then(|&p| self.peers[p].as_ref())
            .map(|p| p.mac);
        if known_mac != Some(r.mac) {
            if let IpAddr::V4(ip) = r.address {
                let start = out.buf.len();
                out.buf.extend_from_slice(&eth::gratuitous_arp(r.mac, ip));
                out.frames.push(start..out.buf.len());
            }
        }
        let nlinks = self.links.len();
        let p = match self.by_key.get(&r.key) {
            Some(&p) => p,
            None => {
                let peer = Peer {
                    key: r.key,
                    name: String::new(),
                    address: r.address,
                    mac: r.mac,
                    instance: r.instance,
                    allowed: Vec::new(),
                    endpoints: Vec::new(),
                    relay_ids: vec![None; nlinks],
                    current: None,
                    previous: None,
                    unconfirmed: None,
                    pending: None,
                    last_response: None,
                    last_init_timestamp: 0,
                    completed_index: None,
                    direct: None,
                    last_direct_rx: None,
                    last_roam_probe: None,
                    last_rx: None,
                    last_tx: None,
                    last_probe: None,
                    awaiting_pong: false,
                    rtt: None,
                    relay_ping: None,
                    last_relay_ping: None,
                    relay_rtt: None,
                    pmtu: None,
                    pmtu_round: None,
                    pmtu_next: None,
                    last_handshake: None,
                    queue: VecDeque::new(),
                    traffic: Traffic::default(),
                    drops: DropCounters::default(),
                    created: now,
                };
                let p = match self.peers.iter().position(Option::is_none) {
                    Some(i) => {
                        self.peers[i] = Some(peer);
                        i
                    }
                    None => {
                        self.peers.push(Some(peer));
                        self.peers.len() - 1
                    }
                };
                self.by_key.insert(r.key, p);
                self.by_mac.insert(r.mac, p);
                p
            }
        };
        let peer = self.peers[p].as_mut().expect("indexed peer exists");
        if r.instance != peer.instance {
            // The peer restarted: its sessions died with it. Drop ours so that the next frame
            // starts a handshake instead of feeding a session nobody can read.
            peer.instance = r.instance;
            for s in [
                peer.current.take(),
                peer.previous.take(),
                peer.unconfirmed.take(),
            ] {
                Self::retire(&mut self.index, s);
            }
            peer.direct = None;
            peer.last_direct_rx = None;
        }
        if peer.mac != r.mac {
            if self.by_mac.get(&peer.mac) == Some(&p) {
                self.by_mac.remove(&peer.mac);
            }
            peer.mac = r.mac;
        }
        self.by_mac.insert(r.mac, p);
        peer.name = r.name;
        peer.address = r.address;
        peer.allowed = r.allowed_cidrs;
        peer.endpoints = r.endpoints;
        peer.relay_ids[l] = Some(r.id);
    }

    // ------------------------------------------------------------------------------------
    // Input: frames from the TAP device

    /// Handles one Ethernet frame read from the TAP device.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8], out: &mut Output) {
        if frame.len() < eth::ETH_HEADER_LEN {
            return self.drops.add(DropReason::Malformed);
        }
        // A TCP SYN (rare) gets its MSS clamped to what the overlay carries: a copy, so that
        // the common path stays copy-free.
        if self.cfg.mss_clamp && is_tcp_syn(frame) {
            let mut copy = frame.to_vec();
            let p = self.by_mac.get(&eth::dst_mac(frame)).copied();
            let mss = p.map_or_else(
                || {
                    (self.cfg.mtu as usize)
                        .saturating_sub(40)
                        .clamp(536, 65_495) as u16
                },
                |p| self.mss_for(p),
            );
            if pmtu::clamp_mss(&mut copy, mss) {
                return self.handle_frame_unclamped(now, &copy, out);
            }
        }
        self.handle_frame_unclamped(now, frame, out)
    }

    fn handle_frame_unclamped(&mut self, now: Instant, frame: &[u8], out: &mut Output) {
        let dst = eth::dst_mac(frame);
        if dst.is_group() {
            if self.cfg.neighbor_suppression {
                if let Some(q) = neighbor::question(frame) {
                    if let Some(mac) = self.owner_of(q.target()) {
                        let start = out.buf.len();
                        out.buf.extend_from_slice(&neighbor::answer(&q, mac));
                        out.frames.push(start..out.buf.len());
                        self.neighbor_answered += 1;
                        return;
                    }
                }
            }
            for p in 0..self.peers.len() {
                if self.peers[p].is_some() {
                    self.flooded_frames += 1;
                    self.send_frame(now, p, frame, out);
                }
            }
        } else if let Some(&p) = self.by_mac.get(&dst) {
            self.send_frame(now, p, frame, out);
        } else {
            self.drops.add(DropReason::NoRoute);
            self.lookup(now, Query::Mac(dst), out);
        }
    }

    /// The MAC of the member whose own address `ip` is (see [`crate::neighbor`]).
    fn owner_of(&self, ip: IpAddr) -> Option<Mac> {
        self.peers.iter().flatten().find_map(|peer| {
            let own = peer.address == ip
                || match ip {
                    IpAddr::V6(v6) => {
                        neighbor::link_local(peer.mac) == v6
                            || peer
                                .allowed
                                .iter()
                                .any(|n| n.prefix_len() == 128 && n.addr() == ip)
                    }
                    IpAddr::V4(_) => false,
                };
            own.then_some(peer.mac)
        })
    }

    fn send_frame(&mut self, now: Instant, p: usize, frame: &[u8], out: &mut Output) {
        let peer = self.peers[p].as_mut().expect("caller checked");
        let ready = peer.current.as_ref().is_some_and(|s| s.usable(now));
        if !ready {
            if peer.queue.len() >= QUEUE_LIMIT {
                peer.queue.pop_front();
                self.drops.add(DropReason::QueueFull);
            }
            let peer = self.peers[p].as_mut().expect("caller checked");
            peer.queue.push_back(frame.to_vec());
            if peer.pending.is_none() {
                self.start_handshake(now, p, out);
            }
            return;
        }
        let Some(path) = choose_path(peer, &self.links, now, self.cfg.relay) else {
            return self.drop_peer(Some(p), DropReason::NoRoute);
        };
        if let Path::Direct(ep) = path {
            if let Some(limit) = self.direct_frame_limit(p, ep).filter(|l| frame.len() > *l) {
                // Too large for the path: tell the sender (ICMP) instead of losing it. A
                // packet that may be fragmented goes on; the underlay fragments it.
                let ip_mtu = limit.saturating_sub(eth::ETH_HEADER_LEN) as u16;
                if let Some(answer) = pmtu::too_big_answer(frame, ip_mtu) {
                    let start = out.buf.len();
                    out.buf.extend_from_slice(&answer);
                    out.frames.push(start..out.buf.len());
                    return self.drop_peer(Some(p), DropReason::TooBig);
                }
            }
        }
        let peer = self.peers[p].as_mut().expect("caller checked");
        let session = peer.current.as_mut().expect("ready");
        if emit(out, &mut self.links, path, |b| session.seal_data(frame, b)) {
            peer.traffic.tx_packets += 1;
            peer.traffic.tx_bytes += frame.len() as u64;
            peer.last_tx = Some(now);
        } else {
            self.drop_peer(Some(p), DropReason::NoRoute);
        }
    }

    /// Emits a `PathChanged` event when the path to `p` changed (checked once per tick, not
    /// per packet).
    fn note_path(&mut self, now: Instant, p: usize) {
        let peer = self.peers[p].as_ref().expect("caller checked");
        let silent = peer
            .last_rx
            .map(|t| now.saturating_duration_since(t))
            .filter(|d| *d >= DEAD_AFTER);
        if let Some(silent) = silent {
            if self.last_path.get(&p) != Some(&"down") {
                self.last_path.insert(p, "down");
                self.events.push(Event::PeerDown {
                    peer: peer_label(peer),
                    silent_secs: silent.as_secs(),
                });
            }
            return;
        }
        let (path, endpoint) = match choose_path(peer, &self.links, now, self.cfg.relay) {
            Some(Path::Direct(ep)) if peer.direct_active(now).is_some() => ("direct", Some(ep)),
            Some(Path::Relay { link, .. }) => ("relay", Some(self.links[link].addr)),
            _ => ("none", None),
        };
        if self.last_path.get(&p) != Some(&path) && path != "none" {
            self.last_path.insert(p, path);
            self.events.push(Event::PathChanged {
                peer: peer_label(peer),
                path,
                endpoint,
            });
        }
    }

    fn flush_queue(&mut self, now: Instant, p: usize, out: &mut Output) {
        let queued = std::mem::take(&mut self.peers[p].as_mut().expect("exists").queue);
        if queued.is_empty() {
            // Confirm a fresh initiator session with a keepalive.
            if let Some(path) = choose_path(
                self.peers[p].as_ref().expect("exists"),
                &self.links,
                now,
                self.cfg.relay,
            ) {
                self.send_keepalive(now, p, path, out);
            }
        }
        for f in queued {
            self.send_frame(now, p, &f, out);
        }
    }

    fn send_keepalive(&mut self, now: Instant, p: usize, path: Path, out: &mut Output) {
        if self.send_small(now, p, &[], path, out) {
            self.peers[p].as_mut().expect("caller checked").last_tx = Some(now);
        }
    }

    /// Sends a keepalive (empty) or a one-byte probe/pong on the current session; says
    /// whether it went out. It does not count as traffic on the peer's path (`last_tx`): a
    /// relayed peer is probed at endpoints that may never answer, and those probes must not
    /// stand in for the keepalives that travel through the relay.
    fn send_small(
        &mut self,
        now: Instant,
        p: usize,
        payload: &[u8],
        path: Path,
        out: &mut Output,
    ) -> bool {
        let peer = self.peers[p].as_mut().expect("caller checked");
        let Some(session) = peer.current.as_mut().filter(|s| s.usable(now)) else {
            return false;
        };
        emit(out, &mut self.links, path, |b| {
            session.seal_data(payload, b)
        })
    }

    /// Probes straight to each of the peer's endpoints: the relay-to-direct upgrade and the
    /// NAT hole punch. Each endpoint that works answers with a pong.
    fn probe(&mut self, now: Instant, p: usize, out: &mut Output) {
        let peer = self.peers[p].as_mut().expect("caller checked");
        peer.last_probe = Some(now);
        peer.awaiting_pong = true;
        let eps: Vec<SocketAddr> = peer.endpoints.iter().copied().take(4).collect();
        for ep in eps {
            self.send_small(now, p, &[MSG_PROBE], Path::Direct(ep), out);
        }
    }

    /// Asks supernode `l` for the whole member list, at most once per [`SYNC_RETRY`] (a
    /// burst of updates we cannot apply must not become a burst of whole lists).
    fn request_sync(&mut self, now: Instant, l: usize, out: &mut Output) {
        let link = &mut self.links[l];
        if link
            .sync_sent
            .is_some_and(|t| now.saturating_duration_since(t) < SYNC_RETRY)
        {
            return;
        }
        link.sync_sent = Some(now);
        self.send_control(l, &Control::SyncRequest, out);
    }

    fn send_control(&mut self, l: usize, msg: &Control, out: &mut Output) {
        let link = &mut self.links[l];
        let Some(session) = link.session.as_mut() else {
            return;
        };
        let start = out.buf.len();
        session.seal_data(&msg.encode(), &mut out.buf);
        out.transmit_from(start, link.addr);
    }

    /// The member-list epoch our copy from supernode `l` is at.
    #[cfg(test)]
    pub(crate) fn test_epoch(&self, l: usize) -> Option<u64> {
        self.links[l].epoch_applied
    }

    #[cfg(test)]
    pub(crate) fn test_send_control(&mut self, l: usize, msg: &Control, out: &mut Output) {
        self.send_control(l, msg, out);
    }

    #[cfg(test)]
    pub(crate) fn test_open_control(&mut self, pkt: &mut [u8]) -> Option<Control> {
        let Ok(Packet::Data { receiver, counter }) = wire::decode(pkt) else {
            return None;
        };
        let link = self.links.iter_mut().find(|l| {
            l.session
                .as_ref()
                .is_some_and(|s| s.local_index == receiver)
        })?;
        let r = link.session.as_mut()?.open_data(counter, pkt).ok()?;
        Control::decode(&pkt[r]).ok()
    }

    fn lookup(&mut self, now: Instant, query: Query, out: &mut Output) {
        if self
            .lookups
            .get(&query)
            .is_some_and(|t| now.saturating_duration_since(*t) < Duration::from_secs(1))
        {
            return;
        }
        if self.lookups.len() > 1024 {
            self.lookups
                .retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(1));
        }
        self.lookups.insert(query, now);
        let txid = self.next_txid;
        self.next_txid = self.next_txid.wrapping_add(1);
        for l in 0..self.links.len() {
            if self.links[l].registered {
                self.send_control(l, &Control::Lookup { txid, query }, out);
            }
        }
    }

    fn start_handshake(&mut self, now: Instant, p: usize, out: &mut Output) {
        let ts = self.timestamp(now);
        let local_index = self.new_index(Owner::Peer(p));
        let peer = self.peers[p].as_mut().expect("caller checked");
        let mut msg = Vec::with_capacity(160);
        wire::put_init_header(&mut msg, local_index);
        let hs = match Handshake::initiate_with(
            self.cfg.cipher,
            &self.cfg.private_key,
            &peer.key,
            &ts.to_le_bytes(),
            &mut msg,
            &mut self.rng,
        ) {
            Ok(hs) => hs,
            Err(_) => {
                self.index.remove(&local_index);
                return;
            }
        };
        let attempts = peer.pending.as_ref().map_or(0, |x| x.attempts + 1);
        let old = peer.pending.replace(Pending {
            local_index,
            hs,
            sent: now,
            attempts,
            init: msg.clone(),
        });
        Self::retire_pending(&mut self.index, old);
        // Every path at once: each direct endpoint, and one supernode relay. The responder
        // answers each copy over the path it came by; the first answer wins.
        let mut paths: Vec<Path> = peer
            .endpoints
            .iter()
            .take(4)
            .map(|e| Path::Direct(*e))
            .collect();
        if let Some(d) = peer.direct.filter(|d| !peer.endpoints.contains(d)) {
            paths.push(Path::Direct(d));
        }
        let key = peer.key;
        paths.extend(relay_path(peer, &self.links, self.cfg.relay));
        for path in paths {
            emit(out, &mut self.links, path, |b| b.extend_from_slice(&msg));
        }
        // Ask the supernode to tell the peer about us (fresh endpoints on both sides).
        self.lookup(now, Query::Key(key), out);
    }

    fn start_link_handshake(&mut self, now: Instant, l: usize, out: &mut Output) {
        let ts = self.timestamp(now);
        let local_index = self.new_index(Owner::Link(l));
        let register = self.register_message(ts);
        let link = &mut self.links[l];
        let start = out.buf.len();
        wire::put_init_header(&mut out.buf, local_index);
        // Padded (decoders ignore trailing bytes) so that a supernode's refusal, which is
        // never larger than the initiation it answers, has room for its whole explanation.
        let mut payload = register.encode();
        payload.resize(payload.len().max(REGISTER_INIT_PAYLOAD_MIN), 0);
        let hs = match Handshake::initiate_with(
            Cipher::ChaCha20Poly1305,
            &self.cfg.private_key,
            &link.key,
            &payload,
            &mut out.buf,
            &mut self.rng,
        ) {
            Ok(hs) => hs,
            Err(_) => {
                out.buf.truncate(start);
                self.index.remove(&local_index);
                return;
            }
        };
        out.transmit_from(start, link.addr);
        link.attempts += 1;
        let old = link.pending.replace(Pending {
            local_index,
            hs,
            sent: now,
            attempts: link.attempts,
            init: out.buf[start..].to_vec(),
        });
        Self::retire_pending(&mut self.index, old);
        link.next_handshake = now + backoff(link.attempts);
        if link.attempts >= 4 && link.error.is_none() {
            link.error = Some(format!(
                "no answer from the supernode after {} handshake attempts: check that it runs, that its \
                 `public_key` in this config is right, and that UDP to it is not blocked",
                link.attempts
            ));
        }
    }

    fn register_message(&mut self, ts: u64) -> Control {
        Control::Register {
            max_version: wire::VERSION,
            community: self.cfg.community.clone(),
            address: self.cfg.address,
            mac: self.cfg.mac,
            instance: self.instance,
            timestamp: ts,
            endpoints: self.cfg.local_endpoints.clone(),
            cipher: self.cfg.cipher.code(),
            join: self
                .cfg
                .join_secret
                .as_ref()
                .map(|s| crate::control::join_proof(s, &self.public, &self.cfg.community, ts)),
        }
    }

    // ------------------------------------------------------------------------------------
    // Timers

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        for l in 0..self.links.len() {
            self.link_timers(now, l, out);
        }
        for p in 0..self.peers.len() {
            if self.peers[p].is_some() {
                self.peer_timers(now, p, out);
            }
        }
    }

    fn link_timers(&mut self, now: Instant, l: usize, out: &mut Output) {
        let link = &mut self.links[l];
        if link.retired {
            return;
        }
        if link.session.as_ref().is_some_and(|s| !s.usable(now)) {
            Self::retire(&mut self.index, link.session.take());
            link.registered = false;
        }
        if let Some(since) = link.awaiting_ack {
            if now.saturating_duration_since(since) >= LINK_LOST {
                // The supernode restarted or the path broke: start over.
                link.awaiting_ack = None;
                if link.registered {
                    link.registered = false;
                    self.events.push(Event::LinkLost {
                        supernode: link.addr,
                    });
                }
                Self::retire(&mut self.index, link.session.take());
                Self::retire(&mut self.index, link.previous.take());
                link.next_handshake = now;
            } else if now.saturating_duration_since(link.last_register_sent) >= ACK_RETRY {
                self.send_register(now, l, out);
            }
        } else if link.session.is_some() && link.registered && now >= link.next_register {
            self.links[l].awaiting_ack = Some(now);
            self.send_register(now, l, out);
        }
        let link = &self.links[l];
        let wants_session =
            link.session.is_none() || link.session.as_ref().is_some_and(|s| s.wants_rekey(now));
        let retry_due = match &link.pending {
            Some(p) => now.saturating_duration_since(p.sent) >= backoff(p.attempts),
            None => now >= link.next_handshake,
        };
        if wants_session && retry_due {
            self.start_link_handshake(now, l, out);
        }
    }

    fn send_register(&mut self, now: Instant, l: usize, out: &mut Output) {
        let ts = self.timestamp(now);
        let msg = self.register_message(ts);
        self.links[l].last_register_sent = now;
        self.send_control(l, &msg, out);
    }

    fn peer_timers(&mut self, now: Instant, p: usize, out: &mut Output) {
        let our_key = self.public;
        let keepalive = self.cfg.keepalive;
        let peer = self.peers[p].as_mut().expect("caller checked");
        // Expire sessions.
        if peer.current.as_ref().is_some_and(|s| !s.usable(now)) {
            Self::retire(&mut self.index, peer.current.take());
        }
        if peer
            .previous
            .as_ref()
            .is_some_and(|s| s.age(now) >= REJECT_AFTER_SECS)
        {
            Self::retire(&mut self.index, peer.previous.take());
        }
        if peer
            .unconfirmed
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.created) >= UNCONFIRMED_EXPIRY)
        {
            Self::retire(&mut self.index, peer.unconfirmed.take());
        }
        // Forget peers nobody lists any more and that went quiet.
        let quiet_since = peer.last_rx.unwrap_or(peer.created);
        if !peer.listed() && now.saturating_duration_since(quiet_since) >= PEER_EXPIRY {
            return self.forget_peer(p);
        }
        // Handshakes: the side with the lower key brings sessions up eagerly; either side
        // does when it has frames waiting; the initiator rekeys, the responder only if the
        // initiator is late.
        let eager = our_key < peer.key && peer.listed();
        let need = match &peer.current {
            None => eager || !peer.queue.is_empty(),
            Some(s) => {
                let age = s.age(now);
                (s.initiator && s.wants_rekey(now)) || age >= REKEY_AFTER_SECS + 30
            }
        };
        let due = match &peer.pending {
            Some(h) => now.saturating_duration_since(h.sent) >= backoff(h.attempts),
            None => true,
        };
        if need && due {
            return self.start_handshake(now, p, out);
        }
        if !need && peer.pending.is_some() && peer.current.is_some() {
            Self::retire_pending(&mut self.index, peer.pending.take());
        }
        // Keepalives and probes.
        let Some(s) = peer.current.as_ref() else {
            return;
        };
        if !s.confirmed {
            return;
        }
        // Direct: a probe every keepalive interval, whatever else is sent, so that pongs keep
        // proving the path (and hold NAT mappings open). Relayed: probe every endpoint every
        // PROBE_INTERVAL, and keep the session alive through the relay.
        let direct = peer.direct_active(now);
        let interval = if direct.is_some() {
            keepalive
        } else {
            PROBE_INTERVAL
        };
        if peer
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
        {
            match direct {
                Some(ep) => {
                    peer.last_probe = Some(now);
                    peer.awaiting_pong = true;
                    self.send_small(now, p, &[MSG_PROBE], Path::Direct(ep), out);
                }
                None if !peer.endpoints.is_empty() => self.probe(now, p, out),
                None => {}
            }
        }
        // Path MTU: probe a direct path when it comes up and every PMTU_INTERVAL.
        self.finish_mtu_round(now, p);
        let peer = self.peers[p].as_ref().expect("exists");
        if let Some(ep) = direct {
            if peer.pmtu_round.is_none() && peer.pmtu_next.is_none_or(|t| now >= t) {
                self.start_mtu_round(now, p, ep, out);
            }
        }
        // Relayed: a ping through the relay every keepalive interval, whatever else is sent
        // (the relayed path's RTT); it is the keepalive too.
        let peer = self.peers[p].as_ref().expect("exists");
        if direct.is_none()
            && peer
                .last_relay_ping
                .is_none_or(|t| now.saturating_duration_since(t) >= keepalive)
        {
            if let Some(path @ Path::Relay { .. }) = relay_path(peer, &self.links, self.cfg.relay) {
                if self.send_small(now, p, &[MSG_RELAY_PING], path, out) {
                    let peer = self.peers[p].as_mut().expect("exists");
                    peer.last_tx = Some(now);
                    peer.last_relay_ping = Some(now);
                    peer.relay_ping = Some(now);
                }
            }
        }
        let peer = self.peers[p].as_ref().expect("exists");
        if direct.is_none()
            && peer
                .last_tx
                .is_none_or(|t| now.saturating_duration_since(t) >= keepalive)
        {
            if let Some(path) = choose_path(peer, &self.links, now, self.cfg.relay) {
                self.send_keepalive(now, p, path, out);
            }
        }
        self.note_path(now, p);
    }

    fn forget_peer(&mut self, p: usize) {
        let Some(mut peer) = self.peers[p].take() else {
            return;
        };
        for s in [
            peer.current.take(),
            peer.previous.take(),
            peer.unconfirmed.take(),
        ] {
            Self::retire(&mut self.index, s);
        }
        Self::retire_pending(&mut self.index, peer.pending.take());
        self.by_key.remove(&peer.key);
        if self.by_mac.get(&peer.mac) == Some(&p) {
            self.by_mac.remove(&peer.mac);
        }
        self.last_path.remove(&p);
    }

    // ------------------------------------------------------------------------------------
    // Status

    fn path_reason(&self, peer: &Peer, path: &str) -> String {
        let probing = format!(
            "no authenticated packet from the peer's endpoints ({}) within {} s; probing them every {} s (a NAT or firewall between the two blocks direct UDP)",
            peer.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
            DIRECT_TIMEOUT.as_secs(),
            PROBE_INTERVAL.as_secs()
        );
        match path {
            "direct" => format!(
                "authenticated packets arrive straight from {}",
                peer.direct.map(|e| e.to_string()).unwrap_or_default()
            ),
            "relay" => probing,
            _ if !self.cfg.relay => {
                format!("relay_policy is direct-only on this edge, and {probing}")
            }
            _ if self.links.iter().any(|l| l.registered && !l.relays)
                && relay_path(peer, &self.links, true).is_none() =>
            {
                format!("the community's relay_policy is direct-only, and {probing}")
            }
            _ if peer.current.is_none() && peer.pending.is_some() => {
                "handshake in progress".to_string()
            }
            _ if peer.current.is_none() => "no session".to_string(),
            _ => "no registered supernode lists this peer, and no direct path".to_string(),
        }
    }

    /// A snapshot for `status`.
    pub fn status(&self, now: Instant) -> EdgeStatus {
        let secs = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs_f64());
        let peers = self
            .peers
            .iter()
            .flatten()
            .map(|peer| {
                let dead = peer.last_rx.is_some_and(|t| now.saturating_duration_since(t) >= DEAD_AFTER);
                let (path, endpoint) = match choose_path(peer, &self.links, now, self.cfg.relay) {
                    _ if peer.current.is_none() || dead => ("none", None),
                    Some(Path::Direct(ep)) if peer.direct_active(now).is_some() => {
                        ("direct", Some(ep))
                    }
                    Some(Path::Relay { link, .. }) => ("relay", Some(self.links[link].addr)),
                    _ => ("none", None),
                };
                let path_reason = match peer.last_rx {
                    Some(t) if dead => format!(
                        "nothing heard from the peer for {} s (keepalives every {} s): it is down or unreachable",
                        now.saturating_duration_since(t).as_secs(),
                        self.cfg.keepalive.as_secs()
                    ),
                    _ => self.path_reason(peer, path),
                };
                PeerStatus {
                    name: peer.name.clone(),
                    public_key: peer.key,
                    address: peer.address,
                    mac: peer.mac,
                    allowed_cidrs: peer.allowed.clone(),
                    path,
                    path_reason,
                    endpoint,
                    endpoints: peer.endpoints.clone(),
                    last_handshake_secs: secs(peer.last_handshake),
                    last_rx_secs: secs(peer.last_rx),
                    rtt_secs: match path {
                        "direct" => peer.rtt,
                        "relay" => peer.relay_rtt,
                        _ => None,
                    }
                    .map(|d| d.as_secs_f64()),
                    path_mtu: peer.pmtu,
                    session: peer.current.is_some(),
                    traffic: peer.traffic,
                    drops: peer.drops.clone(),
                }
            })
            .collect();
        EdgeStatus {
            public_key: self.public,
            mac: self.cfg.mac,
            instance: self.instance,
            supernodes: self
                .links
                .iter()
                .filter(|l| !l.retired)
                .map(|l| LinkStatus {
                    address: l.addr,
                    public_key: l.key,
                    registered: l.registered,
                    id: l.id,
                    observed_endpoint: l.observed,
                    error: l.error.clone(),
                    last_ack_secs: secs(l.last_ack),
                    registered_secs: if l.registered {
                        secs(l.registered_at)
                    } else {
                        None
                    },
                })
                .collect(),
            peers,
            // Per-peer drops are counted here too (`drop_peer` adds to both).
            drops: self.drops.clone(),
            cookie_replies: self.guard.replies,
            neighbor_answered: self.neighbor_answered,
            flooded_frames: self.flooded_frames,
            membership: self.cfg.admin_key.map(|admin_key| MembershipStatus {
                admin_key,
                version: self.signed.as_ref().map(|(m, _)| m.version),
                members: self.signed.as_ref().map_or(0, |(m, _)| m.members.len()),
                error: self.membership_error.clone(),
            }),
        }
    }
}
