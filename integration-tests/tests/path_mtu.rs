//! MTU done right (issue 4): the underlay's MTU is lowered on one host's link to 1400, where
//! nothing tells the other side (no ICMP: a black hole for full-size packets). That host's TAP
//! MTU follows its route (1290); the other side's path MTU probe finds 1400; a don't-fragment ping one byte over what fits gets an ICMP
//! "fragmentation needed" on the TAP instead of vanishing; a bulk TCP transfer (whose SYNs
//! also get their MSS clamped) completes with the data intact.

use metalvpc_integration_tests::{exec_in, tcp_transfer, wait_until, Lab};
use std::time::Duration;

#[test]
fn a_smaller_underlay_mtu_is_found_and_handled() {
    const TEST: &str = "a_smaller_underlay_mtu_is_found_and_handled";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let edges = lab.add_edges("prod", "10.73.0", &["a", "b"]);
    let (a, b) = (edges[0].clone(), edges[1].clone());
    // b's underlay link carries at most 1400-byte packets; a is not told.
    let out = exec_in(
        b.ns(),
        &["ip", "link", "set", &b.host.iface, "mtu", "1400"],
        Duration::from_secs(5),
    );
    assert!(out.success(), "{out:?}");
    lab.start_supernode(&[metalvpc_integration_tests::Community::new(
        "prod",
        "10.73.0.0/24",
        edges
            .iter()
            .map(metalvpc_integration_tests::Edge::member)
            .collect(),
    )]);
    lab.start_edges(&edges);
    lab.wait_ping(&a, &b, Duration::from_secs(15));
    // b's own link is 1400: its TAP MTU follows the route (1400 - 110 = 1290), so its
    // largest probe (1290 + 14 + 60 = 1364) already fits. a's TAP keeps 1390 and its probe
    // finds the 1400 that its side does not know about.
    let b_mtu = lab.edge_status(&b).unwrap()["mtu"].clone();
    assert_eq!(
        b_mtu, 1290,
        "b's TAP MTU does not follow its 1400-byte underlay"
    );
    let found = wait_until(Duration::from_secs(20), || {
        lab.peer_entry(&a, &b)
            .is_some_and(|p| p["path_mtu"] == 1400)
            && lab
                .peer_entry(&b, &a)
                .is_some_and(|p| p["path_mtu"] == 1364)
    });
    assert!(
        found.is_some(),
        "path MTU not found: a sees {:?}, b sees {:?}",
        lab.peer_entry(&a, &b).map(|p| p["path_mtu"].clone()),
        lab.peer_entry(&b, &a).map(|p| p["path_mtu"].clone())
    );
    println!("[{TEST}] b's TAP MTU 1290 from its route; a found path MTU 1400 to b (b: 1364, its largest) within {found:.2?}");
    assert!(
        lab.log("a").contains("path MTU to peer 'b' is 1400"),
        "{}",
        lab.log("a")
    );

    // 1400 - 28 (outer IP, UDP) - 32 (our header and tag) - 14 (inner Ethernet) = 1326.
    let fits = exec_in(
        a.ns(),
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1298",
            &b.ip(),
        ],
        Duration::from_secs(10),
    );
    println!(
        "[{TEST}] DF ping of 1326 bytes: {}",
        fits.stdout.lines().last().unwrap_or("")
    );
    assert!(fits.success(), "{fits:?}");
    let over = exec_in(
        a.ns(),
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1299",
            &b.ip(),
        ],
        Duration::from_secs(10),
    );
    let text = format!("{}{}", over.stdout, over.stderr);
    println!("[{TEST}] DF ping of 1327 bytes:\n{text}");
    assert!(!over.success());
    assert!(
        text.contains("mtu = 1326") || text.contains("mtu=1326"),
        "no ICMP fragmentation-needed with the MTU that fits: {text}"
    );
    let st = lab.edge_status(&a).unwrap();
    assert!(
        st["drops"]["too_big"].as_u64().unwrap_or(0) >= 1,
        "{}",
        st["drops"]
    );

    // Bulk TCP both ways: completes, bytes intact.
    for (x, y, port) in [(&a, &b, 5301u16), (&b, &a, 5302)] {
        let t = tcp_transfer(
            x.ns(),
            y.ns(),
            y.overlay,
            port,
            20 << 20,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("TCP {} -> {}: {e:#}", x.name, y.name));
        println!(
            "[{TEST}] TCP {} -> {} over the 1400-byte path: 20 MiB in {:.2} s ({:.0} Mbit/s)",
            x.name,
            y.name,
            t.secs,
            t.mbit_per_s()
        );
        assert_eq!(t.bytes, 20 << 20);
        assert_eq!(t.sha256_sent, t.sha256_received);
    }
    lab.assert_running();
}
