//! The supernode's config loader on arbitrary TOML text: the main file, and community files
//! in `community_dir = "c.d"` (the input's parts after lines `#---`), all from memory; never
//! a panic; every error names a file; whatever loads is within the documented rules.
#![no_main]
use anyhow::{anyhow, Result};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::key;
use metalvpc_protocol::control::MAX_ALLOWED_CIDRS;
use metalvpc_protocol::PrivateKey;
use metalvpc_supernode::config::{load_from_str, Source};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

struct Memory(Vec<(PathBuf, String)>);

impl Source for Memory {
    fn toml_files(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        if dir == Path::new("/fuzz/c.d") {
            Ok(self.0.iter().map(|(p, _)| p.clone()).collect())
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
    fn read_text(&self, path: &Path) -> Result<String> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| anyhow!("{}: cannot read the config file", path.display()))
    }
    fn private_key(&self, _: &Path, _: &Path) -> Result<PrivateKey> {
        Ok(key(10))
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
    let mut parts = text.split("\n#---\n");
    let main = parts.next().unwrap_or("");
    let files = Memory(
        parts
            .take(4)
            .enumerate()
            .map(|(i, t)| (PathBuf::from(format!("/fuzz/c.d/{i}.toml")), t.to_string()))
            .collect(),
    );
    match load_from_str(Path::new("/fuzz/sn.toml"), main, &files) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.starts_with("/fuzz/"), "error without the file: {msg}");
        }
        Ok(c) => {
            let comms = &c.core.communities;
            assert!(!comms.is_empty());
            assert!((1..=300).contains(&c.core.register_interval));
            let names: HashSet<_> = comms.iter().map(|c| &c.name).collect();
            assert_eq!(names.len(), comms.len());
            for comm in comms {
                assert!(!comm.name.is_empty() && comm.name.len() <= 64);
                assert_eq!(comm.network, comm.network.trunc());
                let keys: HashSet<_> = comm.nodes.iter().map(|n| n.key).collect();
                let addrs: HashSet<_> = comm.nodes.iter().map(|n| n.address).collect();
                assert_eq!(keys.len(), comm.nodes.len());
                assert_eq!(addrs.len(), comm.nodes.len());
                for n in &comm.nodes {
                    assert!(comm.network.contains(&n.address));
                    assert!(n.allowed_cidrs.len() <= MAX_ALLOWED_CIDRS);
                }
            }
        }
    }
});
