//! The outer wire format: every UDP datagram metalvpc sends, edge or supernode.
//!
//! All integers are little-endian. Every packet starts with the same four bytes:
//!
//! ```text
//!  0        1        2        3
//! +--------+--------+--------+--------+
//! | version|  type  |    reserved     |   version = 1; reserved is sent as 0 and ignored
//! +--------+--------+--------+--------+
//! ```
//!
//! | type | message | rest of the packet |
//! |------|---------|--------------------|
//! | 1 | handshake initiation | sender index (4) · Noise IK message 1 |
//! | 2 | handshake response   | sender index (4) · receiver index (4) · Noise IK message 2 |
//! | 3 | cookie reply         | receiver index (4) · nonce (12) · sealed cookie (16) · tag (16) |
//! | 4 | data                 | receiver index (4) · counter (8) · ciphertext · tag (16) |
//! | 5 | relay                | receiver index (4) · counter (8) · peer id (4) · inner packet · tag (16) |
//!
//! Data: the AEAD (ChaCha20-Poly1305) nonce is four zero bytes followed by the counter, the
//! associated data is the 16-byte header. Relay: the inner packet is an edge-to-edge packet
//! (itself end-to-end encrypted) carried in clear; the tag authenticates everything before it
//! under the edge↔supernode session key, so a supernode only relays for members and a member
//! only accepts relays from its supernode. See `docs/protocol.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version this build speaks and puts in every packet.
pub const VERSION: u8 = 1;
/// Message type: handshake initiation.
pub const TYPE_HANDSHAKE_INIT: u8 = 1;
/// Message type: handshake response.
pub const TYPE_HANDSHAKE_RESP: u8 = 2;
/// Message type: cookie reply (a busy responder's proof-of-address request; see `cookie`).
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Message type: transport data.
pub const TYPE_DATA: u8 = 4;
/// Message type: relayed edge-to-edge packet.
pub const TYPE_RELAY: u8 = 5;

/// Bytes before a handshake initiation's Noise message.
pub const INIT_HEADER_LEN: usize = 8;
/// Bytes before a handshake response's Noise message.
pub const RESP_HEADER_LEN: usize = 12;
/// Bytes of a data packet's header (also its AEAD associated data).
pub const DATA_HEADER_LEN: usize = 16;
/// Bytes of a relay packet's header.
pub const RELAY_HEADER_LEN: usize = 20;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Per-packet overhead of a data packet inside the UDP payload.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Extra overhead when a data packet travels through a supernode.
pub const RELAY_OVERHEAD: usize = RELAY_HEADER_LEN + TAG_LEN;
/// The largest UDP payload we accept or send; anything larger is malformed.
pub const MAX_PACKET: usize = 65_535 - 8 - 40;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short for its type, or an unknown type.
    #[error("malformed packet")]
    Malformed,
    /// A version this build does not speak.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
}

/// A decoded outer header; borrowed views into the packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Handshake initiation.
    Init {
        /// Initiator's index for the session being made.
        sender: u32,
        /// Noise message 1.
        noise: &'a [u8],
    },
    /// Handshake response.
    Resp {
        /// Responder's index.
        sender: u32,
        /// The initiator's index, echoed.
        receiver: u32,
        /// Noise message 2.
        noise: &'a [u8],
    },
    /// A busy responder asks for proof of address (see [`crate::cookie`]).
    CookieReply {
        /// The initiation's sender index.
        receiver: u32,
    },
    /// Transport data.
    Data {
        /// The receiving side's session index.
        receiver: u32,
        /// The nonce counter.
        counter: u64,
    },
    /// Relay envelope.
    Relay {
        /// The receiving side's session index (edge↔supernode session).
        receiver: u32,
        /// The nonce counter of that session.
        counter: u64,
        /// To a supernode: the destination member's id. From a supernode: the source's id.
        peer: u32,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decodes the outer header. Cheap: no crypto, no allocation.
pub fn decode(b: &[u8]) -> Result<Packet<'_>, WireError> {
    if b.len() < 4 || b.len() > MAX_PACKET {
        return Err(WireError::Malformed);
    }
    if b[0] != VERSION {
        return Err(WireError::BadVersion(b[0]));
    }
    match b[1] {
        TYPE_HANDSHAKE_INIT if b.len() >= INIT_HEADER_LEN + 96 => Ok(Packet::Init {
            sender: u32_at(b, 4),
            noise: &b[INIT_HEADER_LEN..],
        }),
        TYPE_HANDSHAKE_RESP if b.len() >= RESP_HEADER_LEN + 48 => Ok(Packet::Resp {
            sender: u32_at(b, 4),
            receiver: u32_at(b, 8),
            noise: &b[RESP_HEADER_LEN..],
        }),
        TYPE_COOKIE_REPLY if b.len() == crate::cookie::COOKIE_REPLY_LEN => {
            Ok(Packet::CookieReply {
                receiver: u32_at(b, 4),
            })
        }
        TYPE_DATA if b.len() >= DATA_OVERHEAD => Ok(Packet::Data {
            receiver: u32_at(b, 4),
            counter: u64_at(b, 8),
        }),
        TYPE_RELAY if b.len() >= RELAY_OVERHEAD + 4 => Ok(Packet::Relay {
            receiver: u32_at(b, 4),
            counter: u64_at(b, 8),
            peer: u32_at(b, 16),
        }),
        _ => Err(WireError::Malformed),
    }
}

/// Appends the four common bytes.
pub fn put_common(buf: &mut Vec<u8>, ty: u8) {
    buf.extend_from_slice(&[VERSION, ty, 0, 0]);
}

/// Appends a handshake initiation header; the caller appends the Noise message.
pub fn put_init_header(buf: &mut Vec<u8>, sender: u32) {
    put_common(buf, TYPE_HANDSHAKE_INIT);
    buf.extend_from_slice(&sender.to_le_bytes());
}

/// Appends a handshake response header; the caller appends the Noise message.
pub fn put_resp_header(buf: &mut Vec<u8>, sender: u32, receiver: u32) {
    put_common(buf, TYPE_HANDSHAKE_RESP);
    buf.extend_from_slice(&sender.to_le_bytes());
    buf.extend_from_slice(&receiver.to_le_bytes());
}

/// Writes a data header into the first 16 bytes of `out`.
pub fn write_data_header(out: &mut [u8], receiver: u32, counter: u64) {
    out[..4].copy_from_slice(&[VERSION, TYPE_DATA, 0, 0]);
    out[4..8].copy_from_slice(&receiver.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
}

/// Writes a relay header into the first 20 bytes of `out`.
pub fn write_relay_header(out: &mut [u8], receiver: u32, counter: u64, peer: u32) {
    out[..4].copy_from_slice(&[VERSION, TYPE_RELAY, 0, 0]);
    out[4..8].copy_from_slice(&receiver.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
    out[16..20].copy_from_slice(&peer.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// A small bounded codec for the control messages carried inside encrypted payloads.

/// Writes control-message fields.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends raw bytes of fixed, known length.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Appends a string of at most 255 bytes (longer is cut at a char boundary).
    pub fn str(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u8(end as u8).raw(&s.as_bytes()[..end])
    }
    /// Appends an IP address: family byte (4 or 6) then the address.
    pub fn ip(&mut self, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.u8(4).raw(&a.octets()),
            IpAddr::V6(a) => self.u8(6).raw(&a.octets()),
        }
    }
    /// Appends a socket address: IP then port.
    pub fn sockaddr(&mut self, a: SocketAddr) -> &mut Self {
        self.ip(a.ip()).u16(a.port())
    }
}

/// Reads control-message fields; every read is bounds-checked.
pub struct Reader<'a> {
    b: &'a [u8],
}

/// A control message was cut short or held an impossible value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed control message")]
pub struct Truncated;

impl<'a> Reader<'a> {
    /// Reads from `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Self { b }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.b.len()
    }
    /// Reads `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        if self.b.len() < n {
            return Err(Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    /// Reads a byte.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.raw(1)?[0])
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.raw(2)?.try_into().unwrap()))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.raw(4)?.try_into().unwrap()))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.raw(8)?.try_into().unwrap()))
    }
    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        Ok(self.raw(N)?.try_into().unwrap())
    }
    /// Reads a string written by [`Writer::str`].
    pub fn str(&mut self) -> Result<String, Truncated> {
        let n = self.u8()? as usize;
        let bytes = self.raw(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Truncated)
    }
    /// Reads an IP address.
    pub fn ip(&mut self) -> Result<IpAddr, Truncated> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(Truncated),
        }
    }
    /// Reads a socket address.
    pub fn sockaddr(&mut self) -> Result<SocketAddr, Truncated> {
        let ip = self.ip()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    /// Reads a list count, refusing counts above `max` (bounds memory on hostile input).
    pub fn count(&mut self, max: usize) -> Result<usize, Truncated> {
        let n = self.u8()? as usize;
        if n > max {
            return Err(Truncated);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_round_trip() {
        let mut b = Vec::new();
        put_init_header(&mut b, 0xdeadbeef);
        b.resize(INIT_HEADER_LEN + 96, 7);
        assert_eq!(
            decode(&b),
            Ok(Packet::Init {
                sender: 0xdeadbeef,
                noise: &[7u8; 96][..]
            })
        );

        let mut b = Vec::new();
        put_resp_header(&mut b, 1, 2);
        b.resize(RESP_HEADER_LEN + 48, 9);
        assert_eq!(
            decode(&b),
            Ok(Packet::Resp {
                sender: 1,
                receiver: 2,
                noise: &[9u8; 48][..]
            })
        );

        let mut b = vec![0u8; DATA_OVERHEAD];
        write_data_header(&mut b, 77, u64::MAX - 3);
        assert_eq!(
            decode(&b),
            Ok(Packet::Data {
                receiver: 77,
                counter: u64::MAX - 3
            })
        );

        let mut b = vec![0u8; RELAY_OVERHEAD + 4];
        write_relay_header(&mut b, 5, 6, 7);
        assert_eq!(
            decode(&b),
            Ok(Packet::Relay {
                receiver: 5,
                counter: 6,
                peer: 7
            })
        );
    }

    #[test]
    fn short_unknown_and_foreign_version_are_refused() {
        assert_eq!(decode(&[]), Err(WireError::Malformed));
        assert_eq!(decode(&[1, 4, 0, 0, 1]), Err(WireError::Malformed));
        assert_eq!(decode(&[1, 3, 0, 0, 0, 0, 0, 0]), Err(WireError::Malformed));
        assert_eq!(decode(&[2; 64]), Err(WireError::BadVersion(2)));
    }

    #[test]
    fn reader_round_trip() {
        let mut w = Writer::default();
        let sa: SocketAddr = "[2001:db8::1]:7654".parse().unwrap();
        w.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .str("héllo")
            .ip("10.0.0.1".parse().unwrap())
            .sockaddr(sa);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.ip(), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(r.sockaddr(), Ok(sa));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.u8(), Err(Truncated));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&b);
        }
    }
}
