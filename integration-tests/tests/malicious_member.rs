//! A malicious member (issue 7): a member edge whose host forges frames — another member's IP,
//! another member's MAC, an ARP claim for another member's address, an ARP message naming
//! another MAC — cannot impersonate anyone. Every forged frame is dropped at the receiving
//! edge and counted (`drops.source_mismatch`), the victim's neighbour entry stays right, and
//! the real owner keeps working. (Replayed packets: replay.rs; broadcast floods: dos.rs;
//! other communities: communities.rs.)

use metalvpc_integration_tests::{exec_in, ping, Lab};
use std::time::Duration;

/// Sends `frames` (hex) raw on interface `dev` of namespace `ns`, each `repeat` times.
fn send_raw(ns: &str, dev: &str, frames: &[String], repeat: u32) {
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{dev}',0))\n\
         for _ in range({repeat}):\n    for f in {frames:?}:\n        s.send(bytes.fromhex(f))\n    time.sleep(0.02)\n"
    );
    let out = exec_in(ns, &["python3", "-c", &script], Duration::from_secs(20));
    assert!(out.success(), "raw send: {out:?}");
}

fn mac_bytes(m: &str) -> String {
    m.replace(':', "")
}

fn ip_hex(ip: &str) -> String {
    ip.split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect()
}

/// An Ethernet + IPv4 + ICMP echo frame (checksums left zero: the edges check sources, not
/// checksums; the receiving kernel drops it if it ever got there, which it must not).
fn icmp(dst_mac: &str, src_mac: &str, src_ip: &str, dst_ip: &str) -> String {
    format!(
        "{}{}0800450000540000400040010000{}{}0800000000010001{}",
        mac_bytes(dst_mac),
        mac_bytes(src_mac),
        ip_hex(src_ip),
        ip_hex(dst_ip),
        "00".repeat(56)
    )
}

/// An ARP request (or gratuitous ARP when `spa == tpa`) to broadcast.
fn arp(src_mac: &str, sha: &str, spa: &str, tpa: &str) -> String {
    format!(
        "ffffffffffff{}08060001080006040001{}{}000000000000{}",
        mac_bytes(src_mac),
        mac_bytes(sha),
        ip_hex(spa),
        ip_hex(tpa)
    )
}

type Edge = metalvpc_integration_tests::Edge;

fn drops(lab: &Lab, e: &Edge) -> u64 {
    drops_of(lab, e, "source_mismatch")
}

fn drops_of(lab: &Lab, e: &Edge, reason: &str) -> u64 {
    lab.edge_status(e).unwrap()["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// A community on `net` with members a, b and m (the malicious one), all reaching b; the
/// edges and their MACs.
fn three_members(test: &str, net: &str) -> Option<(Lab, [Edge; 3], [String; 3])> {
    let (mut lab, edges) = Lab::one_community(test, net, &["a", "b", "m"])?;
    let (a, b, m) = (edges[0].clone(), edges[1].clone(), edges[2].clone());
    lab.wait_ping(&a, &b, Duration::from_secs(15));
    lab.wait_ping(&m, &b, Duration::from_secs(15));
    let mac = |e: &Edge| {
        lab.edge_status(e).unwrap()["mac"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let macs = [mac(&a), mac(&b), mac(&m)];
    Some((lab, [a, b, m], macs))
}

#[test]
fn a_member_cannot_impersonate_another() {
    const TEST: &str = "a_member_cannot_impersonate_another";
    let Some((mut lab, [a, b, m], [a_mac, b_mac, m_mac])) = three_members(TEST, "10.77.0") else {
        return;
    };
    let (a_ip, b_ip, m_ip) = (a.ip(), b.ip(), m.ip());
    let neigh = || {
        exec_in(
            b.ns(),
            &["ip", "neigh", "show", &a_ip],
            Duration::from_secs(5),
        )
        .stdout
    };
    assert!(neigh().contains(&a_mac), "b's entry for a: {}", neigh());

    let cases = [
        ("a's IP from m's MAC", icmp(&b_mac, &m_mac, &a_ip, &b_ip)),
        ("a's MAC and IP", icmp(&b_mac, &a_mac, &a_ip, &b_ip)),
        (
            "an IP outside the community's grants",
            icmp(&b_mac, &m_mac, "10.77.0.200", &b_ip),
        ),
        (
            "a gratuitous ARP claiming a's IP",
            arp(&m_mac, &m_mac, &a_ip, &a_ip),
        ),
        (
            // About an address no member owns: one about a member is answered by m's own
            // edge (neighbour suppression) and never leaves m.
            "an ARP naming a's MAC as sender",
            arp(&m_mac, &a_mac, &m_ip, "10.77.0.250"),
        ),
    ];
    for (what, frame) in &cases {
        let before = drops(&lab, &b);
        send_raw(m.ns(), &m.tap, std::slice::from_ref(frame), 5);
        std::thread::sleep(Duration::from_millis(300));
        let after = drops(&lab, &b);
        println!("[{TEST}] m sends {what}: b's source_mismatch {before} -> {after}");
        assert!(
            after >= before + 5,
            "{what}: not dropped at b ({before} -> {after})"
        );
    }
    assert!(
        neigh().contains(&a_mac),
        "b's neighbour entry for a was changed: {}",
        neigh()
    );
    assert!(ping(a.ns(), &b_ip, 3).all_ok(), "a no longer reaches b");
    assert!(ping(b.ns(), &a_ip, 3).all_ok(), "b no longer reaches a");
    lab.assert_running();
}

/// The IPv6 link-local address (hex) Linux derives from `mac` (EUI-64).
fn link_local_hex(mac: &str) -> String {
    let m: Vec<u8> = mac
        .split(':')
        .map(|o| u8::from_str_radix(o, 16).unwrap())
        .collect();
    format!(
        "fe80000000000000{:02x}{:02x}{:02x}fffe{:02x}{:02x}{:02x}",
        m[0] ^ 2,
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    )
}

/// An ICMPv6 message (`icmp`, hex) to all nodes from `src_mac` / `src` (hex), hop limit 255.
fn icmpv6(src_mac: &str, src: &str, icmp: &str) -> String {
    format!(
        "333300000001{}86dd60000000{:04x}3aff{}ff020000000000000000000000000001{}",
        mac_bytes(src_mac),
        icmp.len() / 2,
        src,
        icmp
    )
}

/// A neighbour advertisement (override) saying `target` (hex) is at `lladdr`.
fn na(target: &str, lladdr: &str) -> String {
    format!("8800000020000000{target}0201{}", mac_bytes(lladdr))
}

/// A router advertisement with `src_mac` as source link-layer option.
fn ra(src_mac: &str) -> String {
    format!("860000004000070800000000000000000101{}", mac_bytes(src_mac))
}

#[test]
fn a_member_cannot_spoof_ipv6_neighbour_discovery_or_advertise_routes() {
    const TEST: &str = "a_member_cannot_spoof_ipv6_neighbour_discovery_or_advertise_routes";
    let Some((mut lab, [a, b, m], [a_mac, _, m_mac])) = three_members(TEST, "10.78.0") else {
        return;
    };
    let (a_ll, m_ll) = (link_local_hex(&a_mac), link_local_hex(&m_mac));
    assert_eq!(m_ll.len(), 32, "{m_ll}");
    let cases = [
        (
            "an NA from its link-local: a's link-local is at m's MAC",
            icmpv6(&m_mac, &m_ll, &na(&a_ll, &m_mac)),
            "source_mismatch",
        ),
        (
            "an NA from a's link-local",
            icmpv6(&m_mac, &a_ll, &na(&a_ll, &m_mac)),
            "source_mismatch",
        ),
        (
            "an NA for its own link-local at a's MAC",
            icmpv6(&m_mac, &m_ll, &na(&m_ll, &a_mac)),
            "source_mismatch",
        ),
        (
            "a router advertisement",
            icmpv6(&m_mac, &m_ll, &ra(&m_mac)),
            "router_advertisement",
        ),
    ];
    for (what, frame, reason) in &cases {
        let before = drops_of(&lab, &b, reason);
        send_raw(m.ns(), &m.tap, std::slice::from_ref(frame), 5);
        std::thread::sleep(Duration::from_millis(300));
        let after = drops_of(&lab, &b, reason);
        println!("[{TEST}] m sends {what}: b's {reason} {before} -> {after}");
        assert!(after >= before + 5, "{what}: not dropped at b");
    }
    // Its own advertisement for its own link-local passes (nothing counted).
    let before = drops_of(&lab, &b, "source_mismatch");
    let own = icmpv6(&m_mac, &m_ll, &na(&m_ll, &m_mac));
    send_raw(m.ns(), &m.tap, std::slice::from_ref(&own), 5);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(drops_of(&lab, &b, "source_mismatch"), before, "m's own NA");
    assert!(ping(a.ns(), &b.ip(), 3).all_ok(), "a no longer reaches b");
    lab.assert_running();
}
