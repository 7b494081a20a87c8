//! Running child processes with a hard time limit.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a bounded command produced.
#[derive(Debug)]
pub struct CmdOutput {
    /// `None` when the command was killed for running too long (or could not start).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CmdOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }

    /// Panics with the full output unless the command succeeded.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(self.success(), "{what} failed: {self:#?}");
        self
    }
}

/// Runs `cmd` (stdin closed, stdout/stderr captured) and kills it after `timeout`.
/// Never blocks longer than `timeout` plus a moment to reap the child.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    run_with_input(cmd, None, timeout)
}

/// [`run_timeout`] that also feeds `input` to the child's stdin (then closes it).
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> CmdOutput {
    let desc = format!("{cmd:?}");
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = match cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return CmdOutput {
                status: None,
                stdout: String::new(),
                stderr: format!("spawn {desc}: {e}"),
                timed_out: false,
            }
        }
    };
    super::cleanup::register_pid(child.id());
    if let (Some(data), Some(mut w)) = (input, child.stdin.take()) {
        let data = data.to_vec();
        // On a thread: a child that does not read must not block us past the timeout.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = w.write_all(&data);
        });
    }
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    super::cleanup::unregister_pid(child.id());
    // If the child left a grandchild holding the pipes open, do not wait for it forever.
    let join = |t: std::thread::JoinHandle<Vec<u8>>| -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned()
        } else {
            String::from("<output still open after exit>")
        }
    };
    let stdout = join(t_out);
    let mut stderr = join(t_err);
    if timed_out {
        stderr.push_str(&format!("\n<killed after {timeout:?}: {desc}>"));
    }
    CmdOutput {
        status,
        stdout,
        stderr,
        timed_out,
    }
}

/// Runs `args` inside network namespace `ns` (`ip netns exec`), bounded by `timeout`.
pub fn exec_in(ns: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    run_timeout(
        Command::new("ip").args(["netns", "exec", ns]).args(args),
        timeout,
    )
}

/// Runs a `sh -c` script inside network namespace `ns`, bounded by `timeout`.
pub fn sh_in(ns: &str, script: &str, timeout: Duration) -> CmdOutput {
    exec_in(ns, &["sh", "-c", script], timeout)
}

/// Drops every outbound UDP packet of namespace `ns` (nftables), as a network that allows
/// only TCP out does: an edge there must use the TCP fallback.
pub fn block_outbound_udp(ns: &str) {
    let out = sh_in(
        ns,
        "nft -f - <<'N'\ntable inet noudp {\n chain out { type filter hook output priority 0; meta l4proto udp drop; }\n}\nN",
        Duration::from_secs(10),
    );
    assert!(out.success(), "nft: {out:?}");
}

/// Runs `args` in the current namespace, bounded by `timeout`.
pub fn exec(args: &[&str], timeout: Duration) -> CmdOutput {
    run_timeout(Command::new(args[0]).args(&args[1..]), timeout)
}
