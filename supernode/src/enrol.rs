//! The enrolment store: which keys enrolled in a community (with its join secret or a
//! token), the address each got, the enrolment tokens, the keys the operator revoked and the
//! addresses quarantined after a revocation. One TOML file per community in `state_dir`.
//!
//! Every change is a read-modify-write under an exclusive lock (`flock` on a `.lock` file
//! next to it), so the daemon's background writer ([`crate::enrol_writer`]) and the
//! `enrolled` commands never lose each other's changes; the file is replaced atomically
//! (written to a temporary file, fsynced, renamed over the old one, the directory fsynced),
//! so a crash leaves the old store or the new one, never half of one. Its size is bounded by
//! design ([`MAX_ENROLLED`] nodes, [`MAX_TOKENS`] tokens, as many revoked keys and
//! quarantined addresses: a few MB); a file over [`MAX_STORE_BYTES`] is refused with an error
//! naming it, never cut short.

use anyhow::{anyhow, bail, Context, Result};
use metalvpc_common::source::{Disk, Source};
pub use metalvpc_protocol::supernode::{MAX_ENROLLED, MAX_TOKENS};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default `state_dir` (shared with the edges, `ReadWritePaths=` of the units).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/metalvpc";
/// The largest store file read. What the bounds allow is well under it (about 200 bytes per
/// node, 250 per token, 50 per revoked key: under 8 MB at every cap).
pub const MAX_STORE_BYTES: u64 = 16 << 20;

/// One community's enrolments.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Enrolled nodes.
    #[serde(default)]
    pub node: Vec<StoredNode>,
    /// Keys that may not enrol again.
    #[serde(default)]
    pub revoked: Vec<String>,
    /// Addresses of revoked enrolments: not handed out again until released.
    #[serde(default)]
    pub quarantined: Vec<String>,
    /// Enrolment tokens.
    #[serde(default)]
    pub token: Vec<StoredToken>,
}

/// One enrolled node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredNode {
    /// Its public key (base64).
    pub public_key: String,
    /// The address it got.
    pub address: String,
    /// The name it is shown with.
    pub name: String,
    /// When it enrolled (seconds since the Unix epoch).
    pub enrolled: u64,
    /// The id of the token it enrolled with (none: the join secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One enrolment token: never its secret, only a hash of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredToken {
    /// Its public id (12 hex digits).
    pub id: String,
    /// `token_key` of the secret (64 hex digits).
    pub hash: String,
    /// When it was created (seconds since the Unix epoch).
    pub created: u64,
    /// When it expires (seconds since the Unix epoch; none: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Enrolments it may still make.
    pub uses: u32,
    /// The address it assigns, if fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Burned by the revocation of a server that enrolled with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub burned: bool,
}

/// The store file of `community` in `state_dir`.
pub fn path(state_dir: &Path, community: &str) -> PathBuf {
    state_dir.join(format!("{community}.enrolled.toml"))
}

/// Reads a store; a missing file is an empty store.
pub fn load(file: &Path) -> Result<Store> {
    load_from(&Disk, file)
}

/// [`load`], reading through `source` (the config loader's).
pub fn load_from(source: &dyn Source, file: &Path) -> Result<Store> {
    let bytes = match source.read_bounded(file, MAX_STORE_BYTES + 1) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
        Err(e) => bail!("{}: cannot read the enrolment store: {e}", file.display()),
    };
    if bytes.len() as u64 > MAX_STORE_BYTES {
        bail!(
            "{}: the enrolment store is larger than {MAX_STORE_BYTES} bytes, more than a supernode ever writes (at most {MAX_ENROLLED} nodes and {MAX_TOKENS} tokens per community); it is not read. Restore it from a backup, or move it away (enrolled servers then enrol again and may get other addresses)",
            file.display()
        );
    }
    let damaged = |e: String| {
        anyhow!(
            "{}: the enrolment store is damaged: {} (restore it from a backup, or remove it: enrolled servers then enrol again and may get other addresses)",
            file.display(),
            e.trim_end()
        )
    };
    let store: Store =
        toml::from_str(&String::from_utf8_lossy(&bytes)).map_err(|e| damaged(e.to_string()))?;
    for (what, n, max) in [
        ("enrolled nodes", store.node.len(), MAX_ENROLLED),
        ("revoked keys", store.revoked.len(), MAX_ENROLLED),
        (
            "quarantined addresses",
            store.quarantined.len(),
            MAX_ENROLLED,
        ),
        ("tokens", store.token.len(), MAX_TOKENS),
    ] {
        if n > max {
            return Err(damaged(format!(
                "it holds {n} {what}, more than the {max} a supernode keeps"
            )));
        }
    }
    Ok(store)
}

/// Writes a store atomically: a temporary file (mode 600) written and fsynced, renamed over
/// the old one, and the directory fsynced, so the rename itself survives a crash.
pub fn save(file: &Path, store: &Store) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let text = format!(
        "# Written by metalvpc-supernode: servers that enrolled, the address each got, enrolment\n\
         # tokens (a hash of each secret), revoked keys and quarantined addresses. Change it with\n\
         # `metalvpc-supernode enrolled`, not by hand.\n{}",
        toml::to_string(store)?
    );
    write_private(file, text.as_bytes())
}

/// Replaces `file` with `bytes` atomically and durably, readable by its owner only: a
/// temporary file next to it (mode 600) written and fsynced, renamed over it, the directory
/// fsynced.
pub fn write_private(file: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    owned_like_replaced(&f, file, dir);
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))?;
    Ok(())
}

/// Run as root (an `enrolled` command), gives a file it creates in the state directory to the
/// daemon's user, who must still read and replace the store (in a sticky directory only its
/// owner may rename over it): the directory's owner when that is not root (systemd's
/// `StateDirectory=` with `User=`), else, for the shipped `/var/lib/metalvpc` (root:metalvpc,
/// mode 1770), the user named like the directory's group (`metalvpc`).
fn owned_like_dir(f: &std::fs::File, dir: &Path) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: geteuid has no preconditions; fchown on a descriptor we own.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    if let Some((uid, gid)) = daemon_owner(dir) {
        unsafe { libc::fchown(f.as_raw_fd(), uid, gid) };
    }
}

/// Run as root, gives the file that will replace `file` to `file`'s owner when that is not
/// root (a join secret rotated in /etc/metalvpc stays the supernode's), else as
/// [`owned_like_dir`].
fn owned_like_replaced(f: &std::fs::File, file: &Path, dir: &Path) {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions; fchown on a descriptor we own.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    match std::fs::metadata(file) {
        Ok(m) if m.uid() != 0 => {
            unsafe { libc::fchown(f.as_raw_fd(), m.uid(), m.gid()) };
        }
        _ => owned_like_dir(f, dir),
    }
}

/// Who the supernode runs as, judged from its state directory (see [`owned_like_dir`]).
fn daemon_owner(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(dir).ok()?;
    if m.uid() != 0 {
        return Some((m.uid(), m.gid()));
    }
    if m.gid() == 0 {
        return None;
    }
    let uid = namesake_user(m.gid())?;
    Some((uid, m.gid()))
}

/// The uid of the user named like group `gid` whose primary group it is (sysusers' `u`
/// lines create such pairs), if any.
fn namesake_user(gid: u32) -> Option<u32> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getgrgid_r/getpwnam_r write into the structs and `buf` we own (sizes given);
    // the name pointer points into `buf` and is read before `buf` is reused.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut res: *mut libc::group = std::ptr::null_mut();
        if libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) != 0
            || res.is_null()
        {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(gr.gr_name).to_owned();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut res,
        ) != 0
            || res.is_null()
            || pw.pw_gid != gid
            || pw.pw_uid == 0
        {
            return None;
        }
        Some(pw.pw_uid)
    }
}

/// Changes the store of `file` under its lock: reads it, lets `f` change it, writes it back
/// (only if `f` succeeded). The daemon's writer and the `enrolled` commands go through here.
pub fn update<T>(file: &Path, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
    use std::os::fd::AsRawFd as _;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let lock_path = file.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    owned_like_dir(&lock, dir);
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        );
    }
    let mut store = load(file)?;
    let out = f(&mut store)?;
    save(file, &store)?;
    Ok(out)
}

/// Adds an enrolment (idempotent for the same key) and spends one use of its token.
pub fn apply(store: &mut Store, r: &metalvpc_protocol::supernode::EnrolmentRecord) {
    use metalvpc_protocol::control::token_id_hex;
    let key = r.key.to_base64();
    if store.node.iter().any(|n| n.public_key == key) {
        return;
    }
    let token = r.token.as_ref().map(token_id_hex);
    // Revoked while this write was on its way: it stays out, as `revoke` would have left it.
    let revoked = store.revoked.contains(&key);
    if let Some(t) = store
        .token
        .iter_mut()
        .find(|t| Some(&t.id) == token.as_ref())
    {
        t.uses = t.uses.saturating_sub(1);
        if revoked {
            t.uses = 0;
            t.burned = true;
        }
    }
    if revoked {
        let a = r.address.to_string();
        if !store.quarantined.contains(&a) && store.quarantined.len() < MAX_ENROLLED {
            store.quarantined.push(a);
        }
        return;
    }
    store.node.push(StoredNode {
        public_key: key,
        address: r.address.to_string(),
        name: r.name.clone(),
        enrolled: metalvpc_common::unix_micros() / 1_000_000,
        token,
    });
}

/// What a revocation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// The address the key had (now quarantined), if it was enrolled.
    pub address: Option<String>,
    /// The token it enrolled with (now burned), if any.
    pub token: Option<String>,
}

/// Revokes `key`: removes its enrolment, refuses it from now on, quarantines its address and
/// burns the token it came with.
pub fn revoke(store: &mut Store, key: &str) -> Result<Revoked> {
    let mut done = Revoked::default();
    if let Some(i) = store.node.iter().position(|n| n.public_key == key) {
        let n = store.node.remove(i);
        if !store.quarantined.contains(&n.address) {
            if store.quarantined.len() >= MAX_ENROLLED {
                bail!("the store already quarantines {MAX_ENROLLED} addresses; release some first (`enrolled release`)");
            }
            store.quarantined.push(n.address.clone());
        }
        if let Some(t) = store
            .token
            .iter_mut()
            .find(|t| Some(&t.id) == n.token.as_ref())
        {
            t.uses = 0;
            t.burned = true;
        }
        done = Revoked {
            address: Some(n.address),
            token: n.token,
        };
    }
    if !store.revoked.iter().any(|k| k == key) {
        if store.revoked.len() >= MAX_ENROLLED {
            bail!("the store already holds {MAX_ENROLLED} revoked keys; start the community's enrolments afresh (a new join secret, tokens only)");
        }
        store.revoked.push(key.to_string());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_protocol::supernode::EnrolmentRecord;
    use metalvpc_protocol::PublicKey;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mvpc-enrol-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn record(n: u8, token: Option<[u8; 6]>) -> EnrolmentRecord {
        EnrolmentRecord {
            community: "prod".into(),
            key: PublicKey([n; 32]),
            address: format!("10.0.0.{}", 128 + n).parse().unwrap(),
            name: format!("enrolled-{n}"),
            token,
        }
    }

    fn token(id: &str, uses: u32) -> StoredToken {
        StoredToken {
            id: id.into(),
            hash: "00".repeat(32),
            created: 1,
            expires: None,
            uses,
            address: None,
            burned: false,
        }
    }

    #[test]
    fn record_revoke_quarantine_and_burn_survive_a_reload() {
        let d = dir("revoke");
        let f = path(&d, "prod");
        assert!(load(&f).unwrap().node.is_empty());
        update(&f, |s| {
            s.token.push(token("010101010101", 3));
            apply(s, &record(1, Some([1; 6])));
            apply(s, &record(1, Some([1; 6])));
            apply(s, &record(2, None));
            Ok(())
        })
        .unwrap();
        let s = load(&f).unwrap();
        assert_eq!(s.node.len(), 2);
        assert_eq!(s.token[0].uses, 2, "one use spent, once");
        let k1 = PublicKey([1; 32]).to_base64();
        let r = update(&f, |s| revoke(s, &k1)).unwrap();
        assert_eq!(r.address.as_deref(), Some("10.0.0.129"));
        assert_eq!(r.token.as_deref(), Some("010101010101"));
        let s = load(&f).unwrap();
        assert_eq!(s.node.len(), 1);
        assert_eq!(s.revoked, vec![k1]);
        assert_eq!(s.quarantined, vec!["10.0.0.129".to_string()]);
        assert!(s.token[0].burned && s.token[0].uses == 0);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the store is its owner's only");
        std::fs::write(&f, "garbage = [").unwrap();
        assert!(format!("{:#}", load(&f).unwrap_err()).contains("damaged"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_enrolment_saved_after_its_revocation_stays_out() {
        let d = dir("race");
        let f = path(&d, "prod");
        let k = PublicKey([3; 32]).to_base64();
        update(&f, |s| {
            s.token.push(token("030303030303", 5));
            revoke(s, &k)?;
            apply(s, &record(3, Some([3; 6])));
            Ok(())
        })
        .unwrap();
        let s = load(&f).unwrap();
        assert!(s.node.is_empty());
        assert_eq!(s.quarantined, vec!["10.0.0.131".to_string()]);
        assert!(s.token[0].burned);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Enrols one node in store `prod` of `d`; the (uid, gid) of the store and its lock.
    fn owners_after_an_update(d: &Path) -> [(u32, u32); 2] {
        use std::os::unix::fs::MetadataExt as _;
        let f = path(d, "prod");
        update(&f, |s| {
            apply(s, &record(1, None));
            Ok(())
        })
        .unwrap();
        [f.clone(), f.with_extension("lock")].map(|file| {
            let m = std::fs::metadata(&file).unwrap();
            (m.uid(), m.gid())
        })
    }

    #[test]
    fn a_store_written_by_root_belongs_to_the_state_directorys_owner() {
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: needs root");
            return;
        }
        let d = dir("owner");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(12345), Some(12346)).unwrap();
        assert_eq!(owners_after_an_update(&d), [(12345, 12346); 2]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_store_written_by_root_in_the_shared_state_directory_belongs_to_the_groups_user() {
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: needs root");
            return;
        }
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        // /var/lib/metalvpc as the package makes it: root:metalvpc, mode 1770. Here the
        // group and user `daemon` (Debian's base system) stand in for metalvpc.
        let Some(uid) = namesake_user(1) else {
            println!("SKIPPED: no user and group `daemon` (gid 1)");
            return;
        };
        let d = dir("shared");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(0), Some(1)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1770)).unwrap();
        assert_eq!(owners_after_an_update(&d), [(uid, 1); 2]);
        let mode = std::fs::metadata(path(&d, "prod")).unwrap().mode();
        assert_eq!(mode & 0o077, 0);
        // A directory of group root stays root's.
        std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
        assert_eq!(daemon_owner(&d), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_replaced_by_root_keeps_its_owner() {
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt as _;
        // A join secret in a root-owned /etc/metalvpc, handed to the supernode's user, that
        // `enrolled revoke --rotate-secret` replaces.
        let d = dir("replaced");
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("prod.join");
        write_private(&f, b"old secret\n").unwrap();
        std::os::unix::fs::chown(&f, Some(12345), Some(12346)).unwrap();
        write_private(&f, b"new secret\n").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (12345, 12346, 0o600));
        assert_eq!(std::fs::read(&f).unwrap(), b"new secret\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_store_over_the_size_limit_is_refused_with_the_file_the_limit_and_the_fix() {
        let d = dir("big");
        std::fs::create_dir_all(&d).unwrap();
        let f = path(&d, "prod");
        // Valid TOML all along, so cutting it short would have "worked" or said "damaged".
        let line = "# padding padding padding padding padding padding padding padding\n";
        let text = line.repeat((MAX_STORE_BYTES as usize / line.len()) + 2);
        std::fs::write(&f, text).unwrap();
        let err = format!("{:#}", load(&f).unwrap_err());
        assert!(
            err.contains(&f.display().to_string())
                && err.contains(&MAX_STORE_BYTES.to_string())
                && err.contains("Restore it from a backup"),
            "{err}"
        );
        // Too many entries for the caps is refused too.
        let many: String = (0..=MAX_TOKENS)
            .map(|i| format!("[[token]]\nid = \"{i:012x}\"\nhash = \"\"\ncreated = 0\nuses = 1\n"))
            .collect();
        std::fs::write(&f, many).unwrap();
        let err = format!("{:#}", load(&f).unwrap_err());
        assert!(err.contains("tokens") && err.contains("damaged"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_leftover_temporary_file_from_a_crash_changes_nothing() {
        let d = dir("crash");
        let f = path(&d, "prod");
        update(&f, |s| {
            apply(s, &record(1, None));
            Ok(())
        })
        .unwrap();
        // A crash between writing the temporary file and the rename leaves it behind.
        std::fs::write(f.with_extension("toml.tmp"), "half a fi").unwrap();
        assert_eq!(load(&f).unwrap().node.len(), 1);
        update(&f, |s| {
            apply(s, &record(2, None));
            Ok(())
        })
        .unwrap();
        assert_eq!(load(&f).unwrap().node.len(), 2);
        // A change that fails writes nothing.
        let err = update(&f, |s| -> Result<()> {
            s.node.clear();
            bail!("no")
        });
        assert!(err.is_err());
        assert_eq!(load(&f).unwrap().node.len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}
