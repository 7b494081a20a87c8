//! What the sans-IO cores hand back to their shells, and the named drop counters.

use std::net::SocketAddr;
use std::ops::Range;

/// One UDP datagram to send: `out.buf[range]` to `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddr,
    /// Bytes within [`Output::buf`].
    pub range: Range<usize>,
}

/// A reusable batch of results. The shell calls [`Output::clear`] after acting on it, so
/// that its buffers are reused and the steady state allocates nothing.
#[derive(Default)]
pub struct Output {
    /// Backing bytes of every transmit and frame in this batch.
    pub buf: Vec<u8>,
    /// Datagrams to send, in order.
    pub transmits: Vec<Transmit>,
    /// Ethernet frames to write to the TAP device (edge only), ranges into `buf`.
    pub frames: Vec<Range<usize>>,
}

impl Output {
    /// Forgets the batch, keeping capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.transmits.clear();
        self.frames.clear();
    }
    /// Queues `buf[start..]` as a datagram to `dst`.
    pub fn transmit_from(&mut self, start: usize, dst: SocketAddr) {
        self.transmits.push(Transmit {
            dst,
            range: start..self.buf.len(),
        });
    }
    /// The bytes of a transmit.
    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        &self.buf[t.range.clone()]
    }
    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty() && self.frames.is_empty()
    }
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a packet or frame was dropped. Every drop is counted under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// The name used in `status --json` and metrics.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Malformed => "malformed", "Too short, unknown type, or a control message that does not parse.";
    BadVersion => "bad_version", "A protocol version this build does not speak.";
    UnknownSession => "unknown_session", "A receiver index that matches no session.";
    DecryptFailed => "decrypt_failed", "The AEAD tag did not verify.";
    Replay => "replay", "A counter already seen or older than the replay window.";
    SourceMismatch => "source_mismatch", "A frame whose source MAC or IP does not belong to the peer that sent it.";
    UnknownPeer => "unknown_peer", "A handshake from a key the supernode has not vouched for.";
    NoRoute => "no_route", "A frame to a MAC no peer owns, or no path to the peer.";
    HandshakeFailed => "handshake_failed", "A handshake message that did not verify.";
    NotForUs => "not_for_us", "A unicast frame to a MAC that is not ours.";
    Stale => "stale", "A handshake response or packet for a session already replaced or expired.";
    QueueFull => "queue_full", "A frame waiting for a handshake when the queue was full.";
    Unsupported => "unsupported", "A frame type we do not forward (e.g. VLAN-tagged).";
    NotMember => "not_member", "A handshake or relay from a key that is not a registered member.";
    Expired => "expired", "A packet on a session older than the reject-after time.";
    RelayDenied => "relay_denied", "A relay request in a community whose relay_policy is direct-only.";
    TooBig => "too_big", "A frame larger than the direct path to its peer carries (answered on the TAP with ICMP fragmentation needed / packet too big).";
    BadCookie => "bad_cookie", "An initiation whose proof of address (mac2) did not verify, or a cookie reply that did not open.";
    RateLimited => "rate_limited", "Over a budget: a source's handshakes past its cookie (Diffie-Hellman per source), or a member's requests to the supernode (member lists, signed lists, lookups).";
    NotSigned => "not_signed", "A peer record (or its handshake) the signed membership does not vouch for: key not on the newest valid list, another address or allowed ranges than signed, or a MAC another member uses (edges with admin_key only).";
    RouterAdvertisement => "router_advertisement", "An IPv6 router advertisement or redirect from a member the community does not let send them (`ipv6_router`).";
    AddressRefused => "address_refused", "An address a supernode assigned that this edge may not take: it is not enrolling (a static or already assigned address), the prefix is not 8 to 32 (128 for IPv6) or not the community network's, the address is no unicast host address or lies outside the network, or the signed membership gives this key another one (an `AddressRefused` event says which).";
    TcpRefused => "tcp_refused", "A TCP fallback connection refused: its source (an IPv4 address, an IPv6 /64) holds 8 already, or 4096 are open and all authenticated (supernode only).";
    EnrolmentLimited => "enrolment_limited", "An enrolment refused by the per-source or per-community bound on new enrolments (answered with a refusal that says when to try again).";
}

/// Counters for every [`DropReason`].
#[derive(Debug, Clone, Default)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    /// Adds one.
    pub fn add(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }
    /// The count for `r`.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }
    /// Name and count of each reason.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (r.name(), self.get(*r)))
    }
    /// Sum of all.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Traffic counters of one peer or member.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Bytes received (inner payload).
    pub rx_bytes: u64,
    /// Bytes sent (inner payload).
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}
