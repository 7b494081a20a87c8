//! Shell code shared by `metalvpc-edge` and `metalvpc-supernode`: private keys on disk, the
//! `genkey`/`pubkey` commands, config paths, the management socket (server and client),
//! the UDP socket, signals and the wake-up pipe of the poll loop.

use anyhow::{bail, Context, Result};
use metalvpc_protocol::{PrivateKey, PublicKey};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod tcp;
pub use tcp::{FramedTcp, Transport};

/// `genkey`: prints a new private key.
pub fn cmd_genkey() -> Result<()> {
    println!("{}", PrivateKey::generate().to_base64());
    Ok(())
}

/// `pubkey`: reads a private key on stdin, prints its public key.
pub fn cmd_pubkey() -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .context("reading the private key from stdin")?;
    let key = PrivateKey::from_base64(text.trim()).map_err(|e| {
        anyhow::anyhow!("stdin: the private key is {e}. Usage: metalvpc-edge pubkey < edge.key")
    })?;
    println!("{}", key.public_key().to_base64());
    Ok(())
}

/// Resolves `p` relative to the directory of the config file `config`.
pub fn relative_to(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads a private key file, refusing one that group or others may read.
pub fn load_private_key(config: &Path, path: &Path) -> Result<PrivateKey> {
    let meta = std::fs::metadata(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: key `private_key_file` = {}: cannot read it ({e}). Create it with: \
             (umask 077; metalvpc-edge genkey > {})",
            config.display(),
            path.display(),
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: private key file {} is readable by group or others (mode {:o}); a private key must be \
             readable by its owner only. Fix: chmod 600 {}",
            config.display(),
            path.display(),
            mode,
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKey::from_base64(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{}: private key file {} (key `private_key_file`) is {e}. Generate one with `metalvpc-edge genkey`",
            config.display(),
            path.display()
        )
    })
}

/// Parses a base64 public key from a config value, with an error that names the place.
pub fn parse_public_key(file: &Path, key_path: &str, text: &str) -> Result<PublicKey> {
    PublicKey::from_base64(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: key `{key_path}` = \"{text}\": the public key is {e}. Use the output of \
             `metalvpc-edge pubkey < the.key` (or `metalvpc-supernode pubkey`)",
            file.display()
        )
    })
}

/// `relay_policy`: "allow" (default) or "direct-only"; true when relays may be used.
pub fn parse_relay_policy(path: &Path, key: &str, v: Option<&str>) -> Result<bool> {
    match v {
        None | Some("allow") => Ok(true),
        Some("direct-only") => Ok(false),
        Some(other) => bail!(
            "{}: key `{key}` = \"{other}\": must be \"allow\" (relay through a supernode when no direct path works) \
             or \"direct-only\" (never relay)",
            path.display()
        ),
    }
}

/// Parses a `cipher` key (edge config, or a community on the supernode); `None` means the
/// default, ChaCha20-Poly1305.
pub fn parse_cipher(
    path: &Path,
    key: &str,
    v: Option<&str>,
) -> Result<metalvpc_protocol::crypto::Cipher> {
    use metalvpc_protocol::crypto::Cipher;
    match v {
        None => Ok(Cipher::default()),
        Some(name) => Cipher::from_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: key `{key}` = \"{name}\": must be \"chacha20-poly1305\" (the default, fast on any CPU) \
                 or \"aes-256-gcm\" (faster where every member's CPU has AES instructions); \
                 every edge of a community must use the community's cipher",
                path.display()
            )
        }),
    }
}

/// For the short-lived commands (`status | head`): die quietly on a closed pipe, as Unix
/// tools do, instead of panicking. The daemons keep Rust's default (SIGPIPE ignored), so a
/// management client that hangs up cannot kill them.
pub fn restore_sigpipe() {
    // SAFETY: resetting a signal disposition to its default.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Sets up logging to stderr: `RUST_LOG` if set, else `default` (e.g. "info").
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Under journald the timestamp is added by the journal.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if journald {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

// ------------------------------------------------------------------------------------------
// Signals and the wake-up pipe

static STOP: AtomicBool = AtomicBool::new(false);
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; fd is the write end of our pipe.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// A self-pipe that wakes the poll loop (from signals and the management thread).
pub struct Waker {
    read: OwnedFd,
    write: RawFd,
}

impl Waker {
    /// Creates the pipe and installs SIGINT/SIGTERM handlers that set the stop flag.
    pub fn install() -> Result<Waker> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        WAKE_FD.store(fds[1], Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only touches atomics and calls write(2).
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
        // SAFETY: fds[0] is a fresh descriptor we own.
        Ok(Waker {
            read: unsafe { OwnedFd::from_raw_fd(fds[0]) },
            write: fds[1],
        })
    }
    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
    /// A handle other threads use to wake the loop.
    pub fn handle(&self) -> WakeHandle {
        WakeHandle(self.write)
    }
    /// Empties the pipe.
    pub fn drain(&self) {
        let mut b = [0u8; 64];
        // SAFETY: reading into a local buffer from our non-blocking pipe.
        while unsafe { libc::read(self.fd(), b.as_mut_ptr().cast(), b.len()) } > 0 {}
    }
    /// True once SIGINT or SIGTERM arrived.
    pub fn stopping(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// Wakes the poll loop from another thread.
#[derive(Clone, Copy)]
pub struct WakeHandle(RawFd);

impl WakeHandle {
    /// Wakes the loop.
    pub fn wake(&self) {
        // SAFETY: write end of the pipe, kept open for the process lifetime.
        unsafe { libc::write(self.0, [1u8].as_ptr().cast(), 1) };
    }
}

/// Waits until one of `fds` is ready or `timeout` passes. Each entry is a descriptor and
/// whether writability matters too; the answer is (readable or closed, writable) per entry.
pub fn poll_fds(fds: &[(RawFd, bool)], timeout: Duration) -> Vec<(bool, bool)> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, write)| libc::pollfd {
            fd,
            events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(60_000) as libc::c_int;
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![(false, false); fds.len()];
    }
    pfds.iter()
        .map(|p| {
            (
                p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0,
                p.revents & libc::POLLOUT != 0,
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// UDP

/// Binds the UDP socket: dual-stack `[::]:port` when `ip` is unspecified and IPv6 works,
/// else exactly `ip:port`. Non-blocking, with larger buffers.
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    let sock = if addr.ip().is_unspecified() {
        UdpSocket::bind(SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), addr.port()))
            .or_else(|_| UdpSocket::bind(addr))
    } else {
        UdpSocket::bind(addr)
    }
    .with_context(|| {
        format!("cannot bind UDP {addr}: is another metalvpc daemon using the port, or is the address not on this host?")
    })?;
    sock.set_nonblocking(true)?;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let v: libc::c_int = 4 << 20;
        // SAFETY: setting an int socket option on our socket.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    Ok(sock)
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// The address to pass to `send_to` on `sock` for destination `dst`.
pub fn for_socket(sock_is_v6: bool, dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(v4) if sock_is_v6 => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        other => other,
    }
}

// ------------------------------------------------------------------------------------------
// Management socket

/// Where a management endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MgmtAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address (keep it on loopback).
    Tcp(SocketAddr),
}

impl MgmtAddr {
    /// Parses `unix:/path`, `/path` (or a relative path, resolved against the config), or
    /// `127.0.0.1:port`.
    pub fn parse(config: &Path, text: &str) -> MgmtAddr {
        if let Ok(sa) = text.parse::<SocketAddr>() {
            return MgmtAddr::Tcp(sa);
        }
        let p = text.strip_prefix("unix:").unwrap_or(text);
        MgmtAddr::Unix(relative_to(config, p))
    }
}

impl std::fmt::Display for MgmtAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MgmtAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            MgmtAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A request from the management thread to the poll loop: the path asked for and where to
/// send the answer (status code, content type, body).
pub struct MgmtRequest {
    /// e.g. `/status`.
    pub path: String,
    /// The answer goes here.
    pub reply: mpsc::Sender<(u16, &'static str, String)>,
}

/// Starts the management server on a thread. Requests are handed to the poll loop through
/// the returned receiver (and a wake-up), so the loop owns all state and nothing is locked.
pub fn serve_management(addr: &MgmtAddr, waker: WakeHandle) -> Result<mpsc::Receiver<MgmtRequest>> {
    let (tx, rx) = mpsc::channel::<MgmtRequest>();
    match addr {
        MgmtAddr::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            if path.exists() {
                if UnixStream::connect(path).is_ok() {
                    bail!(
                        "management socket {} is in use by a running daemon; stop it first or set another \
                         `management` path in the config",
                        path.display()
                    );
                }
                let _ = std::fs::remove_file(path);
            }
            let listener = UnixListener::bind(path)
                .with_context(|| format!("binding management socket {}", path.display()))?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
            std::thread::Builder::new()
                .name("mgmt".into())
                .spawn(move || {
                    for conn in listener.incoming().flatten() {
                        handle_conn(conn, &tx, waker);
                    }
                })?;
        }
        MgmtAddr::Tcp(sa) => {
            let listener = std::net::TcpListener::bind(sa)
                .with_context(|| format!("binding management address {sa}"))?;
            std::thread::Builder::new()
                .name("mgmt".into())
                .spawn(move || {
                    for conn in listener.incoming().flatten() {
                        handle_conn(conn, &tx, waker);
                    }
                })?;
        }
    }
    Ok(rx)
}

trait Conn: Read + Write {
    fn set_timeouts(&self, d: Duration);
}
impl Conn for UnixStream {
    fn set_timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}
impl Conn for std::net::TcpStream {
    fn set_timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}

/// Reads at most 8 KiB of request head; answers one request; closes.
fn handle_conn(mut conn: impl Conn, tx: &mpsc::Sender<MgmtRequest>, waker: WakeHandle) {
    conn.set_timeouts(Duration::from_secs(3));
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while head.len() < 8192
        && !head.windows(4).any(|w| w == b"\r\n\r\n")
        && !head.ends_with(b"\n\n")
    {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let first = text.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, ctype, body) = if method != "GET" || !path.starts_with('/') || path.len() > 256 {
        (
            400,
            "text/plain",
            "bad request: use GET /status\n".to_string(),
        )
    } else {
        let (rtx, rrx) = mpsc::channel();
        if tx
            .send(MgmtRequest {
                path: path.to_string(),
                reply: rtx,
            })
            .is_err()
        {
            return;
        }
        waker.wake();
        match rrx.recv_timeout(Duration::from_secs(5)) {
            Ok(x) => x,
            Err(_) => (503, "text/plain", "daemon busy\n".to_string()),
        }
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        400 => "Bad Request",
        _ => "Service Unavailable",
    };
    let _ = write!(
        conn,
        "HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Asks a running daemon for `path`; returns the body.
pub fn query_management(addr: &MgmtAddr, path: &str, config: &Path) -> Result<String> {
    let hint = || {
        format!(
            "cannot reach the daemon's management socket {addr} (from `management` in {}). Is the daemon \
             running with this config? (systemctl status, or start it with `run --config {}`)",
            config.display(),
            config.display()
        )
    };
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    let mut response = Vec::new();
    match addr {
        MgmtAddr::Unix(p) => {
            let mut s = UnixStream::connect(p).with_context(hint)?;
            s.set_timeouts(Duration::from_secs(10));
            s.write_all(request.as_bytes())?;
            s.take(64 << 20).read_to_end(&mut response)?;
        }
        MgmtAddr::Tcp(a) => {
            let mut s = std::net::TcpStream::connect_timeout(a, Duration::from_secs(3))
                .with_context(hint)?;
            s.set_timeouts(Duration::from_secs(10));
            s.write_all(request.as_bytes())?;
            s.take(64 << 20).read_to_end(&mut response)?;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed answer from {addr}")
    };
    if !head.starts_with("HTTP/1.0 200") {
        bail!("{addr} answered: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Formats seconds for tables: "3s ago", "2m ago", "-".
pub fn ago(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{}s ago", s as u64),
        Some(s) if s < 7200.0 => format!("{}m ago", (s / 60.0) as u64),
        Some(s) => format!("{}h ago", (s / 3600.0) as u64),
    }
}

/// Human bytes: "1.2 MiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The non-zero drop counters of a status JSON object, as `name=count …` or `none`.
pub fn drops_line(drops: &serde_json::Value) -> String {
    let parts: Vec<String> = drops
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(" ")
    }
}

/// Drop counters as a JSON object.
pub fn drops_json(d: &metalvpc_protocol::DropCounters) -> serde_json::Value {
    serde_json::Value::Object(d.iter().map(|(k, v)| (k.to_string(), v.into())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgmt_addr_forms() {
        let cfg = Path::new("/etc/metalvpc/prod.toml");
        assert_eq!(
            MgmtAddr::parse(cfg, "127.0.0.1:9000"),
            MgmtAddr::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            MgmtAddr::parse(cfg, "unix:/run/x.sock"),
            MgmtAddr::Unix("/run/x.sock".into())
        );
        assert_eq!(
            MgmtAddr::parse(cfg, "x.sock"),
            MgmtAddr::Unix("/etc/metalvpc/x.sock".into())
        );
    }

    #[test]
    fn key_file_permissions_are_enforced() {
        let dir = std::env::temp_dir().join(format!("mvpc-keytest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("x.toml");
        let key = dir.join("k");
        std::fs::write(&key, PrivateKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_private_key(&cfg, &key).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        load_private_key(&cfg, &key).unwrap();
        std::fs::write(&key, "garbage").unwrap();
        let err = load_private_key(&cfg, &key).unwrap_err().to_string();
        assert!(err.contains("base64"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let m: SocketAddr = "[::ffff:198.18.0.1]:7654".parse().unwrap();
        assert_eq!(canonical(m), "198.18.0.1:7654".parse().unwrap());
        assert_eq!(for_socket(true, "198.18.0.1:7654".parse().unwrap()), m);
    }
}
