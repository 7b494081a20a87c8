//! What metalvpc adds to every frame on the underlay, and the MTU arithmetic built on it.
//!
//! One Ethernet frame from the TAP device leaves as one UDP datagram:
//!
//! ```text
//! direct:   | outer IP | UDP | data header | inner Ethernet | payload ... | tag |
//! relayed:  | outer IP | UDP | relay envelope | data header | inner Ethernet | payload | tag | tag |
//!             20 / 40     8    (relay 20+16)    (data 16+16)       14
//! ```
//!
//! The parts list ([`parts`]) is the single source: the default MTU, `check`, the
//! `kubernetes` output and the core's direct-path limits all derive from it, so a change to
//! the wire format moves every figure at once (see `docs/protocol.md`).

use crate::{eth, wire};
use std::net::SocketAddr;

/// The IP family of the underlay: it decides the outer IP header's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// IPv4: a 20-byte header (no options).
    V4,
    /// IPv6: a 40-byte header (no extension headers).
    V6,
}

impl Underlay {
    /// The family of an underlay endpoint.
    pub const fn of(addr: &SocketAddr) -> Underlay {
        match addr {
            SocketAddr::V4(_) => Underlay::V4,
            SocketAddr::V6(_) => Underlay::V6,
        }
    }
    /// Bytes of the outer IP header.
    pub const fn ip_header(self) -> usize {
        match self {
            Underlay::V4 => 20,
            Underlay::V6 => 40,
        }
    }
}

/// How a frame reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to the peer's endpoint.
    Direct,
    /// Through a supernode: the data packet travels inside a relay envelope.
    Relayed,
}

/// Bytes of the UDP header.
pub const UDP_HEADER: usize = 8;

/// One part of the overhead: its size and what it is, in the words `kubernetes` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Bytes on the wire.
    pub bytes: usize,
    /// What it is ("outer IP header", "UDP", ...).
    pub what: &'static str,
}

/// The parts between the underlay MTU and the TAP MTU, outermost first. The inner Ethernet
/// header is one of them: the TAP MTU counts the IP packet, not the frame.
pub fn parts(underlay: Underlay, path: Path) -> Vec<Part> {
    let part = |bytes, what| Part { bytes, what };
    let mut v = vec![
        part(underlay.ip_header(), "outer IP header"),
        part(UDP_HEADER, "UDP"),
        part(wire::DATA_OVERHEAD, "data header and tag"),
    ];
    if path == Path::Relayed {
        v.push(part(wire::RELAY_OVERHEAD, "relay envelope and tag"));
    }
    v.push(part(eth::ETH_HEADER_LEN, "inner Ethernet header"));
    v
}

/// Bytes of the outer IP and UDP headers together.
pub const fn outer_header(underlay: Underlay) -> usize {
    underlay.ip_header() + UDP_HEADER
}

/// The sum of [`parts`]: underlay MTU minus this is the largest TAP MTU.
pub const fn total(underlay: Underlay, path: Path) -> usize {
    let relay = match path {
        Path::Direct => 0,
        Path::Relayed => wire::RELAY_OVERHEAD,
    };
    outer_header(underlay) + wire::DATA_OVERHEAD + relay + eth::ETH_HEADER_LEN
}

/// The largest TAP MTU whose frames fit one underlay datagram of `underlay_mtu` bytes on
/// `path` (0 when nothing fits).
pub const fn largest_tap_mtu(underlay_mtu: usize, underlay: Underlay, path: Path) -> usize {
    underlay_mtu.saturating_sub(total(underlay, path))
}

/// The largest frame (Ethernet header included) that a direct path of `path_mtu` bytes (the
/// largest outer IP packet that gets through) carries; None when not even the headers fit.
/// The edge core's limit for frames on a probed direct path.
pub const fn direct_frame_limit(path_mtu: usize, underlay: Underlay) -> Option<usize> {
    path_mtu.checked_sub(direct_header(underlay))
}

/// What a direct data packet adds in front of and behind its frame on the underlay: the
/// outer IP and UDP headers, our data header and the AEAD tag.
pub const fn direct_header(underlay: Underlay) -> usize {
    outer_header(underlay) + wire::DATA_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_total() {
        for u in [Underlay::V4, Underlay::V6] {
            for p in [Path::Direct, Path::Relayed] {
                let sum: usize = parts(u, p).iter().map(|x| x.bytes).sum();
                assert_eq!(sum, total(u, p), "{u:?} {p:?}");
            }
        }
    }

    #[test]
    fn a_1500_byte_underlay() {
        assert_eq!(largest_tap_mtu(1500, Underlay::V4, Path::Relayed), 1390);
        assert_eq!(largest_tap_mtu(1500, Underlay::V6, Path::Relayed), 1370);
        assert_eq!(largest_tap_mtu(1500, Underlay::V4, Path::Direct), 1426);
        assert_eq!(largest_tap_mtu(50, Underlay::V4, Path::Relayed), 0);
        assert_eq!(direct_frame_limit(1500, Underlay::V4), Some(1440));
        assert_eq!(direct_frame_limit(1500, Underlay::V6), Some(1420));
        assert_eq!(direct_frame_limit(40, Underlay::V4), None);
    }
}
