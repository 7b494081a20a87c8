//! `metalvpc-edge check`: loads a config exactly as `run` would and shows the MTU arithmetic
//! against the route to each supernode, without starting anything.

use crate::mtu::{auto_mtu, underlay_fit};
use anyhow::Result;
use metalvpc_common as common;
use metalvpc_edge::config;
use metalvpc_protocol::overhead::UDP_HEADER;
use std::path::PathBuf;

/// The command: a one-line summary and the MTU per supernode, or every problem found.
pub fn check(path: PathBuf) -> Result<()> {
    let c = config::load(&path)?;
    println!(
        "{}: OK: community '{}', key {}, interface {} {} mtu {} mac {}, udp port {}, {} supernode(s), keepalive {} s, management {}",
        path.display(),
        c.community,
        c.private_key.public_key(),
        c.if_name,
        c.address,
        c.mtu,
        c.mac,
        c.listen_port,
        c.supernodes.len(),
        c.keepalive.as_secs(),
        c.management
    );
    if let Some(w) = config::unsigned_warning(&c) {
        println!("warning: {w}");
    }
    // The MTU arithmetic, against the underlay MTU of the route to each supernode.
    let mut problems = common::Problems::default();
    for (addr, _) in &c.supernodes {
        let Some(fit) = underlay_fit(*addr) else {
            println!(
                "supernode {addr}: no route found to check the MTU against (is the network up?)"
            );
            continue;
        };
        println!(
            "supernode {addr} via {} (MTU {}): {} - {} IP - {UDP_HEADER} UDP - {} data header and tag - {} relay envelope and tag - {} inner Ethernet = {} largest TAP MTU; {}",
            fit.dev,
            fit.underlay,
            fit.underlay,
            fit.ip_header,
            metalvpc_protocol::wire::DATA_OVERHEAD,
            metalvpc_protocol::wire::RELAY_OVERHEAD,
            metalvpc_protocol::eth::ETH_HEADER_LEN,
            fit.largest,
            if c.mtu_explicit {
                format!("configured {}", c.mtu)
            } else {
                format!("`interface.mtu` not set: the edge uses {}", auto_mtu(&c.supernodes).unwrap_or(c.mtu))
            }
        );
        if c.mtu_explicit && c.mtu > fit.largest {
            problems.push(format!(
                "{}: key `interface.mtu` = {} is too large for the route to supernode {addr} via {} (MTU {}): set mtu = {} or less (or remove it: the edge then derives it), or frames will be dropped",
                path.display(),
                c.mtu,
                fit.dev,
                fit.underlay,
                fit.largest
            ));
        }
    }
    problems.finish(&path)
}
