//! Token buckets: the supernode's per-member budgets (requests, challenges, pushed updates)
//! and the per-source limiter in front of Diffie-Hellman ([`SourceLimiter`], after
//! WireGuard's ratelimiter). Pure: time comes in as `now`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, one more every `period`. A new bucket is full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens in nanoseconds of refill time (one token is `period`).
    tokens: u64,
    last: Option<Instant>,
    period: u64,
    max: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens that gains one every `period`.
    pub const fn new(burst: u32, period: Duration) -> TokenBucket {
        let period = period.as_nanos() as u64;
        TokenBucket {
            tokens: period * burst as u64,
            last: None,
            period,
            max: period * burst as u64,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gained = now.saturating_duration_since(last).as_nanos();
            self.tokens = (u128::from(self.tokens) + gained).min(u128::from(self.max)) as u64;
        }
        self.last = Some(now);
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= self.period {
            self.tokens -= self.period;
            true
        } else {
            false
        }
    }

    /// True if a token is there (takes none).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.period
    }

    /// True if the bucket would be full at `now` (it can be forgotten).
    fn full_at(&self, now: Instant) -> bool {
        let gained = self
            .last
            .map_or(u128::MAX, |l| now.saturating_duration_since(l).as_nanos());
        u128::from(self.tokens) + gained >= u128::from(self.max)
    }
}

/// Handshake initiations per second one source may bring to Diffie-Hellman.
pub const SOURCE_RATE: u32 = 20;
/// Initiations one source may bring at once.
pub const SOURCE_BURST: u32 = 5;
/// Most sources tracked at once; a new source beyond that is refused until entries expire.
pub const SOURCE_TABLE: usize = 4096;

/// The key a source is limited by: its IPv4 address, or the /64 of its IPv6 address.
fn source_key(src: SocketAddr) -> u128 {
    match src.ip() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => (u128::from(a) >> 64 << 64) | 1, // never equal to an IPv4 key
    }
}

/// A token bucket per source (IPv4 address or IPv6 /64): [`SOURCE_RATE`] per second,
/// [`SOURCE_BURST`] at once, for at most [`SOURCE_TABLE`] sources. An entry is forgotten
/// once its bucket is full again (1/rate × burst after its last use); expiry walks a queue
/// in order of creation, so each check costs O(1) amortised.
pub struct SourceLimiter {
    buckets: HashMap<u128, TokenBucket>,
    order: VecDeque<u128>,
    fresh: TokenBucket,
    max: usize,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        SourceLimiter::new(
            SOURCE_BURST,
            Duration::from_secs(1) / SOURCE_RATE,
            SOURCE_TABLE,
        )
    }
}

impl SourceLimiter {
    /// A limiter of `burst` tokens per source, one more every `period`, for `max` sources.
    pub fn new(burst: u32, period: Duration, max: usize) -> SourceLimiter {
        SourceLimiter {
            buckets: HashMap::with_capacity(max.min(1024)),
            order: VecDeque::with_capacity(max.min(1024)),
            fresh: TokenBucket::new(burst, period),
            max,
        }
    }

    /// Takes a token for `src`: false if its budget is spent (or the table is full).
    pub fn allow(&mut self, now: Instant, src: SocketAddr) -> bool {
        self.expire(now);
        let key = source_key(src);
        if let Some(b) = self.buckets.get_mut(&key) {
            return b.allow(now);
        }
        if self.buckets.len() >= self.max {
            return false;
        }
        let mut b = self.fresh.clone();
        let ok = b.allow(now);
        self.buckets.insert(key, b);
        self.order.push_back(key);
        ok
    }

    /// Forgets entries whose buckets are full again, oldest first: an entry still in use is
    /// moved to the back (at most once per refill time), so the work is amortised O(1).
    fn expire(&mut self, now: Instant) {
        for _ in 0..2 {
            let Some(&key) = self.order.front() else {
                return;
            };
            self.order.pop_front();
            match self.buckets.get(&key) {
                Some(b) if b.full_at(now) => {
                    self.buckets.remove(&key);
                }
                Some(_) => self.order.push_back(key),
                None => {}
            }
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_one_per_period() {
        let now = Instant::now();
        let mut b = TokenBucket::new(3, Duration::from_secs(1));
        assert_eq!((0..10).filter(|_| b.allow(now)).count(), 3);
        assert!(!b.allow(now + Duration::from_millis(999)));
        assert!(b.allow(now + Duration::from_millis(1000)));
        assert!(!b.allow(now + Duration::from_millis(1000)));
        // Idle for long: full again, not more.
        let later = now + Duration::from_secs(100);
        assert_eq!((0..10).filter(|_| b.allow(later)).count(), 3);
    }

    #[test]
    fn sources_are_limited_apart_and_ipv6_by_its_64() {
        let now = Instant::now();
        let mut l = SourceLimiter::default();
        let a: SocketAddr = "198.18.0.1:1".parse().unwrap();
        let a2: SocketAddr = "198.18.0.1:2".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let v6b: SocketAddr = "[2001:db8::ffff:2]:9".parse().unwrap();
        let got = (0..100)
            .filter(|i| l.allow(now, if i % 2 == 0 { a } else { a2 }))
            .count();
        assert_eq!(got, SOURCE_BURST as usize, "ports do not buy more");
        assert!(l.allow(now, b));
        let got6 = (0..100)
            .filter(|i| l.allow(now, if i % 2 == 0 { v6 } else { v6b }))
            .count();
        assert_eq!(got6, SOURCE_BURST as usize, "one /64 is one source");
        // One second later: SOURCE_RATE more, not more.
        let t = now + Duration::from_secs(1);
        assert_eq!(
            (0..100).filter(|_| l.allow(t, a)).count(),
            SOURCE_BURST as usize
        );
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_idle_sources() {
        let now = Instant::now();
        let mut l = SourceLimiter::new(2, Duration::from_millis(50), 100);
        for i in 0..1000u32 {
            let src = SocketAddr::new(IpAddr::from((0xc612_0000u32 + i).to_be_bytes()), 1);
            l.allow(now, src);
            assert!(l.len() <= 100);
        }
        // After the refill time every entry is forgotten as new checks come in.
        let later = now + Duration::from_secs(1);
        let x: SocketAddr = "198.19.0.1:1".parse().unwrap();
        for _ in 0..200 {
            l.allow(later, x);
        }
        assert!(l.len() <= 2, "{} entries left", l.len());
    }
}
