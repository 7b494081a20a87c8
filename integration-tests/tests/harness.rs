//! Self-tests of the harness itself, with plain namespaces and no metalvpc daemons:
//! the bridge underlay forwards, the nftables block drops UDP between two hosts but not
//! to a third, captures see UDP payloads, raw frames can be replayed, and everything is
//! gone after the lab is dropped.

use metalvpc_integration_tests::lab::{block_udp_hosts, unblock_udp_hosts};
use metalvpc_integration_tests::{in_netns, ping, Lab};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

/// Sends one UDP datagram from `from_ns` to `to`:`port` and reports whether a socket bound
/// in `to_ns` received it within a second.
fn udp_reaches(
    from_ns: &str,
    to_ns: &str,
    to: Ipv4Addr,
    port: u16,
    payload: &'static [u8],
) -> bool {
    let rx = in_netns(to_ns, move || UdpSocket::bind((to, port)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    in_netns(from_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        // An nftables drop in the output hook makes send_to fail with EPERM: that is "blocked".
        let _ = s.send_to(payload, (to, port));
    })
    .unwrap();
    let mut buf = [0u8; 1500];
    matches!(rx.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == payload)
}

#[test]
fn underlay_block_capture_and_cleanup() {
    let Some(mut lab) = Lab::new("harness_underlay") else {
        return;
    };
    let a = lab.add_host("a", Ipv4Addr::new(198, 18, 0, 11)).unwrap();
    let b = lab.add_host("b", Ipv4Addr::new(198, 18, 0, 12)).unwrap();
    let sn = lab.supernode_host.clone();
    let names: Vec<String> = [&a, &b, &sn].iter().map(|h| h.ns.clone()).collect();

    // Underlay forwards through the bridge.
    let p = ping(&a.ns, "198.18.0.12", 3);
    assert!(p.all_ok(), "ping a->b over the bridge: {p:?}");
    println!("[harness] underlay RTT a->b {:.3} ms", p.avg_ms.unwrap());
    assert!(ping(&b.ns, "198.18.0.1", 2).all_ok());

    // Capture sees a UDP payload on b's underlay interface.
    let cap = lab.capture(&b.ns, &b.iface, "udp", "h.pcap");
    assert!(udp_reaches(&a.ns, &b.ns, b.ip, 40000, b"harness-marker-1"));
    let frames = cap.stop().unwrap();
    let hit = frames
        .iter()
        .filter_map(|f| f.udp())
        .find(|u| u.payload == b"harness-marker-1");
    let hit = hit.expect("capture holds the datagram");
    assert_eq!((hit.src, hit.dst, hit.dport), (a.ip, b.ip, 40000));

    // A frame captured on a's interface, re-sent raw from a, reaches b's socket again.
    let cap = lab.capture(&a.ns, &a.iface, "udp", "a.pcap");
    assert!(udp_reaches(&a.ns, &b.ns, b.ip, 40001, b"harness-marker-2"));
    let frames = cap.stop().unwrap();
    let frame = frames
        .iter()
        .find(|f| {
            f.udp()
                .map(|u| u.payload == b"harness-marker-2")
                .unwrap_or(false)
        })
        .unwrap();
    let rx = in_netns(&b.ns, move || UdpSocket::bind(("198.18.0.12", 40001)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut data = frame.data.clone();
    assert!(metalvpc_integration_tests::pcap::fix_udp_checksum(
        &mut data
    ));
    metalvpc_integration_tests::pcap::send_raw_frame(&a.ns, &a.iface, &data).unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = rx.recv_from(&mut buf).expect("replayed frame arrives");
    assert_eq!(&buf[..n], b"harness-marker-2");
    assert_eq!(from.ip(), a.ip);

    // The nftables block drops UDP a<->b both ways but not a<->supernode, and is removable.
    block_udp_hosts(&a, &b);
    assert!(
        !udp_reaches(&a.ns, &b.ns, b.ip, 40002, b"x"),
        "a->b must be blocked"
    );
    assert!(
        !udp_reaches(&b.ns, &a.ns, a.ip, 40003, b"x"),
        "b->a must be blocked"
    );
    assert!(
        udp_reaches(&a.ns, &sn.ns, sn.ip, 40004, b"x"),
        "a->supernode must pass"
    );
    assert!(
        ping(&a.ns, "198.18.0.12", 1).all_ok(),
        "ICMP is not blocked"
    );
    unblock_udp_hosts(&a, &b);
    assert!(
        udp_reaches(&a.ns, &b.ns, b.ip, 40005, b"x"),
        "a->b after unblock"
    );

    // A long-running process inside a namespace does not keep it alive after the drop.
    let sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &a.ns, "sleep", "300"])
        .spawn()
        .unwrap();
    let dir = lab.dir.clone();
    drop(lab);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for n in &names {
        assert!(!listed.contains(n.as_str()), "namespace {n} left behind");
    }
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    let mut sleeper = sleeper;
    let st = sleeper.wait().unwrap();
    assert!(!st.success(), "sleeper inside the namespace was killed");
}

#[test]
fn tcp_transfer_over_underlay() {
    let Some(mut lab) = Lab::new("harness_tcp") else {
        return;
    };
    let a = lab.add_host("a", Ipv4Addr::new(198, 18, 0, 11)).unwrap();
    let b = lab.add_host("b", Ipv4Addr::new(198, 18, 0, 12)).unwrap();
    let t = metalvpc_integration_tests::tcp_transfer(
        &a.ns,
        &b.ns,
        b.ip,
        5201,
        20 << 20,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(t.bytes, 20 << 20);
    assert_eq!(t.sha256_sent, t.sha256_received);
    assert_eq!(t.sha256_sent.len(), 64);
    println!(
        "[harness] underlay TCP {} MB in {:.2} s = {:.0} Mbit/s",
        t.bytes >> 20,
        t.secs,
        t.mbit_per_s()
    );
}

/// A UDP socket bound to `port` inside namespace `ns`.
fn udp_socket(ns: &str, port: u16) -> UdpSocket {
    let s = in_netns(ns, move || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// The source a datagram `s` → `to` arrives from at `rx`, if it arrives.
fn arrives_from(
    s: &UdpSocket,
    to: std::net::SocketAddrV4,
    rx: &UdpSocket,
) -> Option<std::net::SocketAddr> {
    s.send_to(b"nat-probe", to).ok()?;
    let mut buf = [0u8; 64];
    rx.recv_from(&mut buf).ok().map(|(_, from)| from)
}

#[test]
fn nat_routers_map_and_filter() {
    use metalvpc_integration_tests::NatKind;
    use std::net::SocketAddrV4;
    let Some(mut lab) = Lab::new("harness_nat") else {
        return;
    };
    let cone = lab.add_router("rc", NatKind::Cone);
    let sym = lab.add_router("rs", NatKind::Symmetric);
    let h1 = lab
        .add_host_behind(&cone, "h1")
        .expect("host behind the cone NAT");
    let h1b = lab
        .add_host_behind(&cone, "h1b")
        .expect("second host behind the cone NAT");
    let h2 = lab
        .add_host_behind(&sym, "h2")
        .expect("host behind the symmetric NAT");
    let p = lab.add_host("p", Ipv4Addr::new(198, 18, 0, 50)).unwrap();
    let (p1, p2, p3) = (
        udp_socket(&p.ns, 41001),
        udp_socket(&p.ns, 41002),
        udp_socket(&p.ns, 41003),
    );
    let to = |port| SocketAddrV4::new(p.ip, port);

    // Cone: the same public address and port (the source port kept) for every destination.
    let s1 = udp_socket(&h1.ns, 40000);
    let f1 = arrives_from(&s1, to(41001), &p1).expect("h1 -> p:41001");
    let f2 = arrives_from(&s1, to(41002), &p2).expect("h1 -> p:41002");
    assert_eq!(f1, f2, "cone NAT: one mapping for every destination");
    assert_eq!(f1.to_string(), format!("{}:40000", cone.wan.ip));

    // Symmetric: a fresh port per destination.
    let s2 = udp_socket(&h2.ns, 40000);
    let g1 = arrives_from(&s2, to(41001), &p1).expect("h2 -> p:41001");
    let g2 = arrives_from(&s2, to(41002), &p2).expect("h2 -> p:41002");
    assert_eq!(g1.ip(), g2.ip());
    assert_eq!(g1.ip().to_string(), sym.wan.ip.to_string());
    assert_ne!(
        g1.port(),
        g2.port(),
        "symmetric NAT: a new port per destination"
    );

    // Filtering: only the exact address and port h1 sent to gets through.
    let f1 = match f1 {
        std::net::SocketAddr::V4(v) => v,
        _ => unreachable!(),
    };
    let reply = arrives_from(&p1, f1, &s1);
    assert!(reply.is_some(), "a reply from p:41001 reaches h1");
    assert!(
        arrives_from(&p3, f1, &s1).is_none(),
        "p:41003 (never contacted) must not reach h1"
    );

    // LAN hosts reach each other directly over the router's bridge.
    let sb = udp_socket(&h1b.ns, 40000);
    let from = arrives_from(&s1, SocketAddrV4::new(h1b.ip, 40000), &sb).expect("h1 -> h1b");
    assert_eq!(
        from.ip().to_string(),
        h1.ip.to_string(),
        "no NAT on the LAN"
    );
    println!(
        "[harness_nat] cone maps h1 to {f1} for every destination; symmetric maps h2 to ports {} and {}",
        g1.port(),
        g2.port()
    );
}
