//! NAT topology 3: edge a behind a symmetric NAT (`masquerade fully-random`), edge b behind
//! a cone NAT. Traffic must flow; which path the edges reach depends on the NATs (with
//! Linux conntrack filtering the symmetric side's fresh port per destination defeats the
//! hole punch, so the relay is the likely outcome). The path must be "direct" or "relay",
//! the same on both sides, and stable once settled.

use metalvpc_integration_tests::{Lab, NatKind};
use std::time::Duration;

const TEST: &str = "nat_symmetric_cone";

#[test]
fn nat_symmetric_cone() {
    let Some((mut lab, e, start)) = Lab::nat_pair(
        TEST,
        "10.69.0",
        [Some(NatKind::Symmetric), Some(NatKind::Cone)],
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
    // Let the hole-punch attempts (a probe every 5 s while relayed) run a few rounds.
    std::thread::sleep(Duration::from_secs(11));
    let path = lab.assert_stable_path(a, b, 8, Duration::from_secs(1));
    assert!(
        path == "direct" || path == "relay",
        "path a->b is {path:?}\n{}",
        lab.pair_diagnostics(a, b)
    );
    assert_eq!(lab.path(b, a), path, "both sides must agree");
    let (ab, ba) = lab.ping_both_ways(a, b, 10);
    assert_eq!(lab.path(a, b), path, "path changed while pinging");
    let reason = lab.peer_entry(a, b).unwrap()["path_reason"].clone();
    println!("[{TEST}] symmetric + cone: path {path} (a's reason: {reason})");
    println!("[{TEST}] RTT a->b {ab:.3} ms, b->a {ba:.3} ms");
    lab.assert_running();
}
