//! Peers: what we know of each member, the handshakes that bring sessions up (as initiator
//! and responder), rekeying and session expiry, and the frames held while a handshake runs.

use super::mtu::PathMtu;
use super::paths::{emit, relay_path, Path};
use super::table::{Owner, PeerId, RelayIds};
use super::{backoff, Edge, Event, DIRECT_TIMEOUT, PEER_EXPIRY};
use crate::control::{PeerRecord, Query};
use crate::cookie;
use crate::crypto::Handshake;
use crate::io::{DropCounters, DropReason, Output, Traffic};
use crate::keys::{Mac, PublicKey};
use crate::session::{Session, REJECT_AFTER_SECS, REKEY_AFTER_SECS};
use crate::wire;
use ipnet::IpNet;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A responder session the initiator never confirmed is dropped after this long.
const UNCONFIRMED_EXPIRY: Duration = Duration::from_secs(15);

/// A handshake we initiated, waiting for its response.
pub(super) struct Pending {
    pub(super) local_index: u32,
    pub(super) hs: Handshake,
    pub(super) sent: Instant,
    pub(super) attempts: u32,
    /// The initiation as sent, to send again with `mac2` if the responder asks for a cookie.
    pub(super) init: Vec<u8>,
}

/// A peer we know from a supernode.
pub(super) struct Peer {
    pub(super) key: PublicKey,
    pub(super) name: String,
    pub(super) address: IpAddr,
    /// Changed only through [`super::table::PeerTable::set_mac`] (frames are routed by it).
    pub(super) mac: Mac,
    pub(super) instance: u64,
    pub(super) allowed: Vec<IpNet>,
    /// May send IPv6 router advertisements and redirects (`ipv6_router`).
    pub(super) ipv6_router: bool,
    pub(super) endpoints: Vec<SocketAddr>,
    /// This peer's id at each supernode (None: that supernode does not list it now).
    pub(super) relay_ids: RelayIds,
    pub(super) current: Option<Session>,
    pub(super) previous: Option<Session>,
    pub(super) unconfirmed: Option<Session>,
    pub(super) pending: Option<Pending>,
    /// (initiator index, timestamp, response bytes) of the last initiation we answered, to
    /// answer copies that arrive over other paths without another Diffie-Hellman.
    pub(super) last_response: Option<(u32, u64, Vec<u8>)>,
    pub(super) last_init_timestamp: u64,
    /// Our index of the last initiation that completed: further answers to it (copies sent
    /// over other paths) are expected and ignored without counting a drop.
    pub(super) completed_index: Option<u32>,
    pub(super) direct: Option<SocketAddr>,
    /// When a pong (or handshake response) last came straight from `direct`: the proof that
    /// both directions of the direct path work.
    pub(super) last_direct_rx: Option<Instant>,
    /// Rate limit for probing a new endpoint that data arrived from (roaming).
    pub(super) last_roam_probe: Option<Instant>,
    pub(super) last_rx: Option<Instant>,
    pub(super) last_tx: Option<Instant>,
    pub(super) last_probe: Option<Instant>,
    /// A periodic probe is out and its pong not yet back (the RTT sample).
    pub(super) awaiting_pong: bool,
    /// Round-trip time of the direct path, from the last periodic probe and its pong.
    pub(super) rtt: Option<Duration>,
    /// When the last ping through the relay went out, while its pong is awaited.
    pub(super) relay_ping: Option<Instant>,
    /// When the last ping through the relay went out (answered or not).
    pub(super) last_relay_ping: Option<Instant>,
    /// Round-trip time through the relay, from the last ping and its pong.
    pub(super) relay_rtt: Option<Duration>,
    /// The direct path's MTU and its probing.
    pub(super) mtu: PathMtu,
    /// The path last reported in an event ("direct", "relay" or "down"), checked once a tick.
    pub(super) last_path: Option<&'static str>,
    pub(super) last_handshake: Option<Instant>,
    pub(super) queue: VecDeque<Vec<u8>>,
    pub(super) traffic: Traffic,
    pub(super) drops: DropCounters,
    pub(super) created: Instant,
}

impl Peer {
    /// A peer first heard of in record `r`, with `links` supernodes configured.
    pub(super) fn new(r: &PeerRecord, links: usize, now: Instant) -> Peer {
        Peer {
            key: r.key,
            name: String::new(),
            address: r.address,
            mac: r.mac,
            instance: r.instance,
            allowed: Vec::new(),
            ipv6_router: false,
            endpoints: Vec::new(),
            relay_ids: RelayIds::new(links),
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
            mtu: PathMtu::default(),
            last_path: None,
            last_handshake: None,
            queue: VecDeque::new(),
            traffic: Traffic::default(),
            drops: DropCounters::default(),
            created: now,
        }
    }

    /// The peer's name, or its key where it has none (events).
    pub(super) fn label(&self) -> String {
        if self.name.is_empty() {
            self.key.to_base64()
        } else {
            self.name.clone()
        }
    }

    pub(super) fn direct_active(&self, now: Instant) -> Option<SocketAddr> {
        let last = self.last_direct_rx?;
        (now.saturating_duration_since(last) < DIRECT_TIMEOUT).then_some(self.direct?)
    }

    pub(super) fn allows(&self, ip: IpAddr) -> bool {
        ip == self.address || self.allowed.iter().any(|n| n.contains(&ip))
    }

    pub(super) fn listed(&self) -> bool {
        self.relay_ids.any()
    }

    /// Our session with local index `receiver`, if it is one of the peer's.
    pub(super) fn session_for(&mut self, receiver: u32) -> Option<&mut Option<Session>> {
        let has = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index == receiver);
        if has(&self.current) {
            Some(&mut self.current)
        } else if has(&self.unconfirmed) {
            Some(&mut self.unconfirmed)
        } else if has(&self.previous) {
            Some(&mut self.previous)
        } else {
            None
        }
    }
}

impl Edge {
    /// A handshake initiation from a peer (the Noise message already past the cookie guard).
    pub(super) fn on_init(
        &mut self,
        now: Instant,
        path: Path,
        sender: u32,
        noise: &[u8],
        out: &mut Output,
    ) {
        let (hs, remote, payload) = match Handshake::respond_with(
            self.cfg.cipher,
            &self.cfg.private_key,
            noise,
            &mut self.rng,
        ) {
            Ok(x) => x,
            Err(_) => return self.drops.add(DropReason::HandshakeFailed),
        };
        let Some(p) = self.peers.by_key(&remote) else {
            // Not vouched for by a supernode (yet): ask, and let the initiator retry.
            self.drops.add(DropReason::UnknownPeer);
            self.lookup(now, Query::Key(remote), out);
            return;
        };
        let Ok(ts) = <[u8; 8]>::try_from(payload.get(..8).unwrap_or(&[])).map(u64::from_le_bytes)
        else {
            return self.drop_peer(Some(p), DropReason::Malformed);
        };
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        if let Some((idx, t, bytes)) = &peer.last_response {
            if *idx == sender && *t == ts {
                // The same initiation over another path: answer there too.
                emit(out, &mut self.links, path, |b| b.extend_from_slice(bytes));
                return;
            }
        }
        if ts <= peer.last_init_timestamp {
            return self.drop_peer(Some(p), DropReason::Replay);
        }
        let local_index = self.index.allocate(Owner::Peer(p), &mut self.rng);
        let mut msg = Vec::with_capacity(128);
        wire::put_resp_header(&mut msg, local_index, sender);
        let keys = match hs.finish_response(&[], &mut msg) {
            Ok(k) => k,
            Err(_) => {
                self.index.remove(local_index);
                return self.drop_peer(Some(p), DropReason::HandshakeFailed);
            }
        };
        peer.last_init_timestamp = ts;
        let old = peer
            .unconfirmed
            .replace(Session::new(local_index, sender, keys, now, false));
        self.index.retire(old);
        emit(out, &mut self.links, path, |b| b.extend_from_slice(&msg));
        peer.last_response = Some((sender, ts, msg));
    }

    /// A busy responder wants proof of our address: send the pending initiation again with
    /// `mac2`, over the path the reply came by.
    pub(super) fn on_cookie(&mut self, path: Path, receiver: u32, reply: &[u8], out: &mut Output) {
        let (responder, init) = match self.index.owner(receiver) {
            Some(Owner::Peer(p)) => {
                let Some(peer) = self.peers.get(p) else {
                    return self.drops.add(DropReason::Stale);
                };
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

    /// The response to our initiation to peer `p`: the session comes up.
    pub(super) fn on_peer_response(
        &mut self,
        now: Instant,
        path: Path,
        p: PeerId,
        (sender, receiver): (u32, u32),
        noise: &[u8],
        out: &mut Output,
    ) {
        let Some(peer) = self.peers.get_mut(p) else {
            return self.drops.add(DropReason::Stale);
        };
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
                self.index.remove(receiver);
                return self.drop_peer(Some(p), DropReason::HandshakeFailed);
            }
        };
        let old = peer.previous.take();
        peer.previous = peer
            .current
            .replace(Session::new(receiver, sender, keys, now, true));
        self.index.retire(old);
        peer.last_handshake = Some(now);
        peer.last_rx = Some(now);
        if let Path::Direct(_) = path {
            peer.last_direct_rx = Some(now);
        }
        if peer.previous.is_none() {
            self.events.push(Event::PeerUp { peer: peer.label() });
        }
        if let Path::Direct(src) = path {
            self.peers.set_direct(p, Some(src));
        }
        self.flush_queue(now, p, out);
    }

    /// Sends an initiation to peer `p` over every path at once.
    pub(super) fn start_handshake(&mut self, now: Instant, p: PeerId, out: &mut Output) {
        let ts = self.timestamp(now);
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        let local_index = self.index.allocate(Owner::Peer(p), &mut self.rng);
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
                self.index.remove(local_index);
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
        self.index.retire_pending(old);
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

    /// Sends the frames held for `p` now that a session is up; with none, a keepalive
    /// confirms a fresh initiator session.
    pub(super) fn flush_queue(&mut self, now: Instant, p: PeerId, out: &mut Output) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        let queued = std::mem::take(&mut peer.queue);
        if queued.is_empty() {
            // Confirm a fresh initiator session with a keepalive.
            if let Some(path) = self.choose_path(p, now) {
                self.send_keepalive(now, p, path, out);
            }
        }
        for f in queued {
            self.send_frame(now, p, &f, out);
        }
    }

    /// A peer's timers: session expiry, forgetting, handshakes and rekeying; then (with a
    /// confirmed session) its paths' ([`Edge::path_timers`]).
    pub(super) fn peer_timers(&mut self, now: Instant, p: PeerId, out: &mut Output) {
        let our_key = self.public;
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        // Expire sessions.
        if peer.current.as_ref().is_some_and(|s| !s.usable(now)) {
            self.index.retire(peer.current.take());
        }
        if peer
            .previous
            .as_ref()
            .is_some_and(|s| s.age(now) >= REJECT_AFTER_SECS)
        {
            self.index.retire(peer.previous.take());
        }
        if peer
            .unconfirmed
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.created) >= UNCONFIRMED_EXPIRY)
        {
            self.index.retire(peer.unconfirmed.take());
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
            self.index.retire_pending(peer.pending.take());
        }
        // Keepalives and probes.
        if peer.current.as_ref().is_some_and(|s| s.confirmed) {
            self.path_timers(now, p, out);
        }
    }

    /// Forgets peer `p`, its sessions and handshakes with it.
    pub(super) fn forget_peer(&mut self, p: PeerId) {
        let Some(mut peer) = self.peers.remove(p) else {
            return;
        };
        for s in [
            peer.current.take(),
            peer.previous.take(),
            peer.unconfirmed.take(),
        ] {
            self.index.retire(s);
        }
        self.index.retire_pending(peer.pending.take());
    }
}
