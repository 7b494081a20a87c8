//! Paths to peers: direct or through a supernode relay, the probes that find and prove a
//! direct path (the NAT hole punch, roaming), keepalives, and pings through the relay.
//!
//! A direct path counts as working only once a pong came back over it, which proves both
//! directions; it is used while one came within [`DIRECT_TIMEOUT`](super::DIRECT_TIMEOUT).

use super::peers::Peer;
use super::table::{LinkId, Links, PeerId};
use super::{Edge, Event, DEAD_AFTER, PROBE_INTERVAL};
use crate::io::Output;
use crate::wire::RELAY_HEADER_LEN;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One-byte edge-to-edge messages inside a data packet (a frame is at least 14 bytes, a
/// keepalive 0): "answer me straight back", and that answer. A direct path counts as working
/// only once a pong came back over it, which proves both directions.
pub(super) const MSG_PROBE: u8 = 1;
const MSG_PONG: u8 = 2;
/// Through the relay: "answer me back the same way" (the relayed path's RTT; also the
/// relayed keepalive), and that answer. Older edges ignore one-byte relayed messages.
const MSG_RELAY_PING: u8 = 3;
const MSG_RELAY_PONG: u8 = 4;

/// Most endpoints kept per peer (what a record may carry at most).
pub(super) const MAX_PEER_ENDPOINTS: usize = crate::control::MAX_ENDPOINTS;
/// Probes sent at once to a peer's endpoints (one round).
pub(super) const PROBES_PER_ROUND: usize = 4;
/// Least time between two probe rounds to one peer asked for by a supernode (`PeerNotify`,
/// the answer to another member's `Lookup`).
pub(super) const NOTIFY_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Most probe datagrams all supernodes' `PeerNotify`s may make this edge send per second.
pub(super) const NOTIFY_PROBES_PER_SEC: u32 = 64;

/// The endpoints of a peer's record worth probing: no unspecified, loopback, multicast
/// (link-local multicast included) or broadcast address, no port 0, nothing inside the
/// community's overlay network (`network`), no duplicates, at most [`MAX_PEER_ENDPOINTS`].
/// A supernode (or a member announcing local endpoints) cannot point our probes at this
/// host, a multicast group, or the overlay itself.
pub(super) fn probe_worthy(eps: Vec<SocketAddr>, network: Option<ipnet::IpNet>) -> Vec<SocketAddr> {
    let mut kept: Vec<SocketAddr> = Vec::with_capacity(eps.len().min(MAX_PEER_ENDPOINTS));
    for ep in eps {
        let ip = ep.ip().to_canonical();
        let bad = match ip {
            std::net::IpAddr::V4(a) => {
                a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
            }
            std::net::IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
        };
        if bad
            || ep.port() == 0
            || network.is_some_and(|n| n.contains(&ip))
            || kept.contains(&ep)
            || kept.len() == MAX_PEER_ENDPOINTS
        {
            continue;
        }
        kept.push(ep);
    }
    kept
}

/// Where a packet came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    Direct(SocketAddr),
    Relay { link: LinkId, id: u32 },
}

/// Sends `build`'s packet over `path`; a relayed packet is wrapped in the supernode session.
pub(super) fn emit(
    out: &mut Output,
    links: &mut Links,
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
pub(super) fn relay_path(peer: &Peer, links: &Links, allow: bool) -> Option<Path> {
    if !allow {
        return None;
    }
    links.iter().find_map(|(i, l)| {
        let id = peer.relay_ids.get(i)?;
        (l.registered && l.relays && l.session.is_some()).then_some(Path::Relay { link: i, id })
    })
}

/// The path to send to `peer` on: direct while it works, else a relay, else (to try) its
/// first endpoint.
pub(super) fn choose_path(
    peer: &Peer,
    links: &Links,
    now: Instant,
    allow_relay: bool,
) -> Option<Path> {
    if let Some(ep) = peer.direct_active(now) {
        return Some(Path::Direct(ep));
    }
    if let Some(relay) = relay_path(peer, links, allow_relay) {
        return Some(relay);
    }
    peer.endpoints.first().map(|e| Path::Direct(*e))
}

impl Edge {
    /// [`choose_path`] for peer `p`, by our relay policy.
    pub(super) fn choose_path(&self, p: PeerId, now: Instant) -> Option<Path> {
        choose_path(self.peers.get(p)?, &self.links, now, self.cfg.relay)
    }

    /// The peer a packet came from, by its path: the relay's source id, or a direct
    /// endpoint we know for it.
    pub(super) fn peer_on_path(&self, path: Path) -> Option<PeerId> {
        match path {
            Path::Direct(src) => self.peers.by_endpoint(&src),
            Path::Relay { link, id } => self.peers.by_relay(link, id),
        }
    }

    /// Authenticated data straight from `src` (the peer's session already checked it): if
    /// it is an endpoint we are not using (the peer is new, roamed, or its NAT mapping
    /// changed), ask it for a pong, at most once a second.
    pub(super) fn on_direct_rx(
        &mut self,
        now: Instant,
        p: PeerId,
        src: SocketAddr,
        out: &mut Output,
    ) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        if peer.direct_active(now) != Some(src)
            && peer
                .last_roam_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            peer.last_roam_probe = Some(now);
            self.send_small(now, p, &[MSG_PROBE], Path::Direct(src), out);
        }
    }

    /// A probe or pong that came straight from `src`.
    pub(super) fn on_edge_message(
        &mut self,
        now: Instant,
        p: PeerId,
        msg: u8,
        src: SocketAddr,
        out: &mut Output,
    ) {
        match msg {
            MSG_PROBE => {
                self.send_small(now, p, &[MSG_PONG], Path::Direct(src), out);
                // Probe back, so that our side learns the path works too (one round trip).
                let Some(peer) = self.peers.get_mut(p) else {
                    return;
                };
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
                let Some(peer) = self.peers.get_mut(p) else {
                    return;
                };
                if let (true, Some(sent)) = (peer.awaiting_pong, peer.last_probe) {
                    peer.rtt = Some(now.saturating_duration_since(sent));
                    peer.awaiting_pong = false;
                }
                peer.last_direct_rx = Some(now);
                self.peers.set_direct(p, Some(src));
            }
            _ => {} // a later version's message: ignore
        }
    }

    /// A one-byte message that came through a relay.
    pub(super) fn on_relayed_message(
        &mut self,
        now: Instant,
        p: PeerId,
        msg: u8,
        path: Path,
        out: &mut Output,
    ) {
        match msg {
            MSG_RELAY_PING => {
                self.send_small(now, p, &[MSG_RELAY_PONG], path, out);
            }
            MSG_RELAY_PONG => {
                if let Some(peer) = self.peers.get_mut(p) {
                    if let Some(sent) = peer.relay_ping.take() {
                        peer.relay_rtt = Some(now.saturating_duration_since(sent));
                    }
                }
            }
            _ => {} // a later version's message: ignore
        }
    }

    /// The timers of a peer with a confirmed session: probes, the path MTU, relay pings,
    /// keepalives, and the `PathChanged`/`PeerDown` events.
    pub(super) fn path_timers(&mut self, now: Instant, p: PeerId, out: &mut Output) {
        let keepalive = self.cfg.keepalive;
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
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
        if let Some(ep) = direct {
            if self.peers.get(p).is_some_and(|x| x.mtu.round_due(now)) {
                self.start_mtu_round(now, p, ep, out);
            }
        }
        // Relayed: a ping through the relay every keepalive interval, whatever else is sent
        // (the relayed path's RTT); it is the keepalive too.
        let Some(peer) = self.peers.get(p) else {
            return;
        };
        if direct.is_none()
            && peer
                .last_relay_ping
                .is_none_or(|t| now.saturating_duration_since(t) >= keepalive)
        {
            if let Some(path @ Path::Relay { .. }) = relay_path(peer, &self.links, self.cfg.relay) {
                if self.send_small(now, p, &[MSG_RELAY_PING], path, out) {
                    if let Some(peer) = self.peers.get_mut(p) {
                        peer.last_tx = Some(now);
                        peer.last_relay_ping = Some(now);
                        peer.relay_ping = Some(now);
                    }
                }
            }
        }
        let Some(peer) = self.peers.get(p) else {
            return;
        };
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

    /// Emits a `PathChanged` event when the path to `p` changed (checked once per tick, not
    /// per packet).
    fn note_path(&mut self, now: Instant, p: PeerId) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        let silent = peer
            .last_rx
            .map(|t| now.saturating_duration_since(t))
            .filter(|d| *d >= DEAD_AFTER);
        if let Some(silent) = silent {
            if peer.last_path != Some("down") {
                peer.last_path = Some("down");
                self.events.push(Event::PeerDown {
                    peer: peer.label(),
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
        if peer.last_path != Some(path) && path != "none" {
            peer.last_path = Some(path);
            self.events.push(Event::PathChanged {
                peer: peer.label(),
                path,
                endpoint,
            });
        }
    }

    pub(super) fn send_keepalive(&mut self, now: Instant, p: PeerId, path: Path, out: &mut Output) {
        if self.send_small(now, p, &[], path, out) {
            if let Some(peer) = self.peers.get_mut(p) {
                peer.last_tx = Some(now);
            }
        }
    }

    /// Sends a keepalive (empty) or a one-byte probe/pong on the current session; says
    /// whether it went out. It does not count as traffic on the peer's path (`last_tx`): a
    /// relayed peer is probed at endpoints that may never answer, and those probes must not
    /// stand in for the keepalives that travel through the relay.
    pub(super) fn send_small(
        &mut self,
        now: Instant,
        p: PeerId,
        payload: &[u8],
        path: Path,
        out: &mut Output,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(p) else {
            return false;
        };
        let Some(session) = peer.current.as_mut().filter(|s| s.usable(now)) else {
            return false;
        };
        emit(out, &mut self.links, path, |b| {
            session.seal_data(payload, b)
        })
    }

    /// A supernode asks us to probe peer `p` now (`PeerNotify`): at most one round per
    /// [`NOTIFY_PROBE_INTERVAL`] per peer and [`NOTIFY_PROBES_PER_SEC`] datagrams in total,
    /// however many notices arrive.
    pub(super) fn probe_on_notice(&mut self, now: Instant, p: PeerId, out: &mut Output) {
        let Some(peer) = self.peers.get(p) else {
            return;
        };
        if peer
            .last_probe
            .is_some_and(|t| now.saturating_duration_since(t) < NOTIFY_PROBE_INTERVAL)
        {
            return;
        }
        let n = peer.endpoints.len().min(PROBES_PER_ROUND) as u32;
        let (since, sent) = &mut self.notice_probes;
        if now.saturating_duration_since(*since) >= Duration::from_secs(1) {
            *since = now;
            *sent = 0;
        }
        if *sent + n > NOTIFY_PROBES_PER_SEC {
            return;
        }
        *sent += n;
        self.probe(now, p, out);
    }

    /// Probes straight to each of the peer's endpoints: the relay-to-direct upgrade and the
    /// NAT hole punch. Each endpoint that works answers with a pong.
    pub(super) fn probe(&mut self, now: Instant, p: PeerId, out: &mut Output) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        peer.last_probe = Some(now);
        peer.awaiting_pong = true;
        let eps: Vec<SocketAddr> = peer
            .endpoints
            .iter()
            .copied()
            .take(PROBES_PER_ROUND)
            .collect();
        for ep in eps {
            self.send_small(now, p, &[MSG_PROBE], Path::Direct(ep), out);
        }
    }
}
