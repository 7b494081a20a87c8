//! DHCP on the overlay (issue 4): dnsmasq on node s serves a range; node c runs a DHCP client
//! (busybox udhcpc) on its TAP and gets an address from the range, which lies in c's
//! `allowed_cidrs`. The client's DISCOVER and REQUEST come from 0.0.0.0 (it has no address
//! yet): the edge lets 0.0.0.0 through for a DHCP client's UDP 68 -> 67 only (protocol/src/
//! eth.rs), bound by the MAC check; the leased address then works both ways.

mod k8s;

use metalvpc_integration_tests::{exec_in, ping, ping_with};
use std::time::Duration;

const TEST: &str = "dnsmasq_dhcp_lease_on_the_overlay";

#[test]
fn dnsmasq_dhcp_lease_on_the_overlay() {
    let Some(tools) = k8s::tools(TEST, &[("dnsmasq", "dnsmasq-base"), ("busybox", "busybox")])
    else {
        return;
    };
    let (dnsmasq, busybox) = (tools[0].to_str().unwrap(), tools[1].to_str().unwrap());
    let allowed = vec![vec![], vec!["10.126.0.128/25".to_string()]];
    let Some((mut lab, e)) = k8s::lab_with_allowed(TEST, "10.126.0", &["s", "c"], &allowed) else {
        return;
    };
    let (s, c) = (e[0].clone(), e[1].clone());
    lab.wait_ping(&c, &s, Duration::from_secs(15));
    let c_mac = lab.edge_status(&c).unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_lowercase();

    let leases = lab.dir.join("dnsmasq.leases");
    let _server = k8s::spawn(
        &lab,
        "dnsmasq",
        s.ns(),
        &[
            dnsmasq,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--log-dhcp",
            "--user=root",
            &format!("--interface={}", s.tap),
            "--bind-interfaces",
            "--dhcp-range=10.126.0.150,10.126.0.160,255.255.255.0,10m",
            &format!("--dhcp-leasefile={}", leases.display()),
            &format!("--pid-file={}", lab.dir.join("dnsmasq.pid").display()),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));

    // The client's script adds the leased address to the TAP and notes it.
    let got = lab.dir.join("lease.txt");
    let script = lab.dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  echo \"$ip $serverid\" > {}\n;; esac\nexit 0\n",
            got.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before = k8s::source_mismatch(&lab, &s);
    let start = std::time::Instant::now();
    let out = exec_in(
        c.ns(),
        &[
            busybox,
            "udhcpc",
            "-i",
            &c.tap,
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "2",
            "-s",
            script.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let lease = std::fs::read_to_string(&got).unwrap_or_default();
    assert!(
        out.success() && !lease.is_empty(),
        "no lease: {out:#?}\ndnsmasq log:\n{}\ns status: {:?}",
        lab.log("dnsmasq"),
        lab.edge_status(&s).map(|v| v["drops"].clone())
    );
    let mut words = lease.split_whitespace();
    let (ip, server) = (
        words.next().unwrap().to_string(),
        words.next().unwrap_or("").to_string(),
    );
    println!(
        "[{TEST}] c leased {ip} from {server} in {:.2?}",
        start.elapsed()
    );
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip.starts_with("10.126.0.") && (150..=160).contains(&last),
        "{ip}"
    );
    assert_eq!(server, s.ip());
    assert_eq!(
        k8s::source_mismatch(&lab, &s),
        before,
        "the client's DHCP messages were dropped at s"
    );
    let table = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(
        table.to_lowercase().contains(&c_mac) && table.contains(&ip),
        "lease file: {table}"
    );

    // The leased address is c's own now: reachable from s, and usable as a source.
    let p = ping(s.ns(), &ip, 5);
    assert!(p.all_ok(), "s -> leased {ip}: {p:?}");
    let p = ping_with(c.ns(), &s.ip(), 5, &["-I", &ip]);
    assert!(p.all_ok(), "c from {ip} -> s: {p:?}");
    println!(
        "[{TEST}] s <-> {ip}: 5/5 both ways, avg {:.3} ms",
        p.avg_ms.unwrap_or(f64::NAN)
    );

    // Anything else from 0.0.0.0 is still refused: the same broadcast UDP from 0.0.0.0:68,
    // sent raw on c's TAP, to port 9 instead of 67.
    // Ethernet to broadcast; IPv4 (20 bytes, UDP, 0.0.0.0 -> 255.255.255.255); UDP 68 -> dport.
    let frame = |dport: &str| {
        format!(
            "ffffffffffff{}0800{}0044{dport}00080000",
            c_mac.replace(':', ""),
            "4500001c000000004011000000000000ffffffff"
        )
    };
    let send = |hex: String| {
        let script = format!(
            "import socket,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{}',0))\n\
             for _ in range(5):\n    s.send(bytes.fromhex('{hex}'))\n    time.sleep(0.02)\n",
            c.tap
        );
        let out = exec_in(c.ns(), &["python3", "-c", &script], Duration::from_secs(10));
        assert!(out.success(), "{out:#?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let before = k8s::source_mismatch(&lab, &s);
    send(frame("0009"));
    let after = k8s::source_mismatch(&lab, &s);
    println!("[{TEST}] 0.0.0.0:68 -> port 9, raw from c: s's source_mismatch {before} -> {after}");
    assert!(
        after >= before + 5,
        "0.0.0.0 to another port was not dropped ({before} -> {after})"
    );
    send(frame("0043"));
    assert_eq!(
        k8s::source_mismatch(&lab, &s),
        after,
        "0.0.0.0:68 -> 67 was dropped"
    );
    lab.assert_running();
}
