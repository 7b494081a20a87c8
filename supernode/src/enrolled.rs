//! `metalvpc-supernode enrolled list|revoke`: the servers that enrolled with a community's
//! join secret (the store in `state_dir`), and revoking one.

use crate::EnrolAction;
use anyhow::Result;
use metalvpc_common::{self as common, ago};
use metalvpc_supernode::{config, enrol};

pub(crate) fn enrolled(action: EnrolAction) -> Result<()> {
    match action {
        EnrolAction::List { config } => {
            let cfg = config::load(&config)?;
            for c in cfg
                .core
                .communities
                .iter()
                .filter(|c| c.enrolment.is_some())
            {
                let file = enrol::path(&cfg.state_dir, &c.name);
                let store = enrol::load(&file)?;
                println!(
                    "community {} (pool {}), {}:",
                    c.name,
                    c.enrolment
                        .as_ref()
                        .map(|e| e.pool.to_string())
                        .unwrap_or_default(),
                    file.display()
                );
                println!("  {:<20} {:<16} {:<46} ENROLLED", "NAME", "ADDRESS", "KEY");
                for n in &store.node {
                    println!(
                        "  {:<20} {:<16} {:<46} {}",
                        n.name,
                        n.address,
                        n.public_key,
                        ago(Some(
                            (common::unix_micros() / 1_000_000).saturating_sub(n.enrolled) as f64
                        ))
                    );
                }
                for k in &store.revoked {
                    println!("  revoked: {k}");
                }
            }
            Ok(())
        }
        EnrolAction::Revoke {
            config,
            community,
            key,
        } => {
            let cfg = config::load(&config)?;
            if !cfg
                .core
                .communities
                .iter()
                .any(|c| c.name == community && c.enrolment.is_some())
            {
                anyhow::bail!(
                    "{}: community '{community}' does not take enrolments (no `join_secret_file`)",
                    config.display()
                );
            }
            metalvpc_protocol::PublicKey::from_base64(&key)
                .map_err(|e| anyhow::anyhow!("--key {key}: not a public key ({e})"))?;
            let file = enrol::path(&cfg.state_dir, &community);
            match enrol::revoke(&file, &key)? {
                Some(a) => println!(
                    "revoked {key}: address {a} is free again; the key is refused from now on"
                ),
                None => println!("{key} was not enrolled; it is refused from now on"),
            }
            // Tell the running supernode, if there is one.
            match common::query_management(&cfg.management, "/status", &config)
                .ok()
                .and_then(|b| serde_json::from_str::<crate::status::SupernodeReport>(&b).ok())
                .map(|r| r.pid)
                .filter(|pid| *pid != 0)
            {
                // SAFETY: kill(2) with a pid the daemon reported and a plain signal.
                Some(pid) if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } == 0 => {
                    println!("the running supernode (pid {pid}) reloaded: the server is cut off now")
                }
                _ => println!("no running supernode answered; the revocation applies when it starts (or run: systemctl reload metalvpc-supernode)"),
            }
            Ok(())
        }
    }
}
