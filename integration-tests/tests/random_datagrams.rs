//! Required test 8: random datagrams (bounded: 2000 per target, 0..=1500 bytes) at the
//! supernode's and an edge's UDP ports. Both keep running, status still answers, the
//! overlay still works, and the drop counters account for the garbage.

use metalvpc_integration_tests::{drop_count, drops_total, ping, send_random_udp, Lab};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const TEST: &str = "random_datagrams_are_dropped";
const COUNT: usize = 2000;

#[test]
fn random_datagrams_are_dropped() {
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.89.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    // The garbage comes from a separate host on the underlay.
    let x = lab
        .add_host("x", Ipv4Addr::new(198, 18, 0, 99))
        .expect("attacker host");

    let sn_before = lab.supernode_status().expect("supernode status");
    let b_before = lab.edge_status(b).expect("status of b");
    let sn_addr: SocketAddr = lab.supernode_addr().parse().unwrap();
    let b_addr = SocketAddr::from((b.host.ip, b.listen_port));
    for dst in [sn_addr, b_addr] {
        let sent = send_random_udp(&x.ns, dst, COUNT, 1500).expect("sending random datagrams");
        println!("[{TEST}] sent {sent} random datagrams to {dst}");
    }
    std::thread::sleep(Duration::from_millis(500));
    lab.assert_running();

    let sn_after = lab
        .supernode_status()
        .expect("supernode status after the garbage");
    let b_after = lab.edge_status(b).expect("status of b after the garbage");
    for (who, before, after) in [
        ("supernode", &sn_before, &sn_after),
        ("edge b", &b_before, &b_after),
    ] {
        let (t0, t1) = (drops_total(before), drops_total(after));
        println!(
            "[{TEST}] {who}: drops total {t0} -> {t1}; {}",
            after["drops"]
        );
        assert!(t1 > t0, "{who}: drop counters did not grow: {after:#}");
        assert!(
            drop_count(after, "malformed") > 0,
            "{who}: drops.malformed is 0: {after:#}"
        );
    }
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 5);
        assert!(
            p.all_ok(),
            "overlay ping {} -> {} after the garbage: {p:?}",
            x.name,
            y.name
        );
    }
    lab.assert_running();
}
