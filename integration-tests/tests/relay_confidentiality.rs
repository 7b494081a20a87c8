//! Required test 6: relayed traffic is end-to-end encrypted. A payload marker sent a -> b
//! while the path is relayed never appears in a capture in the supernode's namespace, while
//! the same marker does appear in a capture on b's TAP device (so the capture method works).

use metalvpc_integration_tests::pcap::frames_containing;
use metalvpc_integration_tests::{hex, ping_with, random_bytes, Community, Edge, Lab};
use std::time::Duration;

const TEST: &str = "relayed_payload_is_not_visible_to_supernode";

#[test]
fn relayed_payload_is_not_visible_to_supernode() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    let e = lab.add_edges("prod", "10.91.0", &["a", "b"]);
    let (a, b) = (&e[0], &e[1]);
    lab.block_udp(a, b);
    lab.start_supernode(&[Community::new(
        "prod",
        "10.91.0.0/24",
        e.iter().map(Edge::member).collect(),
    )]);
    lab.start_edges(&e);
    lab.wait_ping(a, b, Duration::from_secs(20));
    assert!(
        lab.wait_path(a, b, "relay", Duration::from_secs(15))
            .is_some(),
        "a->b not relayed: {:?}",
        lab.peer_entry(a, b)
    );

    // 16 random bytes: the most `ping -p` takes; it fills the ICMP payload with repeats.
    let marker = random_bytes(16);
    let sn = lab.supernode_host.clone();
    let cap_sn = lab.capture(&sn.ns, &sn.iface, "udp", "supernode.pcap");
    let cap_tap = lab.capture(b.ns(), &b.tap, "icmp", "b-tap.pcap");
    let p = ping_with(a.ns(), &b.ip(), 5, &["-s", "600", "-p", &hex(&marker)]);
    assert!(p.all_ok(), "marked ping a -> b: {p:?}");
    let sn_frames = cap_sn.stop().expect("supernode capture");
    let tap_frames = cap_tap.stop().expect("TAP capture");

    let relayed = sn_frames
        .iter()
        .filter_map(|f| f.udp())
        .filter(|u| u.payload.len() >= 2 && u.payload[..2] == [1, 5])
        .count();
    let on_tap = frames_containing(&tap_frames, &marker).len();
    let on_sn = frames_containing(&sn_frames, &marker).len();
    println!(
        "[{TEST}] supernode capture: {} frames, {relayed} relay packets, {on_sn} with the marker; b's TAP: {} frames, {on_tap} with the marker",
        sn_frames.len(),
        tap_frames.len()
    );
    assert!(
        on_tap >= 5,
        "the marker must be visible on b's TAP (capture sanity check), got {on_tap}"
    );
    assert!(
        relayed >= 5,
        "the supernode capture must hold the relayed packets, got {relayed}"
    );
    assert_eq!(
        on_sn, 0,
        "the marker was seen in clear in the supernode's namespace"
    );
    // Also no 8-byte half of it (in case a copy straddles a boundary differently).
    assert_eq!(
        frames_containing(&sn_frames, &marker[..8]).len(),
        0,
        "half the marker seen at the supernode"
    );
    lab.assert_running();
}
