//! The data-plane AEAD seam and the Noise handshake wrappers.
//!
//! Handshakes use `snow` with `Noise_IK_25519_ChaChaPoly_BLAKE2s`: the initiator knows the
//! responder's static key (the supernode's from the edge config; a peer's from the
//! supernode), and the first message carries the initiator's static key encrypted. After the
//! handshake the two transport keys are taken out of `snow` (`dangerously_get_raw_split`) and
//! the data plane seals with `ring`'s ChaCha20-Poly1305 in place, with our own 64-bit counter
//! as nonce: `snow`'s transport mode would copy and rebuild the cipher per packet.

use crate::keys::{PrivateKey, PublicKey};
use crate::rng::Rng;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

/// The Noise protocol name, fixed for protocol version 1.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake hash, so a handshake of another protocol never validates.
pub const PROLOGUE: &[u8] = b"metalvpc protocol 1";
/// The prologue of peer handshakes in a community using AES-256-GCM: two edges configured
/// with different ciphers can never complete a handshake, so they never disagree silently.
pub const PROLOGUE_AES: &[u8] = b"metalvpc protocol 1 aes-256-gcm";
/// Size of Noise IK message 1 without payload: e (32) + s (32 + 16) + payload tag (16).
pub const INIT_NOISE_OVERHEAD: usize = 96;
/// Size of Noise IK message 2 without payload: e (32) + payload tag (16).
pub const RESP_NOISE_OVERHEAD: usize = 48;

/// The data-plane AEAD of a community (`cipher` in the configs). Both have a 16-byte tag
/// and a 12-byte nonce, so the wire format is the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Cipher {
    /// ChaCha20-Poly1305: fast on any CPU; the default.
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM: faster where every member has AES and carry-less multiply instructions.
    Aes256Gcm,
}

impl Cipher {
    /// Every cipher, for error messages and benchmarks.
    pub const ALL: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    /// The name used in config files and status.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Parses a config name.
    pub fn from_name(s: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The code carried in control messages.
    pub fn code(self) -> u8 {
        match self {
            Cipher::ChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    /// The cipher for a control-message code; `None` for a code this build does not know.
    pub fn from_code(c: u8) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|x| x.code() == c)
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        }
    }
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A one-direction data-plane key (ChaCha20-Poly1305 or AES-256-GCM).
pub struct AeadKey(LessSafeKey);

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl AeadKey {
    /// Wraps 32 raw key bytes as a ChaCha20-Poly1305 key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_cipher(Cipher::ChaCha20Poly1305, key)
    }

    /// Wraps 32 raw key bytes for `cipher`.
    pub fn with_cipher(cipher: Cipher, key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(cipher.algorithm(), key).expect("both ciphers take 32-byte keys"),
        ))
    }

    /// Encrypts `data` in place and returns the tag to append.
    pub fn seal(&self, counter: u64, aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), data)
            .expect("sealing cannot fail for lengths below the AEAD limits");
        tag.as_ref().try_into().unwrap()
    }

    /// Decrypts `data_and_tag` in place; returns the plaintext length.
    pub fn open(&self, counter: u64, aad: &[u8], data_and_tag: &mut [u8]) -> Option<usize> {
        self.0
            .open_in_place(nonce(counter), Aad::from(aad), data_and_tag)
            .ok()
            .map(|p| p.len())
    }
}

/// A Noise handshake in progress, and the data-plane cipher its keys will be used with.
pub struct Handshake(snow::HandshakeState, Cipher);

/// A handshake failed (bad message, wrong key, decryption failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("handshake failed")]
pub struct HandshakeError;

impl From<snow::Error> for HandshakeError {
    fn from(_: snow::Error) -> Self {
        HandshakeError
    }
}

/// A snow builder whose ephemeral key comes from `rng` (never from the OS inside the core).
fn builder<'a>(
    local: &'a PrivateKey,
    cipher: Cipher,
    rng: &mut Rng,
) -> Result<snow::Builder<'a>, HandshakeError> {
    let params = NOISE_PARAMS.parse().map_err(|_| HandshakeError)?;
    let prologue = match cipher {
        Cipher::ChaCha20Poly1305 => PROLOGUE,
        Cipher::Aes256Gcm => PROLOGUE_AES,
    };
    Ok(snow::Builder::with_resolver(params, rng.noise_resolver())
        .local_private_key(&local.0)?
        .prologue(prologue)?)
}

/// Keys of a finished handshake.
pub struct SessionKeys {
    /// Key for what we send.
    pub send: AeadKey,
    /// Key for what we receive.
    pub recv: AeadKey,
}

impl Handshake {
    /// Starts as initiator towards `remote`, appending message 1 (with `payload`) to `out`;
    /// the session will use ChaCha20-Poly1305. The ephemeral key comes from a generator seeded
    /// by the OS: for tools and tests. The cores call [`Handshake::initiate_with`] with their
    /// own seeded generator.
    pub fn initiate(
        local: &PrivateKey,
        remote: &PublicKey,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Handshake, HandshakeError> {
        let mut rng = Rng::from_seed(crate::rng::os_seed());
        Self::initiate_with(
            Cipher::ChaCha20Poly1305,
            local,
            remote,
            payload,
            out,
            &mut rng,
        )
    }

    /// [`Handshake::initiate`] for a session using `cipher` (bound into the handshake), with
    /// the ephemeral key drawn from `rng`.
    pub fn initiate_with(
        cipher: Cipher,
        local: &PrivateKey,
        remote: &PublicKey,
        payload: &[u8],
        out: &mut Vec<u8>,
        rng: &mut Rng,
    ) -> Result<Handshake, HandshakeError> {
        let mut hs = builder(local, cipher, rng)?
            .remote_public_key(&remote.0)?
            .build_initiator()?;
        let start = out.len();
        out.resize(start + INIT_NOISE_OVERHEAD + payload.len(), 0);
        let n = hs.write_message(payload, &mut out[start..])?;
        out.truncate(start + n);
        Ok(Handshake(hs, cipher))
    }

    /// Reads message 1 as responder. Returns the state, the initiator's static key and the
    /// payload. The caller decides whether it accepts that key before answering. Seeded by the
    /// OS, as [`Handshake::initiate`]: for tools and tests.
    pub fn respond(
        local: &PrivateKey,
        msg: &[u8],
    ) -> Result<(Handshake, PublicKey, Vec<u8>), HandshakeError> {
        let mut rng = Rng::from_seed(crate::rng::os_seed());
        Self::respond_with(Cipher::ChaCha20Poly1305, local, msg, &mut rng)
    }

    /// [`Handshake::respond`] for a session using `cipher`; an initiation made for another
    /// cipher fails. The responder's ephemeral key (message 2) comes from `rng`.
    pub fn respond_with(
        cipher: Cipher,
        local: &PrivateKey,
        msg: &[u8],
        rng: &mut Rng,
    ) -> Result<(Handshake, PublicKey, Vec<u8>), HandshakeError> {
        let mut hs = builder(local, cipher, rng)?.build_responder()?;
        let mut payload = vec![0u8; msg.len()];
        let n = hs.read_message(msg, &mut payload)?;
        payload.truncate(n);
        let rs: [u8; 32] = hs
            .get_remote_static()
            .ok_or(HandshakeError)?
            .try_into()
            .map_err(|_| HandshakeError)?;
        Ok((Handshake(hs, cipher), PublicKey(rs), payload))
    }

    /// Responder: appends message 2 (with `payload`) to `out` and returns the session keys.
    pub fn finish_response(
        mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<SessionKeys, HandshakeError> {
        let start = out.len();
        out.resize(start + RESP_NOISE_OVERHEAD + payload.len(), 0);
        let n = self.0.write_message(payload, &mut out[start..])?;
        out.truncate(start + n);
        let (i2r, r2i) = self.0.dangerously_get_raw_split();
        Ok(SessionKeys {
            send: AeadKey::with_cipher(self.1, &r2i),
            recv: AeadKey::with_cipher(self.1, &i2r),
        })
    }

    /// Initiator: reads message 2; returns the keys and the payload.
    pub fn finish_initiation(
        mut self,
        msg: &[u8],
    ) -> Result<(SessionKeys, Vec<u8>), HandshakeError> {
        let mut payload = vec![0u8; msg.len()];
        let n = self.0.read_message(msg, &mut payload)?;
        payload.truncate(n);
        if !self.0.is_handshake_finished() {
            return Err(HandshakeError);
        }
        let (i2r, r2i) = self.0.dangerously_get_raw_split();
        Ok((
            SessionKeys {
                send: AeadKey::with_cipher(self.1, &i2r),
                recv: AeadKey::with_cipher(self.1, &r2i),
            },
            payload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ik_handshake_agrees_on_keys_and_authenticates_the_initiator() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let mut m1 = Vec::new();
        let init = Handshake::initiate(&a, &b.public_key(), b"hello", &mut m1).unwrap();
        let (resp, who, payload) = Handshake::respond(&b, &m1).unwrap();
        assert_eq!(who, a.public_key());
        assert_eq!(payload, b"hello");
        let mut m2 = Vec::new();
        let kb = resp.finish_response(b"ack", &mut m2).unwrap();
        let (ka, p2) = init.finish_initiation(&m2).unwrap();
        assert_eq!(p2, b"ack");

        let mut data = *b"frame bytes";
        let tag = ka.send.seal(7, b"hdr", &mut data);
        let mut wire = data.to_vec();
        wire.extend_from_slice(&tag);
        let mut tampered = wire.clone();
        assert_eq!(kb.recv.open(7, b"hdr", &mut wire), Some(11));
        assert_eq!(&wire[..11], b"frame bytes");
        tampered[0] ^= 1;
        assert_eq!(kb.recv.open(7, b"hdr", &mut tampered), None);
        // Wrong counter (nonce) fails.
        let mut again = data.to_vec();
        again.extend_from_slice(&tag);
        assert_eq!(kb.recv.open(8, b"hdr", &mut again), None);
    }

    #[test]
    fn aes_sessions_work_and_a_cipher_mismatch_never_completes() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let mut m1 = Vec::new();
        let rng = &mut Rng::from_seed([1; 32]);
        let init =
            Handshake::initiate_with(Cipher::Aes256Gcm, &a, &b.public_key(), b"", &mut m1, rng)
                .unwrap();
        // A ChaCha20 responder cannot read an AES initiation (the prologues differ).
        assert!(Handshake::respond_with(Cipher::ChaCha20Poly1305, &b, &m1, rng).is_err());
        let (resp, _, _) = Handshake::respond_with(Cipher::Aes256Gcm, &b, &m1, rng).unwrap();
        let mut m2 = Vec::new();
        let kb = resp.finish_response(b"", &mut m2).unwrap();
        let (ka, _) = init.finish_initiation(&m2).unwrap();
        let mut data = *b"aes frame";
        let tag = ka.send.seal(1, b"h", &mut data);
        // The sealed bytes are AES-GCM: a ChaCha20 key with the same bytes does not open them.
        let mut wire = data.to_vec();
        wire.extend_from_slice(&tag);
        assert_eq!(kb.recv.open(1, b"h", &mut wire.clone()), Some(9));
        assert_eq!(Cipher::from_name("aes-256-gcm"), Some(Cipher::Aes256Gcm));
        assert_eq!(
            Cipher::from_code(Cipher::Aes256Gcm.code()),
            Some(Cipher::Aes256Gcm)
        );
        assert_eq!(Cipher::from_name("aes"), None);
    }

    #[test]
    fn initiation_to_the_wrong_responder_fails() {
        let (a, b, c) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let mut m1 = Vec::new();
        Handshake::initiate(&a, &b.public_key(), b"", &mut m1).unwrap();
        assert!(Handshake::respond(&c, &m1).is_err());
        assert!(Handshake::respond(&b, &m1[..m1.len() - 1]).is_err());
    }
}
