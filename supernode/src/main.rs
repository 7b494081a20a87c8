//! `metalvpc-supernode`: the membership and relay server of a metalvpc overlay.

use metalvpc_supernode::config;
mod admin;
mod enrolled;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};
use metalvpc_common::{self as common, ago, drops_json, human_bytes, MgmtRequest};
use metalvpc_protocol::supernode::{Supernode, SupernodeStatus};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// metalvpc supernode: admits the members of each community and connects them.
///
/// The supernode runs on one public address. It admits the edges listed in its community
/// files, tells them about each other, helps them connect directly (also through NAT), and
/// relays their packets when no direct path works. Packets stay end-to-end encrypted between
/// the edges: the supernode never sees plaintext. Edges keep their direct tunnels while it
/// restarts; run two for redundancy.
///
/// Setting up:
///   (umask 077; metalvpc-supernode genkey > /etc/metalvpc/supernode.key)
///   metalvpc-supernode pubkey < /etc/metalvpc/supernode.key   # every edge needs this
///   cp /etc/metalvpc/supernode.toml.example /etc/metalvpc/supernode.toml   # then fill it in
///   metalvpc-supernode check --config /etc/metalvpc/supernode.toml
///   systemctl enable --now metalvpc-supernode   # or: metalvpc-supernode run --config ...
///   metalvpc-supernode status --config /etc/metalvpc/supernode.toml
#[derive(Parser)]
#[command(
    name = "metalvpc-supernode",
    version,
    verbatim_doc_comment,
    after_long_help = SUPERNODE_MORE_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const SUPERNODE_MORE_HELP: &str = "\
Files:
  /etc/metalvpc/supernode.toml          listen address, key, communities and their members
  /etc/metalvpc/supernode.key           the supernode's private key, mode 600
  /etc/metalvpc/supernode.toml.example  a commented example to start from
  /run/metalvpc/supernode.sock          management socket: GET /status (JSON), GET /metrics
  metalvpc-supernode.service            the systemd unit

Ports: UDP and TCP on the `listen` port (7654 in the examples); open both in the firewall.

Signals:
  SIGHUP           re-read the community files: members added join, members removed are
                   cut off, nobody else notices (systemctl reload)
  SIGINT, SIGTERM  stop; edges keep their direct tunnels and re-register when it is back

Exit status: 0 on success; 1 on any error, with a message that names the file, the key and
the fix. Logs go to stderr (the journal under systemd); RUST_LOG=debug shows more.

Documentation: /usr/share/doc/metalvpc/ (install.md, configuration.md, nat-traversal.md).
See also: metalvpc-edge(1).";

#[derive(Subcommand)]
enum Cmd {
    /// Print a new private key (base64). Store it with mode 600.
    ///
    /// Example: (umask 077; metalvpc-supernode genkey > /etc/metalvpc/supernode.key)
    #[command(verbatim_doc_comment)]
    Genkey,
    /// Read a private key on stdin and print its public key.
    ///
    /// Every edge puts it in the public_key of its [[supernode]] table.
    /// Example: metalvpc-supernode pubkey < /etc/metalvpc/supernode.key
    #[command(verbatim_doc_comment)]
    Pubkey,
    /// Run the supernode.
    ///
    /// Binds UDP and TCP on `listen` and stays in the foreground, logging to stderr. Under
    /// systemd (metalvpc-supernode.service) it reports ready once its sockets are bound and
    /// pings the watchdog. SIGHUP re-reads the community files; SIGTERM stops it.
    #[command(verbatim_doc_comment)]
    Run {
        /// The supernode's TOML file (listen, private_key_file, [[community]] …).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without starting; exits non-zero on any problem.
    ///
    /// Reads the file, its community_dir and the key exactly as `run` would (key file
    /// permissions, networks, duplicate addresses or keys) and prints a summary, or every
    /// problem found.
    #[command(verbatim_doc_comment)]
    Check {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a new administrator signing key (Ed25519, base64) to FILE with mode 600, or
    /// print it. Keep it off the supernodes: whoever holds it decides who is a member.
    AdminGenkey {
        /// Where to write it (refuses to overwrite); without it the key is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the administrator public key (for `admin_key` in edge and supernode configs)
    /// of the private key in FILE, or on stdin.
    AdminPubkey {
        /// The administrator private key file (mode 600); stdin without it.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Sign a community's member list ([[node]] entries of a supernode config or a
    /// community file) with the administrator key, for `signed_membership`.
    Sign {
        /// The administrator private key file (mode 600).
        #[arg(long)]
        key: PathBuf,
        /// A supernode config or a community file holding the [[node]] entries.
        #[arg(long, short)]
        config: PathBuf,
        /// Which community of the config (needed when it has several).
        #[arg(long)]
        community: Option<String>,
        /// The list's version; must grow with every list signed (default: the Unix time).
        #[arg(long)]
        version: Option<u64>,
        /// Where to write (default: the community's `signed_membership` path).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List or revoke the servers that enrolled with a community's join secret.
    Enrolled {
        #[command(subcommand)]
        action: EnrolAction,
    },
    /// Show the running supernode's communities and members.
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
    /// Write the man pages (metalvpc-supernode.1, metalvpc-supernode-run.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EnrolAction {
    /// List the servers that enrolled with a join secret, their addresses, and revoked keys.
    List {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke an enrolled server: its address is freed, its key refused from now on, and the
    /// running supernode is told to reload (its sessions are torn down on every edge).
    Revoke {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// The community it enrolled in.
        #[arg(long)]
        community: String,
        /// Its public key (base64).
        #[arg(long)]
        key: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Run { .. });
    common::daemon::main("metalvpc-supernode", daemon, || match cli.cmd {
        Cmd::Genkey => common::cmd_genkey(),
        Cmd::Pubkey => common::cmd_pubkey(),
        Cmd::Run { config } => run::run(config),
        Cmd::Check { config } => check(config),
        Cmd::Status { config, json } => status(config, json),
        Cmd::Enrolled { action } => enrolled::enrolled(action),
        Cmd::AdminGenkey { out } => admin::admin_genkey(out),
        Cmd::AdminPubkey { key } => admin::admin_pubkey(key),
        Cmd::Sign {
            key,
            config,
            community,
            version,
            out,
        } => admin::sign(&key, &config, community.as_deref(), version, out),
        Cmd::Man { dir } => common::write_man_pages(<Cli as clap::CommandFactory>::command(), &dir),
    });
}

fn check(path: PathBuf) -> Result<()> {
    let cfg = config::load(&path)?;
    let nodes: usize = cfg.core.communities.iter().map(|c| c.nodes.len()).sum();
    println!(
        "{}: OK: listen {}, key {}, {} communities, {} nodes, management {}",
        path.display(),
        cfg.listen,
        cfg.core.private_key.public_key(),
        cfg.core.communities.len(),
        nodes,
        cfg.management
    );
    for c in &cfg.core.communities {
        println!(
            "community {} ({}): {} nodes, relay_policy {}",
            c.name,
            c.network,
            c.nodes.len(),
            if c.relay { "allow" } else { "direct-only" }
        );
        if let Some(signed) = &c.signed {
            println!(
                "  members from a signed membership, version {} (verified against admin_key)",
                signed.version
            );
        }
        // Shared ranges are legitimate (a floating address that moves between nodes) but
        // worth a look: say which.
        for (i, a) in c.nodes.iter().enumerate() {
            for b in &c.nodes[i + 1..] {
                for x in &a.allowed_cidrs {
                    if let Some(y) = b
                        .allowed_cidrs
                        .iter()
                        .find(|y| x.contains(*y) || y.contains(x))
                    {
                        println!(
                            "  note: nodes '{}' ({x}) and '{}' ({y}) may both send from overlapping ranges (fine for a floating address)",
                            a.name, b.name
                        );
                    }
                }
            }
        }
    }
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
            "signed_membership_version": c.signed_version,
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
        "registrations": st.registrations,
        "pid": std::process::id(),
        "cookie_replies": st.cookie_replies,
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

/// The Prometheus page, from the same figures as `status --json`.
fn metrics(v: &serde_json::Value) -> String {
    let n = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
    let mut m = common::Metrics::default();
    let communities = v["communities"].as_array().cloned().unwrap_or_default();
    m.family(
        "metalvpc_supernode_members",
        "gauge",
        "Members configured per community.",
    );
    for c in &communities {
        let name = c["name"].as_str().unwrap_or("");
        let members = c["members"].as_array().map_or(0, Vec::len);
        m.sample(
            "metalvpc_supernode_members",
            &[("community", name)],
            members as f64,
        );
    }
    m.family(
        "metalvpc_supernode_registered_members",
        "gauge",
        "Members registered now per community.",
    );
    for c in &communities {
        let name = c["name"].as_str().unwrap_or("");
        let registered = c["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["registered"].as_bool() == Some(true))
            .count();
        m.sample(
            "metalvpc_supernode_registered_members",
            &[("community", name)],
            registered as f64,
        );
    }
    for (metric, field, help) in [
        (
            "metalvpc_supernode_member_relay_rx_bytes_total",
            "relay_rx_bytes",
            "Bytes a member sent through this supernode's relay.",
        ),
        (
            "metalvpc_supernode_member_relay_tx_bytes_total",
            "relay_tx_bytes",
            "Bytes relayed to a member.",
        ),
    ] {
        m.family(metric, "counter", help);
        for c in &communities {
            for member in c["members"].as_array().into_iter().flatten() {
                let name = member["name"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .or(member["public_key"].as_str())
                    .unwrap_or("");
                m.sample(
                    metric,
                    &[
                        ("community", c["name"].as_str().unwrap_or("")),
                        ("member", name),
                        ("address", member["address"].as_str().unwrap_or("")),
                    ],
                    n(&member[field]),
                );
            }
        }
    }
    m.single(
        "metalvpc_supernode_registrations_total",
        "counter",
        "Registration handshakes accepted.",
        n(&v["registrations"]),
    )
    .single(
        "metalvpc_supernode_refused_total",
        "counter",
        "Registrations refused (unknown key, community or address).",
        n(&v["refused"]),
    )
    .single(
        "metalvpc_supernode_relay_packets_total",
        "counter",
        "Packets relayed between members.",
        n(&v["relay"]["packets"]),
    )
    .single(
        "metalvpc_supernode_relay_bytes_total",
        "counter",
        "Bytes relayed between members (still end-to-end encrypted).",
        n(&v["relay"]["bytes"]),
    )
    .single(
        "metalvpc_supernode_tcp_connections",
        "gauge",
        "Edges connected over the TCP fallback.",
        n(&v["tcp_connections"]),
    )
    .drops(
        "metalvpc_supernode_drops_total",
        "Packets dropped, by reason.",
        &v["drops"],
    )
    .reloads("metalvpc_supernode", &v["reloads"]);
    m.finish()
}

fn answer(
    req: MgmtRequest,
    core: &Supernode,
    listen: std::net::SocketAddr,
    tcp_connections: usize,
    reloads: &common::ReloadStats,
) {
    req.answer(
        || status_json(&core.status(Instant::now()), listen, tcp_connections),
        reloads,
        metrics,
    );
}
