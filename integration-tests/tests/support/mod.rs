//! Shared by the systemd and packaging tests: skipping, scratch directories, and a real
//! systemd booted as PID 1 of a volatile systemd-nspawn container over this machine's /usr.

#![allow(dead_code)]

use metalvpc_integration_tests::{cleanup, run_timeout, unique_prefix, CmdOutput};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Prints a loud SKIPPED line and returns false, or panics under METALVPC_REQUIRE_NETNS=1.
pub fn skip(test: &str, why: &str) -> bool {
    if std::env::var("METALVPC_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("METALVPC_REQUIRE_NETNS=1 but {test} cannot run: {why}");
    }
    let msg = format!("\n*** SKIPPED ({why}): {test} ***\n");
    // SAFETY: writing a valid buffer to stderr (visible even when the harness captures).
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    println!("SKIPPED ({why}): {test}");
    false
}

pub fn have(cmd: &str) -> bool {
    run_timeout(
        Command::new("sh").args(["-c", &format!("command -v {cmd}")]),
        Duration::from_secs(5),
    )
    .success()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch directory removed on drop (and on Ctrl-C).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{}-{tag}", unique_prefix()));
        std::fs::create_dir_all(&p).unwrap();
        cleanup::register_dir(p.clone());
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        cleanup::unregister_dir(&self.0);
    }
}

// ------------------------------------------------------------------------------------------
// A real systemd in a container

/// systemd as PID 1 of a volatile systemd-nspawn container; powered off on drop.
pub struct Container {
    nspawn: Child,
    /// PID (on the host) of the container's systemd.
    pub leader: u32,
    machine: String,
    console: PathBuf,
}

impl Container {
    /// Boots `systemd.unit=mvtest.target` (basic.target and nothing else) with the extra
    /// `--bind-ro` mounts and systemd-nspawn options given.
    pub fn boot(machine: &str, dir: &Path, binds: &[(PathBuf, &str)], extra: &[&str]) -> Container {
        let target = dir.join("mvtest.target");
        std::fs::write(
            &target,
            "[Unit]\nDescription=metalvpc test boot\nRequires=basic.target\nAfter=basic.target\n",
        )
        .unwrap();
        let console = dir.join("console.log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--directory=/",
            "--volatile=yes",
            "--overlay=/etc::/etc",
            "--overlay=/usr::/usr",
            "--private-network",
        ])
        .arg(format!("--machine={machine}"))
        .arg(format!(
            "--bind-ro={}:/etc/systemd/system/mvtest.target",
            target.display()
        ));
        for (host, inside) in binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        cmd.args(extra);
        cmd.args(["--boot", "--", "systemd.unit=mvtest.target"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console).unwrap())
            .stderr(std::fs::File::create(dir.join("nspawn.err")).unwrap());
        let nspawn = cmd.spawn().expect("spawning systemd-nspawn");
        cleanup::register_pid(nspawn.id());
        let mut c = Container {
            nspawn,
            leader: 0,
            machine: machine.to_string(),
            console,
        };
        // The container's PID 1 is the child of systemd-nspawn that has become systemd.
        let start = Instant::now();
        while c.leader == 0 && start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(st)) = c.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited at once ({st}): {}\n{}",
                    std::fs::read_to_string(dir.join("nspawn.err")).unwrap_or_default(),
                    c.console_tail()
                );
            }
            for pid in children(c.nspawn.id()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    c.leader = pid;
                    cleanup::register_pid(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            c.leader != 0,
            "no systemd in the container\n{}",
            c.console_tail()
        );
        // Until systemd has set up its private socket, systemctl cannot connect at all.
        let mut state = c.run(&["true"], Duration::from_secs(5));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            state = c.run(
                &["systemctl", "is-system-running", "--wait"],
                Duration::from_secs(90),
            );
            if !state.stdout.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let s = state.stdout.trim();
        assert!(
            s == "running" || s == "degraded",
            "the container's systemd did not finish booting: {state:#?}\n{}",
            c.console_tail()
        );
        if s == "degraded" {
            println!(
                "container is degraded (units failed that are not ours):\n{}",
                c.run(
                    &["systemctl", "--failed", "--no-pager"],
                    Duration::from_secs(10)
                )
                .stdout
            );
        }
        c
    }

    /// Runs a command inside the container (all its namespaces).
    pub fn run(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        run_timeout(
            Command::new("nsenter")
                .args(["-t", &self.leader.to_string(), "-a", "--"])
                .args(args),
            timeout,
        )
    }

    /// `systemctl show -p <prop> --value <unit>`.
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.run(
            &["systemctl", "show", "-p", prop, "--value", unit],
            Duration::from_secs(10),
        )
        .stdout
        .trim()
        .to_string()
    }

    pub fn journal(&self, unit: &str) -> String {
        self.run(
            &["journalctl", "-u", unit, "--no-pager", "-o", "cat"],
            Duration::from_secs(20),
        )
        .stdout
    }

    /// Waits until `cond` holds, up to `timeout`; the time it took.
    pub fn wait(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&Container) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if cond(self) {
                return Some(start.elapsed());
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM makes systemd-nspawn power the container off cleanly.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.nspawn.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.leader != 0 {
            // Killing PID 1 of the container kills everything in it; a no-op if it is gone.
            // SAFETY: the container's init, which this test started.
            unsafe { libc::kill(self.leader as libc::pid_t, libc::SIGKILL) };
            cleanup::unregister_pid(self.leader);
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        cleanup::unregister_pid(self.nspawn.id());
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.machine));
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}
