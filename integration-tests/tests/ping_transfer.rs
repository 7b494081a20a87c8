//! Required test 1: supernode + 2 edges; ping both ways over the overlay, and a 100 MB
//! TCP transfer of random data whose sha256 matches at both ends.

use metalvpc_integration_tests::{json_u64, lab::find_peer, ping, tcp_transfer, Lab};
use std::time::Duration;

const TEST: &str = "ping_and_100mb_transfer";
const BYTES: u64 = 100 << 20;

#[test]
fn ping_and_100mb_transfer() {
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.97.0", &["a", "b"]) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);

    let first = lab.wait_ping(a, b, Duration::from_secs(15));
    println!("[{TEST}] first ping a->b answered after {first:.2?}");
    for (x, y) in [(a, b), (b, a)] {
        let p = ping(x.ns(), &y.ip(), 10);
        assert!(p.all_ok(), "ping {} -> {}: {p:?}", x.name, y.name);
        println!(
            "[{TEST}] ping {} -> {}: 10/10, avg RTT {:.3} ms",
            x.name,
            y.name,
            p.avg_ms.unwrap_or(f64::NAN)
        );
    }

    let t = tcp_transfer(
        a.ns(),
        b.ns(),
        b.overlay,
        5201,
        BYTES,
        Duration::from_secs(300),
    )
    .unwrap_or_else(|err| panic!("TCP transfer a -> b over the overlay: {err:#}"));
    println!(
        "[{TEST}] TCP a -> b: {} MiB in {:.2} s = {:.1} Mbit/s, sha256 {}",
        t.bytes >> 20,
        t.secs,
        t.mbit_per_s(),
        t.sha256_sent
    );
    assert_eq!(t.bytes, BYTES, "received byte count");
    assert_eq!(
        t.sha256_sent, t.sha256_received,
        "sha256 of sent and received data"
    );

    // The counters agree that the data crossed the tunnel.
    let st = lab.edge_status(b).expect("status of b");
    let peer =
        find_peer(&st, &a.public_key).unwrap_or_else(|| panic!("b's status lists a: {st:#}"));
    assert!(
        json_u64(peer, "rx_bytes") >= BYTES,
        "b's rx_bytes from a: {peer:#}"
    );
    println!(
        "[{TEST}] b's view of a: path {}, rx_bytes {}",
        peer["path"], peer["rx_bytes"]
    );
    lab.assert_running();
}
