//! Required test 9: bad configs are rejected up front. `run` (and `check`) exit non-zero
//! and stderr names the config file and the offending key; so does `status`. Needs no root: when
//! namespaces are available the daemons run inside a fresh empty one anyway, so a daemon
//! that wrongly accepted a config could not send anything anywhere.

use metalvpc_integration_tests::lab::{edge_config_toml, genkey, supernode_config_toml};
use metalvpc_integration_tests::{
    edge_bin, netns_available, run_timeout, supernode_bin, unique_prefix, CmdOutput, Community,
    EdgeOpts, Member, Netns,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A temp dir with a valid edge and supernode setup to break in one place at a time.
struct Setup {
    dir: PathBuf,
    ns: Option<Netns>,
    sn_key_file: PathBuf,
    sn_pub: String,
    edge_key_file: PathBuf,
    edge_pub: String,
}

impl Setup {
    fn new() -> Setup {
        let prefix = unique_prefix();
        let dir = std::env::temp_dir().join(format!("{prefix}-cfg"));
        std::fs::create_dir_all(&dir).unwrap();
        let ns = if netns_available() {
            Some(Netns::new(&format!("{prefix}-cfg")).unwrap())
        } else {
            None
        };
        let sn_key_file = dir.join("supernode.key");
        let edge_key_file = dir.join("edge-a.key");
        let sn_pub = genkey(&supernode_bin(), &sn_key_file).unwrap();
        let edge_pub = genkey(&edge_bin(), &edge_key_file).unwrap();
        Setup {
            dir,
            ns,
            sn_key_file,
            sn_pub,
            edge_key_file,
            edge_pub,
        }
    }

    fn edge_toml(&self, sn_pub: &str) -> String {
        let o = EdgeOpts::new("a", "prod", "10.88.0.1/24");
        edge_config_toml(
            &o,
            &self.edge_key_file,
            &self.dir.join("a.sock"),
            "198.18.0.1:7654",
            sn_pub,
            "mvcfgtap0",
        )
    }

    fn supernode_toml(&self, member_key: &str, member_addr: &str) -> String {
        let m = Member {
            name: "edge-a".into(),
            public_key: member_key.into(),
            address: member_addr.into(),
            allowed_cidrs: vec![],
        };
        supernode_config_toml(
            "198.18.0.1:7654",
            &self.sn_key_file,
            &self.dir.join("sn.sock"),
            &[Community::new("prod", "10.88.0.0/24", vec![m])],
        )
    }

    /// Runs `<bin> <sub> --config <file>` with `text` as the config; bounded to 15 s.
    fn run(&self, bin: &Path, sub: &str, file: &str, text: &str) -> (PathBuf, CmdOutput) {
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg(sub).arg("--config").arg(&path);
        if sub == "status" {
            cmd.arg("--json");
        }
        (path.clone(), run_timeout(&mut cmd, Duration::from_secs(15)))
    }

    /// Asserts `run`, `check` and `status` fail naming the file and `key` on stderr
    /// (`status` finds no daemon, and then reports what is wrong with the config).
    fn expect_rejected(&self, bin: &Path, file: &str, text: &str, key: &str) {
        for sub in ["run", "check", "status"] {
            let (path, out) = self.run(bin, sub, file, text);
            let p = path.to_string_lossy();
            let name = bin.file_name().unwrap().to_string_lossy();
            assert!(
                !out.timed_out,
                "{name} {sub} with a bad config kept running: {out:#?}\nconfig:\n{text}"
            );
            assert!(
                !out.success(),
                "{name} {sub} accepted a bad config ({key}): {out:#?}\nconfig:\n{text}"
            );
            assert!(
                out.stderr.contains(p.as_ref()),
                "{name} {sub}: stderr does not name {p}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains(key),
                "{name} {sub}: stderr does not name the key {key}: {}",
                out.stderr
            );
            println!("[config_errors] {name} {sub} {file}: {}", out.stderr.trim());
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const BAD_KEY: &str = "not!valid*base64";

#[test]
fn edge_bad_public_key() {
    let s = Setup::new();
    s.expect_rejected(
        &edge_bin(),
        "edge-badkey.toml",
        &s.edge_toml(BAD_KEY),
        "public_key",
    );
}

#[test]
fn supernode_bad_public_key() {
    let s = Setup::new();
    s.expect_rejected(
        &supernode_bin(),
        "sn-badkey.toml",
        &s.supernode_toml(BAD_KEY, "10.88.0.1"),
        "public_key",
    );
}

#[test]
fn supernode_address_outside_network() {
    let s = Setup::new();
    let text = s.supernode_toml(&s.edge_pub, "10.77.0.1");
    s.expect_rejected(&supernode_bin(), "sn-outside.toml", &text, "address");
}

#[test]
fn edge_unknown_key() {
    let s = Setup::new();
    let text = s.edge_toml(&s.sn_pub);
    let text = format!("listn_port = 7655\n{text}");
    s.expect_rejected(&edge_bin(), "edge-unknown.toml", &text, "listn_port");
}

#[test]
fn supernode_unknown_key() {
    let s = Setup::new();
    let text = s
        .supernode_toml(&s.edge_pub, "10.88.0.1")
        .replacen("listen =", "listn =", 1);
    s.expect_rejected(&supernode_bin(), "sn-unknown.toml", &text, "listn");
}

/// Private keys readable by group/other are refused (the error names the key file).
#[test]
fn group_readable_private_key_is_refused() {
    let s = Setup::new();
    std::fs::set_permissions(&s.edge_key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, out) = s.run(
        &edge_bin(),
        "run",
        "edge-perm.toml",
        &s.edge_toml(&s.sn_pub),
    );
    assert!(
        !out.timed_out && !out.success(),
        "edge ran with a 0644 key: {out:#?}"
    );
    let key_path = s.edge_key_file.to_string_lossy();
    assert!(
        out.stderr.contains(key_path.as_ref()),
        "stderr does not name {key_path}: {}",
        out.stderr
    );
    println!("[config_errors] 0644 key: {}", out.stderr.trim());
}

/// `check` lists every problem of a file at once, and exits non-zero.
#[test]
fn check_lists_every_problem() {
    let s = Setup::new();
    std::fs::set_permissions(&s.edge_key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = s
        .edge_toml(BAD_KEY)
        .replace("[interface]", "[interface]\nmtu = 99999");
    let (_, out) = s.run(&edge_bin(), "check", "edge-many.toml", &text);
    assert!(!out.success(), "{out:#?}");
    println!("[config_errors] edge check:\n{}", out.stderr.trim());
    assert!(out.stderr.contains("3 problems"), "{}", out.stderr);
    for needle in ["public_key", "interface.mtu", "chmod 600"] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    let sn = s
        .supernode_toml(BAD_KEY, "10.77.0.1")
        .replace("register_interval", "x");
    let sn = sn + "\n[[community]]\nname = \"prod\"\nnetwork = \"10.88.0.1/24\"\n";
    let (_, out) = s.run(&supernode_bin(), "check", "sn-many.toml", &sn);
    assert!(!out.success(), "{out:#?}");
    println!("[config_errors] supernode check:\n{}", out.stderr.trim());
    for needle in [
        "problems",
        "public_key",
        "outside the community",
        "host bits set",
        "defined twice",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
}

/// `check` shows the MTU arithmetic against the route to each supernode, and refuses an
/// `interface.mtu` too large for it (here the route goes through a 1400-byte link).
#[test]
fn check_compares_the_mtu_with_the_route() {
    let s = Setup::new();
    let Some(ns) = &s.ns else {
        println!("SKIPPED (needs network namespaces): check_compares_the_mtu_with_the_route");
        return;
    };
    for cmd in [
        "ip link add mvchk0 type veth peer name mvchk1",
        "ip link set mvchk0 mtu 1400 up",
        "ip link set mvchk1 up",
        "ip addr add 198.18.0.50/24 dev mvchk0",
    ] {
        ns.run(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    // An explicit MTU that does not fit is refused, with the value that would.
    let explicit = s
        .edge_toml(&s.sn_pub)
        .replace("[interface]", "[interface]\nmtu = 1390");
    let (_, out) = s.run(&edge_bin(), "check", "edge-mtu.toml", &explicit);
    println!(
        "[config_errors] check, mtu = 1390 over a 1400 link:\n{}{}",
        out.stdout, out.stderr
    );
    assert!(!out.success());
    assert!(
        out.stdout.contains("via mvchk0 (MTU 1400)"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("interface.mtu") && out.stderr.contains("set mtu = 1290"));
    let fitted = s
        .edge_toml(&s.sn_pub)
        .replace("[interface]", "[interface]\nmtu = 1290");
    let (_, out) = s.run(&edge_bin(), "check", "edge-mtu.toml", &fitted);
    assert!(out.success(), "{out:#?}");
    assert!(
        out.stdout
            .contains("= 1290 largest TAP MTU; configured 1290"),
        "{}",
        out.stdout
    );
    // Without `interface.mtu` the edge follows the route: 1290 here.
    let (_, out) = s.run(
        &edge_bin(),
        "check",
        "edge-mtu.toml",
        &s.edge_toml(&s.sn_pub),
    );
    println!(
        "[config_errors] check, no mtu over a 1400 link:\n{}",
        out.stdout
    );
    assert!(out.success(), "{out:#?}");
    assert!(out.stdout.contains("the edge uses 1290"), "{}", out.stdout);
}
