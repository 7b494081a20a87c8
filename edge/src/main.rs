//! `metalvpc-edge`: puts this server on a metalvpc overlay. It creates a TAP device with the
//! server's overlay address, registers with the supernode(s), and carries Ethernet frames to
//! the other members, end-to-end encrypted, directly when possible and relayed otherwise.

use metalvpc_edge::config;
mod ipv6;
mod kubernetes;
mod offload;
mod tap;

use anyhow::Result;
use clap::{Parser, Subcommand};
use metalvpc_common::{self as common, ago, drops_json, human_bytes, MgmtRequest};
use metalvpc_protocol::edge::{Edge, EdgeConfig, EdgeStatus, Event};
use metalvpc_protocol::Output;
use serde_json::json;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

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
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        common::restore_sigpipe();
    }
    let result = match cli.cmd {
        Cmd::Genkey => common::cmd_genkey(),
        Cmd::Pubkey => common::cmd_pubkey(),
        Cmd::Run { config } => run(config),
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
    };
    if let Err(e) = result {
        eprintln!("metalvpc-edge: error: {e:#}");
        std::process::exit(1);
    }
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

/// The signed membership kept by an earlier run (bounded read; the core verifies it).
fn read_membership_cache(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(metalvpc_protocol::membership::MAX_MEMBERSHIP_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Keeps the newest signed membership for the next start (write, then rename).
fn write_membership_cache(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
        warn!("membership_cache {}: cannot write it: {e}", path.display());
    }
}

/// Logs what happened; returns an address a supernode assigned us (enrolment), if any.
fn log_events(
    core: &mut Edge,
    cache: Option<&std::path::Path>,
) -> Option<(std::net::Ipv4Addr, u8)> {
    let events: Vec<Event> = core.drain_events().collect();
    let mut assigned = None;
    for ev in events {
        match ev {
            Event::AddressAssigned {
                address,
                prefix,
                supernode,
            } => {
                info!("supernode {supernode} assigned this server the overlay address {address}/{prefix}");
                if let std::net::IpAddr::V4(a) = address {
                    assigned = Some((a, prefix));
                }
            }
            Event::MembershipAccepted {
                version,
                members,
                supernode,
            } => {
                info!(
                    "signed membership version {version} accepted ({members} members, from {})",
                    supernode.map_or("membership_cache".to_string(), |s| format!("supernode {s}"))
                );
                if let (Some(path), Some(_), Some(bytes)) =
                    (cache, supernode, core.signed_membership())
                {
                    write_membership_cache(path, bytes);
                }
            }
            Event::MembershipRefused { supernode, reason } => warn!(
                "{reason} (from {})",
                supernode.map_or("membership_cache".to_string(), |s| format!("supernode {s}"))
            ),
            Event::Registered {
                supernode,
                observed,
            } => info!("registered with supernode {supernode} (it sees us as {observed})"),
            Event::Refused { supernode, message } => warn!("supernode {supernode} {message}"),
            Event::LinkLost { supernode } => {
                warn!("supernode {supernode} stopped answering; registering again")
            }
            Event::PeerUp { peer } => info!("session with peer '{peer}' established"),
            Event::PathMtu { peer, mtu, inner } => info!(
                "path MTU to peer '{peer}' is {mtu} bytes: IP packets up to {inner} bytes cross it; larger ones get ICMP 'fragmentation needed'"
            ),
            Event::PeerDown { peer, silent_secs } => warn!(
                "peer '{peer}' is down: nothing heard from it for {silent_secs} s"
            ),
            Event::PeerRemoved { peer, supernode } => info!(
                "peer '{peer}' was removed from the community (supernode {supernode}); its sessions are closed"
            ),
            Event::PathChanged {
                peer,
                path,
                endpoint,
            } => {
                info!(
                    "peer '{peer}' path is now {path} via {}",
                    endpoint.map(|e| e.to_string()).unwrap_or_default()
                )
            }
        }
    }
    assigned
}

fn run(path: PathBuf) -> Result<()> {
    let mut cfg = config::load(&path)?;
    common::init_logging(&cfg.log_level);
    // No `interface.mtu`: follow the underlay (the route to the supernodes) and our overhead.
    if !cfg.mtu_explicit {
        if let Some(m) = auto_mtu(&cfg.supernodes) {
            if m != cfg.mtu {
                info!(
                    "interface MTU {m}, from the route to the supernodes (the default {} assumes a 1500-byte underlay); set interface.mtu to choose",
                    cfg.mtu
                );
            }
            cfg.mtu = m;
        }
    }
    let tap = tap::Tap::open(&cfg.if_name)?;
    // An enrolling edge has no address until the supernode assigns one: a link-local /32
    // stands in (no route, nothing to reach) until then.
    let boot_address = if cfg.address.addr().is_unspecified() {
        ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(169, 254, 255, 254), 32)?
    } else {
        cfg.address
    };
    tap.configure(
        cfg.mac,
        cfg.mtu,
        boot_address.addr(),
        boot_address.prefix_len(),
    )?;
    if let Some(a6) = cfg.address6 {
        ipv6::add_address(&tap.name, a6.addr(), a6.prefix_len())?;
    }
    let sock = common::bind_udp(std::net::SocketAddr::new(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        cfg.listen_port,
    ))?;
    let waker = common::Waker::install()?;
    let mgmt = common::serve_management(&cfg.management, waker.handle())?;
    let locals = tap::local_endpoints(cfg.listen_port, &tap.name);
    let mut info = Info {
        community: cfg.community.clone(),
        address: cfg.address.to_string(),
        interface: tap.name.clone(),
        mtu: cfg.mtu,
        listen_port: cfg.listen_port,
        keepalive: cfg.keepalive,
        address6: cfg.address6.map(|a| a.to_string()),
    };
    // Everything that needed privileges is done: the TAP device is up, the sockets are bound.
    // Keep CAP_NET_ADMIN only (the device's settings), nothing else.
    let kept = common::drop_capabilities(&[common::CAP_NET_ADMIN]);
    tracing::debug!("capabilities kept: {kept:#x}");
    let mut core = Edge::new(
        EdgeConfig {
            community: cfg.community.clone(),
            private_key: cfg.private_key.clone(),
            address: cfg.address.addr().into(),
            mac: cfg.mac,
            supernodes: cfg.supernodes.clone(),
            local_endpoints: locals,
            keepalive: cfg.keepalive,
            relay: cfg.relay,
            neighbor_suppression: cfg.neighbor_suppression,
            mtu: cfg.mtu,
            mss_clamp: cfg.mss_clamp,
            join_secret: cfg.join_secret.clone(),
            admin_key: cfg.admin_key,
            membership: cfg
                .membership_cache
                .as_deref()
                .and_then(read_membership_cache),
            cipher: cfg.cipher,
        },
        Instant::now(),
        common::unix_micros(),
        metalvpc_protocol::Rng::from_os(),
    );
    info!(
        "edge {} up: community '{}', interface {} {} mtu {} mac {}, udp port {}, management {}",
        core.public_key(),
        cfg.community,
        tap.name,
        cfg.address,
        cfg.mtu,
        cfg.mac,
        cfg.listen_port,
        cfg.management
    );
    let mut transport = common::Transport::new(sock)?;
    let mut udp = metalvpc_common::datapath::Udp::new(&transport.udp);
    let mut tap_rx = tap::TapRx::default();
    info!(
        "data path: TAP offloads (TSO, checksum) {}, {}",
        if tap.offload { "on" } else { "off" },
        udp.describe()
    );
    // TCP fallback: connections are opened on helper threads (a connect can take seconds)
    // and handed to the loop through this channel.
    let (tcp_tx, tcp_rx) =
        std::sync::mpsc::channel::<(std::net::SocketAddr, std::io::Result<std::net::TcpStream>)>();
    let mut tcp_tried: std::collections::HashMap<std::net::SocketAddr, Instant> =
        Default::default();
    let mut next_fallback_check = Instant::now();
    let mut out = Output::default();
    let mut reloads = common::ReloadStats::default();
    let mut sd = common::systemd::Service::from_env();
    while !waker.stopping() {
        let timeout = sd.cap_timeout(
            core.poll_timeout()
                .saturating_duration_since(Instant::now()),
        );
        let tcp = transport.tcp_poll_set();
        let mut fds = vec![
            (transport.udp.as_raw_fd(), false),
            (tap.fd(), false),
            (waker.fd(), false),
        ];
        fds.extend(tcp.iter().map(|(_, fd)| *fd));
        let ready = common::poll_fds(&fds, timeout);
        if ready[2].0 {
            waker.drain();
        }
        if waker.take_reload() {
            sd.reloading();
            if let Some(k) = reload(&mut reloads, &path, &cfg, &mut core, &mut transport) {
                info.keepalive = k;
            }
            sd.reloaded();
        }
        if ready[0].0 {
            // Up to 256 datagrams per wake (GRO hands over many per call).
            for _ in 0..8 {
                let now = Instant::now();
                let n = udp.recv_batch(64, |src, pkt| core.handle_udp(now, src, pkt, &mut out));
                flush(&mut transport, &mut udp, &tap, &mut out);
                if n < 64 {
                    break;
                }
            }
        }
        if ready[1].0 {
            // Up to 64 reads per wake; with TSO one read can be 45 frames.
            for _ in 0..64 {
                let now = Instant::now();
                match tap.read_frames(&mut tap_rx, |f| core.handle_frame(now, f, &mut out)) {
                    Ok(true) => {
                        if out.transmits.len() >= 64 {
                            flush(&mut transport, &mut udp, &tap, &mut out);
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        warn!("reading {}: {e}", tap.name);
                        break;
                    }
                }
            }
        }
        for (i, (addr, _)) in tcp.iter().enumerate() {
            let (r, w) = ready[3 + i];
            if r || w {
                transport.service_tcp(*addr, r, |p| {
                    core.handle_udp(Instant::now(), *addr, p, &mut out)
                });
            }
        }
        while let Ok((addr, result)) = tcp_rx.try_recv() {
            match result.and_then(|s| common::FramedTcp::new(s, addr)) {
                Ok(conn) => {
                    info!(
                        "supernode {addr} reached over TCP (UDP got no answer); using TCP for it"
                    );
                    transport.tcp.insert(addr, conn);
                    core.retry_supernode(addr, Instant::now());
                }
                Err(e) => warn!("TCP fallback to supernode {addr} failed: {e}"),
            }
        }
        let now = Instant::now();
        if now >= next_fallback_check {
            next_fallback_check = now + Duration::from_secs(1);
            for addr in core.silent_supernodes(now) {
                let due = tcp_tried
                    .get(&addr)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= Duration::from_secs(10));
                if transport.tcp.contains_key(&addr) || !due {
                    continue;
                }
                tcp_tried.insert(addr, now);
                let (tx, wake) = (tcp_tx.clone(), waker.handle());
                std::thread::spawn(move || {
                    let _ = tx.send((
                        addr,
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
                    ));
                    wake.wake();
                });
            }
        }
        core.handle_timeout(Instant::now(), &mut out);
        flush(&mut transport, &mut udp, &tap, &mut out);
        if let Some((a, prefix)) = log_events(&mut core, cfg.membership_cache.as_deref()) {
            match tap.configure(cfg.mac, cfg.mtu, a, prefix) {
                Ok(()) => info.address = format!("{a}/{prefix}"),
                Err(e) => tracing::error!("configuring the assigned address {a}/{prefix}: {e:#}"),
            }
        }
        while let Ok(req) = mgmt.try_recv() {
            answer(req, &core, &info, &transport, &reloads);
        }
        sd.tick(|| systemd_state(&core, &tap.name));
    }
    sd.stopping();
    info!("stopping; {} goes away with the process", tap.name);
    if let common::MgmtAddr::Unix(p) = &cfg.management {
        let _ = std::fs::remove_file(p);
    }
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

/// What systemd is told (`Type=notify`): ready once registered with a supernode (the TAP
/// device is up before the loop starts), and the line `systemctl status` shows.
fn systemd_state(core: &Edge, interface: &str) -> (bool, String) {
    let st = core.status(Instant::now());
    let registered = st.supernodes.iter().filter(|s| s.registered).count();
    if registered == 0 {
        let why = st.supernodes.iter().find_map(|s| s.error.clone());
        return (
            false,
            format!(
                "{interface} up; NOT registered with any of {} supernodes: {}",
                st.supernodes.len(),
                why.as_deref().unwrap_or("connecting")
            ),
        );
    }
    let connected: Vec<_> = st.peers.iter().filter(|p| p.session).collect();
    let direct = connected.iter().filter(|p| p.path == "direct").count();
    (
        true,
        format!(
            "{interface} up; registered with {registered} of {} supernodes; {} of {} peers connected, {direct} direct",
            st.supernodes.len(),
            connected.len(),
            st.peers.len()
        ),
    )
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

/// Re-reads the config and applies the supernode list and keepalive. A config with an
/// error changes nothing; the rest of the file (address, interface, key …) takes effect
/// only at restart, and the log says so when it differs.
fn reload(
    stats: &mut common::ReloadStats,
    path: &std::path::Path,
    running: &config::Loaded,
    core: &mut Edge,
    transport: &mut common::Transport,
) -> Option<Duration> {
    let new = stats.record(config::load(path))?;
    let restart_only = [
        ("community", new.community != running.community),
        (
            "private_key_file",
            new.private_key.public_key() != running.private_key.public_key(),
        ),
        ("listen_port", new.listen_port != running.listen_port),
        (
            "management",
            new.management.to_string() != running.management.to_string(),
        ),
        ("interface.name", new.if_name != running.if_name),
        ("interface.address", new.address != running.address),
        (
            "interface.mtu",
            new.mtu_explicit != running.mtu_explicit
                || (new.mtu_explicit && new.mtu != running.mtu),
        ),
        ("interface.mac", new.mac != running.mac),
        ("relay_policy", new.relay != running.relay),
        ("admin_key", new.admin_key != running.admin_key),
        (
            "membership_cache",
            new.membership_cache != running.membership_cache,
        ),
    ];
    for (key, changed) in restart_only {
        if changed {
            warn!("reload: `{key}` changed but takes effect only at restart");
        }
    }
    let (added, removed) = core.reload(&new.supernodes, new.keepalive, Instant::now());
    for addr in &removed {
        transport.tcp.remove(addr);
    }
    let addrs = |v: &[std::net::SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    info!(
        "reloaded {}: supernodes added [{}], removed [{}]; keepalive {} s",
        path.display(),
        addrs(&added),
        addrs(&removed),
        new.keepalive.as_secs()
    );
    Some(new.keepalive)
}

fn flush(
    transport: &mut common::Transport,
    udp: &mut metalvpc_common::datapath::Udp,
    tap: &tap::Tap,
    out: &mut Output,
) {
    tap.write_frames(out);
    udp.send_all(transport, out);
    out.clear();
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
