//! Network namespaces: unique names, an RAII guard, and running code inside one.

use crate::exec::exec;
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn base36(mut n: u64) -> String {
    const D: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(D[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// A name prefix unique to this process and call: `mvt<pid>x<counter>` in base 36
/// (at most 11 characters, so `<prefix>` plus a 4-character suffix still fits the
/// 15-character limit of interface names). Skips prefixes whose namespaces exist already
/// (left over from a killed run with a recycled pid).
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = format!(
            "mvt{}x{}",
            base36(u64::from(std::process::id())),
            base36(u64::from(n))
        );
        let taken = std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{p}-"))
                })
            })
            .unwrap_or(false);
        if !taken {
            assert!(p.len() <= 11, "prefix too long: {p}");
            return p;
        }
    }
}

/// A network namespace, deleted (with every process still inside it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add <name>`; brings up `lo` and turns IPv6 off (so captures only hold
    /// the traffic a test makes). `name` is used verbatim; callers make it unique.
    pub fn new(name: &str) -> Result<Netns> {
        let name = if name == "probe" {
            format!("{}-probe", unique_prefix())
        } else {
            name.to_string()
        };
        crate::cleanup::register_netns(&name);
        let out = exec(&["ip", "netns", "add", &name], Duration::from_secs(10));
        if !out.success() {
            crate::cleanup::unregister_netns(&name);
            bail!("ip netns add {name}: {}", out.stderr.trim());
        }
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        for key in [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ] {
            // Best effort: a kernel without IPv6 has nothing to turn off.
            let _ = ns.run(&["sysctl", "-qw", key]);
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command in this namespace (10 s limit), failing on non-zero exit.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = crate::exec::exec_in(&self.name, args, Duration::from_secs(10));
        if !out.success() {
            bail!(
                "in netns {}: {:?}: {}{}",
                self.name,
                args,
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_netns_pids(&self.name);
        let out = exec(&["ip", "netns", "del", &self.name], Duration::from_secs(10));
        if !out.success() {
            eprintln!("warning: ip netns del {}: {}", self.name, out.stderr.trim());
        }
        crate::cleanup::unregister_netns(&self.name);
    }
}

/// SIGKILLs every process still inside namespace `ns` (all of them were started by this
/// harness, since the namespace is ours); a process left inside would keep the
/// namespace alive after `ip netns del`.
pub fn kill_netns_pids(ns: &str) {
    let out = exec(&["ip", "netns", "pids", ns], Duration::from_secs(5));
    for pid in out
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: signalling a process in our own namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Runs `f` on a fresh thread that has joined network namespace `ns` (setns(2) only
/// affects the calling thread), so tests can open sockets inside a namespace without
/// spawning tools.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    spawn_in_netns(ns, f)?
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {ns} panicked"))?
}

/// Like [`in_netns`] but returns the thread handle so the caller can run several
/// namespaces at once (e.g. a TCP sender and receiver).
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    Ok(std::thread::spawn(move || -> Result<T> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    }))
}
