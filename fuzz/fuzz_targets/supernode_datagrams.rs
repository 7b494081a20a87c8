//! The supernode state machine fed arbitrary datagrams from any source and time: never a
//! panic, bounded output and tables, nothing sent back larger than what came in.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::{
    check_no_amplification, check_output, check_supernode_tables, supernode_config, underlay,
};
use metalvpc_protocol::supernode::Supernode;
use metalvpc_protocol::Output;
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Udp { from: u8, bytes: Vec<u8> },
    Advance(u16),
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (relay, ops) = input;
    let mut now = Instant::now();
    let mut sn = Supernode::new(
        supernode_config(relay),
        now,
        metalvpc_protocol::Rng::from_seed([1; 32]),
    );
    let mut out = Output::default();
    for op in ops.into_iter().take(256) {
        match op {
            Op::Udp { from, mut bytes } => {
                let src = underlay(from, 40_000 + u16::from(from));
                let n = bytes.len();
                sn.handle_udp(now, src, &mut bytes, &mut out);
                let back = check_output(&out, Some(src));
                check_no_amplification(back, n, "datagram to the supernode");
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 8);
                sn.handle_timeout(now, &mut out);
                check_output(&out, None);
            }
        }
        out.clear();
        let _ = sn.drain_events().count();
        check_supernode_tables(&sn);
        let _ = sn.status(now);
    }
});
