//! Sliding-window replay protection for data-plane counters (the bitmap scheme of RFC 6479,
//! as WireGuard uses it). The window covers the last [`WINDOW`] counters; anything older is
//! rejected, anything seen is rejected, anything newer slides the window forward.
//!
//! `check` is the cheap test done *before* AEAD open; `mark` records the counter only *after*
//! the packet authenticated, so forged packets cannot move the window.

const WORDS: usize = 128;
/// Counters behind the highest one seen that are still accepted (8128, well over 2048).
pub const WINDOW: u64 = ((WORDS - 1) * 64) as u64;
/// Counters at or above this are never accepted: the sender must rekey before reaching it.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// The replay window of one receiving session.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter marked so far (meaningful once `any` is true).
    top: u64,
    any: bool,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            top: 0,
            any: false,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Would `counter` be accepted? Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if !self.any || counter > self.top {
            return true;
        }
        if self.top - counter >= WINDOW {
            return false;
        }
        let word = ((counter >> 6) as usize) % WORDS;
        self.bits[word] & (1u64 << (counter & 63)) == 0
    }

    /// Records `counter` as received. Returns false (and changes nothing) if it would be
    /// rejected by [`check`](Self::check).
    pub fn mark(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.any || counter > self.top {
            let new_word = counter >> 6;
            if !self.any {
                self.bits = [0; WORDS];
            } else {
                let old_word = self.top >> 6;
                let diff = (new_word - old_word).min(WORDS as u64);
                for i in 1..=diff {
                    self.bits[((old_word + i) as usize) % WORDS] = 0;
                }
            }
            self.top = counter;
            self.any = true;
        }
        let word = ((counter >> 6) as usize) % WORDS;
        self.bits[word] |= 1u64 << (counter & 63);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert!(w.mark(0));
        assert!(!w.mark(0));
        assert!(w.mark(1));
        assert!(w.mark(5));
        assert!(w.mark(3));
        assert!(!w.mark(3));
        assert!(!w.check(5));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::default();
        let top = 100_000;
        assert!(w.mark(top));
        // The oldest counter still inside the window, and the first one outside.
        assert!(w.check(top - WINDOW + 1));
        assert!(!w.check(top - WINDOW));
        assert!(w.mark(top - WINDOW + 1));
        assert!(!w.mark(top - WINDOW + 1));
        // At least 2048 packets of reordering are tolerated.
        assert!(w.mark(top - 2048));
        // A jump far ahead clears the old bits: counters right behind the new top are fresh.
        assert!(w.mark(top + 10 * WINDOW));
        assert!(w.check(top + 10 * WINDOW - 1));
        assert!(!w.check(top));
        // The reject limit.
        assert!(!w.check(REJECT_AFTER_MESSAGES));
        assert!(!w.check(u64::MAX));
    }

    #[test]
    fn slide_by_exactly_one_word_keeps_recent_bits() {
        let mut w = ReplayWindow::default();
        for c in 0..200u64 {
            assert!(w.mark(c));
        }
        for c in 0..200u64 {
            assert!(!w.check(c), "counter {c} replayed");
        }
    }

    proptest! {
        // Against a model: a set of seen counters and the highest one.
        #[test]
        fn matches_a_simple_model(ops in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::HashSet::new();
            let mut top: Option<u64> = None;
            for c in ops {
                let expect = !seen.contains(&c) && top.is_none_or(|t| c > t || t - c < WINDOW);
                prop_assert_eq!(w.mark(c), expect);
                if expect {
                    seen.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }
    }
}
