//! Last-resort cleanup on SIGINT/SIGTERM.
//!
//! RAII guards clean up on success and on panic, but a Ctrl-C kills the test process
//! without running destructors. So every namespace, child process and temp dir the harness
//! creates is also recorded here, and a signal handler wakes a watcher thread (through a
//! pipe: the handler itself only does an async-signal-safe `write`) which kills the
//! recorded children, deletes the recorded namespaces and directories, then exits.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

#[derive(Default)]
struct Registry {
    netns: BTreeSet<String>,
    pids: BTreeSet<u32>,
    dirs: BTreeSet<PathBuf>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static INSTALL: Once = Once::new();
static mut PIPE_WR: libc::c_int = -1;

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

pub fn register_netns(name: &str) {
    install();
    with(|r| r.netns.insert(name.to_string()));
}
pub fn unregister_netns(name: &str) {
    with(|r| r.netns.remove(name));
}
pub fn register_pid(pid: u32) {
    install();
    with(|r| r.pids.insert(pid));
}
pub fn unregister_pid(pid: u32) {
    with(|r| r.pids.remove(&pid));
}
pub fn register_dir(p: PathBuf) {
    install();
    with(|r| r.dirs.insert(p));
}
pub fn unregister_dir(p: &PathBuf) {
    with(|r| r.dirs.remove(p));
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // SAFETY: write(2) is async-signal-safe; PIPE_WR is set before the handler is installed.
    unsafe {
        let b = 1u8;
        libc::write(PIPE_WR, &b as *const u8 as *const libc::c_void, 1);
    }
}

/// Installs the SIGINT/SIGTERM handler and its watcher thread (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: plain syscalls on valid pointers; the handler only reads PIPE_WR.
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return;
            }
            PIPE_WR = fds[1];
        }
        let rd = fds[0];
        std::thread::spawn(move || {
            let mut b = 0u8;
            // SAFETY: reading one byte into a local from our own pipe.
            let n = unsafe { libc::read(rd, &mut b as *mut u8 as *mut libc::c_void, 1) };
            if n == 1 {
                eprintln!(
                    "\nmetalvpc-integration-tests: interrupted, cleaning up namespaces and daemons"
                );
                cleanup_all();
                // SAFETY: terminating the process.
                unsafe { libc::_exit(130) };
            }
        });
        // SAFETY: installing a handler that only calls write(2).
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
    });
}

/// Kills every recorded child, deletes every recorded namespace and directory.
pub fn cleanup_all() {
    let (pids, nss, dirs) = with(|r| {
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.netns),
            std::mem::take(&mut r.dirs),
        )
    });
    for pid in pids {
        // SAFETY: signalling a child we spawned and recorded.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    for ns in nss {
        super::netns::kill_netns_pids(&ns);
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
