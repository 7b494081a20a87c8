//! Bounds on new enrolments, so that one holder of a join secret or a many-use token cannot
//! take a community's whole address pool in a burst: a token bucket per source address
//! ([`ENROL_BURST_PER_SOURCE`] at once, one more every [`ENROL_INTERVAL_PER_SOURCE`]) and one
//! per community ([`ENROL_BURST_PER_COMMUNITY`], one more every
//! [`ENROL_INTERVAL_PER_COMMUNITY`]). Only enrolments that would take a new address are
//! counted: a known key re-registering costs nothing, nor does a wrong proof (it gets no
//! address). The table of sources is bounded by [`ENROL_SOURCES`].

use super::{
    ENROL_BURST_PER_COMMUNITY, ENROL_BURST_PER_SOURCE, ENROL_INTERVAL_PER_COMMUNITY,
    ENROL_INTERVAL_PER_SOURCE,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most source addresses the limiter remembers at once; when full, sources whose bucket has
/// refilled are forgotten, and if none has, a new source is refused until one does.
pub const ENROL_SOURCES: usize = 4096;

/// A token bucket kept as the time it is full again (GCRA): a request is allowed if the
/// bucket is at most `burst - 1` intervals from full, and moves that time one interval on.
fn allow(full_at: &mut Instant, now: Instant, interval: Duration, burst: u32) -> bool {
    let t = (*full_at).max(now);
    if t.saturating_duration_since(now) > interval * burst.saturating_sub(1) {
        return false;
    }
    *full_at = t + interval;
    true
}

/// The per-source and per-community buckets.
#[derive(Default)]
pub(super) struct EnrolLimiter {
    sources: HashMap<IpAddr, Instant>,
    communities: HashMap<String, Instant>,
}

impl EnrolLimiter {
    /// Whether `source` may enrol one more key in `community` now; charges both buckets if
    /// so. `Err` says which bound held it back, and when to try again.
    pub(super) fn allow(
        &mut self,
        now: Instant,
        source: IpAddr,
        community: &str,
    ) -> Result<(), String> {
        if !self.sources.contains_key(&source) && self.sources.len() >= ENROL_SOURCES {
            self.sources.retain(|_, full_at| *full_at > now);
            if self.sources.len() >= ENROL_SOURCES {
                return Err(format!(
                    "enrolments from {ENROL_SOURCES} sources are pending; try again in a minute"
                ));
            }
        }
        let mut src = self.sources.get(&source).copied().unwrap_or(now);
        if !allow(
            &mut src,
            now,
            ENROL_INTERVAL_PER_SOURCE,
            ENROL_BURST_PER_SOURCE,
        ) {
            return Err(format!(
                "{source} enrolled {ENROL_BURST_PER_SOURCE} servers in a short time (the bound is {ENROL_BURST_PER_SOURCE} at once, then one per {} s); try again in {} s",
                ENROL_INTERVAL_PER_SOURCE.as_secs(),
                wait(src, now, ENROL_INTERVAL_PER_SOURCE, ENROL_BURST_PER_SOURCE)
            ));
        }
        let mut comm = self.communities.get(community).copied().unwrap_or(now);
        if !allow(
            &mut comm,
            now,
            ENROL_INTERVAL_PER_COMMUNITY,
            ENROL_BURST_PER_COMMUNITY,
        ) {
            return Err(format!(
                "community '{community}' took {ENROL_BURST_PER_COMMUNITY} enrolments in a short time (the bound is {ENROL_BURST_PER_COMMUNITY} at once, then one per {} s); try again in {} s",
                ENROL_INTERVAL_PER_COMMUNITY.as_secs(),
                wait(comm, now, ENROL_INTERVAL_PER_COMMUNITY, ENROL_BURST_PER_COMMUNITY)
            ));
        }
        self.sources.insert(source, src);
        if let Some(c) = self.communities.get_mut(community) {
            *c = comm;
        } else {
            self.communities.insert(community.to_string(), comm);
        }
        Ok(())
    }

    /// Forgets communities no longer served (a reload), so the table stays bounded.
    pub(super) fn retain_communities(&mut self, keep: impl Fn(&str) -> bool) {
        self.communities.retain(|c, _| keep(c));
    }
}

/// Whole seconds until a bucket full at `full_at` admits one more.
fn wait(full_at: Instant, now: Instant, interval: Duration, burst: u32) -> u64 {
    let room = interval * burst.saturating_sub(1);
    full_at
        .saturating_duration_since(now)
        .saturating_sub(room)
        .as_secs()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([198, 18, 1, i])
    }

    #[test]
    fn one_source_gets_its_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut l = EnrolLimiter::default();
        for _ in 0..ENROL_BURST_PER_SOURCE {
            l.allow(t0, ip(1), "prod").unwrap();
        }
        let err = l.allow(t0, ip(1), "prod").unwrap_err();
        assert!(
            err.contains("198.18.1.1") && err.contains("try again"),
            "{err}"
        );
        // Another source is not held back by it.
        l.allow(t0, ip(2), "prod").unwrap();
        let later = t0 + ENROL_INTERVAL_PER_SOURCE;
        l.allow(later, ip(1), "prod").unwrap();
        assert!(l.allow(later, ip(1), "prod").is_err());
    }

    #[test]
    fn a_community_takes_its_burst_from_many_sources_then_one_per_interval() {
        let t0 = Instant::now();
        let mut l = EnrolLimiter::default();
        for i in 0..ENROL_BURST_PER_COMMUNITY {
            l.allow(t0, ip(i as u8), "prod").unwrap();
        }
        let err = l.allow(t0, ip(200), "prod").unwrap_err();
        assert!(err.contains("community 'prod'"), "{err}");
        l.allow(t0, ip(200), "test").unwrap();
        l.allow(t0 + ENROL_INTERVAL_PER_COMMUNITY, ip(200), "prod")
            .unwrap();
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let t0 = Instant::now();
        let mut l = EnrolLimiter::default();
        for i in 0..ENROL_SOURCES as u32 {
            let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let _ = l.allow(t0 + Duration::from_secs(u64::from(i) * 2), a, "c");
        }
        assert!(l.sources.len() <= ENROL_SOURCES);
        // Much later every bucket is full again: room is made.
        let late = t0 + Duration::from_secs(100_000);
        l.allow(late, ip(1), "c").unwrap();
        assert!(l.sources.len() <= ENROL_SOURCES);
    }
}
