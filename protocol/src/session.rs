//! An established session: the two keys, the send counter and the replay window, plus the
//! cheap sealing and opening of data and relay packets in caller buffers.

use crate::crypto::{AeadKey, SessionKeys};
use crate::replay::{ReplayWindow, REJECT_AFTER_MESSAGES};
use crate::wire::{self, DATA_HEADER_LEN, RELAY_HEADER_LEN, TAG_LEN};
use std::time::Instant;

/// Start a new handshake once a session is this old (seconds).
pub const REKEY_AFTER_SECS: u64 = 120;
/// Never use a session older than this (seconds).
pub const REJECT_AFTER_SECS: u64 = 180;
/// Start a new handshake after this many packets sent on one session.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;

/// Why an incoming data or relay packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The counter was seen before or is too old.
    Replay,
    /// The tag did not verify.
    Decrypt,
}

impl From<OpenError> for crate::io::DropReason {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Replay => crate::io::DropReason::Replay,
            OpenError::Decrypt => crate::io::DropReason::DecryptFailed,
        }
    }
}

/// One direction pair of keys with counters.
pub struct Session {
    /// Our index: peers put it in packets to us.
    pub local_index: u32,
    /// Their index: we put it in packets to them.
    pub remote_index: u32,
    send: AeadKey,
    recv: AeadKey,
    next_counter: u64,
    replay: ReplayWindow,
    /// When the handshake finished.
    pub created: Instant,
    /// Whether we initiated the handshake.
    pub initiator: bool,
    /// A responder may send only after the initiator's first packet on the session proved
    /// that it has the keys (so a replayed initiation cannot redirect traffic).
    pub confirmed: bool,
}

impl Session {
    /// A new session from handshake keys.
    pub fn new(
        local_index: u32,
        remote_index: u32,
        keys: SessionKeys,
        now: Instant,
        initiator: bool,
    ) -> Self {
        Session {
            local_index,
            remote_index,
            send: keys.send,
            recv: keys.recv,
            next_counter: 0,
            replay: ReplayWindow::default(),
            created: now,
            initiator,
            confirmed: initiator,
        }
    }

    /// Seconds since the handshake.
    pub fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_secs()
    }

    /// Can still send and receive.
    pub fn usable(&self, now: Instant) -> bool {
        self.age(now) < REJECT_AFTER_SECS && self.next_counter < REJECT_AFTER_MESSAGES
    }

    /// Due for a new handshake.
    pub fn wants_rekey(&self, now: Instant) -> bool {
        self.age(now) >= REKEY_AFTER_SECS || self.next_counter >= REKEY_AFTER_MESSAGES
    }

    fn take_counter(&mut self) -> u64 {
        let c = self.next_counter;
        self.next_counter += 1;
        c
    }

    /// Appends a data packet carrying `payload` to `buf`.
    pub fn seal_data(&mut self, payload: &[u8], buf: &mut Vec<u8>) {
        let start = buf.len();
        let counter = self.take_counter();
        buf.resize(start + DATA_HEADER_LEN, 0);
        wire::write_data_header(&mut buf[start..], self.remote_index, counter);
        buf.extend_from_slice(payload);
        let (hdr, body) = buf[start..].split_at_mut(DATA_HEADER_LEN);
        let tag = self.send.seal(counter, hdr, body);
        buf.extend_from_slice(&tag);
    }

    /// Opens a data packet in place; returns the plaintext's range within `packet`.
    /// The counter is marked in the replay window only once the tag verified.
    pub fn open_data(
        &mut self,
        counter: u64,
        packet: &mut [u8],
    ) -> Result<std::ops::Range<usize>, OpenError> {
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let (hdr, body) = packet.split_at_mut(DATA_HEADER_LEN);
        let n = self
            .recv
            .open(counter, hdr, body)
            .ok_or(OpenError::Decrypt)?;
        if !self.replay.mark(counter) {
            return Err(OpenError::Replay);
        }
        Ok(DATA_HEADER_LEN..DATA_HEADER_LEN + n)
    }

    /// Turns the bytes `buf[start..]`, which begin with [`RELAY_HEADER_LEN`] bytes of room
    /// followed by an inner packet, into a relay packet to `peer`: writes the header, appends
    /// the tag (authenticating, not encrypting, the inner packet).
    pub fn seal_relay(&mut self, peer: u32, buf: &mut Vec<u8>, start: usize) {
        let counter = self.take_counter();
        wire::write_relay_header(&mut buf[start..], self.remote_index, counter, peer);
        let tag = self.send.seal(counter, &buf[start..], &mut []);
        buf.extend_from_slice(&tag);
    }

    /// Verifies a relay packet; returns the inner packet's range within `packet`.
    pub fn open_relay(
        &mut self,
        counter: u64,
        packet: &[u8],
    ) -> Result<std::ops::Range<usize>, OpenError> {
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let split = packet.len() - TAG_LEN;
        let mut tag: [u8; TAG_LEN] = packet[split..].try_into().unwrap();
        self.recv
            .open(counter, &packet[..split], &mut tag)
            .ok_or(OpenError::Decrypt)?;
        if !self.replay.mark(counter) {
            return Err(OpenError::Replay);
        }
        Ok(RELAY_HEADER_LEN..split)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::Handshake;
    use crate::keys::PrivateKey;

    /// Two sessions that talk to each other.
    pub(crate) fn pair(now: Instant) -> (Session, Session) {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let mut m1 = Vec::new();
        let init = Handshake::initiate(&a, &b.public_key(), b"", &mut m1).unwrap();
        let (resp, _, _) = Handshake::respond(&b, &m1).unwrap();
        let mut m2 = Vec::new();
        let kb = resp.finish_response(b"", &mut m2).unwrap();
        let (ka, _) = init.finish_initiation(&m2).unwrap();
        (
            Session::new(1, 2, ka, now, true),
            Session::new(2, 1, kb, now, false),
        )
    }

    #[test]
    fn data_seal_open_and_replay() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = Vec::new();
        a.seal_data(b"ethernet frame", &mut buf);
        assert_eq!(buf.len(), 14 + wire::DATA_OVERHEAD);
        let Ok(wire::Packet::Data { receiver, counter }) = wire::decode(&buf) else {
            panic!()
        };
        assert_eq!(receiver, a.remote_index);
        let copy = buf.clone();
        let r = b.open_data(counter, &mut buf).unwrap();
        assert_eq!(&buf[r], b"ethernet frame");
        let mut again = copy.clone();
        assert_eq!(b.open_data(counter, &mut again), Err(OpenError::Replay));
        // A forged packet with a fresh counter neither opens nor moves the window.
        let mut forged = copy.clone();
        forged[8] = 9;
        assert_eq!(b.open_data(9, &mut forged), Err(OpenError::Decrypt));
        assert!(b.replay.check(9));
    }

    #[test]
    fn relay_envelope_authenticates_without_encrypting() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = vec![0u8; RELAY_HEADER_LEN];
        buf.extend_from_slice(b"inner packet");
        a.seal_relay(33, &mut buf, 0);
        let Ok(wire::Packet::Relay { counter, peer, .. }) = wire::decode(&buf) else {
            panic!()
        };
        assert_eq!(peer, 33);
        let r = b.open_relay(counter, &buf).unwrap();
        assert_eq!(&buf[r], b"inner packet");
        assert_eq!(b.open_relay(counter, &buf), Err(OpenError::Replay));
        let mut bad = buf.clone();
        bad[RELAY_HEADER_LEN] ^= 1;
        let Ok(wire::Packet::Relay { counter, .. }) = wire::decode(&bad) else {
            panic!()
        };
        assert_eq!(b.open_relay(counter + 1, &bad), Err(OpenError::Decrypt));
    }
}
