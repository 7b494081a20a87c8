//! NAT topology 2: each edge behind its own cone NAT router (Linux `masquerade`, conntrack
//! filtering, unsolicited packets dropped): the edges punch through both NATs and go
//! direct, each reaching the other at its router's WAN address.

use metalvpc_integration_tests::{Lab, NatKind};
use std::time::Duration;

const TEST: &str = "nat_cone_cone";

#[test]
fn nat_cone_cone() {
    let Some((mut lab, e, start)) = Lab::nat_pair(
        TEST,
        "10.70.0",
        [Some(NatKind::Cone), Some(NatKind::Cone)],
        None,
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    let t = lab.wait_direct_ping(a, b, start, Duration::from_secs(30));
    println!("[{TEST}] edge start -> first direct ping a->b through two cone NATs: {t:.2?}");
    lab.expect_path(b, a, "direct", Duration::from_secs(30));
    println!(
        "[{TEST}] edge start -> direct both ways: {:.2?}",
        start.elapsed()
    );
    for (x, y) in [(a, b), (b, a)] {
        let ep = lab.endpoint(x, y);
        let wan = y.router.as_ref().unwrap().wan.ip;
        assert!(
            ep.starts_with(&format!("{wan}:")),
            "{} reaches {} at {ep}, not at its router's WAN address {wan}",
            x.name,
            y.name
        );
        println!("[{TEST}] {} -> {} direct via {ep}", x.name, y.name);
    }
    let (ab, ba) = lab.ping_both_ways(a, b, 5);
    println!("[{TEST}] direct RTT a->b {ab:.3} ms, b->a {ba:.3} ms");
    lab.assert_running();
}
