//! Calico without encapsulation, with the real BGP daemon (issue 4): bird2 on three nodes
//! peers over the overlay addresses (iBGP full mesh, port 179 bound to the overlay address by
//! `strict bind`
//! like Calico's `bindMode: NodeIP`); each node announces its "pod" /24, where a pod namespace
//! sits behind a veth. Pod-to-pod traffic between nodes follows the BGP routes over the overlay
//! (next hop the other node's overlay address, on the TAP). The node's pod /24 in its
//! `allowed_cidrs` is what lets it through: node c's pod /24 is announced but not allowed, so
//! replies from c's pod are dropped at the receiving edge and counted as source_mismatch.

mod k8s;

use metalvpc_integration_tests::{exec_in, ping, Netns};
use std::time::Duration;

const TEST: &str = "bird_bgp_pod_routes_over_the_overlay";

fn bird_conf(me: &str, others: &[String], sock_note: &str) -> String {
    let mut c = format!(
        "# {sock_note}\nrouter id {me};\nprotocol device {{ scan time 1; }}\n\
         protocol direct {{ ipv4; interface \"*\"; }}\n\
         protocol kernel {{ scan time 1; ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
         filter pods {{ if net ~ [ 10.244.0.0/16{{24,24}} ] then accept; reject; }}\n"
    );
    for (i, o) in others.iter().enumerate() {
        c += &format!(
            "protocol bgp peer{i} {{\n  local {me} as 64512;\n  neighbor {o} as 64512;\n  \
             connect retry time 1;\n  strict bind yes;\n  ipv4 {{ import filter pods; export filter pods; next hop self; }};\n}}\n"
        );
    }
    c
}

#[test]
fn bird_bgp_pod_routes_over_the_overlay() {
    let Some(tools) = k8s::tools(TEST, &[("bird", "bird2"), ("birdc", "bird2")]) else {
        return;
    };
    let (bird, birdc) = (tools[0].to_str().unwrap(), tools[1].to_str().unwrap());
    let pods = ["10.244.1", "10.244.2", "10.244.3"];
    // a and b may send from their pod /24; c's pod /24 is not in its allowed_cidrs.
    let allowed = vec![
        vec![format!("{}.0/24", pods[0])],
        vec![format!("{}.0/24", pods[1])],
        vec![],
    ];
    let Some((mut lab, e)) = k8s::lab_with_allowed(TEST, "10.123.0", &["a", "b", "c"], &allowed)
    else {
        return;
    };
    for x in &e {
        for y in &e {
            if x.name != y.name {
                lab.wait_ping(x, y, Duration::from_secs(15));
            }
        }
    }
    // A pod namespace per node behind a veth; the node routes for it.
    let mut pod_ns = Vec::new();
    for (i, x) in e.iter().enumerate() {
        let ns = Netns::new(&format!("{}-pod{i}", lab.prefix)).expect("pod netns");
        let (pod_end, node_end) = (format!("{}q{i}", lab.prefix), format!("{}r{i}", lab.prefix));
        k8s::sh(
            ns.name(),
            &format!(
                "ip link add {pod_end} type veth peer name {node_end} netns {node} && \
                 ip addr add {p}.2/24 dev {pod_end} && ip link set {pod_end} up && ip link set lo up && \
                 ip route add default via {p}.1",
                node = x.ns(),
                p = pods[i]
            ),
        );
        k8s::sh(
            x.ns(),
            &format!(
                "ip addr add {p}.1/24 dev {node_end} && ip link set {node_end} up && \
                 sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv4.conf.all.rp_filter=0",
                p = pods[i]
            ),
        );
        pod_ns.push(ns);
    }
    // bird on every node, peering with the other two over the overlay.
    let mut birds = Vec::new();
    let mut socks = Vec::new();
    for x in &e {
        let others: Vec<String> = e
            .iter()
            .filter(|y| y.name != x.name)
            .map(|y| y.ip())
            .collect();
        let conf = lab.dir.join(format!("bird-{}.conf", x.name));
        let sock = lab.dir.join(format!("bird-{}.ctl", x.name));
        std::fs::write(&conf, bird_conf(&x.ip(), &others, &x.name)).unwrap();
        birds.push(k8s::spawn(
            &lab,
            &format!("bird-{}", x.name),
            x.ns(),
            &[
                bird,
                "-f",
                "-c",
                conf.to_str().unwrap(),
                "-s",
                sock.to_str().unwrap(),
                "-P",
                lab.dir
                    .join(format!("bird-{}.pid", x.name))
                    .to_str()
                    .unwrap(),
            ],
        ));
        socks.push(sock);
    }
    // Every node learns the other two pod /24s from BGP, via their overlay addresses.
    let start = std::time::Instant::now();
    for (i, x) in e.iter().enumerate() {
        for (j, y) in e.iter().enumerate() {
            if i == j {
                continue;
            }
            let want = format!("{}.0/24 via {} dev {} proto bird", pods[j], y.ip(), x.tap);
            let got = metalvpc_integration_tests::wait_until(Duration::from_secs(30), || {
                exec_in(
                    x.ns(),
                    &["ip", "route", "show", &format!("{}.0/24", pods[j])],
                    Duration::from_secs(5),
                )
                .stdout
                .contains(&format!("via {} dev {} proto bird", y.ip(), x.tap))
            });
            if got.is_none() {
                for (k, b) in birds.iter().enumerate() {
                    let st = exec_in(
                        e[k].ns(),
                        &[
                            birdc,
                            "-s",
                            socks[k].to_str().unwrap(),
                            "show",
                            "protocols",
                            "all",
                        ],
                        Duration::from_secs(5),
                    );
                    eprintln!(
                        "bird on {}: {}\nlog: {}",
                        e[k].name,
                        st.stdout,
                        b.log_text()
                    );
                }
                panic!(
                    "{}: no route {want}: {}",
                    x.name,
                    exec_in(x.ns(), &["ip", "route"], Duration::from_secs(5)).stdout
                );
            }
        }
    }
    println!(
        "[{TEST}] all six BGP routes installed {:.2?} after bird started",
        start.elapsed()
    );
    // Port 179 listens on the overlay address only.
    let ss = exec_in(
        e[0].ns(),
        &["ss", "-ltnH", "sport = :179"],
        Duration::from_secs(5),
    )
    .stdout;
    assert!(
        ss.contains(&format!("{}:179", e[0].ip())),
        "bird not on the overlay address: {ss}"
    );
    assert!(
        !ss.contains("0.0.0.0:179") && !ss.contains("*:179"),
        "bird listens on every address: {ss}"
    );
    let st = exec_in(
        e[0].ns(),
        &[birdc, "-s", socks[0].to_str().unwrap(), "show", "protocols"],
        Duration::from_secs(5),
    )
    .stdout;
    println!("[{TEST}] bird on a:\n{st}");
    assert_eq!(st.matches("Established").count(), 2, "{st}");

    // Pod a <-> pod b: both /24s allowed, the traffic crosses the overlay by the BGP routes.
    let tx_before = lab.peer_entry(&e[0], &e[1]).unwrap()["tx_packets"]
        .as_u64()
        .unwrap();
    let route = exec_in(
        e[0].ns(),
        &["ip", "route", "get", &format!("{}.2", pods[1])],
        Duration::from_secs(5),
    )
    .stdout;
    assert!(
        route.contains(&format!("via {} dev {}", e[1].ip(), e[0].tap)),
        "{route}"
    );
    let p = ping(pod_ns[0].name(), &format!("{}.2", pods[1]), 20);
    assert!(p.all_ok(), "pod a -> pod b: {p:?}");
    let p2 = ping(pod_ns[1].name(), &format!("{}.2", pods[0]), 10);
    assert!(p2.all_ok(), "pod b -> pod a: {p2:?}");
    let tx_after = lab.peer_entry(&e[0], &e[1]).unwrap()["tx_packets"]
        .as_u64()
        .unwrap();
    assert!(
        tx_after >= tx_before + 30,
        "a's edge sent {tx_before} -> {tx_after} frames to b"
    );
    println!(
        "[{TEST}] pod a ({}.2) -> pod b ({}.2) via {} on {}: 20/20, avg {:.3} ms; a's edge sent {} frames to b",
        pods[0], pods[1], e[1].ip(), e[0].tap, p.avg_ms.unwrap_or(f64::NAN), tx_after - tx_before
    );

    // Pod a -> pod c: the request reaches c's pod (a's /24 is allowed), but the reply comes
    // from c's pod /24, which is not in c's allowed_cidrs: a's edge drops it.
    let drops_before = k8s::source_mismatch(&lab, &e[0]);
    let p = ping(pod_ns[0].name(), &format!("{}.2", pods[2]), 5);
    let drops_after = k8s::source_mismatch(&lab, &e[0]);
    println!(
        "[{TEST}] pod a -> pod c (c's pod /24 not in its allowed_cidrs): {}/{} replies; a's source_mismatch {drops_before} -> {drops_after}",
        p.received, p.transmitted
    );
    assert_eq!(p.received, 0, "{p:?}");
    assert!(
        drops_after >= drops_before + 5,
        "{drops_before} -> {drops_after}"
    );
    // c's own address still works.
    assert!(ping(e[0].ns(), &e[2].ip(), 3).all_ok());
    for mut b in birds {
        b.stop();
    }
    drop(pod_ns);
    lab.assert_running();
}
