//! systemd integration without libsystemd: the `sd_notify(3)` datagram protocol (readiness,
//! reload, stop, status text) and the service watchdog.
//!
//! systemd passes `NOTIFY_SOCKET` (a Unix datagram socket path; a leading `@` means an
//! abstract socket) to `Type=notify` services, and `WATCHDOG_USEC` (plus `WATCHDOG_PID`) when
//! `WatchdogSec=` is set. Outside systemd none of these exist and every call here does nothing,
//! so the daemons call them unconditionally.
//!
//! The poll loops use [`Service`]: it caps the poll timeout so the watchdog is pinged at half
//! its interval, sends `READY=1` once the daemon says it is ready, and refreshes `STATUS=`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Where notifications go: the parsed `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file.
    Path(std::path::PathBuf),
    /// An abstract socket (the name without the leading `@` / NUL).
    Abstract(Vec<u8>),
}

impl NotifyTarget {
    /// Parses a `$NOTIFY_SOCKET` value; `None` for an empty or unsupported one (systemd also
    /// allows `vsock:`, which a daemon on the host never gets).
    pub fn parse(value: &std::ffi::OsStr) -> Option<NotifyTarget> {
        use std::os::unix::ffi::OsStrExt;
        let b = value.as_bytes();
        match b.first()? {
            b'/' => Some(NotifyTarget::Path(std::path::PathBuf::from(value))),
            b'@' if b.len() > 1 => Some(NotifyTarget::Abstract(b[1..].to_vec())),
            _ => None,
        }
    }
}

/// Sends `sd_notify` messages. Cheap to keep; every send is one datagram.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, NotifyTarget)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a notifier that does nothing when it is unset or unusable.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|v| NotifyTarget::parse(&v));
        Notifier::to(target)
    }

    /// A notifier sending to `target` (`None`: does nothing).
    pub fn to(target: Option<NotifyTarget>) -> Notifier {
        Notifier {
            target: target.and_then(|t| UnixDatagram::unbound().ok().map(|s| (s, t))),
        }
    }

    /// True when there is a service manager to talk to.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (`KEY=value` lines). Errors are returned for tests; the daemons
    /// ignore them, as `sd_notify` callers do: a lost notification must not stop the service.
    pub fn send(&self, message: &str) -> std::io::Result<()> {
        let Some((sock, target)) = &self.target else {
            return Ok(());
        };
        let sent = match target {
            NotifyTarget::Path(p) => sock.send_to(message.as_bytes(), p),
            NotifyTarget::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr)
            }
        }?;
        if sent != message.len() {
            return Err(std::io::Error::other("short write to NOTIFY_SOCKET"));
        }
        Ok(())
    }

    /// `READY=1`: start-up finished (also ends a reload).
    pub fn ready(&self, status: &str) {
        let _ = self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (what `Type=notify-reload` in systemd ≥ 253
    /// requires; older versions ignore the extra field). Send [`Notifier::ready`] when done.
    pub fn reloading(&self) {
        let _ = self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`: the daemon is shutting down.
    pub fn stopping(&self) {
        let _ = self.send("STOPPING=1");
    }

    /// `STATUS=…`: the one line `systemctl status` shows.
    pub fn status(&self, text: &str) {
        let _ = self.send(&format!("STATUS={}", one_line(text)));
    }

    /// `WATCHDOG=1`: the daemon is alive.
    pub fn watchdog_ping(&self) {
        let _ = self.send("WATCHDOG=1");
    }
}

/// A status text is one line; newlines would start a new field.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The watchdog interval systemd expects pings within, from `WATCHDOG_USEC` and
/// `WATCHDOG_PID` (`None`: no watchdog for this process).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] on given values: `usec` must be a positive integer, and `pid`, when
/// set, must be ours (otherwise the variables were meant for another process).
pub fn watchdog_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// How often [`Service`] refreshes `STATUS=` when there is no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The daemon side of a `Type=notify` service with a watchdog, for a poll loop:
///
/// ```ignore
/// let mut sd = Service::from_env();
/// loop {
///     let timeout = sd.cap_timeout(timeout);            // poll no longer than the ping is due
///     /* poll, handle */
///     sd.tick(|| (is_ready(), status_line()));           // READY=1 once, pings, STATUS=
/// }
/// sd.stopping();
/// ```
#[derive(Debug)]
pub struct Service {
    notifier: Notifier,
    watchdog: Option<Duration>,
    ready: bool,
    ticked: bool,
    last_status: String,
    next_ping: Instant,
    next_status: Instant,
}

impl Service {
    /// From the environment systemd gives a service (does nothing outside systemd).
    pub fn from_env() -> Service {
        Service::new(Notifier::from_env(), watchdog_interval())
    }

    /// With an explicit notifier and watchdog interval.
    pub fn new(notifier: Notifier, watchdog: Option<Duration>) -> Service {
        let now = Instant::now();
        Service {
            notifier,
            watchdog,
            ready: false,
            ticked: false,
            last_status: String::new(),
            next_ping: now,
            next_status: now,
        }
    }

    /// The notifier, for one-off messages (`reloading()` around a reload).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// True once `READY=1` was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The interval the watchdog is pinged at: half of systemd's `WatchdogSec`.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)))
    }

    /// `timeout`, shortened so the loop wakes up when the next watchdog ping is due (and
    /// zero before the first [`Service::tick`], so a daemon ready at once says so at once).
    pub fn cap_timeout(&self, timeout: Duration) -> Duration {
        if !self.notifier.enabled() {
            return timeout;
        }
        if !self.ticked {
            return Duration::ZERO;
        }
        if self.watchdog.is_none() {
            return timeout;
        }
        timeout.min(self.next_ping.saturating_duration_since(Instant::now()))
    }

    /// Once per loop iteration. `state` answers (ready?, status line) and is only called
    /// under systemd: every iteration until ready, then when the status is due. A status
    /// line is sent only when it changed.
    pub fn tick(&mut self, state: impl FnOnce() -> (bool, String)) {
        if !self.notifier.enabled() {
            return;
        }
        self.ticked = true;
        let now = Instant::now();
        if !self.ready || now >= self.next_status {
            let (ready, text) = state();
            if ready && !self.ready {
                self.ready = true;
                self.notifier.ready(&text);
            } else if text != self.last_status {
                self.notifier.status(&text);
            }
            self.last_status = text;
            self.next_status = now + self.ping_every().unwrap_or(STATUS_EVERY).min(STATUS_EVERY);
        }
        if let Some(every) = self.ping_every() {
            if now >= self.next_ping {
                self.notifier.watchdog_ping();
                self.next_ping = now + every;
            }
        }
    }

    /// Around a reload (SIGHUP): `RELOADING=1` now, `READY=1` from [`Service::reloaded`].
    /// Nothing before the first `READY=1`: a reload must not declare readiness early.
    pub fn reloading(&self) {
        if self.ready {
            self.notifier.reloading();
        }
    }

    /// The reload is over (applied or refused): `READY=1` again.
    pub fn reloaded(&self) {
        if self.ready {
            self.notifier.ready(&self.last_status);
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notifier.stopping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// A datagram socket standing in for systemd's notify socket.
    struct FakeSystemd {
        sock: UnixDatagram,
        dir: std::path::PathBuf,
    }

    impl FakeSystemd {
        fn new(tag: &str) -> (FakeSystemd, NotifyTarget) {
            let dir = std::env::temp_dir().join(format!("mvpc-sd-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify");
            let _ = std::fs::remove_file(&path);
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            (FakeSystemd { sock, dir }, NotifyTarget::Path(path))
        }
        fn recv(&self) -> String {
            let mut b = [0u8; 4096];
            let n = self.sock.recv(&mut b).expect("a notification");
            String::from_utf8(b[..n].to_vec()).unwrap()
        }
        fn pending(&self) -> Vec<String> {
            self.sock.set_nonblocking(true).unwrap();
            let mut v = Vec::new();
            let mut b = [0u8; 4096];
            while let Ok(n) = self.sock.recv(&mut b) {
                v.push(String::from_utf8(b[..n].to_vec()).unwrap());
            }
            self.sock.set_nonblocking(false).unwrap();
            v
        }
    }

    impl Drop for FakeSystemd {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn parses_notify_socket_values() {
        let p = |s: &str| NotifyTarget::parse(std::ffi::OsStr::from_bytes(s.as_bytes()));
        assert_eq!(
            p("/run/systemd/notify"),
            Some(NotifyTarget::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            p("@/org/x"),
            Some(NotifyTarget::Abstract(b"/org/x".to_vec()))
        );
        assert_eq!(p(""), None);
        assert_eq!(p("@"), None);
        assert_eq!(p("vsock:2:1234"), None);
        assert_eq!(p("relative/path"), None);
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let (sd, target) = FakeSystemd::new("path");
        let n = Notifier::to(Some(target));
        assert!(n.enabled());
        n.ready("registered\nwith 1");
        assert_eq!(sd.recv(), "READY=1\nSTATUS=registered with 1");
        n.status("3 peers");
        assert_eq!(sd.recv(), "STATUS=3 peers");
        n.watchdog_ping();
        assert_eq!(sd.recv(), "WATCHDOG=1");
        let before = monotonic_usec();
        n.reloading();
        let msg = sd.recv();
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{msg}"))
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec(), "{usec}");
        n.stopping();
        assert_eq!(sd.recv(), "STOPPING=1");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mvpc-sd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = NotifyTarget::parse(std::ffi::OsStr::new(&format!("@{name}")));
        let n = Notifier::to(target);
        n.ready("up");
        let mut b = [0u8; 256];
        let len = sock.recv(&mut b).unwrap();
        assert_eq!(&b[..len], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn without_systemd_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::to(None);
        assert!(!n.enabled());
        n.ready("x");
        n.send("READY=1").unwrap();
        let mut s = Service::new(n, Some(Duration::from_secs(1)));
        let mut called = false;
        s.tick(|| {
            called = true;
            (true, String::new())
        });
        assert!(!called, "no state is computed outside systemd");
        assert_eq!(
            s.cap_timeout(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_vanished_socket_is_an_error_not_a_panic() {
        let (sd, target) = FakeSystemd::new("gone");
        drop(sd);
        let n = Notifier::to(Some(target));
        assert!(n.send("READY=1").is_err());
        n.ready("still fine");
    }

    #[test]
    fn watchdog_interval_rules() {
        assert_eq!(
            watchdog_from(Some("4000000"), None, 7),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            watchdog_from(Some("4000000"), Some("7"), 7),
            Some(Duration::from_secs(4))
        );
        assert_eq!(watchdog_from(Some("4000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("4000000"), Some("junk"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("-5"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn service_sends_ready_once_then_pings_at_half_the_interval() {
        let (sd, target) = FakeSystemd::new("svc");
        let mut s = Service::new(Notifier::to(Some(target)), Some(Duration::from_millis(400)));
        assert_eq!(s.ping_every(), Some(Duration::from_millis(200)));
        assert_eq!(s.cap_timeout(Duration::from_secs(60)), Duration::ZERO);
        // Not ready yet: a status line and the first watchdog ping, no READY.
        s.tick(|| (false, "registering with 198.18.0.1:7654".into()));
        assert_eq!(
            sd.pending(),
            vec!["STATUS=registering with 198.18.0.1:7654", "WATCHDOG=1"]
        );
        // The same status again is not repeated.
        s.tick(|| (false, "registering with 198.18.0.1:7654".into()));
        assert!(sd.pending().is_empty());
        // The poll timeout is capped by the next ping.
        assert!(s.cap_timeout(Duration::from_secs(60)) <= Duration::from_millis(200));
        // Ready: READY=1 exactly once.
        s.tick(|| (true, "registered".into()));
        assert!(s.is_ready());
        assert_eq!(sd.pending(), vec!["READY=1\nSTATUS=registered"]);
        s.tick(|| panic!("state is not recomputed before the status is due"));
        assert!(sd.pending().is_empty());
        // After the ping interval: another ping and a status refresh, no second READY.
        std::thread::sleep(Duration::from_millis(220));
        s.tick(|| (true, "registered, 2 peers".into()));
        assert_eq!(
            sd.pending(),
            vec!["STATUS=registered, 2 peers", "WATCHDOG=1"]
        );
        s.reloading();
        s.reloaded();
        let msgs = sd.pending();
        assert!(
            msgs[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{msgs:?}"
        );
        assert_eq!(msgs[1], "READY=1\nSTATUS=registered, 2 peers");
        s.stopping();
        assert_eq!(sd.recv(), "STOPPING=1");
    }

    #[test]
    fn a_reload_before_ready_says_nothing() {
        let (sd, target) = FakeSystemd::new("early");
        let mut s = Service::new(Notifier::to(Some(target)), None);
        s.tick(|| (false, "registering".into()));
        assert_eq!(sd.pending(), vec!["STATUS=registering"]);
        s.reloading();
        s.reloaded();
        assert!(
            sd.pending().is_empty(),
            "no READY=1 before the daemon is ready"
        );
    }
}
