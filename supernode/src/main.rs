//! `metalvpc-supernode`: the membership and relay server of a metalvpc overlay.

use metalvpc_supernode::{config, enrol};
mod check;
mod status;

use check::check;
use status::{answer, status};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use metalvpc_common::{self as common, ago};
use metalvpc_protocol::membership::{AdminKey, Membership};
use metalvpc_protocol::supernode::{Command, Event, Supernode, MAX_TCP};
use metalvpc_protocol::Output;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;
use tracing::{error, info, warn};

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

fn enrolled(action: EnrolAction) -> Result<()> {
    match action {
        EnrolAction::List { config } => {
            let cfg = config::load(&config)?;
            for c in cfg
                .core
                .communities
                .iter()
                .filter(|c| c.enrolment.is_some())
            {
                let file = enrol::path(&cfg.state_dir, &c.name);
                let store = enrol::load(&file)?;
                println!(
                    "community {} (pool {}), {}:",
                    c.name,
                    c.enrolment
                        .as_ref()
                        .map(|e| e.pool.to_string())
                        .unwrap_or_default(),
                    file.display()
                );
                println!("  {:<20} {:<16} {:<46} ENROLLED", "NAME", "ADDRESS", "KEY");
                for n in &store.node {
                    println!(
                        "  {:<20} {:<16} {:<46} {}",
                        n.name,
                        n.address,
                        n.public_key,
                        ago(Some(
                            (common::unix_micros() / 1_000_000).saturating_sub(n.enrolled) as f64
                        ))
                    );
                }
                for k in &store.revoked {
                    println!("  revoked: {k}");
                }
            }
            Ok(())
        }
        EnrolAction::Revoke {
            config,
            community,
            key,
        } => {
            let cfg = config::load(&config)?;
            if !cfg
                .core
                .communities
                .iter()
                .any(|c| c.name == community && c.enrolment.is_some())
            {
                anyhow::bail!(
                    "{}: community '{community}' does not take enrolments (no `join_secret_file`)",
                    config.display()
                );
            }
            metalvpc_protocol::PublicKey::from_base64(&key)
                .map_err(|e| anyhow::anyhow!("--key {key}: not a public key ({e})"))?;
            let file = enrol::path(&cfg.state_dir, &community);
            match enrol::revoke(&file, &key)? {
                Some(a) => println!(
                    "revoked {key}: address {a} is free again; the key is refused from now on"
                ),
                None => println!("{key} was not enrolled; it is refused from now on"),
            }
            // Tell the running supernode, if there is one.
            match common::query_management(&cfg.management, "/status", &config)
                .ok()
                .and_then(|b| serde_json::from_str::<status::SupernodeReport>(&b).ok())
                .map(|r| r.pid)
                .filter(|pid| *pid != 0)
            {
                // SAFETY: kill(2) with a pid the daemon reported and a plain signal.
                Some(pid) if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } == 0 => {
                    println!("the running supernode (pid {pid}) reloaded: the server is cut off now")
                }
                _ => println!("no running supernode answered; the revocation applies when it starts (or run: systemctl reload metalvpc-supernode)"),
            }
            Ok(())
        }
    }
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
        Cmd::Enrolled { action } => enrolled(action),
        Cmd::AdminGenkey { out } => admin_genkey(out),
        Cmd::AdminPubkey { key } => admin_pubkey(key),
        Cmd::Sign {
            key,
            config,
            community,
            version,
            out,
        } => sign(&key, &config, community.as_deref(), version, out),
        Cmd::Man { dir } => common::write_man_pages(<Cli as clap::CommandFactory>::command(), &dir),
    };
    if let Err(e) = result {
        eprintln!("metalvpc-supernode: error: {e:#}");
        std::process::exit(1);
    }
}

fn admin_genkey(out: Option<PathBuf>) -> Result<()> {
    let key = AdminKey::generate();
    let Some(path) = out else {
        println!("{}", key.to_base64());
        return Ok(());
    };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    writeln!(f, "{}", key.to_base64())?;
    println!("{}", key.public_key());
    eprintln!(
        "wrote the administrator key to {} (mode 600); its public half (above) is `admin_key` for edges and supernodes",
        path.display()
    );
    Ok(())
}

/// Reads an administrator private key file, refusing one that group or others may read.
fn load_admin_key(path: &std::path::Path) -> Result<AdminKey> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "{}: cannot read the administrator key; create one with `metalvpc-supernode admin-genkey --out {}`",
            path.display(),
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{}: the administrator key is readable by group or others (mode {mode:o}); it must be readable by its owner only. Fix: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    AdminKey::from_base64(&text)
        .map_err(|e| anyhow::anyhow!("{}: not an administrator key: {e}", path.display()))
}

fn admin_pubkey(key: Option<PathBuf>) -> Result<()> {
    let key = match key {
        Some(path) => load_admin_key(&path)?,
        None => {
            use std::io::Read as _;
            let mut text = String::new();
            std::io::stdin().take(4096).read_to_string(&mut text)?;
            AdminKey::from_base64(&text).map_err(|e| {
                anyhow::anyhow!("stdin: not an administrator key: {e}. Usage: metalvpc-supernode admin-pubkey < admin.key")
            })?
        }
    };
    println!("{}", key.public_key());
    Ok(())
}

fn sign(
    key: &std::path::Path,
    config: &std::path::Path,
    community: Option<&str>,
    version: Option<u64>,
    out: Option<PathBuf>,
) -> Result<()> {
    let admin = load_admin_key(key)?;
    let (c, target) = config::community_for_signing(config, community)?;
    let out = out.or(target).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: community '{}' has no `signed_membership` key; say where to write with --out FILE",
            config.display(),
            c.name
        )
    })?;
    let version = version.unwrap_or_else(|| common::unix_micros() / 1_000_000);
    // Versions only grow: an edge refuses a list older than one it has seen.
    if let Ok(old) = config::read_signed_file(&out) {
        if let Ok(old) = Membership::verify(&old, &admin.public_key()) {
            if old.version >= version {
                anyhow::bail!(
                    "{}: holds version {} already; the new list needs a higher one (--version {})",
                    out.display(),
                    old.version,
                    old.version + 1
                );
            }
        }
    }
    let m = config::membership_of(&c, version);
    m.validate()
        .map_err(|e| anyhow::anyhow!("{}: community '{}': {e}", config.display(), c.name))?;
    let bytes = m.sign(&admin);
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: community '{}' version {}, {} members, signed by {}",
        out.display(),
        c.name,
        version,
        m.members.len(),
        admin.public_key()
    );
    Ok(())
}

fn log_events(core: &mut Supernode, state_dir: &std::path::Path) {
    for ev in core.drain_events() {
        match ev {
            Event::Enrolled {
                community,
                key,
                address,
                name,
            } => {
                let file = enrol::path(state_dir, &community);
                match enrol::record(&file, &key.to_base64(), &address.to_string(), &name) {
                    Ok(()) => info!(
                        "enrolled key {key} as '{name}' at {address} in community '{community}' (kept in {})",
                        file.display()
                    ),
                    Err(e) => error!(
                        "enrolled key {key} as '{name}' at {address} in community '{community}', but could not save it: {e:#}; it may get another address after a restart"
                    ),
                }
            }
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
    let cfg = config::load(&path)?;
    common::init_logging(&cfg.log_level);
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
    // Sockets bound: the supernode needs no privilege from here on.
    common::drop_capabilities(&[]);
    let mut core = Supernode::new(cfg.core, Instant::now(), metalvpc_protocol::Rng::from_os());
    info!(
        "supernode {} listening on udp and tcp {}, management {}, communities: {}",
        core.public_key(),
        cfg.listen,
        cfg.management,
        communities.join(", ")
    );
    let mut out = Output::default();
    // GRO in, GSO out: a relayed bulk flow crosses the supernode in 64 KB batches.
    let mut udp = metalvpc_common::datapath::Udp::new(&transport.udp);
    info!("data path: {}", udp.describe());
    let mut reloads = common::ReloadStats::default();
    // Sockets are bound and the management socket is up: ready at the first tick.
    let mut sd = common::systemd::Service::from_env();
    while !waker.stopping() {
        let timeout = sd.cap_timeout(
            core.poll_timeout()
                .saturating_duration_since(Instant::now()),
        );
        let tcp = transport.tcp_poll_set();
        let mut fds = vec![(transport.udp.as_raw_fd(), false), (waker.fd(), false)];
        fds.push((tcp_listener.as_ref().map_or(-1, |l| l.as_raw_fd()), false));
        fds.extend(tcp.iter().map(|(_, fd)| *fd));
        let ready = common::poll_fds(&fds, timeout);
        if ready[1].0 {
            waker.drain();
        }
        if waker.take_reload() {
            sd.reloading();
            reload(
                &mut reloads,
                &path,
                (cfg.listen, &cfg.management),
                &mut core,
                &mut out,
            );
            sd.reloaded();
        }
        if ready[0].0 {
            // Drain a bounded batch (512 datagrams), so timers and management still get
            // their turn; what is due goes out after every 64.
            for _ in 0..8 {
                let now = Instant::now();
                let n = udp.recv_batch(64, |src, pkt| core.handle_udp(now, src, pkt, &mut out));
                udp.send_all(&mut transport, &out);
                out.clear();
                if n < 64 {
                    break;
                }
            }
        }
        if ready[2].0 {
            accept_tcp(tcp_listener.as_ref(), &mut transport, &mut core);
        }
        for (i, (addr, _)) in tcp.iter().enumerate() {
            let (r, w) = ready[3 + i];
            if r || w {
                transport.service_tcp(*addr, r, |p| {
                    core.handle_udp(Instant::now(), *addr, p, &mut out)
                });
                if !transport.tcp.contains_key(addr) {
                    core.tcp_closed(*addr);
                }
            }
        }
        core.handle_timeout(Instant::now(), &mut out);
        // Edges behind a TCP fallback register every few seconds; the core says which
        // connection fell silent (its frames come through `handle_udp`).
        for cmd in core.drain_commands() {
            let Command::CloseTcp(a) = cmd;
            if transport.tcp.remove(&a).is_some() {
                info!("closing idle TCP connection from {a}");
            }
        }
        udp.send_all(&mut transport, &out);
        out.clear();
        log_events(&mut core, &cfg.state_dir);
        while let Ok(req) = mgmt.try_recv() {
            answer(req, &core, cfg.listen, transport.tcp.len(), &reloads);
        }
        sd.tick(|| systemd_state(&core, cfg.listen));
    }
    sd.stopping();
    info!("stopping");
    if let common::MgmtAddr::Unix(p) = &cfg.management {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Re-reads the config and applies its membership. A config with an error changes
/// nothing: the running membership stays, and the error is logged and kept for `status`.
fn reload(
    stats: &mut common::ReloadStats,
    path: &std::path::Path,
    (listen, management): (std::net::SocketAddr, &common::MgmtAddr),
    core: &mut Supernode,
    out: &mut Output,
) {
    let Some(new) = stats.record(config::load(path)) else {
        return;
    };
    if new.listen != listen {
        warn!(
            "reload: `listen` changed to {} but takes effect only at restart",
            new.listen
        );
    }
    if new.management.to_string() != management.to_string() {
        warn!("reload: `management` changed but takes effect only at restart");
    }
    if new.core.private_key.public_key() != core.public_key() {
        warn!("reload: `private_key_file` holds another key; it takes effect only at restart (edges must be given the new public key first)");
    }
    for c in new.core.communities.iter().filter(|c| c.signed.is_some()) {
        let v = c.signed.as_ref().map_or(0, |s| s.version);
        info!(
            "reload: community '{}' carries signed membership version {v}",
            c.name
        );
    }
    let s = core.reload(new.core.communities, new.core.register_interval, out);
    let list = |v: &[(String, String)]| {
        v.iter()
            .map(|(c, m)| format!("{m} ({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if s.is_empty() {
        info!("reloaded {}: membership unchanged", path.display());
        return;
    }
    info!(
        "reloaded {}: added [{}], removed [{}], changed [{}], communities added [{}], removed [{}]",
        path.display(),
        list(&s.added),
        list(&s.removed),
        list(&s.changed),
        s.communities_added.join(", "),
        s.communities_removed.join(", ")
    );
    for (c, m) in &s.removed {
        info!("member '{m}' removed from community '{c}': its sessions are closed and every member was told to close theirs");
    }
}

/// What systemd is told (`Type=notify`): ready as soon as the loop runs, and the line
/// `systemctl status` shows.
fn systemd_state(core: &Supernode, listen: std::net::SocketAddr) -> (bool, String) {
    let st = core.status(Instant::now());
    let members: usize = st.communities.iter().map(|c| c.members.len()).sum();
    let registered: usize = st
        .communities
        .iter()
        .map(|c| c.members.iter().filter(|m| m.registered).count())
        .sum();
    (
        true,
        format!(
            "listening on {listen}; {} communities; {registered} of {members} members registered; {} packets relayed",
            st.communities.len(),
            st.relay_packets
        ),
    )
}

fn accept_tcp(
    listener: Option<&std::net::TcpListener>,
    transport: &mut common::Transport,
    core: &mut Supernode,
) {
    let Some(listener) = listener else { return };
    while let Ok((stream, peer)) = listener.accept() {
        if transport.tcp.len() >= MAX_TCP {
            warn!("refusing TCP connection from {peer}: {MAX_TCP} connections already");
            continue;
        }
        match common::FramedTcp::new(stream, peer) {
            Ok(c) => {
                info!("TCP fallback connection from {peer}");
                core.tcp_opened(Instant::now(), c.peer);
                transport.tcp.insert(c.peer, c);
            }
            Err(e) => warn!("TCP connection from {peer}: {e}"),
        }
    }
}
