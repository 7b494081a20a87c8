//! `metalvpc-edge`: puts this server on a metalvpc overlay. It creates a TAP device with the
//! server's overlay address, registers with the supernode(s), and carries Ethernet frames to
//! the other members, end-to-end encrypted, directly when possible and relayed otherwise.

use metalvpc_edge::config;
mod ipv6;
mod kubernetes;
mod offload;
mod run;
mod tap;

use anyhow::Result;
use clap::{Parser, Subcommand};
use metalvpc_common::{self as common, ago, drops_json, human_bytes, MgmtRequest};
use metalvpc_protocol::edge::{Edge, EdgeStatus};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// metalvpc edge: puts this server on an encrypted layer-2 overlay (one per community).
///
/// The edge creates a TAP device holding this server's overlay address, registers with the
/// supernode(s) named in its config, and carries Ethernet frames to the other members of the
/// community, end-to-end encrypted: directly when the underlay lets two servers reach each
/// other (also through NAT), relayed by a supernode otherwise. Kubernetes, etcd and anything
/// else then use the overlay address like a private LAN.
///
/// Setting up a server (the supernode's operator adds the public key to the community file):
///   (umask 077; metalvpc-edge genkey > /etc/metalvpc/prod.key)
///   metalvpc-edge pubkey < /etc/metalvpc/prod.key
///   cp /etc/metalvpc/edge.toml.example /etc/metalvpc/prod.toml   # then fill it in
///   metalvpc-edge check --config /etc/metalvpc/prod.toml
///   systemctl enable --now metalvpc-edge@prod     # or: metalvpc-edge run --config ...
///   metalvpc-edge status --config /etc/metalvpc/prod.toml
#[derive(Parser)]
#[command(
    name = "metalvpc-edge",
    version,
    verbatim_doc_comment,
    after_long_help = EDGE_MORE_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const EDGE_MORE_HELP: &str = "\
Files:
  /etc/metalvpc/<community>.toml   the config of one community
  /etc/metalvpc/<community>.key    this server's private key, mode 600
  /etc/metalvpc/edge.toml.example  a commented example to start from
  /run/metalvpc/<community>.sock   management socket: GET /status (JSON), GET /metrics
  metalvpc-edge@.service           the systemd unit; its instance is the community

Signals:
  SIGHUP           re-read the supernode list and keepalive (systemctl reload)
  SIGINT, SIGTERM  stop; the TAP device goes away with the process

Exit status: 0 on success; 1 on any error, with a message that names the file, the key and
the fix. Logs go to stderr (the journal under systemd); RUST_LOG=debug shows more.

Documentation: /usr/share/doc/metalvpc/ (install.md, configuration.md, nat-traversal.md).
See also: metalvpc-supernode(1).";

#[derive(Subcommand)]
enum Cmd {
    /// Print a new private key (base64). Store it with mode 600.
    ///
    /// Example: (umask 077; metalvpc-edge genkey > /etc/metalvpc/prod.key)
    #[command(verbatim_doc_comment)]
    Genkey,
    /// Read a private key on stdin and print its public key.
    ///
    /// Give the public key to the supernode's operator: it goes into a [[community.node]]
    /// table of the community file, next to this server's overlay address.
    /// Example: metalvpc-edge pubkey < /etc/metalvpc/prod.key
    #[command(verbatim_doc_comment)]
    Pubkey,
    /// Run the edge (needs root or CAP_NET_ADMIN to create the TAP device).
    ///
    /// Creates the TAP device, registers with the supernodes and stays in the foreground,
    /// logging to stderr. Under systemd (metalvpc-edge@<community>.service) it reports ready
    /// once the TAP device is up and a supernode accepted it, and pings the watchdog.
    /// SIGHUP re-reads the supernode list and keepalive; SIGTERM stops it.
    #[command(verbatim_doc_comment)]
    Run {
        /// The community's TOML file (community, private_key_file, [[supernode]], [interface]).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without starting; exits non-zero on any problem.
    ///
    /// Reads the file and the key it names exactly as `run` would (key file permissions,
    /// addresses, MTU, supernode keys) and prints a one-line summary, or every problem found.
    #[command(verbatim_doc_comment)]
    Check {
        /// The community's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running edge's supernodes and peers (path, endpoint, traffic, drops).
    ///
    /// Asks the daemon started with this config over its management socket. A table by
    /// default; --json prints the same data for scripts.
    #[command(verbatim_doc_comment)]
    Status {
        /// The config the daemon runs with (to find its management socket).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages (metalvpc-edge.1, metalvpc-edge-run.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print this node's Kubernetes settings for the overlay: kubelet --node-ip, kubeadm
    /// snippets, kube-proxy, Calico/Flannel/Cilium (MTU arithmetic shown), public ports to close.
    #[command(alias = "k8s")]
    Kubernetes {
        /// The community's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
        /// host:port of the cluster's API server (a VIP or the first control plane);
        /// default: this node's overlay address, port 6443.
        #[arg(long)]
        control_plane_endpoint: Option<String>,
        /// The cluster's pod network (kubeadm podSubnet).
        #[arg(long, default_value = "10.244.0.0/16")]
        pod_network: String,
        /// The cluster's service network (kubeadm serviceSubnet).
        #[arg(long, default_value = "10.96.0.0/12")]
        service_network: String,
        /// This node's own pod block (for Calico without encapsulation and allowed_cidrs).
        #[arg(long)]
        pod_cidr: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Run { .. });
    common::daemon::main("metalvpc-edge", daemon, || match cli.cmd {
        Cmd::Genkey => common::cmd_genkey(),
        Cmd::Pubkey => common::cmd_pubkey(),
        Cmd::Run { config } => run::run(config),
        Cmd::Check { config } => check(config),
        Cmd::Status { config, json } => status(config, json),
        Cmd::Man { dir } => common::write_man_pages(<Cli as clap::CommandFactory>::command(), &dir),
        Cmd::Kubernetes {
            config,
            json,
            control_plane_endpoint,
            pod_network,
            service_network,
            pod_cidr,
        } => kubernetes::cmd(
            &config,
            kubernetes::Args {
                json,
                control_plane_endpoint,
                pod_network,
                service_network,
                pod_cidr,
            },
        ),
    });
}

fn check(path: PathBuf) -> Result<()> {
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
            "supernode {addr} via {} (MTU {}): {} - {} IP - 8 UDP - {} data header and tag - {} relay envelope and tag - {} inner Ethernet = {} largest TAP MTU; {}",
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

/// How a TAP MTU fits the route to one supernode.
struct Fit {
    dev: String,
    underlay: u32,
    ip_header: u32,
    largest: u32,
}

/// The largest TAP MTU whose frames, with our overhead, fit the route to `addr`.
fn underlay_fit(addr: std::net::SocketAddr) -> Option<Fit> {
    let ip_header = if addr.is_ipv6() { 40 } else { 20 };
    let overhead = ip_header
        + 8
        + metalvpc_protocol::wire::DATA_OVERHEAD as u32
        + metalvpc_protocol::wire::RELAY_OVERHEAD as u32
        + metalvpc_protocol::eth::ETH_HEADER_LEN as u32;
    let (dev, underlay) = route_mtu(addr.ip())?;
    Some(Fit {
        dev,
        underlay,
        ip_header,
        largest: underlay.saturating_sub(overhead),
    })
}

/// Without `interface.mtu`: the largest TAP MTU that fits the routes to every supernode
/// (relay overhead included), within 576–9000. None if no route is known.
fn auto_mtu(supernodes: &[(std::net::SocketAddr, metalvpc_protocol::PublicKey)]) -> Option<u32> {
    supernodes
        .iter()
        .filter_map(|(a, _)| underlay_fit(*a))
        .map(|f| f.largest)
        .min()
        .map(|m| m.clamp(576, 9000))
}

/// The interface and MTU of the route to `ip` (`ip route get`), if there is one.
fn route_mtu(ip: std::net::IpAddr) -> Option<(String, u32)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", &ip.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let mut dev = None;
    let mut mtu = None;
    while let Some(w) = words.next() {
        match w {
            "dev" => dev = words.next().map(str::to_string),
            "mtu" => mtu = words.next().and_then(|m| m.parse().ok()),
            _ => {}
        }
    }
    let dev = dev?;
    let mtu = mtu.or_else(|| {
        std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })?;
    Some((dev, mtu))
}

struct Info {
    community: String,
    address: String,
    interface: String,
    mtu: u32,
    listen_port: u16,
    /// Follows reloads.
    keepalive: Duration,
    address6: Option<String>,
}

fn status_json(st: &EdgeStatus, info: &Info, transport: &common::Transport) -> serde_json::Value {
    json!({
        "community": info.community,
        "public_key": st.public_key.to_base64(),
        "address": info.address,
        "address6": info.address6,
        "mac": st.mac.to_string(),
        "interface": info.interface,
        "mtu": info.mtu,
        "listen_port": info.listen_port,
        "keepalive_secs": info.keepalive.as_secs(),
        "registered": st.supernodes.iter().any(|s| s.registered),
        "supernodes": st.supernodes.iter().map(|s| json!({
            "address": s.address.to_string(),
            "public_key": s.public_key.to_base64(),
            "registered": s.registered,
            "transport": if transport.tcp.contains_key(&s.address) { "tcp" } else { "udp" },
            "id": s.id,
            "observed_endpoint": s.observed_endpoint.map(|e| e.to_string()),
            "last_ack_secs": s.last_ack_secs,
            "registered_secs": s.registered_secs,
            "error": s.error,
        })).collect::<Vec<_>>(),
        "peers": st.peers.iter().map(|p| json!({
            "name": p.name,
            "public_key": p.public_key.to_base64(),
            "address": p.address.to_string(),
            "mac": p.mac.to_string(),
            "allowed_cidrs": p.allowed_cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "path": p.path,
            "path_reason": p.path_reason,
            "endpoint": p.endpoint.map(|e| e.to_string()),
            "endpoints": p.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "session": p.session,
            "last_handshake_secs": p.last_handshake_secs,
            "last_rx_secs": p.last_rx_secs,
            "rtt_ms": p.rtt_secs.map(|x| (x * 1e6).round() / 1e3),
            "path_mtu": p.path_mtu,
            "rx_bytes": p.traffic.rx_bytes,
            "tx_bytes": p.traffic.tx_bytes,
            "rx_packets": p.traffic.rx_packets,
            "tx_packets": p.traffic.tx_packets,
            "drops": drops_json(&p.drops),
        })).collect::<Vec<_>>(),
        "drops": drops_json(&st.drops),
        "cookie_replies": st.cookie_replies,
        "neighbor_suppression": {
            "answered": st.neighbor_answered,
            "flooded_frames": st.flooded_frames,
        },
        "membership": st.membership.as_ref().map(|m| json!({
            "admin_key": m.admin_key.to_base64(),
            "version": m.version,
            "members": m.members,
            "error": m.error,
        })),
    })
}

fn status(path: PathBuf, as_json: bool) -> Result<()> {
    let mgmt = config::load_management(&path)?;
    // No daemon to ask: if the config itself is wrong, that is the more useful answer
    // (it names the key), since a daemon could not have started with it.
    let body =
        common::query_management(&mgmt, "/status", &path).map_err(|e| {
            match config::load(&path) {
                Err(config_error) => config_error,
                Ok(_) => e,
            }
        })?;
    if as_json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_string();
    println!(
        "community {}  interface {} {} mtu {}  mac {}",
        s(&v["community"]),
        s(&v["interface"]),
        s(&v["address"]),
        v["mtu"],
        s(&v["mac"])
    );
    println!(
        "public key {}  udp port {}",
        s(&v["public_key"]),
        v["listen_port"]
    );
    for sn in v["supernodes"].as_array().into_iter().flatten() {
        let state = if sn["registered"].as_bool() == Some(true) {
            format!(
                "registered over {}, seen as {}",
                s(&sn["transport"]),
                s(&sn["observed_endpoint"])
            )
        } else {
            format!(
                "NOT registered: {}",
                sn["error"].as_str().unwrap_or("connecting")
            )
        };
        println!("supernode {}  {}", s(&sn["address"]), state);
    }
    println!(
        "\n{:<16} {:<15} {:<7} {:<22} {:>8} {:<12} {:>10} {:>10}",
        "PEER", "ADDRESS", "PATH", "ENDPOINT", "RTT", "HANDSHAKE", "RX", "TX"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let name = p["name"]
            .as_str()
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| s(&p["public_key"]));
        let rtt = p["rtt_ms"]
            .as_f64()
            .map_or("-".to_string(), |ms| format!("{ms:.2}ms"));
        println!(
            "{:<16} {:<15} {:<7} {:<22} {:>8} {:<12} {:>10} {:>10}",
            name,
            s(&p["address"]),
            s(&p["path"]),
            s(&p["endpoint"]),
            rtt,
            ago(p["last_handshake_secs"].as_f64()),
            human_bytes(p["rx_bytes"].as_u64().unwrap_or(0)),
            human_bytes(p["tx_bytes"].as_u64().unwrap_or(0)),
        );
    }
    if let Some(m) = v["membership"].as_object() {
        println!(
            "\nsigned membership: {}{}",
            m["version"].as_u64().map_or(
                "no valid list yet (every peer refused)".to_string(),
                |x| format!("version {x}, {} members", m["members"])
            ),
            m["error"]
                .as_str()
                .map(|e| format!("; last refused: {e}"))
                .unwrap_or_default()
        );
    }
    println!("\ndrops: {}", common::drops_line(&v["drops"]));
    Ok(())
}

/// The Prometheus page, from the same figures as `status --json`.
fn metrics(v: &serde_json::Value) -> String {
    let n = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
    let mut m = common::Metrics::default();
    m.family(
        "metalvpc_edge_info",
        "gauge",
        "This edge (always 1; the labels say which).",
    )
    .sample(
        "metalvpc_edge_info",
        &[
            ("community", &s(&v["community"])),
            ("interface", &s(&v["interface"])),
            ("address", &s(&v["address"])),
            ("public_key", &s(&v["public_key"])),
        ],
        1.0,
    );
    m.family(
        "metalvpc_edge_supernode_registered",
        "gauge",
        "1 while the supernode has accepted our registration.",
    );
    for sn in v["supernodes"].as_array().into_iter().flatten() {
        let up = sn["registered"].as_bool() == Some(true);
        m.sample(
            "metalvpc_edge_supernode_registered",
            &[
                ("supernode", &s(&sn["address"])),
                ("transport", &s(&sn["transport"])),
            ],
            f64::from(u8::from(up)),
        );
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    let label = |p: &serde_json::Value| {
        let name = s(&p["name"]);
        if name.is_empty() {
            s(&p["public_key"])
        } else {
            name
        }
    };
    m.single(
        "metalvpc_edge_peers",
        "gauge",
        "Peers known.",
        peers.len() as f64,
    );
    for (metric, kind, field, help) in [
        (
            "metalvpc_edge_peer_rx_bytes_total",
            "counter",
            "rx_bytes",
            "Frame bytes received from the peer.",
        ),
        (
            "metalvpc_edge_peer_tx_bytes_total",
            "counter",
            "tx_bytes",
            "Frame bytes sent to the peer.",
        ),
        (
            "metalvpc_edge_peer_rx_packets_total",
            "counter",
            "rx_packets",
            "Frames received from the peer.",
        ),
        (
            "metalvpc_edge_peer_tx_packets_total",
            "counter",
            "tx_packets",
            "Frames sent to the peer.",
        ),
        (
            "metalvpc_edge_peer_handshake_age_seconds",
            "gauge",
            "last_handshake_secs",
            "Seconds since the last completed handshake with the peer.",
        ),
        (
            "metalvpc_edge_peer_rtt_seconds",
            "gauge",
            "rtt_ms",
            "Round-trip time of the path in use (direct: probes; relayed: pings through the supernode).",
        ),
    ] {
        m.family(metric, kind, help);
        for p in peers.iter().filter(|p| !p[field].is_null()) {
            // Milliseconds to seconds through whole nanoseconds: an integer divided by 1e9
            // is the double nearest the decimal, so 0.141 ms prints as 0.000141 (0.141 / 1000
            // printed 0.00014099999999999998).
            let value = if field == "rtt_ms" {
                (n(&p[field]) * 1e6).round() / 1e9
            } else {
                n(&p[field])
            };
            m.sample(
                metric,
                &[("peer", &label(p)), ("address", &s(&p["address"]))],
                value,
            );
        }
    }
    m.family(
        "metalvpc_edge_peer_path",
        "gauge",
        "1 for the path the peer is reached over now: direct, relay or none.",
    );
    for p in &peers {
        for path in ["direct", "relay", "none"] {
            let on = p["path"].as_str() == Some(path);
            m.sample(
                "metalvpc_edge_peer_path",
                &[
                    ("peer", &label(p)),
                    ("address", &s(&p["address"])),
                    ("path", path),
                ],
                f64::from(u8::from(on)),
            );
        }
    }
    m.single(
        "metalvpc_edge_neighbor_answered_total",
        "counter",
        "ARP requests and neighbour solicitations for members answered locally.",
        n(&v["neighbor_suppression"]["answered"]),
    )
    .single(
        "metalvpc_edge_flooded_frames_total",
        "counter",
        "Copies of broadcast and multicast frames sent to peers.",
        n(&v["neighbor_suppression"]["flooded_frames"]),
    );
    m.drops(
        "metalvpc_edge_drops_total",
        "Packets and frames dropped, by reason.",
        &v["drops"],
    )
    .reloads("metalvpc_edge", &v["reloads"]);
    m.finish()
}

fn answer(
    req: MgmtRequest,
    core: &Edge,
    info: &Info,
    transport: &common::Transport,
    reloads: &common::ReloadStats,
) {
    req.answer(
        || status_json(&core.status(Instant::now()), info, transport),
        reloads,
        metrics,
    );
}

#[cfg(test)]
mod tests {
    use super::metrics;

    #[test]
    fn rtt_is_printed_in_seconds_without_float_noise() {
        let status = serde_json::json!({
            "peers": [
                {"name": "b", "address": "10.0.0.2", "rtt_ms": 0.141, "path": "direct"},
                {"name": "c", "address": "10.0.0.3", "rtt_ms": 12.345, "path": "direct"},
            ],
        });
        let page = metrics(&status);
        let rtt: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("metalvpc_edge_peer_rtt_seconds{"))
            .collect();
        assert_eq!(rtt.len(), 2, "{page}");
        assert!(rtt[0].ends_with(" 0.000141"), "{}", rtt[0]);
        assert!(rtt[1].ends_with(" 0.012345"), "{}", rtt[1]);
    }
}
