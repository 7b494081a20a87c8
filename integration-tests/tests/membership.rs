//! Required test 3: the supernode admits only its members, at their own addresses.
//! A key that is not a member is refused (the log names the key); a member claiming
//! another member's address is refused (its status says so); neither reaches members.

use metalvpc_integration_tests::{
    lab::registered, ping, wait_until, Community, Edge, EdgeOpts, Lab,
};
use std::time::Duration;

/// Asserts that `x` cannot reach any of `members` over the overlay.
fn assert_cannot_ping(x: &Edge, members: &[&Edge]) {
    for m in members {
        let p = ping(x.ns(), &m.ip(), 3);
        assert_eq!(
            p.received,
            0,
            "{} reached member {} ({}): {p:?}",
            x.name,
            m.name,
            m.ip()
        );
    }
}

/// Waits until the supernode log has a line containing both "refused" and `key`.
fn wait_refused_in_log(lab: &Lab, key: &str) -> Option<Duration> {
    wait_until(Duration::from_secs(10), || {
        lab.log("supernode")
            .lines()
            .any(|l| l.contains("refused") && l.contains(key))
    })
}

#[test]
fn non_member_key_is_refused() {
    const TEST: &str = "non_member_key_is_refused";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let members = lab.add_edges("prod", "10.95.0", &["a", "b"]);
    // Same community name and a free address of the network, but its key is not listed.
    let x = lab.add_edge(EdgeOpts::new("x", "prod", "10.95.0.3/24"));
    lab.start_supernode(&[Community::new(
        "prod",
        "10.95.0.0/24",
        members.iter().map(Edge::member).collect(),
    )]);
    lab.start_edges(&members);
    lab.start_edge(&x);

    let t = wait_refused_in_log(&lab, &x.public_key).unwrap_or_else(|| {
        panic!(
            "supernode log never refused {}:\n{}",
            x.public_key,
            lab.log("supernode")
        )
    });
    println!("[{TEST}] supernode refused the non-member after {t:.2?}");
    let st = lab.edge_status(&x).expect("status of the non-member edge");
    assert!(!registered(&st), "non-member registered: {st:#}");
    let sn = lab.supernode_status().expect("supernode status");
    assert!(
        !sn.to_string().contains(&x.public_key),
        "non-member listed by the supernode: {sn:#}"
    );
    assert!(
        sn["refused"].as_u64().unwrap_or(0) > 0,
        "supernode refused counter: {sn:#}"
    );

    assert_cannot_ping(&x, &[&members[0], &members[1]]);
    // Members are unaffected.
    lab.wait_ping(&members[0], &members[1], Duration::from_secs(15));
    lab.assert_running();
}

#[test]
fn member_claiming_anothers_address_is_refused() {
    const TEST: &str = "member_claiming_anothers_address_is_refused";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let members = lab.add_edges("prod", "10.94.0", &["a", "b"]);
    // c is a member at 10.94.0.3 but configures a's address on its TAP.
    let c = lab.add_edge(EdgeOpts::new("c", "prod", "10.94.0.1/24"));
    let mut nodes: Vec<_> = members.iter().map(Edge::member).collect();
    nodes.push(c.member().with_address("10.94.0.3"));
    lab.start_supernode(&[Community::new("prod", "10.94.0.0/24", nodes)]);
    lab.start_edges(&members);
    lab.start_edge(&c);

    let t = wait_refused_in_log(&lab, &c.public_key).unwrap_or_else(|| {
        panic!(
            "supernode log never refused {}:\n{}",
            c.public_key,
            lab.log("supernode")
        )
    });
    println!("[{TEST}] supernode refused the address thief after {t:.2?}");
    let st = lab.edge_status(&c).expect("status of c");
    assert!(
        !registered(&st),
        "c registered with a stolen address: {st:#}"
    );
    let errs: Vec<String> = st["supernodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["error"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !errs.is_empty(),
        "c's status shows no supernode error: {st:#}"
    );
    println!("[{TEST}] c's status error: {errs:?}");

    assert_cannot_ping(&c, &[&members[1]]);
    // a keeps its address: b still reaches a, and a is the one answering.
    lab.wait_ping(&members[1], &members[0], Duration::from_secs(15));
    let peer = lab.peer_entry(&members[1], &members[0]).expect("b lists a");
    assert_eq!(peer["public_key"], members[0].public_key.as_str());
    assert!(
        lab.peer_entry(&members[1], &c).is_none(),
        "b lists the refused c"
    );
    lab.assert_running();
}
