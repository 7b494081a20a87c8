//! Test fixtures shared by the crates' unit tests (feature `testing`, or this crate's tests).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// A public key whose 32 bytes are all `b` (reports and fixtures tell nodes apart by it).
pub fn public_key(b: u8) -> metalvpc_protocol::PublicKey {
    metalvpc_protocol::PublicKey([b; 32])
}

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

/// Asserts that a config loader refused `config` (the text it was given, shown when it was
/// accepted) with an error whose text, causes included (`{:#}`), contains every one of
/// `needles`: the file, the key, `N problems`, ... Returns that text.
pub fn assert_refused<T>(loaded: anyhow::Result<T>, config: &str, needles: &[&str]) -> String {
    let err = match loaded {
        Ok(_) => panic!("accepted: {config}"),
        Err(e) => format!("{e:#}"),
    };
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
    err
}

/// Asserts that every `-h` and `--help` of `cmd` (the binary's command line) and of each of
/// its subcommands, nested ones too, renders as `<crate>/testdata/help/` has it (`crate`: the
/// crate's directory, `CARGO_MANIFEST_DIR`): `<name>.short.txt` (`-h`) and
/// `<name>.long.txt` (`--help`), `<name>` being the binary's name for the top level and the
/// subcommand's path joined by `-` otherwise (`enrolled-list`). The help is a contract (docs,
/// scripts, the man pages come from the same definitions); `METALVPC_BLESS_HELP=1` writes
/// the files instead, for a change meant to show.
pub fn assert_help_unchanged(cmd: clap::Command, crate_dir: &str) {
    let dir = &Path::new(crate_dir).join("testdata/help");
    let bin = cmd.get_name().to_string();
    let mut paths: Vec<Vec<String>> = vec![Vec::new()];
    let mut i = 0;
    while i < paths.len() {
        let mut sub = &cmd;
        for name in &paths[i] {
            sub = sub.find_subcommand(name).expect("a subcommand just listed");
        }
        let children: Vec<Vec<String>> = sub
            .get_subcommands()
            .map(|c| [paths[i].clone(), vec![c.get_name().to_string()]].concat())
            .collect();
        paths.extend(children);
        i += 1;
    }
    let bless = std::env::var_os("METALVPC_BLESS_HELP").is_some();
    let mut differ = Vec::new();
    for path in &paths {
        let name = if path.is_empty() {
            bin.clone()
        } else {
            path.join("-")
        };
        for (flag, kind) in [("-h", "short"), ("--help", "long")] {
            let args = std::iter::once(bin.as_str())
                .chain(path.iter().map(String::as_str))
                .chain([flag]);
            let err = match cmd.clone().try_get_matches_from(args) {
                Ok(_) => panic!("`{name} {flag}` parsed instead of printing the help"),
                Err(e) => e,
            };
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
            let help = err.render().to_string();
            let file = dir.join(format!("{name}.{kind}.txt"));
            if bless {
                std::fs::create_dir_all(dir).expect("creating the help dir");
                std::fs::write(&file, &help).expect("writing a help file");
            } else if std::fs::read_to_string(&file).ok().as_deref() != Some(help.as_str()) {
                differ.push(format!("{}:\n{help}", file.display()));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "the help differs from (or is missing in) {}; if that is meant, run with \
         METALVPC_BLESS_HELP=1 and commit the files:\n{}",
        dir.display(),
        differ.join("\n")
    );
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
