//! The sans-IO core of metalvpc: wire codec, Noise handshakes, data-plane AEAD with a replay
//! window, timers, and the edge and supernode state machines.
//!
//! Nothing in this crate opens a socket, reads a clock, spawns a thread or takes a lock.
//! Callers feed bytes and `now`, and get back datagrams to send and frames to deliver in an
//! [`io::Output`]. Timers are `poll_timeout()` + `handle_timeout(now)`.
#![warn(missing_docs)]

pub mod control;
pub mod cookie;
pub mod crypto;
pub mod edge;
pub mod eth;
pub mod icmpv6;
pub mod io;
pub mod keys;
pub mod membership;
pub mod neighbor;
pub mod overhead;
pub mod pmtu;
pub mod ratelimit;
pub mod replay;
pub mod rng;
pub mod session;
pub mod supernode;
pub mod wire;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_edge_trust;
#[cfg(test)]
mod sim_enrolment;
#[cfg(test)]
mod sim_supernode_abuse;

pub use io::{DropCounters, DropReason, Output, Transmit};
pub use keys::{Mac, PrivateKey, PublicKey};
pub use rng::Rng;

/// Overlay MTU for a given underlay MTU: what fits in one underlay datagram even when the
/// packet is relayed through a supernode over IPv4 (see [`overhead`] and `docs/protocol.md`):
/// underlay − 20 (IPv4) − 8 (UDP) − 32 (data header and tag) − 36 (relay header and tag)
/// − 14 (the inner Ethernet header).
pub const fn overlay_mtu(underlay_mtu: usize) -> usize {
    overhead::largest_tap_mtu(
        underlay_mtu,
        overhead::Underlay::V4,
        overhead::Path::Relayed,
    )
}

/// Default overlay MTU: [`overlay_mtu`] of a 1500-byte underlay, i.e. 1390.
pub const DEFAULT_MTU: usize = overlay_mtu(1500);
