//! Supernode crash under traffic: two edges behind cone NATs with a direct tunnel; while
//! `ping -i 0.1 -c 150` runs (10/s for 15 s) the supernode is SIGKILLed and restarted 2 s
//! later. Not one ping may be lost, and both edges must be registered again within 20 s of
//! the restart (registration interval 10 s + 6 s without an answer + a round trip).

use metalvpc_integration_tests::{ping_with, wait_until, Lab, NatKind};
use std::time::{Duration, Instant};

const TEST: &str = "nat_supernode_kill";

#[test]
fn nat_supernode_kill() {
    let Some((mut lab, e, start)) = Lab::nat_pair(
        TEST,
        "10.61.0",
        [Some(NatKind::Cone), Some(NatKind::Cone)],
        None,
    ) else {
        return;
    };
    let (a, b) = (&e[0], &e[1]);
    lab.wait_direct_ping(a, b, start, Duration::from_secs(30));
    lab.expect_path(b, a, "direct", Duration::from_secs(30));
    let community = lab.community_of("10.61.0", &e);

    let (ns, ip) = (a.ns().to_string(), b.ip());
    let pinger = std::thread::spawn(move || ping_with(&ns, &ip, 150, &["-i", "0.1"]));
    std::thread::sleep(Duration::from_secs(4));
    lab.kill_daemon("supernode", libc::SIGKILL);
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    lab.start_supernode(std::slice::from_ref(&community));
    let back = Instant::now();
    // Registered again: the restarted supernode (which starts with nobody) lists both as
    // registered, and both edges say so.
    let again = wait_until(Duration::from_secs(40), || {
        lab.supernode_status().is_ok_and(|st| {
            st["communities"][0]["members"].as_array().is_some_and(|m| {
                m.len() == 2 && m.iter().all(|x| x["registered"].as_bool() == Some(true))
            })
        }) && lab.is_registered(a)
            && lab.is_registered(b)
    });
    let p = pinger.join().unwrap();
    assert_eq!(
        (p.transmitted, p.received),
        (150, 150),
        "pings lost across the supernode's SIGKILL and restart: {p:?}"
    );
    println!(
        "[{TEST}] 150 pings at 10/s across SIGKILL + restart: {}/{} answered, avg {:.3} ms",
        p.received,
        p.transmitted,
        p.avg_ms.unwrap_or(f64::NAN)
    );
    let again = again.unwrap_or_else(|| {
        panic!(
            "edges not registered again within 40 s of the restart: {:?}",
            lab.supernode_status()
        )
    });
    println!(
        "[{TEST}] both edges registered again {again:.2?} after the restart ({:.2?} after the kill)",
        killed.elapsed() - (back.elapsed() - again)
    );
    assert!(
        again <= Duration::from_secs(20),
        "re-registration took {again:.2?} after the restart"
    );
    assert_eq!(lab.path(a, b), "direct", "{}", lab.pair_diagnostics(a, b));
    lab.ping_both_ways(a, b, 3);
    lab.assert_running();
}
