//! Edge b sits behind a router that forwards UDP only to and from the supernode (edge a is
//! on the public segment): b registers, no direct path exists, traffic is relayed.

use metalvpc_integration_tests::lab::SUPERNODE_IP;
use metalvpc_integration_tests::{json_u64, Lab, NatKind};
use std::time::{Duration, Instant};

const TEST: &str = "nat_udp_only_to_supernode";

#[test]
fn nat_udp_only_to_supernode() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let r = lab.add_router("r", NatKind::Cone);
    lab.router_udp_only_to(&r, SUPERNODE_IP);
    let e = lab.add_edges_at("prod", "10.66.0", &[("a", None), ("b", Some(&r))]);
    let (a, b) = (&e[0], &e[1]);
    lab.start_supernode(&[lab.community_of("10.66.0", &e)]);
    let start = Instant::now();
    lab.start_edges(&e);
    let st = lab.edge_status(b).unwrap();
    assert_eq!(
        st["supernodes"][0]["transport"], "udp",
        "b may use UDP to the supernode: {st:#}"
    );
    let t = lab.wait_ping(a, b, Duration::from_secs(20));
    println!(
        "[{TEST}] first ping a->b {:.2?} after edge start ({t:.2?} of pinging)",
        start.elapsed()
    );
    // A few probe rounds: none may get through.
    std::thread::sleep(Duration::from_secs(11));
    let path = lab.assert_stable_path(a, b, 5, Duration::from_secs(1));
    assert_eq!(path, "relay", "{}", lab.pair_diagnostics(a, b));
    assert_eq!(lab.path(b, a), "relay", "{}", lab.pair_diagnostics(b, a));
    let before = json_u64(&lab.supernode_status().unwrap()["relay"], "packets");
    let (ab, ba) = lab.ping_both_ways(a, b, 10);
    let after = json_u64(&lab.supernode_status().unwrap()["relay"], "packets");
    assert!(after >= before + 40, "relay.packets {before} -> {after}");
    let reason = lab.peer_entry(a, b).unwrap()["path_reason"].clone();
    println!("[{TEST}] relayed: RTT a->b {ab:.3} ms, b->a {ba:.3} ms (a's reason: {reason})");
    lab.assert_running();
}
