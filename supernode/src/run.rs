//! `metalvpc-supernode run`: binds the sockets and builds the core, then hands them to the
//! shared daemon loop ([`common::Shell`]) as the [`common::Daemon`] below: the TCP listener
//! is the supernode's own descriptor; the core decides when an idle TCP connection closes.

use metalvpc_supernode::{config, enrol, enrol_writer::Writer, macs_file};

use anyhow::Result;
use metalvpc_common::{self as common, MgmtRequest};
use metalvpc_protocol::supernode::{Command, Event, Supernode};
use metalvpc_protocol::Output;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;
use tracing::{debug, error, info, warn};

/// The running supernode: its core and TCP listener.
struct SupernodeDaemon {
    path: PathBuf,
    listen: SocketAddr,
    management: common::MgmtAddr,
    management_token: Option<common::MgmtToken>,
    state_dir: PathBuf,
    core: Supernode,
    tcp_listener: Option<std::net::TcpListener>,
    /// Writes enrolments to the store off the loop thread.
    writer: Writer,
}

pub(crate) fn run(path: PathBuf) -> Result<()> {
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
    let shell = common::Shell::new(sock, &cfg.management, cfg.management_token.clone())?;
    let communities: Vec<String> = cfg
        .core
        .communities
        .iter()
        .map(|c| format!("{} ({} nodes)", c.name, c.nodes.len()))
        .collect();
    // Sockets bound: the supernode needs no privilege from here on.
    common::drop_capabilities(&[]);
    for line in config::unsigned_warnings(&cfg) {
        warn!("{line}");
    }
    let names: Vec<String> = cfg
        .core
        .communities
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut core = Supernode::new(cfg.core, Instant::now(), metalvpc_protocol::Rng::from_os());
    // The MACs keys owned before a restart are theirs again before the first packet.
    for name in &names {
        let (claims, warnings) = macs_file::load(&macs_file::path(&cfg.state_dir, name));
        for w in warnings {
            warn!("{w}");
        }
        core.restore_macs(name, &claims);
    }
    core.set_wall_clock(Instant::now(), common::unix_micros() / 1_000_000);
    info!(
        "supernode {} listening on udp and tcp {}, management {}, communities: {}",
        core.public_key(),
        cfg.listen,
        cfg.management,
        communities.join(", ")
    );
    // GRO in, GSO out: a relayed bulk flow crosses the supernode in 64 KB batches.
    info!("data path: {}", shell.io().udp.describe());
    // Sockets are bound and the management socket is up: ready at the first tick.
    let mut daemon = SupernodeDaemon {
        path,
        listen: cfg.listen,
        management: cfg.management,
        management_token: cfg.management_token,
        writer: Writer::start(cfg.state_dir.clone(), |file, n, err| {
            match err {
            None => tracing::debug!("saved {n} enrolment(s) in {}", file.display()),
            Some(e) => error!("could not save {n} enrolment(s) in {}: {e:#}; they may get other addresses after a restart", file.display()),
        }
        }),
        state_dir: cfg.state_dir,
        core,
        tcp_listener,
    };
    let own = daemon.tcp_listener.as_ref().map(|l| l.as_raw_fd());
    shell.run(own, &mut daemon)
}

impl common::Daemon for SupernodeDaemon {
    type Core = Supernode;

    fn core(&mut self) -> &mut Supernode {
        &mut self.core
    }

    /// New TCP fallback connections.
    fn on_source(&mut self, io: &mut common::Io) {
        accept_tcp(
            self.tcp_listener.as_ref(),
            &mut io.transport,
            &mut self.core,
        );
    }

    fn reload(&mut self, io: &mut common::Io) {
        // The store is re-read: what the core enrolled must be in it first.
        self.writer.flush();
        self.core
            .set_wall_clock(Instant::now(), common::unix_micros() / 1_000_000);
        reload(
            &mut io.reloads,
            &self.path,
            (
                self.listen,
                (&self.management, self.management_token.clone()),
            ),
            &mut self.core,
            &mut io.out,
        );
    }

    /// Logs what happened, and carries out what the core decided: edges behind a TCP
    /// fallback register every few seconds, so a connection with no authenticated packet
    /// for two minutes (10 s after it opened) is closed.
    fn events(&mut self, io: &mut common::Io) {
        log_events(&mut self.core, &self.state_dir);
        for c in self.core.drain_commands() {
            match c {
                Command::CloseTcp(a) => {
                    if io.transport.tcp.remove(&a).is_some() {
                        debug!("closing TCP connection from {a}: no authenticated packet in time, or room made for a new one");
                    }
                }
                Command::SaveEnrolment(r) => self.writer.save(r),
                Command::SaveMacs { community, claims } => self.writer.write_file(
                    macs_file::path(&self.state_dir, &community),
                    macs_file::encode(&claims),
                ),
            }
        }
    }

    fn answer(&self, req: MgmtRequest, io: &common::Io) {
        let tcp_connections = io.transport.tcp.len();
        crate::answer(req, &self.core, self.listen, tcp_connections, &io.reloads);
    }

    fn systemd_state(&self) -> (bool, String) {
        systemd_state(&self.core, self.listen)
    }

    fn stopping(&self) {
        info!("stopping");
        self.writer.flush();
    }
}

fn log_events(core: &mut Supernode, state_dir: &std::path::Path) {
    for ev in core.drain_events() {
        match ev {
            Event::Enrolled {
                community,
                key,
                address,
                name,
            } => info!(
                "enrolled key {key} as '{name}' at {address} in community '{community}' (kept in {})",
                enrol::path(state_dir, &community).display()
            ),
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

/// Re-reads the config and applies its membership. A config with an error changes
/// nothing: the running membership stays, and the error is logged and kept for `status`.
fn reload(
    stats: &mut common::ReloadStats,
    path: &std::path::Path,
    (listen, management): (
        std::net::SocketAddr,
        (&common::MgmtAddr, Option<common::MgmtToken>),
    ),
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
    if new.management.to_string() != management.0.to_string() {
        warn!("reload: `management` changed but takes effect only at restart");
    }
    if new.management_token != management.1 {
        warn!("reload: `management_token_file` changed but takes effect only at restart");
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

/// Connections accepted per wake at most (the rest wait in the kernel's backlog), so a
/// flood of connects does not keep the loop from its other work.
const ACCEPTS_PER_WAKE: usize = 256;

/// Accepts new TCP fallback connections; the core admits or refuses each (per-source and
/// total limits) and may close an unauthenticated one to make room.
fn accept_tcp(
    listener: Option<&std::net::TcpListener>,
    transport: &mut common::Transport,
    core: &mut Supernode,
) {
    let Some(listener) = listener else { return };
    for _ in 0..ACCEPTS_PER_WAKE {
        let Ok((stream, peer)) = listener.accept() else {
            break;
        };
        let peer = common::canonical(peer);
        if !core.tcp_opened(Instant::now(), peer) {
            // Closed as `stream` drops; counted as the drop `tcp_refused`.
            debug!("refusing TCP connection from {peer}: over the per-source or total limit");
            continue;
        }
        // A connection the core closed to make room goes with the other commands, at the end
        // of this wake (`events`).
        match common::FramedTcp::new(stream, peer) {
            Ok(c) => {
                info!("TCP fallback connection from {peer}");
                transport.tcp.insert(c.peer, c);
            }
            Err(e) => {
                core.tcp_closed(peer);
                warn!("TCP connection from {peer}: {e}");
            }
        }
    }
}
