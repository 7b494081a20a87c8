//! Required test 5: with direct UDP between two edges blocked (nftables in their
//! namespaces), traffic is relayed by the supernode; once unblocked, the edges go direct
//! within a bounded time, and traffic keeps flowing.

use metalvpc_integration_tests::{json_u64, ping, Community, Edge, Lab};
use std::time::Duration;

const TEST: &str = "relay_when_blocked_then_direct";

#[test]
fn relay_when_blocked_then_direct() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.92.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    lab.block_udp(a, b); // before the edges ever start: they never had a direct path
    lab.start_supernode(&[Community::new(
        "prod",
        "10.92.0.0/24",
        e.iter().map(Edge::member).collect(),
    )]);
    lab.start_edges(&e);

    let first = lab.wait_ping(a, b, Duration::from_secs(20));
    println!("[{TEST}] first relayed ping a->b after {first:.2?}");
    for (x, y) in [(a, b), (b, a)] {
        let t = lab.wait_path(x, y, "relay", Duration::from_secs(15));
        assert!(
            t.is_some(),
            "{} never showed path relay for {}: {:?}",
            x.name,
            y.name,
            lab.peer_entry(x, y)
        );
    }
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 10);
        assert!(p.all_ok(), "relayed ping {} -> {}: {p:?}", x.name, y.name);
        println!(
            "[{TEST}] relayed ping {} -> {}: avg RTT {:.3} ms",
            x.name,
            y.name,
            p.avg_ms.unwrap_or(f64::NAN)
        );
    }
    // The relayed path's round trip shows in status (pings through the supernode every
    // keepalive interval, 5 s by default).
    for (x, y) in [(a, b), (b, a)] {
        let mut rtt = None;
        metalvpc_integration_tests::wait_until(Duration::from_secs(12), || {
            rtt = lab
                .peer_entry(x, y)
                .filter(|p| p["path"] == "relay")
                .and_then(|p| p["rtt_ms"].as_f64());
            rtt.is_some()
        });
        let rtt = rtt.unwrap_or_else(|| {
            panic!(
                "{} shows no relayed RTT for {}: {:?}",
                x.name,
                y.name,
                lab.peer_entry(x, y)
            )
        });
        println!(
            "[{TEST}] status: relayed RTT {} -> {} {rtt:.3} ms",
            x.name, y.name
        );
        assert!(rtt > 0.0 && rtt < 50.0, "relayed RTT {rtt} ms");
    }
    let sn = lab.supernode_status().expect("supernode status");
    assert!(
        json_u64(&sn["relay"], "packets") > 0,
        "supernode relayed nothing: {sn:#}"
    );
    println!(
        "[{TEST}] supernode relayed {} packets, {} bytes",
        sn["relay"]["packets"], sn["relay"]["bytes"]
    );

    lab.unblock_udp(a, b);
    for (x, y) in [(a, b), (b, a)] {
        let t = lab
            .wait_path(x, y, "direct", Duration::from_secs(30))
            .unwrap_or_else(|| {
                panic!(
                    "{} did not go direct to {} within 30 s of unblocking: {:?}",
                    x.name,
                    y.name,
                    lab.peer_entry(x, y)
                )
            });
        println!(
            "[{TEST}] {} -> {} direct {t:.2?} after unblocking (measured in turn)",
            x.name, y.name
        );
    }
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 10);
        assert!(p.all_ok(), "direct ping {} -> {}: {p:?}", x.name, y.name);
        println!(
            "[{TEST}] direct ping {} -> {}: avg RTT {:.3} ms",
            x.name,
            y.name,
            p.avg_ms.unwrap_or(f64::NAN)
        );
    }
    lab.assert_running();
}
