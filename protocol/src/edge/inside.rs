//! The inside: Ethernet frames read from the TAP device, out to peers. Unicast goes to the
//! peer that owns the destination MAC; broadcast and multicast are flooded to every peer,
//! unless neighbour suppression answers an ARP or neighbour solicitation locally.

use super::paths::{choose_path, emit, Path};
use super::table::PeerId;
use super::{Edge, QUEUE_LIMIT};
use crate::control::Query;
use crate::eth;
use crate::io::{DropReason, Output};
use crate::keys::Mac;
use crate::neighbor;
use crate::pmtu;
use std::net::IpAddr;
use std::time::Instant;

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

impl Edge {
    /// Handles one Ethernet frame read from the TAP device.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8], out: &mut Output) {
        if frame.len() < eth::ETH_HEADER_LEN {
            return self.drops.add(DropReason::Malformed);
        }
        // A TCP SYN (rare) gets its MSS clamped to what the overlay carries: a copy, so that
        // the common path stays copy-free.
        if self.cfg.mss_clamp && is_tcp_syn(frame) {
            let mut copy = frame.to_vec();
            let p = self.peers.by_mac(&eth::dst_mac(frame));
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
            for p in self.peers.ids() {
                self.flooded_frames += 1;
                self.send_frame(now, p, frame, out);
            }
        } else if let Some(p) = self.peers.by_mac(&dst) {
            self.send_frame(now, p, frame, out);
        } else {
            self.drops.add(DropReason::NoRoute);
            self.lookup(now, Query::Mac(dst), out);
        }
    }

    /// The MAC of the member whose own address `ip` is (see [`crate::neighbor`]).
    fn owner_of(&self, ip: IpAddr) -> Option<Mac> {
        self.peers.iter().find_map(|(_, peer)| {
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

    /// Seals `frame` to peer `p` and sends it on the chosen path; without a usable session
    /// it is queued (the oldest dropped beyond [`QUEUE_LIMIT`]) and a handshake starts.
    pub(super) fn send_frame(&mut self, now: Instant, p: PeerId, frame: &[u8], out: &mut Output) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        let ready = peer.current.as_ref().is_some_and(|s| s.usable(now));
        if !ready {
            if peer.queue.len() >= QUEUE_LIMIT {
                peer.queue.pop_front();
                self.drops.add(DropReason::QueueFull);
            }
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
            if let Some(limit) = peer.mtu.frame_limit(ep).filter(|l| frame.len() > *l) {
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
        let Some(session) = peer.current.as_mut() else {
            return;
        };
        if emit(out, &mut self.links, path, |b| session.seal_data(frame, b)) {
            peer.traffic.tx_packets += 1;
            peer.traffic.tx_bytes += frame.len() as u64;
            peer.last_tx = Some(now);
        } else {
            self.drop_peer(Some(p), DropReason::NoRoute);
        }
    }
}
