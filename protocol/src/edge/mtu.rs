//! Path MTU of a peer's direct path, found by probing (as quinn-proto's `MtuDiscovery`, with
//! all candidate sizes sent at once): a round sends one padded probe of each size in
//! [`pmtu::CANDIDATES`] (up to what the TAP's MTU needs), the peer acknowledges each that
//! arrives, and after [`PMTU_ROUND`] the largest acknowledged is the path's MTU. Frames too
//! large for it are answered with ICMP (see `inside.rs`); TCP SYNs get an MSS that fits.

use super::paths::{emit, Path};
use super::table::PeerId;
use super::{Edge, Event, PMTU_INTERVAL};
use crate::eth;
use crate::io::Output;
use crate::overhead::{self, Underlay};
use crate::pmtu;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a probe round waits for acknowledgements.
const PMTU_ROUND: Duration = Duration::from_secs(2);
/// A round that got no acknowledgement at all is repeated after this long.
const PMTU_RETRY: Duration = Duration::from_secs(30);

/// Bytes a direct data packet to `ep` adds to its frame (outer IP and UDP headers, our data
/// header and tag): [`overhead::direct_header`].
fn direct_header(ep: SocketAddr) -> usize {
    overhead::direct_header(Underlay::of(&ep))
}

/// The path MTU state of one peer's direct path.
#[derive(Debug, Clone, Default)]
pub(super) struct PathMtu {
    /// The direct path's MTU (largest outer IP packet acknowledged by the peer), once probed.
    pmtu: Option<u16>,
    /// A probe round in progress: when it started and the largest size acknowledged.
    round: Option<(Instant, u16)>,
    /// When to probe the path MTU again.
    next: Option<Instant>,
}

impl PathMtu {
    /// The MTU found, once probed.
    pub(super) fn get(&self) -> Option<u16> {
        self.pmtu
    }

    /// No round runs and the next is due.
    pub(super) fn round_due(&self, now: Instant) -> bool {
        self.round.is_none() && self.next.is_none_or(|t| now >= t)
    }

    /// A round starts at `now`; the next one is due [`PMTU_INTERVAL`] later.
    fn start(&mut self, now: Instant) {
        self.round = Some((now, 0));
        self.next = Some(now + PMTU_INTERVAL);
    }

    /// The peer acknowledged a probe of `size` bytes.
    fn acked(&mut self, size: u16) {
        if let Some((_, best)) = self.round.as_mut() {
            *best = (*best).max(size);
        }
    }

    /// Ends a round [`PMTU_ROUND`] after it started; returns the MTU when it is new.
    fn finish(&mut self, now: Instant) -> Option<u16> {
        let (started, best) = self.round?;
        if now.saturating_duration_since(started) < PMTU_ROUND {
            return None;
        }
        self.round = None;
        if best == 0 {
            // Nothing came back (loss, or the peer is busy): try again soon.
            self.next = Some(now + PMTU_RETRY);
            return None;
        }
        if self.pmtu == Some(best) {
            return None;
        }
        self.pmtu = Some(best);
        Some(best)
    }

    /// The largest frame (Ethernet header included) the direct path to `ep` carries, once
    /// probed.
    pub(super) fn frame_limit(&self, ep: SocketAddr) -> Option<usize> {
        overhead::direct_frame_limit(usize::from(self.pmtu?), Underlay::of(&ep))
    }
}

impl Edge {
    /// The MSS that fits both the TAP and, once probed, the direct path to `p` (IPv4 terms;
    /// `clamp_mss` takes 20 more off for IPv6).
    pub(super) fn mss_for(&self, p: PeerId) -> u16 {
        let mut ip_mtu = self.cfg.mtu as usize;
        if let Some(peer) = self.peers.get(p) {
            if let Some(limit) = peer.direct.and_then(|ep| peer.mtu.frame_limit(ep)) {
                ip_mtu = ip_mtu.min(limit.saturating_sub(eth::ETH_HEADER_LEN));
            }
        }
        ip_mtu.saturating_sub(40).clamp(536, 65_495) as u16
    }

    /// An MTU probe from the peer (answer it over the path it came by) or the answer to ours.
    pub(super) fn on_mtu_probe(
        &mut self,
        now: Instant,
        p: PeerId,
        ack: bool,
        size: u16,
        path: Path,
        out: &mut Output,
    ) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        if ack {
            return peer.mtu.acked(size);
        }
        let frame = pmtu::probe_frame(peer.mac, self.cfg.mac, true, size, 0);
        let Some(session) = peer.current.as_mut().filter(|s| s.usable(now)) else {
            return;
        };
        emit(out, &mut self.links, path, |b| session.seal_data(&frame, b));
    }

    /// Sends one probe of each candidate size over the direct path to `p`.
    pub(super) fn start_mtu_round(
        &mut self,
        now: Instant,
        p: PeerId,
        ep: SocketAddr,
        out: &mut Output,
    ) {
        let hdr = direct_header(ep);
        let largest = self.cfg.mtu as usize + eth::ETH_HEADER_LEN + hdr;
        let mut sizes: Vec<u16> = std::iter::once(largest.min(usize::from(u16::MAX)) as u16)
            .chain(pmtu::CANDIDATES)
            .filter(|s| usize::from(*s) <= largest && usize::from(*s) > hdr + 23)
            .collect();
        sizes.dedup();
        // Smallest first: each probe then leaves as a datagram of its own (a shell that
        // batches equal-or-shrinking datagrams into one UDP GSO send cannot merge them).
        sizes.reverse();
        let our_mac = self.cfg.mac;
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        peer.mtu.start(now);
        let mac = peer.mac;
        for size in sizes {
            let frame = pmtu::probe_frame(mac, our_mac, false, size, usize::from(size) - hdr);
            let Some(session) = peer.current.as_mut().filter(|s| s.usable(now)) else {
                return;
            };
            emit(out, &mut self.links, Path::Direct(ep), |b| {
                session.seal_data(&frame, b)
            });
        }
    }

    /// Ends a probe round after [`PMTU_ROUND`]: the largest size acknowledged is the path's MTU.
    pub(super) fn finish_mtu_round(&mut self, now: Instant, p: PeerId) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        let Some(best) = peer.mtu.finish(now) else {
            return;
        };
        let hdr = overhead::direct_header(peer.direct.map_or(Underlay::V4, |ep| Underlay::of(&ep)));
        let inner = usize::from(best).saturating_sub(hdr + eth::ETH_HEADER_LEN) as u16;
        self.events.push(Event::PathMtu {
            peer: peer.label(),
            mtu: best,
            inner,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[test]
    fn a_round_keeps_the_largest_acknowledged_size_and_an_empty_one_retries_soon() {
        let t0 = Instant::now();
        let mut m = PathMtu::default();
        assert!(m.round_due(t0));
        m.start(t0);
        assert!(!m.round_due(t0));
        m.acked(1280);
        m.acked(1400);
        m.acked(1300);
        assert_eq!(m.finish(t0 + Duration::from_secs(1)), None, "too early");
        assert_eq!(m.finish(t0 + PMTU_ROUND), Some(1400));
        assert_eq!(m.get(), Some(1400));
        let ep: SocketAddr = "198.18.0.1:1".parse().unwrap();
        assert_eq!(m.frame_limit(ep), Some(1400 - 28 - wire::DATA_OVERHEAD));
        // The same size again is no news; a round with no answer is retried after PMTU_RETRY.
        let t1 = t0 + PMTU_INTERVAL;
        assert!(m.round_due(t1));
        m.start(t1);
        m.acked(1400);
        assert_eq!(m.finish(t1 + PMTU_ROUND), None);
        let t2 = t1 + PMTU_INTERVAL;
        m.start(t2);
        assert_eq!(m.finish(t2 + PMTU_ROUND), None);
        assert!(!m.round_due(t2 + PMTU_ROUND));
        assert!(m.round_due(t2 + PMTU_ROUND + PMTU_RETRY));
        assert_eq!(m.get(), Some(1400));
    }
}
