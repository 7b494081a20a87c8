//! Many members for the memory figure of `integration-tests/bench/run.sh`: registers N
//! edges of the real sans-IO core with a supernode, each on its own UDP socket, so that a
//! real edge daemon of the community learns N peers.
//!
//!   fake_members gen N PREFIX DIR      keys to DIR/keys, [[community.node]] lines to DIR/nodes.toml;
//!                                      member i gets address PREFIX.(4 + i / 250).(1 + i % 250)
//!   fake_members run DIR SN_ADDR SN_PUBKEY COMMUNITY PREFIX BIND_IP SECONDS
//!
//! Bounded: at most 5000 members, and `run` stops after SECONDS. The members only read
//! their sockets until they are registered (see `run`).

use metalvpc_protocol::edge::{Edge, EdgeConfig};
use metalvpc_protocol::{Output, PrivateKey, PublicKey};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

fn addr(prefix: &str, i: usize) -> IpAddr {
    format!("{prefix}.{}.{}", 4 + i / 250, 1 + i % 250)
        .parse()
        .expect("PREFIX is two octets, e.g. 10.98")
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("gen") if a.len() == 5 => {
            let n: usize = a[2].parse().expect("N");
            assert!(n <= 5000, "at most 5000 members");
            let dir = std::path::Path::new(&a[4]);
            let (mut keys, mut nodes) = (String::new(), String::new());
            for i in 0..n {
                let k = PrivateKey::generate();
                keys += &format!("{}\n", k.to_base64());
                nodes += &format!(
                    "[[community.node]]\nname = \"m{i}\"\npublic_key = \"{}\"\naddress = \"{}\"\n",
                    k.public_key().to_base64(),
                    addr(&a[3], i)
                );
            }
            std::fs::write(dir.join("keys"), keys).expect("write keys");
            std::fs::write(dir.join("nodes.toml"), nodes).expect("write nodes.toml");
        }
        Some("run") if a.len() == 9 => run(&a[2..]),
        _ => {
            eprintln!("usage: see the top of integration-tests/bench/fake_members.rs");
            std::process::exit(2);
        }
    }
}

fn run(a: &[String]) {
    let keys = std::fs::read_to_string(std::path::Path::new(&a[0]).join("keys")).expect("keys");
    let sn: SocketAddr = a[1].parse().expect("SN_ADDR");
    let sn_key = PublicKey::from_base64(&a[2]).expect("SN_PUBKEY");
    let bind: IpAddr = a[5].parse().expect("BIND_IP");
    let until = Instant::now() + Duration::from_secs(a[6].parse().expect("SECONDS"));
    let lim = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: raising our own descriptor limit (one socket per member).
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let now = Instant::now();
    let mut members: Vec<(UdpSocket, Edge)> = keys
        .lines()
        .enumerate()
        .map(|(i, k)| {
            let key = PrivateKey::from_base64(k).expect("key");
            let sock = UdpSocket::bind(SocketAddr::new(bind, 0)).expect("bind");
            sock.set_nonblocking(true).unwrap();
            let cfg = EdgeConfig::new(a[3].clone(), key, addr(&a[4], i), vec![(sn, sn_key)]);
            (
                sock,
                Edge::new(cfg, now, unix, metalvpc_protocol::Rng::from_os()),
            )
        })
        .collect();
    let mut out = Output::default();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < until {
        for (sock, edge) in &mut members {
            let now = Instant::now();
            // Read only until registered: afterwards the supernode's member lists (every
            // registration pushes one to every member, which is quadratic for this process
            // alone) are left to overflow the socket buffer. The timers keep re-registering;
            // if the core gives up on the link, it handshakes again and reads again.
            while !edge.is_registered() {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    break;
                };
                edge.handle_udp(now, src, &mut buf[..n], &mut out);
            }
            if edge.poll_timeout() <= now {
                edge.handle_timeout(now, &mut out);
            }
            for t in &out.transmits {
                let _ = sock.send_to(out.bytes(t), t.dst);
            }
            out.clear();
            edge.drain_events().for_each(drop);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
