//! Structured: a supernode and two edges with known keys run over a simulated underlay, and
//! the fuzzer decides what happens to every genuine datagram (deliver, drop, reorder, replay,
//! spoof its source, change its bytes), injects frames into the TAP devices, lets strangers
//! and misconfigured members send real handshakes, and moves time (past rekeys and expiries).
//! Genuine packets get past the AEAD, so the fuzzer reaches the sessions' logic.
//!
//! Invariants: never a panic; bounded output and tables; nothing sent back to the source of
//! an unauthenticated datagram (changed, replayed, or a refused handshake) is larger than
//! it; no edge ever delivers a frame that no TAP device sent; and after the chaos, a clean
//! minute later, the two edges reach each other again.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::{
    check_no_amplification, edge_config, ip_frame, key, member_ip, sn_addr, underlay, Overlay,
    COMMUNITY, MEMBER_KEYS,
};
use metalvpc_protocol::crypto::Handshake;
use metalvpc_protocol::edge::Edge;
use metalvpc_protocol::{wire, Mac, Output};
use std::time::Duration;

#[derive(Arbitrary, Debug)]
enum FrameKind {
    ToPeer,
    Broadcast,
    /// Claims the other edge's MAC and address.
    Spoofed,
    /// From our MAC, from an address we do not own.
    ForeignIp([u8; 4]),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Stranger {
    /// A key that is no member.
    NotMember { n: u8 },
    /// A member claiming another's address.
    WrongAddress,
    /// A community the supernode does not serve.
    Community(String),
    /// The third member, correctly configured (accepted).
    ThirdMember,
    /// A real initiation from a key that is no member, straight to an edge.
    ToEdge { n: u8, edge: bool },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Deliver(u8),
    DeliverAll,
    Drop(u8),
    Replay {
        i: u8,
        spoof: Option<u8>,
    },
    Mutate {
        i: u8,
        history: bool,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
        spoof: Option<u8>,
    },
    Frame {
        edge: bool,
        kind: FrameKind,
        payload: Vec<u8>,
    },
    Advance(u16),
    Stranger {
        who: Stranger,
        from: u8,
    },
}

fn spoofed(n: u8) -> std::net::SocketAddr {
    underlay(100 + n % 100, 50_000 + u16::from(n))
}

/// A stranger's real initiation: (bytes, destination, whether the answer may be bigger).
fn stranger_init(net: &Overlay, who: &Stranger) -> (Vec<u8>, std::net::SocketAddr, bool) {
    let edge_init = |cfg| {
        let mut e = Edge::new(
            cfg,
            net.now,
            1_700_000_000_000_000,
            metalvpc_protocol::Rng::from_seed([9; 32]),
        );
        let mut out = Output::default();
        e.handle_timeout(net.now, &mut out);
        let t = &out.transmits[0];
        out.bytes(t).to_vec()
    };
    match who {
        Stranger::NotMember { n } => (
            edge_init(edge_config(20 + n % 50, COMMUNITY, member_ip(2), true)),
            sn_addr(),
            false,
        ),
        Stranger::WrongAddress => (
            edge_init(edge_config(MEMBER_KEYS[2], COMMUNITY, member_ip(0), true)),
            sn_addr(),
            false,
        ),
        Stranger::Community(c) => (
            edge_init(edge_config(20, c, member_ip(2), true)),
            sn_addr(),
            false,
        ),
        Stranger::ThirdMember => (
            edge_init(edge_config(MEMBER_KEYS[2], COMMUNITY, member_ip(2), true)),
            sn_addr(),
            true,
        ),
        Stranger::ToEdge { n, edge } => {
            let e = usize::from(*edge);
            let mut msg = Vec::new();
            wire::put_init_header(&mut msg, 77);
            let ts = 1_800_000_000_000_000u64.to_le_bytes();
            let peer = key(MEMBER_KEYS[e]).public_key();
            Handshake::initiate(&key(20 + n % 50), &peer, &ts, &mut msg).unwrap();
            (msg, net.edge_addrs[e], false)
        }
    }
}

fn mutate(bytes: &[u8], edits: &[(u16, u8)], cut: Option<u16>) -> Vec<u8> {
    let mut m = bytes.to_vec();
    for &(at, x) in edits.iter().take(16) {
        let at = usize::from(at);
        if at < m.len() {
            m[at] ^= x;
        } else if m.len() < 2048 {
            m.push(x);
        }
    }
    if let Some(c) = cut {
        m.truncate(usize::from(c));
    }
    m
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (relay, ops) = input;
    let mut net = Overlay::new(relay);
    for op in ops.into_iter().take(200) {
        match op {
            Op::Deliver(i) => net.deliver_genuine(usize::from(i)),
            Op::DeliverAll => net.deliver_all(512),
            Op::Drop(i) => {
                if !net.wire.is_empty() {
                    let n = net.wire.len();
                    net.wire.remove(usize::from(i) % n);
                }
            }
            Op::Replay { i, spoof } => {
                if net.history.is_empty() {
                    continue;
                }
                let d = net.history[usize::from(i) % net.history.len()].clone();
                let src = spoof.map_or(d.src, spoofed);
                if let Some(back) = net.deliver(src, d.dst, &d.bytes) {
                    check_no_amplification(back, d.bytes.len(), "replayed datagram");
                }
            }
            Op::Mutate {
                i,
                history,
                edits,
                cut,
                spoof,
            } => {
                let pool = if history { &net.history } else { &net.wire };
                if pool.is_empty() {
                    continue;
                }
                let d = pool[usize::from(i) % pool.len()].clone();
                let m = mutate(&d.bytes, &edits, cut);
                let src = spoof.map_or(d.src, spoofed);
                let changed = m != d.bytes || history;
                if let Some(back) = net.deliver(src, d.dst, &m) {
                    if changed {
                        check_no_amplification(back, m.len(), "changed datagram");
                    }
                }
            }
            Op::Frame {
                edge,
                kind,
                mut payload,
            } => {
                payload.truncate(1400);
                let e = usize::from(edge);
                let (mac, ip) = net.identity(e);
                let (peer_mac, peer_ip) = net.identity(1 - e);
                let f = match kind {
                    FrameKind::ToPeer => ip_frame(peer_mac, mac, ip, &payload),
                    FrameKind::Broadcast => ip_frame(Mac::BROADCAST, mac, ip, &payload),
                    FrameKind::Spoofed => ip_frame(mac, peer_mac, peer_ip, &payload),
                    FrameKind::ForeignIp(a) => ip_frame(peer_mac, mac, a, &payload),
                    FrameKind::Raw(mut r) => {
                        r.truncate(1500);
                        r
                    }
                };
                net.frame(e, &f);
            }
            Op::Advance(ms) => net.advance(Duration::from_millis(u64::from(ms) * 8)),
            Op::Stranger { who, from } => {
                let (init, dst, may_grow) = stranger_init(&net, &who);
                let back = net
                    .deliver(spoofed(from), dst, &init)
                    .expect("a node owns dst");
                if !may_grow {
                    check_no_amplification(back, init.len(), "refused handshake initiation");
                }
            }
        }
        net.check_tables();
    }
    // A clean minute: everything delivered, timers run. Then a frame each way must arrive.
    for _ in 0..60 {
        net.advance(Duration::from_secs(1));
        net.deliver_all(512);
        net.check_tables();
    }
    for e in 0..2 {
        let (mac, ip) = net.identity(e);
        let (peer_mac, _) = net.identity(1 - e);
        let before = net.delivered[1 - e];
        let f = ip_frame(peer_mac, mac, ip, b"still there?");
        net.frame(e, &f);
        for _ in 0..10 {
            net.deliver_all(512);
            net.advance(Duration::from_millis(500));
        }
        assert!(
            net.delivered[1 - e] > before,
            "edge {e} cannot reach its peer after a clean minute"
        );
    }
});
