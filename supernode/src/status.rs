//! What the running supernode reports: [`SupernodeReport`] is `status --json` (and
//! `GET /status`); the `status` table and the Prometheus page (`GET /metrics`) are rendered
//! from the same type.
//!
//! The field names are a contract with scripts and the integration tests: add fields, never
//! rename one. The JSON has its keys in name order, as it always had (it was a sorted map):
//! [`common::report::to_json`] sorts them, the parts both daemons report
//! ([`SelfReport`], [`NodeReport`]) flattened in among the others. Fields are declared in
//! name order, but for the ones of a peer or member, grouped by what they say. Reading is
//! lenient:
//! missing fields take their defaults and unknown ones are ignored.

use anyhow::Result;
use common::report::{NodeReport, SelfReport};
use metalvpc_common::{self as common, ago, human_bytes, MgmtRequest};
use metalvpc_protocol::supernode::{Supernode, SupernodeStatus};
use metalvpc_supernode::config;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

/// `status --json` of a supernode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupernodeReport {
    pub communities: Vec<CommunityReport>,
    /// The UDP (and TCP) listen address.
    pub listen: String,
    /// The daemon's process id (`enrolled revoke` signals it to reload).
    pub pid: u32,
    /// Registrations refused.
    pub refused: u64,
    /// Registration handshakes accepted.
    pub registrations: u64,
    pub relay: RelayReport,
    /// `cookie_replies`, `drops`, `public_key`, `reloads`.
    #[serde(flatten)]
    pub this: SelfReport,
    /// Edges connected over the TCP fallback.
    pub tcp_connections: u64,
}

/// [`SupernodeReport::relay`]: traffic relayed between members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayReport {
    pub bytes: u64,
    pub packets: u64,
}

/// One community in [`SupernodeReport::communities`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommunityReport {
    /// Membership version.
    pub epoch: u64,
    pub members: Vec<MemberReport>,
    pub name: String,
    pub network: String,
    /// "allow" or "direct-only".
    pub relay_policy: String,
    pub signed_membership_version: Option<u64>,
}

/// One member in [`CommunityReport::members`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberReport {
    // Who it is.
    /// `address`, `name`, `public_key`.
    #[serde(flatten)]
    pub node: NodeReport,
    pub mac: Option<String>,
    pub id: u32,
    // Where it is reached.
    /// Observed endpoint.
    pub endpoint: Option<String>,
    pub local_endpoints: Vec<String>,
    // Its registration.
    pub registered: bool,
    pub registered_secs: Option<f64>,
    pub last_seen_secs: Option<f64>,
    // Traffic.
    pub relay_rx_bytes: u64,
    pub relay_tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

impl SupernodeReport {
    /// The report from the core's snapshot and what the shell knows.
    pub fn new(
        st: &SupernodeStatus,
        listen: SocketAddr,
        tcp_connections: usize,
        reloads: &common::ReloadStats,
    ) -> SupernodeReport {
        SupernodeReport {
            communities: st
                .communities
                .iter()
                .map(|c| CommunityReport {
                    epoch: c.epoch,
                    members: c
                        .members
                        .iter()
                        .map(|m| MemberReport {
                            endpoint: m.endpoint.map(|e| e.to_string()),
                            id: m.id,
                            last_seen_secs: m.last_seen_secs,
                            local_endpoints: m
                                .local_endpoints
                                .iter()
                                .map(|e| e.to_string())
                                .collect(),
                            mac: m.mac.map(|x| x.to_string()),
                            node: NodeReport::new(m.address, &m.name, &m.public_key),
                            registered: m.registered,
                            registered_secs: m.registered_secs,
                            relay_rx_bytes: m.traffic.rx_bytes,
                            relay_tx_bytes: m.traffic.tx_bytes,
                            rx_packets: m.traffic.rx_packets,
                            tx_packets: m.traffic.tx_packets,
                        })
                        .collect(),
                    name: c.name.clone(),
                    network: c.network.to_string(),
                    relay_policy: if c.relay { "allow" } else { "direct-only" }.to_string(),
                    signed_membership_version: c.signed_version,
                })
                .collect(),
            listen: listen.to_string(),
            pid: std::process::id(),
            refused: st.refused,
            registrations: st.registrations,
            relay: RelayReport {
                bytes: st.relay_bytes,
                packets: st.relay_packets,
            },
            this: SelfReport::new(&st.public_key, st.cookie_replies, &st.drops, reloads),
            tcp_connections: tcp_connections as u64,
        }
    }
}

/// Answers a management request (`/status`, `/metrics`) from the core's state now.
pub fn answer(
    req: MgmtRequest,
    core: &Supernode,
    listen: SocketAddr,
    tcp_connections: usize,
    reloads: &common::ReloadStats,
) {
    req.answer(
        || {
            SupernodeReport::new(
                &core.status(Instant::now()),
                listen,
                tcp_connections,
                reloads,
            )
        },
        metrics,
    );
}

/// `status`: asks the daemon started with this config; prints its JSON or a table.
pub fn status(path: PathBuf, as_json: bool) -> Result<()> {
    let (mgmt, _) = config::load_meta(&path)?;
    let load = || config::load(&path).map(drop);
    common::status_command(&mgmt, &path, load, as_json, table)
}

/// The `status` table.
pub fn table(r: &SupernodeReport) -> String {
    let mut w = String::new();
    let _ = writeln!(w, "supernode {}  key {}", r.listen, r.this.public_key);
    let _ = writeln!(
        w,
        "relayed {} packets ({}), refused {} registrations",
        r.relay.packets,
        human_bytes(r.relay.bytes),
        r.refused
    );
    for c in &r.communities {
        let _ = writeln!(w, "\ncommunity {} ({})", c.name, c.network);
        let _ = writeln!(
            w,
            "  {:<16} {:<16} {:<12} {:<24} {:<10}",
            "NAME", "ADDRESS", "STATE", "ENDPOINT", "SEEN"
        );
        for m in &c.members {
            let _ = writeln!(
                w,
                "  {:<16} {:<16} {:<12} {:<24} {:<10}",
                m.node.label(),
                m.node.address,
                if m.registered {
                    "registered"
                } else {
                    "offline"
                },
                m.endpoint.as_deref().unwrap_or("-"),
                ago(m.last_seen_secs),
            );
        }
    }
    let _ = writeln!(w, "\ndrops: {}", r.this.drops.line());
    w
}

/// The Prometheus page, from the same report as `status --json`.
pub fn metrics(r: &SupernodeReport) -> String {
    let mut m = common::Metrics::default();
    m.family(
        "metalvpc_supernode_members",
        "gauge",
        "Members configured per community.",
    );
    for c in &r.communities {
        m.sample(
            "metalvpc_supernode_members",
            &[("community", &c.name)],
            c.members.len() as f64,
        );
    }
    m.family(
        "metalvpc_supernode_registered_members",
        "gauge",
        "Members registered now per community.",
    );
    for c in &r.communities {
        let registered = c.members.iter().filter(|x| x.registered).count();
        m.sample(
            "metalvpc_supernode_registered_members",
            &[("community", &c.name)],
            registered as f64,
        );
    }
    type MemberValue = fn(&MemberReport) -> u64;
    let per_member: [(&str, MemberValue, &str); 2] = [
        (
            "metalvpc_supernode_member_relay_rx_bytes_total",
            |x| x.relay_rx_bytes,
            "Bytes a member sent through this supernode's relay.",
        ),
        (
            "metalvpc_supernode_member_relay_tx_bytes_total",
            |x| x.relay_tx_bytes,
            "Bytes relayed to a member.",
        ),
    ];
    for (metric, value, help) in per_member {
        m.family(metric, "counter", help);
        for c in &r.communities {
            for member in &c.members {
                m.sample(
                    metric,
                    &[
                        ("community", &c.name),
                        ("member", member.node.label()),
                        ("address", &member.node.address),
                    ],
                    value(member) as f64,
                );
            }
        }
    }
    m.single(
        "metalvpc_supernode_registrations_total",
        "counter",
        "Registration handshakes accepted.",
        r.registrations as f64,
    )
    .single(
        "metalvpc_supernode_refused_total",
        "counter",
        "Registrations refused (unknown key, community or address).",
        r.refused as f64,
    )
    .single(
        "metalvpc_supernode_relay_packets_total",
        "counter",
        "Packets relayed between members.",
        r.relay.packets as f64,
    )
    .single(
        "metalvpc_supernode_relay_bytes_total",
        "counter",
        "Bytes relayed between members (still end-to-end encrypted).",
        r.relay.bytes as f64,
    )
    .single(
        "metalvpc_supernode_tcp_connections",
        "gauge",
        "Edges connected over the TCP fallback.",
        r.tcp_connections as f64,
    )
    .self_report("metalvpc_supernode", "Packets dropped, by reason.", &r.this);
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_protocol::io::Traffic;
    use metalvpc_protocol::supernode::{CommunityStatus, MemberStatus};
    use metalvpc_protocol::{DropReason, Mac};

    use metalvpc_common::testing::public_key as key;

    /// Two communities (one signed, one empty), a registered named member and an offline
    /// unnamed one, drops.
    fn fixture() -> SupernodeStatus {
        let mut drops = metalvpc_protocol::DropCounters::default();
        drops.add(DropReason::NotMember);
        drops.add(DropReason::NotMember);
        SupernodeStatus {
            public_key: key(1),
            communities: vec![
                CommunityStatus {
                    name: "prod".into(),
                    network: "10.10.0.0/24".parse().unwrap(),
                    epoch: 3,
                    relay: true,
                    signed_version: Some(8),
                    members: vec![
                        MemberStatus {
                            name: "a".into(),
                            public_key: key(2),
                            address: "10.10.0.1".parse().unwrap(),
                            id: 1,
                            registered: true,
                            endpoint: Some("198.51.100.1:7655".parse().unwrap()),
                            local_endpoints: vec!["10.1.0.1:7655".parse().unwrap()],
                            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
                            last_seen_secs: Some(1.5),
                            registered_secs: Some(100.25),
                            traffic: Traffic {
                                rx_bytes: 10,
                                tx_bytes: 20,
                                rx_packets: 1,
                                tx_packets: 2,
                            },
                        },
                        MemberStatus {
                            name: String::new(),
                            public_key: key(3),
                            address: "10.10.0.2".parse().unwrap(),
                            id: 2,
                            registered: false,
                            endpoint: None,
                            local_endpoints: vec![],
                            mac: None,
                            last_seen_secs: None,
                            registered_secs: None,
                            traffic: Traffic::default(),
                        },
                    ],
                },
                CommunityStatus {
                    name: "dev".into(),
                    network: "fd10::/64".parse().unwrap(),
                    epoch: 0,
                    relay: false,
                    signed_version: None,
                    members: vec![],
                },
            ],
            drops,
            refused: 5,
            registrations: 6,
            cookie_replies: 7,
            relay_packets: 8,
            relay_bytes: 9000,
        }
    }

    #[test]
    fn json_metrics_and_table_are_what_they_were() {
        let reloads = common::ReloadStats {
            ok: 1,
            failed: 2,
            last_error: Some("x: \"y\"".into()),
            last: None,
        };
        let mut r = SupernodeReport::new(&fixture(), "0.0.0.0:7654".parse().unwrap(), 3, &reloads);
        assert_eq!(r.pid, std::process::id());
        r.pid = 4242;
        // Captured from the untyped renderer before the report types.
        let json = include_str!("../testdata/status.json");
        assert_eq!(common::report::to_json(&r).unwrap(), json.trim_end());
        assert_eq!(metrics(&r), include_str!("../testdata/metrics.txt"));
        assert_eq!(table(&r), include_str!("../testdata/table.txt"));
        let back: SupernodeReport = serde_json::from_str(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn reading_tolerates_unknown_and_missing_fields() {
        let r: SupernodeReport = serde_json::from_str(
            r#"{"listen":"0.0.0.0:1","later":[1],"relay":{"packets":2,"x":0}}"#,
        )
        .unwrap();
        assert_eq!(
            (r.listen.as_str(), r.relay.packets, r.pid),
            ("0.0.0.0:1", 2, 0)
        );
    }
}
