//! `metalvpc-edge kubernetes` (alias `k8s`): the Kubernetes settings that fit this node's
//! overlay — kubelet, kubeadm, kube-proxy, Calico, Flannel, Cilium — and the ports to close on
//! the public interface, with the MTU arithmetic shown. Everything is computed from the edge
//! config (and, when the daemon answers, the peers it knows); nothing is changed on the host.

use anyhow::{bail, Result};
use ipnet::Ipv4Net;
use metalvpc_protocol::overhead::{self, Path as Route, Underlay};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Bytes an IP-in-IP tunnel adds (outer IPv4 header). Calico's "Configure MTU" page uses the
/// same figures: IPv4 IP-in-IP 20, VXLAN 50, WireGuard 60.
pub const IPIP_OVERHEAD: u32 = 20;
/// Bytes a VXLAN tunnel over IPv4 adds: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Bytes WireGuard over IPv4 adds: outer IPv4 20 + UDP 8 + WireGuard header 16 + tag 16.
pub const WIREGUARD_OVERHEAD: u32 = 60;

/// Ports that Kubernetes and the usual network plugins open and that must not be reachable on
/// the public interface: (protocol, port or range, what listens there).
pub const PUBLIC_PORTS_TO_CLOSE: &[(&str, &str, &str)] = &[
    ("tcp", "6443", "kube-apiserver"),
    ("tcp", "2379-2380", "etcd clients and peers"),
    ("tcp", "10250", "kubelet API"),
    ("tcp", "10256", "kube-proxy health"),
    ("tcp", "10257", "kube-controller-manager"),
    ("tcp", "10259", "kube-scheduler"),
    ("tcp", "30000-32767", "NodePort services"),
    ("udp", "30000-32767", "NodePort services"),
    ("tcp", "179", "BGP (Calico, MetalLB, bird)"),
    ("tcp", "5473", "Calico Typha"),
    ("udp", "4789", "VXLAN (Calico)"),
    ("udp", "8472", "VXLAN (Flannel, Cilium)"),
    ("udp", "51820-51821", "WireGuard (Calico)"),
    ("tcp", "4240", "cilium-health"),
    ("tcp", "4244", "Hubble"),
    ("ipip", "-", "IP-in-IP, IP protocol 4 (Calico)"),
];

/// What the settings are computed from.
#[derive(Debug, Clone)]
pub struct Input {
    /// This node's overlay address and prefix (the TAP's).
    pub address: Ipv4Net,
    /// TAP device name.
    pub interface: String,
    /// TAP MTU.
    pub tap_mtu: u32,
    /// The edge's UDP port (the only one the public interface needs open for the overlay).
    pub tunnel_port: u16,
    /// The underlay interface and its MTU on the route to the first supernode, if found.
    pub underlay: Option<(String, u32)>,
    /// The supernodes are reached over IPv6 (the outer header is 40 bytes, not 20).
    pub underlay_ipv6: bool,
    /// `host:port` of the API server for the whole cluster (a VIP, or the first control plane).
    pub control_plane_endpoint: String,
    /// The cluster's pod network (`ClusterConfiguration.networking.podSubnet`).
    pub pod_network: Ipv4Net,
    /// The cluster's service network.
    pub service_network: Ipv4Net,
    /// This node's own pod block, if the operator gave one (Calico without encapsulation).
    pub node_pod_cidr: Option<Ipv4Net>,
    /// This node's name in Kubernetes (its hostname).
    pub node_name: String,
    /// Peers from the running daemon: (name, overlay address).
    pub peers: Option<Vec<(String, String)>>,
}

/// The TAP MTU left for pods with each Calico encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalicoMtu {
    pub none: u32,
    pub ipip: u32,
    pub vxlan: u32,
    pub wireguard: u32,
}

/// Calico's MTU for each encapsulation, from the TAP MTU.
pub fn calico_mtu(tap_mtu: u32) -> CalicoMtu {
    CalicoMtu {
        none: tap_mtu,
        ipip: tap_mtu.saturating_sub(IPIP_OVERHEAD),
        vxlan: tap_mtu.saturating_sub(VXLAN_OVERHEAD),
        wireguard: tap_mtu.saturating_sub(WIREGUARD_OVERHEAD),
    }
}

/// The underlay family the arithmetic is done for.
fn family(underlay_ipv6: bool) -> Underlay {
    if underlay_ipv6 {
        Underlay::V6
    } else {
        Underlay::V4
    }
}

/// The parts of metalvpc's own per-packet overhead on the underlay, in order, as (bytes, what):
/// a relayed packet's, the largest.
pub fn overlay_overhead(underlay_ipv6: bool) -> Vec<(u32, &'static str)> {
    overhead::parts(family(underlay_ipv6), Route::Relayed)
        .into_iter()
        .map(|p| (p.bytes as u32, p.what))
        .collect()
}

/// The largest TAP MTU for an underlay MTU.
pub fn largest_tap_mtu(underlay_mtu: u32, underlay_ipv6: bool) -> u32 {
    overhead::largest_tap_mtu(underlay_mtu as usize, family(underlay_ipv6), Route::Relayed) as u32
}

/// Checks the networks against each other; every problem names the flag and the fix.
pub fn check(i: &Input, config: &Path) -> Result<()> {
    let overlay = i.address.trunc();
    let mut problems = Vec::new();
    let clash = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    for (flag, net) in [
        ("--pod-network", Some(i.pod_network)),
        ("--service-network", Some(i.service_network)),
        ("--pod-cidr", i.node_pod_cidr),
    ] {
        if let Some(net) = net {
            if clash(&net, &overlay) {
                problems.push(format!(
                    "{flag} {net} overlaps the overlay network {overlay} (`interface.address` in {}): pick a range outside it",
                    config.display()
                ));
            }
        }
    }
    if clash(&i.pod_network, &i.service_network) {
        problems.push(format!(
            "--pod-network {} and --service-network {} overlap: they must be disjoint",
            i.pod_network, i.service_network
        ));
    }
    if let Some(n) = i.node_pod_cidr {
        if !i.pod_network.contains(&n) {
            problems.push(format!(
                "--pod-cidr {n} is not inside --pod-network {}: give this node a block of the pod network",
                i.pod_network
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n  "))
    }
}

/// The kubeadm snippets: (InitConfiguration + ClusterConfiguration + KubeProxyConfiguration,
/// JoinConfiguration).
pub fn kubeadm_yaml(i: &Input) -> (String, String) {
    let ip = i.address.addr();
    let overlay = i.address.trunc();
    let sans = cert_sans(i);
    let mut init = String::new();
    let _ = write!(
        init,
        "apiVersion: kubeadm.k8s.io/v1beta3\n\
         kind: InitConfiguration\n\
         localAPIEndpoint:\n  advertiseAddress: {ip}\n  bindPort: 6443\n\
         nodeRegistration:\n  name: {name}\n  kubeletExtraArgs:\n    node-ip: {ip}\n\
         ---\n\
         apiVersion: kubeadm.k8s.io/v1beta3\n\
         kind: ClusterConfiguration\n\
         controlPlaneEndpoint: \"{cpe}\"\n\
         apiServer:\n  certSANs:\n{sans}\
         networking:\n  podSubnet: {pods}\n  serviceSubnet: {svc}\n\
         ---\n\
         apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         nodePortAddresses:\n  - {overlay}\n",
        name = i.node_name,
        cpe = i.control_plane_endpoint,
        sans = sans
            .iter()
            .map(|s| format!("    - \"{s}\"\n"))
            .collect::<String>(),
        pods = i.pod_network,
        svc = i.service_network,
    );
    let join = format!(
        "apiVersion: kubeadm.k8s.io/v1beta3\n\
         kind: JoinConfiguration\n\
         discovery:\n  bootstrapToken:\n    apiServerEndpoint: \"{cpe}\"\n    token: \"<from: kubeadm token create>\"\n    caCertHashes:\n      - \"<sha256:… printed by kubeadm init>\"\n\
         nodeRegistration:\n  name: {name}\n  kubeletExtraArgs:\n    node-ip: {ip}\n\
         # only when this node joins as another control-plane node:\n\
         controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {ip}\n    bindPort: 6443\n  certificateKey: \"<from: kubeadm init phase upload-certs --upload-certs>\"\n",
        cpe = i.control_plane_endpoint,
        name = i.node_name,
    );
    (init, join)
}

/// `apiServer.certSANs`: this node's overlay address and the control-plane endpoint's host.
pub fn cert_sans(i: &Input) -> Vec<String> {
    let mut sans = vec![i.address.addr().to_string()];
    let host = endpoint_host(&i.control_plane_endpoint);
    if !sans.iter().any(|s| s == host) {
        sans.push(host.to_string());
    }
    sans
}

fn endpoint_host(ep: &str) -> &str {
    if let Some(rest) = ep.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match ep.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => ep,
    }
}

/// An nftables table that leaves only the tunnel port (and SSH, ICMP errors and replies to
/// what this host started) open on the public interface.
pub fn nftables(i: &Input) -> String {
    let dev = i
        .underlay
        .as_ref()
        .map_or("<public-interface>", |(d, _)| d.as_str());
    format!(
        "table inet metalvpc_public {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   iifname \"{dev}\" ct state established,related accept\n\
         \x20   iifname \"{dev}\" udp dport {port} accept comment \"metalvpc tunnel\"\n\
         \x20   iifname \"{dev}\" tcp dport 22 accept comment \"SSH: remove if you manage the server otherwise\"\n\
         \x20   iifname \"{dev}\" icmp type {{ destination-unreachable, time-exceeded, echo-request }} accept\n\
         \x20   iifname \"{dev}\" icmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, echo-request, nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept\n\
         \x20   iifname \"{dev}\" drop\n\
         \x20 }}\n\
         }}\n",
        port = i.tunnel_port
    )
}

/// Everything, as the `--json` document.
pub fn to_json(i: &Input) -> Value {
    let ip = i.address.addr();
    let overlay = i.address.trunc();
    let mtu = calico_mtu(i.tap_mtu);
    let (init, join) = kubeadm_yaml(i);
    let overhead = overlay_overhead(i.underlay_ipv6);
    json!({
        "node_ip": ip.to_string(),
        "overlay_cidr": overlay.to_string(),
        "interface": i.interface,
        "tap_mtu": i.tap_mtu,
        "tunnel_port": i.tunnel_port,
        "node_name": i.node_name,
        "mtu_arithmetic": {
            "underlay_interface": i.underlay.as_ref().map(|(d, _)| d.clone()),
            "underlay_mtu": i.underlay.as_ref().map(|(_, m)| *m),
            "overhead": overhead.iter().map(|(b, w)| json!({"bytes": b, "what": w})).collect::<Vec<_>>(),
            "largest_tap_mtu": i.underlay.as_ref().map(|(_, m)| largest_tap_mtu(*m, i.underlay_ipv6)),
        },
        "kubelet": { "node_ip": ip.to_string(), "flag": format!("--node-ip={ip}") },
        "kubeadm": {
            "advertise_address": ip.to_string(),
            "node_ip": ip.to_string(),
            "cert_sans": cert_sans(i),
            "control_plane_endpoint": i.control_plane_endpoint,
            "pod_subnet": i.pod_network.to_string(),
            "service_subnet": i.service_network.to_string(),
            "init_configuration": init,
            "join_configuration": join,
        },
        "kube_proxy": { "node_port_addresses": [overlay.to_string()] },
        "calico": {
            "mtu": { "none": mtu.none, "ipip": mtu.ipip, "vxlan": mtu.vxlan, "wireguard": mtu.wireguard },
            "ip_autodetection_method": format!("cidr={overlay}"),
            "ip_autodetection_method_interface": format!("interface={}", i.interface),
            "bgp_bind_mode": "NodeIP",
            "node_pod_cidr": i.node_pod_cidr.map(|n| n.to_string()),
            "encapsulation_needed": false,
        },
        "flannel": { "iface": i.interface, "backend": "host-gw", "vxlan_mtu": mtu.vxlan },
        "cilium": {
            "devices": [i.interface],
            "mtu": i.tap_mtu,
            "routing_mode": "native",
            "ipv4_native_routing_cidr": i.pod_network.to_string(),
            "tunnel_mtu": mtu.vxlan,
        },
        "public_interface": {
            "name": i.underlay.as_ref().map(|(d, _)| d.clone()),
            "open": [format!("udp/{}", i.tunnel_port)],
            "close": PUBLIC_PORTS_TO_CLOSE.iter().map(|(p, n, w)| json!({"protocol": p, "port": n, "what": w})).collect::<Vec<_>>(),
            "nftables": nftables(i),
        },
        "peers": i.peers.as_ref().map(|ps| ps.iter().map(|(n, a)| json!({"name": n, "address": a})).collect::<Vec<_>>()),
    })
}

/// Everything, as text for an operator.
pub fn to_text(i: &Input, config: &Path) -> String {
    let ip = i.address.addr();
    let overlay = i.address.trunc();
    let tap = &i.interface;
    let m = calico_mtu(i.tap_mtu);
    let (init, join) = kubeadm_yaml(i);
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(
        w,
        "# Kubernetes settings for this node ({}), from {}\n# overlay address {ip} on {tap}, overlay network {overlay}, TAP MTU {}, tunnel udp/{}\n",
        i.node_name,
        config.display(),
        i.tap_mtu,
        i.tunnel_port
    );
    let _ = writeln!(w, "## MTU arithmetic");
    let overhead = overlay_overhead(i.underlay_ipv6);
    let parts: String = overhead
        .iter()
        .map(|(b, what)| format!(" - {b} {what}"))
        .collect();
    match &i.underlay {
        Some((dev, mtu)) => {
            let largest = largest_tap_mtu(*mtu, i.underlay_ipv6);
            let _ = writeln!(
                w,
                "underlay {dev} MTU {mtu}{parts} = {largest} largest TAP MTU; configured {}{}",
                i.tap_mtu,
                if i.tap_mtu > largest {
                    "  <- TOO LARGE: lower `interface.mtu`"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(
                w,
                "underlay MTU (no route to the supernode found){parts} = largest TAP MTU; configured {}",
                i.tap_mtu
            );
        }
    }
    let _ = writeln!(
        w,
        "pod MTU, Calico:  no encapsulation {tm} = TAP MTU\n\
         \x20                 IP-in-IP        {tm} - {IPIP_OVERHEAD} (outer IPv4) = {}\n\
         \x20                 VXLAN           {tm} - {VXLAN_OVERHEAD} (IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14) = {}\n\
         \x20                 WireGuard       {tm} - {WIREGUARD_OVERHEAD} (IPv4 20 + UDP 8 + WireGuard 32) = {}\n\
         This overlay is one Ethernet segment: Calico and Cilium can route pods natively and\n\
         Flannel can use host-gw, so pods need no second encapsulation and keep the full {tm}.\n",
        m.ipip,
        m.vxlan,
        m.wireguard,
        tm = i.tap_mtu
    );
    let _ = writeln!(
        w,
        "## kubelet\n--node-ip={ip}     (e.g. KUBELET_EXTRA_ARGS=\"--node-ip={ip}\" in /etc/default/kubelet)\n"
    );
    let _ = writeln!(
        w,
        "## kubeadm: first control-plane node (kubeadm init --config init.yaml)\n{init}"
    );
    let _ = writeln!(
        w,
        "## kubeadm: every other node (kubeadm join --config join.yaml)\n{join}"
    );
    let _ = writeln!(
        w,
        "## kube-proxy\nnodePortAddresses: [\"{overlay}\"]   (NodePorts answer on the overlay only)\n"
    );
    let _ = writeln!(
        w,
        "## Calico\n\
         MTU: {none} without encapsulation (recommended here), {ipip} IP-in-IP, {vxlan} VXLAN, {wg} WireGuard\n\
         IP autodetection: IP_AUTODETECTION_METHOD=cidr={overlay}   (or interface={tap})\n\
         \x20 operator: spec.calicoNetwork.nodeAddressAutodetectionV4: {{cidrs: [\"{overlay}\"]}}, spec.calicoNetwork.mtu: {none}\n\
         IP pool: encapsulation None (ipipMode: Never, vxlanMode: Never), natOutgoing as you need\n\
         BGP: BGPConfiguration default: spec.bindMode: NodeIP   (port 179 listens on {ip} only)",
        none = m.none,
        ipip = m.ipip,
        vxlan = m.vxlan,
        wg = m.wireguard,
    );
    match i.node_pod_cidr {
        Some(n) => {
            let _ = writeln!(
                w,
                "this node's pod block {n}: an IPPool with nodeSelector kubernetes.io/hostname == \"{name}\",\n\
                 and on the supernode, in this node's [[node]] entry: allowed_cidrs = [\"{n}\"]\n\
                 (without it, the other edges drop pod traffic from this node as source_mismatch)\n",
                name = i.node_name
            );
        }
        None => {
            let _ = writeln!(
                w,
                "pod block: give each node its own block of {} (--pod-cidr, an IPPool per node with a\n\
                 nodeSelector) and list it in that node's allowed_cidrs on the supernode; without it the other\n\
                 edges drop pod traffic from this node as source_mismatch\n",
                i.pod_network
            );
        }
    }
    let _ = writeln!(
        w,
        "## Flannel\n--iface={tap}   backend host-gw (one L2 segment: no VXLAN needed; VXLAN would leave {})\n",
        m.vxlan
    );
    let _ = writeln!(
        w,
        "## Cilium\ndevices: [\"{tap}\"]\nmtu: {}\nroutingMode: native, ipv4NativeRoutingCIDR: {}, autoDirectNodeRoutes: true   (tunnel mode would leave {})\n",
        i.tap_mtu, i.pod_network, m.vxlan
    );
    let dev = i
        .underlay
        .as_ref()
        .map_or("<public-interface>", |(d, _)| d.as_str());
    let _ = writeln!(
        w,
        "## Public interface {dev}\nkeep open: udp/{} (the metalvpc tunnel; SSH and ICMP errors as you need)\nclose (reach these over the overlay instead):",
        i.tunnel_port
    );
    for (proto, port, what) in PUBLIC_PORTS_TO_CLOSE {
        let _ = writeln!(w, "  {proto:<4} {port:<12} {what}");
    }
    let _ = writeln!(w, "nftables (nft -f FILE):\n{}", nftables(i).trim_end());
    if let Some(peers) = &i.peers {
        let _ = writeln!(w, "\n## Other nodes on the overlay (from the running edge)");
        for (name, addr) in peers {
            let _ = writeln!(w, "  {name:<16} {addr}");
        }
    }
    t
}

/// Reads `/proc/sys/kernel/hostname`, the node name kubelet uses by default.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// Flags of the command.
pub struct Args {
    pub json: bool,
    pub control_plane_endpoint: Option<String>,
    pub pod_network: String,
    pub service_network: String,
    pub pod_cidr: Option<String>,
}

fn parse_net(flag: &str, s: &str) -> Result<Ipv4Net> {
    match s.parse::<Ipv4Net>() {
        Ok(n) => Ok(n.trunc()),
        Err(_) => bail!("{flag} \"{s}\" is not an IPv4 CIDR; example: {flag} 10.244.0.0/16"),
    }
}

/// The command.
pub fn cmd(path: &Path, a: Args) -> Result<()> {
    let c = crate::config::load(path)?;
    let first = c.supernodes.first().map(|(addr, _)| *addr);
    let underlay = first.and_then(|addr| crate::mtu::route_mtu(addr.ip()));
    let peers = crate::config::load_management(path)
        .ok()
        .and_then(|m| metalvpc_common::query_management(&m, "/status", path).ok())
        .and_then(|body| serde_json::from_str::<crate::status::EdgeReport>(&body).ok())
        .map(|r| {
            r.peers
                .into_iter()
                .map(|p| (p.node.name, p.node.address))
                .collect::<Vec<_>>()
        });
    let cpe = a
        .control_plane_endpoint
        .unwrap_or_else(|| format!("{}:6443", c.address.addr()));
    let input = Input {
        address: c.address,
        interface: c.if_name.clone(),
        tap_mtu: c.mtu,
        tunnel_port: c.listen_port,
        underlay,
        underlay_ipv6: first.is_some_and(|a| a.is_ipv6()),
        control_plane_endpoint: cpe,
        pod_network: parse_net("--pod-network", &a.pod_network)?,
        service_network: parse_net("--service-network", &a.service_network)?,
        node_pod_cidr: a
            .pod_cidr
            .as_deref()
            .map(|s| parse_net("--pod-cidr", s))
            .transpose()?,
        node_name: hostname(),
        peers,
    };
    check(&input, path)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&input))?);
    } else {
        print!("{}", to_text(&input, path));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input {
            address: "10.10.0.2/24".parse().unwrap(),
            interface: "mv-prod".into(),
            tap_mtu: 1390,
            tunnel_port: 7655,
            underlay: Some(("eth0".into(), 1500)),
            underlay_ipv6: false,
            control_plane_endpoint: "10.10.0.100:6443".into(),
            pod_network: "10.244.0.0/16".parse().unwrap(),
            service_network: "10.96.0.0/12".parse().unwrap(),
            node_pod_cidr: Some("10.244.2.0/24".parse().unwrap()),
            node_name: "node2".into(),
            peers: None,
        }
    }

    #[test]
    fn mtu_arithmetic() {
        assert_eq!(
            calico_mtu(1390),
            CalicoMtu {
                none: 1390,
                ipip: 1370,
                vxlan: 1340,
                wireguard: 1330
            }
        );
        assert_eq!(calico_mtu(1280).vxlan, 1230);
        // The default TAP MTU is exactly what a 1500-byte IPv4 underlay leaves.
        assert_eq!(
            largest_tap_mtu(1500, false),
            metalvpc_protocol::DEFAULT_MTU as u32
        );
        assert_eq!(largest_tap_mtu(1500, true), 1370);
        assert_eq!(largest_tap_mtu(1400, false), 1290);
        assert_eq!(largest_tap_mtu(50, false), 0);
        let v = to_json(&input());
        assert_eq!(v["calico"]["mtu"]["none"], 1390);
        assert_eq!(v["calico"]["mtu"]["ipip"], 1370);
        assert_eq!(v["calico"]["mtu"]["vxlan"], 1340);
        assert_eq!(v["calico"]["mtu"]["wireguard"], 1330);
        assert_eq!(v["mtu_arithmetic"]["largest_tap_mtu"], 1390);
        let text = to_text(&input(), Path::new("/etc/metalvpc/prod.toml"));
        assert!(text.contains("1390 - 50 (IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14) = 1340"));
        assert!(text.contains("underlay eth0 MTU 1500 - 20 outer IP header - 8 UDP - 32 data header and tag - 36 relay envelope and tag - 14 inner Ethernet header = 1390"));
    }

    #[test]
    fn node_settings() {
        let i = input();
        let v = to_json(&i);
        assert_eq!(v["node_ip"], "10.10.0.2");
        assert_eq!(v["kubelet"]["flag"], "--node-ip=10.10.0.2");
        assert_eq!(v["kubeadm"]["advertise_address"], "10.10.0.2");
        assert_eq!(
            v["kubeadm"]["cert_sans"],
            json!(["10.10.0.2", "10.10.0.100"])
        );
        assert_eq!(v["kubeadm"]["control_plane_endpoint"], "10.10.0.100:6443");
        assert_eq!(
            v["kube_proxy"]["node_port_addresses"],
            json!(["10.10.0.0/24"])
        );
        assert_eq!(v["calico"]["ip_autodetection_method"], "cidr=10.10.0.0/24");
        assert_eq!(
            v["calico"]["ip_autodetection_method_interface"],
            "interface=mv-prod"
        );
        assert_eq!(v["calico"]["bgp_bind_mode"], "NodeIP");
        assert_eq!(v["flannel"]["iface"], "mv-prod");
        assert_eq!(v["cilium"]["devices"], json!(["mv-prod"]));
        assert_eq!(v["public_interface"]["open"], json!(["udp/7655"]));
        let (init, join) = kubeadm_yaml(&i);
        for needle in [
            "kind: InitConfiguration",
            "  advertiseAddress: 10.10.0.2\n",
            "    node-ip: 10.10.0.2\n",
            "controlPlaneEndpoint: \"10.10.0.100:6443\"",
            "  certSANs:\n    - \"10.10.0.2\"\n    - \"10.10.0.100\"\n",
            "nodePortAddresses:\n  - 10.10.0.0/24\n",
        ] {
            assert!(init.contains(needle), "{needle:?} not in:\n{init}");
        }
        assert!(join.contains("kind: JoinConfiguration"));
        assert!(join.contains("apiServerEndpoint: \"10.10.0.100:6443\""));
        assert!(join.contains("    node-ip: 10.10.0.2\n"));
        // Same endpoint host as the node: listed once.
        let mut j = input();
        j.control_plane_endpoint = "10.10.0.2:6443".into();
        assert_eq!(cert_sans(&j), vec!["10.10.0.2"]);
        assert_eq!(endpoint_host("[fd00::1]:6443"), "fd00::1");
        assert_eq!(endpoint_host("api.example:6443"), "api.example");
        assert_eq!(endpoint_host("api.example"), "api.example");
    }

    #[test]
    fn public_ports() {
        let n = nftables(&input());
        assert!(n.contains("iifname \"eth0\" udp dport 7655 accept"));
        assert!(n.contains("iifname \"eth0\" drop"));
        for port in ["6443", "2379-2380", "10250", "179", "30000-32767", "4789"] {
            assert!(
                PUBLIC_PORTS_TO_CLOSE.iter().any(|(_, p, _)| *p == port),
                "{port}"
            );
        }
        let mut i = input();
        i.underlay = None;
        assert!(nftables(&i).contains("<public-interface>"));
    }

    #[test]
    fn overlapping_networks_are_refused() {
        let p = Path::new("prod.toml");
        assert!(check(&input(), p).is_ok());
        let mut i = input();
        i.pod_network = "10.0.0.0/8".parse().unwrap();
        let e = check(&i, p).unwrap_err().to_string();
        assert!(
            e.contains("--pod-network") && e.contains("prod.toml"),
            "{e}"
        );
        let mut i = input();
        i.node_pod_cidr = Some("10.245.0.0/24".parse().unwrap());
        let e = check(&i, p).unwrap_err().to_string();
        assert!(e.contains("--pod-cidr 10.245.0.0/24 is not inside"), "{e}");
        let mut i = input();
        i.service_network = "10.244.0.0/12".parse::<Ipv4Net>().unwrap().trunc();
        assert!(check(&i, p).is_err());
        assert!(parse_net("--pod-cidr", "10.1.2.3").is_err());
        assert_eq!(
            parse_net("--pod-cidr", "10.1.2.3/24").unwrap().to_string(),
            "10.1.2.0/24"
        );
    }
}
