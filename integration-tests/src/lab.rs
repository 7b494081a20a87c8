//! The lab: an underlay of namespaces on one bridge, keys, configs and daemons.

use crate::exec::{exec_in, run_timeout, run_with_input};
use crate::netns::{unique_prefix, Netns};
use crate::pcap::Capture;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The supernode's underlay address and UDP port in every lab.
pub const SUPERNODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SUPERNODE_PORT: u16 = 7654;
/// The edges' default UDP port.
pub const EDGE_PORT: u16 = 7655;
/// How long a status command may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// A host namespace attached to the lab's bridge.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Namespace name.
    pub ns: String,
    /// Underlay address (198.18.0.x).
    pub ip: Ipv4Addr,
    /// The host's underlay interface (its end of the veth pair).
    pub iface: String,
}

/// How to configure one edge.
#[derive(Debug, Clone)]
pub struct EdgeOpts {
    pub name: String,
    pub community: String,
    /// Interface address with prefix length, e.g. `10.97.0.1/24`.
    pub address: String,
    pub listen_port: Option<u16>,
    pub mtu: Option<u32>,
    /// Extra TOML lines appended to the top level of the config (before any table).
    pub extra_toml: String,
}

impl EdgeOpts {
    pub fn new(name: &str, community: &str, address: &str) -> EdgeOpts {
        EdgeOpts {
            name: name.into(),
            community: community.into(),
            address: address.into(),
            listen_port: None,
            mtu: None,
            extra_toml: String::new(),
        }
    }
}

/// An edge of the lab (its host, key and config); the daemon itself is owned by the lab.
#[derive(Debug, Clone)]
pub struct Edge {
    pub name: String,
    pub community: String,
    pub host: HostInfo,
    /// TAP device name inside the edge's namespace.
    pub tap: String,
    /// Overlay address without prefix length.
    pub overlay: Ipv4Addr,
    pub config: PathBuf,
    pub key_file: PathBuf,
    pub public_key: String,
    pub listen_port: u16,
    /// The NAT router this edge sits behind (`None`: on the public segment).
    pub router: Option<crate::nat::Router>,
}

impl Edge {
    /// Namespace name.
    pub fn ns(&self) -> &str {
        &self.host.ns
    }
    /// Overlay address as a string (for ping and friends).
    pub fn ip(&self) -> String {
        self.overlay.to_string()
    }
    /// This edge as a supernode member, with the address it configures on its TAP.
    pub fn member(&self) -> Member {
        Member {
            name: self.name.clone(),
            public_key: self.public_key.clone(),
            address: self.ip(),
            allowed_cidrs: vec![],
        }
    }
}

/// A `[[community.node]]` entry.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub public_key: String,
    pub address: String,
    pub allowed_cidrs: Vec<String>,
}

impl Member {
    /// Same member, but registered in the supernode under another overlay address.
    pub fn with_address(mut self, address: &str) -> Member {
        self.address = address.into();
        self
    }
}

/// A `[[community]]` of the supernode config.
#[derive(Debug, Clone)]
pub struct Community {
    pub name: String,
    pub network: String,
    pub members: Vec<Member>,
}

impl Community {
    pub fn new(name: &str, network: &str, members: Vec<Member>) -> Community {
        Community {
            name: name.into(),
            network: network.into(),
            members,
        }
    }
}

/// A further supernode of the lab (see [`Lab::add_supernode`]): its own host, key,
/// config and management socket.
#[derive(Debug, Clone)]
pub struct SupernodeInfo {
    /// Daemon name in the lab ("supernode2", …).
    pub name: String,
    pub host: HostInfo,
    pub port: u16,
    pub key_file: PathBuf,
    pub public_key: String,
    pub config: PathBuf,
}

impl SupernodeInfo {
    /// `ip:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host.ip, self.port)
    }
}

/// A daemon process, its stdout+stderr going to `log`. Stopped (TERM, then KILL) and
/// reaped on drop.
pub struct Daemon {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `args` inside `ns` (via `ip netns exec`, which execs the program, so the
    /// child pid is the daemon's own).
    pub fn spawn(name: &str, ns: &str, args: &[&std::ffi::OsStr], log: &Path) -> Result<Daemon> {
        let f = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        crate::cleanup::register_pid(child.id());
        Ok(Daemon {
            name: name.into(),
            log: log.into(),
            child: Some(child),
        })
    }

    /// `None` while running, else how it exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => None,
            Some(Ok(Some(st))) => Some(st.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            None => Some("stopped".into()),
        }
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `sig` (e.g. `libc::SIGKILL`) to this daemon's own process (by its pid, never by
    /// name), then waits up to 5 s for it to exit and reaps it. Returns false if it was not
    /// running or did not exit.
    pub fn signal_and_reap(&mut self, sig: libc::c_int) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        let start = Instant::now();
        let mut exited = false;
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        crate::cleanup::unregister_pid(c.id());
        exited
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL; always reaps.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            crate::cleanup::unregister_pid(c.id());
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private underlay: a bridge in a "switch" namespace, a supernode host at
/// 198.18.0.1 and edge hosts at 198.18.0.11, .12, … — plus the keys, configs, daemons,
/// and a temp dir for all their files. Dropping it stops everything and deletes it all;
/// if the test is panicking, the daemons' logs are printed first.
pub struct Lab {
    pub test: String,
    pub prefix: String,
    /// Per-test directory with keys, configs, sockets, logs and captures.
    pub dir: PathBuf,
    // Field order is drop order: daemons before the namespaces they run in.
    daemons: Vec<Daemon>,
    pub(crate) hosts: Vec<Netns>,
    pub(crate) switch: Netns,
    pub supernode_host: HostInfo,
    pub supernode_key_file: PathBuf,
    pub supernode_public_key: String,
    pub supernode_config: PathBuf,
    /// Supernodes beyond the first, in the order added ([`Lab::add_supernode`]).
    pub extra_supernodes: Vec<SupernodeInfo>,
    next_port: u32,
    next_tap: u32,
    /// Last octet of the next public edge host (198.18.0.11, .12, …).
    next_edge_octet: u8,
    /// Number of edges created so far (extra supernodes must come before the first).
    edges_added: usize,
    /// Routers created so far (router N has LAN 198.19.N.0/24).
    pub(crate) routers_added: u8,
    /// Per router LAN: the last octet of its next host (198.19.N.10, .11, …).
    pub(crate) lan_next: std::collections::BTreeMap<u8, u8>,
}

impl Lab {
    /// Builds the switch and the supernode host for `test`. Returns `None` (after printing
    /// the SKIPPED line) when network namespaces are unavailable; see [`crate::require_netns`].
    pub fn new(test: &str) -> Option<Lab> {
        if !crate::require_netns(test) {
            return None;
        }
        Some(Lab::build(test).unwrap_or_else(|e| panic!("{test}: building the lab: {e:#}")))
    }

    fn build(test: &str) -> Result<Lab> {
        let prefix = unique_prefix();
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        crate::cleanup::register_dir(dir.clone());
        let switch = Netns::new(&format!("{prefix}-sw"))?;
        let br = format!("{prefix}br");
        switch.run(&["ip", "link", "add", &br, "type", "bridge"])?;
        switch.run(&["ip", "link", "set", &br, "up"])?;
        let placeholder = HostInfo {
            ns: String::new(),
            ip: SUPERNODE_IP,
            iface: String::new(),
        };
        let mut lab = Lab {
            test: test.into(),
            prefix: prefix.clone(),
            supernode_key_file: dir.join("supernode.key"),
            supernode_config: dir.join("supernode.toml"),
            dir,
            daemons: vec![],
            hosts: vec![],
            switch,
            supernode_host: placeholder,
            supernode_public_key: String::new(),
            extra_supernodes: vec![],
            next_port: 0,
            next_tap: 0,
            next_edge_octet: 11,
            edges_added: 0,
            routers_added: 0,
            lan_next: Default::default(),
        };
        lab.supernode_host = lab.add_host("sn", SUPERNODE_IP)?;
        println!("[{test}] lab {prefix}: files in {}", lab.dir.display());
        Ok(lab)
    }

    /// Adds a namespace `<prefix>-<role>` wired to the bridge with underlay address `ip`/24.
    pub fn add_host(&mut self, role: &str, ip: Ipv4Addr) -> Result<HostInfo> {
        let sw = self.switch.name().to_string();
        let br = format!("{}br", self.prefix);
        self.attach_host(role, &sw, &br, ip, None)
    }

    /// Adds a namespace `<prefix>-<role>` wired to bridge `bridge` of namespace `bridge_ns`
    /// (the public switch, or a NAT router's LAN), with address `ip`/24 and, if given, a
    /// default route via `gateway`.
    pub(crate) fn attach_host(
        &mut self,
        role: &str,
        bridge_ns: &str,
        bridge: &str,
        ip: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
    ) -> Result<HostInfo> {
        let i = self.next_port;
        self.next_port += 1;
        let ns = Netns::new(&format!("{}-{role}", self.prefix))?;
        let sw_end = format!("{}p{i}", self.prefix);
        let host_end = format!("{}h{i}", self.prefix);
        // Create the pair inside the bridge's namespace and move one end straight into the
        // host namespace: nothing is ever created in the root namespace.
        let run = |args: &[&str]| -> Result<()> {
            let out = exec_in(bridge_ns, args, Duration::from_secs(10));
            if !out.success() {
                bail!(
                    "in netns {bridge_ns}: {args:?}: {}{}",
                    out.stdout,
                    out.stderr
                );
            }
            Ok(())
        };
        run(&[
            "ip",
            "link",
            "add",
            &sw_end,
            "type",
            "veth",
            "peer",
            "name",
            &host_end,
            "netns",
            ns.name(),
        ])?;
        run(&["ip", "link", "set", &sw_end, "master", bridge, "up"])?;
        ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &host_end])?;
        ns.run(&["ip", "link", "set", &host_end, "up"])?;
        if let Some(gw) = gateway {
            ns.run(&["ip", "route", "add", "default", "via", &gw.to_string()])?;
        }
        let info = HostInfo {
            ns: ns.name().to_string(),
            ip,
            iface: host_end,
        };
        self.hosts.push(ns);
        Ok(info)
    }

    /// Generates the supernode key on first use (so a lab without daemons needs no binaries).
    fn supernode_key(&mut self) -> Result<String> {
        if self.supernode_public_key.is_empty() {
            self.supernode_public_key = genkey(&crate::supernode_bin(), &self.supernode_key_file)?;
        }
        Ok(self.supernode_public_key.clone())
    }

    /// Supernode namespace name.
    pub fn sn_ns(&self) -> &str {
        &self.supernode_host.ns
    }

    /// `198.18.0.1:7654`.
    pub fn supernode_addr(&self) -> String {
        format!("{SUPERNODE_IP}:{SUPERNODE_PORT}")
    }

    /// Creates an edge host (198.18.0.11, .12, … on the public segment), its key and its
    /// config. Does not start it.
    pub fn add_edge(&mut self, opts: EdgeOpts) -> Edge {
        let ip = Ipv4Addr::new(198, 18, 0, self.next_edge_octet);
        self.next_edge_octet += 1;
        let host = self
            .add_host(&opts.name, ip)
            .unwrap_or_else(|e| panic!("adding edge host {}: {e:#}", opts.name));
        self.try_add_edge(&opts, host, None)
            .unwrap_or_else(|e| panic!("adding edge {}: {e:#}", opts.name))
    }

    /// Key and config of an edge on `host` (created by the caller).
    pub(crate) fn try_add_edge(
        &mut self,
        o: &EdgeOpts,
        host: HostInfo,
        router: Option<crate::nat::Router>,
    ) -> Result<Edge> {
        let sn_key = self.supernode_key()?;
        self.edges_added += 1;
        let key_file = self.dir.join(format!("{}.key", o.name));
        let public_key = genkey(&crate::edge_bin(), &key_file)?;
        let tap = format!("{}t{}", self.prefix, self.next_tap);
        self.next_tap += 1;
        let overlay: Ipv4Addr = o
            .address
            .split('/')
            .next()
            .unwrap_or("")
            .parse()
            .context("edge address")?;
        let config = self.dir.join(format!("{}.toml", o.name));
        let listen_port = o.listen_port.unwrap_or(EDGE_PORT);
        let management = self.dir.join(format!("{}.sock", o.name)); // see edge_socket
        let mut t = edge_config_toml(
            o,
            &key_file,
            &management,
            &self.supernode_addr(),
            &sn_key,
            &tap,
        );
        for sn in &self.extra_supernodes {
            t += &supernode_toml(&sn.addr(), &sn.public_key);
        }
        std::fs::write(&config, t)?;
        Ok(Edge {
            name: o.name.clone(),
            community: o.community.clone(),
            host,
            tap,
            overlay,
            config,
            key_file,
            public_key,
            listen_port,
            router,
        })
    }

    /// Adds another supernode host at `ip` (its own key, config and management socket; port
    /// 7654). Every edge added afterwards lists it after the first supernode, so call this
    /// before adding edges. Start it with [`Lab::start_supernode_at`] (index 1, 2, …).
    pub fn add_supernode(&mut self, ip: Ipv4Addr) -> SupernodeInfo {
        assert_eq!(
            self.edges_added, 0,
            "add supernodes before edges: edge configs list the supernodes known when added"
        );
        let n = self.extra_supernodes.len() + 2;
        let name = format!("supernode{n}");
        let host = self
            .add_host(&format!("sn{n}"), ip)
            .unwrap_or_else(|e| panic!("adding {name} host: {e:#}"));
        let key_file = self.dir.join(format!("{name}.key"));
        let public_key = genkey(&crate::supernode_bin(), &key_file)
            .unwrap_or_else(|e| panic!("{name} key: {e:#}"));
        let info = SupernodeInfo {
            config: self.dir.join(format!("{name}.toml")),
            name,
            host,
            port: SUPERNODE_PORT,
            key_file,
            public_key,
        };
        self.extra_supernodes.push(info.clone());
        info
    }

    /// Starts supernode `i` (0: the first one, as [`Lab::start_supernode`]; 1, 2, …: those
    /// of [`Lab::add_supernode`]) with `communities`; returns once its status answers.
    pub fn start_supernode_at(&mut self, i: usize, communities: &[Community]) {
        if i == 0 {
            return self.start_supernode(communities);
        }
        let sn = self.extra_supernodes[i - 1].clone();
        let t = supernode_config_toml(
            &sn.addr(),
            &sn.key_file,
            &self.dir.join(format!("{}.sock", sn.name)),
            communities,
        );
        std::fs::write(&sn.config, t).expect("writing supernode config");
        let start = Instant::now();
        self.spawn(&sn.name, &sn.host.ns, &crate::supernode_bin(), &sn.config);
        let ok = crate::wait_until(Duration::from_secs(10), || {
            self.assert_running();
            self.supernode_status_at(i).is_ok()
        });
        assert!(
            ok.is_some(),
            "[{}] {} status did not answer within 10 s: {:?}",
            self.test,
            sn.name,
            self.supernode_status_at(i).err()
        );
        println!("[{}] {} up in {:.2?}", self.test, sn.name, start.elapsed());
    }

    /// Status of supernode `i` (0: the first one).
    pub fn supernode_status_at(&self, i: usize) -> Result<Value> {
        if i == 0 {
            return self.supernode_status();
        }
        let sn = &self.extra_supernodes[i - 1];
        status(&sn.host.ns, &crate::supernode_bin(), &sn.config)
    }

    /// Daemon name of supernode `i` ("supernode", "supernode2", …).
    pub fn supernode_name(&self, i: usize) -> String {
        if i == 0 {
            "supernode".into()
        } else {
            self.extra_supernodes[i - 1].name.clone()
        }
    }

    /// (Re)writes the first supernode's config file for `communities` (start it with
    /// [`Lab::start_supernode`], or send it SIGHUP with [`Lab::signal`] to reload).
    pub fn write_supernode_config(&mut self, communities: &[Community]) {
        self.supernode_key().expect("supernode key");
        let t = supernode_config_toml(
            &self.supernode_addr(),
            &self.supernode_key_file,
            &self.supernode_socket(),
            communities,
        );
        std::fs::write(&self.supernode_config, t).expect("writing supernode.toml");
    }

    /// The first supernode's management socket.
    pub fn supernode_socket(&self) -> PathBuf {
        self.dir.join("sn.sock")
    }

    /// An edge's management socket.
    pub fn edge_socket(&self, e: &Edge) -> PathBuf {
        self.dir.join(format!("{}.sock", e.name))
    }

    /// The pid of the running daemon called `name` (`ip netns exec` execs the daemon, so
    /// this is the daemon itself).
    pub fn daemon_pid(&mut self, name: &str) -> Option<u32> {
        self.daemons
            .iter_mut()
            .filter(|d| d.name == name)
            .find_map(|d| d.pid())
    }

    /// A field of `/proc/<pid>/status` of the daemon `name` (e.g. "VmRSS", "CapEff").
    pub fn proc_status(&mut self, name: &str, field: &str) -> Option<String> {
        let pid = self.daemon_pid(name)?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }

    /// Resident memory of daemon `name` in KiB.
    pub fn rss_kib(&mut self, name: &str) -> u64 {
        self.proc_status(name, "VmRSS")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Sends `sig` to the running daemon called `name` and leaves it running (e.g. SIGHUP).
    pub fn signal(&mut self, name: &str, sig: libc::c_int) {
        let pids: Vec<u32> = self
            .daemons
            .iter_mut()
            .filter(|d| d.name == name)
            .filter_map(|d| d.pid())
            .collect();
        assert_eq!(pids.len(), 1, "expected one running daemon called {name}");
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let r = unsafe { libc::kill(pids[0] as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill {name}: {}", std::io::Error::last_os_error());
    }

    /// [`Lab::start_supernode`] with the config text changed by `edit` first (keys the
    /// helpers do not write).
    pub fn start_supernode_with(
        &mut self,
        communities: &[Community],
        edit: impl Fn(String) -> String,
    ) {
        self.write_supernode_config(communities);
        let text = std::fs::read_to_string(&self.supernode_config).expect("supernode.toml");
        std::fs::write(&self.supernode_config, edit(text)).expect("writing supernode.toml");
        self.spawn_supernode();
    }

    /// Writes the supernode config for `communities` and starts the supernode; returns once
    /// its status answers (panics after 10 s).
    pub fn start_supernode(&mut self, communities: &[Community]) {
        self.write_supernode_config(communities);
        self.spawn_supernode();
    }

    fn spawn_supernode(&mut self) {
        let start = Instant::now();
        self.spawn(
            "supernode",
            &self.supernode_host.ns.clone(),
            &crate::supernode_bin(),
            &self.supernode_config.clone(),
        );
        let ok = crate::wait_until(Duration::from_secs(10), || {
            self.assert_running();
            self.supernode_status().is_ok()
        });
        if ok.is_none() {
            panic!(
                "[{}] supernode status did not answer within 10 s: {:?}",
                self.test,
                self.supernode_status().err()
            );
        }
        println!("[{}] supernode up in {:.2?}", self.test, start.elapsed());
    }

    /// Adds edges `names` to `community`, with overlay addresses `<net24>.1`, `.2`, … /24
    /// (`net24` is the first three octets, e.g. "10.97.0").
    pub fn add_edges(&mut self, community: &str, net24: &str, names: &[&str]) -> Vec<Edge> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                self.add_edge(EdgeOpts::new(
                    n,
                    community,
                    &format!("{net24}.{}/24", i + 1),
                ))
            })
            .collect()
    }

    /// Starts every edge in `edges`, then waits (10 s each) until each has registered;
    /// prints the time to register.
    pub fn start_edges(&mut self, edges: &[Edge]) {
        let start = Instant::now();
        for e in edges {
            self.start_edge(e);
        }
        for e in edges {
            self.wait_registered(e, Duration::from_secs(10));
            println!(
                "[{}] edge {} registered {:.2?} after start",
                self.test,
                e.name,
                start.elapsed()
            );
        }
    }

    /// The common case: one community `name` on `<net24>.0/24` holding `names`, supernode
    /// and edges started and registered.
    pub fn one_community(test: &str, net24: &str, names: &[&str]) -> Option<(Lab, Vec<Edge>)> {
        let mut lab = Lab::new(test)?;
        let edges = lab.add_edges("prod", net24, names);
        lab.start_supernode(&[Community::new(
            "prod",
            &format!("{net24}.0/24"),
            edges.iter().map(Edge::member).collect(),
        )]);
        lab.start_edges(&edges);
        Some((lab, edges))
    }

    /// Pings `to` from `from` over the overlay until one ping succeeds (the first packets
    /// may be spent on handshakes and ARP); panics after `timeout`. Returns the time taken.
    pub fn wait_ping(&mut self, from: &Edge, to: &Edge, timeout: Duration) -> Duration {
        let got = crate::wait_until(timeout, || {
            self.assert_running();
            crate::ping(from.ns(), &to.ip(), 1).all_ok()
        });
        got.unwrap_or_else(|| {
            panic!(
                "[{}] no ping {} -> {} ({}) within {timeout:?}\nstatus of {}: {:?}\nstatus of {}: {:?}",
                self.test,
                from.name,
                to.name,
                to.ip(),
                from.name,
                self.edge_status(from),
                to.name,
                self.edge_status(to)
            )
        })
    }

    /// Starts the edge daemon of `e`.
    pub fn start_edge(&mut self, e: &Edge) {
        self.spawn(&e.name, &e.host.ns, &crate::edge_bin(), &e.config);
    }

    fn spawn(&mut self, name: &str, ns: &str, bin: &Path, config: &Path) {
        let log = self.dir.join(format!("{name}.log"));
        let d = Daemon::spawn(
            name,
            ns,
            &[
                bin.as_os_str(),
                "run".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
            ],
            &log,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        self.daemons.push(d);
    }

    /// Stops the daemon called `name` (an edge name or "supernode").
    pub fn stop_daemon(&mut self, name: &str) {
        for d in self.daemons.iter_mut().filter(|d| d.name == name) {
            d.stop();
        }
    }

    /// Sends `sig` to the running daemon called `name` by its own pid (e.g. `libc::SIGKILL`
    /// for a crash), waits for it to exit and reaps it. Panics unless exactly one was running.
    pub fn kill_daemon(&mut self, name: &str, sig: libc::c_int) {
        let mut n = 0;
        for d in self.daemons.iter_mut().filter(|d| d.name == name) {
            if d.pid().is_some() {
                assert!(
                    d.signal_and_reap(sig),
                    "{name} did not exit on signal {sig}"
                );
                n += 1;
            }
        }
        assert_eq!(n, 1, "expected exactly one running daemon called {name}");
    }

    /// Full log of daemon `name` so far.
    pub fn log(&self, name: &str) -> String {
        self.daemons
            .iter()
            .filter(|d| d.name == name)
            .map(|d| d.log_text())
            .collect()
    }

    /// Panics (showing the log) if any started daemon has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        let test = self.test.clone();
        for d in &mut self.daemons {
            if d.child.is_none() {
                continue; // stopped on purpose
            }
            if let Some(how) = d.exited() {
                panic!(
                    "[{test}] daemon {} exited unexpectedly ({how}); log:\n{}",
                    d.name,
                    d.log_text()
                );
            }
        }
    }

    /// `metalvpc-edge status --config <cfg> --json`, run in the edge's namespace.
    pub fn edge_status(&self, e: &Edge) -> Result<Value> {
        status(&e.host.ns, &crate::edge_bin(), &e.config)
    }

    /// `metalvpc-supernode status --config <cfg> --json`, run in the supernode namespace.
    pub fn supernode_status(&self) -> Result<Value> {
        status(
            &self.supernode_host.ns,
            &crate::supernode_bin(),
            &self.supernode_config,
        )
    }

    /// True when `e` reports at least one supernode with `registered: true`.
    pub fn is_registered(&self, e: &Edge) -> bool {
        self.edge_status(e).map(|s| registered(&s)).unwrap_or(false)
    }

    /// Waits (up to `timeout`) for `e` to register; panics with its status and log otherwise.
    /// Returns how long it took.
    pub fn wait_registered(&mut self, e: &Edge, timeout: Duration) -> Duration {
        let got = crate::wait_until(timeout, || {
            self.assert_running();
            self.is_registered(e)
        });
        match got {
            Some(d) => d,
            None => panic!(
                "[{}] edge {} did not register within {timeout:?}\nstatus: {:?}\nedge log:\n{}\nsupernode log:\n{}",
                self.test,
                e.name,
                self.edge_status(e),
                self.log(&e.name),
                self.log("supernode")
            ),
        }
    }

    /// The entry for peer `peer` in `e`'s status, if listed.
    pub fn peer_entry(&self, e: &Edge, peer: &Edge) -> Option<Value> {
        let st = self.edge_status(e).ok()?;
        find_peer(&st, &peer.public_key).cloned()
    }

    /// Waits until `e`'s status shows `peer` with `path` (e.g. "direct" or "relay").
    pub fn wait_path(
        &mut self,
        e: &Edge,
        peer: &Edge,
        path: &str,
        timeout: Duration,
    ) -> Option<Duration> {
        crate::wait_until(timeout, || {
            self.assert_running();
            self.peer_entry(e, peer)
                .map(|p| p["path"] == path)
                .unwrap_or(false)
        })
    }

    /// Drops UDP between the underlay addresses of `a` and `b` (both directions, in both
    /// namespaces), leaving their traffic with the supernode alone: forces relaying.
    pub fn block_udp(&self, a: &Edge, b: &Edge) {
        block_udp_hosts(&a.host, &b.host);
    }

    /// Removes what [`Lab::block_udp`] installed.
    pub fn unblock_udp(&self, a: &Edge, b: &Edge) {
        unblock_udp_hosts(&a.host, &b.host);
    }

    /// Starts a tcpdump in `ns` on `iface` writing `<dir>/<file>`.
    pub fn capture(&self, ns: &str, iface: &str, filter: &str, file: &str) -> Capture {
        Capture::start(ns, iface, filter, &self.dir.join(file))
            .unwrap_or_else(|e| panic!("capture: {e:#}"))
    }

    /// Prints every daemon's log (last 200 lines each).
    pub fn print_logs(&self) {
        for d in &self.daemons {
            let text = d.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(200);
            eprintln!(
                "----- [{}] log of {} ({}), last {} lines -----",
                self.test,
                d.name,
                d.log.display(),
                lines.len() - from
            );
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
        eprintln!("----- end of logs -----");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            d.stop();
        }
        let failed = std::thread::panicking();
        if failed || std::env::var("METALVPC_SHOW_LOGS").as_deref() == Ok("1") {
            self.print_logs();
        }
        if std::env::var("METALVPC_KEEP_DIR").as_deref() == Ok("1") {
            eprintln!("[{}] keeping {}", self.test, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        crate::cleanup::unregister_dir(&self.dir);
        // The daemons, hosts and switch namespaces are dropped next, in field order.
    }
}

/// TOML basic string.
pub fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `<bin> genkey` into `path` (mode 0600) and `<bin> pubkey` of it; returns the public key.
pub fn genkey(bin: &Path, path: &Path) -> Result<String> {
    let out = run_timeout(Command::new(bin).arg("genkey"), Duration::from_secs(10));
    if !out.success() {
        bail!("{} genkey: {out:?}", bin.display());
    }
    let key = out.stdout.trim().to_string();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{key}")?;
    }
    pubkey(bin, &key)
}

/// `<bin> pubkey` of a private key.
pub fn pubkey(bin: &Path, private_key: &str) -> Result<String> {
    let out = run_with_input(
        Command::new(bin).arg("pubkey"),
        Some(format!("{private_key}\n").as_bytes()),
        Duration::from_secs(10),
    );
    if !out.success() {
        bail!("{} pubkey: {out:?}", bin.display());
    }
    Ok(out.stdout.trim().to_string())
}

/// Runs `<bin> status --config <cfg> --json` in `ns` and parses the JSON.
pub fn status(ns: &str, bin: &Path, cfg: &Path) -> Result<Value> {
    let out = exec_in(
        ns,
        &[
            &bin.to_string_lossy(),
            "status",
            "--config",
            &cfg.to_string_lossy(),
            "--json",
        ],
        STATUS_TIMEOUT,
    );
    if !out.success() {
        bail!(
            "status --config {} failed: {}{}",
            cfg.display(),
            out.stdout,
            out.stderr
        );
    }
    serde_json::from_str(&out.stdout).with_context(|| format!("status JSON: {}", out.stdout))
}

/// True when an edge status has a supernode with `registered: true`.
pub fn registered(st: &Value) -> bool {
    st["supernodes"]
        .as_array()
        .map(|a| a.iter().any(|s| s["registered"] == true))
        .unwrap_or(false)
}

/// The `peers[]` entry with `public_key == key`.
pub fn find_peer<'a>(st: &'a Value, key: &str) -> Option<&'a Value> {
    st["peers"]
        .as_array()?
        .iter()
        .find(|p| p["public_key"] == key)
}

/// Drops UDP between underlay hosts `a` and `b` (nftables table `mvpc_block` in both
/// namespaces, both directions). Other traffic (e.g. to the supernode) is untouched.
pub fn block_udp_hosts(a: &HostInfo, b: &HostInfo) {
    for (me, other) in [(a, b), (b, a)] {
        let rules = format!(
                "table inet mvpc_block {{\n\
                   chain out {{ type filter hook output priority 0; ip daddr {o} meta l4proto udp drop; }}\n\
                   chain in {{ type filter hook input priority 0; ip saddr {o} meta l4proto udp drop; }}\n\
                 }}\n",
                o = other.ip
            );
        let out = run_with_input(
            Command::new("ip").args(["netns", "exec", &me.ns, "nft", "-f", "-"]),
            Some(rules.as_bytes()),
            Duration::from_secs(10),
        );
        assert!(out.success(), "installing nft block in {}: {out:?}", &me.ns);
    }
}

/// Removes what [`block_udp_hosts`] installed.
pub fn unblock_udp_hosts(a: &HostInfo, b: &HostInfo) {
    for h in [a, b] {
        exec_in(
            &h.ns,
            &["nft", "delete", "table", "inet", "mvpc_block"],
            Duration::from_secs(10),
        )
        .expect_ok("nft delete table");
    }
}

/// The text of an edge config (see the contract in the README/issue).
pub fn edge_config_toml(
    o: &EdgeOpts,
    key_file: &Path,
    management: &Path,
    sn_addr: &str,
    sn_key: &str,
    tap: &str,
) -> String {
    let mut t = String::new();
    t += &format!("community = {}\n", q(&o.community));
    t += &format!("private_key_file = {}\n", q(&key_file.to_string_lossy()));
    if let Some(p) = o.listen_port {
        t += &format!("listen_port = {p}\n");
    }
    t += &format!("management = {}\n", q(&management.to_string_lossy()));
    t += &o.extra_toml;
    t += "\n[[supernode]]\n";
    t += &format!("address = {}\n", q(sn_addr));
    t += &format!("public_key = {}\n", q(sn_key));
    t += "\n[interface]\n";
    t += &format!("name = {}\n", q(tap));
    t += &format!("address = {}\n", q(&o.address));
    if let Some(m) = o.mtu {
        t += &format!("mtu = {m}\n");
    }
    t
}

/// One more `[[supernode]]` entry for an edge config (valid TOML anywhere after the
/// top-level keys).
pub fn supernode_toml(addr: &str, key: &str) -> String {
    format!(
        "\n[[supernode]]\naddress = {}\npublic_key = {}\n",
        q(addr),
        q(key)
    )
}

/// The text of a supernode config.
pub fn supernode_config_toml(
    listen: &str,
    key_file: &Path,
    management: &Path,
    communities: &[Community],
) -> String {
    let mut t = String::new();
    t += &format!("listen = {}\n", q(listen));
    t += &format!("private_key_file = {}\n", q(&key_file.to_string_lossy()));
    t += &format!("management = {}\n", q(&management.to_string_lossy()));
    for c in communities {
        t += &format!(
            "\n[[community]]\nname = {}\nnetwork = {}\n",
            q(&c.name),
            q(&c.network)
        );
        for m in &c.members {
            t += &format!(
                "[[community.node]]\nname = {}\npublic_key = {}\naddress = {}\n",
                q(&m.name),
                q(&m.public_key),
                q(&m.address)
            );
            if !m.allowed_cidrs.is_empty() {
                let l: Vec<String> = m.allowed_cidrs.iter().map(|c| q(c)).collect();
                t += &format!("allowed_cidrs = [{}]\n", l.join(", "));
            }
        }
    }
    t
}
