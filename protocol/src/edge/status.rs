//! The edge as `status` shows it: supernodes, peers with their paths and why, counters.

use super::paths::{choose_path, relay_path, Path};
use super::peers::Peer;
use super::{Edge, DEAD_AFTER, DIRECT_TIMEOUT, PROBE_INTERVAL};
use crate::io::{DropCounters, Traffic};
use crate::keys::{Mac, PublicKey};
use crate::membership::AdminPublicKey;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// One supernode as `status` shows it.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    /// Underlay address.
    pub address: SocketAddr,
    /// Its key.
    pub public_key: PublicKey,
    /// Registration accepted and fresh.
    pub registered: bool,
    /// Our id there.
    pub id: Option<u32>,
    /// Our endpoint as it sees it.
    pub observed_endpoint: Option<SocketAddr>,
    /// Last refusal or failure, for the operator.
    pub error: Option<String>,
    /// Seconds since the last acknowledgement.
    pub last_ack_secs: Option<f64>,
    /// Seconds since this registration began.
    pub registered_secs: Option<f64>,
    /// Reached over the shell's TCP fallback connection (else UDP).
    pub tcp: bool,
}

/// One peer as `status` shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Name from the community file.
    pub name: String,
    /// Static key.
    pub public_key: PublicKey,
    /// Overlay address.
    pub address: IpAddr,
    /// Overlay MAC.
    pub mac: Mac,
    /// Extra ranges it may send from.
    pub allowed_cidrs: Vec<IpNet>,
    /// "direct", "relay" or "none".
    pub path: &'static str,
    /// Why the path is what it is, in words for the operator.
    pub path_reason: String,
    /// Underlay endpoint in use (direct) or the supernode relaying (relay).
    pub endpoint: Option<SocketAddr>,
    /// Endpoints the supernode reported.
    pub endpoints: Vec<SocketAddr>,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<f64>,
    /// Seconds since the last authenticated packet.
    pub last_rx_secs: Option<f64>,
    /// Round-trip time of the path in use, in seconds: a direct path's from probes and their
    /// pongs, a relayed one's from pings through the supernode (None until the first answer,
    /// and while the peer is down).
    pub rtt_secs: Option<f64>,
    /// The direct path's MTU (largest outer IP packet that gets through), once probed.
    pub path_mtu: Option<u16>,
    /// Whether a session is up.
    pub session: bool,
    /// Traffic counters.
    pub traffic: Traffic,
    /// Drops attributed to this peer.
    pub drops: DropCounters,
}

/// A snapshot of the edge for `status`.
#[derive(Debug, Clone)]
pub struct EdgeStatus {
    /// Our key.
    pub public_key: PublicKey,
    /// Our MAC.
    pub mac: Mac,
    /// Random per start.
    pub instance: u64,
    /// Supernodes.
    pub supernodes: Vec<LinkStatus>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Drops not attributable to one peer, plus the sum of the peers'.
    pub drops: DropCounters,
    /// Cookie replies sent because initiations came faster than the guard's limit.
    pub cookie_replies: u64,
    /// ARP requests and neighbour solicitations answered locally.
    pub neighbor_answered: u64,
    /// Copies of broadcast and multicast frames sent to peers (one per peer per frame).
    pub flooded_frames: u64,
    /// Signed membership: None without `admin_key`.
    pub membership: Option<MembershipStatus>,
}

/// The signed membership as `status` shows it (edges with `admin_key`).
#[derive(Debug, Clone)]
pub struct MembershipStatus {
    /// The administrator key configured.
    pub admin_key: AdminPublicKey,
    /// Version of the newest valid list (None: none received yet, so every peer is refused).
    pub version: Option<u64>,
    /// Members on it.
    pub members: usize,
    /// The last list refused, and why.
    pub error: Option<String>,
}

impl Edge {
    /// Why the path to `peer` is `path`, in words for the operator.
    fn path_reason(&self, peer: &Peer, path: &str) -> String {
        let probing = format!(
            "no authenticated packet from the peer's endpoints ({}) within {} s; probing them every {} s (a NAT or firewall between the two blocks direct UDP)",
            peer.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
            DIRECT_TIMEOUT.as_secs(),
            PROBE_INTERVAL.as_secs()
        );
        match path {
            "direct" => format!(
                "authenticated packets arrive straight from {}",
                peer.direct.map(|e| e.to_string()).unwrap_or_default()
            ),
            "relay" => probing,
            _ if !self.cfg.relay => {
                format!("relay_policy is direct-only on this edge, and {probing}")
            }
            _ if self.links.iter().any(|(_, l)| l.registered && !l.relays)
                && relay_path(peer, &self.links, true).is_none() =>
            {
                format!("the community's relay_policy is direct-only, and {probing}")
            }
            _ if peer.current.is_none() && peer.pending.is_some() => {
                "handshake in progress".to_string()
            }
            _ if peer.current.is_none() => "no session".to_string(),
            _ => "no registered supernode lists this peer, and no direct path".to_string(),
        }
    }

    /// A snapshot for `status`.
    pub fn status(&self, now: Instant) -> EdgeStatus {
        let secs = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs_f64());
        let peers = self
            .peers
            .iter()
            .map(|(_, peer)| {
                let dead = peer.last_rx.is_some_and(|t| now.saturating_duration_since(t) >= DEAD_AFTER);
                let (path, endpoint) = match choose_path(peer, &self.links, now, self.cfg.relay) {
                    _ if peer.current.is_none() || dead => ("none", None),
                    Some(Path::Direct(ep)) if peer.direct_active(now).is_some() => {
                        ("direct", Some(ep))
                    }
                    Some(Path::Relay { link, .. }) => ("relay", Some(self.links[link].addr)),
                    _ => ("none", None),
                };
                let path_reason = match peer.last_rx {
                    Some(t) if dead => format!(
                        "nothing heard from the peer for {} s (keepalives every {} s): it is down or unreachable",
                        now.saturating_duration_since(t).as_secs(),
                        self.cfg.keepalive.as_secs()
                    ),
                    _ => self.path_reason(peer, path),
                };
                PeerStatus {
                    name: peer.name.clone(),
                    public_key: peer.key,
                    address: peer.address,
                    mac: peer.mac,
                    allowed_cidrs: peer.allowed.clone(),
                    path,
                    path_reason,
                    endpoint,
                    endpoints: peer.endpoints.clone(),
                    last_handshake_secs: secs(peer.last_handshake),
                    last_rx_secs: secs(peer.last_rx),
                    rtt_secs: match path {
                        "direct" => peer.rtt,
                        "relay" => peer.relay_rtt,
                        _ => None,
                    }
                    .map(|d| d.as_secs_f64()),
                    path_mtu: peer.mtu.get(),
                    session: peer.current.is_some(),
                    traffic: peer.traffic,
                    drops: peer.drops.clone(),
                }
            })
            .collect();
        EdgeStatus {
            public_key: self.public,
            mac: self.cfg.mac,
            instance: self.instance,
            supernodes: self
                .links
                .iter()
                .map(|(_, l)| l)
                .filter(|l| !l.retired)
                .map(|l| LinkStatus {
                    address: l.addr,
                    public_key: l.key,
                    registered: l.registered,
                    id: l.id,
                    observed_endpoint: l.observed,
                    error: l.error.clone(),
                    last_ack_secs: secs(l.last_ack),
                    registered_secs: if l.registered {
                        secs(l.registered_at)
                    } else {
                        None
                    },
                    tcp: self.fallback.uses_tcp(l.addr),
                })
                .collect(),
            peers,
            // Per-peer drops are counted here too (`drop_peer` adds to both).
            drops: self.drops.clone(),
            cookie_replies: self.guard.replies,
            neighbor_answered: self.neighbor_answered,
            flooded_frames: self.flooded_frames,
            membership: self.cfg.admin_key.map(|admin_key| MembershipStatus {
                admin_key,
                version: self.signed.as_ref().map(|(m, _)| m.version),
                members: self.signed.as_ref().map_or(0, |(m, _)| m.members.len()),
                error: self.membership_error.clone(),
            }),
        }
    }
}
