//! An IPv6-only underlay: the supernode and the edges have no IPv4 address on their
//! underlay interfaces (2001:db8::/64 inside the test's own namespaces); the overlay is
//! unchanged. The edges register, go direct, carry traffic, and pick the IPv6 default MTU.

use metalvpc_integration_tests::lab::{supernode_config_toml, Daemon};
use metalvpc_integration_tests::{ping, sh_in, Community, Edge, Lab};
use std::time::Duration;

const TEST: &str = "ipv6_only_underlay";

fn v6_only(ns: &str, iface: &str, addr: &str) {
    let out = sh_in(
        ns,
        &format!(
            "sysctl -qw net.ipv6.conf.{iface}.disable_ipv6=0 && ip -4 addr flush dev {iface} && ip -6 addr add {addr}/64 dev {iface} nodad"
        ),
        Duration::from_secs(10),
    );
    assert!(out.success(), "addressing {ns}: {out:?}");
}

#[test]
fn ipv6_only_underlay() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.82.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    let sn = lab.supernode_host.clone();
    v6_only(&sn.ns, &sn.iface, "2001:db8::1");
    v6_only(a.ns(), &a.host.iface, "2001:db8::11");
    v6_only(b.ns(), &b.host.iface, "2001:db8::12");

    let community = Community::new("prod", "10.82.0.0/24", e.iter().map(Edge::member).collect());
    let cfg = supernode_config_toml(
        "[::]:7654",
        &lab.supernode_key_file,
        &lab.dir.join("sn.sock"),
        &[community],
    );
    std::fs::write(&lab.supernode_config, cfg).unwrap();
    let bin = metalvpc_integration_tests::supernode_bin();
    let _supernode = Daemon::spawn(
        "supernode",
        &sn.ns,
        &[
            bin.as_os_str(),
            "run".as_ref(),
            "--config".as_ref(),
            lab.supernode_config.as_os_str(),
        ],
        &lab.dir.join("supernode.log"),
    )
    .unwrap();
    for x in [a, b] {
        let text = std::fs::read_to_string(&x.config).unwrap();
        assert!(text.contains(&lab.supernode_addr()));
        std::fs::write(
            &x.config,
            text.replace(&lab.supernode_addr(), "[2001:db8::1]:7654"),
        )
        .unwrap();
    }
    lab.start_edges(&e);
    let t = lab.wait_ping(a, b, Duration::from_secs(20));
    println!("[{TEST}] first ping over the IPv6 underlay after {t:.2?}");
    assert!(lab
        .wait_path(a, b, "direct", Duration::from_secs(15))
        .is_some());
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 10);
        assert!(p.all_ok(), "{} -> {}: {p:?}", x.name, y.name);
        let peer = lab.peer_entry(x, y).unwrap();
        let ep = peer["endpoint"].as_str().unwrap_or("");
        assert!(ep.starts_with("[2001:db8::"), "endpoint {ep} is not IPv6");
        println!(
            "[{TEST}] {} -> {} direct via {ep}, avg {:.3} ms",
            x.name,
            y.name,
            p.avg_ms.unwrap_or(f64::NAN)
        );
    }
    let st = lab.edge_status(a).unwrap();
    assert_eq!(st["mtu"], 1370, "IPv6 default MTU: {st:#}");
    assert_eq!(
        st["supernodes"][0]["observed_endpoint"],
        "[2001:db8::11]:7655"
    );
}
