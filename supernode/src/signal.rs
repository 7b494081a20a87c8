//! Telling the running supernode to reload (SIGHUP) after an `enrolled` change, without
//! trusting the pid its management endpoint reports: whatever answers there could report any
//! number (-1 would signal every process we may signal). Only a pid above 1 whose process is
//! running this supernode binary (`/proc/<pid>/exe`, or its name) and belongs to the user that
//! owns the management socket (or to us) is signalled; otherwise the command says why and
//! how to reload by hand.

use metalvpc_common::{self as common, MgmtAddr};
use std::path::Path;

/// The binary's file name (what `/proc/<pid>/exe` ends in, and `comm` cut to 15 bytes).
const BINARY: &str = "metalvpc-supernode";

/// How to reload by hand.
const BY_HAND: &str =
    "reload it by hand: systemctl reload metalvpc-supernode (or kill -HUP the supernode's pid)";

/// Asks the running supernode (if one answers at `management`) to reload, and says so.
pub(crate) fn reload_running(config: &Path, management: &MgmtAddr) {
    let pid = common::query_management(management, "/status", config)
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("pid").and_then(serde_json::Value::as_i64));
    let Some(pid) = pid else {
        println!("no running supernode answered at {management}; the change applies when it starts (if it runs, {BY_HAND})");
        return;
    };
    let owner = match management {
        MgmtAddr::Unix(p) => std::fs::metadata(p)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m)),
        MgmtAddr::Tcp(_) => None,
    };
    match verified_pid(pid, owner) {
        // SAFETY: kill(2) with a verified pid (> 1) and a plain signal.
        Ok(p) if unsafe { libc::kill(p, libc::SIGHUP) } == 0 => {
            println!("the running supernode (pid {p}) reloaded: the change holds now")
        }
        Ok(p) => println!(
            "could not signal the supernode (pid {p}): {}; {BY_HAND}",
            std::io::Error::last_os_error()
        ),
        Err(why) => {
            println!("not signalling pid {pid} that {management} reported: {why}; {BY_HAND}")
        }
    }
}

/// `pid` if it is a running supernode that we may trust with a signal: above 1, its binary is
/// the supernode's, and it belongs to `owner` (the management socket's owner; without one,
/// to us, unless we are root).
pub(crate) fn verified_pid(pid: i64, owner: Option<u32>) -> Result<i32, String> {
    let p = i32::try_from(pid).map_err(|_| "not a process id".to_string())?;
    if p <= 1 {
        return Err("not a daemon's process id (it must be above 1)".into());
    }
    let proc_dir = format!("/proc/{p}");
    let meta = std::fs::metadata(&proc_dir).map_err(|_| "no such process".to_string())?;
    let exe = std::fs::read_link(format!("{proc_dir}/exe"))
        .ok()
        .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| n.trim_end_matches(" (deleted)").to_string());
    let comm = std::fs::read_to_string(format!("{proc_dir}/comm")).unwrap_or_default();
    let is_supernode = match exe {
        Some(name) => name == BINARY,
        // Not ours to read (another user's process): its name must match at least.
        None => comm.trim_end() == &BINARY[..15],
    };
    if !is_supernode {
        return Err(format!("that process is not {BINARY}"));
    }
    let uid = std::os::unix::fs::MetadataExt::uid(&meta);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let expected = owner.or((me != 0).then_some(me));
    if expected.is_some_and(|e| e != uid) {
        return Err(format!(
            "that process belongs to uid {uid}, not to the owner of the management endpoint (uid {})",
            expected.unwrap_or_default()
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_supernode_is_signalled() {
        for bogus in [-1, 0, 1, i64::from(u32::MAX), i64::MAX] {
            assert!(verified_pid(bogus, None).is_err(), "{bogus}");
        }
        // Our own process is running, but it is a test binary, not the supernode.
        let me = i64::from(std::process::id());
        let err = verified_pid(me, None).unwrap_err();
        assert!(err.contains("not metalvpc-supernode"), "{err}");
        // A process that is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert!(verified_pid(pid, None).is_err());
        // A supernode that is someone else's: copied binary named like it, another owner.
        let dir = std::env::temp_dir().join(format!("mvpc-signal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join(BINARY);
        std::fs::copy("/bin/sleep", &fake).unwrap();
        let mut sleeper = std::process::Command::new(&fake).arg("30").spawn().unwrap();
        let pid = i64::from(sleeper.id());
        assert_eq!(
            verified_pid(pid, None),
            Ok(pid as i32),
            "named like the supernode, ours"
        );
        let other = unsafe { libc::geteuid() } + 1;
        let err = verified_pid(pid, Some(other)).unwrap_err();
        assert!(err.contains("belongs to uid"), "{err}");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
