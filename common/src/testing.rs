//! Test fixtures shared by the crates' unit tests (feature `testing`, or this crate's tests).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temp dir, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/mvpc-{name}-{pid}`, created empty (`name` tells the tests of one process apart).
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("mvpc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating a temp dir");
        TempDir(d)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside it (not created).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `name` (parent directories created) and returns its path.
    pub fn write(&self, name: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("creating a directory");
        }
        std::fs::write(&p, bytes).expect("writing a test file");
        p
    }

    /// Writes `name` with mode 600, as keys and secrets must be.
    pub fn write_private(&self, name: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.write(name, bytes);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_away_with_the_dir() {
        let d = TempDir::new("testing-selftest");
        let key = d.write_private("a/b.key", "x");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let path = d.path().to_path_buf();
        drop(d);
        assert!(!path.exists());
    }
}
