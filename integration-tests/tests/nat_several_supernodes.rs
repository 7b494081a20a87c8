//! Several supernodes: supernode 1 at 198.18.0.1 and supernode 2 at 198.18.0.2 (separate
//! keys, the same community file content); every edge config lists both. Edges a and b
//! register with both and go direct. Supernode 1 stops while a pings b at 10/s: no ping is
//! lost. Edge c (behind a cone NAT), started afterwards, registers with supernode 2 only
//! and still finds a and b.

use metalvpc_integration_tests::{ping_with, wait_until, Lab, NatKind};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const TEST: &str = "nat_several_supernodes";

#[test]
fn nat_several_supernodes() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    lab.add_supernode(Ipv4Addr::new(198, 18, 0, 2));
    let r = lab.add_router("rc", NatKind::Cone);
    let e = lab.add_edges_at(
        "prod",
        "10.60.0",
        &[("a", None), ("b", None), ("c", Some(&r))],
    );
    let (a, b, c) = (&e[0], &e[1], &e[2]);
    let community = lab.community_of("10.60.0", &e);
    lab.start_supernode_at(0, std::slice::from_ref(&community));
    lab.start_supernode_at(1, std::slice::from_ref(&community));
    let start = Instant::now();
    lab.start_edges(&e[..2]);
    let both = wait_until(Duration::from_secs(20), || {
        [a, b].iter().all(|x| lab.registered_count(x) == 2)
    });
    assert!(
        both.is_some(),
        "a and b not registered with both supernodes: {:?}\n{:?}",
        lab.edge_status(a),
        lab.edge_status(b)
    );
    println!(
        "[{TEST}] a and b registered with both supernodes {:.2?} after start",
        start.elapsed()
    );
    for i in 0..2 {
        let st = lab.supernode_status_at(i).unwrap();
        let n = st["communities"][0]["members"]
            .as_array()
            .map(|m| m.iter().filter(|x| x["registered"] == true).count())
            .unwrap_or(0);
        assert_eq!(
            n,
            2,
            "{} lists {n} registered members: {st:#}",
            lab.supernode_name(i)
        );
    }
    lab.wait_direct_ping(a, b, start, Duration::from_secs(15));
    lab.expect_path(b, a, "direct", Duration::from_secs(15));

    // Supernode 1 goes away under traffic.
    let (ns, ip) = (a.ns().to_string(), b.ip());
    let pinger = std::thread::spawn(move || ping_with(&ns, &ip, 50, &["-i", "0.1"]));
    std::thread::sleep(Duration::from_secs(1));
    lab.stop_daemon("supernode");
    let p = pinger.join().unwrap();
    assert_eq!(
        (p.transmitted, p.received),
        (50, 50),
        "pings lost when supernode 1 stopped: {p:?}"
    );
    println!("[{TEST}] supernode 1 stopped: 50/50 pings a->b at 10/s");

    let c_start = Instant::now();
    lab.start_edge(c);
    let reg = wait_until(Duration::from_secs(20), || {
        lab.edge_status(c)
            .is_ok_and(|st| st["supernodes"][1]["registered"] == true)
    });
    assert!(
        reg.is_some(),
        "c did not register with supernode 2: {:?}",
        lab.edge_status(c)
    );
    println!(
        "[{TEST}] c registered with supernode 2 after {:.2?}",
        c_start.elapsed()
    );
    for y in [a, b] {
        let t = lab.wait_ping(c, y, Duration::from_secs(30));
        println!(
            "[{TEST}] c -> {} ping works {:.2?} after c started ({t:.2?} of pinging), path {}",
            y.name,
            c_start.elapsed(),
            lab.path(c, y)
        );
        lab.ping_both_ways(c, y, 5);
    }
    lab.ping_both_ways(a, b, 5);
    lab.assert_running();
}
