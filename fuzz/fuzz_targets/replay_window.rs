//! The replay window against a model (every counter marked so far and the highest one):
//! any sequence of checks and marks, with small steps, big jumps and counters near the
//! reject limit, gives the model's answers.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_protocol::replay::{ReplayWindow, REJECT_AFTER_MESSAGES, WINDOW};
use std::collections::HashSet;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Relative to the highest counter seen, forward or back.
    Near {
        back: bool,
        delta: u16,
        check_only: bool,
    },
    /// Far ahead.
    Jump(u32),
    /// Anywhere, including the reject limit.
    Absolute(u64),
    NearLimit(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut w = ReplayWindow::default();
    let mut seen = HashSet::new();
    let mut top: Option<u64> = None;
    for op in ops.into_iter().take(2000) {
        let t = top.unwrap_or(0);
        let (c, check_only) = match op {
            Op::Near {
                back,
                delta,
                check_only,
            } => (
                if back {
                    t.saturating_sub(u64::from(delta))
                } else {
                    t.saturating_add(u64::from(delta))
                },
                check_only,
            ),
            Op::Jump(d) => (t.saturating_add(u64::from(d)), false),
            Op::Absolute(c) => (c, false),
            Op::NearLimit(d) => (
                REJECT_AFTER_MESSAGES
                    .wrapping_add(u64::from(d))
                    .wrapping_sub(30_000),
                false,
            ),
        };
        let expect = c < REJECT_AFTER_MESSAGES
            && !seen.contains(&c)
            && top.is_none_or(|t| c > t || t - c < WINDOW);
        assert_eq!(w.check(c), expect, "check {c} top {top:?}");
        if check_only {
            continue;
        }
        assert_eq!(w.mark(c), expect, "mark {c} top {top:?}");
        if expect {
            seen.insert(c);
            top = Some(top.map_or(c, |t| t.max(c)));
        }
    }
});
