//! The administrator's commands: `admin-genkey`, `admin-pubkey` and `sign` (a community's
//! member list signed with the administrator key, for `signed_membership`).

use anyhow::{Context as _, Result};
use metalvpc_common as common;
use metalvpc_protocol::membership::{AdminKey, Membership};
use metalvpc_supernode::config;
use std::path::PathBuf;

pub(crate) fn admin_genkey(out: Option<PathBuf>) -> Result<()> {
    let key = AdminKey::generate();
    let Some(path) = out else {
        println!("{}", key.to_base64());
        return Ok(());
    };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    writeln!(f, "{}", key.to_base64())?;
    println!("{}", key.public_key());
    eprintln!(
        "wrote the administrator key to {} (mode 600); its public half (above) is `admin_key` for edges and supernodes",
        path.display()
    );
    Ok(())
}

/// Reads an administrator private key file, refusing one that group or others may read.
fn load_admin_key(path: &std::path::Path) -> Result<AdminKey> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "{}: cannot read the administrator key; create one with `metalvpc-supernode admin-genkey --out {}`",
            path.display(),
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{}: the administrator key is readable by group or others (mode {mode:o}); it must be readable by its owner only. Fix: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    AdminKey::from_base64(&text)
        .map_err(|e| anyhow::anyhow!("{}: not an administrator key: {e}", path.display()))
}

pub(crate) fn admin_pubkey(key: Option<PathBuf>) -> Result<()> {
    let key = match key {
        Some(path) => load_admin_key(&path)?,
        None => {
            use std::io::Read as _;
            let mut text = String::new();
            std::io::stdin().take(4096).read_to_string(&mut text)?;
            AdminKey::from_base64(&text).map_err(|e| {
                anyhow::anyhow!("stdin: not an administrator key: {e}. Usage: metalvpc-supernode admin-pubkey < admin.key")
            })?
        }
    };
    println!("{}", key.public_key());
    Ok(())
}

pub(crate) fn sign(
    key: &std::path::Path,
    config: &std::path::Path,
    community: Option<&str>,
    version: Option<u64>,
    out: Option<PathBuf>,
) -> Result<()> {
    let admin = load_admin_key(key)?;
    let (c, target) = config::community_for_signing(config, community)?;
    let out = out.or(target).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: community '{}' has no `signed_membership` key; say where to write with --out FILE",
            config.display(),
            c.name
        )
    })?;
    // Versions only grow: an edge refuses a list older than one it has seen. Without
    // --version a list gets the time in seconds, or one more than the list it replaces
    // (signed twice in one second, or with a clock behind); --version is taken as given.
    let old = config::read_signed_file(&out)
        .ok()
        .and_then(|old| Membership::verify(&old, &admin.public_key()).ok());
    let version = version.unwrap_or_else(|| {
        let now = common::unix_micros() / 1_000_000;
        old.as_ref().map_or(now, |o| now.max(o.version + 1))
    });
    if let Some(old) = old.filter(|o| o.version >= version) {
        anyhow::bail!(
            "{}: holds version {} already; the new list needs a higher one (--version {})",
            out.display(),
            old.version,
            old.version + 1
        );
    }
    let m = config::membership_of(&c, version);
    m.validate()
        .map_err(|e| anyhow::anyhow!("{}: community '{}': {e}", config.display(), c.name))?;
    let bytes = m.sign(&admin);
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: community '{}' version {}, {} members, signed by {}",
        out.display(),
        c.name,
        version,
        m.members.len(),
        admin.public_key()
    );
    Ok(())
}
