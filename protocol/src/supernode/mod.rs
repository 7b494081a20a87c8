//! The supernode state machine: membership checks, registrations, member lists, lookups,
//! hole-punch notices and the relay of end-to-end encrypted packets.
//!
//! The supernode never holds an edge-to-edge key: it authenticates the relay envelope with
//! its own session to each member and forwards the inner packet untouched.
//!
//! # Calling contract
//!
//! One owner (the shell's event loop thread) drives a [`Supernode`]; nothing in it blocks,
//! reads a clock or touches a socket. Every call that can act takes `now`, and `now` only
//! moves forward from one call to the next.
//!
//! Inputs:
//! - [`Supernode::handle_udp`] for every datagram that arrives, over UDP or as a frame over a
//!   TCP fallback connection (the source is the connection's peer address).
//! - [`Supernode::handle_timeout`] when [`Supernode::poll_timeout`] is due (calling it early
//!   is harmless); ask `poll_timeout` again after every call.
//! - [`Supernode::reload`] with a new membership (SIGHUP).
//! - [`Supernode::tcp_opened`] when the shell accepts a TCP fallback connection (it may refuse) and
//!   [`Supernode::tcp_closed`] when one breaks or the peer closes it.
//!
//! Outputs:
//! - the [`Output`] each call is given: datagrams to send (a destination that is a TCP
//!   connection's peer goes over that connection);
//! - [`Supernode::drain_events`]: things worth a log line (and an enrolment to persist);
//! - [`Supernode::drain_commands`]: what the shell must do: close a TCP connection that
//!   stayed silent for [`TCP_IDLE`], persist an enrolment ([`Command::SaveEnrolment`]).
//!
//! The code is split by role: `handshake` (initiations, cookies, refusals), `register`
//! (registration checks, acknowledgements, expiry), `enrol` (enrolment with a join secret or
//! a token) and `enrol_limit` (its per-source and per-community bounds),
//! `members` (member lists, pushes, updates, signed lists, lookups), `reload`, `relay`,
//! `tcp` (TCP fallback admission and expiry) and `status`; `table` holds the communities and nodes.

mod enrol;
mod enrol_limit;
mod handshake;
mod limits;
mod macs;
mod members;
mod register;
mod relay;
mod reload;
mod status;
mod table;
mod tcp;

pub use crate::membership::NodeEntry;
pub use enrol::EnrolmentRecord;
pub use limits::{
    ANNOUNCE_BURST, ANNOUNCE_PERIOD, CHALLENGE_BURST, CHALLENGE_PERIOD, LIST_BURST, LIST_PERIOD,
    LOOKUP_BURST, LOOKUP_PERIOD, MAX_LOCALS, SIGNED_BURST, SIGNED_PERIOD,
};
pub use status::{CommunityStatus, MemberStatus, SupernodeStatus};
pub use tcp::{tcp_source, Command, MAX_TCP, MAX_TCP_PER_SOURCE, TCP_IDLE, TCP_UNAUTHENTICATED};

use crate::control::Control;
use crate::cookie::{self, CookieGuard, Verdict};
use crate::crypto::Cipher;
use crate::io::{DropCounters, DropReason, Output};
use crate::keys::{PrivateKey, PublicKey};
use crate::membership::SignedBlob;
use crate::rng::Rng;
use crate::session::{OpenError, Session};
use crate::wire::{self, Packet, WireError};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};
use table::{NodeRef, Table};

/// Timer granularity.
pub const TICK: Duration = Duration::from_millis(500);
/// Default registration interval told to edges.
pub const DEFAULT_REGISTER_INTERVAL: u16 = 10;
/// Removed keys a community remembers, to repeat the revocation to edges that missed it
/// (they ask for the member list when their registration shows a new epoch).
pub const REMEMBERED_REMOVALS: usize = 256;

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

/// Enrolment: a key that is not listed may join if it proves it holds the community's join
/// secret or one of its enrolment tokens; it gets the next free address of the pool (or the
/// token's fixed address), and keeps it (the shell persists each [`Command::SaveEnrolment`]
/// and lists those nodes in `nodes` at the next start or reload). Addresses of revoked
/// enrolments stay quarantined: never handed out again until the operator releases them.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The shared join secret (what `join_secret_file` holds); None: tokens only.
    pub secret: Option<Vec<u8>>,
    /// Addresses handed out, inside the community's network.
    pub pool: IpNet,
    /// Keys that may not enrol again (revoked by the operator).
    pub revoked: Vec<PublicKey>,
    /// Enrolment tokens (`enrolled token create`), at most [`MAX_TOKENS`].
    pub tokens: Vec<Token>,
    /// Addresses of revoked enrolments, never handed out again (`enrolled release` frees one).
    pub quarantined: Vec<IpAddr>,
    /// Enrolled nodes the store holds (at most [`MAX_ENROLLED`] per community).
    pub enrolled: usize,
}

impl Enrolment {
    /// Enrolment into `pool`, with the shared join secret `secret` (None: tokens only), no
    /// tokens, nothing revoked or quarantined.
    pub fn new(secret: Option<Vec<u8>>, pool: IpNet) -> Enrolment {
        Enrolment {
            secret,
            pool,
            revoked: Vec::new(),
            tokens: Vec::new(),
            quarantined: Vec::new(),
            enrolled: 0,
        }
    }
}

/// One enrolment token: what the supernode keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its public id.
    pub id: [u8; crate::control::TOKEN_ID_LEN],
    /// [`crate::control::token_key`] of its secret.
    pub key: [u8; 32],
    /// When it expires (seconds since the Unix epoch); None: never.
    pub expires: Option<u64>,
    /// Enrolments it may still make (0: used up, or burned by a revocation).
    pub uses: u32,
    /// The address a server enrolling with it gets (instead of the next one of the pool).
    pub address: Option<IpAddr>,
}

/// Most enrolled nodes per community (bounds the store: about 200 bytes each).
pub const MAX_ENROLLED: usize = 16_384;
/// Most enrolment tokens per community.
pub const MAX_TOKENS: usize = 1024;
/// New enrolments one source address may make at once, and the time that earns one more.
pub const ENROL_BURST_PER_SOURCE: u32 = 4;
/// See [`ENROL_BURST_PER_SOURCE`].
pub const ENROL_INTERVAL_PER_SOURCE: Duration = Duration::from_secs(15);
/// New enrolments a community takes at once, and the time that earns one more.
pub const ENROL_BURST_PER_COMMUNITY: u32 = 32;
/// See [`ENROL_BURST_PER_COMMUNITY`].
pub const ENROL_INTERVAL_PER_COMMUNITY: Duration = Duration::from_secs(2);

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
    /// A key enrolled (with the join secret or a token) and got an address (the shell
    /// persists it from [`Command::SaveEnrolment`]).
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

/// The supernode.
pub struct Supernode {
    key: PrivateKey,
    public: PublicKey,
    interval: u16,
    table: Table,
    drops: DropCounters,
    refused: u64,
    registrations: u64,
    relay_packets: u64,
    relay_bytes: u64,
    next_tick: Instant,
    events: Vec<Event>,
    guard: CookieGuard,
    /// Session indices and handshake ephemerals come from here.
    rng: Rng,
    tcp: tcp::TcpSources,
    /// Which key owns which MAC, per community name (see `macs`).
    macs: std::collections::HashMap<String, macs::MacBook>,
    /// The wall clock: (an instant, seconds since the Unix epoch at it), for token expiry.
    wall: Option<(Instant, u64)>,
    enrol_limit: enrol_limit::EnrolLimiter,
}

impl Supernode {
    /// A new supernode. `rng` is its only source of randomness (session indices, cookie
    /// secrets, handshake ephemerals): the shell seeds it from the OS, tests with a constant.
    pub fn new(cfg: SupernodeConfig, now: Instant, mut rng: Rng) -> Supernode {
        let public = cfg.private_key.public_key();
        let mut sn = Supernode {
            public,
            key: cfg.private_key,
            interval: cfg.register_interval.max(1),
            table: Table::default(),
            drops: DropCounters::default(),
            refused: 0,
            registrations: 0,
            relay_packets: 0,
            relay_bytes: 0,
            next_tick: now,
            events: Vec::new(),
            guard: CookieGuard::new(&public, cookie::DEFAULT_LIMIT, now, rng.fork()),
            rng,
            tcp: tcp::TcpSources::default(),
            macs: Default::default(),
            wall: None,
            enrol_limit: enrol_limit::EnrolLimiter::default(),
        };
        sn.reload(
            cfg.communities,
            cfg.register_interval,
            &mut Output::default(),
        );
        sn
    }

    /// Tells the core the wall clock: `unix_secs` seconds since the Unix epoch at `now` (the
    /// shell reads it at start and at each reload; enrolment tokens expire by it). Until it
    /// is told, tokens with an expiry are refused.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: u64) {
        self.wall = Some((now, unix_secs));
    }

    /// Our key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Handles one UDP datagram (or one frame from a TCP fallback connection).
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
                Verdict::RateLimited => self.drops.add(DropReason::RateLimited),
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

    /// A data packet: a control message from a registered member.
    fn on_data(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let len = pkt.len();
        let Some((r, range)) = self.open(now, receiver, |s| s.open_data(counter, pkt), out) else {
            return;
        };
        let msg = Control::decode(&pkt[range]);
        if let Ok(Control::PathResponse { nonce }) = msg {
            self.on_path_response(now, r, src, nonce, out);
        }
        self.seen(now, r, src, len, out);
        self.table.node_mut(r).traffic.rx_packets += 1;
        let Ok(msg) = msg else {
            return self.drops.add(DropReason::Malformed);
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
            } => self.on_reregister(
                now, r, &community, address, mac, instance, endpoints, cipher, out,
            ),
            // Answered only to the proven endpoint (`Node::send`), within the member's budget.
            Control::SyncRequest => {
                if self.within_budget(now, r, |b| &mut b.lists) {
                    self.send_list(r, out)
                }
            }
            Control::SignedListRequest => {
                if self.within_budget(now, r, |b| &mut b.signed) {
                    self.send_signed(r, out)
                }
            }
            Control::Lookup { txid, query } => {
                if self.within_budget(now, r, |b| &mut b.lookups) {
                    self.on_lookup(r, txid, query, out)
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
            | Control::PathChallenge { .. }
            | Control::PathResponse { .. }
            | Control::Unknown(_) => {}
        }
    }

    /// Opens a packet on session `receiver` with `open` (data or relay): the member and the
    /// plaintext, after the registration it confirmed (if any) took effect; None: dropped
    /// and counted.
    fn open(
        &mut self,
        now: Instant,
        receiver: u32,
        open: impl FnOnce(&mut Session) -> Result<Range<usize>, OpenError>,
        out: &mut Output,
    ) -> Option<(NodeRef, Range<usize>)> {
        match self.table.open(now, receiver, open) {
            Ok((r, range, confirmed)) => {
                self.confirmed(now, r, confirmed, out);
                Some((r, range))
            }
            Err(e) => {
                self.drops.add(e);
                None
            }
        }
    }

    /// A packet confirmed member `r`'s pending registration (`confirmed` is Some(changed)):
    /// it is in force now; if it differs from the one before, say so and tell the others.
    fn confirmed(&mut self, now: Instant, r: NodeRef, confirmed: Option<bool>, out: &mut Output) {
        if confirmed != Some(true) {
            return;
        }
        let node = self.table.node(r);
        if let Some(reg) = node.reg() {
            self.events.push(Event::Registered {
                community: self.table.community(r.community).name.clone(),
                member: node.label(),
                endpoint: reg.endpoint,
            });
        }
        self.announce(now, r, None, out);
    }

    /// Sends a control message to member `r`; no-op if it is not registered.
    fn send(&mut self, r: NodeRef, msg: &Control, out: &mut Output) {
        self.table.node_mut(r).send(&msg.encode(), out);
    }

    /// Sends a control message to the registered member with `key` (tests play a
    /// compromised supernode with it).
    #[cfg(test)]
    pub(crate) fn test_send(&mut self, key: &PublicKey, msg: &Control, out: &mut Output) {
        for c in self.table.community_ids().collect::<Vec<_>>() {
            if let Some(r) = self.table.by_key(c, key) {
                self.send(r, msg, out);
            }
        }
    }

    /// When the next timer is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Expires registrations that stopped refreshing, and asks the shell to close TCP
    /// fallback connections that fell silent.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        self.expire_registrations(now, out);
        self.flush_announces(now, out);
        self.tcp.expire(now);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A clamped private key made of `n`.
    pub(crate) fn fixed_key(n: u8) -> PrivateKey {
        let mut k = [n; 32];
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        PrivateKey(k)
    }

    /// A supernode with key `fixed_key(1)` and one community "fuzz" of one member
    /// `fixed_key(2)` at 10.77.0.1.
    pub(crate) fn one_member(now: Instant) -> Supernode {
        Supernode::new(
            SupernodeConfig {
                private_key: fixed_key(1),
                communities: vec![CommunityConfig {
                    name: "fuzz".into(),
                    network: "10.77.0.0/24".parse().unwrap(),
                    nodes: vec![NodeEntry {
                        key: fixed_key(2).public_key(),
                        name: "m0".into(),
                        address: "10.77.0.1".parse().unwrap(),
                        allowed_cidrs: vec![],
                        ipv6_router: false,
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
        )
    }
}
