//! NAT topology 1: both edges on the public segment (no NAT): the path is direct, and the
//! first ping over it comes soon after the edges start.

use metalvpc_integration_tests::Lab;
use std::time::Duration;

const TEST: &str = "nat_public_direct";

#[test]
fn nat_public_direct() {
    let Some((mut lab, e, start)) = Lab::nat_pair(TEST, "10.71.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    let t = lab.wait_direct_ping(a, b, start, Duration::from_secs(15));
    println!("[{TEST}] edge start -> first direct ping a->b: {t:.2?}");
    lab.expect_path(b, a, "direct", Duration::from_secs(15));
    for (x, y) in [(a, b), (b, a)] {
        let ep = lab.endpoint(x, y);
        assert_eq!(
            ep,
            format!("{}:{}", y.host.ip, y.listen_port),
            "{} reaches {} at its underlay address",
            x.name,
            y.name
        );
    }
    let (ab, ba) = lab.ping_both_ways(a, b, 5);
    println!("[{TEST}] direct RTT a->b {ab:.3} ms, b->a {ba:.3} ms");
    lab.assert_running();
}
