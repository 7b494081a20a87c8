//! NAT traversal, path failures and failover with the real binaries.
//!
//! NAT model: each NAT'd edge host gets Linux NAT in its own namespace, on its underlay
//! interface — `masquerade` (endpoint-independent mapping: the source port is kept, a "cone")
//! or `masquerade fully-random` (a new random source port per destination: "symmetric") —
//! plus the filtering every conntrack NAT does: inbound UDP to the edge's port is accepted only
//! as a reply to something the edge sent (`ct state established`). That is exactly how a
//! Linux router in front of the host would map and filter the edge's traffic.

use metalvpc_integration_tests::{ping, ping_with, sh_in, Community, Edge, Lab};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Nat {
    Cone,
    Symmetric,
}

fn nat(e: &Edge, kind: Nat, udp_timeout: Option<u32>) {
    let random = if kind == Nat::Symmetric {
        " fully-random"
    } else {
        ""
    };
    let script = format!(
        "nft -f - <<'N'\ntable ip mvnat {{\n chain post {{ type nat hook postrouting priority 100; oifname \"{iface}\" meta l4proto udp masquerade{random}; }}\n chain in {{ type filter hook input priority 0; udp dport {port} ct state established,related accept; udp dport {port} drop; }}\n}}\nN\n{timeouts}",
        iface = e.host.iface,
        port = e.listen_port,
        timeouts = udp_timeout
            .map(|t| format!("sysctl -qw net.netfilter.nf_conntrack_udp_timeout={t} net.netfilter.nf_conntrack_udp_timeout_stream={t}"))
            .unwrap_or_default(),
    );
    let out = sh_in(e.ns(), &script, Duration::from_secs(10));
    assert!(out.success(), "NAT for {}: {out:?}", e.name);
}

/// Two edges with the given NATs; returns the lab, the edges, and when they were started.
fn pair(
    test: &str,
    net24: &str,
    kinds: [Option<Nat>; 2],
    udp_timeout: Option<u32>,
) -> Option<(Lab, Vec<Edge>, Instant)> {
    let mut lab = Lab::new(test)?;
    let e = lab.add_edges("prod", net24, &["a", "b"]);
    for (x, k) in e.iter().zip(kinds) {
        if let Some(k) = k {
            nat(x, k, udp_timeout);
        }
    }
    lab.start_supernode(&[Community::new(
        "prod",
        &format!("{net24}.0/24"),
        e.iter().map(Edge::member).collect(),
    )]);
    let start = Instant::now();
    lab.start_edges(&e);
    Some((lab, e, start))
}

/// SIGKILLs the daemon process whose command line names `config` (found in /proc: a
/// `pkill -f` would match its own shell too). Returns how many were killed.
fn kill_daemon_with_config(config: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with("metalvpc-supernode"))
            && args.iter().any(|a| a == config)
        {
            // SAFETY: sending a signal to a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            n += 1;
        }
    }
    n
}

/// Waits for traffic and then for a direct path from `a` to `b`.
fn wait_direct(lab: &mut Lab, a: &Edge, b: &Edge) {
    lab.wait_ping(a, b, Duration::from_secs(15));
    let t = lab.wait_path(a, b, "direct", Duration::from_secs(15));
    assert!(
        t.is_some(),
        "{} never went direct: {:?}",
        a.name,
        lab.peer_entry(a, b)
    );
}

fn both_ways_ok(lab: &Lab, a: &Edge, b: &Edge, n: u32) {
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), n);
        assert!(
            p.all_ok(),
            "{} -> {}: {p:?}\n{:?}",
            x.name,
            y.name,
            lab.peer_entry(x, y)
        );
    }
}

#[test]
fn same_segment_goes_direct() {
    const TEST: &str = "nat_same_segment_goes_direct";
    let Some((mut lab, e, start)) = pair(TEST, "10.81.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    wait_direct(&mut lab, a, b);
    println!(
        "[{TEST}] edge start -> first direct ping: {:.2?}",
        start.elapsed()
    );
    both_ways_ok(&lab, a, b, 5);
}

#[test]
fn cone_nats_punch_through() {
    const TEST: &str = "nat_cone_nats_punch_through";
    let Some((mut lab, e, start)) = pair(TEST, "10.80.0", [Some(Nat::Cone), Some(Nat::Cone)], None)
    else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(20));
    for (x, y) in [(a, b), (b, a)] {
        let t = lab.wait_path(x, y, "direct", Duration::from_secs(30));
        assert!(
            t.is_some(),
            "{} never went direct: {:?}",
            x.name,
            lab.peer_entry(x, y)
        );
    }
    println!(
        "[{TEST}] edge start -> direct both ways through two NATs: {:.2?}",
        start.elapsed()
    );
    both_ways_ok(&lab, a, b, 5);
}

#[test]
fn symmetric_and_cone_still_connect() {
    const TEST: &str = "nat_symmetric_and_cone_still_connect";
    let Some((mut lab, e, start)) = pair(
        TEST,
        "10.79.0",
        [Some(Nat::Symmetric), Some(Nat::Cone)],
        None,
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    let t = lab.wait_ping(a, b, Duration::from_secs(20));
    println!(
        "[{TEST}] first ping {:.2?} after start ({t:.2?} of pinging)",
        start.elapsed()
    );
    // Let probing run its course, then the path must be stable and working.
    std::thread::sleep(Duration::from_secs(12));
    let path = lab.peer_entry(a, b).unwrap()["path"].clone();
    assert!(path == "relay" || path == "direct", "path {path}");
    both_ways_ok(&lab, a, b, 10);
    assert_eq!(lab.peer_entry(a, b).unwrap()["path"], path, "path flapped");
    let reason = lab.peer_entry(a, b).unwrap()["path_reason"].clone();
    println!("[{TEST}] symmetric + cone: path {path} ({reason})");
}

#[test]
fn two_symmetric_nats_use_the_relay() {
    const TEST: &str = "nat_two_symmetric_nats_use_the_relay";
    let Some((mut lab, e, _)) = pair(
        TEST,
        "10.78.0",
        [Some(Nat::Symmetric), Some(Nat::Symmetric)],
        None,
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(12));
    for (x, y) in [(a, b), (b, a)] {
        assert_eq!(lab.peer_entry(x, y).unwrap()["path"], "relay");
    }
    both_ways_ok(&lab, a, b, 10);
    let sn = lab.supernode_status().unwrap();
    println!(
        "[{TEST}] relayed: {} packets through the supernode",
        sn["relay"]["packets"]
    );
}

#[test]
fn idle_tunnel_behind_nats_with_short_udp_timeout_stays_usable() {
    const TEST: &str = "nat_idle_tunnel_stays_usable";
    let Some((mut lab, e, _)) = pair(
        TEST,
        "10.77.0",
        [Some(Nat::Cone), Some(Nat::Cone)],
        Some(10),
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(20));
    assert!(lab
        .wait_path(a, b, "direct", Duration::from_secs(30))
        .is_some());
    std::thread::sleep(Duration::from_secs(60));
    let p = ping_with(a.ns(), &b.ip(), 1, &["-W", "1"]);
    assert!(
        p.all_ok(),
        "ping after 60 s idle with a 10 s NAT timeout: {p:?}"
    );
    assert_eq!(lab.peer_entry(a, b).unwrap()["path"], "direct");
    println!("[{TEST}] after 60 s idle (conntrack UDP timeout 10 s): first ping answered in {:.3} ms, still direct", p.avg_ms.unwrap_or(f64::NAN));
}

#[test]
fn dead_direct_path_falls_back_to_relay_and_recovers() {
    const TEST: &str = "nat_dead_direct_path_falls_back";
    let Some((mut lab, e, _)) = pair(TEST, "10.76.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    wait_direct(&mut lab, a, b);
    lab.block_udp(a, b);
    let t = lab
        .wait_path(a, b, "relay", Duration::from_secs(30))
        .expect("no fallback to relay within 30 s");
    println!("[{TEST}] direct path blocked -> relay after {t:.2?}");
    both_ways_ok(&lab, a, b, 5);
    lab.unblock_udp(a, b);
    let t = lab
        .wait_path(a, b, "direct", Duration::from_secs(30))
        .expect("not direct again within 30 s");
    println!("[{TEST}] unblocked -> direct again after {t:.2?}");
    both_ways_ok(&lab, a, b, 5);
}

#[test]
fn roaming_edge_recovers_without_restart() {
    const TEST: &str = "nat_roaming_edge_recovers";
    let Some((mut lab, e, _)) = pair(TEST, "10.75.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    wait_direct(&mut lab, a, b);
    // b's underlay address changes under the running daemon (a new lease, a new uplink).
    let new_ip = format!("198.18.0.{}", 200 + (b.host.ip.octets()[3] % 50));
    let out = sh_in(
        b.ns(),
        &format!(
            "sysctl -qw net.ipv4.conf.{i}.promote_secondaries=1 && ip addr add {new_ip}/24 dev {i} && ip addr del {old}/24 dev {i}",
            i = b.host.iface,
            old = b.host.ip
        ),
        Duration::from_secs(10),
    );
    assert!(out.success(), "{out:?}");
    let moved = Instant::now();
    let t = lab.wait_ping(a, b, Duration::from_secs(30));
    println!(
        "[{TEST}] b moved to {new_ip}: ping a->b works again after {:.2?} ({t:.2?} of pinging)",
        moved.elapsed()
    );
    let ok = lab
        .wait_path(a, b, "direct", Duration::from_secs(20))
        .is_some()
        && lab.peer_entry(a, b).unwrap()["endpoint"]
            .as_str()
            .is_some_and(|ep| ep.starts_with(&format!("{new_ip}:")));
    assert!(
        ok,
        "a does not use b's new endpoint: {:?}",
        lab.peer_entry(a, b)
    );
    println!(
        "[{TEST}] a uses b's new endpoint directly {:.2?} after the move",
        moved.elapsed()
    );
    both_ways_ok(&lab, a, b, 5);
}

#[test]
fn supernode_kill_loses_no_ping_on_direct_tunnels() {
    const TEST: &str = "nat_supernode_kill_loses_no_ping";
    let Some((mut lab, e, _)) = pair(TEST, "10.74.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    wait_direct(&mut lab, a, b);
    let (ns, ip) = (a.ns().to_string(), b.ip());
    let pinger = std::thread::spawn(move || ping_with(&ns, &ip, 150, &["-i", "0.1"]));
    std::thread::sleep(Duration::from_secs(3));
    let killed = kill_daemon_with_config(&lab.supernode_config.to_string_lossy());
    assert_eq!(killed, 1, "expected to SIGKILL exactly one supernode");
    lab.stop_daemon("supernode"); // reap it
    std::thread::sleep(Duration::from_secs(2));
    let community = Community::new("prod", "10.74.0.0/24", e.iter().map(Edge::member).collect());
    let back = Instant::now();
    lab.start_supernode(&[community]);
    let p = pinger.join().unwrap();
    assert_eq!(
        (p.transmitted, p.received),
        (150, 150),
        "pings lost across a supernode kill: {p:?}"
    );
    println!(
        "[{TEST}] 150 pings at 10/s across SIGKILL + restart of the supernode: {}/{} answered",
        p.received, p.transmitted
    );
    for x in [a, b] {
        lab.wait_registered(x, Duration::from_secs(30));
    }
    println!(
        "[{TEST}] both edges registered again {:.2?} after the supernode restarted",
        back.elapsed()
    );
}

#[test]
fn several_supernodes() {
    const TEST: &str = "nat_several_supernodes";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.73.0", &["a", "b", "c"]);
    let (a, b, c) = (&e[0], &e[1], &e[2]);
    let community = Community::new("prod", "10.73.0.0/24", e.iter().map(Edge::member).collect());
    lab.start_supernode(std::slice::from_ref(&community));
    // A second supernode, its own key and port, same community file content.
    let dir = lab.dir.join("sn2");
    std::fs::create_dir_all(&dir).unwrap();
    let key2 = dir.join("sn2.key");
    let pub2 = metalvpc_integration_tests::lab::genkey(
        &metalvpc_integration_tests::supernode_bin(),
        &key2,
    )
    .unwrap();
    let listen2 = format!("{}:7664", lab.supernode_host.ip);
    let cfg2 = dir.join("sn2.toml");
    std::fs::write(
        &cfg2,
        metalvpc_integration_tests::lab::supernode_config_toml(
            &listen2,
            &key2,
            &dir.join("sn2.sock"),
            &[community],
        ),
    )
    .unwrap();
    let bin = metalvpc_integration_tests::supernode_bin();
    let mut sn2 = metalvpc_integration_tests::lab::Daemon::spawn(
        "supernode2",
        lab.sn_ns(),
        &[
            bin.as_os_str(),
            "run".as_ref(),
            "--config".as_ref(),
            cfg2.as_os_str(),
        ],
        &dir.join("sn2.log"),
    )
    .unwrap();
    for x in &e {
        let mut text = std::fs::read_to_string(&x.config).unwrap();
        text += &format!("\n[[supernode]]\naddress = \"{listen2}\"\npublic_key = \"{pub2}\"\n");
        std::fs::write(&x.config, text).unwrap();
    }
    lab.start_edges(&[a.clone(), b.clone()]);
    let both = metalvpc_integration_tests::wait_until(Duration::from_secs(20), || {
        [a, b].iter().all(|x| {
            lab.edge_status(x).is_ok_and(|st| {
                st["supernodes"]
                    .as_array()
                    .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["registered"] == true))
            })
        })
    });
    assert!(
        both.is_some(),
        "not registered with both supernodes: {:?}",
        lab.edge_status(a)
    );
    lab.wait_ping(a, b, Duration::from_secs(15));
    assert!(lab
        .wait_path(a, b, "direct", Duration::from_secs(15))
        .is_some());

    // Supernode 1 goes away: the tunnel carries every ping, and a new edge finds the others
    // through supernode 2.
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
    let start = Instant::now();
    lab.start_edge(c);
    let t = lab.wait_ping(c, a, Duration::from_secs(30));
    println!("[{TEST}] supernode 1 down: 50/50 pings a->b; new edge c reached a through supernode 2 {:.2?} after start ({t:.2?} of pinging)", start.elapsed());
    both_ways_ok(&lab, c, b, 5);
    assert!(sn2.exited().is_none(), "supernode 2 died");
}

#[test]
fn two_edges_behind_one_nat_router_talk_over_their_lan() {
    const TEST: &str = "nat_same_router_uses_the_lan";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.72.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    // A router: WAN on the public segment, a LAN bridge behind it, both edges moved onto the
    // LAN (198.19.1.0/24) with the router as their gateway, masquerade on the WAN.
    let router = lab.add_host("rt", "198.18.0.60".parse().unwrap()).unwrap();
    let (sw, p) = (format!("{}-sw", lab.prefix), lab.prefix.clone());
    let mut script = format!(
        "set -e\nip -n {sw} link add {p}lan type bridge\nip -n {sw} link set {p}lan up\n\
         ip -n {sw} link add {p}rl type veth peer name {p}rlan netns {rns}\n\
         ip -n {sw} link set {p}rl master {p}lan up\n\
         ip -n {rns} addr add 198.19.1.1/24 dev {p}rlan\nip -n {rns} link set {p}rlan up\n\
         ip netns exec {rns} sysctl -qw net.ipv4.ip_forward=1\n\
         ip netns exec {rns} nft -f - <<'N'\ntable ip mvnat {{\n chain post {{ type nat hook postrouting priority 100; oifname \"{wan}\" masquerade; }}\n}}\nN\n",
        rns = router.ns,
        wan = router.iface
    );
    for (i, x) in [a, b].iter().enumerate() {
        // Move the edge's cable from the public bridge to the LAN bridge.
        script += &format!(
            "idx=$(ip netns exec {ns} cat /sys/class/net/{ifc}/iflink)\n\
             end=$(ip -n {sw} -o link | awk -F': ' -v i=$idx '$1==i {{print $2}}' | cut -d@ -f1)\n\
             ip -n {sw} link set $end nomaster\nip -n {sw} link set $end master {p}lan\n\
             ip -n {ns} addr flush dev {ifc}\nip -n {ns} addr add 198.19.1.{n}/24 dev {ifc}\n\
             ip -n {ns} route add default via 198.19.1.1\n",
            ns = x.ns(),
            ifc = x.host.iface,
            n = 10 + i
        );
    }
    let out = sh_in(&router.ns, &script, Duration::from_secs(20));
    assert!(out.success(), "building the NAT router: {out:?}");
    lab.start_supernode(&[Community::new(
        "prod",
        "10.72.0.0/24",
        e.iter().map(Edge::member).collect(),
    )]);
    let start = Instant::now();
    lab.start_edges(&e);
    let st = lab.edge_status(a).unwrap();
    assert!(
        st["supernodes"][0]["observed_endpoint"]
            .as_str()
            .unwrap_or("")
            .starts_with("198.18.0.60:"),
        "the supernode should see a behind the router: {st:#}"
    );
    lab.wait_ping(a, b, Duration::from_secs(20));
    for (x, y) in [(a, b), (b, a)] {
        let t = lab.wait_path(x, y, "direct", Duration::from_secs(20));
        assert!(
            t.is_some(),
            "{} not direct: {:?}",
            x.name,
            lab.peer_entry(x, y)
        );
        let ep = lab.peer_entry(x, y).unwrap()["endpoint"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            ep.starts_with("198.19.1."),
            "{} reaches {} via {ep}, not its LAN address",
            x.name,
            y.name
        );
        println!(
            "[{TEST}] {} -> {} direct over the LAN via {ep}",
            x.name, y.name
        );
    }
    println!(
        "[{TEST}] edge start -> direct over the LAN: {:.2?}",
        start.elapsed()
    );
    both_ways_ok(&lab, a, b, 5);
}
