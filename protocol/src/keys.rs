//! Static X25519 identities, their base64 text form, and the MAC address derived from a key.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::fmt;

/// Errors from parsing a key's text form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not base64.
    #[error(
        "not valid base64 (a key is 44 characters of base64, as printed by `genkey`/`pubkey`)"
    )]
    Base64,
    /// The text decodes, but not to 32 bytes.
    #[error("decodes to {0} bytes, but an X25519 key is 32 bytes")]
    Length(usize),
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = B64.decode(text.trim()).map_err(|_| KeyError::Base64)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Length(bytes.len()))
}

/// An X25519 public key: the identity of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses the base64 text form.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Self)
    }
    /// The base64 text form (44 characters).
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    /// The default overlay MAC of the node owning this key: a locally administered unicast
    /// address taken from a BLAKE2s hash of the key, so that it is stable across restarts.
    pub fn derived_mac(&self) -> Mac {
        use blake2::{Blake2s256, Digest};
        let mut h = Blake2s256::new();
        h.update(b"metalvpc mac v1");
        h.update(self.0);
        let d = h.finalize();
        let mut m = [0u8; 6];
        m.copy_from_slice(&d[..6]);
        // Locally administered (bit 1 set), unicast (bit 0 clear).
        m[0] = (m[0] & 0xfc) | 0x02;
        Mac(m)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// An X25519 private key. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct PrivateKey(pub [u8; 32]);

impl PrivateKey {
    /// A new random key from the operating system's generator (`genkey`, tools, tests).
    pub fn generate() -> Self {
        Self::from_rng(&mut crate::rng::Rng::from_seed(crate::rng::os_seed()))
    }
    /// A new key from `rng` (the simulator's seeded keys).
    pub fn from_rng(rng: &mut crate::rng::Rng) -> Self {
        let mut k = rng.bytes32();
        // Clamp as X25519 does, so the stored form is canonical.
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        Self(k)
    }
    /// Parses the base64 text form.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Self)
    }
    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// True for broadcast and multicast (group bit set).
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }
    /// Parses `aa:bb:cc:dd:ee:ff`.
    pub fn parse(text: &str) -> Option<Mac> {
        let mut m = [0u8; 6];
        let mut parts = text.split(':');
        for b in m.iter_mut() {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trip_and_public_derivation() {
        let k = PrivateKey::generate();
        let k2 = PrivateKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let p = k.public_key();
        assert_eq!(PublicKey::from_base64(&p.to_base64()).unwrap(), p);
        assert_eq!(PublicKey::from_base64("abc"), Err(KeyError::Base64));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
    }

    #[test]
    fn derived_mac_is_stable_local_unicast() {
        let p = PrivateKey::generate().public_key();
        let m = p.derived_mac();
        assert_eq!(m, p.derived_mac());
        assert_eq!(m.0[0] & 0x03, 0x02);
        assert_eq!(Mac::parse(&m.to_string()), Some(m));
        assert_eq!(Mac::parse("02:00:00:00:00"), None);
        assert!(Mac::BROADCAST.is_group());
    }
}
