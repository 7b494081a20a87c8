//! The outside: datagrams from the underlay. Dispatch by packet type (cheap checks first:
//! the header, then the receiver index, then the AEAD), relayed packets unwrapped and
//! dispatched again, and peers' data packets: keepalives, one-byte path messages, MTU probes
//! and frames, which must come from the peer's MAC and addresses.

use super::paths::Path;
use super::peers::Peer;
use super::table::{LinkId, Owner, PeerId};
use super::{Edge, Event};
use crate::control::Control;
use crate::cookie::Verdict;
use crate::eth::{self, SourceIp};
use crate::icmpv6;
use crate::io::{DropReason, Output};
use crate::keys::Mac;
use crate::pmtu;
use crate::wire::{self, Packet, WireError};
use std::net::SocketAddr;
use std::time::Instant;

/// Anti-spoofing: the frame must come from the peer's MAC and from an address it owns,
/// and be addressed to us or to a group; IPv6 neighbour discovery may speak only for the
/// peer itself (see [`crate::icmpv6`]).
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
    if eth::ethertype(frame) == eth::ETHERTYPE_IPV6 {
        let ll = crate::neighbor::link_local(peer.mac);
        let owns = |a: std::net::Ipv6Addr| a == ll || peer.allows(a.into());
        return icmpv6::check(
            frame,
            &icmpv6::Sender {
                mac: peer.mac,
                owns: &owns,
                router: peer.ipv6_router,
            },
        );
    }
    match eth::source_ip(frame) {
        SourceIp::Addr(ip) if !peer.allows(ip) => Err(DropReason::SourceMismatch),
        SourceIp::Addr(_) | SourceIp::None => Ok(()),
        SourceIp::Truncated => Err(DropReason::Malformed),
        SourceIp::Unsupported => Err(DropReason::Unsupported),
    }
}

impl Edge {
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
                    Verdict::RateLimited => self.drops.add(DropReason::RateLimited),
                }
            }
            Packet::CookieReply { receiver } => self.on_cookie(path, receiver, pkt, out),
            Packet::Resp {
                sender,
                receiver,
                noise,
            } => {
                let noise = noise.to_vec();
                match self.index.owner(receiver) {
                    Some(Owner::Peer(p)) => {
                        self.on_peer_response(now, path, p, (sender, receiver), &noise, out)
                    }
                    Some(Owner::Link(l)) => {
                        self.on_link_response(now, path, l, (sender, receiver), &noise, out)
                    }
                    None => self.drops.add(DropReason::Stale),
                }
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
                self.on_relay(now, src, (receiver, counter), peer, pkt, out)
            }
        }
    }

    /// A packet relayed by a supernode from the peer with relay id `from`: opened in the
    /// supernode session, then handled as if it had come over that relay path.
    fn on_relay(
        &mut self,
        now: Instant,
        src: SocketAddr,
        (receiver, counter): (u32, u64),
        from: u32,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let Some(Owner::Link(l)) = self.index.owner(receiver) else {
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

    fn on_data(
        &mut self,
        now: Instant,
        path: Path,
        receiver: u32,
        counter: u64,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        match self.index.owner(receiver) {
            None => {
                self.drops.add(DropReason::UnknownSession);
                // A peer uses a session we do not have: we restarted, or it missed our
                // restart. Offer a new one now rather than waiting for it to notice (one
                // handshake at a time per peer, so this cannot be used to make us flood).
                if let Some(p) = self.peer_on_path(path) {
                    let offer = self.peers.get(p).is_some_and(|peer| {
                        let fresh = peer.current.as_ref().is_some_and(|s| s.age(now) < 2);
                        peer.pending.is_none() && !fresh
                    });
                    if offer {
                        self.start_handshake(now, p, out);
                    }
                }
            }
            Some(Owner::Link(l)) => self.on_link_data(now, path, l, (receiver, counter), pkt, out),
            Some(Owner::Peer(p)) => self.on_peer_data(now, path, p, (receiver, counter), pkt, out),
        }
    }

    /// A data packet in a supernode session: a control message.
    fn on_link_data(
        &mut self,
        now: Instant,
        path: Path,
        l: LinkId,
        (receiver, counter): (u32, u64),
        pkt: &mut [u8],
        out: &mut Output,
    ) {
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

    /// A data packet in a peer session: a keepalive, a one-byte path message, an MTU probe
    /// or a frame for the TAP.
    fn on_peer_data(
        &mut self,
        now: Instant,
        path: Path,
        p: PeerId,
        (receiver, counter): (u32, u64),
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let Some(peer) = self.peers.get_mut(p) else {
            return self.drops.add(DropReason::Stale);
        };
        let Some(slot) = peer.session_for(receiver) else {
            return self.drop_peer(Some(p), DropReason::Stale);
        };
        let Some(session) = slot.as_mut() else {
            return self.drop_peer(Some(p), DropReason::Stale);
        };
        if !session.usable(now) {
            return self.drop_peer(Some(p), DropReason::Expired);
        }
        let range = match session.open_data(counter, pkt) {
            Ok(r) => r,
            Err(e) => return self.drop_peer(Some(p), e.into()),
        };
        // The initiator has proved it holds the keys: the responder session goes live.
        if let Some(mut s) = peer.unconfirmed.take_if(|s| s.local_index == receiver) {
            s.confirmed = true;
            let old = peer.previous.take();
            peer.previous = peer.current.replace(s);
            self.index.retire(old);
            peer.last_handshake = Some(now);
            if peer.previous.is_none() {
                self.events.push(Event::PeerUp { peer: peer.label() });
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
                if let Err(r) = check_frame(peer, self.cfg.mac, frame) {
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
            self.on_direct_rx(now, p, src, out);
        }
        if self.peers.get(p).is_some_and(|x| !x.queue.is_empty()) {
            self.flush_queue(now, p, out);
        }
    }
}
