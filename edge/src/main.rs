//! `metalvpc-edge`: puts this server on a metalvpc overlay. It creates a TAP device with the
//! server's overlay address, registers with the supernode(s), and carries Ethernet frames to
//! the other members, end-to-end encrypted, directly when possible and relayed otherwise.

mod config;
mod datapath;
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

/// The edge daemon of a metalvpc overlay: one per server and community.
///
/// Quick start on each server:
///   (umask 077; metalvpc-edge genkey > /etc/metalvpc/prod.key)
///   metalvpc-edge pubkey < /etc/metalvpc/prod.key    # add it to the supernode's community file
///   metalvpc-edge run --config /etc/metalvpc/prod.toml
///   metalvpc-edge status --config /etc/metalvpc/prod.toml
#[derive(Parser)]
#[command(name = "metalvpc-edge", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a new private key (base64). Store it with mode 600.
    Genkey,
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Run the edge (needs root or CAP_NET_ADMIN to create the TAP device).
    Run {
        /// The community's TOML file (community, private_key_file, [[supernode]], [interface]).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without starting; exits non-zero on any problem.
    Check {
        /// The community's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running edge's supernodes and peers (path, endpoint, traffic, drops).
    Status {
        /// The config the daemon runs with (to find its management socket).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
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
    };
    if let Err(e) = result {
        eprintln!("metalvpc-edge: error: {e:#}");
        std::process::exit(1);
    }
}

fn check(path: PathBuf) -> Result<()> {
    let c = config::load(&path)?;
    println!(
        "{}: OK: community '{}', key {}, interface {} {} mtu {} mac {}, udp port {}, {} supernode(s), management {}",
        path.display(),
        c.community,
        c.private_key.public_key(),
        c.if_name,
        c.address,
        c.mtu,
        c.mac,
        c.listen_port,
        c.supernodes.len(),
        c.management
    );
    Ok(())
}

struct Info {
    community: String,
    address: String,
    interface: String,
    mtu: u32,
    listen_port: u16,
}

fn status_json(st: &EdgeStatus, info: &Info, transport: &common::Transport) -> serde_json::Value {
    json!({
        "community": info.community,
        "public_key": st.public_key.to_base64(),
        "address": info.address,
        "mac": st.mac.to_string(),
        "interface": info.interface,
        "mtu": info.mtu,
        "listen_port": info.listen_port,
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
            "rx_bytes": p.traffic.rx_bytes,
            "tx_bytes": p.traffic.tx_bytes,
            "rx_packets": p.traffic.rx_packets,
            "tx_packets": p.traffic.tx_packets,
            "drops": drops_json(&p.drops),
        })).collect::<Vec<_>>(),
        "drops": drops_json(&st.drops),
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
        "\n{:<16} {:<15} {:<7} {:<22} {:<12} {:>10} {:>10}",
        "PEER", "ADDRESS", "PATH", "ENDPOINT", "HANDSHAKE", "RX", "TX"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let name = p["name"]
            .as_str()
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| s(&p["public_key"]));
        println!(
            "{:<16} {:<15} {:<7} {:<22} {:<12} {:>10} {:>10}",
            name,
            s(&p["address"]),
            s(&p["path"]),
            s(&p["endpoint"]),
            ago(p["last_handshake_secs"].as_f64()),
            human_bytes(p["rx_bytes"].as_u64().unwrap_or(0)),
            human_bytes(p["tx_bytes"].as_u64().unwrap_or(0)),
        );
    }
    println!("\ndrops: {}", common::drops_line(&v["drops"]));
    Ok(())
}

fn log_events(core: &mut Edge) {
    for ev in core.drain_events() {
        match ev {
            Event::Registered {
                supernode,
                observed,
            } => info!("registered with supernode {supernode} (it sees us as {observed})"),
            Event::Refused { supernode, message } => warn!("supernode {supernode} {message}"),
            Event::LinkLost { supernode } => {
                warn!("supernode {supernode} stopped answering; registering again")
            }
            Event::PeerUp { peer } => info!("session with peer '{peer}' established"),
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
}

fn run(path: PathBuf) -> Result<()> {
    common::init_logging("info");
    let cfg = config::load(&path)?;
    let tap = tap::Tap::open(&cfg.if_name)?;
    tap.configure(
        cfg.mac,
        cfg.mtu,
        cfg.address.addr(),
        cfg.address.prefix_len(),
    )?;
    let sock = common::bind_udp(std::net::SocketAddr::new(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        cfg.listen_port,
    ))?;
    let waker = common::Waker::install()?;
    let mgmt = common::serve_management(&cfg.management, waker.handle())?;
    let locals = tap::local_endpoints(cfg.listen_port, &tap.name);
    let info = Info {
        community: cfg.community.clone(),
        address: cfg.address.to_string(),
        interface: tap.name.clone(),
        mtu: cfg.mtu,
        listen_port: cfg.listen_port,
    };
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
            cipher: cfg.cipher,
        },
        Instant::now(),
        common::unix_micros(),
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
    let mut udp = datapath::Udp::new(&transport.udp);
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
    while !waker.stopping() {
        let timeout = core
            .poll_timeout()
            .saturating_duration_since(Instant::now());
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
        log_events(&mut core);
        while let Ok(req) = mgmt.try_recv() {
            answer(req, &core, &info, &transport);
        }
    }
    info!("stopping; {} goes away with the process", tap.name);
    if let common::MgmtAddr::Unix(p) = &cfg.management {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn answer(req: MgmtRequest, core: &Edge, info: &Info, transport: &common::Transport) {
    let reply = match req.path.as_str() {
        "/status" | "/status.json" => (
            200,
            "application/json",
            status_json(&core.status(Instant::now()), info, transport).to_string(),
        ),
        _ => (404, "text/plain", "unknown path; try /status\n".to_string()),
    };
    let _ = req.reply.send(reply);
}

fn flush(
    transport: &mut common::Transport,
    udp: &mut datapath::Udp,
    tap: &tap::Tap,
    out: &mut Output,
) {
    tap.write_frames(out);
    udp.send_all(transport, out);
    out.clear();
}
