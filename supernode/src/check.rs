//! `metalvpc-supernode check`: loads a config, its community files and the key exactly as
//! `run` would and prints a summary per community, without starting anything.

use anyhow::Result;
use metalvpc_supernode::config;
use std::path::PathBuf;

/// The command: the summary, notes worth a look, or every problem found.
pub fn check(path: PathBuf) -> Result<()> {
    let cfg = config::load(&path)?;
    let nodes: usize = cfg.core.communities.iter().map(|c| c.nodes.len()).sum();
    println!(
        "{}: OK: listen {}, key {}, {} communities, {} nodes, management {}",
        path.display(),
        cfg.listen,
        cfg.core.private_key.public_key(),
        cfg.core.communities.len(),
        nodes,
        cfg.management
    );
    for w in config::unsigned_warnings(&cfg) {
        println!("warning: {w}");
    }
    for c in &cfg.core.communities {
        println!(
            "community {} ({}): {} nodes, relay_policy {}",
            c.name,
            c.network,
            c.nodes.len(),
            if c.relay { "allow" } else { "direct-only" }
        );
        if let Some(signed) = &c.signed {
            println!(
                "  members from a signed membership, version {} (verified against admin_key)",
                signed.version
            );
        }
        // Shared ranges are legitimate (a floating address that moves between nodes) but
        // worth a look: say which.
        for (i, a) in c.nodes.iter().enumerate() {
            for b in &c.nodes[i + 1..] {
                for x in &a.allowed_cidrs {
                    if let Some(y) = b
                        .allowed_cidrs
                        .iter()
                        .find(|y| x.contains(*y) || y.contains(x))
                    {
                        println!(
                            "  note: nodes '{}' ({x}) and '{}' ({y}) may both send from overlapping ranges (fine for a floating address)",
                            a.name, b.name
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
