//! `metalvpc-supernode enrolled token create|list|delete`: per-server enrolment tokens, as
//! `kubeadm token create` makes them. A token is `<id>.<secret>`: the id (6 random bytes,
//! 12 hex digits) is public, the secret (16 random bytes from the OS, 32 hex digits) is
//! printed once and never stored: the store keeps a hash of it, the expiry, the uses left
//! and the address it assigns, if fixed.

use crate::TokenAction;
use anyhow::{bail, Result};
use metalvpc_common as common;
use metalvpc_protocol::control::{token_id_hex, token_key, TOKEN_ID_LEN};
use metalvpc_supernode::enrol::{self, Store, StoredToken, MAX_TOKENS};
use std::path::Path;

pub(crate) fn token(action: TokenAction) -> Result<()> {
    match action {
        TokenAction::Create {
            config,
            community,
            ttl,
            uses,
            address,
        } => create(&config, &community, &ttl, uses, address),
        TokenAction::List { config } => {
            let cfg = metalvpc_supernode::config::load(&config)?;
            let now = common::unix_micros() / 1_000_000;
            for c in crate::enrolled::enrolling(&cfg) {
                println!("community {}:", c.name);
                print_tokens(&enrol::load(&enrol::path(&cfg.state_dir, &c.name))?, now);
            }
            Ok(())
        }
        TokenAction::Delete {
            config,
            community,
            id,
        } => {
            let (cfg, _) = crate::enrolled::community(&config, &community)?;
            let file = enrol::path(&cfg.state_dir, &community);
            let id = id.split('.').next().unwrap_or_default().to_string();
            let found = enrol::update(&file, |s| {
                let before = s.token.len();
                s.token.retain(|t| t.id != id);
                Ok(s.token.len() != before)
            })?;
            if !found {
                bail!(
                    "{}: community '{community}' has no token {id} (see `enrolled token list`)",
                    file.display()
                );
            }
            println!("deleted token {id}; servers that enrolled with it stay (revoke them with `enrolled revoke`)");
            crate::signal::reload_running(&config, &cfg.management);
            Ok(())
        }
    }
}

/// Prints a store's tokens, one line each.
pub(crate) fn print_tokens(store: &Store, now: u64) {
    if store.token.is_empty() {
        println!("  no tokens (create one: metalvpc-supernode enrolled token create)");
        return;
    }
    println!("  {:<14} {:<6} {:<22} ADDRESS", "TOKEN", "USES", "EXPIRES");
    for t in &store.token {
        let expires = match t.expires {
            None => "never".to_string(),
            Some(e) if e <= now => "expired".to_string(),
            Some(e) => format!("in {}", human(e - now)),
        };
        let uses = if t.burned {
            "burned".to_string()
        } else {
            t.uses.to_string()
        };
        println!(
            "  {:<14} {:<6} {:<22} {}",
            t.id,
            uses,
            expires,
            t.address.as_deref().unwrap_or("from the pool")
        );
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}m {}s", s / 60, s % 60),
    }
}

/// `--ttl`: a number with s, m, h or d; 0 (or "never"): no expiry.
pub(crate) fn parse_ttl(ttl: &str) -> Result<Option<u64>> {
    let t = ttl.trim();
    if t == "0" || t == "never" {
        return Ok(None);
    }
    let (n, unit) = t.split_at(t.len().saturating_sub(1));
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl {ttl}: give a number and a unit: 30m, 24h, 7d (0: never expires)"),
    };
    match n.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n.saturating_mul(mult))),
        _ => bail!("--ttl {ttl}: give a number and a unit: 30m, 24h, 7d (0: never expires)"),
    }
}

fn create(
    path: &Path,
    community: &str,
    ttl: &str,
    uses: u32,
    address: Option<std::net::IpAddr>,
) -> Result<()> {
    let ttl = parse_ttl(ttl)?;
    if uses == 0 {
        bail!("--uses 0: a token must admit at least one server");
    }
    let (cfg, c) = crate::enrolled::community(path, community)?;
    if let Some(a) = address {
        if !c.network.contains(&a) {
            bail!(
                "--address {a} is outside community '{community}''s network {}",
                c.network
            );
        }
        if let Some(n) = c.nodes.iter().find(|n| n.address == a) {
            bail!(
                "--address {a} belongs to member '{}' of community '{community}'",
                n.name
            );
        }
    }
    let mut rng = metalvpc_protocol::Rng::from_os();
    let mut id = [0u8; TOKEN_ID_LEN];
    rng.fill(&mut id);
    let mut secret = [0u8; 16];
    rng.fill(&mut secret);
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let id = token_id_hex(&id);
    let now = common::unix_micros() / 1_000_000;
    let file = enrol::path(&cfg.state_dir, community);
    enrol::update(&file, |s| {
        // Expired and used-up tokens make room (a burned one stays listed until deleted).
        s.token
            .retain(|t| t.burned || (t.uses > 0 && t.expires.is_none_or(|e| e > now)));
        if s.token.len() >= MAX_TOKENS {
            bail!("{}: community '{community}' has {MAX_TOKENS} tokens already; delete some (`enrolled token list`, `enrolled token delete ID`)", file.display());
        }
        if let Some(a) = address {
            let a = a.to_string();
            if s.quarantined.contains(&a) || s.node.iter().any(|n| n.address == a) {
                bail!("--address {a} is in use or quarantined in community '{community}' (see `enrolled list`)");
            }
        }
        s.token.push(StoredToken {
            id: id.clone(),
            hash: token_key(secret.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            created: now,
            expires: ttl.map(|t| now + t),
            uses,
            address: address.map(|a| a.to_string()),
            burned: false,
        });
        Ok(())
    })?;
    println!("{id}.{secret}");
    eprintln!(
        "token {id} for community '{community}': {uses} use(s), {}, address {}.\n\
         On the new server: write it to the edge's token file with mode 600, e.g.\n  \
         (umask 077; echo '{id}.{secret}' > /etc/metalvpc/{community}.token)\n\
         and set `join_token_file = \"{community}.token\"` in its edge config (no [interface] address).",
        ttl.map_or("never expires".to_string(), |t| format!("expires in {}", human(t))),
        address.map_or("from the pool".to_string(), |a| a.to_string())
    );
    crate::signal::reload_running(path, &cfg.management);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_zero_means_never() {
        assert_eq!(parse_ttl("24h").unwrap(), Some(86_400));
        assert_eq!(parse_ttl("30m").unwrap(), Some(1800));
        assert_eq!(parse_ttl("7d").unwrap(), Some(7 * 86_400));
        assert_eq!(parse_ttl("0").unwrap(), None);
        for bad in ["", "h", "24", "-1h", "1y", "0h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
