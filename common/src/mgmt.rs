//! The management endpoint of both daemons: `GET /status` (JSON) and `GET /metrics`
//! (Prometheus) over a Unix socket (default) or TCP, and the client `status` uses.
//!
//! * Access: a Unix socket is guarded by its file permissions (mode 660 in `/run/metalvpc`).
//!   TCP has none of its own, so config loading refuses a TCP address outside loopback
//!   unless `management_token_file` names a token (mode 600); when a token is configured,
//!   every TCP request must carry it (`Authorization: Bearer <token>`, compared in constant
//!   time) or is answered 401. `status` reads the token from the same config.
//! * Concurrency: each connection is served on its own thread, at most [`MAX_CONNECTIONS`] at
//!   once (more are closed at once), and its request head must arrive within
//!   [`HEAD_DEADLINE`] (the answer must be taken within as long), so a slow or stalled
//!   client holds one thread for two seconds, never the others.
//! * The poll loop answers: a request is handed over on a channel with a wake-up, so the
//!   loop owns all state and nothing is locked.

use crate::source::Source;
use crate::{relative_to, report, WakeHandle};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Connections served at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 32;
/// A request head must be complete this long after the connection was accepted (and the
/// answer is written within as long).
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// The shortest token accepted in `management_token_file`.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where a management endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MgmtAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address (loopback, unless a token is configured).
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

impl MgmtRequest {
    /// Answers from the daemon's report: `/status` as its JSON, `/metrics` as the Prometheus
    /// page `metrics` renders from the same report. `report` runs only for those two paths.
    pub fn answer<R: serde::Serialize>(
        self,
        report: impl FnOnce() -> R,
        metrics: impl FnOnce(&R) -> String,
    ) {
        let reply = match self.path.as_str() {
            "/status" | "/status.json" => match report::to_json(&report()) {
                Ok(json) => (200, "application/json", json),
                Err(e) => (500, "text/plain", format!("status: {e}\n")),
            },
            "/metrics" => (200, "text/plain; version=0.0.4", metrics(&report())),
            _ => (
                404,
                "text/plain",
                "unknown path; try /status or /metrics\n".to_string(),
            ),
        };
        let _ = self.reply.send(reply);
    }
}

/// The `status` command of both daemons: asks the daemon behind `mgmt` for `/status` and
/// prints its JSON as is (`--json`) or, read back into the daemon's report type, as the
/// `table`. When no daemon answers, an error in the config itself is the more useful answer
/// (it names the key), since a daemon could not have started with it: `load_config` checks.
pub fn status_command<R: serde::de::DeserializeOwned>(
    mgmt: &MgmtAddr,
    config: &Path,
    load_config: impl FnOnce() -> Result<()>,
    as_json: bool,
    table: impl FnOnce(&R) -> String,
) -> Result<()> {
    let body = query_management(mgmt, "/status", config).map_err(|e| match load_config() {
        Err(config_error) => config_error,
        Ok(()) => e,
    })?;
    if as_json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let report: R = serde_json::from_str(&body)?;
    print!("{}", table(&report));
    Ok(())
}

impl MgmtAddr {
    /// True for a Unix socket and for a TCP address on loopback (127.0.0.0/8, ::1).
    pub fn is_local(&self) -> bool {
        match self {
            MgmtAddr::Unix(_) => true,
            MgmtAddr::Tcp(a) => crate::canonical(*a).ip().is_loopback(),
        }
    }
}

/// The bearer token of a TCP management endpoint (`management_token_file`). Its bytes are
/// never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MgmtToken(Vec<u8>);

impl std::fmt::Debug for MgmtToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MgmtToken(..)")
    }
}

impl MgmtToken {
    /// A token from its text (surrounding whitespace, such as a final newline, removed).
    pub fn from_text(bytes: &[u8]) -> Option<MgmtToken> {
        let t = bytes.trim_ascii();
        (t.len() >= MIN_TOKEN_LEN && t.iter().all(|b| b.is_ascii_graphic()))
            .then(|| MgmtToken(t.to_vec()))
    }

    /// True if `given` is the token. The time taken depends on the length of `given` only,
    /// never on where it differs from the token or on the token's length.
    pub fn matches(&self, given: &[u8]) -> bool {
        let t = &self.0;
        let mut diff = u8::from(given.len() != t.len());
        for (i, b) in given.iter().enumerate() {
            diff |= b ^ t[i % t.len()];
        }
        std::hint::black_box(diff) == 0
    }

    /// The token, for the client's `Authorization` header.
    fn as_text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// The `management_token_file` key of a config `path` (resolved against it): reads and checks
/// the token, and refuses a TCP `management` address outside loopback without one. Errors
/// name the file, the key and the fix.
pub fn management_token(
    path: &Path,
    management: &MgmtAddr,
    token_file: Option<&str>,
    source: &dyn Source,
) -> Result<Option<MgmtToken>> {
    let f = path.display();
    let Some(file) = token_file else {
        if !management.is_local() {
            bail!(
                "{f}: key `management` = \"{management}\" is not a loopback address, and the management endpoint has no authentication of its own: keep it on 127.0.0.1 or ::1 (or a unix socket), or set `management_token_file` to a file (mode 600) holding a token of at least {MIN_TOKEN_LEN} characters, which clients send as `Authorization: Bearer <token>`"
            );
        }
        return Ok(None);
    };
    let p = relative_to(path, file);
    let (bytes, mode) = source.secret(&p).map_err(|e| {
        anyhow!(
            "{f}: key `management_token_file` = \"{file}\": cannot read {}: {e}",
            p.display()
        )
    })?;
    if mode & 0o077 != 0 {
        bail!(
            "{f}: key `management_token_file` = \"{file}\": {} can be read by group or others (mode {:o}); chmod 600 {}",
            p.display(),
            mode & 0o777,
            p.display()
        );
    }
    MgmtToken::from_text(&bytes).map(Some).ok_or_else(|| {
        anyhow!(
            "{f}: key `management_token_file` = \"{file}\": {} must hold one token of at least {MIN_TOKEN_LEN} printable characters (e.g. `openssl rand -hex 32 > {}`)",
            p.display(),
            p.display()
        )
    })
}

/// The token a client sends to the endpoint of config `config`: its `management_token_file`,
/// if any (a config that does not parse has none: the error comes from the connection).
fn client_token(config: &Path) -> Result<Option<MgmtToken>> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Ok(None);
    };
    let Ok(table) = toml::from_str::<toml::Table>(&text) else {
        return Ok(None);
    };
    let Some(file) = table.get("management_token_file").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let p = relative_to(config, file);
    let bytes = crate::read_bounded(&p, 4096).with_context(|| {
        format!(
            "{}: key `management_token_file`: cannot read {} (run as its owner, e.g. with sudo)",
            config.display(),
            p.display()
        )
    })?;
    Ok(MgmtToken::from_text(&bytes))
}

/// Starts the management server on a thread. Requests are handed to the poll loop through
/// the returned receiver (and a wake-up). `token`: what TCP requests must carry.
pub fn serve_management(
    addr: &MgmtAddr,
    token: Option<MgmtToken>,
    waker: WakeHandle,
) -> Result<mpsc::Receiver<MgmtRequest>> {
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
            spawn_server(move || listener.accept().map(|(s, _)| s), None, tx, waker)?;
        }
        MgmtAddr::Tcp(sa) => {
            let listener = std::net::TcpListener::bind(sa)
                .with_context(|| format!("binding management address {sa}"))?;
            serve_tcp(listener, token, tx, waker)?;
        }
    }
    Ok(rx)
}

/// Serves a bound TCP listener (see [`serve_management`]).
fn serve_tcp(
    listener: std::net::TcpListener,
    token: Option<MgmtToken>,
    tx: mpsc::Sender<MgmtRequest>,
    waker: WakeHandle,
) -> Result<()> {
    spawn_server(move || listener.accept().map(|(s, _)| s), token, tx, waker)
}

/// The accept thread: one thread per connection, at most [`MAX_CONNECTIONS`] at once.
fn spawn_server<C: Conn + Send + 'static>(
    mut accept: impl FnMut() -> std::io::Result<C> + Send + 'static,
    token: Option<MgmtToken>,
    tx: mpsc::Sender<MgmtRequest>,
    waker: WakeHandle,
) -> Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    let token = token.map(Arc::new);
    std::thread::Builder::new()
        .name("mgmt".into())
        .spawn(move || loop {
            let conn = match accept() {
                Ok(c) => c,
                Err(_) => {
                    // Out of descriptors, or the like: try again shortly, without spinning.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                continue; // closed as it drops
            }
            let (tx, token, done) = (tx.clone(), token.clone(), active.clone());
            let spawned = std::thread::Builder::new()
                .name("mgmt-conn".into())
                .spawn(move || {
                    handle_conn(conn, &tx, waker, token.as_deref());
                    done.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::SeqCst);
            }
        })?;
    Ok(())
}

trait Conn: Read + Write {
    fn set_read_deadline(&self, d: Duration);
    fn set_write_deadline(&self, d: Duration);
}
impl Conn for UnixStream {
    fn set_read_deadline(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
    fn set_write_deadline(&self, d: Duration) {
        let _ = self.set_write_timeout(Some(d));
    }
}
impl Conn for std::net::TcpStream {
    fn set_read_deadline(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
    fn set_write_deadline(&self, d: Duration) {
        let _ = self.set_write_timeout(Some(d));
    }
}

/// A request head is read until its blank line or until it holds this many bytes.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// The longest request head [`parse_request`] looks at: [`MAX_REQUEST_HEAD`] plus one more
/// read of the connection's 512-byte buffer. Anything longer is refused.
pub const MAX_REQUEST_BYTES: usize = MAX_REQUEST_HEAD + 512;
/// The longest path a request may ask for.
pub const MAX_REQUEST_PATH: usize = 256;

/// A management request that [`parse_request`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path asked for, e.g. `/status`: starts with `/`, at most [`MAX_REQUEST_PATH`] bytes.
    pub path: String,
}

/// A request head that is not `GET /path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRequest;

/// Parses the head of a management request (HTTP/1.0 style: `GET /status HTTP/1.0`).
/// Only the first line matters: the method must be `GET` and the path must start with `/`
/// and be at most [`MAX_REQUEST_PATH`] bytes. Invalid UTF-8 is read lossily. Pure and
/// bounded: a head longer than [`MAX_REQUEST_BYTES`] is refused, and nothing but the path
/// is allocated.
pub fn parse_request(head: &[u8]) -> Result<Request, BadRequest> {
    if head.len() > MAX_REQUEST_BYTES {
        return Err(BadRequest);
    }
    let first = match head.iter().position(|&b| b == b'\n') {
        Some(i) => &head[..i],
        None => head,
    };
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text = String::from_utf8_lossy(first);
    let mut parts = text.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" || !path.starts_with('/') || path.len() > MAX_REQUEST_PATH {
        return Err(BadRequest);
    }
    Ok(Request {
        path: path.to_string(),
    })
}

/// A request head read as it arrives, in chunks of any size: it ends at the first blank line
/// (`\r\n\r\n` or `\n\n`) or after [`MAX_REQUEST_HEAD`] bytes, and bytes after that are
/// ignored, so the head (and what [`parse_request`] makes of it) does not depend on how the
/// client's bytes were split.
#[derive(Default)]
pub struct HeadReader {
    head: Vec<u8>,
    done: bool,
}

impl HeadReader {
    /// Adds the next bytes; returns true once the head is complete.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            if self.done {
                break;
            }
            self.head.push(b);
            self.done = self.head.len() >= MAX_REQUEST_HEAD
                || self.head.ends_with(b"\r\n\r\n")
                || self.head.ends_with(b"\n\n");
        }
        self.done
    }

    /// The head so far.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// True once the head is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// The token of an `Authorization: Bearer <token>` header in a request head (the header name
/// and the scheme in any case), if there is one.
pub fn bearer_token(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if !name.trim_ascii().eq_ignore_ascii_case(b"authorization") || value.len() < 7 {
            return None;
        }
        let (scheme, token) = value.split_at(7);
        scheme
            .eq_ignore_ascii_case(b"bearer ")
            .then(|| token.trim_ascii())
    })
}

/// What a request gets, before the daemon is asked: a refusal, or the path to answer.
pub fn check_request(
    head: &[u8],
    token: Option<&MgmtToken>,
) -> Result<String, (u16, &'static str)> {
    let Ok(Request { path }) = parse_request(head) else {
        return Err((400, "bad request: use GET /status\n"));
    };
    if let Some(t) = token {
        if !bearer_token(head).is_some_and(|given| t.matches(given)) {
            return Err((
                401,
                "unauthorized: send Authorization: Bearer <the token in management_token_file>\n",
            ));
        }
    }
    Ok(path)
}

/// Reads the request head within [`HEAD_DEADLINE`], answers one request, closes. `token`:
/// what the request must carry (TCP only).
fn handle_conn(
    mut conn: impl Conn,
    tx: &mpsc::Sender<MgmtRequest>,
    waker: WakeHandle,
    token: Option<&MgmtToken>,
) {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut reader = HeadReader::default();
    let mut buf = [0u8; 512];
    let mut timed_out = false;
    while !reader.is_done() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        conn.set_read_deadline(left);
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reader.feed(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                timed_out = true;
                break;
            }
            Err(_) => return,
        }
    }
    let (code, ctype, body) = match check_request(reader.head(), token) {
        _ if timed_out => (
            408,
            "text/plain",
            "request timeout: send the request head within 2 s\n".to_string(),
        ),
        Err((code, msg)) => (code, "text/plain", msg.to_string()),
        Ok(path) => {
            let (rtx, rrx) = mpsc::channel();
            if tx.send(MgmtRequest { path, reply: rtx }).is_err() {
                return;
            }
            waker.wake();
            match rrx.recv_timeout(Duration::from_secs(5)) {
                Ok(x) => x,
                Err(_) => (503, "text/plain", "daemon busy\n".to_string()),
            }
        }
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let challenge = if code == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    conn.set_write_deadline(HEAD_DEADLINE);
    let _ = write!(
        conn,
        "HTTP/1.0 {code} {reason}\r\n{challenge}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Asks a running daemon for `path`; returns the body. Over TCP it sends the token of the
/// config's `management_token_file`, if it names one.
pub fn query_management(addr: &MgmtAddr, path: &str, config: &Path) -> Result<String> {
    let hint = || {
        format!(
            "cannot reach the daemon's management socket {addr} (from `management` in {}). Is the daemon \
             running with this config? (systemctl status, or start it with `run --config {}`)",
            config.display(),
            config.display()
        )
    };
    let mut request = format!("GET {path} HTTP/1.0\r\n");
    let mut response = Vec::new();
    match addr {
        MgmtAddr::Unix(p) => {
            request.push_str("\r\n");
            let mut s = UnixStream::connect(p).with_context(hint)?;
            s.set_read_deadline(Duration::from_secs(10));
            s.set_write_deadline(Duration::from_secs(10));
            s.write_all(request.as_bytes())?;
            s.take(64 << 20).read_to_end(&mut response)?;
        }
        MgmtAddr::Tcp(a) => {
            if let Some(t) = client_token(config)? {
                request.push_str(&format!("Authorization: Bearer {}\r\n", t.as_text()));
            }
            request.push_str("\r\n");
            let mut s = std::net::TcpStream::connect_timeout(a, Duration::from_secs(3))
                .with_context(hint)?;
            s.set_read_deadline(Duration::from_secs(10));
            s.set_write_deadline(Duration::from_secs(10));
            s.write_all(request.as_bytes())?;
            s.take(64 << 20).read_to_end(&mut response)?;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed answer from {addr}")
    };
    if !head.starts_with("HTTP/1.0 200") {
        let line = head.lines().next().unwrap_or("");
        if line.starts_with("HTTP/1.0 401") {
            bail!("{addr} answered: {line}: set `management_token_file` in {} to the daemon's token file", config.display());
        }
        bail!("{addr} answered: {line}");
    }
    Ok(body.to_string())
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
    fn request_parser_accepts_get_with_a_path_only() {
        let ok = |p: &str| {
            Ok(Request {
                path: p.to_string(),
            })
        };
        assert_eq!(
            parse_request(b"GET /status HTTP/1.0\r\n\r\n"),
            ok("/status")
        );
        assert_eq!(parse_request(b"GET /status\n\n"), ok("/status"));
        assert_eq!(parse_request(b"GET /status"), ok("/status"));
        assert_eq!(
            parse_request(b"  GET \t /x?y=1  HTTP/1.0\r\n"),
            ok("/x?y=1")
        );
        // Only the first line counts.
        assert_eq!(parse_request(b"GET /a\r\nPOST /b\r\n\r\n"), ok("/a"));
        assert_eq!(parse_request(b"GET /\xff\r\n"), ok("/\u{fffd}"));
        let bad = [
            &b""[..],
            b"\r\n\r\n",
            b"POST /status HTTP/1.0\r\n\r\n",
            b"get /status\r\n",
            b"GET status\r\n",
            b"GET\r\n/status\r\n",
            b"GET\xff /status\r\n",
        ];
        for b in bad {
            assert_eq!(
                parse_request(b),
                Err(BadRequest),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        // The path limit, in bytes.
        let path = format!("/{}", "a".repeat(MAX_REQUEST_PATH - 1));
        assert_eq!(parse_request(format!("GET {path}").as_bytes()), ok(&path));
        let long = format!("GET {path}a HTTP/1.0\r\n\r\n");
        assert_eq!(parse_request(long.as_bytes()), Err(BadRequest));
        // The size bound: a head the connection could not have read is refused whole.
        let mut head = b"GET /status\r\n".to_vec();
        head.resize(MAX_REQUEST_BYTES, b'x');
        assert_eq!(parse_request(&head), ok("/status"));
        head.push(b'x');
        assert_eq!(parse_request(&head), Err(BadRequest));
    }

    /// A management server on a loopback port whose "loop" answers every request at once
    /// with `{"ok":true}`; its address.
    fn server(token: Option<MgmtToken>) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel::<MgmtRequest>();
        serve_tcp(l, token, tx, WakeHandle(-1)).unwrap();
        std::thread::spawn(move || {
            for req in rx {
                req.answer(|| serde_json::json!({ "ok": true }), |_| String::new());
            }
        });
        addr
    }

    /// Sends `request` raw; the whole answer.
    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn a_trickling_client_does_not_delay_status_and_is_cut_off_after_2_s() {
        let addr = server(None);
        // One byte every 150 ms for 1.8 s, and never the blank line that ends the head.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        let trickler = std::thread::spawn(move || {
            let start = Instant::now();
            for b in b"GET /status " {
                if slow.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            let mut answer = String::new();
            let _ = slow.read_to_string(&mut answer);
            (answer, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            let start = Instant::now();
            let body =
                query_management(&MgmtAddr::Tcp(addr), "/status", Path::new("/none.toml")).unwrap();
            assert!(body.contains("\"ok\":true"), "{body}");
            assert!(
                start.elapsed() < Duration::from_millis(500),
                "status took {:?} while a client trickles",
                start.elapsed()
            );
        }
        let (answer, took) = trickler.join().unwrap();
        assert!(answer.starts_with("HTTP/1.0 408"), "{answer}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn tcp_management_with_a_token_answers_only_requests_that_carry_it() {
        let token = MgmtToken::from_text(b"s3cret-token-0123456789\n").unwrap();
        let addr = server(Some(token));
        let ok = raw(
            addr,
            b"GET /status HTTP/1.0\r\nAuthorization: Bearer s3cret-token-0123456789\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
        let lower = raw(
            addr,
            b"GET /status HTTP/1.0\r\nauthorization: bearer s3cret-token-0123456789\r\n\r\n",
        );
        assert!(lower.starts_with("HTTP/1.0 200"), "{lower}");
        for bad in [
            &b"GET /status HTTP/1.0\r\n\r\n"[..],
            b"GET /metrics HTTP/1.0\r\nAuthorization: Bearer s3cret-token-012345678\r\n\r\n",
            b"GET /status HTTP/1.0\r\nAuthorization: Bearer s3cret-token-01234567890\r\n\r\n",
            b"GET /status HTTP/1.0\r\nAuthorization: Bearer S3cret-token-0123456789\r\n\r\n",
            b"GET /status HTTP/1.0\r\nAuthorization: Basic s3cret-token-0123456789\r\n\r\n",
        ] {
            let got = raw(addr, bad);
            assert!(got.starts_with("HTTP/1.0 401"), "{got}");
            assert!(got.contains("WWW-Authenticate: Bearer"), "{got}");
            assert!(!got.contains("\"ok\""), "{got}");
        }
        // `status` sends the token its config names.
        let dir = crate::testing::TempDir::new("mgmt-token");
        let cfg = dir.write("prod.toml", "management_token_file = \"mgmt.token\"\n");
        dir.write_private("mgmt.token", "s3cret-token-0123456789\n");
        let body = query_management(&MgmtAddr::Tcp(addr), "/status", &cfg).unwrap();
        assert!(body.contains("\"ok\":true"), "{body}");
        let other = dir.write("other.toml", "community = \"prod\"\n");
        let err = query_management(&MgmtAddr::Tcp(addr), "/status", &other).unwrap_err();
        assert!(format!("{err:#}").contains("401"), "{err:#}");
    }

    #[test]
    fn a_tcp_management_address_outside_loopback_is_refused_without_a_token() {
        let dir = crate::testing::TempDir::new("mgmt-cfg");
        let cfg = dir.join("prod.toml");
        let tcp = |a: &str| MgmtAddr::Tcp(a.parse().unwrap());
        let disk = crate::source::Disk;
        for local in ["127.0.0.1:9100", "[::1]:9100", "[::ffff:127.0.0.1]:9100"] {
            assert_eq!(
                management_token(&cfg, &tcp(local), None, &disk).unwrap(),
                None
            );
        }
        let unix = MgmtAddr::Unix("/run/metalvpc/prod.sock".into());
        assert_eq!(management_token(&cfg, &unix, None, &disk).unwrap(), None);
        for public in ["0.0.0.0:9100", "198.18.0.1:9100", "[::]:9100"] {
            let err = management_token(&cfg, &tcp(public), None, &disk)
                .unwrap_err()
                .to_string();
            for needle in [
                "prod.toml",
                "`management`",
                "loopback",
                "management_token_file",
            ] {
                assert!(err.contains(needle), "{needle}: {err}");
            }
        }
        let file = Some("mgmt.token");
        dir.write("mgmt.token", "0123456789abcdef\n");
        let err = management_token(&cfg, &tcp("0.0.0.0:9100"), file, &disk).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        dir.write_private("mgmt.token", "short\n");
        let err = management_token(&cfg, &tcp("0.0.0.0:9100"), file, &disk).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        dir.write_private("mgmt.token", "0123456789abcdef\n");
        let t = management_token(&cfg, &tcp("0.0.0.0:9100"), file, &disk).unwrap();
        assert!(t.unwrap().matches(b"0123456789abcdef"));
        assert_eq!(
            format!("{:?}", MgmtToken::from_text(b"0123456789abcdef")),
            "Some(MgmtToken(..))"
        );
    }

    #[test]
    fn a_request_head_read_in_any_chunks_is_the_same() {
        let req = b"GET /status HTTP/1.0\r\nAuthorization: Bearer abc\r\n\r\ntrailing junk";
        let mut whole = HeadReader::default();
        assert!(whole.feed(req));
        for step in 1..req.len() {
            let mut r = HeadReader::default();
            for c in req.chunks(step) {
                r.feed(c);
            }
            assert!(r.is_done());
            assert_eq!(r.head(), whole.head(), "step {step}");
        }
        assert_eq!(bearer_token(whole.head()), Some(&b"abc"[..]));
        let mut long = HeadReader::default();
        assert!(long.feed(&vec![b'x'; MAX_REQUEST_HEAD + 100]));
        assert_eq!(long.head().len(), MAX_REQUEST_HEAD);
    }
}
