//! Neighbour suppression and IPv6 on the overlay (issue 4): ARP requests and IPv6 neighbour
//! solicitations for members' addresses are answered by the local edge instead of being
//! flooded to every member (measured: frames flooded per ARP with and without); each node has
//! a link-local and a configured ULA address, and ping6 works over both.

use metalvpc_integration_tests::{exec_in, ping, Community, Edge, EdgeOpts, Lab};
use std::time::Duration;

fn counters(lab: &Lab, e: &Edge) -> (u64, u64) {
    let st = lab.edge_status(e).unwrap();
    let n = &st["neighbor_suppression"];
    (
        n["answered"].as_u64().unwrap_or(0),
        n["flooded_frames"].as_u64().unwrap_or(0),
    )
}

fn sh(ns: &str, cmd: &str) -> String {
    let out = exec_in(ns, &["sh", "-c", cmd], Duration::from_secs(10));
    assert!(out.success(), "{cmd}: {out:?}");
    out.stdout
}

#[test]
fn arp_for_members_is_answered_locally() {
    const TEST: &str = "arp_for_members_is_answered_locally";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let mut edges = Vec::new();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        let mut o = EdgeOpts::new(n, "prod", &format!("10.75.0.{}/24", i + 1));
        if *n == "d" {
            o.extra_toml = "neighbor_suppression = false\n".into();
        }
        edges.push(lab.add_edge(o));
    }
    lab.start_supernode(&[Community::new(
        "prod",
        "10.75.0.0/24",
        edges.iter().map(Edge::member).collect(),
    )]);
    // The lab's namespaces run IPv4 only, so the only broadcasts are the ARP requests counted.
    lab.start_edges(&edges);
    let (a, b, d) = (&edges[0], &edges[1], &edges[3]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    lab.wait_ping(d, b, Duration::from_secs(15));
    let mut per_arp = Vec::new();
    for (e, label) in [(a, "with suppression"), (d, "without suppression")] {
        let mut flooded = 0;
        let mut answered = 0;
        for target in ["10.75.0.2", "10.75.0.3"] {
            sh(e.ns(), &format!("ip neigh flush dev {}", e.tap));
            let (a0, f0) = counters(&lab, e);
            assert!(ping(e.ns(), target, 1).all_ok());
            let (a1, f1) = counters(&lab, e);
            flooded += f1 - f0;
            answered += a1 - a0;
        }
        println!("[{TEST}] {label}: 2 ARP lookups flooded {flooded} frames to peers, {answered} answered locally");
        per_arp.push((flooded, answered));
    }
    assert_eq!(
        per_arp[0],
        (0, 2),
        "with suppression: nothing flooded, both answered"
    );
    assert_eq!(per_arp[1], (6, 0), "without: one copy per peer (3) per ARP");
    // The neighbour entry the local answer created is the member's real MAC.
    let c_mac = lab.edge_status(&edges[2]).unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let neigh = sh(a.ns(), "ip neigh show 10.75.0.3");
    assert!(neigh.contains(&c_mac), "{neigh} vs {c_mac}");
    let _ = b;
    lab.assert_running();
}

#[test]
fn ipv6_link_local_and_ula_work() {
    const TEST: &str = "ipv6_link_local_and_ula_work";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let mut edges = Vec::new();
    for (i, n) in ["a", "b"].iter().enumerate() {
        let mut o = EdgeOpts::new(n, "prod", &format!("10.74.0.{}/24", i + 1));
        o.extra_toml = String::new();
        edges.push(lab.add_edge(o));
    }
    // [interface] address6, and the ULA in the member's allowed_cidrs (the anti-spoofing).
    for (i, e) in edges.iter().enumerate() {
        let text = std::fs::read_to_string(&e.config).unwrap();
        let text = text.replace(
            "[interface]\n",
            &format!("[interface]\naddress6 = \"fd10:74::{}/64\"\n", i + 1),
        );
        std::fs::write(&e.config, text).unwrap();
    }
    let members = edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut m = e.member();
            m.allowed_cidrs = vec![format!("fd10:74::{}/128", i + 1)];
            m
        })
        .collect();
    lab.start_supernode(&[Community::new("prod", "10.74.0.0/24", members)]);
    for e in &edges {
        // The lab turns IPv6 off in its namespaces; these two use it.
        sh(
            e.ns(),
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0",
        );
    }
    lab.start_edges(&edges);
    let (a, b) = (&edges[0], &edges[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    // Wait for duplicate address detection to finish on both sides.
    std::thread::sleep(Duration::from_secs(3));
    let addrs = sh(a.ns(), &format!("ip -6 addr show dev {}", a.tap));
    println!("[{TEST}] a's TAP:\n{addrs}");
    assert!(addrs.contains("fd10:74::1/64"), "{addrs}");
    let (ans0, _) = counters(&lab, a);
    let ula = exec_in(
        a.ns(),
        &["ping", "-6", "-c", "3", "-W", "2", "fd10:74::2"],
        Duration::from_secs(15),
    );
    println!(
        "[{TEST}] ping6 ULA: {}",
        ula.stdout.lines().last().unwrap_or("")
    );
    assert!(ula.success(), "{ula:?}");
    let b_ll = sh(b.ns(), &format!("ip -6 addr show dev {} scope link", b.tap));
    let ll = b_ll
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("b has a link-local address")
        .to_string();
    let llp = exec_in(
        a.ns(),
        &[
            "ping",
            "-6",
            "-c",
            "3",
            "-W",
            "2",
            &format!("{ll}%{}", a.tap),
        ],
        Duration::from_secs(15),
    );
    println!(
        "[{TEST}] ping6 link-local {ll}: {}",
        llp.stdout.lines().last().unwrap_or("")
    );
    assert!(llp.success(), "{llp:?}");
    let (ans1, _) = counters(&lab, a);
    println!(
        "[{TEST}] neighbour solicitations answered locally by a: {}",
        ans1 - ans0
    );
    assert!(ans1 > ans0, "a never answered an NS itself");
    // A ULA the community does not grant b is dropped at a.
    sh(
        b.ns(),
        &format!("ip -6 addr add fd10:74::99/64 dev {} nodad", b.tap),
    );
    let spoof = exec_in(
        b.ns(),
        &[
            "ping",
            "-6",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "fd10:74::99",
            "fd10:74::1",
        ],
        Duration::from_secs(10),
    );
    assert!(!spoof.success(), "an ungranted ULA got through: {spoof:?}");
    lab.assert_running();
}
