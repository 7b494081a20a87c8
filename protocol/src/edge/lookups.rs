//! The lookups asked of supernodes within the last second, so that one query is asked at most
//! once a second. Bounded by [`MAX_LOOKUPS`] with no scan: entries expire in insertion order
//! from the front of a queue (amortised O(1) per lookup), and while the table is full of
//! fresh entries a new query waits (at most `MAX_LOOKUPS` lookups a second leave the edge).

use crate::control::Query;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most lookups outstanding (asked within [`LOOKUP_RETRY`]).
pub const MAX_LOOKUPS: usize = 1024;
/// Least time between two lookups of the same query.
pub const LOOKUP_RETRY: Duration = Duration::from_secs(1);

/// See the module documentation.
#[derive(Default)]
pub(super) struct Lookups {
    /// When each query was last asked.
    asked: HashMap<Query, Instant>,
    /// The same, in the order asked (oldest first); an entry whose query was asked again
    /// since is skipped when it expires.
    order: VecDeque<(Query, Instant)>,
}

impl Lookups {
    /// May `query` be asked now? If so, it is noted as asked at `now`.
    pub(super) fn try_ask(&mut self, now: Instant, query: Query) -> bool {
        while let Some(&(q, t)) = self.order.front() {
            if now.saturating_duration_since(t) < LOOKUP_RETRY {
                break;
            }
            self.order.pop_front();
            if self.asked.get(&q) == Some(&t) {
                self.asked.remove(&q);
            }
        }
        // Every entry left is younger than LOOKUP_RETRY, one per query.
        if self.asked.contains_key(&query) || self.order.len() >= MAX_LOOKUPS {
            return false;
        }
        self.asked.insert(query, now);
        self.order.push_back((query, now));
        true
    }

    /// Entries held (`table_sizes`).
    pub(super) fn len(&self) -> usize {
        self.asked.len().max(self.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Mac;

    fn q(i: u32) -> Query {
        let b = i.to_be_bytes();
        Query::Mac(Mac([2, 0, b[0], b[1], b[2], b[3]]))
    }

    #[test]
    fn the_pending_lookups_stay_bounded_and_expire_in_order() {
        let t0 = Instant::now();
        let mut l = Lookups::default();
        assert!(l.try_ask(t0, q(1)));
        assert!(
            !l.try_ask(t0 + Duration::from_millis(999), q(1)),
            "once a second"
        );
        assert!(
            l.try_ask(t0 + Duration::from_secs(1), q(1)),
            "expired: asked again"
        );
        assert_eq!(l.len(), 1);
        // A flood of distinct queries within one second: at most MAX_LOOKUPS asked.
        let t1 = t0 + Duration::from_secs(5);
        let asked = (0..10 * MAX_LOOKUPS as u32)
            .filter(|i| l.try_ask(t1, q(1000 + i)))
            .count();
        assert_eq!(asked, MAX_LOOKUPS);
        assert_eq!(l.len(), MAX_LOOKUPS);
        // A second later they have all expired: new ones are asked, the table stays bounded.
        let t2 = t1 + LOOKUP_RETRY;
        assert!(l.try_ask(t2, q(7)));
        assert_eq!(l.len(), 1);
        for step in 0..5000u32 {
            let now = t2 + Duration::from_millis(u64::from(step));
            l.try_ask(now, q(step % 3000));
            assert!(l.len() <= MAX_LOOKUPS);
        }
    }
}
