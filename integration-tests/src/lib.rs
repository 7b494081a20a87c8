//! Test harness for the metalvpc network-namespace integration tests.
//!
//! Every test builds a small private underlay out of network namespaces:
//!
//! ```text
//!   ns "<p>-sw": Linux bridge <p>br
//!        |-- veth --> ns "<p>-sn"  supernode host 198.18.0.1/24
//!        |-- veth --> ns "<p>-a"   edge host      198.18.0.11/24
//!        |-- veth --> ns "<p>-b"   edge host      198.18.0.12/24
//!        ...
//! ```
//!
//! The daemons run inside those namespaces (`ip netns exec`), so no packet of a test
//! ever leaves the namespaces it created; underlay addresses are in 198.18.0.0/15 and
//! overlay addresses in 10.0.0.0/8, both only inside those namespaces.
//!
//! Everything is torn down by RAII guards ([`Netns`], [`Daemon`], [`Capture`], [`Lab`]) and,
//! on SIGINT/SIGTERM, by a signal watcher ([`cleanup`]), so an interrupted run leaves
//! no namespaces or processes behind.
//!
//! Binaries come from `$METALVPC_BIN_DIR` (default `<workspace>/target/release`).
//! Without root (or without network namespaces) every netns test prints
//! `SKIPPED (needs root and network namespaces): <name>` and passes, unless
//! `METALVPC_REQUIRE_NETNS=1`, in which case it fails.

pub mod cleanup;
pub mod exec;
pub mod lab;
pub mod netns;
pub mod pcap;

pub use exec::{exec_in, run_timeout, sh_in, CmdOutput};
pub use lab::{Community, Edge, EdgeOpts, Lab, Member};
pub use netns::{in_netns, unique_prefix, Netns};
pub use pcap::{Capture, Frame, Udp};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The directory holding `metalvpc-edge` and `metalvpc-supernode`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("METALVPC_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("release"),
    }
}

/// Path of one of the daemon binaries; panics with a helpful message when it is missing,
/// because a test that cannot find the thing it tests must not pass.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the daemons first (`cargo build --release`) or set METALVPC_BIN_DIR",
        p.display()
    );
    p
}

/// `metalvpc-edge`.
pub fn edge_bin() -> PathBuf {
    bin("metalvpc-edge")
}

/// `metalvpc-supernode`.
pub fn supernode_bin() -> PathBuf {
    bin("metalvpc-supernode")
}

/// Polls `cond` every 100 ms until it is true or `timeout` passes. Returns how long it took.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when this process may create network namespaces (root, `ip` present, and an
/// actual `ip netns add` works). Probed once per process.
pub fn netns_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return false;
        }
        match Netns::new("probe") {
            Ok(ns) => {
                drop(ns);
                true
            }
            Err(_) => false,
        }
    })
}

/// The skip rule shared by every netns test: returns true when the test should run.
/// Prints a loud SKIPPED line (or panics under `METALVPC_REQUIRE_NETNS=1`) otherwise.
pub fn require_netns(test: &str) -> bool {
    if netns_available() {
        return true;
    }
    if std::env::var("METALVPC_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("METALVPC_REQUIRE_NETNS=1 but network namespaces are unavailable (not root?): {test}");
    }
    eprintln!("\n*** SKIPPED (needs root and network namespaces): {test} ***\n");
    println!("SKIPPED (needs root and network namespaces): {test}");
    false
}

/// Result of [`ping`].
#[derive(Debug, Clone, Copy)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Average RTT in milliseconds, when anything came back.
    pub avg_ms: Option<f64>,
}

impl PingStats {
    pub fn all_ok(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// `ping -c count` from namespace `ns` to `addr` (0.2 s interval, 1 s per-reply wait),
/// bounded by a timeout. Extra arguments (e.g. `-p <pattern>`, `-s <size>`) go in `extra`.
pub fn ping_with(ns: &str, addr: &str, count: u32, extra: &[&str]) -> PingStats {
    let count_s = count.to_string();
    let mut args = vec!["ping", "-n", "-q", "-c", &count_s, "-i", "0.2", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(addr);
    let out = exec_in(ns, &args, Duration::from_secs(5 + u64::from(count) * 2));
    parse_ping(&out.stdout)
}

/// [`ping_with`] without extra arguments.
pub fn ping(ns: &str, addr: &str, count: u32) -> PingStats {
    ping_with(ns, addr, count, &[])
}

/// Parses iputils/busybox ping summary lines.
pub fn parse_ping(text: &str) -> PingStats {
    let mut st = PingStats { transmitted: 0, received: 0, avg_ms: None };
    for line in text.lines() {
        if line.contains("transmitted") {
            let nums: Vec<u32> = line
                .split(',')
                .filter_map(|part| part.split_whitespace().next()?.parse().ok())
                .collect();
            if nums.len() >= 2 {
                st.transmitted = nums[0];
                st.received = nums[1];
            }
        } else if let Some(rest) = line.split(" = ").nth(1).filter(|_| line.contains("min/avg/max")) {
            st.avg_ms = rest.split('/').nth(1).and_then(|v| v.trim().parse().ok());
        }
    }
    st
}

/// Integer field of a JSON object, 0 when absent or not a number.
pub fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Sum of every numeric value in a `drops` object.
pub fn drops_total(status: &serde_json::Value) -> u64 {
    status
        .get("drops")
        .and_then(|d| d.as_object())
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// One counter of a status's `drops` object (0 when absent).
pub fn drop_count(status: &serde_json::Value, key: &str) -> u64 {
    status.get("drops").map(|d| json_u64(d, key)).unwrap_or(0)
}

/// Bytes from the kernel's random source (for test payloads and fuzz input).
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// Hex encoding (lowercase).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n--- 10.0.0.2 ping statistics ---\n\
                   5 packets transmitted, 4 received, 20% packet loss, time 803ms\n\
                   rtt min/avg/max/mdev = 0.310/0.512/0.800/0.100 ms\n";
        let st = parse_ping(out);
        assert_eq!((st.transmitted, st.received), (5, 4));
        assert_eq!(st.avg_ms, Some(0.512));
        let none = parse_ping("3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2034ms\n");
        assert_eq!((none.transmitted, none.received, none.avg_ms), (3, 0, None));
    }

    #[test]
    fn drops_sum() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"drops":{"malformed":3,"replay":2,"note":"x"}}"#).unwrap();
        assert_eq!(drops_total(&v), 5);
        assert_eq!(drop_count(&v, "replay"), 2);
        assert_eq!(drop_count(&v, "nope"), 0);
    }
}
