//! A bounded flood generator for the denial-of-service tests (run inside a test namespace).
//!
//! mvflood <target ip:port> <mode> <seconds> <source ip>...
//!
//! Modes: `junk-init` (handshake initiations of random bytes), `unknown-key` (real Noise IK
//! initiations with a Register for community "prod" from random keys that are not members),
//! `random` (random datagrams of 1–1400 bytes). Sends at `MVFLOOD_RATE` packets per second
//! (default 50000; the generator shares the machine with the daemons it floods, so an unpaced
//! flood mostly measures CPU starvation), round-robin from one socket per source address, for at most `seconds` (capped at 30), and prints one JSON line: packets
//! and bytes sent, replies and reply bytes received, the largest reply and the smallest
//! request sent.

use metalvpc_protocol::control::Control;
use metalvpc_protocol::crypto::Handshake;
use metalvpc_protocol::keys::{Mac, PrivateKey, PublicKey};
use metalvpc_protocol::wire;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn rand_bytes(b: &mut [u8]) {
    getrandom::getrandom(b).expect("random");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: mvflood <target ip:port> <junk-init|unknown-key|random> <seconds> <source ip>...");
        std::process::exit(2);
    }
    let target: SocketAddr = args[1].parse().expect("target ip:port");
    let mode = args[2].as_str();
    let secs: u64 = args[3].parse::<u64>().expect("seconds").min(30);
    let sockets: Vec<UdpSocket> = args[4..]
        .iter()
        .map(|ip| {
            let s = UdpSocket::bind((ip.parse::<std::net::IpAddr>().expect("source ip"), 0))
                .expect("bind source");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // A pool of requests, made up front so that crypto does not limit the rate.
    let pool: Vec<Vec<u8>> = (0..256)
        .map(|_| match mode {
            "junk-init" => {
                let mut p = vec![0u8; 150];
                rand_bytes(&mut p);
                p[..4].copy_from_slice(&[wire::VERSION, wire::TYPE_HANDSHAKE_INIT, 0, 0]);
                p
            }
            "unknown-key" => {
                let key = PrivateKey::generate();
                let reg = Control::Register {
                    max_version: wire::VERSION,
                    community: "prod".into(),
                    address: "10.80.0.200".parse().unwrap(),
                    mac: Mac([2, 0, 0, 0, 0, 9]),
                    instance: 1,
                    timestamp: 1,
                    endpoints: vec![],
                    cipher: 1,
                    join: None,
                };
                let mut p = Vec::new();
                wire::put_init_header(&mut p, 7);
                let responder = PublicKey(
                    std::env::var("MVFLOOD_RESPONDER")
                        .ok()
                        .and_then(|k| PublicKey::from_base64(&k).ok())
                        .map(|k| k.0)
                        .unwrap_or([9; 32]),
                );
                Handshake::initiate(&key, &responder, &reg.encode(), &mut p).expect("init");
                p
            }
            _ => {
                let mut len = [0u8; 2];
                rand_bytes(&mut len);
                let mut p = vec![0u8; 1 + usize::from(u16::from_le_bytes(len)) % 1400];
                rand_bytes(&mut p);
                p
            }
        })
        .collect();
    let rate: f64 = std::env::var("MVFLOOD_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50_000.0);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (mut sent, mut sent_bytes, mut replies, mut reply_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut largest_reply = 0usize;
    let mut buf = [0u8; 2048];
    let mut i = 0usize;
    while Instant::now() < end {
        let due = Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait.min(Duration::from_millis(10)));
            continue;
        }
        for s in &sockets {
            for _ in 0..32 {
                let p = &pool[i % pool.len()];
                i += 1;
                if s.send_to(p, target).is_ok() {
                    sent += 1;
                    sent_bytes += p.len() as u64;
                }
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    replies += 1;
                    reply_bytes += n as u64;
                    largest_reply = largest_reply.max(n);
                }
            }
        }
    }
    println!(
        "{{\"mode\":\"{mode}\",\"seconds\":{secs},\"sent\":{sent},\"sent_bytes\":{sent_bytes},\"replies\":{replies},\"reply_bytes\":{reply_bytes},\"largest_reply\":{largest_reply},\"smallest_request\":{}}}",
        pool.iter().map(Vec::len).min().unwrap_or(0)
    );
}
