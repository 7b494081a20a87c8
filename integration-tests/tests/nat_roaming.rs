//! Roaming: an edge's underlay endpoint changes under the running daemons, and the tunnel
//! recovers by itself (no restart).
//! * `edge_address_changes`: edge b on the public segment gets a new address (added, the
//!   old one removed): a must reach b at the new address directly.
//! * `nat_router_gets_new_wan_address`: both edges behind cone NATs; a's router gets a new
//!   WAN address (its nftables table deleted and reloaded, the old address removed, which
//!   drops every mapping): all of a's mappings change, and b's NAT must be punched afresh.

use metalvpc_integration_tests::{sh_in, Lab, NatKind};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[test]
fn edge_address_changes() {
    const TEST: &str = "nat_roaming_edge_address";
    let Some((mut lab, e, start)) = Lab::nat_pair(TEST, "10.64.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_direct_ping(a, b, start, Duration::from_secs(15));
    let new_ip = Ipv4Addr::new(198, 18, 0, 211);
    let out = sh_in(
        b.ns(),
        &format!(
            "set -e\nsysctl -qw net.ipv4.conf.{i}.promote_secondaries=1\nip addr add {new_ip}/24 dev {i}\nip addr del {old}/24 dev {i}",
            i = b.host.iface,
            old = b.host.ip
        ),
        Duration::from_secs(10),
    );
    assert!(out.success(), "moving b: {out:?}");
    let moved = Instant::now();
    let t = lab.wait_ping(a, b, Duration::from_secs(30));
    println!(
        "[{TEST}] b moved {} -> {new_ip}: ping a->b works again {:.2?} after the move ({t:.2?} of pinging)",
        b.host.ip,
        moved.elapsed()
    );
    let want = format!("{new_ip}:{}", b.listen_port);
    let direct = metalvpc_integration_tests::wait_until(Duration::from_secs(20), || {
        lab.path(a, b) == "direct" && lab.endpoint(a, b) == want
    });
    assert!(
        direct.is_some(),
        "a does not use b's new endpoint {want} directly\n{}",
        lab.pair_diagnostics(a, b)
    );
    println!(
        "[{TEST}] a reaches b directly at {want} {:.2?} after the move",
        moved.elapsed()
    );
    lab.ping_both_ways(a, b, 5);
    lab.assert_running();
}

#[test]
fn nat_router_gets_new_wan_address() {
    const TEST: &str = "nat_roaming_router_wan";
    let Some((mut lab, e, start)) = Lab::nat_pair(
        TEST,
        "10.63.0",
        [Some(NatKind::Cone), Some(NatKind::Cone)],
        None,
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_direct_ping(a, b, start, Duration::from_secs(30));
    lab.expect_path(b, a, "direct", Duration::from_secs(30));
    let old = a.router.as_ref().unwrap();
    let new_ip = Ipv4Addr::new(198, 18, 0, 151);
    let r = lab.renumber_wan(old, new_ip);
    let moved = Instant::now();
    println!("[{TEST}] a's router WAN {} -> {}", old.wan.ip, r.wan.ip);
    let t = lab.wait_ping(a, b, Duration::from_secs(40));
    println!(
        "[{TEST}] ping a->b works again {:.2?} after the renumbering ({t:.2?} of pinging)",
        moved.elapsed()
    );
    lab.ping_both_ways(a, b, 5);
    let prefix = format!("{new_ip}:");
    let direct = metalvpc_integration_tests::wait_until(Duration::from_secs(40), || {
        lab.path(b, a) == "direct" && lab.endpoint(b, a).starts_with(&prefix)
    });
    assert!(
        direct.is_some(),
        "b does not reach a directly at its router's new address\n{}",
        lab.pair_diagnostics(b, a)
    );
    println!(
        "[{TEST}] b reaches a directly at {} {:.2?} after the renumbering",
        lab.endpoint(b, a),
        moved.elapsed()
    );
    lab.ping_both_ways(a, b, 5);
    lab.assert_running();
}
