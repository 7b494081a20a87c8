//! Signed membership: the community's member list (keys, addresses, allowed ranges), versioned
//! and signed with an administrator's Ed25519 key. Supernodes only carry the signed bytes;
//! edges configured with the administrator's public key accept a peer only if the newest
//! valid list they have names it with the same address and ranges. A supernode can then deny
//! service, but it cannot add a member or move an address (see `docs/signed-membership.md`).
//!
//! File and wire format (all integers little-endian, strings and IPs as in the control
//! messages):
//!
//! ```text
//! body  = magic "metalvpc members" (16 bytes) | format u8 (= 1) | community str
//!       | version u64 | count u16 | count × member
//! member = key [32] | name str | address ip | cidr count u8 | cidr count × (ip, prefix u8)
//!          [| flags u8, format 2 only: bit 0 = ipv6_router]
//! file  = body | Ed25519 signature over body (64 bytes)
//! ```
//!
//! A list in which no member has a flag set is written in format 1, which every edge reads;
//! format 2 (a flags byte per member) only when one has, and an edge reading format 1 takes
//! every flag as unset.
//!
//! Decoding is strict: no trailing bytes, no duplicate keys or addresses, bounded counts
//! ([`MAX_MEMBERS`], [`MAX_ALLOWED_CIDRS`]) and size ([`MAX_MEMBERSHIP_BYTES`]). The signature
//! is checked before the body is parsed.

use crate::control::MAX_ALLOWED_CIDRS;
use crate::keys::PublicKey;
use crate::wire::{Reader, Truncated, Writer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ipnet::IpNet;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

/// The first bytes of every signed membership (also a domain separator for the signature).
pub const MAGIC: &[u8; 16] = b"metalvpc members";
/// The format of a list without member flags (written whenever no flag is set; read by every
/// edge).
pub const FORMAT: u8 = 1;
/// The format with a flags byte per member (written when a member has `ipv6_router`).
pub const FORMAT_FLAGS: u8 = 2;
/// Length of the Ed25519 signature at the end.
pub const SIGNATURE_LEN: usize = 64;
/// Largest signed membership accepted (file or reassembled from the wire).
pub const MAX_MEMBERSHIP_BYTES: usize = 1 << 20;
/// Most members one list may hold.
pub const MAX_MEMBERS: usize = 16_384;
/// Bytes of the signed list per `SignedList` control message (keeps each under ~1000 bytes).
pub const CHUNK_BYTES: usize = 960;
/// Most chunks a list may be cut into.
pub const MAX_CHUNKS: usize = MAX_MEMBERSHIP_BYTES.div_ceil(CHUNK_BYTES);

/// Why a signed membership was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Larger than [`MAX_MEMBERSHIP_BYTES`].
    #[error("it is larger than {MAX_MEMBERSHIP_BYTES} bytes")]
    TooLarge,
    /// Not a signed membership at all (wrong magic or too short).
    #[error("it is not a metalvpc signed membership (wrong header or too short)")]
    NotMembership,
    /// A format this build does not read.
    #[error("it has format {0}, but this build reads formats {FORMAT} and {FORMAT_FLAGS}")]
    Format(u8),
    /// The signature does not verify against the administrator key.
    #[error("its signature does not verify against the configured admin_key (signed with another key, or altered)")]
    BadSignature,
    /// Signed, but the body does not parse or breaks a rule.
    #[error("its contents are malformed: {0}")]
    Malformed(String),
}

/// The administrator's signing key (an Ed25519 seed). Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct AdminKey {
    seed: [u8; 32],
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminKey(public {})", self.public_key())
    }
}

impl AdminKey {
    /// A new random key from the operating system's generator (`admin genkey`, tests).
    pub fn generate() -> AdminKey {
        AdminKey {
            seed: crate::rng::os_seed(),
        }
    }
    /// From the base64 text form (the 32-byte seed).
    pub fn from_base64(text: &str) -> Result<AdminKey, String> {
        let seed = decode32(text)?;
        Ok(AdminKey { seed })
    }
    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.seed)
    }
    fn pair(&self) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&self.seed).expect("any 32-byte seed is a key")
    }
    /// The public half, which edges and supernodes are configured with.
    pub fn public_key(&self) -> AdminPublicKey {
        let pair = self.pair();
        let mut k = [0u8; 32];
        k.copy_from_slice(pair.public_key().as_ref());
        AdminPublicKey(k)
    }
}

fn decode32(text: &str) -> Result<[u8; 32], String> {
    let bytes = B64.decode(text.trim()).map_err(|_| {
        "not valid base64 (44 characters, as printed by admin-genkey/admin-pubkey)".to_string()
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "decodes to {} bytes, but an Ed25519 key is 32 bytes",
            bytes.len()
        )
    })
}

/// The administrator's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdminPublicKey(pub [u8; 32]);

impl AdminPublicKey {
    /// From base64.
    pub fn from_base64(text: &str) -> Result<AdminPublicKey, String> {
        decode32(text).map(AdminPublicKey)
    }
    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Debug for AdminPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminPublicKey({})", self.to_base64())
    }
}

impl fmt::Display for AdminPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// One member as the community file states it (the supernode's configuration; a signed
/// list's [`SignedMember`] converts to and from it).
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Static key.
    pub key: PublicKey,
    /// Human name (may be empty).
    pub name: String,
    /// Overlay address it owns.
    pub address: IpAddr,
    /// Extra source ranges it owns.
    pub allowed_cidrs: Vec<IpNet>,
    /// It may send IPv6 router advertisements and redirects to the others (`ipv6_router`).
    pub ipv6_router: bool,
}

/// One member as the administrator signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMember {
    /// Static X25519 key.
    pub key: PublicKey,
    /// Human name (at most 255 bytes).
    pub name: String,
    /// The overlay address it owns.
    pub address: IpAddr,
    /// Extra source ranges it owns (at most [`MAX_ALLOWED_CIDRS`]).
    pub allowed_cidrs: Vec<IpNet>,
    /// It may send IPv6 router advertisements and redirects (`ipv6_router`).
    pub ipv6_router: bool,
}

impl From<&NodeEntry> for SignedMember {
    fn from(n: &NodeEntry) -> SignedMember {
        SignedMember {
            key: n.key,
            name: n.name.clone(),
            address: n.address,
            allowed_cidrs: n.allowed_cidrs.clone(),
            ipv6_router: n.ipv6_router,
        }
    }
}

impl From<&SignedMember> for NodeEntry {
    fn from(m: &SignedMember) -> NodeEntry {
        NodeEntry {
            key: m.key,
            name: m.name.clone(),
            address: m.address,
            allowed_cidrs: m.allowed_cidrs.clone(),
            ipv6_router: m.ipv6_router,
        }
    }
}

impl SignedMember {
    /// True if `address` and `allowed` are exactly what was signed (ranges in any order).
    pub fn matches(&self, address: IpAddr, allowed: &[IpNet]) -> bool {
        let mut a: Vec<IpNet> = allowed.iter().map(IpNet::trunc).collect();
        let mut b = self.allowed_cidrs.clone();
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        self.address == address && a == b
    }
}

/// A community's member list at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Community name.
    pub community: String,
    /// Grows with every list the administrator signs; edges refuse anything not newer.
    pub version: u64,
    /// Members.
    pub members: Vec<SignedMember>,
}

impl Membership {
    /// The member with `key`.
    pub fn get(&self, key: &PublicKey) -> Option<&SignedMember> {
        self.members.iter().find(|m| m.key == *key)
    }

    /// Checks the rules the decoder enforces, for the signer: names fit, counts are bounded,
    /// no key or address twice.
    pub fn validate(&self) -> Result<(), String> {
        if self.community.is_empty() || self.community.len() > 255 {
            return Err("the community name must be 1 to 255 bytes".into());
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(format!("more than {MAX_MEMBERS} members"));
        }
        let (mut keys, mut addrs) = (HashSet::new(), HashSet::new());
        for m in &self.members {
            if m.name.len() > 255 {
                return Err(format!("member name '{}' is longer than 255 bytes", m.name));
            }
            if m.allowed_cidrs.len() > MAX_ALLOWED_CIDRS {
                return Err(format!(
                    "member {} has more than {MAX_ALLOWED_CIDRS} allowed_cidrs",
                    m.key
                ));
            }
            if !keys.insert(m.key) {
                return Err(format!("key {} is listed twice", m.key));
            }
            if !addrs.insert(m.address) {
                return Err(format!("address {} is given to two members", m.address));
            }
        }
        Ok(())
    }

    fn encode_body(&self) -> Vec<u8> {
        let flags = self.members.iter().any(|m| m.ipv6_router);
        let mut w = Writer::default();
        w.raw(MAGIC)
            .u8(if flags { FORMAT_FLAGS } else { FORMAT })
            .str(&self.community)
            .u64(self.version);
        w.u16(self.members.len().min(MAX_MEMBERS) as u16);
        for m in self.members.iter().take(MAX_MEMBERS) {
            w.raw(&m.key.0).str(&m.name).ip(m.address);
            let cidrs = &m.allowed_cidrs[..m.allowed_cidrs.len().min(MAX_ALLOWED_CIDRS)];
            w.u8(cidrs.len() as u8);
            for c in cidrs {
                w.ip(c.addr()).u8(c.prefix_len());
            }
            if flags {
                w.u8(u8::from(m.ipv6_router));
            }
        }
        w.buf
    }

    /// The signed file: body and signature. Call [`validate`](Self::validate) first.
    pub fn sign(&self, key: &AdminKey) -> Vec<u8> {
        let mut body = self.encode_body();
        let sig = key.pair().sign(&body);
        body.extend_from_slice(sig.as_ref());
        body
    }

    /// Verifies `bytes` against `admin` and parses them. Never panics; bounded memory.
    pub fn verify(bytes: &[u8], admin: &AdminPublicKey) -> Result<Membership, MembershipError> {
        if bytes.len() > MAX_MEMBERSHIP_BYTES {
            return Err(MembershipError::TooLarge);
        }
        if bytes.len() < MAGIC.len() + 1 + SIGNATURE_LEN || !bytes.starts_with(MAGIC) {
            return Err(MembershipError::NotMembership);
        }
        let format = bytes[MAGIC.len()];
        if format != FORMAT && format != FORMAT_FLAGS {
            return Err(MembershipError::Format(format));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        UnparsedPublicKey::new(&ED25519, admin.0)
            .verify(body, sig)
            .map_err(|_| MembershipError::BadSignature)?;
        Self::decode_body(body)
    }

    fn decode_body(body: &[u8]) -> Result<Membership, MembershipError> {
        let bad = |what: &str| MembershipError::Malformed(what.to_string());
        let t = |_: Truncated| bad("cut short or an impossible value");
        let flags = body.get(MAGIC.len()) == Some(&FORMAT_FLAGS);
        let mut r = Reader::new(body.get(MAGIC.len() + 1..).unwrap_or_default());
        let community = r.str().map_err(t)?;
        let version = r.u64().map_err(t)?;
        let n = usize::from(r.u16().map_err(t)?);
        if n > MAX_MEMBERS {
            return Err(bad("too many members"));
        }
        // Each member takes at least 32 + 1 + 5 + 1 bytes: bound the allocation by the input.
        let mut members = Vec::with_capacity(n.min(r.remaining() / 39));
        let (mut keys, mut addrs) = (HashSet::new(), HashSet::new());
        for _ in 0..n {
            let key = PublicKey(r.array().map_err(t)?);
            let name = r.str().map_err(t)?;
            let address = r.ip().map_err(t)?;
            let c = r.count(MAX_ALLOWED_CIDRS).map_err(t)?;
            let mut allowed_cidrs = Vec::with_capacity(c);
            for _ in 0..c {
                let ip = r.ip().map_err(t)?;
                let len = r.u8().map_err(t)?;
                let net = IpNet::new(ip, len).map_err(|_| bad("a CIDR prefix is too long"))?;
                allowed_cidrs.push(net.trunc());
            }
            let ipv6_router = flags && r.u8().map_err(t)? & 1 != 0;
            if !keys.insert(key) {
                return Err(bad("a key is listed twice"));
            }
            if !addrs.insert(address) {
                return Err(bad("an address is given to two members"));
            }
            members.push(SignedMember {
                key,
                name,
                address,
                allowed_cidrs,
                ipv6_router,
            });
        }
        if r.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        Ok(Membership {
            community,
            version,
            members,
        })
    }
}

/// A verified signed membership in its transport form (the supernode carries these bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBlob {
    /// The list's version.
    pub version: u64,
    /// The signed bytes, exactly as the administrator's `sign` wrote them.
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use proptest::prelude::*;

    pub(crate) fn sample(n: usize, version: u64) -> Membership {
        Membership {
            community: "prod".into(),
            version,
            members: (0..n)
                .map(|i| SignedMember {
                    key: PrivateKey::generate().public_key(),
                    name: format!("node-{i}"),
                    address: IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8 + 1]),
                    allowed_cidrs: vec![format!("10.244.{}.0/24", i % 250).parse().unwrap()],
                    ipv6_router: false,
                })
                .collect(),
        }
    }

    #[test]
    fn signs_verifies_and_round_trips() {
        let admin = AdminKey::generate();
        let m = sample(20, 7);
        m.validate().unwrap();
        let bytes = m.sign(&admin);
        assert_eq!(Membership::verify(&bytes, &admin.public_key()), Ok(m));
        let again = AdminKey::from_base64(&admin.to_base64()).unwrap();
        assert_eq!(again.public_key(), admin.public_key());
        assert_eq!(
            AdminPublicKey::from_base64(&admin.public_key().to_base64()),
            Ok(admin.public_key())
        );
    }

    #[test]
    fn a_router_flag_is_signed_in_format_2_and_a_list_without_one_stays_format_1() {
        let admin = AdminKey::generate();
        let mut m = sample(3, 2);
        assert_eq!(m.sign(&admin)[MAGIC.len()], FORMAT);
        m.members[1].ipv6_router = true;
        let bytes = m.sign(&admin);
        assert_eq!(bytes[MAGIC.len()], FORMAT_FLAGS);
        let back = Membership::verify(&bytes, &admin.public_key()).unwrap();
        assert_eq!(back, m);
        assert!(!back.members[0].ipv6_router && back.members[1].ipv6_router);
    }

    #[test]
    fn another_key_or_any_altered_byte_is_refused() {
        let admin = AdminKey::generate();
        let bytes = sample(3, 1).sign(&admin);
        assert_eq!(
            Membership::verify(&bytes, &AdminKey::generate().public_key()),
            Err(MembershipError::BadSignature)
        );
        for i in MAGIC.len() + 1..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(
                Membership::verify(&b, &admin.public_key()),
                Err(MembershipError::BadSignature),
                "byte {i}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Membership::verify(&longer, &admin.public_key()).is_err());
        assert_eq!(
            Membership::verify(b"hello", &admin.public_key()),
            Err(MembershipError::NotMembership)
        );
        let mut other = bytes.clone();
        other[MAGIC.len()] = 9;
        assert_eq!(
            Membership::verify(&other, &admin.public_key()),
            Err(MembershipError::Format(9))
        );
        assert_eq!(
            Membership::verify(&vec![0; MAX_MEMBERSHIP_BYTES + 1], &admin.public_key()),
            Err(MembershipError::TooLarge)
        );
    }

    #[test]
    fn signed_but_malformed_bodies_are_refused() {
        let admin = AdminKey::generate();
        let mut m = sample(2, 1);
        m.members[1].key = m.members[0].key;
        assert!(m.validate().is_err());
        assert!(matches!(
            Membership::verify(&m.sign(&admin), &admin.public_key()),
            Err(MembershipError::Malformed(_))
        ));
        let mut m = sample(2, 1);
        m.members[1].address = m.members[0].address;
        assert!(m.validate().is_err());
        assert!(matches!(
            Membership::verify(&m.sign(&admin), &admin.public_key()),
            Err(MembershipError::Malformed(_))
        ));
    }

    #[test]
    fn matches_compares_address_and_ranges_in_any_order() {
        let mut m = sample(1, 1).members.remove(0);
        m.allowed_cidrs = vec!["10.1.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let a = m.address;
        assert!(m.matches(
            a,
            &["fd00::/64".parse().unwrap(), "10.1.0.0/24".parse().unwrap()]
        ));
        assert!(!m.matches(
            a,
            &["10.1.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()]
        ));
        assert!(!m.matches(a, &m.allowed_cidrs[..1]));
        assert!(!m.matches("10.9.9.9".parse().unwrap(), &m.allowed_cidrs.clone()));
    }

    proptest! {
        #[test]
        fn verify_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let admin = AdminKey::generate().public_key();
            let _ = Membership::verify(&b, &admin);
            let mut framed = MAGIC.to_vec();
            framed.push(FORMAT);
            framed.extend_from_slice(&b);
            let _ = Membership::verify(&framed, &admin);
            // Arbitrary bodies, as if signed: the parser alone.
            let _ = Membership::decode_body(&framed);
        }
    }
}
