//! A three-member etcd cluster (Debian's etcd-server) with peer and client URLs on overlay
//! addresses (issue 4): it forms, a write on one member is read on another, it survives one
//! member's edge restart (the member's TAP goes away and comes back), and that member sees
//! what was written while it was cut off.

mod k8s;

use metalvpc_integration_tests::{exec_in, Edge};
use std::time::{Duration, Instant};

const TEST: &str = "etcd_cluster_on_the_overlay";

fn etcdctl(bin: &str, on: &Edge, args: &[&str]) -> metalvpc_integration_tests::CmdOutput {
    let ep = format!("http://{}:2379", on.ip());
    let mut a = vec![
        bin,
        "--endpoints",
        &ep,
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "5s",
    ];
    a.extend_from_slice(args);
    exec_in(on.ns(), &a, Duration::from_secs(15))
}

fn healthy(bin: &str, e: &[Edge]) -> bool {
    e.iter()
        .all(|x| etcdctl(bin, x, &["endpoint", "health"]).success())
}

#[test]
fn etcd_cluster_on_the_overlay() {
    let Some(tools) = k8s::tools(TEST, &[("etcd", "etcd-server"), ("etcdctl", "etcd-client")])
    else {
        return;
    };
    let (etcd, ctl) = (tools[0].to_str().unwrap(), tools[1].to_str().unwrap());
    let Some((mut lab, e)) = k8s::lab_with_allowed(TEST, "10.125.0", &["a", "b", "c"], &[]) else {
        return;
    };
    for x in &e {
        for y in &e {
            if x.name != y.name {
                lab.wait_ping(x, y, Duration::from_secs(15));
            }
        }
    }
    let cluster: Vec<String> = e
        .iter()
        .map(|x| format!("{}=http://{}:2380", x.name, x.ip()))
        .collect();
    let cluster = cluster.join(",");
    let start = Instant::now();
    let mut members = Vec::new();
    for x in &e {
        let data = lab.dir.join(format!("etcd-{}", x.name));
        let peer = format!("http://{}:2380", x.ip());
        let client = format!("http://{}:2379", x.ip());
        members.push(k8s::spawn(
            &lab,
            &format!("etcd-{}", x.name),
            x.ns(),
            &[
                etcd,
                "--name",
                &x.name,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &lab.prefix,
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
            ],
        ));
    }
    let formed =
        metalvpc_integration_tests::wait_until(Duration::from_secs(60), || healthy(ctl, &e));
    if formed.is_none() {
        for m in &members {
            eprintln!("{} log:\n{}", m.name, m.log_text());
        }
        panic!("the etcd cluster did not become healthy within 60 s");
    }
    println!(
        "[{TEST}] 3-member etcd cluster healthy {:.2?} after start",
        start.elapsed()
    );
    let list = etcdctl(ctl, &e[0], &["member", "list"])
        .expect_ok("member list")
        .stdout;
    println!("[{TEST}] member list:\n{list}");
    for x in &e {
        assert!(
            list.contains(&format!("http://{}:2380", x.ip()))
                && list.contains(&format!("http://{}:2379", x.ip())),
            "{} not on its overlay address: {list}",
            x.name
        );
    }

    // A write on a is read on c.
    etcdctl(ctl, &e[0], &["put", "/metalvpc/k", "written-on-a"]).expect_ok("put on a");
    let got =
        etcdctl(ctl, &e[2], &["get", "/metalvpc/k", "--print-value-only"]).expect_ok("get on c");
    assert_eq!(got.stdout.trim(), "written-on-a");
    println!("[{TEST}] put on a, get on c: {}", got.stdout.trim());

    // b's edge restarts: its TAP and overlay address go away and come back.
    let b = e[1].clone();
    let cut = Instant::now();
    lab.stop_daemon(&b.name);
    // While b is off the overlay, the other two (a quorum) take a write.
    // (If b led the cluster, a and c first elect a new leader: the client retries.)
    let put = metalvpc_integration_tests::wait_until(Duration::from_secs(20), || {
        etcdctl(ctl, &e[0], &["put", "/metalvpc/during", "while-b-was-away"]).success()
    });
    let put = put.expect("a and c did not take a write while b was away");
    println!("[{TEST}] b's edge stopped: a write on a succeeded {put:.2?} later");
    // Cut off for longer than the election timeout: b's address is gone, a and c carry on.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !etcdctl(ctl, &b, &["endpoint", "health"]).success(),
        "b still answered on its overlay address with its edge stopped"
    );
    assert!(etcdctl(ctl, &e[2], &["get", "/metalvpc/during"]).success());
    lab.start_edge(&b);
    lab.wait_registered(&b, Duration::from_secs(10));
    lab.wait_ping(&b, &e[0], Duration::from_secs(15));
    let back = metalvpc_integration_tests::wait_until(Duration::from_secs(30), || {
        healthy(ctl, &e)
            && etcdctl(ctl, &b, &["get", "/metalvpc/during", "--print-value-only"])
                .stdout
                .trim()
                == "while-b-was-away"
    });
    assert!(
        back.is_some(),
        "b did not rejoin: {}",
        members[1].log_text()
    );
    println!(
        "[{TEST}] b's edge restarted: cluster healthy again and b has the write made while it was away, {:.2?} after the edge stopped",
        cut.elapsed()
    );
    // And a write on b is read on a and c.
    etcdctl(ctl, &b, &["put", "/metalvpc/from-b", "written-on-b"]).expect_ok("put on b");
    for x in [&e[0], &e[2]] {
        let got =
            etcdctl(ctl, x, &["get", "/metalvpc/from-b", "--print-value-only"]).expect_ok("get");
        assert_eq!(got.stdout.trim(), "written-on-b", "on {}", x.name);
    }
    for m in &mut members {
        assert!(m.exited().is_none(), "{} exited: {}", m.name, m.log_text());
        m.stop();
    }
    lab.assert_running();
}
