//! The MAC claims a supernode keeps across restarts (`state_dir/<community>.macs`): one line
//! per claim, `<public key> <MAC>`, written whole by the store writer when the core emits
//! [`Command::SaveMacs`](metalvpc_protocol::supernode::Command::SaveMacs), read back at start
//! and handed to [`Supernode::restore_macs`](metalvpc_protocol::supernode::Supernode::restore_macs).
//! The file is state, not configuration: a damaged line is skipped with a warning (the key
//! registers again and claims its MAC as before), never a reason not to start.

use metalvpc_common as common;
use metalvpc_protocol::{Mac, PublicKey};
use std::path::{Path, PathBuf};

/// At most this many bytes are read (a claim is about 64; a community of 16,384 keys fits).
pub const MAX_BYTES: u64 = 2 << 20;

/// The claims file of `community` in `state_dir`.
pub fn path(state_dir: &Path, community: &str) -> PathBuf {
    state_dir.join(format!("{community}.macs"))
}

/// The file's text for `claims`.
pub fn encode(claims: &[(PublicKey, Mac)]) -> Vec<u8> {
    let mut s = String::from(
        "# MACs owned by keys of this community (metalvpc-supernode keeps this file; a MAC\n\
         # stays with its key while the key is offline and across restarts).\n",
    );
    for (k, m) in claims {
        s.push_str(&format!("{} {m}\n", k.to_base64()));
    }
    s.into_bytes()
}

/// Reads `file`: the claims, and a warning per line (or for the file) that was skipped. A
/// missing file holds no claims.
pub fn load(file: &Path) -> (Vec<(PublicKey, Mac)>, Vec<String>) {
    let f = file.display();
    let bytes = match common::read_bounded(file, MAX_BYTES + 1) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (vec![], vec![]),
        Err(e) => {
            return (
                vec![],
                vec![format!("{f}: cannot read it ({e}); MAC claims start empty")],
            )
        }
    };
    if bytes.len() as u64 > MAX_BYTES {
        return (vec![], vec![format!("{f}: larger than {MAX_BYTES} bytes, not read; MAC claims start empty (delete the file to silence this)")]);
    }
    let text = String::from_utf8_lossy(&bytes);
    let (mut claims, mut warnings) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(m), None) => PublicKey::from_base64(k).ok().zip(Mac::parse(m)),
            _ => None,
        };
        match parsed {
            Some(c) => claims.push(c),
            None => warnings.push(format!(
                "{f}:{}: not \"<public key> <MAC>\", skipped",
                n + 1
            )),
        }
    }
    (claims, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_common::testing::TempDir;

    #[test]
    fn claims_survive_the_file_and_a_damaged_line_is_skipped_with_a_warning() {
        let d = TempDir::new("macs-file");
        let k1 = metalvpc_protocol::PrivateKey([1; 32]).public_key();
        let k2 = metalvpc_protocol::PrivateKey([2; 32]).public_key();
        let claims = vec![(k1, Mac([2, 0, 0, 0, 0, 1])), (k2, Mac([2, 0, 0, 0, 0, 2]))];
        let file = path(d.path(), "prod");
        assert_eq!(
            load(&file),
            (vec![], vec![]),
            "a missing file holds nothing"
        );
        let mut text = encode(&claims);
        text.extend_from_slice(b"not a claim\n\xff\xfe 02:00:00:00:00:03\n");
        std::fs::write(&file, &text).unwrap();
        let (got, warnings) = load(&file);
        assert_eq!(got, claims);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("prod.macs:5"), "{warnings:?}");
        std::fs::write(&file, vec![b'#'; MAX_BYTES as usize + 10]).unwrap();
        let (got, warnings) = load(&file);
        assert!(
            got.is_empty() && warnings[0].contains("larger than"),
            "{warnings:?}"
        );
    }
}
