//! Required test 7: a captured data packet (type 4) from a to b, sent again byte for byte,
//! is rejected by b as a replay (`drops.replay` grows) and does not disturb traffic.

use metalvpc_integration_tests::pcap::{fix_udp_checksum, send_raw_frame};
use metalvpc_integration_tests::{drop_count, ping, wait_until, Lab};
use std::time::Duration;

const TEST: &str = "replayed_data_packet_is_dropped";

#[test]
fn replayed_data_packet_is_dropped() {
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.90.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_ping(a, b, Duration::from_secs(15));
    let t = lab.wait_path(a, b, "direct", Duration::from_secs(15));
    assert!(
        t.is_some(),
        "a->b never went direct: {:?}",
        lab.peer_entry(a, b)
    );

    // Capture a's data packets to b on a's underlay interface.
    let filter = format!(
        "udp and dst host {} and dst port {}",
        b.host.ip, b.listen_port
    );
    let cap = lab.capture(a.ns(), &a.host.iface, &filter, "a-to-b.pcap");
    let p = ping(a.ns(), &b.ip(), 3);
    assert!(p.all_ok(), "ping a -> b: {p:?}");
    let frames = cap.stop().expect("capture");
    let data: Vec<_> = frames
        .iter()
        .filter(|f| {
            f.udp()
                .map(|u| u.payload.len() >= 32 && u.payload[0] == 1 && u.payload[1] == 4)
                .unwrap_or(false)
        })
        .collect();
    assert!(
        !data.is_empty(),
        "no type-4 data packet a -> b captured among {} frames",
        frames.len()
    );
    println!("[{TEST}] captured {} data packets a -> b", data.len());

    let before = lab.edge_status(b).expect("status of b");
    let replay_before = drop_count(&before, "replay");
    // Re-send the captured frames unchanged (same addresses, ports and UDP payload). Only
    // the UDP checksum is filled in: offload left it blank in the capture.
    for f in &data {
        let mut frame = f.data.clone();
        assert!(fix_udp_checksum(&mut frame));
        send_raw_frame(a.ns(), &a.host.iface, &frame).expect("replaying the frame");
    }
    let grew = wait_until(Duration::from_secs(5), || {
        lab.edge_status(b)
            .map(|s| drop_count(&s, "replay") >= replay_before + data.len() as u64)
            .unwrap_or(false)
    });
    let after = lab.edge_status(b).expect("status of b");
    println!(
        "[{TEST}] b's drops.replay {} -> {} after replaying {} packets; drops now {}",
        replay_before,
        drop_count(&after, "replay"),
        data.len(),
        after["drops"]
    );
    assert!(
        grew.is_some(),
        "b's drops.replay did not grow by {}: before {before:#}\nafter {after:#}",
        data.len()
    );

    let p = ping(a.ns(), &b.ip(), 3);
    assert!(p.all_ok(), "ping a -> b after the replay: {p:?}");
    lab.assert_running();
}
