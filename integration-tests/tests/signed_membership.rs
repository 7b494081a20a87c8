//! Issue 7, membership a supernode cannot forge: the administrator signs the member list;
//! edges with `admin_key` accept only peers on the newest valid list. Here a real
//! supernode serves the signed list but admits a rogue node the list does not have
//! (`insecure_unsigned_nodes`, the stand-in for a compromised supernode): the rogue registers
//! with the supernode yet reaches nobody, and the edges count the refusals (`not_signed`).
//! Then a newer list revokes a member (torn down within a stated bound although the
//! supernode still admits it), a replayed older list is refused, and an edge restarted
//! with its `membership_cache` refuses the replay too.

use metalvpc_integration_tests::{
    drop_count, exec_in, lab::supernode_config_toml, ping, run_timeout, wait_until, Community,
    Edge, EdgeOpts, Lab,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A revoked member's sessions are torn down on every edge within this time of the
/// supernode's reload (the list is pushed at once; a lost push is repeated at the next
/// registration, every 10 s).
const REVOCATION_BOUND: Duration = Duration::from_secs(12);

fn supernode_cmd(args: &[&str]) -> metalvpc_integration_tests::CmdOutput {
    run_timeout(
        Command::new(metalvpc_integration_tests::supernode_bin()).args(args),
        Duration::from_secs(20),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `sign` the members of `community` (written as an admin's own copy of the config).
fn sign(lab: &Lab, admin: &Path, community: &Community, version: u64, out: &Path) {
    let src = lab.dir.join(format!("admin-v{version}.toml"));
    let text = supernode_config_toml(
        "198.18.0.1:7654",
        &lab.dir.join("unused.key"),
        &lab.dir.join("unused.sock"),
        std::slice::from_ref(community),
    );
    std::fs::write(&src, text).unwrap();
    let v = version.to_string();
    let o = supernode_cmd(&[
        "sign",
        "--key",
        s(admin),
        "--config",
        s(&src),
        "--version",
        &v,
        "--out",
        s(out),
    ]);
    assert!(o.success(), "sign: {o:#?}");
    println!("[sign] {}", o.stdout.trim());
}

fn peer_keys(st: &serde_json::Value) -> Vec<String> {
    st["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["public_key"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn lists(lab: &Lab, e: &Edge, peer: &Edge) -> bool {
    lab.edge_status(e)
        .map(|st| peer_keys(&st).contains(&peer.public_key))
        .unwrap_or(false)
}

fn membership_version(lab: &Lab, e: &Edge) -> Option<u64> {
    lab.edge_status(e).ok()?["membership"]["version"].as_u64()
}

#[test]
fn edges_refuse_what_a_supernode_forges() {
    const TEST: &str = "edges_refuse_what_a_supernode_forges";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    // The administrator's key: written with mode 600, its public half printed.
    let admin = lab.dir.join("admin.key");
    let g = supernode_cmd(&["admin-genkey", "--out", s(&admin)]);
    assert!(g.success(), "admin-genkey: {g:#?}");
    let mode = std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin key mode");
    let p = supernode_cmd(&["admin-pubkey", "--key", s(&admin)]);
    let admin_pub = p.stdout.trim().to_string();
    assert_eq!(admin_pub, g.stdout.trim(), "{p:#?}");
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = supernode_cmd(&["admin-pubkey", "--key", s(&admin)]);
    assert!(
        !loose.success() && loose.stderr.contains("chmod 600"),
        "{loose:#?}"
    );
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut edge = |name: &str, addr: &str| {
        let mut o = EdgeOpts::new(name, "prod", addr);
        o.extra_toml = format!(
            "admin_key = \"{admin_pub}\"\nmembership_cache = \"{}\"\n",
            s(&lab.dir.join(format!("{name}.members")))
        );
        lab.add_edge(o)
    };
    let a = edge("a", "10.93.0.1/24");
    let b = edge("b", "10.93.0.2/24");
    let c = edge("c", "10.93.0.3/24");
    let x = edge("x", "10.93.0.9/24"); // the rogue the supernode adds
    let community = |m: &[&Edge]| {
        Community::new(
            "prod",
            "10.93.0.0/24",
            m.iter().map(|e| e.member()).collect(),
        )
    };

    // Version 1: a, b, c.
    let members = lab.dir.join("prod.members");
    sign(&lab, &admin, &community(&[&a, &b, &c]), 1, &members);
    let v1 = std::fs::read(&members).unwrap();
    // Versions only grow.
    let again = supernode_cmd(&[
        "sign",
        "--key",
        s(&admin),
        "--config",
        s(&lab.dir.join("admin-v1.toml")),
        "--version",
        "1",
        "--out",
        s(&members),
    ]);
    assert!(
        !again.success() && again.stderr.contains("higher"),
        "{again:#?}"
    );

    // The supernode's own config lists x too. Without the test-only switch it refuses to
    // start with nodes that differ from the signed list.
    lab.start_supernode(&[community(&[&a, &b, &c, &x])]);
    let signed_keys = |insecure: bool| {
        format!(
            "network = \"10.93.0.0/24\"\nsigned_membership = \"{}\"\nadmin_key = \"{admin_pub}\"\n{}",
            s(&members),
            if insecure { "insecure_unsigned_nodes = true\n" } else { "" }
        )
    };
    let plain = std::fs::read_to_string(&lab.supernode_config).unwrap();
    let strict = plain.replace("network = \"10.93.0.0/24\"\n", &signed_keys(false));
    let strict_file = lab.dir.join("strict.toml");
    std::fs::write(&strict_file, &strict).unwrap();
    let chk = supernode_cmd(&["check", "--config", s(&strict_file)]);
    assert!(
        !chk.success()
            && chk.stderr.contains("differ from")
            && chk.stderr.contains("signed_membership"),
        "{chk:#?}"
    );
    println!(
        "[{TEST}] check refuses nodes the list does not sign: {}",
        chk.stderr.trim()
    );
    std::fs::write(
        &lab.supernode_config,
        plain.replace("network = \"10.93.0.0/24\"\n", &signed_keys(true)),
    )
    .unwrap();
    lab.signal("supernode", libc::SIGHUP);
    wait_until(Duration::from_secs(10), || {
        lab.supernode_status()
            .map(|v| v["communities"][0]["signed_membership_version"] == 1)
            .unwrap_or(false)
    })
    .expect("the supernode carries signed membership version 1");

    lab.start_edges(&[a.clone(), b.clone(), c.clone(), x.clone()]);
    lab.wait_ping(&a, &b, Duration::from_secs(20));
    lab.wait_ping(&b, &c, Duration::from_secs(20));
    lab.wait_registered(&x, Duration::from_secs(20));
    let sn = lab.supernode_status().unwrap();
    let registered_x = sn["communities"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["public_key"] == x.public_key.as_str() && m["registered"] == true);
    assert!(registered_x, "the supernode admitted the rogue: {sn:#}");

    // x reaches nobody, and every member counted its record as not signed.
    for m in [&a, &b, &c] {
        let p = ping(x.ns(), &m.ip(), 3);
        assert_eq!(p.received, 0, "rogue x reached {}: {p:?}", m.name);
        let p = ping(m.ns(), &x.ip(), 2);
        assert_eq!(p.received, 0, "{} reached rogue x: {p:?}", m.name);
    }
    for m in [&a, &b, &c] {
        let st = lab.edge_status(m).unwrap();
        assert_eq!(st["membership"]["version"], 1, "{st:#}");
        assert_eq!(st["membership"]["members"], 3, "{st:#}");
        assert!(
            !peer_keys(&st).contains(&x.public_key),
            "{} lists x: {st:#}",
            m.name
        );
        let n = drop_count(&st, "not_signed");
        assert!(n > 0, "{}: no not_signed drops: {st:#}", m.name);
        println!("[{TEST}] {}: not_signed drops {n}", m.name);
    }
    let text = exec_in(
        a.ns(),
        &[
            s(&metalvpc_integration_tests::edge_bin()),
            "status",
            "--config",
            s(&a.config),
        ],
        Duration::from_secs(10),
    );
    assert!(
        text.stdout
            .contains("signed membership: version 1, 3 members"),
        "{text:#?}"
    );
    let cached = std::fs::read(lab.dir.join("a.members")).expect("a's membership_cache");
    assert_eq!(cached, v1);

    // Version 2 revokes c; the supernode keeps admitting c (its config still lists it).
    std::fs::copy(&members, lab.dir.join("prod.members.v1")).unwrap();
    sign(&lab, &admin, &community(&[&a, &b]), 2, &members);
    lab.signal("supernode", libc::SIGHUP);
    let gone = wait_until(REVOCATION_BOUND, || {
        !lists(&lab, &a, &c) && !lists(&lab, &b, &c)
    })
    .unwrap_or_else(|| {
        panic!(
            "c still a peer {REVOCATION_BOUND:?} after the new list:\na: {:?}\nb: {:?}",
            lab.edge_status(&a),
            lab.edge_status(&b)
        )
    });
    println!(
        "[{TEST}] revoked member torn down on every edge {gone:.2?} after SIGHUP (bound {REVOCATION_BOUND:?})"
    );
    assert_eq!(membership_version(&lab, &a), Some(2));
    assert!(lab
        .supernode_status()
        .unwrap()
        .to_string()
        .contains(&c.public_key));
    assert_eq!(ping(c.ns(), &a.ip(), 3).received, 0, "revoked c reached a");
    assert_eq!(ping(a.ns(), &c.ip(), 2).received, 0, "a reached revoked c");
    assert!(
        ping(a.ns(), &b.ip(), 3).received > 0,
        "a -> b after the revocation"
    );

    // The supernode replays version 1: refused as a rollback; c stays out.
    std::fs::copy(lab.dir.join("prod.members.v1"), &members).unwrap();
    lab.signal("supernode", libc::SIGHUP);
    let refused = wait_until(Duration::from_secs(25), || {
        lab.edge_status(&a)
            .map(|st| {
                st["membership"]["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("rollback")
            })
            .unwrap_or(false)
    });
    assert!(
        refused.is_some(),
        "a never refused the replay: {:?}",
        lab.edge_status(&a)
    );
    assert_eq!(membership_version(&lab, &a), Some(2));
    assert!(!lists(&lab, &a, &c));
    assert_eq!(
        ping(c.ns(), &a.ip(), 3).received,
        0,
        "c reached a after the replay"
    );

    // a restarts: its membership_cache (version 2) is the floor; the replayed 1 is refused.
    lab.stop_daemon("a");
    lab.start_edge(&a);
    lab.wait_ping(&a, &b, Duration::from_secs(25));
    assert_eq!(membership_version(&lab, &a), Some(2));
    assert!(!lists(&lab, &a, &c), "{:?}", lab.edge_status(&a));
    assert_eq!(
        ping(c.ns(), &a.ip(), 3).received,
        0,
        "c reached a after a's restart"
    );
    // It started from the cache, so it does not even ask for the older list on offer.
    assert!(
        lab.log("a")
            .contains("version 2 accepted (2 members, from membership_cache)"),
        "a's log:\n{}",
        lab.log("a")
    );
    lab.assert_running();
}
