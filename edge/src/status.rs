//! What the running edge reports: [`EdgeReport`] is `status --json` (and `GET /status`); the
//! `status` table and the Prometheus page (`GET /metrics`) are rendered from the same type.
//!
//! The field names are a contract with scripts and the integration tests: add fields, never
//! rename one. The JSON has its keys in name order, as it always had (it was a sorted map):
//! [`common::report::to_json`] sorts them, the parts both daemons report
//! ([`SelfReport`], [`NodeReport`]) flattened in among the others. Fields are declared in
//! name order, but for the ones of a peer or member, grouped by what they say. Reading is
//! lenient: a field the daemon does not send takes its default and one it sends that we do
//! not know is ignored, so a `status` of another version still prints.

use crate::config;
use anyhow::Result;
use common::report::{NodeReport, SelfReport};
use metalvpc_common::{self as common, ago, human_bytes, Drops, MgmtRequest};
use metalvpc_protocol::edge::{Edge, EdgeStatus};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the shell knows that the core does not (the core's snapshot has the rest).
pub struct Info {
    pub community: String,
    pub address: String,
    pub interface: String,
    pub mtu: u32,
    pub listen_port: u16,
    /// Follows reloads.
    pub keepalive: Duration,
    pub address6: Option<String>,
    /// Why the last write of `membership_cache` failed (None: it did not, or none yet).
    pub membership_cache_error: Option<String>,
}

/// `status --json` of an edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeReport {
    /// Overlay address and prefix of the TAP device.
    pub address: String,
    pub address6: Option<String>,
    pub community: String,
    pub interface: String,
    pub keepalive_secs: u64,
    pub listen_port: u16,
    pub mac: String,
    /// None without `admin_key`.
    pub membership: Option<MembershipReport>,
    pub mtu: u32,
    pub neighbor_suppression: NeighborReport,
    pub peers: Vec<PeerReport>,
    /// Registered with at least one supernode.
    pub registered: bool,
    /// `cookie_replies`, `drops`, `public_key`, `reloads`.
    #[serde(flatten)]
    pub this: SelfReport,
    pub supernodes: Vec<SupernodeLinkReport>,
    /// Frames the kernel handed over on the TAP device that could not be segmented (dropped).
    pub tap_bad_frames: u64,
}

/// One supernode in [`EdgeReport::supernodes`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupernodeLinkReport {
    pub address: String,
    pub error: Option<String>,
    pub id: Option<u32>,
    pub last_ack_secs: Option<f64>,
    pub observed_endpoint: Option<String>,
    pub public_key: String,
    pub registered: bool,
    pub registered_secs: Option<f64>,
    /// "udp", or "tcp" over the fallback.
    pub transport: String,
}

/// One peer in [`EdgeReport::peers`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerReport {
    // Who it is.
    /// `address`, `name`, `public_key`.
    #[serde(flatten)]
    pub node: NodeReport,
    pub mac: String,
    pub allowed_cidrs: Vec<String>,
    // Where it is reached, and when it was last heard from.
    pub endpoint: Option<String>,
    pub endpoints: Vec<String>,
    pub last_handshake_secs: Option<f64>,
    pub last_rx_secs: Option<f64>,
    // The path in use.
    /// "direct", "relay" or "none".
    pub path: String,
    pub path_reason: String,
    pub path_mtu: Option<u16>,
    #[serde(rename = "rtt_ms")]
    pub rtt: Option<Rtt>,
    pub session: bool,
    // Traffic.
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub drops: Drops,
}

/// [`EdgeReport::neighbor_suppression`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NeighborReport {
    /// ARP requests and neighbour solicitations answered locally.
    pub answered: u64,
    /// Copies of broadcast and multicast frames sent to peers.
    pub flooded_frames: u64,
}

/// [`EdgeReport::membership`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembershipReport {
    pub admin_key: String,
    /// The last write of `membership_cache` failed: why (rollback protection is lost at the
    /// next restart until it succeeds).
    pub cache_error: Option<String>,
    pub error: Option<String>,
    pub members: u64,
    /// None: no valid list received yet.
    pub version: Option<u64>,
}

/// A round-trip time in whole microseconds: the precision `status --json` shows it with
/// (`rtt_ms`, three decimals). Whole units keep the renderings free of float noise: an
/// integer divided by a power of ten is the double nearest the decimal, so 141 µs is
/// `0.141` ms and `0.000141` s (0.141 / 1000 would print 0.00014099999999999998).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rtt {
    micros: u64,
}

impl Rtt {
    /// From the core's seconds.
    pub fn from_secs(secs: f64) -> Rtt {
        Rtt {
            micros: (secs * 1e6).round() as u64,
        }
    }
    /// In milliseconds (JSON and the table).
    pub fn ms(self) -> f64 {
        self.micros as f64 / 1e3
    }
    /// In seconds (metrics).
    pub fn secs(self) -> f64 {
        self.micros as f64 / 1e6
    }
}

impl Serialize for Rtt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.ms())
    }
}

impl<'de> Deserialize<'de> for Rtt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rtt, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Rtt {
            micros: (ms * 1e3).round() as u64,
        })
    }
}

impl EdgeReport {
    /// The report from the core's snapshot and what the shell knows.
    pub fn new(
        st: &EdgeStatus,
        info: &Info,
        transport: &common::Transport,
        reloads: &common::ReloadStats,
        tap_bad_frames: u64,
    ) -> EdgeReport {
        EdgeReport {
            address: info.address.clone(),
            address6: info.address6.clone(),
            community: info.community.clone(),
            interface: info.interface.clone(),
            keepalive_secs: info.keepalive.as_secs(),
            listen_port: info.listen_port,
            mac: st.mac.to_string(),
            membership: st.membership.as_ref().map(|m| MembershipReport {
                admin_key: m.admin_key.to_base64(),
                cache_error: info.membership_cache_error.clone(),
                error: m.error.clone(),
                members: m.members as u64,
                version: m.version,
            }),
            mtu: info.mtu,
            neighbor_suppression: NeighborReport {
                answered: st.neighbor_answered,
                flooded_frames: st.flooded_frames,
            },
            peers: st
                .peers
                .iter()
                .map(|p| PeerReport {
                    allowed_cidrs: p.allowed_cidrs.iter().map(|c| c.to_string()).collect(),
                    drops: Drops::from(&p.drops),
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    endpoints: p.endpoints.iter().map(|e| e.to_string()).collect(),
                    last_handshake_secs: p.last_handshake_secs,
                    last_rx_secs: p.last_rx_secs,
                    mac: p.mac.to_string(),
                    node: NodeReport::new(p.address, &p.name, &p.public_key),
                    path: p.path.to_string(),
                    path_mtu: p.path_mtu,
                    path_reason: p.path_reason.clone(),
                    rtt: p.rtt_secs.map(Rtt::from_secs),
                    rx_bytes: p.traffic.rx_bytes,
                    rx_packets: p.traffic.rx_packets,
                    session: p.session,
                    tx_bytes: p.traffic.tx_bytes,
                    tx_packets: p.traffic.tx_packets,
                })
                .collect(),
            registered: st.supernodes.iter().any(|s| s.registered),
            this: SelfReport::new(&st.public_key, st.cookie_replies, &st.drops, reloads),
            supernodes: st
                .supernodes
                .iter()
                .map(|s| SupernodeLinkReport {
                    address: s.address.to_string(),
                    error: s.error.clone(),
                    id: s.id,
                    last_ack_secs: s.last_ack_secs,
                    observed_endpoint: s.observed_endpoint.map(|e| e.to_string()),
                    public_key: s.public_key.to_base64(),
                    registered: s.registered,
                    registered_secs: s.registered_secs,
                    transport: if transport.tcp.contains_key(&s.address) {
                        "tcp"
                    } else {
                        "udp"
                    }
                    .to_string(),
                })
                .collect(),
            tap_bad_frames,
        }
    }
}

/// Answers a management request (`/status`, `/metrics`) from the core's state now.
pub fn answer(
    req: MgmtRequest,
    core: &Edge,
    info: &Info,
    transport: &common::Transport,
    reloads: &common::ReloadStats,
    tap_bad_frames: u64,
) {
    req.answer(
        || {
            EdgeReport::new(
                &core.status(Instant::now()),
                info,
                transport,
                reloads,
                tap_bad_frames,
            )
        },
        metrics,
    );
}

/// `status`: asks the daemon started with this config; prints its JSON or a table.
pub fn status(path: PathBuf, as_json: bool) -> Result<()> {
    let mgmt = config::load_management(&path)?;
    let load = || config::load(&path).map(drop);
    common::status_command(&mgmt, &path, load, as_json, table)
}

/// The `status` table.
pub fn table(r: &EdgeReport) -> String {
    let dash = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".to_string());
    let mut w = String::new();
    let _ = writeln!(
        w,
        "community {}  interface {} {} mtu {}  mac {}",
        r.community, r.interface, r.address, r.mtu, r.mac
    );
    let _ = writeln!(
        w,
        "public key {}  udp port {}",
        r.this.public_key, r.listen_port
    );
    for sn in &r.supernodes {
        let state = if sn.registered {
            format!(
                "registered over {}, seen as {}",
                sn.transport,
                dash(&sn.observed_endpoint)
            )
        } else {
            format!(
                "NOT registered: {}",
                sn.error.as_deref().unwrap_or("connecting")
            )
        };
        let _ = writeln!(w, "supernode {}  {}", sn.address, state);
    }
    let _ = writeln!(
        w,
        "\n{:<16} {:<15} {:<7} {:<22} {:>8} {:<12} {:>10} {:>10}",
        "PEER", "ADDRESS", "PATH", "ENDPOINT", "RTT", "HANDSHAKE", "RX", "TX"
    );
    for p in &r.peers {
        let rtt = p
            .rtt
            .map_or("-".to_string(), |rtt| format!("{:.2}ms", rtt.ms()));
        let _ = writeln!(
            w,
            "{:<16} {:<15} {:<7} {:<22} {:>8} {:<12} {:>10} {:>10}",
            p.node.label(),
            p.node.address,
            p.path,
            dash(&p.endpoint),
            rtt,
            ago(p.last_handshake_secs),
            human_bytes(p.rx_bytes),
            human_bytes(p.tx_bytes),
        );
    }
    if let Some(m) = &r.membership {
        let _ = writeln!(
            w,
            "\nsigned membership: {}{}",
            m.version.map_or(
                "no valid list yet (every peer refused)".to_string(),
                |x| format!("version {x}, {} members", m.members)
            ),
            m.error
                .as_deref()
                .map(|e| format!("; last refused: {e}"))
                .unwrap_or_default()
        );
        if let Some(e) = &m.cache_error {
            let _ = writeln!(w, "ERROR: {e}");
        }
    }
    let mut drops = r.this.drops.line();
    if r.tap_bad_frames != 0 {
        let bad = format!("tap_bad_frames={}", r.tap_bad_frames);
        drops = if drops == "none" {
            bad
        } else {
            format!("{drops} {bad}")
        };
    }
    let _ = writeln!(w, "\ndrops: {drops}");
    w
}

/// The Prometheus page, from the same report as `status --json`.
pub fn metrics(r: &EdgeReport) -> String {
    let mut m = common::Metrics::default();
    m.family(
        "metalvpc_edge_info",
        "gauge",
        "This edge (always 1; the labels say which).",
    )
    .sample(
        "metalvpc_edge_info",
        &[
            ("community", &r.community),
            ("interface", &r.interface),
            ("address", &r.address),
            ("public_key", &r.this.public_key),
        ],
        1.0,
    );
    m.family(
        "metalvpc_edge_supernode_registered",
        "gauge",
        "1 while the supernode has accepted our registration.",
    );
    for sn in &r.supernodes {
        m.sample(
            "metalvpc_edge_supernode_registered",
            &[("supernode", &sn.address), ("transport", &sn.transport)],
            f64::from(u8::from(sn.registered)),
        );
    }
    m.single(
        "metalvpc_edge_peers",
        "gauge",
        "Peers known.",
        r.peers.len() as f64,
    );
    type PeerValue = fn(&PeerReport) -> Option<f64>;
    let per_peer: [(&str, &str, PeerValue, &str); 6] = [
        (
            "metalvpc_edge_peer_rx_bytes_total",
            "counter",
            |p| Some(p.rx_bytes as f64),
            "Frame bytes received from the peer.",
        ),
        (
            "metalvpc_edge_peer_tx_bytes_total",
            "counter",
            |p| Some(p.tx_bytes as f64),
            "Frame bytes sent to the peer.",
        ),
        (
            "metalvpc_edge_peer_rx_packets_total",
            "counter",
            |p| Some(p.rx_packets as f64),
            "Frames received from the peer.",
        ),
        (
            "metalvpc_edge_peer_tx_packets_total",
            "counter",
            |p| Some(p.tx_packets as f64),
            "Frames sent to the peer.",
        ),
        (
            "metalvpc_edge_peer_handshake_age_seconds",
            "gauge",
            |p| p.last_handshake_secs,
            "Seconds since the last completed handshake with the peer.",
        ),
        (
            "metalvpc_edge_peer_rtt_seconds",
            "gauge",
            |p| p.rtt.map(Rtt::secs),
            "Round-trip time of the path in use (direct: probes; relayed: pings through the supernode).",
        ),
    ];
    for (metric, kind, value, help) in per_peer {
        m.family(metric, kind, help);
        for p in &r.peers {
            if let Some(v) = value(p) {
                m.sample(
                    metric,
                    &[("peer", p.node.label()), ("address", &p.node.address)],
                    v,
                );
            }
        }
    }
    m.family(
        "metalvpc_edge_peer_path",
        "gauge",
        "1 for the path the peer is reached over now: direct, relay or none.",
    );
    for p in &r.peers {
        for path in ["direct", "relay", "none"] {
            m.sample(
                "metalvpc_edge_peer_path",
                &[
                    ("peer", p.node.label()),
                    ("address", &p.node.address),
                    ("path", path),
                ],
                f64::from(u8::from(p.path == path)),
            );
        }
    }
    m.single(
        "metalvpc_edge_neighbor_answered_total",
        "counter",
        "ARP requests and neighbour solicitations for members answered locally.",
        r.neighbor_suppression.answered as f64,
    )
    .single(
        "metalvpc_edge_flooded_frames_total",
        "counter",
        "Copies of broadcast and multicast frames sent to peers.",
        r.neighbor_suppression.flooded_frames as f64,
    )
    .single(
        "metalvpc_edge_tap_bad_frames_total",
        "counter",
        "Frames read from the TAP device that could not be segmented (dropped).",
        r.tap_bad_frames as f64,
    )
    .self_report(
        "metalvpc_edge",
        "Packets and frames dropped, by reason.",
        &r.this,
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_protocol::edge::{LinkStatus, MembershipStatus, PeerStatus};
    use metalvpc_protocol::io::Traffic;
    use metalvpc_protocol::{DropReason, Mac};

    use metalvpc_common::testing::public_key as key;

    /// A snapshot with every kind of value: two supernodes (one refused), a named direct
    /// peer and an unnamed relayed one, drops, signed membership.
    fn fixture() -> (EdgeStatus, Info) {
        let mut drops = metalvpc_protocol::DropCounters::default();
        drops.add(DropReason::Replay);
        drops.add(DropReason::TooBig);
        let mut pdrops = metalvpc_protocol::DropCounters::default();
        pdrops.add(DropReason::DecryptFailed);
        let st = EdgeStatus {
            public_key: key(1),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            instance: 7,
            supernodes: vec![
                LinkStatus {
                    address: "192.0.2.1:7654".parse().unwrap(),
                    public_key: key(2),
                    registered: true,
                    id: Some(3),
                    observed_endpoint: Some("198.51.100.1:40000".parse().unwrap()),
                    error: None,
                    last_ack_secs: Some(1.25),
                    registered_secs: Some(30.5),
                    tcp: false,
                },
                LinkStatus {
                    address: "[2001:db8::1]:7654".parse().unwrap(),
                    public_key: key(3),
                    registered: false,
                    id: None,
                    observed_endpoint: None,
                    error: Some("refused: \"unknown key\"".into()),
                    last_ack_secs: None,
                    registered_secs: None,
                    tcp: false,
                },
            ],
            peers: vec![
                PeerStatus {
                    name: "b".into(),
                    public_key: key(4),
                    address: "10.0.0.2".parse().unwrap(),
                    mac: Mac([2, 0, 0, 0, 0, 2]),
                    allowed_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
                    path: "direct",
                    path_reason: "probes answered".into(),
                    endpoint: Some("198.51.100.2:7655".parse().unwrap()),
                    endpoints: vec![
                        "198.51.100.2:7655".parse().unwrap(),
                        "10.1.0.2:7655".parse().unwrap(),
                    ],
                    last_handshake_secs: Some(12.0),
                    last_rx_secs: Some(0.5),
                    rtt_secs: Some(0.000141),
                    path_mtu: Some(1500),
                    session: true,
                    traffic: Traffic {
                        rx_bytes: 1_234_567,
                        tx_bytes: 7_654_321,
                        rx_packets: 1000,
                        tx_packets: 2000,
                    },
                    drops: pdrops,
                },
                PeerStatus {
                    name: String::new(),
                    public_key: key(5),
                    address: "10.0.0.3".parse().unwrap(),
                    mac: Mac([2, 0, 0, 0, 0, 3]),
                    allowed_cidrs: vec![],
                    path: "relay",
                    path_reason: "no direct answer".into(),
                    endpoint: None,
                    endpoints: vec![],
                    last_handshake_secs: None,
                    last_rx_secs: None,
                    rtt_secs: Some(0.012345),
                    path_mtu: None,
                    session: false,
                    traffic: Traffic::default(),
                    drops: Default::default(),
                },
            ],
            drops,
            cookie_replies: 4,
            neighbor_answered: 5,
            flooded_frames: 6,
            membership: Some(MembershipStatus {
                admin_key: metalvpc_protocol::membership::AdminPublicKey([9; 32]),
                version: Some(11),
                members: 3,
                error: Some("too old".into()),
            }),
        };
        let info = Info {
            community: "prod".into(),
            address: "10.0.0.1/24".into(),
            interface: "mv-prod".into(),
            mtu: 1390,
            listen_port: 7655,
            keepalive: Duration::from_secs(25),
            address6: Some("fd10::1/64".into()),
            membership_cache_error: None,
        };
        (st, info)
    }

    fn report(st: &EdgeStatus, info: &Info, reloads: &common::ReloadStats) -> EdgeReport {
        let transport =
            common::Transport::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        EdgeReport::new(st, info, &transport, reloads, 0)
    }

    /// The JSON and the page the untyped renderer produced (captured before the report
    /// types), plus the fields and metrics added since.
    fn expected(json: &str, metrics: &str) -> (String, String) {
        let json = format!(
            "{},\"tap_bad_frames\":0}}",
            json.trim_end().strip_suffix('}').unwrap()
        );
        let at = metrics.find("# HELP metalvpc_edge_drops_total").unwrap();
        let metrics = format!(
            "{}# HELP metalvpc_edge_tap_bad_frames_total Frames read from the TAP device that could not be segmented (dropped).\n\
             # TYPE metalvpc_edge_tap_bad_frames_total counter\n\
             metalvpc_edge_tap_bad_frames_total 0\n{}",
            &metrics[..at],
            &metrics[at..]
        );
        (json, metrics)
    }

    #[test]
    fn json_and_metrics_are_what_they_were() {
        let (st, info) = fixture();
        let reloads = common::ReloadStats {
            ok: 2,
            failed: 1,
            last_error: Some("bad".into()),
            last: None,
        };
        let r = report(&st, &info, &reloads);
        let (json, page) = expected(
            include_str!("../testdata/status.json"),
            include_str!("../testdata/metrics.txt"),
        );
        assert_eq!(common::report::to_json(&r).unwrap(), json);
        assert_eq!(metrics(&r), page);
        // The CLI reads back what the daemon wrote.
        let back: EdgeReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);

        let mut st = st;
        st.membership = None;
        st.peers.clear();
        let info = Info {
            address6: None,
            ..info
        };
        let r = report(&st, &info, &common::ReloadStats::default());
        let (json, page) = expected(
            include_str!("../testdata/status-no-peers.json"),
            include_str!("../testdata/metrics-no-peers.txt"),
        );
        assert_eq!(common::report::to_json(&r).unwrap(), json);
        assert_eq!(metrics(&r), page);
    }

    #[test]
    fn reading_tolerates_unknown_and_missing_fields() {
        let r: EdgeReport = serde_json::from_str(
            r#"{"community":"prod","from_the_future":{"x":1},"peers":[{"name":"b","new":true}]}"#,
        )
        .unwrap();
        assert_eq!(r.community, "prod");
        assert_eq!(r.peers[0].node.name, "b");
        assert_eq!(r.tap_bad_frames, 0);
    }

    #[test]
    fn the_table() {
        let (st, info) = fixture();
        let mut r = report(&st, &info, &common::ReloadStats::default());
        let t = table(&r);
        assert_eq!(t, include_str!("../testdata/table.txt"), "{t}");
        r.tap_bad_frames = 3;
        assert!(table(&r).ends_with("\ndrops: replay=1 too_big=1 tap_bad_frames=3\n"));
    }

    #[test]
    fn rtt_is_printed_in_seconds_without_float_noise() {
        let peer = |name: &str, address: &str, secs: f64| PeerReport {
            node: NodeReport {
                name: name.into(),
                address: address.into(),
                ..Default::default()
            },
            path: "direct".into(),
            rtt: Some(Rtt::from_secs(secs)),
            ..Default::default()
        };
        let status = EdgeReport {
            peers: vec![
                peer("b", "10.0.0.2", 0.000141),
                peer("c", "10.0.0.3", 0.012345),
            ],
            ..Default::default()
        };
        let page = metrics(&status);
        let rtt: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("metalvpc_edge_peer_rtt_seconds{"))
            .collect();
        assert_eq!(rtt.len(), 2, "{page}");
        assert!(rtt[0].ends_with(" 0.000141"), "{}", rtt[0]);
        assert!(rtt[1].ends_with(" 0.012345"), "{}", rtt[1]);
        // And the JSON keeps milliseconds with three decimals.
        let json = common::report::to_json(&status.peers[0]).unwrap();
        assert!(json.contains("\"rtt_ms\":0.141,"), "{json}");
    }
}
