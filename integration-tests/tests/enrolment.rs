//! Addresses assigned by the supernode (issue 4): a community that allows enrolment with a
//! join secret admits a key it does not list, hands it the next address of its pool, keeps the
//! binding across supernode and edge restarts (the store in `state_dir`), and the operator can
//! list and revoke it (`metalvpc-supernode enrolled list|revoke`). With a per-server token
//! (issue 13), a revoked server cannot come back with a fresh key (the token is burned).

use metalvpc_integration_tests::lab::q;
use metalvpc_integration_tests::{
    edge_bin, exec_in, ping, run_timeout, supernode_bin, wait_until, Community, Edge, EdgeOpts, Lab,
};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn address(lab: &Lab, e: &Edge) -> String {
    lab.edge_status(e)
        .map(|s| s["address"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn enrolment_assigns_stable_addresses_and_can_be_revoked() {
    const TEST: &str = "enrolment_assigns_stable_addresses_and_can_be_revoked";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let a = lab.add_edge(EdgeOpts::new("a", "prod", "10.72.0.1/24"));
    let b = lab.add_edge(EdgeOpts::new("b", "prod", "10.72.0.2/24"));
    let secret = lab.dir.join("prod.join");
    std::fs::write(&secret, "a-long-random-join-secret-for-tests\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = lab.dir.join("state");
    // b is not listed: it has no address of its own, only the join secret.
    let text = std::fs::read_to_string(&b.config).unwrap();
    // b has its own copy of the secret (the supernode's is rotated below).
    let b_secret = lab.dir.join("b.join");
    std::fs::copy(&secret, &b_secret).unwrap();
    std::fs::set_permissions(&b_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "join_secret_file = {}\n{}",
        q(&b_secret.to_string_lossy()),
        text.replace("address = \"10.72.0.2/24\"\n", "")
    );
    std::fs::write(&b.config, text).unwrap();
    let comm = [Community::new("prod", "10.72.0.0/24", vec![a.member()])];
    let edit = |t: String| {
        format!("state_dir = {}\n{}", q(&state.to_string_lossy()), t).replace(
            "network = \"10.72.0.0/24\"\n",
            &format!(
                "network = \"10.72.0.0/24\"\njoin_secret_file = {}\naddress_pool = \"10.72.0.128/28\"\n",
                q(&secret.to_string_lossy())
            ),
        )
    };
    lab.start_supernode_with(&comm, edit);
    lab.start_edges(&[a.clone(), b.clone()]);
    let got = address(&lab, &b);
    println!("[{TEST}] b enrolled and got {got}");
    assert_eq!(got, "10.72.0.129/24");
    assert!(
        ping(a.ns(), "10.72.0.129", 3).all_ok(),
        "a cannot reach the enrolled b"
    );
    assert!(
        lab.log("supernode").contains("enrolled key"),
        "{}",
        lab.log("supernode")
    );
    // Item 12 of issue 13: both say at start what an unsigned community trusts, and the
    // supernode that a shared secret cannot make a revocation stick.
    let sn_log = lab.log("supernode");
    assert!(
        sn_log.contains("community 'prod' is unsigned")
            && sn_log.contains("docs/signed-membership.md")
            && sn_log.contains("enrols with a shared join secret"),
        "{sn_log}"
    );
    assert!(
        lab.log("a").contains("is unsigned (no `admin_key`)"),
        "{}",
        lab.log("a")
    );

    // The binding survives a supernode restart and an edge restart.
    lab.stop_daemon("supernode");
    lab.start_supernode_with(&comm, edit);
    lab.stop_daemon("b");
    lab.start_edge(&b);
    lab.wait_registered(&b, Duration::from_secs(15));
    assert_eq!(
        address(&lab, &b),
        "10.72.0.129/24",
        "another address after restarts"
    );
    // a notices the supernode restart at its next registration (up to 17 s), then meets b anew.
    lab.wait_ping(&a, &b_at(&b, "10.72.0.129"), Duration::from_secs(30));

    // The operator lists and revokes it.
    let list = run_timeout(
        Command::new("ip")
            .args(["netns", "exec", lab.sn_ns()])
            .arg(supernode_bin())
            .args(["enrolled", "list", "--config"])
            .arg(&lab.supernode_config),
        Duration::from_secs(10),
    );
    println!("[{TEST}] enrolled list:\n{}", list.stdout);
    assert!(
        list.success()
            && list.stdout.contains(&b.public_key)
            && list.stdout.contains("10.72.0.129"),
        "{list:?}"
    );
    let revoke = run_timeout(
        Command::new("ip")
            .args(["netns", "exec", lab.sn_ns()])
            .arg(supernode_bin())
            .args([
                "enrolled",
                "revoke",
                "--community",
                "prod",
                "--key",
                &b.public_key,
                "--config",
            ])
            .arg(&lab.supernode_config),
        Duration::from_secs(10),
    );
    println!("[{TEST}] enrolled revoke:\n{}", revoke.stdout);
    assert!(revoke.success(), "{revoke:?}");
    let gone = wait_until(Duration::from_secs(12), || lab.peer_entry(&a, &b).is_none());
    assert!(gone.is_some(), "a still lists the revoked b");
    println!("[{TEST}] revoked server dropped by a {gone:.2?} after the revoke");
    let refused = wait_until(Duration::from_secs(25), || {
        lab.log("supernode")
            .lines()
            .any(|l| l.contains("was revoked"))
    });
    assert!(refused.is_some(), "{}", lab.log("supernode"));
    let p = exec_in(
        b.ns(),
        &["ping", "-c", "2", "-W", "1", &a.ip()],
        Duration::from_secs(10),
    );
    assert!(!p.success(), "the revoked b still reaches a");

    // With the shared secret the revoked server could come back with a fresh key; rotating
    // the secret (issue 13) makes its copy worthless.
    let rotate = enrolled(
        &lab,
        &[
            "revoke",
            "--community",
            "prod",
            "--key",
            &b.public_key,
            "--rotate-secret",
        ],
    );
    println!(
        "[{TEST}] enrolled revoke --rotate-secret:\n{}",
        rotate.stdout
    );
    assert!(
        rotate.success() && rotate.stdout.contains("wrote a new join secret"),
        "{rotate:?}"
    );
    assert_ne!(
        std::fs::read_to_string(&secret).unwrap().trim(),
        "a-long-random-join-secret-for-tests"
    );
    lab.stop_daemon("b");
    std::fs::write(&b_secret, "a-long-random-join-secret-for-tests\n").unwrap();
    std::fs::set_permissions(&b_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    metalvpc_integration_tests::lab::genkey(&edge_bin(), &b.key_file).unwrap();
    lab.start_edge(&b);
    let refused = wait_until(Duration::from_secs(25), || {
        lab.edge_status(&b)
            .ok()
            .is_some_and(|s| s.to_string().contains("join proof does not match"))
    });
    assert!(
        refused.is_some(),
        "{}\n{}",
        lab.log("b"),
        lab.log("supernode")
    );
    lab.assert_running();
}

/// Runs `metalvpc-supernode enrolled ARGS --config <the lab's>` in the supernode's namespace.
fn enrolled(lab: &Lab, args: &[&str]) -> metalvpc_integration_tests::CmdOutput {
    run_timeout(
        Command::new("ip")
            .args(["netns", "exec", lab.sn_ns()])
            .arg(supernode_bin())
            .arg("enrolled")
            .args(args)
            .arg("--config")
            .arg(&lab.supernode_config),
        Duration::from_secs(10),
    )
}

#[test]
fn a_revoked_token_server_cannot_enrol_again_with_a_fresh_key() {
    const TEST: &str = "a_revoked_token_server_cannot_enrol_again_with_a_fresh_key";
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let a = lab.add_edge(EdgeOpts::new("a", "prod", "10.73.0.1/24"));
    let b = lab.add_edge(EdgeOpts::new("b", "prod", "10.73.0.2/24"));
    let state = lab.dir.join("state");
    let token_file = lab.dir.join("prod.token");
    // b is not listed and has no address: only a token.
    let text = std::fs::read_to_string(&b.config).unwrap();
    let text = format!(
        "join_token_file = {}\n{}",
        q(&token_file.to_string_lossy()),
        text.replace("address = \"10.73.0.2/24\"\n", "")
    );
    std::fs::write(&b.config, text).unwrap();
    let comm = [Community::new("prod", "10.73.0.0/24", vec![a.member()])];
    // Tokens only: an address pool and no join secret.
    let edit = |t: String| {
        format!("state_dir = {}\n{}", q(&state.to_string_lossy()), t).replace(
            "network = \"10.73.0.0/24\"\n",
            "network = \"10.73.0.0/24\"\naddress_pool = \"10.73.0.128/28\"\n",
        )
    };
    lab.start_supernode_with(&comm, edit);
    // A token for two servers (so that only the burn, not the count, keeps the fresh key out);
    // the running supernode is told to reload (its pid verified first).
    let create = enrolled(
        &lab,
        &[
            "token",
            "create",
            "--community",
            "prod",
            "--uses",
            "2",
            "--ttl",
            "1h",
        ],
    );
    println!("[{TEST}] token create: {}{}", create.stdout, create.stderr);
    assert!(create.success(), "{create:?}");
    assert!(create.stdout.contains("reloaded"), "{create:?}");
    let token = create.stdout.lines().next().unwrap().trim().to_string();
    assert!(
        token.len() == 12 + 1 + 32 && token.as_bytes()[12] == b'.',
        "{token}"
    );
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_edges(&[a.clone(), b.clone()]);
    assert_eq!(address(&lab, &b), "10.73.0.129/24");
    assert!(ping(a.ns(), "10.73.0.129", 3).all_ok(), "a cannot reach b");
    let list = enrolled(&lab, &["list"]);
    println!("[{TEST}] enrolled list:\n{}", list.stdout);
    assert!(list.stdout.contains(&b.public_key) && list.stdout.contains(&token[..12]));

    // Revoked: the token is burned, the address quarantined, b is cut off.
    let revoke = enrolled(
        &lab,
        &["revoke", "--community", "prod", "--key", &b.public_key],
    );
    println!("[{TEST}] enrolled revoke:\n{}", revoke.stdout);
    assert!(revoke.success(), "{revoke:?}");
    assert!(
        revoke.stdout.contains("burned")
            && revoke.stdout.contains("quarantined")
            && revoke.stdout.contains("reloaded"),
        "{revoke:?}"
    );
    let gone = wait_until(Duration::from_secs(12), || lab.peer_entry(&a, &b).is_none());
    assert!(gone.is_some(), "a still lists the revoked b");

    // The same server with a fresh key and the same token: refused, and it says why.
    lab.stop_daemon("b");
    metalvpc_integration_tests::lab::genkey(&edge_bin(), &b.key_file).unwrap();
    lab.start_edge(&b);
    let refused = wait_until(Duration::from_secs(25), || {
        lab.edge_status(&b)
            .ok()
            .is_some_and(|s| s.to_string().contains("used up"))
    });
    assert!(
        refused.is_some(),
        "{}\n{}",
        lab.log("b"),
        lab.log("supernode")
    );
    assert!(lab.log("b").contains("used up"), "{}", lab.log("b"));
    let p = exec_in(
        b.ns(),
        &["ping", "-c", "2", "-W", "1", &a.ip()],
        Duration::from_secs(10),
    );
    assert!(!p.success(), "the revoked server is back");
    let list = enrolled(&lab, &["list"]);
    assert!(
        list.stdout.contains("quarantined: 10.73.0.129"),
        "{}",
        list.stdout
    );
    // The operator hands the address out again.
    let release = enrolled(
        &lab,
        &["release", "--community", "prod", "--address", "10.73.0.129"],
    );
    assert!(release.success(), "{release:?}");
    let list = enrolled(&lab, &["list"]);
    assert!(
        !list.stdout.contains("quarantined: 10.73.0.129"),
        "{}",
        list.stdout
    );
    lab.assert_running();
}

/// `e` as seen at another overlay address (an enrolled edge's config has none).
fn b_at(e: &Edge, ip: &str) -> Edge {
    let mut x = e.clone();
    x.overlay = ip.parse().unwrap();
    x
}
