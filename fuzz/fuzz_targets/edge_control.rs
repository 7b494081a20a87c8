//! A malicious supernode: it answers the edge's registration handshake itself, so it holds a
//! real session with the edge, and then sends whatever authenticated control messages the
//! fuzzer makes (acknowledgements with assigned addresses and any prefix, member lists with
//! any chunk numbers and counts, updates, notices, lookups' answers, signed-list chunks) and
//! moves time. The edge is static (it knows the community network) or enrolling.
//!
//! Invariants: never a panic; bounded output and tables; the edge's address never changes
//! but once, from unspecified, while enrolling; every `ApplyAddress` names the edge's
//! address with a prefix of 8 to 32.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::{
    arb_control, check_edge_tables, check_output, edge_config, key, member_ip, sn_addr, COMMUNITY,
    MEMBER_KEYS, SN_KEY,
};
use metalvpc_protocol::control::{Control, RECORDS_PER_LIST};
use metalvpc_protocol::crypto::{Cipher, Handshake};
use metalvpc_protocol::edge::{Command, Edge};
use metalvpc_protocol::session::Session;
use metalvpc_protocol::{wire, Output, Rng};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A control message (the generator's, sealed in the session).
    Control,
    /// An acknowledgement assigning `ip/prefix` (near the community network or anywhere).
    Assign {
        near: bool,
        ip: [u8; 4],
        prefix: u8,
    },
    /// Any bytes, sealed in the session (a control message that does not decode).
    Sealed(Vec<u8>),
    Advance(u16),
}

const OPS: usize = 128;

fn check_commands(edge: &mut Edge) {
    let commands: Vec<Command> = edge.drain_commands().collect();
    for c in commands {
        if let Command::ApplyAddress { address, prefix } = c {
            assert!((8..=32).contains(&prefix), "ApplyAddress with /{prefix}");
            assert_eq!(IpAddr::V4(address), edge.address());
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let enrolling: bool = u.arbitrary()?;
    let mut cfg = if enrolling {
        edge_config(
            MEMBER_KEYS[0],
            COMMUNITY,
            Ipv4Addr::UNSPECIFIED.into(),
            true,
        )
    } else {
        edge_config(MEMBER_KEYS[0], COMMUNITY, member_ip(0), true)
    };
    if enrolling {
        cfg.join_secret = Some(b"join".to_vec());
    } else {
        cfg.network = Some("10.77.0.0/24".parse().expect("a network"));
    }
    let mut now = Instant::now();
    let mut edge = Edge::new(cfg, now, 1_700_000_000_000_000, Rng::from_seed([10; 32]));
    let mut out = Output::default();
    edge.handle_timeout(now, &mut out);
    let Some(t) = out.transmits.iter().find(|t| t.dst == sn_addr()) else {
        panic!("no initiation to the supernode");
    };
    let init = out.bytes(t).to_vec();
    out.clear();
    let Ok(wire::Packet::Init { sender, noise }) = wire::decode(&init) else {
        panic!("the initiation does not decode");
    };
    let mut rng = Rng::from_seed([1; 32]);
    let (hs, _, _) =
        Handshake::respond_with(Cipher::ChaCha20Poly1305, &key(SN_KEY), noise, &mut rng)
            .expect("a genuine initiation");
    let first = Control::RegisterAck {
        id: u.arbitrary()?,
        observed: "198.18.0.11:7655".parse().expect("an address"),
        epoch: u.arbitrary()?,
        interval: u.arbitrary()?,
        relay: u.arbitrary()?,
        membership: 0,
        assigned: if u.arbitrary()? {
            Some((
                IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?)),
                u.arbitrary()?,
            ))
        } else {
            None
        },
    };
    let mut resp = Vec::new();
    wire::put_resp_header(&mut resp, 0x51, sender);
    let keys = hs
        .finish_response(&first.encode(), &mut resp)
        .expect("a response");
    let mut session = Session::new(0x51, sender, keys, now, false);
    let mut address = edge.address();
    let mut changes = 0;
    let mut step = |edge: &mut Edge, out: &mut Output, address: &mut IpAddr| {
        check_output(out, None);
        out.clear();
        let _ = edge.drain_events().count();
        check_commands(edge);
        let now_addr = edge.address();
        if now_addr != *address {
            assert!(
                enrolling && address.is_unspecified(),
                "the address changed outside enrolment: {address} -> {now_addr}"
            );
            changes += 1;
            assert!(changes <= 1, "a second address");
            *address = now_addr;
        }
        check_edge_tables(edge, OPS * RECORDS_PER_LIST + 1, 1);
    };
    edge.handle_udp(now, sn_addr(), &mut resp, &mut out);
    step(&mut edge, &mut out, &mut address);
    for _ in 0..OPS {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        let payload = match op {
            Op::Control => match arb_control(u) {
                Ok(m) => m.encode(),
                Err(_) => break,
            },
            Op::Assign { near, ip, prefix } => {
                let ip = if near { [10, 77, 0, ip[3]] } else { ip };
                Control::RegisterAck {
                    id: 1,
                    observed: "198.18.0.11:7655".parse().expect("an address"),
                    epoch: 1,
                    interval: 10,
                    relay: true,
                    membership: 0,
                    assigned: Some((IpAddr::V4(ip.into()), prefix)),
                }
                .encode()
            }
            Op::Sealed(b) => b,
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 4);
                edge.handle_timeout(now, &mut out);
                step(&mut edge, &mut out, &mut address);
                continue;
            }
        };
        let mut pkt = Vec::new();
        session.seal_data(&payload, &mut pkt);
        edge.handle_udp(now, sn_addr(), &mut pkt, &mut out);
        step(&mut edge, &mut out, &mut address);
        let _ = edge.status(now);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
