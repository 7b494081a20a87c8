//! The core's one source of randomness: a ChaCha20 keystream (RFC 8439) from a 32-byte seed
//! the shell draws from the operating system once at start (tests and the simulator pass a
//! fixed seed, so a scenario run twice sends the same bytes).
//!
//! Everything random in the cores comes from here: session indices, the edge's instance id,
//! cookie secrets and nonces, and the Noise ephemeral keys (through a snow resolver, `Rng::noise_resolver`).
//! Nothing in `protocol/` reads OS entropy.
//!
//! Why ChaCha20 and not a small PRNG: ephemeral keys and cookie secrets need a generator whose
//! output cannot be predicted from earlier output; the ChaCha20 block function is the
//! generator Linux's own `getrandom` uses, and 20 lines of it need no extra crate. Each call to
//! [`Rng::fork`] seeds a child from the keystream, so a component (one handshake) never shares
//! a stream with another.

/// 32 bytes from the operating system's generator: the seed a shell passes to the cores, and
/// the source of [`crate::PrivateKey::generate`] and the other tool-side helpers. The cores
/// never call it (`protocol/tests/sans_io.rs` checks).
pub fn os_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    getrandom::getrandom(&mut s).expect("the OS random generator failed");
    s
}

/// A seeded cryptographic random generator (the ChaCha20 keystream of the seed, nonce 0).
#[derive(Clone)]
pub struct Rng {
    key: [u32; 8],
    counter: u64,
    block: [u8; 64],
    used: usize,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("Rng(..)")
    }
}

const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The ChaCha20 block function (RFC 8439 §2.3) with a 32-bit counter and 96-bit nonce.
fn chacha20_block(key: &[u32; 8], counter: u32, nonce: [u32; 3]) -> [u8; 64] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(&nonce);
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for (i, (w, x)) in s.iter().zip(init.iter()).enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.wrapping_add(*x).to_le_bytes());
    }
    out
}

impl Rng {
    /// The generator of `seed`. The shell passes 32 bytes from the OS; tests a constant.
    pub fn from_seed(seed: [u8; 32]) -> Rng {
        let mut key = [0u32; 8];
        for (k, c) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *k = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        Rng {
            key,
            counter: 0,
            block: [0; 64],
            used: 64,
        }
    }

    /// A generator seeded from the operating system: what a shell passes to a core.
    pub fn from_os() -> Rng {
        Rng::from_seed(os_seed())
    }

    /// Fills `dest` with the next bytes of the stream.
    pub fn fill(&mut self, dest: &mut [u8]) {
        let mut done = 0;
        while done < dest.len() {
            if self.used == 64 {
                // A 64-bit block counter: the low half is the RFC's counter, the high half
                // the first nonce word, so the stream never repeats.
                let c = self.counter;
                self.block = chacha20_block(&self.key, c as u32, [(c >> 32) as u32, 0, 0]);
                self.counter = c.wrapping_add(1);
                self.used = 0;
            }
            let n = (64 - self.used).min(dest.len() - done);
            dest[done..done + n].copy_from_slice(&self.block[self.used..self.used + n]);
            self.used += n;
            done += n;
        }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// 32 fresh random bytes (a secret or a child's seed).
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }

    /// A child generator seeded from this one's stream.
    pub fn fork(&mut self) -> Rng {
        Rng::from_seed(self.bytes32())
    }

    /// A snow resolver that takes its randomness (the ephemeral key) from a child of this
    /// generator and everything else from snow's default resolver.
    pub(crate) fn noise_resolver(&mut self) -> snow::resolvers::BoxedCryptoResolver {
        Box::new(snow::resolvers::FallbackResolver::new(
            Box::new(NoiseRng(self.bytes32())),
            Box::new(snow::resolvers::DefaultResolver),
        ))
    }
}

impl snow::types::Random for Rng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.fill(dest);
        Ok(())
    }
}

/// Resolves only the random generator (a seed for one handshake).
struct NoiseRng([u8; 32]);

impl snow::resolvers::CryptoResolver for NoiseRng {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(Rng::from_seed(self.0)))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        None
    }
    fn resolve_cipher(
        &self,
        _: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_function_matches_rfc_8439_test_vector() {
        // RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, counter 1.
        let mut key = [0u32; 8];
        for (i, k) in key.iter_mut().enumerate() {
            let b = (i * 4) as u8;
            *k = u32::from_le_bytes([b, b + 1, b + 2, b + 3]);
        }
        let out = chacha20_block(&key, 1, [0x0900_0000, 0x4a00_0000, 0]);
        assert_eq!(
            out[..16],
            [
                0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
                0x71, 0xc4
            ]
        );
        assert_eq!(out[60..], [0xa2, 0x50, 0x3c, 0x4e]);
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let mut a = Rng::from_seed([7; 32]);
        let mut b = Rng::from_seed([7; 32]);
        let mut c = Rng::from_seed([8; 32]);
        let (x, y, z) = (a.bytes32(), b.bytes32(), c.bytes32());
        assert_eq!(x, y);
        assert_ne!(x, z);
        // Reads of any size continue one stream.
        let mut a2 = Rng::from_seed([7; 32]);
        let mut first = [0u8; 100];
        a2.fill(&mut first);
        let mut a3 = Rng::from_seed([7; 32]);
        let mut parts = [0u8; 100];
        a3.fill(&mut parts[..3]);
        a3.fill(&mut parts[3..70]);
        a3.fill(&mut parts[70..]);
        assert_eq!(first, parts);
        assert_ne!(a.fork().next_u64(), a.fork().next_u64());
    }
}
