//! The edge state machine: registration with supernodes, peer sessions, path choice
//! (direct or relayed), and the forwarding of Ethernet frames.
//!
//! # Calling contract
//!
//! An [`Edge`] does no I/O: it never opens a socket, reads a clock or sleeps. One thread owns
//! it (it is `Send`, not shared; wrap it in whatever the shell uses, and feed it from one
//! loop). The shell drives it with five kinds of input and takes three kinds of output:
//!
//! - [`Edge::handle_udp`]: a datagram that arrived on the underlay socket (or a packet over a
//!   TCP fallback connection, with the supernode's address as the source), decrypted in place;
//! - [`Edge::handle_frame`]: an Ethernet frame read from the TAP device;
//! - [`Edge::handle_timeout`]: run the timers. Call it when the instant returned by
//!   [`Edge::poll_timeout`] has come (earlier calls do nothing). Check `poll_timeout` again
//!   after every call that may have changed it: any `handle_*` call, [`Edge::reload`],
//!   [`Edge::tcp_connected`] or [`Edge::retry_supernode`];
//! - what became of a command: [`Edge::tcp_connected`] (a [`Command::ConnectTcp`] succeeded)
//!   and [`Edge::tcp_closed`] (it failed, or the connection finished or broke);
//! - configuration changes: [`Edge::reload`] (supernodes and keepalive after SIGHUP),
//!   [`Edge::set_local_endpoints`], [`Edge::set_join_secret`].
//!
//! Every `handle_*` call appends to an [`Output`] the caller passes in: datagrams to send
//! (`Output::transmits`, in order) and frames to write to the TAP device (`Output::frames`).
//! The caller sends and writes them, then clears the `Output` before reusing it; one `Output`
//! may collect the results of several calls (a batch of datagrams) before it is flushed.
//! What the shell must carry out besides (connect or close a TCP fallback, keep the signed
//! membership, configure an assigned address) queues up as [`Command`]s until
//! [`Edge::drain_commands`]; events for the log until [`Edge::drain_events`]. Drain both
//! after each batch, or the queues grow. [`Edge::status`] is a snapshot at any time.
//!
//! Randomness (session indices, the instance id, cookie secrets, handshake ephemerals) comes
//! only from the [`Rng`] given to [`Edge::new`]: the shell seeds it from the OS, a test with
//! a constant, and then a run is reproducible.
//!
//! Time only moves forward: every `now` passed in is the same as or later than the one
//! before (a monotonic clock, `Instant::now()` in the shell, a fake clock in tests). The wall
//! clock is read once, by the shell, and given to [`Edge::new`]; handshake timestamps are
//! derived from it and `now`.
//!
//! # Layout
//!
//! The methods of [`Edge`] live in files by role, as Nebula's `Interface` does:
//! `outside.rs` (UDP in: dispatch by packet type, data packets), `inside.rs` (frames from the
//! TAP out to peers), `link.rs` (the supernode link: handshake, registration, lookups),
//! `members.rs` (member lists and signed memberships), `peers.rs` (peer handshakes, sessions,
//! the frame queue), `paths.rs` (direct or relayed, probes, keepalives, relay pings), `mtu.rs`
//! (the path MTU), `status.rs`, and `table.rs` for the tables that name peers, links and
//! session indexes.
//!
//! # Paths
//!
//! A peer is reached *direct* while an authenticated packet arrived from its endpoint
//! within [`DIRECT_TIMEOUT`]; otherwise through a supernode (*relay*), with the packet still
//! end-to-end encrypted. While relayed, the edge sends a keepalive to each of the peer's
//! endpoints every [`PROBE_INTERVAL`]; the first one that arrives authenticated switches both
//! sides to direct.

mod assign;
mod inside;
mod link;
mod lookups;
mod members;
mod mtu;
mod outside;
mod paths;
mod peers;
mod status;
mod table;
mod tcp_fallback;

pub use lookups::{LOOKUP_RETRY, MAX_LOOKUPS};
pub use status::{EdgeStatus, LinkStatus, MembershipStatus, PeerStatus};

use crate::cookie::{self, CookieGuard};
use crate::crypto::Cipher;
use crate::io::{DropCounters, DropReason, Output};
use crate::keys::{Mac, PrivateKey, PublicKey};
use crate::membership::{AdminPublicKey, Membership};
use crate::rng::Rng;
use crate::wire;
use link::Link;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use table::{Links, PeerId, PeerTable, SessionIndex};

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
/// A peer no supernode lists and that sent nothing for this long is forgotten.
pub const PEER_EXPIRY: Duration = Duration::from_secs(120);
/// How often a direct path's MTU is probed again.
pub const PMTU_INTERVAL: Duration = Duration::from_secs(600);
/// The Register payload of a handshake initiation to a supernode is padded to at least this
/// many bytes: then the initiation (8 + 96 + payload) is as large as the largest refusal
/// (12 + 48 + 3 + a 255-byte message), which a supernode never makes larger than the
/// initiation it answers (no amplification).
pub const REGISTER_INIT_PAYLOAD_MIN: usize =
    wire::RESP_HEADER_LEN + crate::crypto::RESP_NOISE_OVERHEAD + 3 + 255
        - wire::INIT_HEADER_LEN
        - crate::crypto::INIT_NOISE_OVERHEAD;

/// What the edge needs to know at start.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Community name.
    pub community: String,
    /// Our static key.
    pub private_key: PrivateKey,
    /// Our overlay address.
    pub address: IpAddr,
    /// The community's overlay network as this edge knows it (`interface.address` with its
    /// prefix); None while enrolling. An address a supernode assigns must lie in it with
    /// exactly its prefix; peers' endpoints inside it are not probed.
    pub network: Option<ipnet::IpNet>,
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
    /// A per-server enrolment token (`join_token_file`), used instead of the join secret:
    /// with `address` unspecified, the supernode assigns one from its pool.
    pub join_token: Option<crate::control::JoinToken>,
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

impl EdgeConfig {
    /// A configuration with the defaults of the edge's config file for everything but the
    /// community, our key, our overlay address and the supernodes: the community network
    /// unknown, the MAC derived from the key, no local endpoints, keepalives every [`DEFAULT_KEEPALIVE`], relays allowed,
    /// neighbour suppression and MSS clamping on, a [`crate::DEFAULT_MTU`] TAP, no join
    /// secret, no administrator key or cached membership, the default cipher.
    pub fn new(
        community: impl Into<String>,
        private_key: PrivateKey,
        address: IpAddr,
        supernodes: Vec<(SocketAddr, PublicKey)>,
    ) -> EdgeConfig {
        EdgeConfig {
            community: community.into(),
            mac: private_key.public_key().derived_mac(),
            private_key,
            address,
            network: None,
            supernodes,
            local_endpoints: Vec::new(),
            keepalive: DEFAULT_KEEPALIVE,
            relay: true,
            neighbor_suppression: true,
            mtu: crate::DEFAULT_MTU as u32,
            join_secret: None,
            join_token: None,
            mss_clamp: true,
            admin_key: None,
            membership: None,
            cipher: Cipher::default(),
        }
    }
}

/// Something the shell must carry out besides sending datagrams and writing frames: the
/// core decides, the shell acts ([`Edge::drain_commands`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a TCP connection to this supernode (UDP to it got no answer); report the
    /// outcome with [`Edge::tcp_connected`] or [`Edge::tcp_closed`], and send what goes to
    /// that supernode over the connection while it is up.
    ConnectTcp(SocketAddr),
    /// Close the TCP connection to this supernode (it was removed by a reload).
    CloseTcp(SocketAddr),
    /// Keep these bytes, the newest valid signed membership a supernode sent, for the next
    /// start (`membership_cache`, written atomically).
    PersistMembership(Vec<u8>),
    /// Configure this address and prefix on the TAP device (a supernode assigned it while
    /// enrolling).
    ApplyAddress {
        /// The address.
        address: std::net::Ipv4Addr,
        /// The prefix length (the community's network).
        prefix: u8,
    },
}

/// Something the shell may want to log.
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
    /// A supernode assigned our overlay address (enrolment); [`Command::ApplyAddress`]
    /// follows for an IPv4 address.
    AddressAssigned {
        /// The address.
        address: IpAddr,
        /// Its prefix length (the community's network).
        prefix: u8,
        /// Which supernode.
        supernode: SocketAddr,
    },
    /// A supernode assigned an address this edge may not take (see `assign.rs`): nothing
    /// changed; counted as `address_refused`.
    AddressRefused {
        /// The address.
        address: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Which supernode.
        supernode: SocketAddr,
        /// Why, in words.
        reason: String,
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
    /// A newer valid signed membership was accepted ([`Command::PersistMembership`] follows
    /// when a supernode sent it); peers no longer on it were torn down (`PeerRemoved`).
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

/// The edge. See the [module documentation](self) for how to drive it.
pub struct Edge {
    cfg: EdgeConfig,
    public: PublicKey,
    instance: u64,
    base_instant: Instant,
    base_unix_micros: u64,
    last_timestamp: u64,
    /// The supernodes, by [`table::LinkId`].
    links: Links,
    /// The peers, by [`PeerId`], key and MAC.
    peers: PeerTable,
    /// Who owns each of our local session indexes (links and peers).
    index: SessionIndex,
    drops: DropCounters,
    next_tick: Instant,
    next_txid: u32,
    lookups: lookups::Lookups,
    events: Vec<Event>,
    commands: Vec<Command>,
    /// When to try the TCP fallback to silent supernodes.
    fallback: tcp_fallback::TcpFallback,
    guard: CookieGuard,
    /// Session indices, the instance id and handshake ephemerals come from here.
    rng: Rng,
    neighbor_answered: u64,
    flooded_frames: u64,
    /// The newest valid signed membership (with `admin_key`), and its bytes.
    signed: Option<(Membership, Vec<u8>)>,
    membership_error: Option<String>,
    /// An address assigned under `admin_key` before any signed membership arrived: decided
    /// when one is accepted.
    pending_assignment: Option<(table::LinkId, IpAddr, u8)>,
    /// Probe datagrams sent for supernodes' `PeerNotify`s: since when, how many.
    notice_probes: (Instant, u32),
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(3)).min(MAX_BACKOFF)
}

impl Edge {
    /// A new edge. `unix_micros` is the wall clock at `now` (used only to timestamp
    /// handshakes, so that replayed initiations are recognised); `rng` is the edge's only
    /// source of randomness (the shell seeds it from the OS, tests with a constant).
    pub fn new(cfg: EdgeConfig, now: Instant, unix_micros: u64, mut rng: Rng) -> Edge {
        let mut links = Links::default();
        for (addr, key) in &cfg.supernodes {
            links.push(Link::new(*addr, *key, now));
        }
        let public = cfg.private_key.public_key();
        let mut edge = Edge {
            public,
            cfg,
            instance: rng.next_u64(),
            base_instant: now,
            base_unix_micros: unix_micros,
            last_timestamp: 0,
            links,
            peers: PeerTable::default(),
            index: SessionIndex::default(),
            drops: DropCounters::default(),
            next_tick: now,
            next_txid: 1,
            lookups: lookups::Lookups::default(),
            events: Vec::new(),
            commands: Vec::new(),
            fallback: tcp_fallback::TcpFallback::new(now),
            guard: CookieGuard::new(&public, cookie::DEFAULT_LIMIT, now, rng.fork()),
            rng,
            neighbor_answered: 0,
            flooded_frames: 0,
            signed: None,
            membership_error: None,
            pending_assignment: None,
            notice_probes: (now, 0),
        };
        if let Some(bytes) = edge.cfg.membership.take() {
            edge.accept_signed(now, None, bytes, &mut Output::default());
        }
        edge
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

    /// Sets the enrolment token (tests and tools; normally given in [`EdgeConfig`]).
    pub fn set_join_token(&mut self, token: crate::control::JoinToken) {
        self.cfg.join_token = Some(token);
    }

    /// Replaces the local endpoints announced at the next registration.
    pub fn set_local_endpoints(&mut self, eps: Vec<SocketAddr>) {
        self.cfg.local_endpoints = eps;
    }

    /// The sizes of the edge's tables, by name, to check memory bounds in tests and fuzz
    /// targets: `peers` (slots), `peers_live`, `by_key`, `by_mac`, `index`, `lookups`,
    /// `events`, `last_path` (peers whose path was reported), `queued` (frames waiting, all
    /// peers), `queue_max` (the longest queue), `list_chunks` (member-list chunks being
    /// assembled, all supernodes), `by_endpoint` and `by_relay` (the indexes that find the
    /// peer a packet came from).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let live = self.peers.iter().map(|(_, p)| p);
        let (by_endpoint, by_relay) = self.peers.paths_len();
        vec![
            ("by_endpoint", by_endpoint),
            ("by_relay", by_relay),
            ("peers", self.peers.slots()),
            ("peers_live", live.clone().count()),
            ("by_key", self.peers.keys_len()),
            ("by_mac", self.peers.macs_len()),
            ("index", self.index.len()),
            ("lookups", self.lookups.len()),
            ("events", self.events.len()),
            (
                "last_path",
                live.clone().filter(|p| p.last_path.is_some()).count(),
            ),
            ("queued", live.clone().map(|p| p.queue.len()).sum()),
            ("queue_max", live.map(|p| p.queue.len()).max().unwrap_or(0)),
            (
                "list_chunks",
                self.links
                    .iter()
                    .filter_map(|(_, l)| l.staging.as_ref())
                    .map(|s| s.chunks.len())
                    .sum(),
            ),
        ]
    }

    /// The instance id this edge announces (tests: forging its record).
    #[cfg(test)]
    pub(crate) fn test_instance(&self) -> u64 {
        self.instance
    }

    /// Peers visited by scans of the peer table so far (tests: the cost of a lookup).
    #[cfg(test)]
    pub(crate) fn test_peer_visits(&self) -> u64 {
        self.peers.visited.get()
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Commands for the shell since the last call, in the order they were decided.
    pub fn drain_commands(&mut self) -> std::vec::Drain<'_, Command> {
        self.commands.drain(..)
    }

    /// A handshake timestamp: the wall clock at `now` in microseconds, strictly increasing
    /// from call to call (the responder refuses one not newer than the last it saw).
    fn timestamp(&mut self, now: Instant) -> u64 {
        let wall = self.base_unix_micros
            + now.saturating_duration_since(self.base_instant).as_micros() as u64;
        self.last_timestamp = wall.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    /// Counts a drop, on peer `p` too when it is known (the edge's total includes it).
    fn drop_peer(&mut self, p: Option<PeerId>, r: DropReason) {
        self.drops.add(r);
        if let Some(peer) = p.and_then(|p| self.peers.get_mut(p)) {
            peer.drops.add(r);
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
        for l in self.links.ids() {
            self.link_timers(now, l, out);
        }
        for p in self.peers.ids() {
            self.peer_timers(now, p, out);
        }
        if self.fallback.due(now) {
            let silent = self.silent_supernodes(now);
            for addr in self.fallback.poll(now, &silent) {
                self.commands.push(Command::ConnectTcp(addr));
            }
        }
    }
}
