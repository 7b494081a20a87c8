//! Shared by the k8s_*.rs tests: finding the real programs (and skipping loudly without them),
//! a lab whose members carry `allowed_cidrs`, and running those programs in the edges'
//! namespaces as lab daemons (stopped and reaped on drop; the namespace teardown kills any
//! child they forked).

#![allow(dead_code)]

use metalvpc_integration_tests::lab::Daemon;
use metalvpc_integration_tests::{exec_in, Community, Edge, Lab};
use std::path::PathBuf;
use std::time::Duration;

/// The path of program `cmd` (Debian package `pkg`), or `None` after printing a loud SKIPPED
/// line. scripts/deps.sh installs these packages.
pub fn tool(test: &str, cmd: &str, pkg: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| PathBuf::from(d).join(cmd))
        .find(|p| p.is_file());
    if found.is_none() {
        let msg = format!(
            "\n*** SKIPPED (needs `{cmd}` from the Debian package {pkg}; scripts/deps.sh installs it): {test} ***\n"
        );
        // Straight to fd 2: the harness captures the output of passing tests.
        // SAFETY: writing a valid buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len()) };
        println!("{}", msg.trim());
    }
    found
}

/// Every tool of `tools` ((command, package)) present, else `None` (after the SKIPPED line).
pub fn tools(test: &str, tools: &[(&str, &str)]) -> Option<Vec<PathBuf>> {
    let mut v = Vec::new();
    for (cmd, pkg) in tools {
        v.push(tool(test, cmd, pkg)?);
    }
    Some(v)
}

/// A lab with one community "prod" on `<net24>.0/24`: edges `names` at `<net24>.1`, `.2`, …,
/// member i with `allowed[i]` as its allowed_cidrs. Supernode and edges started.
pub fn lab_with_allowed(
    test: &str,
    net24: &str,
    names: &[&str],
    allowed: &[Vec<String>],
) -> Option<(Lab, Vec<Edge>)> {
    let mut lab = Lab::new(test)?;
    let edges = lab.add_edges("prod", net24, names);
    lab.start_supernode(&[community(net24, &edges, allowed)]);
    lab.start_edges(&edges);
    Some((lab, edges))
}

/// The community of [`lab_with_allowed`] (to rewrite it for a SIGHUP reload).
pub fn community(net24: &str, edges: &[Edge], allowed: &[Vec<String>]) -> Community {
    Community::new(
        "prod",
        &format!("{net24}.0/24"),
        edges
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut m = e.member();
                m.allowed_cidrs = allowed.get(i).cloned().unwrap_or_default();
                m
            })
            .collect(),
    )
}

/// Starts `args` in `ns` as a daemon logging to `<lab dir>/<name>.log`.
pub fn spawn(lab: &Lab, name: &str, ns: &str, args: &[&str]) -> Daemon {
    let log = lab.dir.join(format!("{name}.log"));
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
    Daemon::spawn(name, ns, &a, &log).unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
}

/// Runs a shell script in `ns` and panics with its output unless it succeeds.
#[track_caller]
pub fn sh(ns: &str, script: &str) -> String {
    let out = metalvpc_integration_tests::sh_in(ns, script, Duration::from_secs(20));
    assert!(out.success(), "in {ns}: {script}: {out:#?}");
    out.stdout
}

/// `drops.source_mismatch` of an edge.
pub fn source_mismatch(lab: &Lab, e: &Edge) -> u64 {
    lab.edge_status(e)
        .map_or(0, |s| s["drops"]["source_mismatch"].as_u64().unwrap_or(0))
}

/// `metalvpc-edge kubernetes --config <e's config> --json <extra>` in e's namespace.
pub fn k8s_json(e: &Edge, extra: &[&str]) -> serde_json::Value {
    let bin = metalvpc_integration_tests::edge_bin();
    let cfg = e.config.to_string_lossy().to_string();
    let mut args = vec![
        bin.to_str().unwrap(),
        "kubernetes",
        "--config",
        &cfg,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = exec_in(e.ns(), &args, Duration::from_secs(20));
    assert!(out.success(), "kubernetes --json: {out:#?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|err| panic!("{err}: {}", out.stdout))
}
