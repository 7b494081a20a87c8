//! An idle direct tunnel behind two cone NATs whose conntrack UDP timeouts are 10 s: after
//! 60 s without user traffic, a single ping (`-c 1 -W 1`) is answered at once, over the
//! still-direct path (the edges' keepalives and probes keep the mappings open).

use metalvpc_integration_tests::{ping_with, Lab, NatKind};
use std::time::Duration;

const TEST: &str = "nat_idle_tunnel";

#[test]
fn nat_idle_tunnel() {
    let Some((mut lab, e, start)) = Lab::nat_pair(
        TEST,
        "10.62.0",
        [Some(NatKind::Cone), Some(NatKind::Cone)],
        Some(10),
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    let t = lab.wait_direct_ping(a, b, start, Duration::from_secs(30));
    lab.expect_path(b, a, "direct", Duration::from_secs(30));
    println!("[{TEST}] direct after {t:.2?}; now idle for 60 s (NAT UDP timeout 10 s)");
    let ep = lab.endpoint(a, b);
    std::thread::sleep(Duration::from_secs(60));
    lab.assert_running();
    let p = ping_with(a.ns(), &b.ip(), 1, &["-W", "1"]);
    assert!(
        p.all_ok(),
        "the first ping after 60 s idle was not answered within 1 s: {p:?}\n{}",
        lab.pair_diagnostics(a, b)
    );
    assert_eq!(lab.path(a, b), "direct", "{}", lab.pair_diagnostics(a, b));
    assert_eq!(lab.endpoint(a, b), ep, "the endpoint moved while idle");
    println!(
        "[{TEST}] after 60 s idle: first ping answered in {:.3} ms, still direct via {ep}",
        p.avg_ms.unwrap_or(f64::NAN)
    );
    lab.ping_both_ways(a, b, 3);
}
