//! What `status` shows, and the table sizes tests and fuzz targets check.

use super::Supernode;
use crate::io::{DropCounters, Traffic};
use crate::keys::{Mac, PublicKey};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// One member as `status` shows it.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// Key.
    pub public_key: PublicKey,
    /// Overlay address.
    pub address: IpAddr,
    /// Id here.
    pub id: u32,
    /// Registered now.
    pub registered: bool,
    /// Observed endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Announced local endpoints.
    pub local_endpoints: Vec<SocketAddr>,
    /// Its MAC.
    pub mac: Option<Mac>,
    /// Seconds since its last packet.
    pub last_seen_secs: Option<f64>,
    /// Seconds since it registered.
    pub registered_secs: Option<f64>,
    /// Control and relay traffic with it.
    pub traffic: Traffic,
}

/// One community as `status` shows it.
#[derive(Debug, Clone)]
pub struct CommunityStatus {
    /// Name.
    pub name: String,
    /// Network.
    pub network: IpNet,
    /// Membership version.
    pub epoch: u64,
    /// Relays allowed.
    pub relay: bool,
    /// Version of the signed membership carried (None: not signed).
    pub signed_version: Option<u64>,
    /// Members.
    pub members: Vec<MemberStatus>,
}

/// Supernode snapshot.
#[derive(Debug, Clone)]
pub struct SupernodeStatus {
    /// Our key.
    pub public_key: PublicKey,
    /// Communities.
    pub communities: Vec<CommunityStatus>,
    /// Drops by reason.
    pub drops: DropCounters,
    /// Registrations refused.
    pub refused: u64,
    /// Registration handshakes accepted (first joins, restarts and rekeys).
    pub registrations: u64,
    /// Cookie replies sent because initiations came faster than the guard's limit.
    pub cookie_replies: u64,
    /// Packets relayed.
    pub relay_packets: u64,
    /// Inner bytes relayed.
    pub relay_bytes: u64,
}

impl Supernode {
    /// A snapshot for `status`.
    pub fn status(&self, now: Instant) -> SupernodeStatus {
        let secs = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
        SupernodeStatus {
            public_key: self.public,
            communities: self
                .table
                .communities()
                .iter()
                .map(|c| CommunityStatus {
                    name: c.name.clone(),
                    network: c.network,
                    epoch: c.epoch,
                    relay: c.relay,
                    signed_version: c.signed.as_ref().map(|s| s.version),
                    members: c
                        .nodes()
                        .iter()
                        .map(|n| MemberStatus {
                            name: n.entry.name.clone(),
                            public_key: n.entry.key,
                            address: n.entry.address,
                            id: n.id,
                            registered: n.reg().is_some(),
                            endpoint: n.reg().map(|r| r.endpoint),
                            local_endpoints: n.reg().map(|r| r.locals.clone()).unwrap_or_default(),
                            mac: n.reg().map(|r| r.mac),
                            last_seen_secs: n.reg().map(|r| secs(r.last_seen)),
                            registered_secs: n.reg().map(|r| secs(r.since)),
                            traffic: n.traffic,
                        })
                        .collect(),
                })
                .collect(),
            drops: self.drops.clone(),
            refused: self.refused,
            registrations: self.registrations,
            cookie_replies: self.guard.replies,
            relay_packets: self.relay_packets,
            relay_bytes: self.relay_bytes,
        }
    }

    /// The sizes of the supernode's tables, by name, to check memory bounds in tests and
    /// fuzz targets: `sessions` (indices of live sessions), `registrations`, `pending`
    /// (registrations waiting for key confirmation, at most one per node), `nodes`
    /// (configured members, fixed), `locals` (announced endpoints, all members), `events`,
    /// `tcp` (TCP fallback sources watched for idleness), `commands`.
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let nodes = self
            .table
            .communities()
            .iter()
            .flat_map(|c| c.nodes().iter());
        let regs = nodes.clone().filter_map(|n| n.reg());
        vec![
            ("sessions", self.table.session_count()),
            ("registrations", regs.clone().count()),
            ("pending", nodes.clone().filter(|n| n.is_pending()).count()),
            ("nodes", nodes.count()),
            ("locals", regs.map(|r| r.locals.len()).sum()),
            ("events", self.events.len()),
            ("tcp", self.tcp.len()),
            ("commands", self.tcp.pending()),
        ]
    }
}
