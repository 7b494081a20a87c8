//! Restarts must not leave anyone with a dead network:
//! * a supernode that stops and comes back does not cost an established direct tunnel a
//!   single packet, and every edge is registered again by itself;
//! * an edge that restarts (new process, same key) is accepted by the supernode at once (no
//!   lock-out) and its peers re-handshake by themselves.

use metalvpc_integration_tests::{ping, wait_until, Community, Edge, Lab};
use std::time::{Duration, Instant};

#[test]
fn supernode_restart_keeps_direct_tunnels() {
    const TEST: &str = "supernode_restart_keeps_direct_tunnels";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.86.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    let community = Community::new("prod", "10.86.0.0/24", e.iter().map(Edge::member).collect());
    lab.start_supernode(std::slice::from_ref(&community));
    lab.start_edges(&e);
    lab.wait_ping(a, b, Duration::from_secs(15));
    assert!(lab
        .wait_path(a, b, "direct", Duration::from_secs(15))
        .is_some());

    lab.stop_daemon("supernode");
    // 25 pings over 5 s with the supernode gone: every one must come back.
    let p = ping(a.ns(), &b.ip(), 25);
    assert_eq!(
        (p.transmitted, p.received),
        (25, 25),
        "pings lost while the supernode was down: {p:?}"
    );
    println!(
        "[{TEST}] supernode down: 25/25 pings a->b, avg {:.3} ms",
        p.avg_ms.unwrap_or(f64::NAN)
    );

    let back = Instant::now();
    lab.start_supernode(std::slice::from_ref(&community));
    let p = ping(b.ns(), &a.ip(), 25);
    assert_eq!(
        (p.transmitted, p.received),
        (25, 25),
        "pings lost across the supernode restart: {p:?}"
    );
    let all_registered = wait_until(Duration::from_secs(30), || {
        lab.supernode_status().is_ok_and(|st| {
            st["communities"][0]["members"].as_array().is_some_and(|m| {
                m.len() == 2 && m.iter().all(|x| x["registered"].as_bool() == Some(true))
            })
        })
    });
    let since_back = back.elapsed();
    assert!(
        all_registered.is_some(),
        "edges did not re-register within 30 s: {:?}",
        lab.supernode_status()
    );
    println!("[{TEST}] both edges registered again {since_back:.2?} after the supernode came back");
    for x in [a, b] {
        assert!(lab.is_registered(x), "{} shows itself unregistered", x.name);
    }
    assert_eq!(lab.peer_entry(a, b).unwrap()["path"], "direct");
}

#[test]
fn edge_restart_is_accepted_at_once() {
    const TEST: &str = "edge_restart_is_accepted_at_once";
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.85.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));

    lab.stop_daemon(&b.name);
    let restart = Instant::now();
    lab.start_edge(b);
    let reg = lab.wait_registered(b, Duration::from_secs(10));
    println!("[{TEST}] restarted edge registered {reg:.2?} after start (no lock-out)");
    let first = lab.wait_ping(a, b, Duration::from_secs(20));
    println!(
        "[{TEST}] a->b ping works again {:.2?} after the restart (first success after {first:.2?})",
        restart.elapsed()
    );
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 10);
        assert!(p.all_ok(), "{} -> {} after restart: {p:?}", x.name, y.name);
    }
    let st = lab.edge_status(a).unwrap();
    assert_eq!(
        st["peers"].as_array().unwrap().len(),
        1,
        "stale peer entries: {st:#}"
    );
}
