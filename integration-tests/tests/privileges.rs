//! Least privilege (issue 7), read from /proc/<pid>/status of the running daemons: once its
//! TAP device and sockets exist, the edge keeps CAP_NET_ADMIN and nothing else; the supernode
//! keeps no capability at all; both run with no-new-privileges. They keep working (traffic,
//! status, a SIGHUP reload that re-reads their files) without the rest.

use metalvpc_integration_tests::{ping, Lab};
use std::time::Duration;

fn caps(lab: &mut Lab, name: &str) -> Vec<(String, String)> {
    [
        "CapEff",
        "CapPrm",
        "CapInh",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ]
    .iter()
    .map(|f| {
        let v = lab
            .proc_status(name, f)
            .unwrap_or_else(|| panic!("{name}: no {f} in /proc status"));
        (f.to_string(), v)
    })
    .collect()
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap_or(u64::MAX)
}

#[test]
fn daemons_keep_only_what_they_need() {
    const TEST: &str = "daemons_keep_only_what_they_need";
    let Some((mut lab, edges)) = Lab::one_community(TEST, "10.78.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&edges[0], &edges[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    const NET_ADMIN: u64 = 1 << 12;
    let edge = caps(&mut lab, "a");
    let sn = caps(&mut lab, "supernode");
    println!("[{TEST}] edge a: {edge:?}");
    println!("[{TEST}] supernode: {sn:?}");
    let get = |v: &[(String, String)], f: &str| v.iter().find(|x| x.0 == f).unwrap().1.clone();
    for f in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(hex(&get(&edge, f)), NET_ADMIN, "edge {f}");
        assert_eq!(hex(&get(&sn, f)), 0, "supernode {f}");
    }
    for f in ["CapInh", "CapAmb"] {
        assert_eq!(hex(&get(&edge, f)), 0, "edge {f}");
        assert_eq!(hex(&get(&sn, f)), 0, "supernode {f}");
    }
    assert_eq!(get(&edge, "NoNewPrivs"), "1");
    assert_eq!(get(&sn, "NoNewPrivs"), "1");

    // Still fully working: a reload re-reads the files, traffic flows, status answers.
    lab.signal("supernode", libc::SIGHUP);
    lab.signal("a", libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.supernode_status().unwrap()["reloads"]["ok"], 1);
    assert_eq!(lab.edge_status(a).unwrap()["reloads"]["ok"], 1);
    assert!(ping(a.ns(), &b.ip(), 3).all_ok());
    lab.assert_running();
}
