//! Writing a state file so that a crash or power loss leaves either the old content or the
//! new one, never a torn or empty file: the bytes go to a temporary file next to it, which is
//! flushed to disk (fsync), renamed over the file, and the directory is flushed too (so the
//! rename itself survives).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The temporary file [`write_atomic`] uses for `path`: `.<name>.tmp` in the same directory
/// (the same filesystem, so the rename is atomic).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes` atomically and durably (temp file, fsync, rename, fsync of
/// the directory); the file gets permission bits `mode` (before the umask). On an error the
/// old file is untouched and the temporary file removed; the error names the file and the
/// step that failed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let with = |step: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{step} {}: {e}", tmp.display()))
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| with("creating", e))?;
        f.write_all(bytes).map_err(|e| with("writing", e))?;
        f.sync_all().map_err(|e| with("syncing", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("renaming {} to {}: {e}", tmp.display(), path.display()),
            )
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| std::io::Error::new(e.kind(), format!("syncing {}: {e}", dir.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_atomic_write_replaces_the_file_whole_or_leaves_it_as_it_was() {
        let dir = crate::testing::TempDir::new("atomic");
        let file = dir.path().join("prod.members");
        write_atomic(&file, b"version 1", 0o600).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"version 1");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        write_atomic(&file, b"version 2, longer", 0o600).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"version 2, longer");
        assert!(!temp_path(&file).exists(), "no temporary file left");
        // A write that fails (here: the temporary file's place is taken by a directory)
        // leaves the old content, and says what failed.
        std::fs::create_dir(temp_path(&file)).unwrap();
        let err = write_atomic(&file, b"version 3", 0o600).unwrap_err();
        assert!(err.to_string().contains(".prod.members.tmp"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"version 2, longer");
        std::fs::remove_dir(temp_path(&file)).unwrap();
        // A directory that does not exist: an error naming the file, nothing created.
        let missing = dir.path().join("nowhere").join("x");
        let err = write_atomic(&missing, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
    }
}
