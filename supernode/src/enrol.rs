//! The enrolment store: which keys enrolled with a community's join secret, the address each
//! got, and the keys the operator revoked. One TOML file per community in `state_dir`, written
//! atomically (a temporary file renamed over the old one), so a crash never leaves half a file
//! and an enrolled server keeps its address across supernode restarts.

use anyhow::{anyhow, Context, Result};
use metalvpc_common::source::{Disk, Source};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default `state_dir` (the units' `StateDirectory=metalvpc`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/metalvpc";

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
    match source
        .read_bounded(file, 16 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
    {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: the enrolment store is damaged: {} (restore it from a backup, or remove it: enrolled servers then enrol again and may get other addresses)",
                file.display(),
                e.to_string().trim_end()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
        Err(e) => Err(anyhow!("{}: cannot read the enrolment store: {e}", file.display())),
    }
}

/// Writes a store atomically.
pub fn save(file: &Path, store: &Store) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let text = format!(
        "# Written by metalvpc-supernode: servers that enrolled with the join secret, the address\n\
         # each got, and revoked keys. Revoke with `metalvpc-supernode enrolled revoke`.\n{}",
        toml::to_string(store)?
    );
    let tmp = file.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

/// Adds an enrolment (idempotent for the same key).
pub fn record(file: &Path, key: &str, address: &str, name: &str) -> Result<()> {
    let mut store = load(file)?;
    if !store.node.iter().any(|n| n.public_key == key) {
        store.node.push(StoredNode {
            public_key: key.to_string(),
            address: address.to_string(),
            name: name.to_string(),
            enrolled: metalvpc_common::unix_micros() / 1_000_000,
        });
    }
    save(file, &store)
}

/// Revokes `key`: removes its enrolment and refuses it from now on. Returns the address it
/// had, if it was enrolled.
pub fn revoke(file: &Path, key: &str) -> Result<Option<String>> {
    let mut store = load(file)?;
    let had = store
        .node
        .iter()
        .position(|n| n.public_key == key)
        .map(|i| store.node.remove(i).address);
    if !store.revoked.iter().any(|k| k == key) {
        store.revoked.push(key.to_string());
    }
    save(file, &store)?;
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_revoke_and_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!("mvpc-enrol-{}", std::process::id()));
        let f = path(&dir, "prod");
        assert!(load(&f).unwrap().node.is_empty());
        record(&f, "K1", "10.0.0.129", "enrolled-K1").unwrap();
        record(&f, "K1", "10.0.0.129", "enrolled-K1").unwrap();
        record(&f, "K2", "10.0.0.130", "enrolled-K2").unwrap();
        let s = load(&f).unwrap();
        assert_eq!(s.node.len(), 2);
        assert_eq!(revoke(&f, "K1").unwrap().as_deref(), Some("10.0.0.129"));
        let s = load(&f).unwrap();
        assert_eq!(s.node.len(), 1);
        assert_eq!(s.revoked, vec!["K1".to_string()]);
        std::fs::write(&f, "garbage = [").unwrap();
        assert!(format!("{:#}", load(&f).unwrap_err()).contains("damaged"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
