//! NAT topology 4: both edges behind symmetric NATs (`masquerade fully-random`): no direct
//! path can be punched, so traffic is relayed by the supernode, and stays so.

use metalvpc_integration_tests::{json_u64, Lab, NatKind};
use std::time::Duration;

const TEST: &str = "nat_symmetric_symmetric";

#[test]
fn nat_symmetric_symmetric() {
    let Some((mut lab, e, start)) = Lab::nat_pair(
        TEST,
        "10.68.0",
        [Some(NatKind::Symmetric), Some(NatKind::Symmetric)],
        None,
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    let t = lab.wait_ping(a, b, Duration::from_secs(20));
    println!(
        "[{TEST}] first ping a->b {:.2?} after edge start ({t:.2?} of pinging)",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_secs(11));
    let path = lab.assert_stable_path(a, b, 6, Duration::from_secs(1));
    assert_eq!(path, "relay", "{}", lab.pair_diagnostics(a, b));
    assert_eq!(lab.path(b, a), "relay", "{}", lab.pair_diagnostics(b, a));
    let before = json_u64(&lab.supernode_status().unwrap()["relay"], "packets");
    let (ab, ba) = lab.ping_both_ways(a, b, 10);
    let after = json_u64(&lab.supernode_status().unwrap()["relay"], "packets");
    assert!(
        after >= before + 40,
        "20 pings and 20 replies must pass the supernode: relay.packets {before} -> {after}"
    );
    println!(
        "[{TEST}] two symmetric NATs: relayed, RTT a->b {ab:.3} ms, b->a {ba:.3} ms; the supernode relayed {} packets for 20 pings",
        after - before
    );
    lab.assert_running();
}
