//! Shell code shared by `metalvpc-edge` and `metalvpc-supernode`: private keys on disk, the
//! `genkey`/`pubkey` commands, config paths, the management socket (server and client),
//! the UDP socket, signals and the wake-up pipe of the poll loop. The loop itself, which both
//! daemons run with their own handlers, is [`daemon`].

use anyhow::{bail, Context, Result};
use metalvpc_protocol::{PrivateKey, PublicKey};
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod atomic_file;
pub mod cli;
pub mod daemon;
pub mod datapath;
pub mod metrics;
pub mod mgmt;
pub mod poll;
pub mod report;
pub mod source;
pub mod systemd;
pub mod tcp;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub use atomic_file::write_atomic;
pub use daemon::{Daemon, Io, Shell};
pub use metrics::Metrics;
pub use mgmt::{
    bearer_token, check_request, management_token, parse_request, query_management,
    serve_management, status_command, BadRequest, HeadReader, MgmtAddr, MgmtRequest, MgmtToken,
    Request, MAX_REQUEST_BYTES, MAX_REQUEST_HEAD, MAX_REQUEST_PATH,
};
pub use report::{Drops, Reloads};
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

/// The hidden `man --dir DIR` command: writes `<bin>.1` and one `<bin>-<command>.1` per
/// subcommand, rendered from the clap definitions (the package ships them).
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = cmd.disable_help_subcommand(true);
    let root = cmd.get_name().to_string();
    let source = format!("metalvpc {}", cmd.get_version().unwrap_or(""));
    let mut pages = vec![(root.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{root}-{}", sub.get_name());
        let bin = format!("{root} {}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name).bin_name(bin)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .source(source.clone())
            .manual("metalvpc")
            .render(&mut text)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
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
    // SAFETY: getegid has no preconditions.
    let own_gid = unsafe { libc::getegid() };
    // Root's commands (`check`, `enrolled`) read the supernode's key too: for them the
    // group is metalvpc's.
    let own_gid = if own_gid == 0 {
        group_id(DAEMON_GROUP).unwrap_or(0)
    } else {
        own_gid
    };
    if !key_mode_ok(mode, std::os::unix::fs::MetadataExt::gid(&meta), own_gid) {
        bail!(
            "{}: private key file {} is readable by group or others (mode {:o}); a private key must be \
             readable by its owner only, or also by its group (mode 640) when that group is the daemon's \
             own and not root (the supernode unit runs as group metalvpc; for root the group is metalvpc). Fix: chmod 600 {} \
             (or chown metalvpc:metalvpc {} for the supernode)",
            config.display(),
            path.display(),
            mode,
            path.display(),
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

/// The group the packaged supernode runs as (`/usr/lib/sysusers.d/metalvpc.conf`).
pub const DAEMON_GROUP: &str = "metalvpc";

/// The gid of group `name`, if there is one.
pub fn group_id(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getgrnam_r writes into `gr` and `buf`, which we own, sizes given.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut res: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            name.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut res,
        );
        (rc == 0 && !res.is_null()).then_some(gr.gr_gid)
    }
}

/// Whether a private key file of `mode` and group `file_gid` is private enough for a
/// process of group `own_gid`: nobody but the owner may read or write it, except that its
/// group may read it when that group is the process's own and not root (a key installed
/// `root:metalvpc`, mode 640, for a supernode running as group metalvpc).
pub fn key_mode_ok(mode: u32, file_gid: u32, own_gid: u32) -> bool {
    match mode & 0o077 {
        0 => true,
        0o040 => file_gid == own_gid && own_gid != 0,
        _ => false,
    }
}

/// Parses a base64 public key from a config value, with an error that names the place.
pub fn parse_public_key(file: &Path, key_path: &str, text: &str) -> Result<PublicKey> {
    PublicKey::from_base64(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: key `{key_path}` = \"{text}\": not a public key ({e}). Use the output of \
             `metalvpc-edge pubkey < the.key` (or `metalvpc-supernode pubkey`)",
            file.display()
        )
    })
}

/// A community name as both configs take it (the edge's `community`, the supernode's
/// `name`): 1 to 64 ASCII letters, digits, '-', '_' or '.'.
pub fn is_community_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
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

/// Sets up logging to stderr: `RUST_LOG` if set, else `level` (the config's `log_level`,
/// e.g. "info"). Plain text without colours unless stderr is a terminal; under journald
/// without timestamps too (the journal adds them).
pub fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journald)
        .with_target(false);
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// Linux capability number of CAP_NET_ADMIN.
pub const CAP_NET_ADMIN: u32 = 12;

/// Least privilege once the daemon holds what it needed privileges for (the TAP device, its
/// sockets): keeps only the capabilities in `keep` (and only if it had them), empties the
/// bounding and ambient sets of everything else, and sets no-new-privileges so that nothing
/// it might execute gains any. Returns what it kept, as a mask. Never fails the daemon: a
/// process without CAP_SETPCAP cannot shrink its bounding set, and then only that is skipped.
pub fn drop_capabilities(keep: &[u32]) -> u64 {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    for cap in 0..=last {
        if !keep.contains(&cap) {
            // SAFETY: as above; fails harmlessly without CAP_SETPCAP.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills the two-element array for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) } != 0 {
        return 0;
    }
    let had = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let wanted = keep.iter().fold(0u64, |m, c| m | (1u64 << c)) & had;
    let new = [
        Data {
            effective: wanted as u32,
            permitted: wanted as u32,
            inheritable: 0,
        },
        Data {
            effective: (wanted >> 32) as u32,
            permitted: (wanted >> 32) as u32,
            inheritable: 0,
        },
    ];
    hdr.version = VERSION_3;
    hdr.pid = 0;
    // SAFETY: capset with a valid header and two data elements; only shrinks the sets.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, new.as_ptr()) } != 0 {
        tracing::warn!(
            "could not drop capabilities: {}",
            std::io::Error::last_os_error()
        );
    }
    wanted
}

/// Reads at most `limit` bytes of `path` (a secret or state file named in a config: never
/// unbounded, even if the path is a device such as /dev/zero).
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The directory of default management sockets: `$RUNTIME_DIRECTORY` when systemd set one
/// (a unit with `RuntimeDirectory=`), else `/run/metalvpc` (the shipped units).
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next().map(PathBuf::from))
        })
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/run/metalvpc"))
}

/// Default of the `log_level` key.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Checks a `log_level` value: a level (error, warn, info, debug, trace) or a `RUST_LOG`
/// style filter such as "info,metalvpc_protocol=debug".
pub fn parse_log_level(config: &Path, v: Option<&str>) -> Result<String> {
    let v = v.unwrap_or(DEFAULT_LOG_LEVEL);
    if v.is_empty() || tracing_subscriber::EnvFilter::try_new(v).is_err() {
        bail!(
            "{}: key `log_level` = \"{v}\" is not a log level: use error, warn, info (default), debug or trace",
            config.display()
        );
    }
    Ok(v.to_string())
}

// ------------------------------------------------------------------------------------------
// Signals and the wake-up pipe

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
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
    /// Creates the pipe and installs SIGINT/SIGTERM handlers that set the stop flag, and a
    /// SIGHUP handler that asks for a reload.
    pub fn install() -> Result<Waker> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        WAKE_FD.store(fds[1], Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
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
    /// True once per SIGHUP (the flag is cleared by reading it).
    pub fn take_reload(&self) -> bool {
        RELOAD.swap(false, Ordering::SeqCst)
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

/// Every problem found in one config file, so that `check` (and `run`) can list them all
/// at once instead of one per attempt.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Notes a problem (a sentence naming the file, the key and the fix).
    pub fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }

    /// How many were noted so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if none was noted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `r`, or `None` after noting its error.
    pub fn ok<T>(&mut self, r: Result<T>) -> Option<T> {
        r.map_err(|e| self.push(format!("{e:#}"))).ok()
    }

    /// `Ok` if nothing was noted; otherwise one error listing every problem.
    pub fn finish(self, path: &Path) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => bail!("{}", self.0[0]),
            n => bail!(
                "{}: {n} problems:\n  - {}",
                path.display(),
                self.0.join("\n  - ")
            ),
        }
    }
}

/// The outcome of reloads on SIGHUP, for `status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied.
    pub ok: u64,
    /// Reloads refused because the config had an error.
    pub failed: u64,
    /// The last refusal's error, until a reload succeeds.
    pub last_error: Option<String>,
    /// When the last reload was attempted.
    pub last: Option<std::time::Instant>,
}

impl ReloadStats {
    /// Records an attempt: `Err` is logged as the reason the running configuration stays.
    pub fn record<T>(&mut self, result: Result<T>) -> Option<T> {
        self.last = Some(std::time::Instant::now());
        match result {
            Ok(v) => {
                self.ok += 1;
                self.last_error = None;
                Some(v)
            }
            Err(e) => {
                self.failed += 1;
                tracing::error!("reload failed, the running configuration stays in force: {e:#}");
                self.last_error = Some(format!("{e:#}"));
                None
            }
        }
    }

    /// As `status --json` shows it (`reloads`).
    pub fn report(&self) -> Reloads {
        Reloads {
            failed: self.failed,
            last_error: self.last_error.clone(),
            last_secs: self.last.map(|t| t.elapsed().as_secs_f64()),
            ok: self.ok,
        }
    }
}

impl serde::Serialize for ReloadStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.report().serialize(s)
    }
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
    // Don't-fragment on every datagram, and no local fragmentation from the kernel's PMTU
    // cache: the edges probe each path's MTU themselves (see protocol::pmtu).
    // SAFETY: setting int socket options on our socket.
    unsafe {
        let probe: libc::c_int = libc::IP_PMTUDISC_PROBE;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&probe as *const libc::c_int).cast();
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            p,
            len,
        );
        if addr.is_ipv6() {
            let probe6: libc::c_int = libc::IPV6_PMTUDISC_PROBE;
            let p6 = (&probe6 as *const libc::c_int).cast();
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                p6,
                len,
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_key_may_be_group_readable_only_by_the_daemons_own_group_and_never_by_others() {
        // root:metalvpc 640 for a supernode of group metalvpc (gid 990 here): fine.
        assert!(key_mode_ok(0o640, 990, 990));
        assert!(key_mode_ok(0o600, 0, 990));
        assert!(key_mode_ok(0o400, 5, 0));
        // Another group, group root, group write, or others: refused.
        assert!(!key_mode_ok(0o640, 991, 990));
        assert!(!key_mode_ok(0o640, 0, 0));
        assert!(!key_mode_ok(0o660, 990, 990));
        assert!(!key_mode_ok(0o644, 990, 990));
        assert!(!key_mode_ok(0o604, 990, 990));
        // On disk, with this process's own group (as root: the group metalvpc's, when there
        // is one).
        let dir = std::env::temp_dir().join(format!("mvpc-keygroup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cfg, key) = (dir.join("x.toml"), dir.join("k"));
        std::fs::write(&key, PrivateKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        // SAFETY: getegid has no preconditions.
        let own = unsafe { libc::getegid() };
        if own == 0 {
            // Group root: refused, with the fix.
            let err = load_private_key(&cfg, &key).unwrap_err().to_string();
            assert!(err.contains("group is the daemon's"), "{err}");
            assert!(err.contains("chown metalvpc:metalvpc"), "{err}");
            // Group metalvpc, for root's commands, where the package made it.
            if let Some(g) = group_id(DAEMON_GROUP) {
                std::os::unix::fs::chown(&key, None, Some(g)).unwrap();
                load_private_key(&cfg, &key).unwrap();
            }
        } else {
            load_private_key(&cfg, &key).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let m: SocketAddr = "[::ffff:198.18.0.1]:7654".parse().unwrap();
        assert_eq!(canonical(m), "198.18.0.1:7654".parse().unwrap());
        assert_eq!(for_socket(true, "198.18.0.1:7654".parse().unwrap()), m);
    }
}
