//! Registration handshakes: an initiation (past the cookie guard in `handle_udp`) is a
//! Noise response carrying either a `RegisterAck`, or a `RegisterNak` that says why it was
//! refused, never larger than the initiation. An accepted registration stays pending until
//! the edge confirms its key with a packet in the new session (`Table::open`): only then do
//! its endpoint and announcements take effect, so a replayed initiation (even after a
//! restart forgot the timestamp floor) or one sent from a spoofed source changes nothing.

use super::limits::filter_locals;
use super::table::Announced;
use super::{Event, Refusal, Supernode};
use crate::control::{Control, NakCode};
use crate::crypto::Cipher;
use crate::crypto::{Handshake, RESP_NOISE_OVERHEAD};
use crate::io::{DropReason, Output};
use crate::keys::PublicKey;
use crate::session::Session;
use crate::wire;
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes of a `RegisterNak` besides its message: type, code, message length.
const NAK_OVERHEAD: usize = 3;

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Supernode {
    /// A handshake initiation (its Noise part is `noise`) from `src` with index `sender`.
    pub(super) fn on_init(
        &mut self,
        now: Instant,
        src: SocketAddr,
        sender: u32,
        noise: &[u8],
        out: &mut Output,
    ) {
        let (hs, remote, payload) = match Handshake::respond_with(
            Cipher::ChaCha20Poly1305,
            &self.key,
            noise,
            &mut self.rng,
        ) {
            Ok(x) => x,
            Err(_) => return self.drops.add(DropReason::HandshakeFailed),
        };
        let Ok(Control::Register {
            community,
            address,
            mac,
            instance,
            timestamp,
            endpoints,
            join,
            cipher,
            ..
        }) = Control::decode(&payload)
        else {
            return self.drops.add(DropReason::Malformed);
        };
        let enrolled = match join {
            Some(join) => self.enrol(now, src, &community, &remote, &join, timestamp),
            None => Ok(None),
        };
        let (address, assigned) = match &enrolled {
            Ok(Some(a)) => (a.0, Some(*a)),
            _ => (address, None),
        };
        let verdict = match enrolled {
            Err(e) => Err(e),
            Ok(_) => self
                .check_registration(&community, &remote, address, mac)
                .and_then(|r| self.check_cipher(r, &remote, cipher).map(|()| r)),
        };
        let r = match verdict {
            Ok(r) => r,
            Err(refusal) => {
                return self.refuse(src, sender, noise, hs, remote, community, refusal, out)
            }
        };
        let node = self.table.node_mut(r);
        if timestamp <= node.last_timestamp {
            // A replayed (or reordered old) initiation.
            return self.drops.add(DropReason::Replay);
        }
        node.last_timestamp = timestamp;
        self.claim_mac(&community, remote, mac);
        let local_index = self.table.fresh_index(&mut self.rng);
        let id = self.table.node(r).id;
        let comm = self.table.community(r.community);
        let endpoints = filter_locals(&comm.network, endpoints);
        let ack = Control::RegisterAck {
            id,
            observed: src,
            epoch: comm.epoch,
            interval: self.interval,
            relay: comm.relay,
            membership: comm.signed_version(),
            assigned,
        };
        let start = out.buf.len();
        wire::put_resp_header(&mut out.buf, local_index, sender);
        let keys = match hs.finish_response(&ack.encode(), &mut out.buf) {
            Ok(k) => k,
            Err(_) => {
                out.buf.truncate(start);
                return self.drops.add(DropReason::HandshakeFailed);
            }
        };
        out.transmit_from(start, src);
        self.registrations += 1;
        self.tcp.authenticated(now, src);
        let session = Session::new(local_index, sender, keys, now, false);
        let announced = Announced {
            endpoint: src,
            locals: endpoints,
            mac,
            instance,
        };
        // In force once the edge confirms the key (`Supernode::confirmed`).
        self.table.register_pending(r, session, announced, now);
    }

    /// Answers a refused initiation with the refusal, so the operator of the edge sees why;
    /// the answer is smaller than the initiation, and no state is kept.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        src: SocketAddr,
        sender: u32,
        noise: &[u8],
        hs: Handshake,
        remote: PublicKey,
        community: String,
        (code, reason): (NakCode, String),
        out: &mut Output,
    ) {
        self.refused += 1;
        self.drops.add(if code == NakCode::RateLimited {
            DropReason::EnrolmentLimited
        } else {
            DropReason::NotMember
        });
        self.events.push(Event::Refused(Refusal {
            from: src,
            key: remote,
            community,
            reason: reason.clone(),
        }));
        // No amplification: the refusal is never larger than the initiation it answers (the
        // message is cut to fit; edges pad their initiation to REGISTER_INIT_PAYLOAD_MIN so that a
        // whole explanation fits).
        let room = (wire::INIT_HEADER_LEN + noise.len())
            .saturating_sub(wire::RESP_HEADER_LEN + RESP_NOISE_OVERHEAD + NAK_OVERHEAD);
        let start = out.buf.len();
        wire::put_resp_header(&mut out.buf, 0, sender);
        let nak = Control::RegisterNak {
            code,
            message: cut_at_char(&reason, room).to_string(),
        }
        .encode();
        if hs.finish_response(&nak, &mut out.buf).is_ok() {
            out.transmit_from(start, src);
        } else {
            out.buf.truncate(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::one_member;
    use super::*;
    use crate::wire::Packet;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Found by the `session_mix` fuzz target (docs/fuzzing.md, crash 1): a handshake
    /// initiation from a key that is no member, with an unpadded Register, was answered by a
    /// refusal of 235 bytes for its 139: a 1.7x amplification towards a spoofed source. These
    /// are the exact 139 bytes (initiator key [30; 32], supernode key [1; 32], both clamped).
    #[test]
    fn refusal_is_never_larger_than_the_initiation() {
        let init = hex(
            "010100000403020140c4702f3c00472d71accbc68a306089fb7f312e9d59693d1c809330a7fbd16c4eab\
             ce23307466e1f661d3d8f4daeea91e05cef0502ef9db2f3b0a83740e1d7da2c830394b5b2327f8187cae0f\
             5512e60c5e5a04dfd2a4f291b19124c55bb131cddae55c28b41d09fdd4de0e958b960633ce4cf96b794f0f0c\
             c516968b7fe308aa7705",
        );
        assert_eq!(init.len(), 139);
        let now = Instant::now();
        let mut sn = one_member(now);
        let src: SocketAddr = "198.18.0.200:50000".parse().unwrap();
        let mut out = Output::default();
        let mut pkt = init.clone();
        sn.handle_udp(now, src, &mut pkt, &mut out);
        assert_eq!(out.transmits.len(), 1, "the refusal is still sent");
        let t = &out.transmits[0];
        assert_eq!(t.dst, src);
        assert!(
            t.range.len() <= init.len(),
            "{} bytes answered {}",
            t.range.len(),
            init.len()
        );
        assert!(matches!(
            wire::decode(out.bytes(t)),
            Ok(Packet::Resp {
                sender: 0,
                receiver: 0x0102_0304,
                ..
            })
        ));
        assert_eq!(sn.status(now).refused, 1);
        assert_eq!(cut_at_char("héllo", 2), "h");
        assert_eq!(cut_at_char("héllo", 3), "hé");
        assert_eq!(cut_at_char("abc", 10), "abc");
    }
}
