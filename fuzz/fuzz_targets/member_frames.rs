//! A member's frames: IPv6 neighbour discovery (solicitations, advertisements, DAD, router
//! messages) with every source, target and link-layer option a member could forge, other
//! IPv6 and non-IPv4 EtherTypes, written into one edge's TAP of the two-edge overlay and
//! carried to the other.
//!
//! Invariants (checked by the overlay on every frame an edge delivers from its peer): the
//! peer's MAC, and for IPv6 the peer's own source address and ND that speaks only for the
//! peer (`icmpv6::check`); never a panic; bounded tables.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::Overlay;
use metalvpc_protocol::neighbor::link_local;
use metalvpc_protocol::Mac;
use std::net::Ipv6Addr;
use std::time::Duration;

#[derive(Arbitrary, Debug)]
enum Who {
    Own,
    Peer,
    Unspecified,
    Any([u8; 16]),
}

#[derive(Arbitrary, Debug)]
enum LinkAddr {
    Own,
    Peer,
    Any([u8; 6]),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Nd {
        /// 133 to 137 (router solicitation .. redirect).
        kind: u8,
        src: Who,
        /// To the target's solicited-node group (else all nodes).
        group: bool,
        target: Who,
        /// Option type (1 source, 2 target link-layer address) and value, or none.
        option: Option<(bool, LinkAddr)>,
        /// Bytes after the message, and where to cut it.
        extra: Vec<u8>,
        cut: Option<u16>,
    },
    /// Any IPv6 packet from an address of the choice.
    Ipv6 {
        src: Who,
        next: u8,
        payload: Vec<u8>,
    },
    /// Another EtherType.
    Other {
        ethertype: u16,
        payload: Vec<u8>,
    },
    Advance(u8),
}

fn ip(w: &Who, own: Mac, peer: Mac) -> Ipv6Addr {
    match w {
        Who::Own => link_local(own),
        Who::Peer => link_local(peer),
        Who::Unspecified => Ipv6Addr::UNSPECIFIED,
        Who::Any(b) => Ipv6Addr::from(*b),
    }
}

fn ipv6_frame(dst: Ipv6Addr, src_mac: Mac, src: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let d = dst.octets();
    let mut f = vec![0x33, 0x33, d[12], d[13], d[14], d[15]];
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&d);
    f.extend_from_slice(payload);
    f
}

fuzz_target!(|ops: Vec<Op>| {
    let mut net = Overlay::new(true);
    for _ in 0..6 {
        net.advance(Duration::from_millis(500));
        net.deliver_all(256);
    }
    let (own, _) = net.identity(0);
    let (peer, _) = net.identity(1);
    for op in ops.into_iter().take(64) {
        let f = match op {
            Op::Nd {
                kind,
                src,
                group,
                target,
                option,
                extra,
                cut,
            } => {
                let kind = 133 + kind % 5;
                let target = ip(&target, own, peer);
                let mut icmp = vec![kind, 0, 0, 0, 0x20, 0, 0, 0];
                icmp.extend_from_slice(&target.octets());
                if let Some((source, la)) = option {
                    let mac = match la {
                        LinkAddr::Own => own,
                        LinkAddr::Peer => peer,
                        LinkAddr::Any(m) => Mac(m),
                    };
                    icmp.extend_from_slice(&[if source { 1 } else { 2 }, 1]);
                    icmp.extend_from_slice(&mac.0);
                }
                icmp.extend(extra.iter().take(64));
                if let Some(c) = cut {
                    icmp.truncate(usize::from(c));
                }
                let o = target.octets();
                let dst = if group {
                    Ipv6Addr::from([
                        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
                    ])
                } else {
                    "ff02::1".parse().expect("an address")
                };
                ipv6_frame(dst, own, ip(&src, own, peer), 58, &icmp)
            }
            Op::Ipv6 { src, next, payload } => {
                let dst = "ff02::1".parse().expect("an address");
                ipv6_frame(
                    dst,
                    own,
                    ip(&src, own, peer),
                    next,
                    &payload[..payload.len().min(256)],
                )
            }
            Op::Other { ethertype, payload } => {
                let mut f = vec![0xff; 6];
                f.extend_from_slice(&own.0);
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend(payload.iter().take(256));
                f
            }
            Op::Advance(ms) => {
                net.advance(Duration::from_millis(u64::from(ms) * 10));
                net.deliver_all(256);
                continue;
            }
        };
        net.frame(0, &f);
        net.deliver_all(256);
        net.check_tables();
    }
});
