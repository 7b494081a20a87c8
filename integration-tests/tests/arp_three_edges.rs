//! Required test 2: supernode + 3 edges; every pair pings, and ARP resolves through the
//! overlay: each edge's neighbour table holds its peers' overlay addresses with the MACs
//! the peers report in their own status.

use metalvpc_integration_tests::{exec_in, ping, Lab};
use std::time::Duration;

const TEST: &str = "three_edges_ping_and_arp";

#[test]
fn three_edges_ping_and_arp() {
    let Some((mut lab, e)) = Lab::one_community(TEST, "10.96.0", &["a", "b", "c"]) else {
        return;
    };

    let macs: Vec<String> = e
        .iter()
        .map(|x| {
            let st = lab.edge_status(x).expect("status");
            st["mac"]
                .as_str()
                .unwrap_or_else(|| panic!("status of {} has no mac: {st:#}", x.name))
                .to_lowercase()
        })
        .collect();

    for (i, x) in e.iter().enumerate() {
        for (j, y) in e.iter().enumerate() {
            if i == j {
                continue;
            }
            lab.wait_ping(x, y, Duration::from_secs(15));
            let p = ping(x.ns(), &y.ip(), 5);
            assert!(p.all_ok(), "ping {} -> {}: {p:?}", x.name, y.name);
            println!(
                "[{TEST}] ping {} -> {}: avg RTT {:.3} ms",
                x.name,
                y.name,
                p.avg_ms.unwrap_or(f64::NAN)
            );

            // The neighbour entry was learnt over the TAP, i.e. ARP crossed the overlay.
            let out = exec_in(
                x.ns(),
                &["ip", "neigh", "show", &y.ip(), "dev", &x.tap],
                Duration::from_secs(5),
            );
            let line = out.stdout.to_lowercase();
            let lladdr = line
                .split_whitespace()
                .skip_while(|w| *w != "lladdr")
                .nth(1)
                .unwrap_or("");
            assert_eq!(
                lladdr,
                macs[j],
                "{}'s neighbour entry for {} ({}): {:?}",
                x.name,
                y.name,
                y.ip(),
                out.stdout
            );
            println!("[{TEST}] {} resolved {} -> {}", x.name, y.ip(), lladdr);

            // And the edge's own view of the peer agrees.
            let peer = lab
                .peer_entry(x, y)
                .unwrap_or_else(|| panic!("{} does not list {}", x.name, y.name));
            assert_eq!(
                peer["mac"].as_str().map(str::to_lowercase).as_deref(),
                Some(macs[j].as_str()),
                "{peer:#}"
            );
            let addr = peer["address"]
                .as_str()
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("");
            assert_eq!(addr, y.ip(), "{peer:#}");
        }
    }
    lab.assert_running();
}
