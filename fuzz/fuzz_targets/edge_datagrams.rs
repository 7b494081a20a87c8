//! The edge state machine fed arbitrary datagrams (from the supernode's address, a peer's or
//! anyone's), TAP frames and time: never a panic, bounded output, bounded tables, and nothing
//! sent back to a datagram's source is larger than the datagram (none of it authenticates).
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::{
    check_edge_tables, check_no_amplification, check_output, edge_config, member_ip, sn_addr,
    underlay, COMMUNITY, MEMBER_KEYS,
};
use metalvpc_protocol::edge::Edge;
use metalvpc_protocol::Output;
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Udp { from: u8, bytes: Vec<u8> },
    Frame(Vec<u8>),
    Advance(u16),
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (relay, ops) = input;
    let mut now = Instant::now();
    let mut edge = Edge::new(
        edge_config(MEMBER_KEYS[0], COMMUNITY, member_ip(0), relay),
        now,
        1_700_000_000_000_000,
        metalvpc_protocol::Rng::from_seed([10; 32]),
    );
    let mut out = Output::default();
    for op in ops.into_iter().take(256) {
        match op {
            Op::Udp { from, mut bytes } => {
                let src = match from % 4 {
                    0 => sn_addr(),
                    1 => underlay(12, 7655),
                    _ => underlay(from, u16::from(from) << 4),
                };
                let n = bytes.len();
                edge.handle_udp(now, src, &mut bytes, &mut out);
                let back = check_output(&out, Some(src));
                check_no_amplification(back, n, "datagram to an edge");
            }
            Op::Frame(f) => {
                edge.handle_frame(now, &f, &mut out);
                check_output(&out, None);
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 8);
                edge.handle_timeout(now, &mut out);
                check_output(&out, None);
            }
        }
        out.clear();
        let _ = edge.drain_events().count();
        check_edge_tables(&edge, 0, 1);
        let _ = edge.status(now);
    }
});
