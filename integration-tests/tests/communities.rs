//! Required test 4: two communities on one supernode — even sharing one overlay network —
//! are isolated from each other, while members within each community reach each other.

use metalvpc_integration_tests::{lab::find_peer, ping, Community, Edge, EdgeOpts, Lab};
use std::time::Duration;

const TEST: &str = "communities_are_isolated";

#[test]
fn communities_are_isolated() {
    let Some(mut lab) = Lab::new(TEST) else {
        return;
    };
    // Both communities use 10.93.0.0/24; the addresses differ so that a leak would be
    // routable (with equal addresses a leak could not be told apart from a local answer).
    let red = vec![
        lab.add_edge(EdgeOpts::new("red-a", "red", "10.93.0.1/24")),
        lab.add_edge(EdgeOpts::new("red-b", "red", "10.93.0.2/24")),
    ];
    let blue = vec![
        lab.add_edge(EdgeOpts::new("blue-c", "blue", "10.93.0.3/24")),
        lab.add_edge(EdgeOpts::new("blue-d", "blue", "10.93.0.4/24")),
    ];
    lab.start_supernode(&[
        Community::new(
            "red",
            "10.93.0.0/24",
            red.iter().map(Edge::member).collect(),
        ),
        Community::new(
            "blue",
            "10.93.0.0/24",
            blue.iter().map(Edge::member).collect(),
        ),
    ]);
    let all: Vec<Edge> = red.iter().chain(&blue).cloned().collect();
    lab.start_edges(&all);

    for group in [&red, &blue] {
        lab.wait_ping(&group[0], &group[1], Duration::from_secs(15));
        let p = ping(group[1].ns(), &group[0].ip(), 5);
        assert!(
            p.all_ok(),
            "within community: {} -> {}: {p:?}",
            group[1].name,
            group[0].name
        );
        println!(
            "[{TEST}] {} -> {}: avg RTT {:.3} ms",
            group[1].name,
            group[0].name,
            p.avg_ms.unwrap_or(f64::NAN)
        );
    }
    for (x, y) in [
        (&red[0], &blue[0]),
        (&red[1], &blue[1]),
        (&blue[0], &red[0]),
        (&blue[1], &red[1]),
    ] {
        let p = ping(x.ns(), &y.ip(), 3);
        assert_eq!(
            p.received, 0,
            "across communities {} reached {}: {p:?}",
            x.name, y.name
        );
    }
    for (mine, other) in [(&red, &blue), (&blue, &red)] {
        for x in mine.iter() {
            let st = lab.edge_status(x).expect("status");
            for y in other.iter() {
                assert!(
                    find_peer(&st, &y.public_key).is_none(),
                    "{} lists {} of the other community: {st:#}",
                    x.name,
                    y.name
                );
            }
            let peers = st["peers"].as_array().map(|a| a.len()).unwrap_or(0);
            assert_eq!(
                peers, 1,
                "{} should list exactly its one community peer: {st:#}",
                x.name
            );
        }
    }
    println!("[{TEST}] no cross-community ping, no cross-community peers");
    lab.assert_running();
}
