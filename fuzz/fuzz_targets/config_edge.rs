//! The edge's config loader on arbitrary TOML text, with the key file and DNS replaced by
//! fixed answers (no file, no network): never a panic; every error names the file; whatever
//! loads is within the documented limits.
#![no_main]
use anyhow::{anyhow, Result};
use libfuzzer_sys::fuzz_target;
use metalvpc_common::source::Source;
use metalvpc_edge::config::load_from_str;
use metalvpc_fuzz::key;
use metalvpc_protocol::PrivateKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// No files but the key, which is fixed.
struct KeyOnly;

impl Source for KeyOnly {
    fn toml_files(&self, _: &Path) -> std::io::Result<Vec<PathBuf>> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn read_text(&self, path: &Path) -> Result<String> {
        Err(anyhow!("{}: cannot read the config file", path.display()))
    }
    fn private_key(&self, _: &Path, _: &Path) -> Result<PrivateKey> {
        Ok(key(9))
    }
    fn secret(&self, _: &Path) -> std::io::Result<(Vec<u8>, u32)> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn read_bounded(&self, _: &Path, _: u64) -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/edge.toml");
    let literal = |a: &str| a.parse::<SocketAddr>().ok();
    match load_from_str(path, text, literal, &KeyOnly) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.starts_with("/fuzz/edge.toml: "),
                "error without the file: {msg}"
            );
        }
        Ok(c) => {
            assert!(!c.community.is_empty() && c.community.len() <= 64);
            assert!(!c.supernodes.is_empty());
            assert!((576..=9000).contains(&c.mtu));
            assert!((1..=300).contains(&c.keepalive.as_secs()));
            assert!(!c.if_name.is_empty() && c.if_name.len() <= 15);
            assert!(!c.mac.is_group() && c.mac.0 != [0; 6]);
        }
    }
});
