//! Microbenchmarks of the data plane (`cargo bench -p metalvpc-protocol`):
//!
//! * `aead/<cipher>/<size>`: seal then open one packet of `size` bytes in place, for both
//!   data-plane ciphers; the throughput criterion prints is that of one core doing both.
//! * `handshake/ik`: one complete Noise IK handshake (both sides), i.e. handshakes per second.
//! * `edge/frame_to_datagram` and `edge/datagram_to_frame`: the per-packet path of the edge
//!   state machine with an established session (lookup, checks, counters, seal or open).
//!
//! The edge pair is set up through the public API with a tiny in-memory underlay, like the
//! crate's simulator, so these figures include everything the shell's loop pays per packet
//! except the system calls.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use metalvpc_protocol::crypto::{AeadKey, Cipher, Handshake};
use metalvpc_protocol::edge::{Edge, EdgeConfig};
use metalvpc_protocol::supernode::{CommunityConfig, NodeEntry, Supernode, SupernodeConfig};
use metalvpc_protocol::{Output, PrivateKey};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [64, 1400, 9000, 65000];

fn aead(c: &mut Criterion) {
    for cipher in Cipher::ALL {
        let mut g = c.benchmark_group(format!("aead/{}", cipher.name()));
        let send = AeadKey::with_cipher(cipher, &[7; 32]);
        let recv = AeadKey::with_cipher(cipher, &[7; 32]);
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut buf = vec![0x5au8; size + 16];
            let hdr = [1u8; 16];
            let mut counter = 0u64;
            g.bench_function(size.to_string(), |b| {
                b.iter(|| {
                    counter += 1;
                    let (body, tag_room) = buf.split_at_mut(size);
                    let tag = send.seal(counter, &hdr, body);
                    tag_room.copy_from_slice(&tag);
                    let n = recv.open(counter, &hdr, &mut buf);
                    black_box(n.expect("opens"));
                })
            });
        }
        g.finish();
    }
}

fn handshake(c: &mut Criterion) {
    let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
    let bpub = b.public_key();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ik", |bench| {
        let (mut m1, mut m2) = (Vec::new(), Vec::new());
        bench.iter(|| {
            m1.clear();
            m2.clear();
            let init = Handshake::initiate(&a, &bpub, b"payload", &mut m1).unwrap();
            let (resp, _, _) = Handshake::respond(&b, &m1).unwrap();
            let _kb = resp.finish_response(b"ack", &mut m2).unwrap();
            black_box(init.finish_initiation(&m2).unwrap());
        })
    });
    g.finish();
}

/// A supernode and two edges exchanging datagrams in memory until a and b have a session.
struct Pair {
    now: Instant,
    sn: Supernode,
    edges: [Edge; 2],
    addrs: [SocketAddr; 3],
    out: Output,
    frame: Vec<u8>,
}

impl Pair {
    fn new(cipher: Cipher) -> Pair {
        let now = Instant::now();
        let sn_key = PrivateKey::generate();
        let keys = [PrivateKey::generate(), PrivateKey::generate()];
        let addrs: [SocketAddr; 3] = [
            "198.18.0.1:7654".parse().unwrap(),
            "198.18.0.11:7655".parse().unwrap(),
            "198.18.0.12:7655".parse().unwrap(),
        ];
        let ips = [[10, 0, 0, 1], [10, 0, 0, 2]];
        let community = CommunityConfig {
            name: "bench".into(),
            network: "10.0.0.0/24".parse().unwrap(),
            nodes: (0..2)
                .map(|i| NodeEntry {
                    key: keys[i].public_key(),
                    name: format!("e{i}"),
                    address: std::net::Ipv4Addr::from(ips[i]).into(),
                    allowed_cidrs: vec![],
                    ipv6_router: false,
                })
                .collect(),
            relay: true,
            cipher,
            signed: None,
            enrolment: None,
        };
        let sn = Supernode::new(
            SupernodeConfig {
                private_key: sn_key.clone(),
                communities: vec![community],
                register_interval: 10,
            },
            now,
            metalvpc_protocol::Rng::from_seed([1; 32]),
        );
        let edge = |i: usize| {
            Edge::new(
                EdgeConfig {
                    cipher,
                    ..EdgeConfig::new(
                        "bench",
                        keys[i].clone(),
                        std::net::Ipv4Addr::from(ips[i]).into(),
                        vec![(addrs[0], sn_key.public_key())],
                    )
                },
                now,
                1_700_000_000_000_000,
                metalvpc_protocol::Rng::from_seed([10 + i as u8; 32]),
            )
        };
        let edges = [edge(0), edge(1)];
        // An IPv4 frame a -> b of 1400 bytes.
        let mut frame = Vec::with_capacity(1400);
        frame.extend_from_slice(&keys[1].public_key().derived_mac().0);
        frame.extend_from_slice(&keys[0].public_key().derived_mac().0);
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        frame.resize(26, 0);
        frame.extend_from_slice(&ips[0]);
        frame.extend_from_slice(&ips[1]);
        frame.resize(1400, 0xab);
        let mut p = Pair {
            now,
            sn,
            edges,
            addrs,
            out: Output::default(),
            frame,
        };
        for _ in 0..100 {
            p.tick();
        }
        let f = p.frame.clone();
        p.edges[0].handle_frame(p.now, &f, &mut p.out);
        p.pump(1);
        for _ in 0..100 {
            p.tick();
        }
        p
    }

    /// Moves every queued datagram to its destination until the network is quiet.
    fn pump(&mut self, from: usize) {
        let mut wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)> = VecDeque::new();
        let take = |out: &mut Output, src: SocketAddr, wire: &mut VecDeque<_>| {
            for t in &out.transmits {
                wire.push_back((src, t.dst, out.bytes(t).to_vec()));
            }
            out.clear();
        };
        take(&mut self.out, self.addrs[from], &mut wire);
        let mut budget = 10_000;
        while let Some((src, dst, mut pkt)) = wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "packet storm");
            let i = self.addrs.iter().position(|a| *a == dst).expect("known");
            if i == 0 {
                self.sn.handle_udp(self.now, src, &mut pkt, &mut self.out);
            } else {
                self.edges[i - 1].handle_udp(self.now, src, &mut pkt, &mut self.out);
            }
            take(&mut self.out, dst, &mut wire);
        }
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(50);
        self.sn.handle_timeout(self.now, &mut self.out);
        self.pump(0);
        for i in 0..2 {
            self.edges[i].handle_timeout(self.now, &mut self.out);
            self.pump(i + 1);
        }
    }
}

fn edge_path(c: &mut Criterion) {
    for cipher in Cipher::ALL {
        let mut p = Pair::new(cipher);
        let mut g = c.benchmark_group(format!("edge/{}", cipher.name()));
        g.throughput(Throughput::Bytes(p.frame.len() as u64));
        let (now, frame) = (p.now, p.frame.clone());
        g.bench_function("frame_to_datagram", |b| {
            b.iter(|| {
                p.edges[0].handle_frame(now, &frame, &mut p.out);
                assert_eq!(p.out.transmits.len(), 1, "a session is up");
                p.out.clear();
            })
        });
        let src = p.addrs[1];
        let mut rx = Output::default();
        let [a, b_edge] = &mut p.edges;
        let out = &mut p.out;
        g.bench_function("datagram_to_frame", |b| {
            b.iter_batched(
                || {
                    a.handle_frame(now, &frame, out);
                    let d = out.bytes(&out.transmits[0]).to_vec();
                    out.clear();
                    d
                },
                |mut d| {
                    b_edge.handle_udp(now, src, &mut d, &mut rx);
                    assert_eq!(rx.frames.len(), 1, "delivered");
                    rx.clear();
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, aead, handshake, edge_path);
criterion_main!(benches);
