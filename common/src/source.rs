//! What a config loader reads besides its main file, behind one seam: [`Disk`] is the
//! filesystem; tests and the fuzz targets (`fuzz/`) give the files from memory. Both daemons'
//! `config::load_from_str` take a `&dyn Source`.

use anyhow::{anyhow, Result};
use metalvpc_protocol::PrivateKey;
use std::path::{Path, PathBuf};

/// The files a config names.
pub trait Source {
    /// The `*.toml` files in `dir`, in any order (the supernode's `community_dir`).
    fn toml_files(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>>;
    /// The text of a config file; the error names the file.
    fn read_text(&self, path: &Path) -> Result<String>;
    /// The private key from `key_file` (already resolved against the config `path`, which
    /// errors name).
    fn private_key(&self, path: &Path, key_file: &Path) -> Result<PrivateKey>;
    /// A secret file (`join_secret_file`): its first 4 KiB and its permission bits (0 when
    /// they cannot be read), for the loader to refuse one that group or others may read.
    fn secret(&self, path: &Path) -> std::io::Result<(Vec<u8>, u32)>;
    /// At most `limit` bytes of a data file a config names or implies (the supernode's
    /// enrolment store, a `signed_membership` list), as [`crate::read_bounded`] reads them.
    fn read_bounded(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>>;
}

/// The filesystem.
pub struct Disk;

impl Source for Disk {
    fn toml_files(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect())
    }
    fn read_text(&self, path: &Path) -> Result<String> {
        std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{}: cannot read the config file: {e}", path.display()))
    }
    fn private_key(&self, path: &Path, key_file: &Path) -> Result<PrivateKey> {
        crate::load_private_key(path, key_file)
    }
    fn secret(&self, path: &Path) -> std::io::Result<(Vec<u8>, u32)> {
        use std::os::unix::fs::PermissionsExt as _;
        let bytes = crate::read_bounded(path, 4096)?;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        Ok((bytes, mode))
    }
    fn read_bounded(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
        crate::read_bounded(path, limit)
    }
}
