//! Runs the operator docs: every ```` ```sh ```` block of a page is executed, on the hosts its
//! info string names, in network namespaces of a [`Lab`], exactly as written except for these
//! visible substitutions:
//!
//! - the documentation addresses 203.0.113.10 (the supernode) and 203.0.113.11… (server 1…)
//!   become the lab's underlay addresses 198.18.0.1 and 198.18.0.11…;
//! - `/etc/metalvpc`, `/run/metalvpc` and `/root/` become per-host folders of the lab (the
//!   namespaces share one file system), and systemd's `RUNTIME_DIRECTORY` points at the second;
//! - `<placeholder>` is replaced by what an earlier block with `save=placeholder` printed (the
//!   value an operator copies from one server to another, such as a public key);
//! - `systemctl` is a stand-in ([`FAKE_SYSTEMCTL`]) that runs the unit's own `ExecStart` (as its `User=`; from
//!   `systemd/`), sends SIGHUP for `reload` and SIGTERM for `stop`, since these machines have
//!   no systemd as PID 1; `journalctl -u UNIT` prints that daemon's log.
//!
//! Info string: `sh host=supernode` or `sh host=node1,node2,node3` (run once per host, with
//! `$N` set to the server number); `retry=S` retries a block that fails for up to S seconds
//! (a tunnel that is still coming up); `save=NAME` keeps its trimmed stdout for `<NAME>`;
//! `fails` expects a non-zero exit. A block that cannot run in a namespace names the test that
//! covers it instead: `sh covered-by=test_name` (the name must be a test in the repo).

use crate::exec::{run_with_input, CmdOutput};
use crate::lab::{HostInfo, Lab};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One runnable block of a page.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    pub hosts: Vec<String>,
    pub retry: Option<Duration>,
    pub save: Option<String>,
    pub fails: bool,
    pub covered_by: Option<String>,
    pub code: String,
}

/// Every ```` ```sh ```` block of `markdown`. Panics on a block with neither `host=` nor
/// `covered-by=`: every command in the docs must be run by something.
pub fn blocks(page: &str, markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        let Some(info) = l.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let mut code = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            code.push_str(l);
            code.push('\n');
        }
        if lang != "sh" {
            continue;
        }
        let mut b = Block {
            line: i + 1,
            hosts: vec![],
            retry: None,
            save: None,
            fails: false,
            covered_by: None,
            code,
        };
        for w in words {
            match w.split_once('=') {
                Some(("host", h)) => b.hosts = h.split(',').map(String::from).collect(),
                Some(("retry", s)) => {
                    b.retry = Some(Duration::from_secs(s.parse().expect("retry=seconds")))
                }
                Some(("save", n)) => b.save = Some(n.to_string()),
                Some(("covered-by", t)) => b.covered_by = Some(t.to_string()),
                None if w == "fails" => b.fails = true,
                _ => panic!("{page}:{}: unknown attribute {w:?}", i + 1),
            }
        }
        assert!(
            !b.hosts.is_empty() || b.covered_by.is_some(),
            "{page}:{}: a ```sh block needs host=… (run here) or covered-by=<test>",
            i + 1
        );
        out.push(b);
    }
    out
}

/// The stand-in for `systemctl` and `journalctl` (see the module docs). It reads the unit
/// files from `$MV_UNITS`, keeps pid files and logs under `$MV_ROOT`.
pub const FAKE_SYSTEMCTL: &str = r#"#!/bin/bash
# Test stand-in for systemctl: runs a unit's own ExecStart in the background (no systemd here).
set -eu
op=$1; shift
case $op in enable|disable)
  [ "${1:-}" = --now ] || exit 0
  shift
  if [ "$op" = enable ]; then op=start; else op=stop; fi ;;
esac
unit=${1%.service}
base=$unit inst=
case $unit in *@*) base=${unit%@*}@ inst=${unit#*@} ;; esac
file=$MV_UNITS/$base.service
[ -f "$file" ] || { echo "Unit $unit.service not found." >&2; exit 5; }
pidf=$MV_ROOT/run/$unit.pid log=$MV_ROOT/log/$unit.log
mkdir -p "$MV_ROOT/run" "$MV_ROOT/log" "$RUNTIME_DIRECTORY"
running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
case $op in
  start)
    running && exit 0
    cmd=$(sed -n 's/^ExecStart=//p' "$file" | sed "s|%i|$inst|g; s|/usr/bin/||; s|/etc/metalvpc|$MV_ROOT/etc/metalvpc|g")
    # User= (the supernode's metalvpc): run as it, in the socket directory tmpfiles.d makes.
    user=$(sed -n 's/^User=//p' "$file")
    as=
    if [ -n "$user" ]; then
      chown "root:$user" "$RUNTIME_DIRECTORY"; chmod 1770 "$RUNTIME_DIRECTORY"
      as="setpriv --reuid=$user --regid=$user --init-groups --"
    fi
    setsid $as $cmd >>"$log" 2>&1 </dev/null &
    echo $! >"$pidf"
    sleep 0.3
    running || { echo "Job for $unit.service failed." >&2; tail -n 20 "$log" >&2; exit 1; } ;;
  stop)
    running || exit 0
    kill "$(cat "$pidf")"
    for _ in $(seq 50); do running || break; sleep 0.1; done
    rm -f "$pidf" ;;
  restart) "$0" stop "$unit"; "$0" start "$unit" ;;
  reload) running && kill -HUP "$(cat "$pidf")" ;;
  is-active) if running; then echo active; else echo inactive; exit 3; fi ;;
  status) if running; then echo "$unit.service: active (running), pid $(cat "$pidf")"; else echo "$unit.service: inactive"; exit 3; fi ;;
  *) echo "fake systemctl: $op not supported" >&2; exit 1 ;;
esac
"#;

const FAKE_JOURNALCTL: &str = r#"#!/bin/bash
# Test stand-in for journalctl -u UNIT [...]: prints the daemon's log.
unit=
while [ $# -gt 0 ]; do case $1 in -u) unit=${2%.service}; shift 2 ;; *) shift ;; esac; done
cat "$MV_ROOT/log/$unit.log"
"#;

/// A lab whose hosts run the docs.
pub struct DocLab {
    pub lab: Lab,
    hosts: HashMap<String, (HostInfo, PathBuf)>,
    saved: HashMap<String, String>,
    subst: Vec<(String, String)>,
    page: String,
}

/// The documentation address of server `n` (the supernode is 0).
fn doc_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 10 + n)
}

/// The lab's address for the same.
fn lab_ip(n: u8) -> Ipv4Addr {
    if n == 0 {
        crate::lab::SUPERNODE_IP
    } else {
        Ipv4Addr::new(198, 18, 0, 10 + n)
    }
}

impl DocLab {
    /// A lab with the supernode and servers `node1`..`node{servers}`. `None` when network
    /// namespaces are unavailable (SKIPPED printed).
    pub fn new(test: &str, servers: u8) -> Option<DocLab> {
        let mut lab = Lab::new(test)?;
        let bin = lab.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, text) in [
            ("systemctl", FAKE_SYSTEMCTL),
            ("journalctl", FAKE_JOURNALCTL),
        ] {
            let p = bin.join(name);
            std::fs::write(&p, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The user the package creates (the pages `chown` the supernode's key to it).
        let have_user = crate::run_timeout(
            Command::new("getent").args(["passwd", "metalvpc"]),
            Duration::from_secs(10),
        );
        if !have_user.success() {
            let sysusers =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/metalvpc.sysusers");
            crate::run_timeout(
                Command::new("systemd-sysusers").arg(&sysusers),
                Duration::from_secs(30),
            )
            .expect_ok("systemd-sysusers packaging/metalvpc.sysusers (the package's user)");
        }
        let mut hosts = HashMap::new();
        let root = |lab: &Lab, name: &str| lab.dir.join(name);
        hosts.insert(
            "supernode".to_string(),
            (lab.supernode_host.clone(), root(&lab, "supernode")),
        );
        for n in 1..=servers {
            let h = lab
                .add_host(&format!("n{n}"), lab_ip(n))
                .expect("server host");
            let r = root(&lab, &format!("node{n}"));
            hosts.insert(format!("node{n}"), (h, r));
        }
        for (_, r) in hosts.values() {
            std::fs::create_dir_all(r.join("etc/metalvpc")).unwrap();
            std::fs::create_dir_all(r.join("run/metalvpc")).unwrap();
            std::fs::create_dir_all(r.join("root")).unwrap();
        }
        let mut subst: Vec<(String, String)> = (0..=servers)
            .map(|n| (doc_ip(n).to_string(), lab_ip(n).to_string()))
            .collect();
        // Longest first: 203.0.113.1 must not eat 203.0.113.10.
        subst.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        Some(DocLab {
            lab,
            hosts,
            saved: HashMap::new(),
            subst,
            page: String::new(),
        })
    }

    fn prepare(&self, code: &str, root: &Path) -> String {
        let mut c = code.to_string();
        for (a, b) in &self.subst {
            c = c.replace(a, b);
        }
        let r = root.to_string_lossy();
        c = c
            .replace("/etc/metalvpc", &format!("{r}/etc/metalvpc"))
            .replace("/run/metalvpc", &format!("{r}/run/metalvpc"))
            .replace("/var/lib/metalvpc", &format!("{r}/var/lib/metalvpc"))
            // The administrator's key (docs/quickstart.md keeps it in root's home).
            .replace("/root/", &format!("{r}/root/"));
        for (k, v) in &self.saved {
            c = c.replace(&format!("<{k}>"), v);
        }
        c
    }

    fn exec(&self, host: &str, code: &str) -> CmdOutput {
        let (info, root) = self
            .hosts
            .get(host)
            .unwrap_or_else(|| panic!("{}: no host {host} in this lab", self.page));
        let n = host.strip_prefix("node").unwrap_or("0");
        let path = format!(
            "{}:{}:{}",
            self.lab.dir.join("bin").display(),
            crate::edge_bin().parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &info.ns, "bash", "-euo", "pipefail", "-s"])
            .env("PATH", path)
            .env("N", n)
            .env("MV_ROOT", root)
            .env("MV_UNITS", units)
            .env("RUNTIME_DIRECTORY", root.join("run/metalvpc"))
            .current_dir(root);
        run_with_input(&mut cmd, Some(code.as_bytes()), Duration::from_secs(60))
    }

    /// Runs every block of `file` (relative to the repo) in order; prints each command and
    /// what it printed. Panics on the first block that does not do what the page says.
    pub fn run_page(&mut self, file: &str) -> Vec<Block> {
        self.page = file.to_string();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let all = blocks(file, &text);
        for b in &all {
            if let Some(t) = &b.covered_by {
                assert!(
                    test_exists(t),
                    "{file}:{}: covered-by={t}, but no test of that name",
                    b.line
                );
                continue;
            }
            for host in &b.hosts {
                let root = self
                    .hosts
                    .get(host)
                    .map(|h| h.1.clone())
                    .unwrap_or_default();
                let code = self.prepare(&b.code, &root);
                let start = Instant::now();
                let out = loop {
                    let out = self.exec(host, &code);
                    let done = out.success() != b.fails;
                    match b.retry {
                        Some(limit) if !done && start.elapsed() < limit => {
                            std::thread::sleep(Duration::from_millis(500))
                        }
                        _ => break out,
                    }
                };
                println!(
                    "--- {file}:{} on {host} ({:.1?}):\n{}{}{}",
                    b.line,
                    start.elapsed(),
                    code,
                    indent(&out.stdout),
                    indent(&out.stderr)
                );
                assert!(
                    out.success() != b.fails && !out.timed_out,
                    "{file}:{} on {host}: expected {}, got {:?}\n{code}\nstdout:\n{}\nstderr:\n{}",
                    b.line,
                    if b.fails { "a failure" } else { "success" },
                    out.status,
                    out.stdout,
                    out.stderr
                );
                if let Some(name) = &b.save {
                    self.saved.insert(
                        name.replace("$N", &host.replace("node", "")),
                        out.stdout.trim().to_string(),
                    );
                }
            }
        }
        all
    }

    /// The log of a unit started with the stand-in systemctl on `host`.
    pub fn unit_log(&self, host: &str, unit: &str) -> String {
        let root = &self.hosts[host].1;
        std::fs::read_to_string(root.join(format!("log/{unit}.log"))).unwrap_or_default()
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    | {l}\n")).collect()
}

/// True if a test function `name` exists in the integration tests.
fn test_exists(name: &str) -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&format!("fn {name}()")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_attributes() {
        let md = "text\n```sh host=node1,node2 retry=5 save=key\necho hi\n```\n```toml\nx=1\n```\n```sh covered-by=some_test fails\nfalse\n```\n";
        let b = blocks("t.md", md);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].hosts, vec!["node1", "node2"]);
        assert_eq!(b[0].retry, Some(Duration::from_secs(5)));
        assert_eq!(b[0].save.as_deref(), Some("key"));
        assert_eq!(b[0].code, "echo hi\n");
        assert_eq!(b[0].line, 2);
        assert!(b[1].fails);
        assert_eq!(b[1].covered_by.as_deref(), Some("some_test"));
    }

    #[test]
    #[should_panic(expected = "needs host=")]
    fn a_block_that_nothing_runs_is_refused() {
        blocks("t.md", "```sh\nrm -rf /\n```\n");
    }
}
