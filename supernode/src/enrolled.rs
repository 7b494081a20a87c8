//! `metalvpc-supernode enrolled list|revoke|release|token`: the servers that enrolled in a
//! community (the store in `state_dir`), revoking one so that it stays out, handing a
//! quarantined address out again, and enrolment tokens (`enrolled_token.rs`).

use crate::EnrolAction;
use anyhow::{bail, Result};
use metalvpc_common::{self as common, ago};
use metalvpc_protocol::supernode::CommunityConfig;
use metalvpc_supernode::{config, enrol};
use std::path::Path;

pub(crate) fn enrolled(action: EnrolAction) -> Result<()> {
    match action {
        EnrolAction::List { config } => list(&config),
        EnrolAction::Revoke {
            config,
            community,
            key,
            rotate_secret,
        } => revoke(&config, &community, &key, rotate_secret),
        EnrolAction::Release {
            config,
            community,
            address,
        } => release(&config, &community, address),
        EnrolAction::Token { action } => crate::enrolled_token::token(action),
    }
}

/// The config and the community `name` in it, which must take enrolments.
pub(crate) fn community(path: &Path, name: &str) -> Result<(config::Loaded, CommunityConfig)> {
    let cfg = config::load(path)?;
    let Some(c) = cfg
        .core
        .communities
        .iter()
        .find(|c| c.name == name && c.enrolment.is_some())
        .cloned()
    else {
        bail!(
            "{}: community '{name}' does not take enrolments (give it an `address_pool`)",
            path.display()
        );
    };
    Ok((cfg, c))
}

/// The communities of `cfg` that take enrolments.
pub(crate) fn enrolling(cfg: &config::Loaded) -> impl Iterator<Item = &CommunityConfig> {
    cfg.core
        .communities
        .iter()
        .filter(|c| c.enrolment.is_some())
}

fn list(path: &Path) -> Result<()> {
    let cfg = config::load(path)?;
    let now = common::unix_micros() / 1_000_000;
    for c in enrolling(&cfg) {
        let file = enrol::path(&cfg.state_dir, &c.name);
        let store = enrol::load(&file)?;
        let e = c.enrolment.as_ref().expect("filtered");
        println!(
            "community {} (pool {}, {}), {}:",
            c.name,
            e.pool,
            if e.secret.is_some() {
                "join secret and tokens"
            } else {
                "tokens only"
            },
            file.display()
        );
        println!(
            "  {:<20} {:<16} {:<46} {:<14} ENROLLED",
            "NAME", "ADDRESS", "KEY", "TOKEN"
        );
        for n in &store.node {
            println!(
                "  {:<20} {:<16} {:<46} {:<14} {}",
                n.name,
                n.address,
                n.public_key,
                n.token.as_deref().unwrap_or("-"),
                ago(Some(now.saturating_sub(n.enrolled) as f64))
            );
        }
        for k in &store.revoked {
            println!("  revoked: {k}");
        }
        for a in &store.quarantined {
            println!(
                "  quarantined: {a} (release with `enrolled release --community {} --address {a}`)",
                c.name
            );
        }
        crate::enrolled_token::print_tokens(&store, now);
    }
    Ok(())
}

fn revoke(path: &Path, community: &str, key: &str, rotate_secret: bool) -> Result<()> {
    let (cfg, _) = self::community(path, community)?;
    metalvpc_protocol::PublicKey::from_base64(key)
        .map_err(|e| anyhow::anyhow!("--key {key}: not a public key ({e})"))?;
    let file = enrol::path(&cfg.state_dir, community);
    let done = enrol::update(&file, |s| enrol::revoke(s, key))?;
    match &done.address {
        Some(a) => println!("revoked {key}: it is refused from now on; its address {a} is quarantined (not handed out again; `enrolled release --community {community} --address {a}` frees it)"),
        None => println!("{key} was not enrolled; it is refused from now on"),
    }
    if let Some(t) = &done.token {
        println!("token {t}, which it enrolled with, is burned: nobody enrols with it again");
    }
    let secret_file = cfg
        .join_secret_files
        .iter()
        .find(|(n, _)| n == community)
        .map(|(_, f)| f.clone());
    match (rotate_secret, secret_file) {
        (true, Some(file)) => {
            rotate(&file)?;
            println!("wrote a new join secret to {}: the revoked server's copy no longer enrols anyone. Copy it to the servers that have yet to enrol (enrolled servers keep their addresses without it)", file.display());
        }
        (true, None) => bail!(
            "{}: community '{community}' has no `join_secret_file` to rotate (the revocation itself is done)",
            path.display()
        ),
        (false, Some(file)) => println!("warning: community '{community}' also enrols with a shared join secret, which the revoked server still holds: it can enrol again with a fresh key until the secret is rotated. Rotate it: run this again with --rotate-secret (it writes a new one to {}) and copy it to the servers that have yet to enrol; better, remove `join_secret_file` and enrol with per-server tokens (`enrolled token create`)", file.display()),
        (false, None) => {}
    }
    crate::signal::reload_running(path, &cfg.management);
    Ok(())
}

/// Writes a new random join secret (32 bytes from the OS, base64) to `file`, mode 600,
/// atomically.
fn rotate(file: &Path) -> Result<()> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    metalvpc_protocol::Rng::from_os().fill(&mut bytes);
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    enrol::write_private(file, format!("{text}\n").as_bytes())
}

fn release(path: &Path, community: &str, address: std::net::IpAddr) -> Result<()> {
    let (cfg, _) = self::community(path, community)?;
    let file = enrol::path(&cfg.state_dir, community);
    let a = address.to_string();
    let was = enrol::update(&file, |s| {
        let before = s.quarantined.len();
        s.quarantined.retain(|q| *q != a);
        Ok(s.quarantined.len() != before)
    })?;
    if !was {
        bail!(
            "{}: address {a} is not quarantined in community '{community}' (see `enrolled list`)",
            file.display()
        );
    }
    println!("released {a}: the pool of community '{community}' may hand it out again");
    crate::signal::reload_running(path, &cfg.management);
    Ok(())
}
