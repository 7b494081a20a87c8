//! Simulator tests of what an edge takes from a supernode and from other members: assigned
//! addresses, IPv6 neighbour discovery, endpoints to probe, and the tables that keep this
//! cheap (issue 13). The fixtures are the simulator's (`sim.rs`).

use crate::control::Control;
use crate::edge::{Command, Event};
use crate::io::DropReason;
use crate::keys::PrivateKey;
use crate::membership::AdminKey;
use crate::sim::{signed_blob, signed_net, Net};
use std::net::IpAddr;
use std::time::Duration;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ack(net: &Net, i: usize, assigned: (&str, u8)) -> Control {
    Control::RegisterAck {
        id: 1,
        observed: net.edges[i].addr,
        epoch: 12345,
        interval: 10,
        relay: true,
        membership: 5,
        assigned: Some((ip(assigned.0), assigned.1)),
    }
}

/// Edge `i`'s events and commands since the last call.
fn drain(net: &mut Net, i: usize) -> (Vec<Event>, Vec<Command>) {
    let e = &mut net.edges[i].edge;
    (e.drain_events().collect(), e.drain_commands().collect())
}

fn refusals(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::AddressRefused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// Ported from the review's `sr_supernode_renumbers_a_static_signed_edge_with_any_prefix`:
/// the address and prefix do not change.
#[test]
fn a_supernode_cannot_renumber_a_static_signed_edge_with_any_prefix() {
    let (mut net, _admin) = signed_net(true, |_| {});
    assert!(net.unicast(0, 1, b"before"));
    let _ = drain(&mut net, 0);
    let before = net.edges[0].edge.address();
    for (n, assigned) in [("10.0.0.2", 1), ("10.0.0.2", 16), ("10.0.0.77", 16)]
        .into_iter()
        .enumerate()
    {
        let msg = ack(&net, 0, assigned);
        net.sn_push(0, &msg);
        let (ev, cmds) = drain(&mut net, 0);
        println!("assigned {assigned:?}: events {ev:?}");
        assert_eq!(net.edges[0].edge.address(), before);
        assert!(!ev
            .iter()
            .any(|e| matches!(e, Event::AddressAssigned { .. })));
        assert_eq!(refusals(&ev).len(), 1, "{ev:?}");
        assert!(cmds.is_empty(), "{cmds:?}");
        assert_eq!(
            net.drops(0, DropReason::AddressRefused),
            n as u64 + 1,
            "counted"
        );
    }
    // Its own address with the community's prefix again: nothing to refuse or change.
    let msg = ack(&net, 0, ("10.0.0.1", 16));
    net.sn_push(0, &msg);
    let (ev, cmds) = drain(&mut net, 0);
    assert!(refusals(&ev).is_empty() && cmds.is_empty(), "{ev:?}");
    assert!(net.unicast(0, 1, b"after"));
}

fn enrolling_net() -> (Net, usize) {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1])])]);
    net.sn_cfg.communities[0].enrolment = Some(crate::supernode::Enrolment::new(
        Some(b"correct horse".to_vec()),
        "10.0.0.128/30".parse().unwrap(),
    ));
    net.restart_supernode();
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    let n = net.add_edge("prod", &PrivateKey::generate(), [0, 0, 0, 0]);
    net.edges[n].edge.set_join_secret(b"correct horse".to_vec());
    (net, n)
}

#[test]
fn a_hostile_assigned_prefix_is_refused_without_underflow() {
    // Before it enrols, the edge knows no network: any prefix outside 8..=32 is refused.
    let (mut net, n) = enrolling_net();
    for prefix in [0, 1, 7, 33, 255] {
        net.edges[n].edge.test_on_assigned(ip("10.0.0.130"), prefix);
        assert!(net.edges[n].edge.address().is_unspecified(), "/{prefix}");
    }
    assert_eq!(net.drops(n, DropReason::AddressRefused), 5);
    // After enrolment too.
    net.run(Duration::from_secs(3));
    assert!(net.edges[n].edge.is_registered());
    let got = net.edges[n].edge.address();
    assert_eq!(got, ip("10.0.0.129"), "enrolment still works");
    let _ = drain(&mut net, n);
    for prefix in [0, 1, 7, 33, 64, 128, 255] {
        let msg = ack(&net, n, ("10.0.0.130", prefix));
        net.sn_push(n, &msg);
        let (ev, cmds) = drain(&mut net, n);
        assert_eq!(refusals(&ev).len(), 1, "/{prefix}: {ev:?}");
        assert!(cmds.is_empty());
        assert_eq!(net.edges[n].edge.address(), got);
    }
}

#[test]
fn enrolment_takes_one_address_inside_the_network_and_refuses_any_other() {
    let (mut net, n) = enrolling_net();
    net.run(Duration::from_secs(3));
    let got = net.edges[n].edge.address();
    assert_eq!(got, ip("10.0.0.129"));
    let (ev, cmds) = drain(&mut net, n);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::AddressAssigned { prefix: 16, .. })));
    assert_eq!(
        cmds,
        vec![Command::ApplyAddress {
            address: [10, 0, 0, 129].into(),
            prefix: 16
        }]
    );
    // Enrolled: another address (inside the network or not), or another prefix for this
    // one, is refused; the same again is no change.
    for assigned in [("10.0.0.130", 16), ("192.168.7.7", 16), ("10.0.0.129", 24)] {
        let msg = ack(&net, n, assigned);
        net.sn_push(n, &msg);
        let (ev, cmds) = drain(&mut net, n);
        assert_eq!(refusals(&ev).len(), 1, "{assigned:?}: {ev:?}");
        assert!(cmds.is_empty());
        assert_eq!(net.edges[n].edge.address(), got);
    }
    let msg = ack(&net, n, ("10.0.0.129", 16));
    net.sn_push(n, &msg);
    let (ev, cmds) = drain(&mut net, n);
    assert!(ev.is_empty() && cmds.is_empty(), "{ev:?}");
    net.edges[n].cfg.address = got;
    assert!(net.unicast(n, 0, b"from the enrolled address"));

    // An enrolling edge that knows the network takes nothing outside it, nor its network or
    // broadcast address.
    let (mut net, n) = enrolling_net();
    net.edges[n].cfg.network = Some("10.0.0.0/16".parse().unwrap());
    net.restart_edge(n);
    net.edges[n].edge.set_join_secret(b"x".to_vec());
    for assigned in [
        ("192.168.7.7", 16),
        ("10.1.0.5", 16),
        ("10.0.0.0", 16),
        ("10.0.255.255", 16),
        ("10.0.0.5", 24),
    ] {
        let refused_before = net.drops(n, DropReason::AddressRefused);
        net.edges[n]
            .edge
            .test_on_assigned(assigned.0.parse().unwrap(), assigned.1);
        assert_eq!(
            net.drops(n, DropReason::AddressRefused),
            refused_before + 1,
            "{assigned:?}"
        );
        assert!(net.edges[n].edge.address().is_unspecified());
    }
    net.edges[n].edge.test_on_assigned(ip("10.0.0.5"), 16);
    assert_eq!(net.edges[n].edge.address(), ip("10.0.0.5"));
}

/// A key listed at `listed` in the supernode's file, at `signed` in the administrator's
/// list, enrolling with the join secret and `admin_key`: edge 1.
fn signed_enrolment(listed: [u8; 4], signed: [u8; 4]) -> Net {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1]), ("n", signed)])]);
    let admin = AdminKey::generate();
    let nodes = net.sn_cfg.communities[0].nodes.clone();
    net.sn_cfg.communities[0].signed = Some(signed_blob(&admin, 5, &nodes));
    net.sn_cfg.communities[0].nodes[1].address = IpAddr::from(listed);
    net.sn_cfg.communities[0].enrolment = Some(crate::supernode::Enrolment::new(
        Some(b"correct horse".to_vec()),
        "10.0.0.128/30".parse().unwrap(),
    ));
    net.restart_supernode();
    net.admin = Some(admin.public_key());
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    let n = net.add_edge("prod", &keys[1], [0, 0, 0, 0]);
    net.edges[n].edge.set_join_secret(b"correct horse".to_vec());
    net.run(Duration::from_secs(3));
    net
}

#[test]
fn under_admin_key_an_edge_takes_only_the_address_the_signed_list_gives_it() {
    // The supernode assigns what the administrator signed: taken once the list is verified.
    let mut net = signed_enrolment([10, 0, 0, 5], [10, 0, 0, 5]);
    assert_eq!(net.edges[1].edge.address(), ip("10.0.0.5"));
    let (ev, _) = drain(&mut net, 1);
    assert!(refusals(&ev).is_empty(), "{ev:?}");
    // A supernode that moved the key elsewhere: refused, and the edge stays without one.
    let mut net = signed_enrolment([10, 0, 0, 9], [10, 0, 0, 5]);
    assert!(net.edges[1].edge.address().is_unspecified());
    let (ev, cmds) = drain(&mut net, 1);
    let r = refusals(&ev);
    assert!(r.iter().any(|r| r.contains("signed membership")), "{ev:?}");
    assert!(!cmds
        .iter()
        .any(|c| matches!(c, Command::ApplyAddress { .. })));
    assert!(net.drops(1, DropReason::AddressRefused) > 0);
}

// ------------------------------------------------------------------------------------------
// IPv6 neighbour discovery from members.

use crate::icmpv6::frames::{icmpv6, na, ns, ra};
use crate::neighbor::link_local;
use crate::sim::prod_edges;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Sends `frame` from edge `from` (its TAP) and says whether edge `to` delivered it.
fn reaches(net: &mut Net, from: usize, to: usize, frame: &[u8]) -> bool {
    let before = net.edges[to].delivered.len();
    net.send_frame(from, frame);
    net.run(Duration::from_millis(100));
    net.edges[to].delivered[before..].iter().any(|f| f == frame)
}

/// Ported from the review's `sr_member_spoofs_nd_for_another_members_ipv6_addresses`: both
/// forged advertisements are dropped and counted, as the forged ARP is.
#[test]
fn a_member_cannot_spoof_nd_for_another_members_ipv6_addresses() {
    let (mut net, _) = prod_edges(3);
    let (a, b, c) = (0, 1, 2);
    assert!(net.unicast(a, c, b"warm a->c"));
    let m0 = net.drops(c, DropReason::SourceMismatch);
    let arp = crate::eth::gratuitous_arp(net.mac(a), Ipv4Addr::from(net.ip(b)));
    assert!(!reaches(&mut net, a, c, &arp));
    let m1 = net.drops(c, DropReason::SourceMismatch);
    assert_eq!(m1, m0 + 1);
    // An NA from a's own link-local saying b's ULA is at a's MAC.
    let b_ula: Ipv6Addr = "fd10:10::2".parse().unwrap();
    let a_ll = link_local(net.mac(a));
    let na1 = na(net.mac(a), a_ll, b_ula, net.mac(a));
    assert!(!reaches(&mut net, a, c, &na1));
    // An NA from b's link-local saying b's link-local is at a's MAC.
    let b_ll = link_local(net.mac(b));
    let na2 = na(net.mac(a), b_ll, b_ll, net.mac(a));
    assert!(!reaches(&mut net, a, c, &na2));
    // Its own link-local at b's MAC.
    let na3 = na(net.mac(a), a_ll, a_ll, net.mac(b));
    assert!(!reaches(&mut net, a, c, &na3));
    assert_eq!(net.drops(c, DropReason::SourceMismatch), m1 + 3);
    assert!(net.unicast(a, c, b"a->c still works"));
}

#[test]
fn dad_and_a_members_own_nd_messages_pass() {
    let (mut net, _) = prod_edges(3);
    let (a, c) = (0, 2);
    assert!(net.unicast(a, c, b"warm"));
    let a_ll = link_local(net.mac(a));
    let mac = net.mac(a);
    // Duplicate address detection of its link-local (source ::, no option).
    let dad = ns(mac, Ipv6Addr::UNSPECIFIED, a_ll, mac);
    assert!(reaches(&mut net, a, c, &dad), "DAD");
    // Its own unsolicited NA.
    assert!(reaches(&mut net, a, c, &na(mac, a_ll, a_ll, mac)), "own NA");
    // A solicitation for an address no member has (flooded, not answered locally).
    let nobody: Ipv6Addr = "fd10:10::99".parse().unwrap();
    assert!(
        reaches(&mut net, a, c, &ns(mac, a_ll, nobody, mac)),
        "own NS"
    );
    // DAD for another member's link-local is not a's to do.
    let b_ll = link_local(net.mac(1));
    assert!(!reaches(
        &mut net,
        a,
        c,
        &ns(mac, Ipv6Addr::UNSPECIFIED, b_ll, mac)
    ));
    // Plain IPv6 from its link-local passes, from another's does not.
    let echo = [128u8, 0, 0, 0, 0, 1, 0, 1];
    let c_ll = link_local(net.mac(c));
    let own = icmpv6(net.mac(c).0, mac, a_ll, c_ll, &echo);
    assert!(reaches(&mut net, a, c, &own));
    let forged = icmpv6(net.mac(c).0, mac, b_ll, c_ll, &echo);
    assert!(!reaches(&mut net, a, c, &forged));
    assert_eq!(net.drops(c, DropReason::SourceMismatch), 2);
}

#[test]
fn router_advertisements_from_members_are_dropped_unless_the_community_allows_them() {
    let (mut net, _) = prod_edges(3);
    let (a, c) = (0, 2);
    assert!(net.unicast(a, c, b"warm"));
    let adv = ra(net.mac(a), link_local(net.mac(a)));
    assert!(!reaches(&mut net, a, c, &adv));
    assert_eq!(net.drops(c, DropReason::RouterAdvertisement), 1);

    // The same with `ipv6_router = true` for a in the community file.
    let (mut net, keys) = crate::sim::prod(3);
    net.sn_cfg.communities[0].nodes[0].ipv6_router = true;
    net.restart_supernode();
    net.add_edges(&keys);
    net.run(Duration::from_secs(3));
    assert!(net.unicast(a, c, b"warm"));
    assert!(reaches(&mut net, a, c, &adv), "a may advertise");
    // b may not.
    let adv_b = ra(net.mac(1), link_local(net.mac(1)));
    assert!(!reaches(&mut net, 1, c, &adv_b));
    assert_eq!(net.drops(c, DropReason::RouterAdvertisement), 1);
}

// ------------------------------------------------------------------------------------------
// Endpoints to probe, and the probes a supernode can ask for.

fn record_of(
    net: &Net,
    i: usize,
    endpoints: Vec<std::net::SocketAddr>,
) -> crate::control::PeerRecord {
    let st = net.edges[0].edge.status(net.now);
    let key = net.edges[i].key.public_key();
    let p = st.peers.iter().find(|p| p.public_key == key).unwrap();
    crate::control::PeerRecord {
        id: 2,
        key,
        name: p.name.clone(),
        address: p.address,
        mac: net.mac(i),
        instance: net.edges[i].edge.test_instance(),
        allowed_cidrs: p.allowed_cidrs.clone(),
        endpoints,
        ipv6_router: false,
    }
}

#[test]
fn endpoints_a_supernode_names_are_filtered_before_they_are_probed() {
    let mut net = crate::sim::two_edges();
    let real = net.edges[1].addr;
    let junk: Vec<std::net::SocketAddr> = [
        "0.0.0.0:7655",
        "127.0.0.1:7655",
        "224.0.0.251:5353",
        "255.255.255.255:7655",
        "198.18.0.99:0",
        "10.0.0.3:7655",
        "[::1]:7655",
        "[ff02::1]:7655",
        "[::]:7655",
        "[::ffff:127.0.0.1]:7655",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let sent_before = net.capture.len();
    // A record carries at most 8 endpoints: the junk in two notices, the real one in both.
    for part in junk.chunks(5) {
        let mut eps = part.to_vec();
        eps.insert(part.len() / 2, real);
        let rec = record_of(&net, 1, eps);
        net.sn_push(0, &Control::PeerNotify { record: rec });
        let st = net.edges[0].edge.status(net.now);
        assert_eq!(st.peers[0].endpoints, vec![real]);
    }
    net.run(Duration::from_secs(6));
    let st = net.edges[0].edge.status(net.now);
    assert_eq!(st.peers[0].endpoints, vec![real]);
    let to_junk = net.capture[sent_before..]
        .iter()
        .filter(|(from, to, _)| *from == net.edges[0].addr && junk.contains(to))
        .count();
    assert_eq!(to_junk, 0);
    assert!(net.unicast(0, 1, b"still fine"));
}

#[test]
fn a_flood_of_peer_notices_makes_a_bounded_number_of_probes() {
    let mut net = crate::sim::two_edges();
    net.block(0, 1);
    // Eight endpoints (third parties) for b: a flood of notices in the same second.
    let victims: Vec<std::net::SocketAddr> = (0..8)
        .map(|i| std::net::SocketAddr::new([198, 18, 5, 1 + i].into(), 7655))
        .collect();
    let rec = record_of(&net, 1, victims.clone());
    let before = net.capture.len();
    for _ in 0..500 {
        net.sn_push(
            0,
            &Control::PeerNotify {
                record: rec.clone(),
            },
        );
    }
    let probes = net.capture[before..]
        .iter()
        .filter(|(_, to, _)| victims.contains(to))
        .count();
    println!("500 PeerNotify in one instant: {probes} probe datagrams to third parties");
    assert!(probes <= 4, "{probes}");
}

// ------------------------------------------------------------------------------------------
// The peer behind an unknown receiver index.

/// A data packet to `a` with a receiver index it has no session for, from `src`: says
/// whether `a` answered with a handshake (its offer of a new session). Checks that finding
/// the peer (or none) visited no slot of the peer table: the cost does not grow with peers.
fn unknown_index_offer(net: &mut Net, a: usize, src: std::net::SocketAddr) -> bool {
    let mut pkt = vec![0u8; crate::wire::DATA_OVERHEAD];
    crate::wire::write_data_header(&mut pkt, 0x5eed_0001, 7);
    let visits = net.edges[a].edge.test_peer_visits();
    net.edges[a]
        .edge
        .handle_udp(net.now, src, &mut pkt, &mut net.out);
    assert_eq!(
        net.edges[a].edge.test_peer_visits(),
        visits,
        "a scan of the peer table"
    );
    let offered = !net.out.transmits.is_empty();
    net.drain_edge(a);
    net.deliver_all();
    offered
}

#[test]
fn the_peer_behind_an_unknown_session_is_found_in_o1_through_roaming_and_removal() {
    let (mut net, _) = prod_edges(3);
    net.run(Duration::from_secs(2));
    let (b, c) = (net.edges[1].addr, net.edges[2].addr);
    assert!(unknown_index_offer(&mut net, 0, b), "b's endpoint");
    net.run(Duration::from_secs(3));
    assert!(unknown_index_offer(&mut net, 0, c), "c's endpoint");
    assert!(
        !unknown_index_offer(&mut net, 0, crate::sim::addr(99, 1)),
        "nobody's"
    );
    // b roams: its new endpoint leads to it, the old one to nobody.
    let new = crate::sim::addr(77, 40000);
    net.edges[1].addr = new;
    net.run(Duration::from_secs(3));
    while !net.unicast(0, 1, b"after roaming") {
        net.run(Duration::from_millis(500));
    }
    net.run(Duration::from_secs(3));
    assert!(unknown_index_offer(&mut net, 0, new), "b's new endpoint");
    net.run(Duration::from_secs(3));
    // (b's old address is still among the endpoints its record announces until the
    // supernode's next list; the direct one moved.)
    // c is removed from the community: its endpoint leads to nobody.
    net.reload(|cs| {
        cs[0].nodes.remove(2);
    });
    net.run(Duration::from_secs(1));
    assert!(!net.knows(0, 2));
    assert!(!unknown_index_offer(&mut net, 0, c), "c was removed");
    let sizes = net.edges[0].edge.table_sizes();
    let get = |k: &str| sizes.iter().find(|(n, _)| *n == k).unwrap().1;
    assert!(get("by_endpoint") >= 1 && get("by_relay") == 1, "{sizes:?}");
}

// ------------------------------------------------------------------------------------------
// Pending lookups.

#[test]
fn a_flood_of_frames_to_unknown_macs_keeps_the_pending_lookups_bounded() {
    let mut net = crate::sim::two_edges();
    let before = net.sn_capture.len();
    // 5000 frames to distinct MACs nobody owns, all in one instant (as from our own TAP).
    for i in 0..5000u32 {
        let b = i.to_be_bytes();
        let dst = crate::keys::Mac([2, 0x77, b[0], b[1], b[2], b[3]]);
        let f = crate::sim::ip_frame(dst, net.mac(0), net.ip(0), b"who?");
        net.edges[0].edge.handle_frame(net.now, &f, &mut net.out);
        net.drain_edge(0);
    }
    net.deliver_all();
    let sizes = net.edges[0].edge.table_sizes();
    let lookups = sizes.iter().find(|(n, _)| *n == "lookups").unwrap().1;
    let asked = net.sn_capture.len() - before;
    println!(
        "5000 unknown MACs at once: {lookups} pending lookups, {asked} datagrams to the supernode"
    );
    assert!(lookups <= crate::edge::MAX_LOOKUPS, "{lookups}");
    assert!(asked <= crate::edge::MAX_LOOKUPS, "{asked}");
    // A second later they have expired: a new query is asked again, the table stays small.
    net.run(crate::edge::LOOKUP_RETRY);
    let f = crate::sim::ip_frame(
        crate::keys::Mac([2, 0x78, 0, 0, 0, 1]),
        net.mac(0),
        net.ip(0),
        b"?",
    );
    let before = net.sn_capture.len();
    net.send_frame(0, &f);
    assert_eq!(net.sn_capture.len() - before, 1, "asked again");
    let sizes = net.edges[0].edge.table_sizes();
    assert!(sizes.iter().find(|(n, _)| *n == "lookups").unwrap().1 <= 2);
    assert!(net.unicast(0, 1, b"still fine"));
}
