//! `metalvpc-supernode`: the membership and relay server of a metalvpc overlay.

use metalvpc_supernode::config;

use anyhow::Result;
use clap::{Parser, Subcommand};
use metalvpc_common::{self as common, ago, drops_json, human_bytes, MgmtRequest};
use metalvpc_protocol::supernode::{Event, Supernode, SupernodeStatus};
use metalvpc_protocol::Output;
use serde_json::json;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The supernode of a metalvpc overlay: it admits the edges listed in its community files,
/// tells them about each other, helps them connect directly, and relays their (still
/// end-to-end encrypted) packets when no direct path works. It never sees plaintext.
///
/// Quick start:
///   (umask 077; metalvpc-supernode genkey > /etc/metalvpc/supernode.key)
///   metalvpc-supernode pubkey < /etc/metalvpc/supernode.key   # give this to every edge
///   metalvpc-supernode run --config /etc/metalvpc/supernode.toml
#[derive(Parser)]
#[command(name = "metalvpc-supernode", version, verbatim_doc_comment)]
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
    /// Run the supernode.
    Run {
        /// The supernode's TOML file (listen, private_key_file, [[community]] …).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without starting; exits non-zero on any problem.
    Check {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running supernode's communities and members.
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
        eprintln!("metalvpc-supernode: error: {e:#}");
        std::process::exit(1);
    }
}

fn check(path: PathBuf) -> Result<()> {
    let cfg = config::load(&path)?;
    let nodes: usize = cfg.core.communities.iter().map(|c| c.nodes.len()).sum();
    println!(
        "{}: OK: listen {}, {} communities, {} nodes, management {}",
        path.display(),
        cfg.listen,
        cfg.core.communities.len(),
        nodes,
        cfg.management
    );
    Ok(())
}

fn status_json(
    st: &SupernodeStatus,
    listen: std::net::SocketAddr,
    tcp_connections: usize,
) -> serde_json::Value {
    json!({
        "listen": listen.to_string(),
        "public_key": st.public_key.to_base64(),
        "communities": st.communities.iter().map(|c| json!({
            "name": c.name,
            "network": c.network.to_string(),
            "epoch": c.epoch,
            "relay_policy": if c.relay { "allow" } else { "direct-only" },
            "members": c.members.iter().map(|m| json!({
                "name": m.name,
                "public_key": m.public_key.to_base64(),
                "address": m.address.to_string(),
                "id": m.id,
                "registered": m.registered,
                "endpoint": m.endpoint.map(|e| e.to_string()),
                "local_endpoints": m.local_endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "mac": m.mac.map(|x| x.to_string()),
                "last_seen_secs": m.last_seen_secs,
                "registered_secs": m.registered_secs,
                "rx_packets": m.traffic.rx_packets,
                "tx_packets": m.traffic.tx_packets,
                "relay_rx_bytes": m.traffic.rx_bytes,
                "relay_tx_bytes": m.traffic.tx_bytes,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "drops": drops_json(&st.drops),
        "refused": st.refused,
        "tcp_connections": tcp_connections,
        "relay": {"packets": st.relay_packets, "bytes": st.relay_bytes},
    })
}

fn status(path: PathBuf, as_json: bool) -> Result<()> {
    let (mgmt, _) = config::load_meta(&path)?;
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
    println!(
        "supernode {}  key {}",
        v["listen"].as_str().unwrap_or("?"),
        v["public_key"].as_str().unwrap_or("?")
    );
    println!(
        "relayed {} packets ({}), refused {} registrations",
        v["relay"]["packets"],
        human_bytes(v["relay"]["bytes"].as_u64().unwrap_or(0)),
        v["refused"]
    );
    for c in v["communities"].as_array().into_iter().flatten() {
        println!(
            "\ncommunity {} ({})",
            c["name"].as_str().unwrap_or(""),
            c["network"].as_str().unwrap_or("")
        );
        println!(
            "  {:<16} {:<16} {:<12} {:<24} {:<10}",
            "NAME", "ADDRESS", "STATE", "ENDPOINT", "SEEN"
        );
        for m in c["members"].as_array().into_iter().flatten() {
            let name = m["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| m["public_key"].as_str().unwrap_or(""));
            println!(
                "  {:<16} {:<16} {:<12} {:<24} {:<10}",
                name,
                m["address"].as_str().unwrap_or(""),
                if m["registered"].as_bool() == Some(true) {
                    "registered"
                } else {
                    "offline"
                },
                m["endpoint"].as_str().unwrap_or("-"),
                ago(m["last_seen_secs"].as_f64()),
            );
        }
    }
    println!("\ndrops: {}", common::drops_line(&v["drops"]));
    Ok(())
}

fn answer(
    req: MgmtRequest,
    core: &Supernode,
    listen: std::net::SocketAddr,
    tcp_connections: usize,
) {
    let reply = match req.path.as_str() {
        "/status" | "/status.json" => (
            200,
            "application/json",
            status_json(&core.status(Instant::now()), listen, tcp_connections).to_string(),
        ),
        _ => (404, "text/plain", "unknown path; try /status\n".to_string()),
    };
    let _ = req.reply.send(reply);
}

fn log_events(core: &mut Supernode) {
    for ev in core.drain_events() {
        match ev {
            Event::Registered {
                community,
                member,
                endpoint,
            } => {
                info!("registered member '{member}' of community '{community}' from {endpoint}")
            }
            Event::Refused(r) => warn!(
                "{} (from {}, community '{}')",
                r.reason, r.from, r.community
            ),
            Event::Expired { community, member } => {
                info!("member '{member}' of community '{community}' stopped refreshing; registration expired")
            }
        }
    }
}

fn run(path: PathBuf) -> Result<()> {
    common::init_logging("info");
    let cfg = config::load(&path)?;
    let sock = common::bind_udp(cfg.listen)?;
    let tcp_listener = match std::net::TcpListener::bind(cfg.listen) {
        Ok(l) => {
            l.set_nonblocking(true)?;
            Some(l)
        }
        Err(e) => {
            warn!("no TCP fallback: cannot listen on tcp {}: {e}", cfg.listen);
            None
        }
    };
    let mut transport = common::Transport::new(sock)?;
    let waker = common::Waker::install()?;
    let mgmt = common::serve_management(&cfg.management, waker.handle())?;
    let communities: Vec<String> = cfg
        .core
        .communities
        .iter()
        .map(|c| format!("{} ({} nodes)", c.name, c.nodes.len()))
        .collect();
    let mut core = Supernode::new(cfg.core, Instant::now());
    info!(
        "supernode {} listening on udp and tcp {}, management {}, communities: {}",
        core.public_key(),
        cfg.listen,
        cfg.management,
        communities.join(", ")
    );
    let mut out = Output::default();
    let mut buf = vec![0u8; 65_536];
    while !waker.stopping() {
        let timeout = core
            .poll_timeout()
            .saturating_duration_since(Instant::now());
        let tcp = transport.tcp_poll_set();
        let mut fds = vec![(transport.udp.as_raw_fd(), false), (waker.fd(), false)];
        fds.push((tcp_listener.as_ref().map_or(-1, |l| l.as_raw_fd()), false));
        fds.extend(tcp.iter().map(|(_, fd)| *fd));
        let ready = common::poll_fds(&fds, timeout);
        if ready[1].0 {
            waker.drain();
        }
        if ready[0].0 {
            // Drain a bounded batch, so timers and management still get their turn.
            for _ in 0..512 {
                match transport.udp.recv_from(&mut buf) {
                    Ok((n, src)) => {
                        core.handle_udp(
                            Instant::now(),
                            common::canonical(src),
                            &mut buf[..n],
                            &mut out,
                        );
                        if out.transmits.len() >= 64 {
                            transport.send_all(&out);
                            out.clear();
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        if ready[2].0 {
            accept_tcp(tcp_listener.as_ref(), &mut transport);
        }
        for (i, (addr, _)) in tcp.iter().enumerate() {
            let (r, w) = ready[3 + i];
            if r || w {
                transport.service_tcp(*addr, r, |p| {
                    core.handle_udp(Instant::now(), *addr, p, &mut out)
                });
            }
        }
        // Edges behind a TCP fallback register every few seconds; a silent one is gone.
        transport.tcp.retain(|a, c| {
            let keep = c.last_rx.elapsed() < Duration::from_secs(120);
            if !keep {
                info!("closing idle TCP connection from {a}");
            }
            keep
        });
        core.handle_timeout(Instant::now(), &mut out);
        transport.send_all(&out);
        out.clear();
        log_events(&mut core);
        while let Ok(req) = mgmt.try_recv() {
            answer(req, &core, cfg.listen, transport.tcp.len());
        }
    }
    info!("stopping");
    if let common::MgmtAddr::Unix(p) = &cfg.management {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Most TCP fallback connections at once.
const MAX_TCP: usize = 4096;

fn accept_tcp(listener: Option<&std::net::TcpListener>, transport: &mut common::Transport) {
    let Some(listener) = listener else { return };
    while let Ok((stream, peer)) = listener.accept() {
        if transport.tcp.len() >= MAX_TCP {
            warn!("refusing TCP connection from {peer}: {MAX_TCP} connections already");
            continue;
        }
        match common::FramedTcp::new(stream, peer) {
            Ok(c) => {
                info!("TCP fallback connection from {peer}");
                transport.tcp.insert(c.peer, c);
            }
            Err(e) => warn!("TCP connection from {peer}: {e}"),
        }
    }
}
