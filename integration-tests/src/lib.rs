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
//!        |-- veth --> ns "<p>-r1"  NAT router, WAN 198.18.0.101, LAN 198.19.1.0/24 behind it
//! ```
//!
//! NAT routers and the helpers of the NAT and failover tests are in [`nat`].
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
pub mod docs;
pub mod exec;
pub mod lab;
pub mod nat;
pub mod netns;
pub mod pcap;

pub use exec::{block_outbound_udp, exec_in, run_timeout, sh_in, CmdOutput};
pub use lab::{Community, Edge, EdgeOpts, Lab, Member, SupernodeInfo};
pub use nat::{NatKind, Router};
pub use netns::{in_netns, unique_prefix, Netns};
pub use pcap::{Capture, Frame, Udp};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The directory holding `metalvpc-edge` and `metalvpc-supernode`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("METALVPC_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("release"),
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
        panic!(
            "METALVPC_REQUIRE_NETNS=1 but network namespaces are unavailable (not root?): {test}"
        );
    }
    // Written straight to fd 2: the test harness captures print!/eprint! of passing
    // tests, and a skip must be visible.
    let msg = format!("\n*** SKIPPED (needs root and network namespaces): {test} ***\n");
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len()) };
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
    let mut st = PingStats {
        transmitted: 0,
        received: 0,
        avg_ms: None,
    };
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
        } else if let Some(rest) = line
            .split(" = ")
            .nth(1)
            .filter(|_| line.contains("min/avg/max"))
        {
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

/// Result of [`tcp_transfer`].
#[derive(Debug, Clone)]
pub struct Transfer {
    pub bytes: u64,
    pub secs: f64,
    pub sha256_sent: String,
    pub sha256_received: String,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e6
    }
}

/// A `sha256sum` child fed incrementally (no hashing crate needed).
struct Sha256Sum(std::process::Child);

impl Sha256Sum {
    fn new() -> anyhow::Result<Self> {
        let c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        cleanup::register_pid(c.id());
        Ok(Sha256Sum(c))
    }
    fn update(&mut self, data: &[u8]) -> anyhow::Result<()> {
        use std::io::Write;
        Ok(self.0.stdin.as_mut().expect("piped").write_all(data)?)
    }
    fn finish(mut self) -> anyhow::Result<String> {
        drop(self.0.stdin.take());
        let pid = self.0.id();
        let out = self.0.wait_with_output()?;
        cleanup::unregister_pid(pid);
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string())
    }
}

/// Sends `bytes` of random data over TCP from namespace `src_ns` to `dst_addr:port`, where
/// a listener runs in `dst_ns`; both ends hash what they see with sha256sum. Sockets have
/// read/write timeouts, and the whole transfer must finish within `timeout`.
pub fn tcp_transfer(
    src_ns: &str,
    dst_ns: &str,
    dst_addr: std::net::Ipv4Addr,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> anyhow::Result<Transfer> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let listener = in_netns(dst_ns, move || TcpListener::bind((dst_addr, port)))??;
    let deadline = Instant::now() + timeout;
    let io_timeout = Some(Duration::from_secs(20));
    let rx = netns::spawn_in_netns(dst_ns, move || -> anyhow::Result<(u64, String)> {
        listener.set_nonblocking(true)?;
        let mut sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(e.into()),
            }
        };
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(io_timeout)?;
        let mut h = Sha256Sum::new()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = sock.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k])?;
            n += k as u64;
            anyhow::ensure!(
                Instant::now() < deadline,
                "receiver: transfer timed out after {n} bytes"
            );
        }
        Ok((n, h.finish()?))
    })?;
    let start = Instant::now();
    let tx = netns::spawn_in_netns(src_ns, move || -> anyhow::Result<String> {
        let addr = SocketAddr::from((dst_addr, port));
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        sock.set_write_timeout(io_timeout)?;
        let mut h = Sha256Sum::new()?;
        let mut rnd = std::fs::File::open("/dev/urandom")?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            rnd.read_exact(&mut buf[..k])?;
            h.update(&buf[..k])?;
            sock.write_all(&buf[..k])?;
            left -= k as u64;
            anyhow::ensure!(
                Instant::now() < deadline,
                "sender: transfer timed out, {left} bytes left"
            );
        }
        sock.shutdown(std::net::Shutdown::Write)?;
        h.finish()
    })?;
    let sent = tx
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))???;
    let (n, received) = rx
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))???;
    Ok(Transfer {
        bytes: n,
        secs: start.elapsed().as_secs_f64(),
        sha256_sent: sent,
        sha256_received: received,
    })
}

/// Sends `count` UDP datagrams of random content and random length (0..=`max_len`) from
/// namespace `ns` to `dst`. Every third one starts with the valid version byte 1 and a
/// random type byte, so the parser gets past the version check too. Paced (~20 µs apart)
/// so the receiver's socket buffer is not simply overrun.
pub fn send_random_udp(
    ns: &str,
    dst: std::net::SocketAddr,
    count: usize,
    max_len: usize,
) -> anyhow::Result<usize> {
    let pool = random_bytes(count * 4 + max_len + 4);
    in_netns(ns, move || -> anyhow::Result<usize> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let mut sent = 0;
        for i in 0..count {
            let r = &pool[i * 4..];
            let len = (usize::from(u16::from_le_bytes([r[0], r[1]])) % (max_len + 1)).min(max_len);
            let off = usize::from(r[2]) * 4 % (pool.len() - max_len);
            let mut d = pool[off..off + len].to_vec();
            if i % 3 == 0 && d.len() >= 2 {
                d[0] = 1;
                d[1] = r[3] % 8;
            }
            if sock.send_to(&d, dst).is_ok() {
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        Ok(sent)
    })?
}

/// `GET path` on a daemon's management Unix socket; the body of a 200 answer.
pub fn http_get(sock: &std::path::Path, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| anyhow::anyhow!("connect {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header in {text:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{path}: {head}");
    }
    Ok(body.to_string())
}

/// The value of the Prometheus sample whose name and labels start with `prefix` (for
/// example `metalvpc_edge_peer_rx_bytes_total{peer="b"`), from a `/metrics` page.
pub fn metric(page: &str, prefix: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let out =
            "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n--- 10.0.0.2 ping statistics ---\n\
                   5 packets transmitted, 4 received, 20% packet loss, time 803ms\n\
                   rtt min/avg/max/mdev = 0.310/0.512/0.800/0.100 ms\n";
        let st = parse_ping(out);
        assert_eq!((st.transmitted, st.received), (5, 4));
        assert_eq!(st.avg_ms, Some(0.512));
        let none = parse_ping(
            "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2034ms\n",
        );
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
