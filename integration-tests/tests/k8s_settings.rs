//! `metalvpc-edge kubernetes` (issue 4) against real edges: the printed values match the
//! node's config and the route to the supernode; the printed nftables table, applied on the
//! public interface, closes a Kubernetes port there while the overlay keeps working; and a
//! Linux VXLAN device between overlay addresses (as Calico and Flannel build) carries a
//! don't-fragment ping of exactly the VXLAN MTU the command prints, and not one byte more.

mod k8s;

use metalvpc_integration_tests::{edge_bin, exec_in, ping, ping_with, sh_in, Lab};
use std::time::Duration;

#[test]
fn kubernetes_command_prints_this_nodes_settings() {
    const TEST: &str = "kubernetes_command_prints_this_nodes_settings";
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.121.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));

    let v = k8s::k8s_json(
        a,
        &[
            "--control-plane-endpoint",
            "10.121.0.100:6443",
            "--pod-cidr",
            "10.244.1.0/24",
        ],
    );
    println!("[{TEST}] kubernetes --json: {v:#}");
    let ip = a.ip();
    assert_eq!(v["node_ip"], ip);
    assert_eq!(v["overlay_cidr"], "10.121.0.0/24");
    assert_eq!(v["interface"], a.tap.as_str());
    assert_eq!(v["tap_mtu"], 1390);
    assert_eq!(v["kubelet"]["flag"], format!("--node-ip={ip}"));
    assert_eq!(v["kubeadm"]["advertise_address"], ip);
    assert_eq!(
        v["kubeadm"]["cert_sans"],
        serde_json::json!([ip, "10.121.0.100"])
    );
    assert_eq!(v["kubeadm"]["control_plane_endpoint"], "10.121.0.100:6443");
    let init = v["kubeadm"]["init_configuration"].as_str().unwrap();
    assert!(
        init.contains(&format!("advertiseAddress: {ip}\n")),
        "{init}"
    );
    assert!(init.contains(&format!("node-ip: {ip}\n")), "{init}");
    let join = v["kubeadm"]["join_configuration"].as_str().unwrap();
    assert!(join.contains(&format!("node-ip: {ip}\n")), "{join}");
    assert_eq!(
        v["kube_proxy"]["node_port_addresses"],
        serde_json::json!(["10.121.0.0/24"])
    );
    // The MTU arithmetic against the route to the supernode (a 1500-byte veth in the lab).
    assert_eq!(
        v["mtu_arithmetic"]["underlay_interface"],
        a.host.iface.as_str()
    );
    assert_eq!(v["mtu_arithmetic"]["underlay_mtu"], 1500);
    assert_eq!(v["mtu_arithmetic"]["largest_tap_mtu"], 1390);
    let m = &v["calico"]["mtu"];
    assert_eq!(
        (&m["none"], &m["ipip"], &m["vxlan"], &m["wireguard"]),
        (
            &serde_json::json!(1390),
            &serde_json::json!(1370),
            &serde_json::json!(1340),
            &serde_json::json!(1330)
        )
    );
    assert_eq!(v["calico"]["ip_autodetection_method"], "cidr=10.121.0.0/24");
    assert_eq!(
        v["calico"]["ip_autodetection_method_interface"],
        format!("interface={}", a.tap)
    );
    assert_eq!(v["calico"]["bgp_bind_mode"], "NodeIP");
    assert_eq!(v["calico"]["node_pod_cidr"], "10.244.1.0/24");
    assert_eq!(v["flannel"]["iface"], a.tap.as_str());
    assert_eq!(v["flannel"]["backend"], "host-gw");
    assert_eq!(v["cilium"]["devices"], serde_json::json!([a.tap]));
    assert_eq!(v["cilium"]["mtu"], 1390);
    assert_eq!(v["public_interface"]["name"], a.host.iface.as_str());
    assert_eq!(
        v["public_interface"]["open"],
        serde_json::json!(["udp/7655"])
    );
    // The running daemon was asked for the other nodes.
    let peers = v["peers"].as_array().expect("peers from the running edge");
    assert!(
        peers.iter().any(|p| p["address"] == b.ip()),
        "b missing from {peers:?}"
    );

    // The text form (and the `k8s` alias) shows the same figures with the arithmetic.
    let bin = edge_bin();
    let cfg = a.config.to_string_lossy().to_string();
    let out = exec_in(
        a.ns(),
        &[
            bin.to_str().unwrap(),
            "k8s",
            "--config",
            &cfg,
            "--pod-cidr",
            "10.244.1.0/24",
        ],
        Duration::from_secs(20),
    );
    assert!(out.success(), "{out:#?}");
    let text = out.stdout;
    println!("[{TEST}] kubernetes (text):\n{text}");
    for needle in [
        format!("--node-ip={ip}"),
        format!(
            "underlay {} MTU 1500 - 20 outer IP header - 8 UDP - 32 data header and tag - 36 relay envelope and tag - 14 inner Ethernet header = 1390 largest TAP MTU; configured 1390",
            a.host.iface
        ),
        "IP-in-IP        1390 - 20 (outer IPv4) = 1370".to_string(),
        "VXLAN           1390 - 50 (IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14) = 1340".into(),
        "WireGuard       1390 - 60 (IPv4 20 + UDP 8 + WireGuard 32) = 1330".into(),
        "IP_AUTODETECTION_METHOD=cidr=10.121.0.0/24".into(),
        "spec.bindMode: NodeIP".into(),
        format!("--iface={}", a.tap),
        format!("devices: [\"{}\"]", a.tap),
        "nodePortAddresses: [\"10.121.0.0/24\"]".into(),
        "Flannel can use host-gw".into(),
        "allowed_cidrs = [\"10.244.1.0/24\"]".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }

    // A pod network overlapping the overlay is refused, naming the flag.
    let out = exec_in(
        a.ns(),
        &[
            bin.to_str().unwrap(),
            "kubernetes",
            "--config",
            &cfg,
            "--pod-network",
            "10.0.0.0/8",
        ],
        Duration::from_secs(20),
    );
    assert!(!out.success(), "{out:#?}");
    assert!(
        out.stderr.contains("--pod-network 10.0.0.0/8 overlaps"),
        "{out:#?}"
    );

    // The printed nftables table on a's public interface: a port like the API server's is
    // closed there, open over the overlay, and the overlay itself keeps working.
    let nft = v["public_interface"]["nftables"].as_str().unwrap();
    let f = lab.dir.join("public.nft");
    std::fs::write(&f, nft).unwrap();
    let out = exec_in(
        a.ns(),
        &["nft", "-f", f.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(out.success(), "nft -f: {out:#?}\n{nft}");
    let listener = k8s::spawn(
        &lab,
        "fake-apiserver",
        a.ns(),
        &[
            "socat",
            "TCP-LISTEN:6443,fork,reuseaddr",
            "SYSTEM:echo apiserver",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let connect = |addr: &str| {
        sh_in(
            b.ns(),
            &format!("echo | nc -w 2 {addr} 6443"),
            Duration::from_secs(10),
        )
    };
    let over_overlay = connect(&a.ip());
    assert!(
        over_overlay.stdout.contains("apiserver"),
        "port 6443 over the overlay: {over_overlay:#?}"
    );
    let over_public = connect(&a.host.ip.to_string());
    assert!(
        !over_public.stdout.contains("apiserver"),
        "port 6443 still open on the public interface: {over_public:#?}"
    );
    println!("[{TEST}] with the printed nftables table: 6443 answers over the overlay, not on the public interface");
    drop(listener);
    // The tunnel still works: ping both ways, and a fresh edge restart registers again.
    assert!(ping(b.ns(), &a.ip(), 3).all_ok());
    lab.stop_daemon(&a.name);
    lab.start_edge(a);
    lab.wait_registered(a, Duration::from_secs(10));
    lab.wait_ping(b, a, Duration::from_secs(15));
    assert!(ping(a.ns(), &b.ip(), 3).all_ok());
    lab.assert_running();
}

/// A VXLAN device between `x` and `y`'s overlay addresses, inner address `inner`/24, MTU `mtu`,
/// outer don't-fragment set (so an outer packet too big for the TAP is not fragmented).
fn vxlan(
    x: &metalvpc_integration_tests::Edge,
    y: &metalvpc_integration_tests::Edge,
    dev: &str,
    inner: &str,
    mtu: u64,
) {
    k8s::sh(
        x.ns(),
        &format!(
            "ip link del {dev} 2>/dev/null; \
             ip link add {dev} type vxlan id 42 local {l} remote {r} dstport 4789 dev {tap} df set && \
             ip addr add {inner}/24 dev {dev} && ip link set {dev} mtu {mtu} up",
            l = x.ip(),
            r = y.ip(),
            tap = x.tap
        ),
    );
}

/// [`vxlan`] without `dev`: the kernel then does not cap the MTU at the TAP's minus 50.
fn vxlan_unbound(
    x: &metalvpc_integration_tests::Edge,
    y: &metalvpc_integration_tests::Edge,
    dev: &str,
    inner: &str,
    mtu: u64,
) {
    k8s::sh(
        x.ns(),
        &format!(
            "ip link del {dev} 2>/dev/null; \
             ip link add {dev} type vxlan id 42 local {l} remote {r} dstport 4789 df set && \
             ip addr add {inner}/24 dev {dev} && ip link set {dev} mtu {mtu} up",
            l = x.ip(),
            r = y.ip(),
        ),
    );
}

#[test]
fn vxlan_inside_the_overlay_fits_the_printed_mtu() {
    const TEST: &str = "vxlan_inside_the_overlay_fits_the_printed_mtu";
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.122.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    let v = k8s::k8s_json(a, &[]);
    let mtu = v["calico"]["mtu"]["vxlan"].as_u64().expect("vxlan mtu");
    let tap_mtu = v["tap_mtu"].as_u64().unwrap();
    println!("[{TEST}] the command prints VXLAN MTU {mtu} for TAP MTU {tap_mtu}");
    assert_eq!(mtu, tap_mtu - 50);
    let dev = format!("{}v", lab.prefix);

    vxlan(a, b, &dev, "10.250.0.1", mtu);
    vxlan(b, a, &dev, "10.250.0.2", mtu);
    let biggest = (mtu - 28).to_string();
    // The first packets also resolve ARP inside the VXLAN; retry until one passes.
    let first = metalvpc_integration_tests::wait_until(Duration::from_secs(10), || {
        ping_with(a.ns(), "10.250.0.2", 1, &["-M", "do", "-s", &biggest]).all_ok()
    });
    assert!(
        first.is_some(),
        "no DF ping of {biggest} bytes (IP packet {mtu}) over VXLAN"
    );
    let p = ping_with(a.ns(), "10.250.0.2", 5, &["-M", "do", "-s", &biggest]);
    assert!(
        p.all_ok(),
        "DF ping of {biggest} bytes over VXLAN MTU {mtu}: {p:?}"
    );
    println!(
        "[{TEST}] ping -M do -s {biggest} (IP packet {mtu}, outer {}) over VXLAN: 5/5, avg {:.3} ms",
        mtu + 50,
        p.avg_ms.unwrap_or(f64::NAN)
    );
    let over = (mtu - 27).to_string();
    let p = ping_with(a.ns(), "10.250.0.2", 3, &["-M", "do", "-s", &over]);
    assert_eq!(p.received, 0, "one byte over the VXLAN MTU passed: {p:?}");

    // The kernel agrees: bound to the TAP, a VXLAN device may not be one byte larger.
    let refused = sh_in(
        a.ns(),
        &format!("ip link set {dev} mtu {}", mtu + 1),
        Duration::from_secs(10),
    );
    assert!(
        !refused.success(),
        "VXLAN MTU {} accepted on the TAP: {refused:#?}",
        mtu + 1
    );
    // Unbound (the route picks the TAP), it may: then the one-byte-larger ping does not fit
    // the overlay's TAP and gets nowhere, while the printed size still passes.
    vxlan_unbound(a, b, &dev, "10.250.0.1", mtu + 1);
    vxlan_unbound(b, a, &dev, "10.250.0.2", mtu + 1);
    let ok = metalvpc_integration_tests::wait_until(Duration::from_secs(10), || {
        ping_with(a.ns(), "10.250.0.2", 1, &["-M", "do", "-s", &biggest]).all_ok()
    });
    assert!(ok.is_some(), "the printed size stopped passing");
    let p = ping_with(a.ns(), "10.250.0.2", 3, &["-M", "do", "-s", &over]);
    println!(
        "[{TEST}] VXLAN device at {}: ping -M do -s {over} (outer {}) -> {}/{} replies",
        mtu + 1,
        mtu + 51,
        p.received,
        p.transmitted
    );
    assert_eq!(
        p.received, 0,
        "a VXLAN packet larger than the TAP MTU got through: {p:?}"
    );
    lab.assert_running();
}
