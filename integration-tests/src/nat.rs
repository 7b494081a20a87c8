//! NAT routers for the lab, and the helpers the NAT/failover tests share.
//!
//! ```text
//!   ns "<p>-sw": bridge <p>br (public segment 198.18.0.0/24)
//!        |-- veth --> ns "<p>-sn"   supernode 198.18.0.1
//!        |-- veth --> ns "<p>-r1"   router: WAN 198.18.0.101, LAN bridge <p>l1 198.19.1.1/24
//!                                     |-- veth --> ns "<p>-a"  edge 198.19.1.10, default via .1
//!                                     |-- veth --> ns "<p>-c"  edge 198.19.1.11, default via .1
//!        |-- veth --> ns "<p>-r2"   router: WAN 198.18.0.102, LAN 198.19.2.0/24 …
//! ```
//!
//! A router is a Linux NAT box: nftables `masquerade` on its WAN port (endpoint-independent
//! mapping, the source port kept when free: a "cone" NAT) or `masquerade fully-random` (a
//! new random source port per connection, i.e. per destination: a "symmetric" NAT),
//! forwarding only what comes from the LAN and replies (`ct state established,related`;
//! LAN-to-LAN frames pass too, since br_netfilter may show bridged frames to the IP forward
//! hook), and, like
//! ordinary home routers, dropping unsolicited packets to itself on the WAN side. Its
//! filtering is conntrack's: a packet from outside reaches a LAN host only as a reply to the
//! exact address and port that host sent to ("port-restricted"). Its conntrack UDP timeouts
//! can be lowered ([`Lab::set_udp_timeout`]).

use crate::exec::{run_with_input, sh_in};
use crate::lab::{Edge, EdgeOpts, HostInfo, Lab};
use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Mapping behaviour of a NAT router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// `masquerade`: endpoint-independent mapping (source port kept when free).
    Cone,
    /// `masquerade fully-random`: a new source port for every destination.
    Symmetric,
}

/// A NAT router of the lab.
#[derive(Debug, Clone)]
pub struct Router {
    pub name: String,
    pub kind: NatKind,
    /// The router's namespace, WAN address (198.18.0.x) and WAN interface.
    pub wan: HostInfo,
    /// The LAN bridge inside the router's namespace.
    pub lan_bridge: String,
    /// LAN number N: the LAN is 198.19.N.0/24, the router 198.19.N.1.
    pub lan: u8,
    /// Unsolicited packets to the router itself from the WAN are dropped (true, the
    /// default) or left to the kernel (false: delivered, answered with ICMP port
    /// unreachable, and remembered by conntrack, so their address/port pair is then
    /// taken for a mapping of the same pair outwards).
    pub drop_unsolicited: bool,
}

impl Router {
    /// Namespace name.
    pub fn ns(&self) -> &str {
        &self.wan.ns
    }
    /// The router's LAN address (the LAN hosts' gateway).
    pub fn lan_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.lan, 1)
    }
    /// The router's nftables ruleset (table `ip mvpc_nat`).
    pub fn ruleset(&self) -> String {
        let input = if self.drop_unsolicited {
            format!("iifname \"{}\" ct state new drop; ", self.wan.iface)
        } else {
            String::new()
        };
        let random = match self.kind {
            NatKind::Cone => "",
            NatKind::Symmetric => " fully-random",
        };
        format!(
            "table ip mvpc_nat {{\n\
               chain nat_post {{ type nat hook postrouting priority srcnat; policy accept; oifname \"{wan}\" masquerade{random}; }}\n\
               chain filter_forward {{ type filter hook forward priority filter; policy drop; ct state established,related accept; iifname \"{lan}\" accept; }}\n\
               chain filter_input {{ type filter hook input priority filter; policy accept; {input}}}\n\
             }}\n",
            wan = self.wan.iface,
            lan = self.lan_bridge,
        )
    }
}

/// Loads an nftables ruleset (`nft -f -`) in namespace `ns`.
pub fn nft_in(ns: &str, rules: &str) -> Result<()> {
    let out = run_with_input(
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
        Some(rules.as_bytes()),
        Duration::from_secs(10),
    );
    if !out.success() {
        bail!("nft -f in {ns}: {out:?}\nrules:\n{rules}");
    }
    Ok(())
}

/// Runs a shell script in `ns`, failing with its output on a non-zero exit.
fn sh_ok(ns: &str, script: &str) -> Result<()> {
    let out = sh_in(ns, script, Duration::from_secs(20));
    if !out.success() {
        bail!("in {ns}: {script}\n{out:?}");
    }
    Ok(())
}

impl Lab {
    /// Adds a NAT router `name` of `kind`: WAN 198.18.0.(100 + N) on the public segment, LAN
    /// 198.19.N.0/24 on its own bridge, N = 1, 2, … in order of creation.
    pub fn add_router(&mut self, name: &str, kind: NatKind) -> Router {
        self.add_router_with(name, kind, true)
    }

    /// [`Lab::add_router`], choosing whether the router drops unsolicited WAN packets to
    /// itself (see [`Router::drop_unsolicited`]).
    pub fn add_router_with(&mut self, name: &str, kind: NatKind, drop_unsolicited: bool) -> Router {
        self.try_add_router(name, kind, drop_unsolicited)
            .unwrap_or_else(|e| panic!("[{}] adding router {name}: {e:#}", self.test))
    }

    fn try_add_router(
        &mut self,
        name: &str,
        kind: NatKind,
        drop_unsolicited: bool,
    ) -> Result<Router> {
        self.routers_added += 1;
        let n = self.routers_added;
        let wan = self.add_host(name, Ipv4Addr::new(198, 18, 0, 100 + n))?;
        let r = Router {
            name: name.into(),
            kind,
            lan_bridge: format!("{}l{n}", self.prefix),
            lan: n,
            wan,
            drop_unsolicited,
        };
        sh_ok(
            r.ns(),
            &format!(
                "set -e\nip link add {br} type bridge\nip addr add {gw}/24 dev {br}\nip link set {br} up\n\
                 sysctl -qw net.ipv4.ip_forward=1",
                br = r.lan_bridge,
                gw = r.lan_ip()
            ),
        )?;
        nft_in(r.ns(), &r.ruleset())?;
        self.lan_next.insert(n, 10);
        Ok(r)
    }

    /// Adds a host namespace `<prefix>-<role>` on `router`'s LAN (198.19.N.10, .11, …,
    /// default route via the router).
    pub fn add_host_behind(&mut self, router: &Router, role: &str) -> Result<HostInfo> {
        let octet = self
            .lan_next
            .get_mut(&router.lan)
            .expect("router of this lab");
        let ip = Ipv4Addr::new(198, 19, router.lan, *octet);
        *octet += 1;
        self.attach_host(
            role,
            &router.wan.ns,
            &router.lan_bridge,
            ip,
            Some(router.lan_ip()),
        )
    }

    /// Creates an edge host on `router`'s LAN ([`Lab::add_host_behind`]), its key and its
    /// config. Does not start it.
    pub fn add_edge_behind(&mut self, router: &Router, opts: EdgeOpts) -> Edge {
        let host = self
            .add_host_behind(router, &opts.name)
            .unwrap_or_else(|e| panic!("adding edge host {}: {e:#}", opts.name));
        self.try_add_edge(&opts, host, Some(router.clone()))
            .unwrap_or_else(|e| panic!("adding edge {}: {e:#}", opts.name))
    }

    /// Edges `names` of `community` with overlay addresses `<net24>.1`, `.2`, …, each on the
    /// public segment (`None`) or behind the given router.
    pub fn add_edges_at(
        &mut self,
        community: &str,
        net24: &str,
        edges: &[(&str, Option<&Router>)],
    ) -> Vec<Edge> {
        edges
            .iter()
            .enumerate()
            .map(|(i, (name, router))| {
                let o = EdgeOpts::new(name, community, &format!("{net24}.{}/24", i + 1));
                match router {
                    Some(r) => self.add_edge_behind(r, o),
                    None => self.add_edge(o),
                }
            })
            .collect()
    }

    /// Sets `router`'s conntrack UDP timeouts (`nf_conntrack_udp_timeout` and
    /// `nf_conntrack_udp_timeout_stream`, per namespace) to `secs`.
    pub fn set_udp_timeout(&self, router: &Router, secs: u32) {
        sh_ok(
            router.ns(),
            &format!(
                "sysctl -qw net.netfilter.nf_conntrack_udp_timeout={secs} net.netfilter.nf_conntrack_udp_timeout_stream={secs}"
            ),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The router gets a new WAN address (a new lease): the nftables table is deleted, the
    /// new address added and the old one removed (which makes the kernel forget every
    /// mapping masqueraded to it), and the table loaded again. Every LAN host's mappings
    /// change. Returns the router as it is now.
    pub fn renumber_wan(&self, router: &Router, new_ip: Ipv4Addr) -> Router {
        let wan = &router.wan;
        sh_ok(
            router.ns(),
            &format!(
                "set -e\nnft delete table ip mvpc_nat\n\
                 sysctl -qw net.ipv4.conf.{i}.promote_secondaries=1\n\
                 ip addr add {new_ip}/24 dev {i}\nip addr del {old}/24 dev {i}",
                i = wan.iface,
                old = wan.ip
            ),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        nft_in(router.ns(), &router.ruleset()).unwrap_or_else(|e| panic!("{e:#}"));
        let mut r = router.clone();
        r.wan.ip = new_ip;
        r
    }

    /// From now on `router` forwards UDP only to and from `allowed` (e.g. the supernode):
    /// the LAN's edges can register but every other UDP path is closed (table
    /// `ip mvpc_udp_only`, evaluated before the NAT's own forward filter).
    pub fn router_udp_only_to(&self, router: &Router, allowed: Ipv4Addr) {
        nft_in(
            router.ns(),
            &format!(
                "table ip mvpc_udp_only {{\n\
                   chain filter_forward {{ type filter hook forward priority filter - 10; policy accept; \
                     iifname \"{lan}\" meta l4proto udp ip daddr != {allowed} drop; \
                     iifname \"{wan}\" meta l4proto udp ip saddr != {allowed} drop; }}\n\
                 }}\n",
                lan = router.lan_bridge,
                wan = router.wan.iface
            ),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The router's conntrack table (`/proc/net/nf_conntrack` of its namespace), for
    /// failure messages.
    pub fn conntrack(&self, router: &Router) -> String {
        let out = crate::exec_in(
            router.ns(),
            &["cat", "/proc/net/nf_conntrack"],
            Duration::from_secs(5),
        );
        format!("{}{}", out.stdout, out.stderr)
    }

    /// What a failure message should show about `e` and `peer`: both statuses' views of
    /// each other and the conntrack tables of their routers.
    pub fn pair_diagnostics(&self, e: &Edge, peer: &Edge) -> String {
        let mut s = format!(
            "{} sees {}: {:?}\n{} sees {}: {:?}\n",
            e.name,
            peer.name,
            self.peer_entry(e, peer),
            peer.name,
            e.name,
            self.peer_entry(peer, e)
        );
        for x in [e, peer] {
            if let Some(r) = &x.router {
                s += &format!(
                    "conntrack of router {} ({}):\n{}\n",
                    r.name,
                    r.wan.ip,
                    self.conntrack(r)
                );
            }
        }
        s
    }

    /// `peers[].path` of `peer` in `e`'s status ("" when not listed).
    pub fn path(&self, e: &Edge, peer: &Edge) -> String {
        self.peer_entry(e, peer)
            .and_then(|p| p["path"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// `peers[].endpoint` of `peer` in `e`'s status ("" when not listed or null).
    pub fn endpoint(&self, e: &Edge, peer: &Edge) -> String {
        self.peer_entry(e, peer)
            .and_then(|p| p["endpoint"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Polls until `e` shows `peer` as direct and a ping `e` → `peer` succeeds; panics after
    /// `timeout`. Returns the time since `since` (e.g. the edges' start).
    pub fn wait_direct_ping(
        &mut self,
        e: &Edge,
        peer: &Edge,
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        let got = crate::wait_until(timeout, || {
            self.assert_running();
            self.path(e, peer) == "direct" && crate::ping(e.ns(), &peer.ip(), 1).all_ok()
        });
        if got.is_none() {
            panic!(
                "[{}] no direct ping {} -> {} within {timeout:?}\n{}",
                self.test,
                e.name,
                peer.name,
                self.pair_diagnostics(e, peer)
            );
        }
        since.elapsed()
    }

    /// Waits until `e` shows `peer` with `path`, panicking with diagnostics after `timeout`.
    pub fn expect_path(
        &mut self,
        e: &Edge,
        peer: &Edge,
        path: &str,
        timeout: Duration,
    ) -> Duration {
        self.wait_path(e, peer, path, timeout).unwrap_or_else(|| {
            panic!(
                "[{}] {} did not show path {path} for {} within {timeout:?}\n{}",
                self.test,
                e.name,
                peer.name,
                self.pair_diagnostics(e, peer)
            )
        })
    }

    /// Samples both edges' path for each other `samples` times, `every` apart; asserts it
    /// never differs from the first sample (e.g. after the edges have settled). Returns the
    /// path.
    pub fn assert_stable_path(
        &mut self,
        a: &Edge,
        b: &Edge,
        samples: u32,
        every: Duration,
    ) -> String {
        let first = (self.path(a, b), self.path(b, a));
        for i in 0..samples {
            self.assert_running();
            let now = (self.path(a, b), self.path(b, a));
            assert_eq!(
                now,
                first,
                "[{}] path {}<->{} changed at sample {i}\n{}",
                self.test,
                a.name,
                b.name,
                self.pair_diagnostics(a, b)
            );
            std::thread::sleep(every);
        }
        first.0
    }

    /// `n` pings each way between `a` and `b`; every one must come back. Returns the
    /// average RTTs (a → b, b → a) in ms.
    pub fn ping_both_ways(&mut self, a: &Edge, b: &Edge, n: u32) -> (f64, f64) {
        let mut rtt = [f64::NAN; 2];
        for (k, (x, y)) in [(a, b), (b, a)].into_iter().enumerate() {
            let p = crate::ping(x.ns(), &y.ip(), n);
            assert!(
                p.all_ok(),
                "[{}] ping {} -> {}: {p:?}\n{}",
                self.test,
                x.name,
                y.name,
                self.pair_diagnostics(x, y)
            );
            rtt[k] = p.avg_ms.unwrap_or(f64::NAN);
        }
        (rtt[0], rtt[1])
    }

    /// How many of `e`'s supernodes show `registered: true`.
    pub fn registered_count(&self, e: &Edge) -> usize {
        self.edge_status(e)
            .ok()
            .and_then(|st| {
                st["supernodes"]
                    .as_array()
                    .map(|a| a.iter().filter(|s| s["registered"] == true).count())
            })
            .unwrap_or(0)
    }

    /// Two edges "a" and "b" of community "prod" on `<net24>.0/24`, each on the public
    /// segment (`None`) or behind its own new router of the given kind ("ra", "rb"), with
    /// the routers' conntrack UDP timeouts set if asked; supernode and edges started and
    /// registered. Returns the lab, the edges, and when the edges were started.
    pub fn nat_pair(
        test: &str,
        net24: &str,
        kinds: [Option<NatKind>; 2],
        udp_timeout: Option<u32>,
    ) -> Option<(Lab, Vec<Edge>, Instant)> {
        let mut lab = Lab::new(test)?;
        let mut routers = vec![];
        for (name, k) in ["ra", "rb"].iter().zip(kinds) {
            routers.push(k.map(|k| lab.add_router(name, k)));
        }
        for r in routers.iter().flatten() {
            if let Some(t) = udp_timeout {
                lab.set_udp_timeout(r, t);
            }
        }
        let e = lab.add_edges_at(
            "prod",
            net24,
            &[("a", routers[0].as_ref()), ("b", routers[1].as_ref())],
        );
        lab.start_supernode(&[lab.community_of(net24, &e)]);
        let start = Instant::now();
        lab.start_edges(&e);
        Some((lab, e, start))
    }

    /// Community "prod" on `<net24>.0/24` holding `edges`.
    pub fn community_of(&self, net24: &str, edges: &[Edge]) -> crate::Community {
        crate::Community::new(
            "prod",
            &format!("{net24}.0/24"),
            edges.iter().map(Edge::member).collect(),
        )
    }
}
