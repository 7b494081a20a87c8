//! Denial of service (issue 7), with real daemons and a flood generator in a namespace:
//! floods of junk handshake initiations, of registrations from unknown keys and of random
//! datagrams at the supernode, and of initiations at an edge. Members keep registering and
//! talking; no reply is larger than the packet that caused it; memory stays bounded.

use metalvpc_integration_tests::{ping_with, wait_until, Community, Edge, EdgeOpts, Lab};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Runs `mvflood` in namespace `ns` from `sources` at `target` for `secs`; returns its JSON.
fn flood(
    ns: &str,
    target: &str,
    mode: &str,
    secs: u64,
    sources: &[String],
    responder: &str,
) -> serde_json::Value {
    let mut args = vec![
        env!("CARGO_BIN_EXE_mvflood").to_string(),
        target.to_string(),
        mode.to_string(),
        secs.to_string(),
    ];
    args.extend(sources.iter().cloned());
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(&args)
        .env("MVFLOOD_RESPONDER", responder)
        .output()
        .expect("mvflood");
    assert!(
        out.status.success(),
        "mvflood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("mvflood JSON")
}

#[test]
fn floods_do_not_stop_members() {
    const TEST: &str = "floods_do_not_stop_members";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let edges = lab.add_edges("prod", "10.80.0", &["a", "b", "c"]);
    let (a, b, c) = (edges[0].clone(), edges[1].clone(), edges[2].clone());
    lab.start_supernode(&[Community::new(
        "prod",
        "10.80.0.0/24",
        edges.iter().map(Edge::member).collect(),
    )]);
    lab.start_edges(&[a.clone(), b.clone()]);
    lab.wait_ping(&a, &b, Duration::from_secs(15));
    // The attacker: one host with 32 addresses (spoofed sources, as far as the daemons know).
    let f = lab
        .add_host("flood", Ipv4Addr::new(198, 18, 0, 50))
        .unwrap();
    let mut sources = vec![f.ip.to_string()];
    for i in 0..31 {
        let ip = format!("198.18.0.{}", 100 + i);
        metalvpc_integration_tests::exec_in(
            &f.ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", &f.iface],
            Duration::from_secs(5),
        );
        sources.push(ip);
    }
    let sn = lab.supernode_addr();
    let sn_key = lab.supernode_public_key.clone();
    let rss0 = lab.rss_kib("supernode");

    for mode in ["junk-init", "unknown-key", "random"] {
        let (ns, target, srcs, key) = (f.ns.clone(), sn.clone(), sources.clone(), sn_key.clone());
        let handle = std::thread::spawn(move || flood(&ns, &target, mode, 8, &srcs, &key));
        std::thread::sleep(Duration::from_millis(500));
        // During the flood: b restarts and must register again; a pings b throughout.
        lab.stop_daemon("b");
        let t = Instant::now();
        lab.start_edge(&b);
        let reg = wait_until(Duration::from_secs(7), || lab.is_registered(&b));
        let reach = wait_until(Duration::from_secs(5), || {
            metalvpc_integration_tests::ping(a.ns(), &b.ip(), 1).all_ok()
        });
        let p = ping_with(a.ns(), &b.ip(), 20, &["-i", "0.1"]);
        let r = handle.join().expect("flood thread");
        let secs = r["seconds"].as_f64().unwrap_or(1.0);
        println!(
            "[{TEST}] {mode}: {:.0} packets/s ({:.1} Mbit/s) at the supernode; restarted member registered in {}, reached by a {} later; a->b {}/{} pings; {} replies to the flood, largest {} bytes for requests of at least {} bytes",
            r["sent"].as_f64().unwrap_or(0.0) / secs,
            r["sent_bytes"].as_f64().unwrap_or(0.0) * 8.0 / secs / 1e6,
            reg.map_or("NEVER".to_string(), |d| format!("{d:.2?}")),
            reach.map_or("NEVER".to_string(), |d| format!("{d:.2?}")),
            p.received,
            p.transmitted,
            r["replies"],
            r["largest_reply"],
            r["smallest_request"],
        );
        assert!(reg.is_some(), "{mode}: b did not register within 7 s of its restart under the flood (started {:?} ago)", t.elapsed());
        assert!(reach.is_some(), "{mode}: a never reached the restarted b");
        assert!(p.received >= 15, "{mode}: members lost traffic: {p:?}");
        assert!(
            r["largest_reply"].as_u64() <= r["smallest_request"].as_u64(),
            "{mode}: a reply larger than the request: {r}"
        );
        // A member that never ran before joins during a flood too.
        if mode == "junk-init" {
            lab.start_edge(&c);
            lab.wait_registered(&c, Duration::from_secs(10));
        }
    }
    let st = lab.supernode_status().unwrap();
    let rss1 = lab.rss_kib("supernode");
    println!(
        "[{TEST}] supernode: {} cookie replies, RSS {rss0} KiB before the floods, {rss1} KiB after; drops {}",
        st["cookie_replies"], st["drops"]
    );
    assert!(
        st["cookie_replies"].as_u64().unwrap_or(0) > 0,
        "the guard never asked for cookies"
    );
    assert!(
        rss1 < rss0 + 16 * 1024,
        "supernode memory grew from {rss0} to {rss1} KiB"
    );

    // An edge faces the Internet too: flood a with initiations while a and c talk.
    let a_target = format!("{}:{}", a.host.ip, a.listen_port);
    let a_key = a.public_key.clone();
    let (ns, srcs) = (f.ns.clone(), sources.clone());
    let handle = std::thread::spawn(move || flood(&ns, &a_target, "junk-init", 6, &srcs, &a_key));
    std::thread::sleep(Duration::from_millis(500));
    lab.stop_daemon("c");
    lab.start_edge(&c);
    lab.wait_registered(&c, Duration::from_secs(10));
    let t = lab.wait_ping(&c, &a, Duration::from_secs(10));
    let r = handle.join().unwrap();
    let st = lab.edge_status(&a).unwrap();
    println!(
        "[{TEST}] edge a under {:.0} initiations/s: c (restarted) reached it in {t:.2?}; a sent {} cookie replies",
        r["sent"].as_f64().unwrap_or(0.0) / 6.0,
        st["cookie_replies"]
    );
    assert!(
        r["largest_reply"].as_u64() <= r["smallest_request"].as_u64(),
        "{r}"
    );
    lab.assert_running();
}

/// The edge's TAP-facing side is not a way in either: a member that floods broadcasts does
/// not stop the others.
#[test]
fn a_member_flooding_broadcasts_does_not_stop_the_others() {
    const TEST: &str = "a_member_flooding_broadcasts_does_not_stop_the_others";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let mut opts = vec![];
    for (n, ip) in [
        ("a", "10.79.0.1/24"),
        ("b", "10.79.0.2/24"),
        ("m", "10.79.0.3/24"),
    ] {
        opts.push(lab.add_edge(EdgeOpts::new(n, "prod", ip)));
    }
    lab.start_supernode(&[Community::new(
        "prod",
        "10.79.0.0/24",
        opts.iter().map(Edge::member).collect(),
    )]);
    lab.start_edges(&opts);
    let (a, b, m) = (&opts[0], &opts[1], &opts[2]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    lab.wait_ping(m, a, Duration::from_secs(15));
    // m floods broadcast pings (each goes to every member) for 5 s.
    let ns = m.ns().to_string();
    let flood = std::thread::spawn(move || {
        metalvpc_integration_tests::exec_in(
            &ns,
            &["timeout", "5", "ping", "-b", "-f", "-q", "10.79.0.255"],
            Duration::from_secs(10),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let p = ping_with(a.ns(), &b.ip(), 20, &["-i", "0.1"]);
    let out = flood.join().unwrap();
    println!(
        "[{TEST}] during m's broadcast flood, a->b {}/{}; flood: {}",
        p.received,
        p.transmitted,
        out.stdout.trim()
    );
    assert!(p.received >= 18, "{p:?}");
    lab.assert_running();
}
