//! `metalvpc-edge`: puts this server on a metalvpc overlay. It creates a TAP device with the
//! server's overlay address, registers with the supernode(s), and carries Ethernet frames to
//! the other members, end-to-end encrypted, directly when possible and relayed otherwise.

use metalvpc_edge::config;
mod check;
mod ipv6;
mod kubernetes;
mod mtu;
mod offload;
mod status;
mod tap;

use check::check;
use mtu::auto_mtu;
use status::{answer, status, Info};

use anyhow::Result;
use clap::{Parser, Subcommand};
use metalvpc_common as common;
use metalvpc_protocol::edge::{Edge, EdgeConfig, Event};
use metalvpc_protocol::Output;
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
            answer(req, &core, &info, &transport, &reloads, tap_rx.bad_frames);
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
