//! The Debian package (issue 6), built by `scripts/package.sh` (or taken from
//! `$METALVPC_DEB`), and the commands of docs/install.md.
//!
//! * `deb_on_this_machine`: `dpkg -i` on this machine; `metalvpc-edge --version` and
//!   `metalvpc-supernode --version`; the units in /lib/systemd/system pass
//!   `systemd-analyze verify` as installed; the example configs in /etc/metalvpc are conffiles,
//!   fail `check` until filled in and pass it once they are; `man -w` finds the pages; the
//!   postinst started nothing; `dpkg --purge` removes it all. The package is purged on
//!   failure too (a guard), and the test refuses to run where a metalvpc package or a
//!   /usr/bin/metalvpc-edge is already present, so it never replaces an operator's install.
//! * `deb_under_systemd`: the install.md walk-through in a container with a real systemd
//!   (see tests/support): `dpkg -i`, keys, configs from the examples, `check`,
//!   `systemctl enable --now metalvpc-supernode` and `metalvpc-edge@prod`, `status`,
//!   `systemctl reload`, an upgrade (`dpkg -i` again: the daemons keep running, the postinst
//!   names what to restart) and `systemctl restart`, `dpkg --purge`.
//!
//! docs/install.md names one of these two tests on each of its command blocks
//! (`covered-by=`), and each test checks that every command line of its blocks is one it ran,
//! word for word (`deb_on_this_machine`: `scripts/package.sh` and the lines of that script;
//! `deb_under_systemd`: everything else).

mod support;

use metalvpc_integration_tests::docs::blocks;
use metalvpc_integration_tests::{run_timeout, unique_prefix, CmdOutput};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use support::{have, is_root, skip, workspace, Container, TempDir};

/// The two tests must not overlap: the container sees this machine's /usr, /etc and /var.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn sh(script: &str, timeout: Duration) -> CmdOutput {
    run_timeout(Command::new("sh").args(["-c", script]), timeout)
}

/// The .deb: `$METALVPC_DEB`, or built now by scripts/package.sh (once per process).
fn deb() -> PathBuf {
    deb_and_how().0
}

/// [`deb`], and whether this process ran scripts/package.sh to make it.
fn deb_and_how() -> (PathBuf, bool) {
    static DEB: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);
    let mut g = DEB.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = g.as_ref() {
        return p.clone();
    }
    let p = match std::env::var_os("METALVPC_DEB") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), false),
        _ => {
            // Building may include `cargo install cargo-deb` and a release build.
            let out = run_timeout(
                Command::new("bash")
                    .arg(workspace().join("scripts/package.sh"))
                    .current_dir(workspace()),
                Duration::from_secs(1800),
            )
            .expect_ok("scripts/package.sh");
            println!("scripts/package.sh:\n{}", out.stderr.trim_end());
            (
                PathBuf::from(out.stdout.lines().last().unwrap_or("").trim()),
                true,
            )
        }
    };
    assert!(p.0.is_file(), "no package at {}", p.0.display());
    *g = Some(p.clone());
    p
}

/// Every command line of the docs/install.md blocks marked `covered-by=<test>` must be one
/// that `test` ran, word for word. Returns how many lines were checked.
fn install_md_commands_ran(test: &str, ran: &[String]) -> usize {
    let text = std::fs::read_to_string(workspace().join("docs/install.md")).unwrap();
    let mut n = 0;
    for b in blocks("docs/install.md", &text)
        .iter()
        .filter(|b| b.covered_by.as_deref() == Some(test))
    {
        for line in b.code.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert!(
                ran.iter().any(|r| r == line),
                "docs/install.md:{}: `{line}` is not a command {test} ran; it ran: {ran:#?}",
                b.line
            );
            n += 1;
        }
    }
    assert!(n > 0, "no docs/install.md block names {test}");
    println!(
        "docs/install.md: the {n} command lines of its covered-by={test} blocks ran here verbatim"
    );
    n
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn preconditions(test: &str) -> bool {
    if !is_root() {
        return skip(test, "needs root to install a package");
    }
    if !have("dpkg") {
        return skip(test, "not a Debian system (no dpkg)");
    }
    true
}

/// Purges the package on drop, when this test installed it.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = sh("dpkg --purge metalvpc", Duration::from_secs(120));
    }
}

/// Processes whose executable is one of the installed binaries.
fn installed_daemons() -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            let exe = exe.to_string_lossy().to_string();
            if exe.starts_with("/usr/bin/metalvpc-") {
                found.push(format!("{} {exe}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The example configs, filled in as install.md says, in `dir` (keys from `edge`/`sn`).
fn filled_examples(dir: &Path, edge: &str, sn: &str) -> (PathBuf, PathBuf) {
    let gen = |bin: &str, key: &Path| {
        sh(
            &format!(
                "(umask 077; {bin} genkey > {0}) && {bin} pubkey < {0}",
                key.display()
            ),
            Duration::from_secs(10),
        )
        .expect_ok("genkey/pubkey")
        .stdout
        .trim()
        .to_string()
    };
    let sn_pub = gen(sn, &dir.join("supernode.key"));
    let edge_pub = gen(edge, &dir.join("prod.key"));
    // The administrator key of the signed membership the examples set up.
    let admin_key = dir.join("admin.key");
    let admin_pub = sh(
        &format!("{sn} admin-genkey --out {}", admin_key.display()),
        Duration::from_secs(10),
    )
    .expect_ok("admin-genkey")
    .stdout
    .trim()
    .to_string();
    const ADMIN: &str = "REPLACE_WITH_THE_OUTPUT_OF_metalvpc-supernode_admin-genkey";
    let edge_cfg = dir.join("prod.toml");
    let sn_cfg = dir.join("supernode.toml");
    let ex = |name: &str| std::fs::read_to_string(Path::new("/etc/metalvpc").join(name)).unwrap();
    std::fs::write(
        &edge_cfg,
        ex("edge.toml.example")
            // Loopback: `check` compares the MTU with the route to the supernode.
            .replace("203.0.113.10:7654", "127.0.0.1:7654")
            .replace(
                "REPLACE_WITH_THE_OUTPUT_OF_metalvpc-supernode_pubkey",
                &sn_pub,
            )
            .replace(ADMIN, &admin_pub),
    )
    .unwrap();
    let other = sh(
        &format!("{edge} genkey | {edge} pubkey"),
        Duration::from_secs(10),
    )
    .expect_ok("a second edge key")
    .stdout;
    std::fs::write(
        &sn_cfg,
        ex("supernode.toml.example")
            .replace("REPLACE_WITH_NODE_A_metalvpc-edge_pubkey", &edge_pub)
            .replace("REPLACE_WITH_NODE_B_metalvpc-edge_pubkey", other.trim())
            .replace(ADMIN, &admin_pub),
    )
    .unwrap();
    sh(
        &format!(
            "{sn} sign --key {} --config {}",
            admin_key.display(),
            sn_cfg.display()
        ),
        Duration::from_secs(10),
    )
    .expect_ok("sign the example's member list");
    (edge_cfg, sn_cfg)
}

#[test]
fn deb_on_this_machine() {
    const TEST: &str = "deb_on_this_machine";
    if !preconditions(TEST) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let present = sh(
        "dpkg-query -W -f='${Status}' metalvpc 2>/dev/null",
        Duration::from_secs(10),
    );
    if present.stdout.contains("installed") || Path::new("/usr/bin/metalvpc-edge").exists() {
        skip(
            TEST,
            "metalvpc is already installed on this machine; the test will not replace it",
        );
        return;
    }
    let (deb, built_here) = deb_and_how();
    println!(
        "package: {} ({} bytes)",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len()
    );

    // dpkg -i
    let guard = Installed;
    let out = run_timeout(
        Command::new("dpkg").arg("-i").arg(&deb),
        Duration::from_secs(120),
    )
    .expect_ok("dpkg -i");
    println!("dpkg -i:\n{}", out.stdout.trim_end());

    // metalvpc-edge --version, metalvpc-supernode --version
    for bin in ["metalvpc-edge", "metalvpc-supernode"] {
        let out = run_timeout(
            Command::new(format!("/usr/bin/{bin}")).arg("--version"),
            Duration::from_secs(10),
        )
        .expect_ok("--version");
        assert_eq!(out.stdout.trim(), format!("{bin} {}", version()));
        println!("{}", out.stdout.trim());
    }

    // Where the files are.
    for f in [
        "/lib/systemd/system/metalvpc-edge@.service",
        "/lib/systemd/system/metalvpc-supernode.service",
        "/etc/metalvpc/edge.toml.example",
        "/etc/metalvpc/supernode.toml.example",
        "/usr/share/doc/metalvpc/README.md",
        "/usr/share/doc/metalvpc/install.md",
        "/usr/share/doc/metalvpc/configuration.md",
        "/usr/share/man/man1/metalvpc-edge.1.gz",
        "/usr/share/man/man1/metalvpc-edge-run.1.gz",
        "/usr/share/man/man1/metalvpc-supernode.1.gz",
        "/usr/lib/sysusers.d/metalvpc.conf",
        "/usr/lib/tmpfiles.d/metalvpc.conf",
    ] {
        assert!(Path::new(f).is_file(), "{f} is missing after dpkg -i");
    }
    // The postinst made the supernode's user (a system user without a login) and the
    // directories both daemons share.
    let user =
        sh("getent passwd metalvpc", Duration::from_secs(10)).expect_ok("getent passwd metalvpc");
    println!("user: {}", user.stdout.trim());
    let fields: Vec<&str> = user.stdout.trim().split(':').collect();
    assert!(fields.len() == 7 && fields[2] != "0", "{}", user.stdout);
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "a system uid: {}",
        user.stdout
    );
    assert!(fields[6].ends_with("nologin"), "{}", user.stdout);
    for d in ["/run/metalvpc", "/var/lib/metalvpc"] {
        let st = sh(&format!("stat -c '%U:%G %a' {d}"), Duration::from_secs(5)).stdout;
        assert_eq!(st.trim(), "root:metalvpc 1770", "{d}");
    }
    // The units as installed are the ones in the repository.
    for u in ["metalvpc-edge@.service", "metalvpc-supernode.service"] {
        assert_eq!(
            std::fs::read(Path::new("/lib/systemd/system").join(u)).unwrap(),
            std::fs::read(workspace().join("systemd").join(u)).unwrap(),
            "{u}"
        );
    }
    let conffiles = sh(
        "dpkg-query -W -f='${Conffiles}' metalvpc",
        Duration::from_secs(10),
    )
    .stdout;
    assert!(
        conffiles.contains("/etc/metalvpc/edge.toml.example"),
        "{conffiles}"
    );
    assert!(
        conffiles.contains("/etc/metalvpc/supernode.toml.example"),
        "{conffiles}"
    );
    if have("man") {
        let out = sh("man -w metalvpc-edge", Duration::from_secs(20)).expect_ok("man -w");
        assert_eq!(out.stdout.trim(), "/usr/share/man/man1/metalvpc-edge.1.gz");
        let page = sh("man metalvpc-edge-run | cat", Duration::from_secs(20)).stdout;
        assert!(page.contains("--config"), "{page}");
    }
    // The help teaches the setup, the unit and where the files are.
    let help = sh("metalvpc-edge --help", Duration::from_secs(10))
        .expect_ok("--help")
        .stdout;
    for want in [
        "systemctl enable --now metalvpc-edge@prod",
        "/etc/metalvpc/edge.toml.example",
        "/run/metalvpc/<community>.sock",
        "SIGHUP",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }

    // The units as installed pass systemd-analyze verify (ExecStart= is /usr/bin/... now).
    if have("systemd-analyze") {
        let out = sh(
            "systemd-analyze verify --man=no metalvpc-supernode.service metalvpc-edge@prod.service",
            Duration::from_secs(60),
        );
        assert!(out.success(), "{out:#?}");
        assert!(!out.stderr.contains("metalvpc"), "{}", out.stderr);
    }

    // Nothing was started by the postinst.
    assert_eq!(
        installed_daemons(),
        Vec::<String>::new(),
        "the postinst started a daemon"
    );

    // The examples: refused as shipped (placeholders), accepted once filled in.
    let dir = TempDir::new("deb");
    std::fs::copy("/etc/metalvpc/edge.toml.example", dir.0.join("raw.toml")).unwrap();
    let raw = sh(
        &format!("metalvpc-edge check --config {}/raw.toml", dir.0.display()),
        Duration::from_secs(15),
    );
    assert!(
        !raw.success(),
        "an unfilled example must not pass: {raw:#?}"
    );
    println!("unfilled example: {}", raw.stderr.trim());
    let (edge_cfg, sn_cfg) = filled_examples(&dir.0, "metalvpc-edge", "metalvpc-supernode");
    let out = sh(
        &format!("metalvpc-edge check --config {}", edge_cfg.display()),
        Duration::from_secs(15),
    )
    .expect_ok("metalvpc-edge check on the filled-in example");
    println!("{}", out.stdout.trim());
    let out = sh(
        &format!("metalvpc-supernode check --config {}", sn_cfg.display()),
        Duration::from_secs(15),
    )
    .expect_ok("metalvpc-supernode check on the filled-in example");
    println!("{}", out.stdout.trim());

    // install.md's build and from-source lines: scripts/package.sh, which runs
    // `cargo build --release -p metalvpc-edge -p metalvpc-supernode` itself.
    if built_here {
        let script = std::fs::read_to_string(workspace().join("scripts/package.sh")).unwrap();
        let mut ran: Vec<String> = script.lines().map(|l| l.trim().to_string()).collect();
        ran.push("scripts/package.sh".into());
        install_md_commands_ran(TEST, &ran);
    } else {
        println!("METALVPC_DEB is set: scripts/package.sh did not run, install.md's build lines not checked");
    }

    // dpkg --purge: everything goes.
    drop(guard);
    for f in [
        "/usr/bin/metalvpc-edge",
        "/usr/bin/metalvpc-supernode",
        "/lib/systemd/system/metalvpc-edge@.service",
        "/etc/metalvpc/edge.toml.example",
        "/usr/share/man/man1/metalvpc-edge.1.gz",
        "/usr/lib/sysusers.d/metalvpc.conf",
        "/usr/lib/tmpfiles.d/metalvpc.conf",
        // Empty, so purged too.
        "/var/lib/metalvpc",
    ] {
        assert!(
            !Path::new(f).exists(),
            "{f} is still there after dpkg --purge"
        );
    }
    let status = sh(
        "dpkg-query -W -f='${Status}' metalvpc 2>&1",
        Duration::from_secs(10),
    );
    assert!(!status.stdout.contains("installed"), "{status:#?}");
}

#[test]
fn deb_under_systemd() {
    const TEST: &str = "deb_under_systemd";
    if !preconditions(TEST) {
        return;
    }
    if !have("systemd-nspawn") || !Path::new("/usr/lib/systemd/systemd").exists() {
        skip(
            TEST,
            "systemd-nspawn or systemd not installed; scripts/deps.sh installs systemd-container",
        );
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let deb = deb();
    let dir = TempDir::new("debsd");
    // /var too, so dpkg finds this machine's package database (changes stay in the container).
    let file = deb.file_name().unwrap().to_str().unwrap().to_string();
    let inside = format!("/root/{file}");
    let c = Container::boot(
        &format!("{}pk", unique_prefix()),
        &dir.0,
        &[(deb.clone(), inside.as_str())],
        &["--overlay=/var::/var"],
    );
    let ran = RefCell::new(Vec::<String>::new());
    let run = |script: &str| -> CmdOutput {
        ran.borrow_mut()
            .push(script.trim_start_matches("cd /root && ").to_string());
        let out = c.run(&["sh", "-c", script], Duration::from_secs(120));
        println!("# {script}\n{}{}", out.stdout, out.stderr);
        out
    };
    let must = |script: &str| -> CmdOutput {
        let out = run(script);
        assert!(
            out.success(),
            "failed in the container: {script}\n{out:#?}\n--- journal\n{}",
            c.run(
                &["journalctl", "-b", "--no-pager", "-n", "60"],
                Duration::from_secs(20)
            )
            .stdout
        );
        out
    };

    // install.md, "Install the package".
    must(&format!("cd /root && dpkg -i {file}"));
    must("metalvpc-edge --version");
    must("systemctl list-unit-files 'metalvpc*' --no-pager | grep -q metalvpc-edge@.service");
    assert_eq!(
        c.prop("metalvpc-supernode.service", "ActiveState"),
        "inactive"
    );

    // install.md, "The supernode".
    must("(umask 077; metalvpc-supernode genkey > /etc/metalvpc/supernode.key)");
    must("chown metalvpc:metalvpc /etc/metalvpc/supernode.key");
    let sn_pub = must("metalvpc-supernode pubkey < /etc/metalvpc/supernode.key").stdout;
    must("cp /etc/metalvpc/supernode.toml.example /etc/metalvpc/supernode.toml");
    let admin_pub = must("metalvpc-supernode admin-genkey --out /root/metalvpc-admin.key").stdout;
    // install.md, "Each server" (here the same machine: the supernode on loopback).
    must("(umask 077; metalvpc-edge genkey > /etc/metalvpc/prod.key)");
    let edge_pub = must("metalvpc-edge pubkey < /etc/metalvpc/prod.key").stdout;
    must("cp /etc/metalvpc/edge.toml.example /etc/metalvpc/prod.toml");
    // The operator's edits, as sed: the placeholders and the supernode's address.
    must(&format!(
        "sed -i -e 's|REPLACE_WITH_NODE_A_metalvpc-edge_pubkey|{}|' \
         -e 's|REPLACE_WITH_NODE_B_metalvpc-edge_pubkey|{}|' -e 's|0.0.0.0:7654|127.0.0.1:7654|' \
         -e 's|REPLACE_WITH_THE_OUTPUT_OF_metalvpc-supernode_admin-genkey|{}|' \
         /etc/metalvpc/supernode.toml",
        edge_pub.trim(),
        // node-b: a key of a server not in this test.
        must("metalvpc-edge genkey | metalvpc-edge pubkey")
            .stdout
            .trim(),
        admin_pub.trim()
    ));
    must(&format!(
        "sed -i -e 's|REPLACE_WITH_THE_OUTPUT_OF_metalvpc-supernode_pubkey|{}|' \
         -e 's|REPLACE_WITH_THE_OUTPUT_OF_metalvpc-supernode_admin-genkey|{}|' \
         -e 's|203.0.113.10:7654|127.0.0.1:7654|' /etc/metalvpc/prod.toml",
        sn_pub.trim(),
        admin_pub.trim()
    ));
    must("metalvpc-supernode sign --key /root/metalvpc-admin.key --config /etc/metalvpc/supernode.toml");
    must("metalvpc-supernode check --config /etc/metalvpc/supernode.toml");
    must("metalvpc-edge check --config /etc/metalvpc/prod.toml");
    must("systemctl enable --now metalvpc-supernode");
    must("systemctl enable --now metalvpc-edge@prod");
    // `enable --now` of a Type=notify unit returns once it is ready: registered already.
    assert_eq!(
        c.prop("metalvpc-edge@prod.service", "ActiveState"),
        "active"
    );
    let st = must("metalvpc-edge status --config /etc/metalvpc/prod.toml");
    assert!(st.stdout.contains("registered over udp"), "{}", st.stdout);
    let st = must("metalvpc-supernode status --config /etc/metalvpc/supernode.toml");
    assert!(st.stdout.contains("registered"), "{}", st.stdout);
    // The supernode runs as the user metalvpc, the edge as root.
    let uid_of = |unit: &str| {
        let pid = c.prop(unit, "MainPID");
        let st = c
            .run(
                &["cat", &format!("/proc/{pid}/status")],
                Duration::from_secs(5),
            )
            .stdout;
        st.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    let metalvpc = must("id -u metalvpc").stdout.trim().to_string();
    assert_ne!(metalvpc, "0");
    assert_eq!(uid_of("metalvpc-supernode.service"), metalvpc);
    assert_eq!(uid_of("metalvpc-edge@prod.service"), "0");
    must("systemctl status metalvpc-edge@prod --no-pager");
    must("journalctl -u metalvpc-edge@prod --no-pager");

    // install.md, "Changing the members": reload, no restart.
    let pid = c.prop("metalvpc-supernode.service", "MainPID");
    must("metalvpc-supernode sign --key /root/metalvpc-admin.key --config /etc/metalvpc/supernode.toml");
    must("systemctl reload metalvpc-supernode");
    assert_eq!(c.prop("metalvpc-supernode.service", "MainPID"), pid);

    // install.md, "Upgrading": the new package is installed while the daemons run; they
    // keep running and the postinst names them; restarting picks up the new binary.
    let edge_pid = c.prop("metalvpc-edge@prod.service", "MainPID");
    // As a version that ran the supernode as root left it: the key root's, mode 600.
    must("chown root:root /etc/metalvpc/supernode.key");
    let up = must(&format!("cd /root && dpkg -i {file}"));
    assert!(
        up.stdout
            .contains("/etc/metalvpc/supernode.key now belongs to the user metalvpc"),
        "{}",
        up.stdout
    );
    must("test \"$(stat -c %U:%G /etc/metalvpc/supernode.key)\" = metalvpc:metalvpc");
    assert!(
        up.stdout
            .contains("systemctl restart metalvpc-edge@prod.service"),
        "the postinst should name the running units: {}",
        up.stdout
    );
    assert_eq!(
        c.prop("metalvpc-edge@prod.service", "MainPID"),
        edge_pid,
        "upgrade restarted the edge"
    );
    must("systemctl restart metalvpc-supernode");
    must("systemctl restart metalvpc-edge@prod");
    assert_eq!(
        c.prop("metalvpc-edge@prod.service", "ActiveState"),
        "active"
    );
    assert_ne!(c.prop("metalvpc-edge@prod.service", "MainPID"), edge_pid);

    // install.md, hardening: a supernode port below 1024 fails without the drop-in and works
    // with it.
    must("sed -i 's|127.0.0.1:7654|127.0.0.1:443|' /etc/metalvpc/supernode.toml");
    let low = run("systemctl restart metalvpc-supernode");
    assert!(
        !low.success(),
        "port 443 without CAP_NET_BIND_SERVICE must fail"
    );
    let journal = c.journal("metalvpc-supernode.service");
    assert!(
        journal.contains("cannot bind UDP 127.0.0.1:443") && journal.contains("Permission denied"),
        "{journal}"
    );
    must(
        "mkdir -p /etc/systemd/system/metalvpc-supernode.service.d && printf '[Service]\\n\
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE\\nAmbientCapabilities=CAP_NET_BIND_SERVICE\\n' \
         > /etc/systemd/system/metalvpc-supernode.service.d/port.conf",
    );
    must("systemctl daemon-reload");
    must("systemctl restart metalvpc-supernode");
    assert_eq!(
        c.prop("metalvpc-supernode.service", "ActiveState"),
        "active"
    );

    // install.md, "Removing": remove stops the daemons; purge removes the rest but not keys.
    must("dpkg --remove metalvpc");
    assert_ne!(
        c.prop("metalvpc-edge@prod.service", "ActiveState"),
        "active"
    );
    assert_ne!(
        c.prop("metalvpc-supernode.service", "ActiveState"),
        "active"
    );
    must("dpkg --purge metalvpc");
    must("test ! -e /usr/bin/metalvpc-edge && test ! -e /etc/metalvpc/edge.toml.example");
    must("test ! -e /etc/systemd/system/multi-user.target.wants/metalvpc-edge@prod.service");
    must("test -e /etc/metalvpc/prod.key");
    drop(c);
    install_md_commands_ran(TEST, &ran.borrow());
}
