//! Proof of address for handshake initiations under load (after WireGuard's cookies).
//!
//! A handshake initiation costs its responder several Diffie-Hellman operations before it
//! knows whether the initiator is anyone it wants. While initiations arrive faster than
//! [`CookieGuard::limit`] per second, a responder answers a direct initiation that carries no
//! valid `mac2` with a small *cookie reply* instead of doing that work:
//!
//! ```text
//! cookie  = BLAKE2s-128(key = secret (rotated every 2 min), source IP ‖ source port)
//! reply   = header (version, type 3, 0, 0) · receiver (4: the initiation's sender index)
//!           · nonce (12) · ChaCha20-Poly1305(key, nonce, cookie, aad = initiation[..40])
//! key     = BLAKE2s-256("metalvpc cookie v1" ‖ responder's static public key)
//! ```
//!
//! The reply (52 bytes) is smaller than any initiation (at least 104), so it cannot amplify,
//! and the responder keeps no state for it. Only a sender that receives at its source address
//! learns the cookie; it sends the same initiation again with flag bit 0 of header byte 2 set
//! and `mac2 = BLAKE2s-128(key = cookie, initiation without mac2)` appended, which the
//! responder checks (against this and the previous secret) before any Diffie-Hellman. Spoofed
//! floods therefore cost one keyed hash each, and legitimate initiators one extra round trip.
//! A valid `mac2` buys Diffie-Hellman only within its source's budget
//! ([`crate::ratelimit::SourceLimiter`]: 20 per second, 5 at once, per IPv4 address or IPv6
//! /64); beyond it the initiation is dropped ([`Verdict::RateLimited`]), so one cookie does not
//! buy unlimited work.
//! Initiations that arrive through a supernode relay are exempt: the relay envelope already
//! proves their origin.

use crate::keys::PublicKey;
use crate::ratelimit::SourceLimiter;
use crate::rng::Rng;
use crate::wire::{self, INIT_HEADER_LEN};
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use ring::aead;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Length of a cookie and of `mac2`.
pub const COOKIE_LEN: usize = 16;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 4 + 4 + 12 + COOKIE_LEN + 16;
/// Bit of header byte 2 of an initiation: the last 16 bytes are `mac2`.
pub const FLAG_MAC2: u8 = 1;
/// Bytes of the initiation bound into the reply as associated data (header, sender index
/// and the initiator's ephemeral key).
const AAD_LEN: usize = INIT_HEADER_LEN + 32;
/// How often the cookie secret changes (the previous one stays valid for one more period).
const ROTATE: Duration = Duration::from_secs(120);
/// Default initiations per second a responder processes before it asks for cookies.
pub const DEFAULT_LIMIT: u32 = 100;

type Mac16 = Blake2sMac<blake2::digest::consts::U16>;

fn mac16(key: &[u8], parts: &[&[u8]]) -> [u8; COOKIE_LEN] {
    let mut m = <Mac16 as KeyInit>::new_from_slice(key).expect("BLAKE2s takes 1-32 byte keys");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

fn reply_key(responder: &PublicKey) -> aead::LessSafeKey {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, b"metalvpc cookie v1");
    Digest::update(&mut h, responder.0);
    let k: [u8; 32] = h.finalize().into();
    aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &k).expect("32-byte key"),
    )
}

/// Compares without an early exit (no timing hint about where two MACs differ).
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn addr_bytes(src: SocketAddr) -> Vec<u8> {
    let mut b = match src.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    b.extend_from_slice(&src.port().to_le_bytes());
    b
}

/// What to do with an initiation.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; the Noise message is `packet[INIT_HEADER_LEN..end]` (without any `mac2`).
    Process {
        /// End of the Noise message.
        end: usize,
    },
    /// A cookie reply was written to the output: do nothing else.
    CookieSent,
    /// A `mac2` that does not verify: drop.
    BadMac2,
    /// A valid `mac2` from a source over its budget of Diffie-Hellman work: drop.
    RateLimited,
}

/// The responder's side: load accounting and cookie checks. Pure: time comes in as `now`.
pub struct CookieGuard {
    key: aead::LessSafeKey,
    rng: Rng,
    secret: [u8; 32],
    previous: [u8; 32],
    rotated: Instant,
    window: Instant,
    count: u32,
    under_load_until: Option<Instant>,
    sources: SourceLimiter,
    /// Initiations per second processed before cookies are required.
    pub limit: u32,
    /// Cookie replies sent so far.
    pub replies: u64,
}

impl CookieGuard {
    /// A guard for the responder whose static public key is `us`; its secrets and nonces
    /// come from `rng` (the core hands it a child of its own generator).
    pub fn new(us: &PublicKey, limit: u32, now: Instant, mut rng: Rng) -> CookieGuard {
        CookieGuard {
            key: reply_key(us),
            secret: rng.bytes32(),
            previous: rng.bytes32(),
            rng,
            rotated: now,
            window: now,
            count: 0,
            under_load_until: None,
            sources: SourceLimiter::default(),
            limit,
            replies: 0,
        }
    }

    /// True while cookies are required.
    pub fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
    }

    fn cookie(secret: &[u8; 32], src: SocketAddr) -> [u8; COOKIE_LEN] {
        mac16(secret, &[&addr_bytes(src)])
    }

    /// Checks a direct initiation `pkt` (the whole datagram, already decoded as one) from
    /// `src` before any Diffie-Hellman; may append a cookie reply to `out`.
    pub fn check(
        &mut self,
        now: Instant,
        src: SocketAddr,
        pkt: &[u8],
        out: &mut crate::io::Output,
    ) -> Verdict {
        if now.saturating_duration_since(self.rotated) >= ROTATE {
            self.previous = self.secret;
            self.secret = self.rng.bytes32();
            self.rotated = now;
        }
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.limit {
            // Busy: require cookies for the rest of this second and the next.
            self.under_load_until = Some(self.window + Duration::from_secs(2));
        }
        let flagged = pkt.len() > 2 && pkt[2] & FLAG_MAC2 != 0;
        let end = if flagged {
            match pkt.len().checked_sub(COOKIE_LEN) {
                Some(e) if e >= AAD_LEN => e,
                _ => return Verdict::BadMac2,
            }
        } else {
            pkt.len()
        };
        if flagged {
            let mac2 = &pkt[end..];
            let ok = [self.secret, self.previous].iter().any(|s| {
                let c = Self::cookie(s, src);
                let expect = mac16(&c, &[&pkt[..end]]);
                equal_in_constant_time(&expect, mac2)
            });
            return if !ok {
                Verdict::BadMac2
            } else if !self.sources.allow(now, src) {
                Verdict::RateLimited
            } else {
                Verdict::Process { end }
            };
        }
        if !self.under_load(now) || pkt.len() < AAD_LEN {
            return Verdict::Process { end };
        }
        // Reply with a cookie; keep nothing.
        let cookie = Self::cookie(&self.secret, src);
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce);
        let start = out.buf.len();
        out.buf
            .extend_from_slice(&[wire::VERSION, wire::TYPE_COOKIE_REPLY, 0, 0]);
        out.buf.extend_from_slice(&pkt[4..8]); // the initiator's sender index
        out.buf.extend_from_slice(&nonce);
        let mut sealed = cookie.to_vec();
        if self
            .key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&pkt[..AAD_LEN]),
                &mut sealed,
            )
            .is_err()
        {
            out.buf.truncate(start);
            return Verdict::Process { end };
        }
        out.buf.extend_from_slice(&sealed);
        out.transmit_from(start, src);
        self.replies += 1;
        Verdict::CookieSent
    }
}

/// The initiator's side: opens a cookie reply to the initiation `init` (the bytes it sent)
/// from the responder `responder`, and returns `init` with the flag set and `mac2` appended.
pub fn answer(responder: &PublicKey, init: &[u8], reply: &[u8]) -> Option<Vec<u8>> {
    if reply.len() != COOKIE_REPLY_LEN || init.len() < AAD_LEN {
        return None;
    }
    let nonce: [u8; 12] = reply[8..20].try_into().ok()?;
    let mut sealed = reply[20..].to_vec();
    let cookie = reply_key(responder)
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&init[..AAD_LEN]),
            &mut sealed,
        )
        .ok()?
        .to_vec();
    let mut again = init.to_vec();
    again[2] |= FLAG_MAC2;
    let mac2 = mac16(&cookie, &[&again]);
    again.extend_from_slice(&mac2);
    Some(again)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Output;
    use crate::keys::PrivateKey;

    fn init(len: usize) -> Vec<u8> {
        let mut p = vec![7u8; len];
        p[0] = wire::VERSION;
        p[1] = wire::TYPE_HANDSHAKE_INIT;
        p[2] = 0;
        p[3] = 0;
        p
    }

    #[test]
    fn under_load_a_cookie_round_trip_admits_the_real_sender_only() {
        let now = Instant::now();
        let us = PrivateKey::generate().public_key();
        let mut g = CookieGuard::new(&us, 3, now, Rng::from_seed([3; 32]));
        let src: SocketAddr = "198.18.0.5:4000".parse().unwrap();
        let mut out = Output::default();
        let pkt = init(150);
        for _ in 0..3 {
            assert_eq!(
                g.check(now, src, &pkt, &mut out),
                Verdict::Process { end: 150 }
            );
        }
        assert!(out.transmits.is_empty(), "no cookies while not busy");
        // The fourth in the same second: a cookie reply, smaller than the initiation.
        assert_eq!(g.check(now, src, &pkt, &mut out), Verdict::CookieSent);
        assert_eq!(out.transmits.len(), 1);
        let reply = out.bytes(&out.transmits[0]).to_vec();
        assert_eq!(reply.len(), COOKIE_REPLY_LEN);
        assert!(reply.len() < pkt.len());
        // The initiator answers with mac2: processed, without the trailer.
        let again = answer(&us, &pkt, &reply).expect("opens");
        assert_eq!(
            g.check(now, src, &again, &mut out),
            Verdict::Process { end: 150 }
        );
        // The same mac2 from another address (a spoofer replaying it) is refused.
        let other: SocketAddr = "198.18.0.6:4000".parse().unwrap();
        assert_eq!(g.check(now, other, &again, &mut out), Verdict::BadMac2);
        // A reply for someone else's initiation, or from another responder, does not open.
        let mut different = pkt.clone();
        different[20] ^= 1;
        assert!(answer(&us, &different, &reply).is_none());
        let them = PrivateKey::generate().public_key();
        assert!(answer(&them, &pkt, &reply).is_none());
        // Load passes: no cookie needed any more.
        let later = now + Duration::from_secs(3);
        assert_eq!(
            g.check(later, src, &pkt, &mut out),
            Verdict::Process { end: 150 }
        );
        // A cookie stays good across one rotation.
        let rotated = now + ROTATE + Duration::from_secs(1);
        assert_eq!(
            g.check(rotated, src, &again, &mut out),
            Verdict::Process { end: 150 }
        );
    }

    #[test]
    fn garbage_with_the_flag_never_panics() {
        let now = Instant::now();
        let us = PrivateKey::generate().public_key();
        let mut g = CookieGuard::new(&us, 0, now, Rng::from_seed([4; 32]));
        let src: SocketAddr = "198.18.0.5:4000".parse().unwrap();
        let mut out = Output::default();
        for len in 0..200 {
            let mut p = init(len.max(4));
            p[2] = FLAG_MAC2;
            let _ = g.check(now, src, &p, &mut out);
            let _ = answer(&us, &p, &p);
        }
    }
}
