//! NAT topology 5: two edges behind one NAT router (same LAN). The supernode sees both at
//! the router's WAN address, but the edges announce their LAN addresses and go direct over
//! the LAN: each peer's endpoint is the other's 198.19.1.x address, not the router's.

use metalvpc_integration_tests::{Lab, NatKind};
use std::time::{Duration, Instant};

const TEST: &str = "nat_same_router";

#[test]
fn nat_same_router() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let r = lab.add_router("r", NatKind::Cone);
    let e = lab.add_edges_at("prod", "10.67.0", &[("a", Some(&r)), ("b", Some(&r))]);
    let (a, b) = (&e[0], &e[1]);
    lab.start_supernode(&[lab.community_of("10.67.0", &e)]);
    let start = Instant::now();
    lab.start_edges(&e);
    for x in [a, b] {
        let st = lab.edge_status(x).unwrap();
        let seen = st["supernodes"][0]["observed_endpoint"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            seen.starts_with(&format!("{}:", r.wan.ip)),
            "the supernode should see {} at the router's WAN address: {st:#}",
            x.name
        );
        println!("[{TEST}] supernode sees {} at {seen}", x.name);
    }
    let t = lab.wait_direct_ping(a, b, start, Duration::from_secs(20));
    println!("[{TEST}] edge start -> first direct ping a->b over the LAN: {t:.2?}");
    lab.expect_path(b, a, "direct", Duration::from_secs(20));
    for (x, y) in [(a, b), (b, a)] {
        let ep = lab.endpoint(x, y);
        assert_eq!(
            ep,
            format!("{}:{}", y.host.ip, y.listen_port),
            "{} must reach {} at its LAN address, not through the router ({})",
            x.name,
            y.name,
            r.wan.ip
        );
        println!("[{TEST}] {} -> {} direct via {ep}", x.name, y.name);
    }
    let (ab, ba) = lab.ping_both_ways(a, b, 5);
    println!("[{TEST}] LAN RTT a->b {ab:.3} ms, b->a {ba:.3} ms");
    lab.assert_running();
}
