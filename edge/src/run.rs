//! `metalvpc-edge run`: sets up the TAP device, the socket and the core, then hands them to
//! the shared daemon loop ([`common::Shell`]) as the [`common::Daemon`] below: the TAP device
//! is the edge's own descriptor. The core decides; this shell carries out its commands
//! ([`Command`]): connecting the TCP fallback (on a helper thread) and closing it, keeping the
//! signed membership, configuring an assigned address.

use crate::{config, ipv6, tap};
use anyhow::Result;
use metalvpc_common::{self as common, MgmtRequest};
use metalvpc_protocol::edge::{Command, Edge, EdgeConfig, Event};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A TCP fallback connection opened on a helper thread, for the loop to take over.
type Connected = (SocketAddr, std::io::Result<TcpStream>);

/// The running edge: its core, TAP device and TCP fallback connects in progress.
struct EdgeDaemon {
    path: PathBuf,
    cfg: config::Loaded,
    core: Edge,
    tap: tap::Tap,
    tap_rx: tap::TapRx,
    info: crate::Info,
    // TCP fallback: connections are opened on helper threads (a connect can take seconds)
    // and handed to the loop through this channel.
    tcp_tx: mpsc::Sender<Connected>,
    tcp_rx: mpsc::Receiver<Connected>,
}

pub(crate) fn run(path: PathBuf) -> Result<()> {
    let mut cfg = config::load(&path)?;
    common::init_logging(&cfg.log_level);
    // No `interface.mtu`: follow the underlay (the route to the supernodes) and our overhead.
    if !cfg.mtu_explicit {
        if let Some(m) = crate::auto_mtu(&cfg.supernodes) {
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
    // Peers accept IPv6 from our link-local address only if it is the one derived from our
    // MAC (EUI-64): make the kernel use that one, whatever the host's default.
    if let Err(e) = ipv6::use_eui64(&tap.name) {
        warn!("{e:#}: members drop IPv6 from this server's link-local address unless it is the EUI-64 one derived from its MAC");
    }
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
    let shell = common::Shell::new(sock, &cfg.management, cfg.management_token.clone())?;
    let locals = tap::local_endpoints(cfg.listen_port, &tap.name);
    let info = crate::Info {
        community: cfg.community.clone(),
        address: cfg.address.to_string(),
        interface: tap.name.clone(),
        mtu: cfg.mtu,
        listen_port: cfg.listen_port,
        keepalive: cfg.keepalive,
        address6: cfg.address6.map(|a| a.to_string()),
        membership_cache_error: None,
    };
    // Everything that needed privileges is done: the TAP device is up, the sockets are bound.
    // Keep CAP_NET_ADMIN only (the device's settings), nothing else.
    let kept = common::drop_capabilities(&[common::CAP_NET_ADMIN]);
    tracing::debug!("capabilities kept: {kept:#x}");
    let core = Edge::new(
        EdgeConfig {
            community: cfg.community.clone(),
            private_key: cfg.private_key.clone(),
            address: cfg.address.addr().into(),
            network: (!cfg.address.addr().is_unspecified()).then(|| cfg.address.trunc().into()),
            mac: cfg.mac,
            supernodes: cfg.supernodes.clone(),
            local_endpoints: locals,
            keepalive: cfg.keepalive,
            relay: cfg.relay,
            neighbor_suppression: cfg.neighbor_suppression,
            mtu: cfg.mtu,
            mss_clamp: cfg.mss_clamp,
            join_secret: cfg.join_secret.clone(),
            join_token: cfg.join_token.clone(),
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
    if let Some(w) = config::unsigned_warning(&cfg) {
        warn!("{w}");
    }
    info!(
        "data path: TAP offloads (TSO, checksum) {}, {}",
        if tap.offload { "on" } else { "off" },
        shell.io().udp.describe()
    );
    let (tcp_tx, tcp_rx) = mpsc::channel::<Connected>();
    let mut daemon = EdgeDaemon {
        path,
        cfg,
        core,
        tap,
        tap_rx: tap::TapRx::default(),
        info,
        tcp_tx,
        tcp_rx,
    };
    shell.run(Some(daemon.tap.fd()), &mut daemon)
}

impl common::Daemon for EdgeDaemon {
    type Core = Edge;

    fn core(&mut self) -> &mut Edge {
        &mut self.core
    }

    /// Frames from the TAP device.
    fn on_source(&mut self, io: &mut common::Io) {
        // Up to 64 reads per wake; with TSO one read can be 45 frames.
        for _ in 0..64 {
            let now = Instant::now();
            let core = &mut self.core;
            match self
                .tap
                .read_frames(&mut self.tap_rx, |f| core.handle_frame(now, f, &mut io.out))
            {
                Ok(true) => {
                    if io.out.transmits.len() >= 64 {
                        self.flush(io);
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    warn!("reading {}: {e}", self.tap.name);
                    break;
                }
            }
        }
    }

    fn flush(&self, io: &mut common::Io) {
        self.tap.write_frames(&io.out);
        io.send();
    }

    /// The TCP fallback: take over the connections the helper threads opened (or report
    /// that they failed); the core decides what follows.
    fn housekeeping(&mut self, io: &mut common::Io) {
        while let Ok((addr, result)) = self.tcp_rx.try_recv() {
            match result.and_then(|s| common::FramedTcp::new(s, addr)) {
                Ok(conn) => {
                    info!(
                        "supernode {addr} reached over TCP (UDP got no answer); using TCP for it"
                    );
                    io.transport.tcp.insert(addr, conn);
                    self.core.tcp_connected(Instant::now(), addr);
                }
                Err(e) => {
                    warn!("TCP fallback to supernode {addr} failed: {e}");
                    self.core.tcp_closed(addr);
                }
            }
        }
    }

    fn reload(&mut self, io: &mut common::Io) {
        if let Some(k) = reload(&mut io.reloads, &self.path, &self.cfg, &mut self.core) {
            self.info.keepalive = k;
        }
        // A removed supernode's TCP connection closes now, before anything is sent to it.
        self.carry_out(io);
    }

    fn events(&mut self, io: &mut common::Io) {
        log_events(&mut self.core);
        self.carry_out(io);
    }

    fn answer(&self, req: MgmtRequest, io: &common::Io) {
        crate::answer(
            req,
            &self.core,
            &self.info,
            &io.transport,
            &io.reloads,
            self.tap_rx.bad_frames,
        );
    }

    fn systemd_state(&self) -> (bool, String) {
        systemd_state(&self.core, &self.tap.name)
    }

    fn stopping(&self) {
        info!("stopping; {} goes away with the process", self.tap.name);
    }
}

impl EdgeDaemon {
    /// Carries out what the core decided.
    fn carry_out(&mut self, io: &mut common::Io) {
        let cfg = &self.cfg;
        for cmd in self.core.drain_commands() {
            match cmd {
                Command::ConnectTcp(addr) => {
                    // A connect can take seconds: on a helper thread, handed back through
                    // the channel (and a wake-up).
                    let (tx, wake) = (self.tcp_tx.clone(), io.wake_handle());
                    std::thread::spawn(move || {
                        let _ = tx.send((
                            addr,
                            TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
                        ));
                        wake.wake();
                    });
                }
                Command::CloseTcp(addr) => {
                    if io.transport.tcp.remove(&addr).is_some() {
                        info!("supernode {addr} is no longer configured: its TCP connection is closed");
                    }
                }
                Command::PersistMembership(bytes) => {
                    if let Some(path) = cfg.membership_cache.as_deref() {
                        self.info.membership_cache_error = write_membership_cache(path, &bytes);
                    }
                }
                Command::ApplyAddress { address, prefix } => {
                    match self.tap.configure(cfg.mac, cfg.mtu, address, prefix) {
                        Ok(()) => self.info.address = format!("{address}/{prefix}"),
                        Err(e) => tracing::error!(
                            "configuring the assigned address {address}/{prefix}: {e:#}"
                        ),
                    }
                }
            }
        }
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

/// Keeps the newest signed membership for the next start (temp file, fsync, rename, fsync
/// of the directory). A failure is an error in the log and in `status` (the returned text,
/// `membership.cache_error`): without the cache, a restart loses the floor against rolled
/// back lists.
fn write_membership_cache(path: &std::path::Path, bytes: &[u8]) -> Option<String> {
    match common::write_atomic(path, bytes, 0o600) {
        Ok(()) => None,
        Err(e) => {
            let msg = format!(
                "cannot write membership_cache {}: {e}; after a restart this edge would accept an older signed list than it has seen (make the directory writable: the shipped unit has ReadWritePaths=/var/lib/metalvpc)",
                path.display()
            );
            tracing::error!("{msg}");
            Some(msg)
        }
    }
}

/// Logs what happened (what the shell must do comes as commands).
fn log_events(core: &mut Edge) {
    for ev in core.drain_events() {
        match ev {
            Event::AddressAssigned {
                address,
                prefix,
                supernode,
            } => {
                info!("supernode {supernode} assigned this server the overlay address {address}/{prefix}");
            }
            Event::AddressRefused {
                address,
                prefix,
                supernode,
                reason,
            } => warn!(
                "supernode {supernode} assigned the overlay address {address}/{prefix}, refused: {reason}"
            ),
            Event::MembershipAccepted {
                version,
                members,
                supernode,
            } => {
                info!(
                    "signed membership version {version} accepted ({members} members, from {})",
                    supernode.map_or("membership_cache".to_string(), |s| format!("supernode {s}"))
                );
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
}

/// Re-reads the config and applies the supernode list and keepalive. A config with an
/// error changes nothing; the rest of the file (address, interface, key …) takes effect
/// only at restart, and the log says so when it differs.
fn reload(
    stats: &mut common::ReloadStats,
    path: &std::path::Path,
    running: &config::Loaded,
    core: &mut Edge,
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
        (
            "management_token_file",
            new.management_token != running.management_token,
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
    // A removed supernode's TCP fallback connection is closed by the core's command.
    let (added, removed) = core.reload(&new.supernodes, new.keepalive, Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_cache_that_cannot_be_written_is_an_error_for_status() {
        let dir = common::testing::TempDir::new("edge-cache");
        let ok = dir.join("prod.members");
        assert_eq!(write_membership_cache(&ok, b"list v2"), None);
        assert_eq!(std::fs::read(&ok).unwrap(), b"list v2");
        // The directory is missing (as /var/lib/metalvpc was for the shipped unit before it
        // had StateDirectory=): the error names the file and the fix, and status shows it.
        let missing = dir.join("var-lib-metalvpc").join("prod.members");
        let err = write_membership_cache(&missing, b"list v3").expect("an error");
        assert!(err.contains("prod.members"), "{err}");
        assert!(err.contains("ReadWritePaths=/var/lib/metalvpc"), "{err}");
        assert!(err.contains("older signed list"), "{err}");
    }
}
