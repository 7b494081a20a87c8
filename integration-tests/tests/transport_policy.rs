//! The TCP fallback and the relay policy, with the real binaries:
//! * an edge whose outbound UDP is blocked entirely reaches the supernode over TCP (same port)
//!   and its traffic is relayed over that connection;
//! * an edge with `relay_policy = "direct-only"` never uses a relay: with direct UDP blocked it
//!   has no path (and `status` says why), and once unblocked it goes direct.

use metalvpc_integration_tests::{block_outbound_udp, ping, Lab};
use std::time::{Duration, Instant};

#[test]
fn tcp_fallback_when_outbound_udp_is_blocked() {
    const TEST: &str = "tcp_fallback_when_outbound_udp_is_blocked";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.84.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    block_outbound_udp(b.ns());
    lab.start_supernode(&[metalvpc_integration_tests::Community::new(
        "prod",
        "10.84.0.0/24",
        e.iter()
            .map(metalvpc_integration_tests::Edge::member)
            .collect(),
    )]);
    let start = Instant::now();
    lab.start_edge(a);
    lab.start_edge(b);
    let reg = lab.wait_registered(b, Duration::from_secs(30));
    println!("[{TEST}] edge b (no outbound UDP) registered over TCP {reg:.2?} after start");
    let st = lab.edge_status(b).unwrap();
    assert_eq!(st["supernodes"][0]["transport"], "tcp", "{st:#}");
    let first = lab.wait_ping(a, b, Duration::from_secs(20));
    println!(
        "[{TEST}] first ping a->b {:.2?} after start ({first:.2?} of pinging)",
        start.elapsed()
    );
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 10);
        assert!(p.all_ok(), "{} -> {}: {p:?}", x.name, y.name);
        println!(
            "[{TEST}] ping {} -> {} relayed over TCP: avg {:.3} ms",
            x.name,
            y.name,
            p.avg_ms.unwrap_or(f64::NAN)
        );
        assert_eq!(lab.peer_entry(x, y).unwrap()["path"], "relay");
    }
    let sn = lab.supernode_status().unwrap();
    assert!(sn["tcp_connections"].as_u64().unwrap() >= 1, "{sn:#}");
    assert!(sn["relay"]["packets"].as_u64().unwrap() > 0, "{sn:#}");
}

#[test]
fn direct_only_edge_never_relays() {
    const TEST: &str = "direct_only_edge_never_relays";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.83.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    // Top-level keys must come before the first table of the file.
    let cfg = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(&a.config, format!("relay_policy = \"direct-only\"\n{cfg}")).unwrap();
    lab.block_udp(a, b);
    lab.start_supernode(&[metalvpc_integration_tests::Community::new(
        "prod",
        "10.83.0.0/24",
        e.iter()
            .map(metalvpc_integration_tests::Edge::member)
            .collect(),
    )]);
    lab.start_edges(&e);
    std::thread::sleep(Duration::from_secs(3));
    let p = ping(a.ns(), &b.ip(), 5);
    assert_eq!(
        p.received, 0,
        "a reached b although direct UDP is blocked and a may not relay: {p:?}"
    );
    let peer = lab.peer_entry(a, b).expect("a knows b");
    assert_ne!(peer["path"], "relay", "{peer:#}");
    let reason = peer["path_reason"].as_str().unwrap_or("");
    assert!(reason.contains("direct-only"), "path_reason: {reason}");
    println!("[{TEST}] blocked: path {} — {reason}", peer["path"]);
    // a sends nothing through the supernode. (b may: its policy allows relaying, so its
    // handshake copies can reach the supernode; a drops what arrives that way.)
    let sn = lab.supernode_status().unwrap();
    let member_a = sn["communities"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "a")
        .expect("a is a member")
        .clone();
    assert_eq!(
        member_a["relay_rx_bytes"].as_u64(),
        Some(0),
        "the direct-only edge a sent through the supernode's relay: {sn:#}"
    );

    lab.unblock_udp(a, b);
    let t = lab.wait_ping(a, b, Duration::from_secs(30));
    println!("[{TEST}] unblocked: first ping after {t:.2?}");
    assert!(lab
        .wait_path(a, b, "direct", Duration::from_secs(15))
        .is_some());
    assert!(ping(b.ns(), &a.ip(), 5).all_ok());
}
