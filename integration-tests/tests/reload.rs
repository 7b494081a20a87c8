//! Live reload (issue 6): SIGHUP makes the supernode re-read its community files and the
//! edge its supernode list and keepalive. A node added joins without restarting anything; a
//! node removed is cut off and its sessions are torn down on every edge within a stated
//! bound; the other nodes' tunnels lose no packet; a broken file changes nothing.

use metalvpc_integration_tests::{
    http_get,
    lab::{registered, supernode_toml},
    metric, ping, ping_with, wait_until, Community, Edge, Lab,
};
use std::time::{Duration, Instant};

/// The bound we promise for a removal: every edge has torn down the removed node's sessions
/// within this time of the SIGHUP (one round trip normally; a lost push is repeated at the
/// edge's next registration, every 10 s).
const REMOVAL_BOUND: Duration = Duration::from_secs(12);

/// Starts `count` pings at 50/s from `from` to `to` on a thread; returns (sent, received).
fn background_ping(from: &Edge, to: &Edge, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    let (ns, ip) = (from.ns().to_string(), to.ip());
    std::thread::spawn(move || {
        let p = ping_with(&ns, &ip, count, &["-i", "0.02"]);
        (p.transmitted, p.received)
    })
}

fn lists(lab: &Lab, e: &Edge, peer: &Edge) -> bool {
    lab.peer_entry(e, peer).is_some()
}

#[test]
fn supernode_reload_adds_and_removes_members_live() {
    const TEST: &str = "supernode_reload_adds_and_removes_members_live";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let edges = lab.add_edges("prod", "10.81.0", &["a", "b", "c", "d"]);
    let (a, b, c, d) = (&edges[0], &edges[1], &edges[2], &edges[3]);
    let community = |members: &[&Edge]| {
        Community::new(
            "prod",
            "10.81.0.0/24",
            members.iter().map(|e| e.member()).collect(),
        )
    };
    lab.start_supernode(&[community(&[a, b, c])]);
    lab.start_edges(&[a.clone(), b.clone(), c.clone()]);
    lab.start_edge(d);
    lab.wait_ping(a, b, Duration::from_secs(15));
    lab.wait_ping(a, c, Duration::from_secs(15));
    lab.wait_ping(b, c, Duration::from_secs(15));
    assert!(!lab.is_registered(d), "d is not a member yet");

    // a pings b at 50/s across the reload: not one may be lost.
    let pings = background_ping(a, b, 300);
    std::thread::sleep(Duration::from_secs(1));

    lab.write_supernode_config(&[community(&[a, b, d])]);
    let t0 = Instant::now();
    lab.signal("supernode", libc::SIGHUP);

    // Removal: a and b drop c.
    let gone = wait_until(REMOVAL_BOUND, || !lists(&lab, a, c) && !lists(&lab, b, c));
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "c still listed {REMOVAL_BOUND:?} after the reload:\na: {:?}\nb: {:?}",
            lab.edge_status(a),
            lab.edge_status(b)
        )
    });
    println!("[{TEST}] removed node's sessions torn down on every edge {gone:.2?} after SIGHUP");
    assert!(
        lab.log("a").contains("'c' was removed"),
        "a's log:\n{}",
        lab.log("a")
    );
    // Join: d registers without any restart (its retry after a refusal is 10 s).
    let joined = wait_until(Duration::from_secs(20), || lab.is_registered(d))
        .unwrap_or_else(|| panic!("d did not join: {:?}", lab.edge_status(d)));
    println!(
        "[{TEST}] added node registered {:.2?} after SIGHUP",
        t0.elapsed().min(joined + gone)
    );
    lab.wait_ping(a, d, Duration::from_secs(15));
    lab.wait_ping(d, b, Duration::from_secs(15));
    let from_c = ping(c.ns(), &a.ip(), 3);
    assert_eq!(
        from_c.received, 0,
        "the removed c still reaches a: {from_c:?}"
    );
    let log = lab.log("supernode");
    assert!(
        log.contains("removed [c (prod)]") && log.contains("added [d (prod)]"),
        "supernode log:\n{log}"
    );

    let (sent, received) = pings.join().expect("ping thread");
    println!("[{TEST}] a->b during the reload: {received}/{sent} pings answered");
    assert!(sent >= 290, "ping ran: {sent}");
    assert_eq!(
        sent, received,
        "the a-b tunnel lost packets during the reload"
    );

    // A broken file changes nothing, and status says why.
    std::fs::write(
        &lab.supernode_config,
        std::fs::read_to_string(&lab.supernode_config).unwrap() + "\nlisten_typo = 1\n",
    )
    .unwrap();
    lab.signal("supernode", libc::SIGHUP);
    let sn = wait_until(Duration::from_secs(5), || {
        lab.supernode_status()
            .is_ok_and(|s| s["reloads"]["failed"].as_u64() == Some(1))
    });
    assert!(sn.is_some(), "{:?}", lab.supernode_status());
    let st = lab.supernode_status().unwrap();
    let err = st["reloads"]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("listen_typo"), "{st:#}");
    assert_eq!(st["reloads"]["ok"], 1);
    println!("[{TEST}] broken file refused: {err}");
    assert!(ping(a.ns(), &d.ip(), 3).all_ok());
    assert!(registered(&lab.edge_status(d).unwrap()));
    let page = http_get(&lab.supernode_socket(), "/metrics").unwrap();
    assert_eq!(
        metric(&page, "metalvpc_supernode_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&page, "metalvpc_supernode_members{community=\"prod\"}"),
        Some(3.0)
    );
    lab.assert_running();
}

#[test]
fn edge_reload_changes_supernodes_and_keepalive() {
    const TEST: &str = "edge_reload_changes_supernodes_and_keepalive";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let sn2 = lab.add_supernode("198.18.0.2".parse().unwrap());
    let edges = lab.add_edges("prod", "10.82.0", &["a", "b"]);
    let (a, b) = (&edges[0], &edges[1]);
    let comm = Community::new(
        "prod",
        "10.82.0.0/24",
        edges.iter().map(Edge::member).collect(),
    );
    lab.start_supernode_at(0, std::slice::from_ref(&comm));
    lab.start_supernode_at(1, std::slice::from_ref(&comm));
    lab.start_edges(&edges);
    lab.wait_ping(a, b, Duration::from_secs(15));
    let full = std::fs::read_to_string(&a.config).unwrap();
    let count = |st: &serde_json::Value| st["supernodes"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&lab.edge_status(a).unwrap()), 2);

    // Drop the second supernode and set keepalive = 2, while a pings b.
    let pings = background_ping(a, b, 200);
    let entry = supernode_toml(&sn2.addr(), &sn2.public_key);
    assert!(full.contains(&entry), "{full}");
    let trimmed = format!("keepalive = 2\n{}", full.replace(&entry, ""));
    std::fs::write(&a.config, &trimmed).unwrap();
    lab.signal("a", libc::SIGHUP);
    let t = wait_until(Duration::from_secs(5), || {
        lab.edge_status(a)
            .is_ok_and(|s| count(&s) == 1 && s["keepalive_secs"] == 2)
    })
    .unwrap_or_else(|| panic!("{:?}", lab.edge_status(a)));
    println!("[{TEST}] supernode removed and keepalive 2 s applied {t:.2?} after SIGHUP");
    let st = lab.edge_status(a).unwrap();
    assert_eq!(st["supernodes"][0]["address"], lab.supernode_addr());
    assert!(registered(&st));

    // Put it back: a registers with it again at once.
    std::fs::write(&a.config, &full).unwrap();
    lab.signal("a", libc::SIGHUP);
    let t = wait_until(Duration::from_secs(5), || {
        lab.edge_status(a).is_ok_and(|s| {
            count(&s) == 2
                && s["supernodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|x| x["registered"] == true)
        })
    })
    .unwrap_or_else(|| panic!("{:?}", lab.edge_status(a)));
    println!("[{TEST}] supernode added back and registered {t:.2?} after SIGHUP");
    let (sent, received) = pings.join().unwrap();
    println!("[{TEST}] a->b during both reloads: {received}/{sent}");
    assert_eq!(
        sent, received,
        "the tunnel lost packets during the edge reload"
    );
    let st = lab.edge_status(a).unwrap();
    assert_eq!(st["reloads"]["ok"], 2);
    lab.assert_running();
}

#[test]
fn metrics_move_with_traffic() {
    const TEST: &str = "metrics_move_with_traffic";
    let Some((mut lab, edges)) = Lab::one_community(TEST, "10.83.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&edges[0], &edges[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    let page = http_get(&lab.edge_socket(a), "/metrics").expect("edge /metrics");
    let tx = |p: &str| metric(p, "metalvpc_edge_peer_tx_bytes_total{peer=\"b\"").unwrap_or(-1.0);
    let rx = |p: &str| metric(p, "metalvpc_edge_peer_rx_bytes_total{peer=\"b\"").unwrap_or(-1.0);
    let (tx0, rx0) = (tx(&page), rx(&page));
    assert!(tx0 >= 0.0 && rx0 >= 0.0, "no per-peer counters:\n{page}");
    assert!(page.contains("# TYPE metalvpc_edge_drops_total counter"));
    assert_eq!(
        metric(&page, "metalvpc_edge_supernode_registered{"),
        Some(1.0),
        "{page}"
    );
    // 20 pings of 1000 bytes: both counters grow by at least 20 frames of 1042 bytes.
    assert!(ping_with(a.ns(), &b.ip(), 20, &["-i", "0.05", "-s", "1000"]).all_ok());
    let page = http_get(&lab.edge_socket(a), "/metrics").unwrap();
    let (tx1, rx1) = (tx(&page), rx(&page));
    println!("[{TEST}] a->b tx bytes {tx0} -> {tx1}, rx bytes {rx0} -> {rx1}");
    assert!(tx1 - tx0 >= 20.0 * 1042.0, "tx {tx0} -> {tx1}");
    assert!(rx1 - rx0 >= 20.0 * 1042.0, "rx {rx0} -> {rx1}");
    let direct = metric(
        &page,
        "metalvpc_edge_peer_path{peer=\"b\",address=\"10.83.0.2\",path=\"direct\"}",
    );
    assert_eq!(direct, Some(1.0), "{page}");
    let hs = metric(&page, "metalvpc_edge_peer_handshake_age_seconds{peer=\"b\"").unwrap();
    assert!((0.0..120.0).contains(&hs), "handshake age {hs}");
    // RTT appears once a periodic probe came back (every keepalive, 5 s).
    let rtt = wait_until(Duration::from_secs(12), || {
        http_get(&lab.edge_socket(a), "/metrics")
            .ok()
            .and_then(|p| metric(&p, "metalvpc_edge_peer_rtt_seconds{peer=\"b\""))
            .is_some()
    });
    assert!(rtt.is_some(), "no RTT sample");
    let page = http_get(&lab.edge_socket(a), "/metrics").unwrap();
    let rtt = metric(&page, "metalvpc_edge_peer_rtt_seconds{peer=\"b\"").unwrap();
    println!("[{TEST}] RTT a->b {:.3} ms", rtt * 1e3);
    assert!(rtt > 0.0 && rtt < 0.5, "rtt {rtt}");

    // The supernode's registrations and relay counters.
    let sn = http_get(&lab.supernode_socket(), "/metrics").unwrap();
    let regs = metric(&sn, "metalvpc_supernode_registrations_total").unwrap();
    assert!(regs >= 2.0, "{sn}");
    assert_eq!(
        metric(
            &sn,
            "metalvpc_supernode_registered_members{community=\"prod\"}"
        ),
        Some(2.0)
    );
    let relayed0 = metric(&sn, "metalvpc_supernode_relay_bytes_total").unwrap();
    lab.block_udp(a, b);
    let t = lab
        .wait_path(a, b, "relay", Duration::from_secs(30))
        .expect("relayed once UDP between a and b is blocked");
    assert!(ping_with(a.ns(), &b.ip(), 10, &["-i", "0.05", "-s", "1000"]).all_ok());
    let sn = http_get(&lab.supernode_socket(), "/metrics").unwrap();
    let relayed1 = metric(&sn, "metalvpc_supernode_relay_bytes_total").unwrap();
    println!("[{TEST}] relay after {t:.2?}; supernode relay bytes {relayed0} -> {relayed1}");
    assert!(relayed1 - relayed0 >= 20.0 * 1042.0);
    lab.unblock_udp(a, b);
    lab.assert_running();
}

/// Key rotation (issue 7): b gets a new key and keeps its address; the old key is refused
/// from the reload on, and a's sessions with it are gone.
#[test]
fn key_rotation_keeps_the_address_and_retires_the_old_key() {
    const TEST: &str = "key_rotation_keeps_the_address_and_retires_the_old_key";
    let Some((mut lab, mut edges)) = Lab::one_community(TEST, "10.76.0", &["a", "b"]) else {
        return;
    };
    lab.wait_ping(&edges[0], &edges[1], Duration::from_secs(15));
    let old_key = edges[1].public_key.clone();
    let new_file = lab.dir.join("b.key.new");
    let new_key =
        metalvpc_integration_tests::lab::genkey(&metalvpc_integration_tests::edge_bin(), &new_file)
            .unwrap();
    edges[1].public_key = new_key.clone();
    lab.write_supernode_config(&[Community::new(
        "prod",
        "10.76.0.0/24",
        edges.iter().map(Edge::member).collect(),
    )]);
    lab.signal("supernode", libc::SIGHUP);
    let (a, b) = (&edges[0], &edges[1]);
    let gone = wait_until(REMOVAL_BOUND, || {
        lab.edge_status(a)
            .is_ok_and(|s| !s.to_string().contains(&old_key))
    })
    .expect("a still knows b's old key");
    println!("[{TEST}] old key dropped by a {gone:.2?} after the reload");
    // b still runs with the old key: refused now.
    let refused = wait_until(Duration::from_secs(20), || {
        lab.log("supernode")
            .lines()
            .any(|l| l.contains("refused") && l.contains(&old_key))
    });
    assert!(refused.is_some(), "{}", lab.log("supernode"));
    // Switch b to the new key and restart it: same address, reachable again.
    std::fs::rename(&new_file, &b.key_file).unwrap();
    lab.stop_daemon("b");
    let t = std::time::Instant::now();
    lab.start_edge(b);
    lab.wait_ping(a, b, Duration::from_secs(15));
    println!(
        "[{TEST}] b back with its new key at {} after {:.2?}",
        b.ip(),
        t.elapsed()
    );
    let peer = lab.peer_entry(a, b).expect("a lists b");
    assert_eq!(peer["public_key"], new_key.as_str());
    assert_eq!(peer["address"], b.ip().as_str());
    lab.assert_running();
}
