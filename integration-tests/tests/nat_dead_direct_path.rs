//! A direct path that dies (UDP between the two edges dropped by nftables in both hosts):
//! the edges fall back to the relay within DIRECT_TIMEOUT plus a tick (about 15.25 s,
//! asserted ≤ 17 s) and traffic flows again; once unblocked they go direct again.

use metalvpc_integration_tests::{ping, wait_until, Lab};
use std::time::{Duration, Instant};

const TEST: &str = "nat_dead_direct_path";

#[test]
fn nat_dead_direct_path() {
    let Some((mut lab, e, start)) = Lab::nat_pair(TEST, "10.65.0", [None, None], None) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_direct_ping(a, b, start, Duration::from_secs(15));
    lab.expect_path(b, a, "direct", Duration::from_secs(15));

    lab.block_udp(a, b);
    let blocked = Instant::now();
    // Ping a -> b once a second (1 s wait each) from the moment of the block until one
    // comes back, alongside the path watch below.
    let (ns, ip) = (a.ns().to_string(), b.ip());
    let pinger = std::thread::spawn(move || {
        wait_until(Duration::from_secs(40), || ping(&ns, &ip, 1).all_ok())
            .map(|_| blocked.elapsed())
    });
    lab.expect_path(a, b, "relay", Duration::from_secs(30));
    let to_relay = blocked.elapsed();
    lab.expect_path(b, a, "relay", Duration::from_secs(30));
    let b_relay = blocked.elapsed();
    let ping_back = pinger.join().unwrap();
    println!(
        "[{TEST}] direct path blocked: a shows relay after {to_relay:.2?}, b by {b_relay:.2?}; first ping a->b after the block: {ping_back:.2?}"
    );
    assert!(
        to_relay <= Duration::from_secs(17),
        "fallback to the relay took {to_relay:.2?} (DIRECT_TIMEOUT 15 s + a tick expected)"
    );
    let ping_back = ping_back.expect("no ping a->b within 40 s of the block");
    assert!(
        ping_back <= Duration::from_secs(18),
        "traffic resumed only {ping_back:.2?} after the block"
    );
    let (ab, ba) = lab.ping_both_ways(a, b, 5);
    println!("[{TEST}] relayed RTT a->b {ab:.3} ms, b->a {ba:.3} ms");

    lab.unblock_udp(a, b);
    let unblocked = Instant::now();
    lab.expect_path(a, b, "direct", Duration::from_secs(20));
    lab.expect_path(b, a, "direct", Duration::from_secs(20));
    println!(
        "[{TEST}] unblocked: direct both ways again after {:.2?}",
        unblocked.elapsed()
    );
    let (ab, ba) = lab.ping_both_ways(a, b, 5);
    println!("[{TEST}] direct RTT a->b {ab:.3} ms, b->a {ba:.3} ms");
    lab.assert_running();
}
