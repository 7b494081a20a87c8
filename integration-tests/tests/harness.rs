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
