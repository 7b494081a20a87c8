//! Logs (issue 6): one line per meaningful event (session up, path change, peer down, refused
//! key with the reason), nothing per packet at the default level, the level set by the
//! config's `log_level`, and plain text (no colour codes) when not on a terminal.

use metalvpc_integration_tests::{ping_with, wait_until, Community, Edge, EdgeOpts, Lab};
use std::time::Duration;

#[test]
fn one_line_per_event_and_none_per_packet() {
    const TEST: &str = "one_line_per_event_and_none_per_packet";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let a = lab.add_edge(EdgeOpts::new("a", "prod", "10.84.0.1/24"));
    let mut quiet = EdgeOpts::new("b", "prod", "10.84.0.2/24");
    quiet.extra_toml = "log_level = \"warn\"\n".into();
    let b = lab.add_edge(quiet);
    let stranger = lab.add_edge(EdgeOpts::new("x", "prod", "10.84.0.9/24"));
    lab.start_supernode(&[Community::new(
        "prod",
        "10.84.0.0/24",
        [&a, &b].iter().map(|e| Edge::member(e)).collect(),
    )]);
    lab.start_edges(&[a.clone(), b.clone()]);
    lab.wait_ping(&a, &b, Duration::from_secs(15));
    let settled = wait_until(Duration::from_secs(10), || {
        lab.log("a").contains("path is now direct")
    });
    assert!(settled.is_some(), "a's log:\n{}", lab.log("a"));
    let log = lab.log("a");
    assert!(log.contains("session with peer 'b' established"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );

    // 2000 packets move; the log does not.
    let before = lab.log("a").lines().count();
    let p = ping_with(a.ns(), &b.ip(), 2000, &["-i", "0.002", "-q"]);
    assert!(p.received >= 1990, "{p:?}");
    let after = lab.log("a").lines().count();
    println!("[{TEST}] a's log: {before} lines before 2000 pings, {after} after");
    assert!(after - before <= 1, "per-packet logging:\n{}", lab.log("a"));

    // b runs with log_level = "warn": no INFO line at all.
    let blog = lab.log("b");
    assert!(
        !blog.contains("INFO"),
        "b logged at info despite log_level = warn:\n{blog}"
    );

    // A refused key: one line on the supernode with the key and the reason.
    lab.start_edge(&stranger);
    let refused = wait_until(Duration::from_secs(10), || {
        lab.log("supernode").lines().any(|l| {
            l.contains("refused") && l.contains(&stranger.public_key) && l.contains("not a member")
        })
    });
    assert!(refused.is_some(), "{}", lab.log("supernode"));

    // b goes away: a says so once, within DEAD_AFTER (20 s) plus a tick.
    lab.stop_daemon("b");
    let down = wait_until(Duration::from_secs(30), || {
        lab.log("a").contains("peer 'b' is down")
    });
    let down = down.unwrap_or_else(|| panic!("no peer-down line:\n{}", lab.log("a")));
    println!("[{TEST}] 'peer b is down' logged {down:.2?} after b stopped");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.log("a").matches("peer 'b' is down").count(), 1);
    println!("[{TEST}] a's log:\n{}", lab.log("a"));
}
