//! A floating service address with the real VRRP daemon (issue 4): keepalived on nodes a and
//! b (VRRPv3 adverts every 100 ms, multicast on the overlay) holds a virtual address that is
//! in both nodes' `allowed_cidrs`; node c pings it every 50 ms while the master goes away —
//! first keepalived stopped, then the whole edge (the node falling off the overlay) — and the
//! failover time is measured from the replies' sequence numbers. A fourth node m, whose
//! allowed_cidrs do not hold the address, claims it by gratuitous ARP: dropped and counted,
//! and c keeps reaching the real holder.

mod k8s;

use metalvpc_integration_tests::lab::Daemon;
use metalvpc_integration_tests::{exec_in, ping, Edge, Lab};
use std::time::Duration;

const TEST: &str = "keepalived_vrrp_moves_a_virtual_address";
const VIP: &str = "10.124.0.100";
/// Ping interval (s) while measuring.
const INTERVAL: f64 = 0.05;

fn keepalived(lab: &Lab, bin: &str, e: &Edge, priority: u32) -> Daemon {
    let conf = lab.dir.join(format!("keepalived-{}.conf", e.name));
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id {name}\n  vrrp_version 3\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {tap}\n  virtual_router_id 51\n  \
             priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/24 dev {tap}\n  }}\n}}\n",
            name = e.name,
            tap = e.tap
        ),
    )
    .unwrap();
    let pid = |what: &str| {
        lab.dir
            .join(format!("keepalived-{}-{what}.pid", e.name))
            .to_string_lossy()
            .into_owned()
    };
    k8s::spawn(
        lab,
        &format!("keepalived-{}", e.name),
        e.ns(),
        &[
            bin,
            "-n",
            "-l",
            "-P",
            "-f",
            conf.to_str().unwrap(),
            "-p",
            &pid("main"),
            "-r",
            &pid("vrrp"),
            "-c",
            &pid("checkers"),
        ],
    )
}

fn holds_vip(e: &Edge) -> bool {
    exec_in(
        e.ns(),
        &["ip", "-4", "addr", "show", "dev", &e.tap],
        Duration::from_secs(5),
    )
    .stdout
    .contains(&format!("inet {VIP}/"))
}

fn mac(lab: &Lab, e: &Edge) -> String {
    lab.edge_status(e).unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_lowercase()
}

fn neigh_vip(c: &Edge) -> String {
    exec_in(
        c.ns(),
        &["ip", "neigh", "show", VIP],
        Duration::from_secs(5),
    )
    .stdout
    .to_lowercase()
}

/// Pings the VIP from `c` every 50 ms for `secs` seconds on a thread; returns the handle of
/// the thread, which yields the icmp_seq numbers answered and the count sent.
fn pinger(c: &Edge, secs: u32) -> std::thread::JoinHandle<(Vec<u32>, u32)> {
    let ns = c.ns().to_string();
    let count = (f64::from(secs) / INTERVAL) as u32;
    std::thread::spawn(move || {
        let out = exec_in(
            &ns,
            &[
                "ping",
                "-n",
                "-i",
                &INTERVAL.to_string(),
                "-c",
                &count.to_string(),
                "-W",
                "1",
                VIP,
            ],
            Duration::from_secs(u64::from(secs) + 15),
        );
        let seqs = out
            .stdout
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| {
                l.split("icmp_seq=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        (seqs, count)
    })
}

/// The longest run of unanswered pings, in ms, and how many were lost in all.
fn outage_ms(seqs: &[u32], sent: u32) -> (f64, u32) {
    let mut s = seqs.to_vec();
    s.sort_unstable();
    s.dedup();
    let gap = s.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(sent);
    (f64::from(gap) * INTERVAL * 1000.0, sent - s.len() as u32)
}

fn measure(lab: &mut Lab, c: &Edge, what: &str, fail: impl FnOnce(&mut Lab)) -> f64 {
    let t = pinger(c, 6);
    std::thread::sleep(Duration::from_millis(1500));
    fail(lab);
    let (seqs, sent) = t.join().unwrap();
    let (ms, lost) = outage_ms(&seqs, sent);
    println!(
        "[{TEST}] {what}: failover {ms:.0} ms (longest run of lost replies at {}-ms pings; {lost} of {sent} lost in all)",
        INTERVAL * 1000.0
    );
    assert!(!seqs.is_empty(), "{what}: no reply at all");
    assert!(
        seqs.iter().any(|&s| s > sent * 3 / 4),
        "{what}: the address never came back: {seqs:?}"
    );
    ms
}

#[test]
fn keepalived_vrrp_moves_a_virtual_address() {
    let Some(tools) = k8s::tools(
        TEST,
        &[("keepalived", "keepalived"), ("python3", "python3")],
    ) else {
        return;
    };
    let bin = tools[0].to_str().unwrap().to_string();
    let vip = format!("{VIP}/32");
    let allowed = vec![vec![vip.clone()], vec![vip.clone()], vec![], vec![]];
    let Some((mut lab, e)) =
        k8s::lab_with_allowed(TEST, "10.124.0", &["a", "b", "c", "m"], &allowed)
    else {
        return;
    };
    let (a, b, c, m) = (e[0].clone(), e[1].clone(), e[2].clone(), e[3].clone());
    for (x, y) in [(&c, &a), (&c, &b), (&a, &b), (&m, &c)] {
        lab.wait_ping(x, y, Duration::from_secs(15));
    }
    let (a_mac, b_mac, m_mac) = (mac(&lab, &a), mac(&lab, &b), mac(&lab, &m));

    let mut ka = keepalived(&lab, &bin, &a, 150);
    let _kb = keepalived(&lab, &bin, &b, 100);
    let took = metalvpc_integration_tests::wait_until(Duration::from_secs(15), || holds_vip(&a))
        .unwrap_or_else(|| panic!("a never became master:\n{}", ka.log_text()));
    println!("[{TEST}] a holds {VIP} {took:.2?} after keepalived started");
    assert!(!holds_vip(&b), "both hold the address");
    let got = metalvpc_integration_tests::wait_until(Duration::from_secs(10), || {
        ping(c.ns(), VIP, 1).all_ok()
    });
    assert!(got.is_some(), "c cannot reach {VIP} on a");
    assert!(neigh_vip(&c).contains(&a_mac), "{}", neigh_vip(&c));

    // 1. keepalived on a stops (it sends a priority-0 advert): b takes over.
    let graceful = measure(&mut lab, &c, "keepalived stopped on the master", |_| {
        ka.stop()
    });
    assert!(holds_vip(&b), "b did not take the address");
    assert!(
        neigh_vip(&c).contains(&b_mac),
        "c still sends to {}",
        neigh_vip(&c)
    );

    // a comes back with the higher priority and takes the address back.
    let _ka2 = keepalived(&lab, &bin, &a, 150);
    let back = metalvpc_integration_tests::wait_until(Duration::from_secs(15), || {
        holds_vip(&a)
            && !holds_vip(&b)
            && ping(c.ns(), VIP, 1).all_ok()
            && neigh_vip(&c).contains(&a_mac)
    });
    assert!(back.is_some(), "a did not take the address back");

    // 2. The master node falls off the overlay (its edge stops; its TAP goes away): b hears
    // no adverts for three intervals and takes over.
    let a_name = a.name.clone();
    let crash = measure(&mut lab, &c, "the master's edge stopped", |lab| {
        lab.stop_daemon(&a_name)
    });
    assert!(holds_vip(&b), "b did not take the address");
    assert!(
        neigh_vip(&c).contains(&b_mac),
        "c still sends to {}",
        neigh_vip(&c)
    );
    // Generous bounds (a noisy 2-core machine): the figures above are the measurement.
    assert!(
        graceful < 3000.0 && crash < 3000.0,
        "failover took {graceful} / {crash} ms"
    );

    // 3. m, whose allowed_cidrs do not hold the address, claims it by gratuitous ARP.
    let before = k8s::source_mismatch(&lab, &c);
    let hex = |s: &str| s.replace(':', "");
    let ip_hex: String = VIP
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect();
    let frame = format!(
        "ffffffffffff{m}08060001080006040001{m}{ip}000000000000{ip}",
        m = hex(&m_mac),
        ip = ip_hex
    );
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{}',0))\n\
         for _ in range(5):\n    s.send(bytes.fromhex('{frame}'))\n    time.sleep(0.05)\n",
        m.tap
    );
    let out = exec_in(m.ns(), &["python3", "-c", &script], Duration::from_secs(20));
    assert!(out.success(), "{out:#?}");
    std::thread::sleep(Duration::from_millis(300));
    let after = k8s::source_mismatch(&lab, &c);
    println!("[{TEST}] m claims {VIP} by gratuitous ARP: c's source_mismatch {before} -> {after}");
    assert!(
        after >= before + 5,
        "m's claim was not dropped at c ({before} -> {after})"
    );
    assert!(
        neigh_vip(&c).contains(&b_mac),
        "m moved c's entry: {}",
        neigh_vip(&c)
    );
    assert!(ping(c.ns(), VIP, 3).all_ok(), "c lost the address");
    lab.assert_running();
}
