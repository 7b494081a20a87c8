//! Enrolment in the simulator (issue 13, item 5): per-server tokens that expire or work a
//! given number of times, revocations that stick (a burned token, a quarantined address),
//! the per-source bound on new enrolments, and the store write handed to the shell.

use crate::control::{token_key, JoinToken, TOKEN_ID_LEN};
use crate::io::DropReason;
use crate::keys::PrivateKey;
use crate::sim::Net;
use crate::supernode::{Command, Enrolment, EnrolmentRecord, Token};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The wall clock the simulated supernode is told (seconds since the Unix epoch).
const UNIX: u64 = 1_700_000_000;

/// A token as the edge holds it and as the supernode's store keeps it.
fn token(n: u8, uses: u32, expires: Option<u64>) -> (JoinToken, Token) {
    let id = [n; TOKEN_ID_LEN];
    let key = token_key(format!("secret-of-token-{n}-0123456789").as_bytes());
    let t = Token {
        id,
        key,
        expires,
        uses,
        address: None,
    };
    (JoinToken { id, key }, t)
}

/// Community "prod" with member "a" at 10.0.0.1 (edge 0, registered) and `enrolment`.
fn community(enrolment: Enrolment) -> Net {
    let (mut net, keys) = Net::new(&[("prod", &[("a", [10, 0, 0, 1])])]);
    net.sn_cfg.communities[0].enrolment = Some(enrolment);
    restart(&mut net);
    net.add_edge("prod", &keys[0], [10, 0, 0, 1]);
    net.run(Duration::from_secs(2));
    net
}

fn restart(net: &mut Net) {
    net.restart_supernode();
    net.sn.set_wall_clock(net.now, UNIX);
}

/// A new server with a fresh key that enrols with `token` (or the secret `secret`).
fn newcomer(net: &mut Net, token: Option<&JoinToken>, secret: Option<&[u8]>) -> usize {
    let i = net.add_edge("prod", &PrivateKey::generate(), [0, 0, 0, 0]);
    if let Some(t) = token {
        net.edges[i].edge.set_join_token(t.clone());
    }
    if let Some(s) = secret {
        net.edges[i].edge.set_join_secret(s.to_vec());
    }
    i
}

fn error(net: &Net, i: usize) -> String {
    net.edges[i].edge.status(net.now).supernodes[0]
        .error
        .clone()
        .unwrap_or_default()
}

/// Edge `i` is not registered, and its status says `why`.
fn refused_with(net: &Net, i: usize, why: &str) {
    assert!(!net.edges[i].edge.is_registered());
    let err = error(net, i);
    assert!(err.contains(why), "{err}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What the shell does for `enrolled revoke` and the reload it triggers: the store forgets
/// the enrolment, refuses the key, quarantines its address and burns its token.
fn revoke(net: &mut Net, i: usize, token: Option<[u8; TOKEN_ID_LEN]>) {
    let key = net.edges[i].key.public_key();
    let address = net.edges[i].edge.address();
    net.reload(|cs| {
        let e = cs[0].enrolment.as_mut().unwrap();
        e.revoked.push(key);
        e.quarantined.push(address);
        if let Some(t) = e.tokens.iter_mut().find(|t| Some(t.id) == token) {
            t.uses = 0;
        }
    });
}

#[test]
fn a_revoked_server_cannot_come_back_with_a_fresh_key_and_its_address_is_not_reused() {
    // Port of the review's sr_revoked_enrollee_reenrols_with_a_fresh_key: with a token (here
    // one for five servers, as a fleet might use) the revoked server is out for good.
    let (t, stored) = token(1, 5, None);
    let mut e = Enrolment::new(None, "10.0.0.128/29".parse().unwrap());
    e.tokens.push(stored);
    let mut net = community(e);
    let r = newcomer(&mut net, Some(&t), None);
    net.run(Duration::from_secs(3));
    assert!(net.edges[r].edge.is_registered(), "{}", error(&net, r));
    let old = net.edges[r].edge.address();
    assert_eq!(old, ip("10.0.0.129"));
    revoke(&mut net, r, Some(t.id));
    net.run(Duration::from_secs(15));
    assert!(!net.edges[r].edge.is_registered(), "the revoked key is out");
    // The same server, a fresh key, the same token (it keeps it in its config): refused.
    let f = newcomer(&mut net, Some(&t), None);
    net.run(Duration::from_secs(15));
    assert!(!net.edges[f].edge.is_registered());
    let err = error(&net, f);
    assert!(
        err.contains("used up") && err.contains("enrolled token create"),
        "{err}"
    );
    // Its address is not handed out again: the next server gets another.
    let (u, stored) = token(2, 1, None);
    net.reload(|cs| cs[0].enrolment.as_mut().unwrap().tokens.push(stored));
    let n = newcomer(&mut net, Some(&u), None);
    net.run(Duration::from_secs(3));
    assert!(net.edges[n].edge.is_registered(), "{}", error(&net, n));
    assert_eq!(net.edges[n].edge.address(), ip("10.0.0.130"));
}

#[test]
fn with_a_shared_secret_a_revoked_server_comes_back_but_never_at_its_old_address() {
    // What a shared secret cannot prevent (docs/security.md says so, `check` warns): a fresh
    // key with the secret enrols again. But not at the revoked server's address.
    let secret = b"correct horse battery staple";
    let mut net = community(Enrolment::new(
        Some(secret.to_vec()),
        "10.0.0.128/29".parse().unwrap(),
    ));
    let r = newcomer(&mut net, None, Some(secret));
    net.run(Duration::from_secs(3));
    assert_eq!(net.edges[r].edge.address(), ip("10.0.0.129"));
    revoke(&mut net, r, None);
    net.run(Duration::from_secs(15));
    assert!(!net.edges[r].edge.is_registered());
    let err = error(&net, r);
    assert!(err.contains("was revoked"), "{err}");
    let f = newcomer(&mut net, None, Some(secret));
    net.run(Duration::from_secs(3));
    assert!(net.edges[f].edge.is_registered(), "{}", error(&net, f));
    assert_eq!(net.edges[f].edge.address(), ip("10.0.0.130"));
}

#[test]
fn an_expired_token_is_refused_and_the_edge_says_why() {
    let (live, stored_live) = token(1, 1, Some(UNIX + 3600));
    let (soon, stored_soon) = token(2, 1, Some(UNIX + 5));
    let mut e = Enrolment::new(None, "10.0.0.128/29".parse().unwrap());
    e.tokens.extend([stored_live, stored_soon]);
    let mut net = community(e);
    net.run(Duration::from_secs(6));
    let s = newcomer(&mut net, Some(&soon), None);
    let l = newcomer(&mut net, Some(&live), None);
    net.run(Duration::from_secs(3));
    assert!(!net.edges[s].edge.is_registered());
    let err = error(&net, s);
    assert!(err.contains("has expired"), "{err}");
    assert!(net.edges[l].edge.is_registered(), "{}", error(&net, l));
    // Without the wall clock a token with an expiry is refused, never taken as valid.
    let (t, stored) = token(3, 1, Some(UNIX + 3600));
    net.sn_cfg.communities[0]
        .enrolment
        .as_mut()
        .unwrap()
        .tokens
        .push(stored);
    net.restart_supernode();
    let n = newcomer(&mut net, Some(&t), None);
    net.run(Duration::from_secs(3));
    refused_with(&net, n, "does not know the time");
}

#[test]
fn a_one_use_token_admits_one_server_which_keeps_its_address() {
    let (t, stored) = token(1, 1, None);
    let mut e = Enrolment::new(None, "10.0.0.128/29".parse().unwrap());
    e.tokens.push(stored);
    let mut net = community(e);
    let first = newcomer(&mut net, Some(&t), None);
    net.run(Duration::from_secs(3));
    assert!(net.edges[first].edge.is_registered());
    let got = net.edges[first].edge.address();
    // The store write is the shell's, from a command (never on the packet path here).
    let saved: Vec<EnrolmentRecord> = net
        .sn
        .drain_commands()
        .filter_map(|c| match c {
            Command::SaveEnrolment(r) => Some(r),
            Command::CloseTcp(_) | Command::SaveMacs { .. } => None,
        })
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(
        (saved[0].address, saved[0].token, saved[0].key),
        (got, Some(t.id), net.edges[first].key.public_key())
    );
    let second = newcomer(&mut net, Some(&t), None);
    net.run(Duration::from_secs(3));
    assert!(!net.edges[second].edge.is_registered());
    assert!(error(&net, second).contains("used up"));
    // The enrolled server restarts (it still sends the token): it keeps its address.
    net.restart_edge(first);
    net.edges[first].edge.set_join_token(t.clone());
    net.run(Duration::from_secs(3));
    assert!(net.edges[first].edge.is_registered());
    assert_eq!(net.edges[first].edge.address(), got);
    // A wrong secret under a known id is refused, and spends nothing.
    let forged = JoinToken {
        id: t.id,
        key: token_key(b"a guess at the secret 0123456789"),
    };
    let g = newcomer(&mut net, Some(&forged), None);
    net.run(Duration::from_secs(3));
    refused_with(&net, g, "does not match");
}

#[test]
fn one_source_cannot_take_the_pool_in_a_burst() {
    let secret = b"correct horse battery staple";
    let mut net = community(Enrolment::new(
        Some(secret.to_vec()),
        "10.0.0.128/25".parse().unwrap(),
    ));
    // Eight servers behind one address (one holder of the secret, many keys).
    let mut all = Vec::new();
    for i in 0..8u16 {
        let e = newcomer(&mut net, None, Some(secret));
        net.edges[e].addr = SocketAddr::new(ip("198.18.0.99"), 40_000 + i);
        all.push(e);
    }
    net.run(Duration::from_secs(3));
    let registered = |net: &Net| {
        all.iter()
            .filter(|&&e| net.edges[e].edge.is_registered())
            .count()
    };
    assert_eq!(registered(&net), 4, "the burst from one source is 4");
    let held = all
        .iter()
        .find(|&&e| !net.edges[e].edge.is_registered())
        .unwrap();
    let err = error(&net, *held);
    assert!(
        err.contains("enrolment bound") && err.contains("try again"),
        "{err}"
    );
    let limited = net
        .sn
        .status(net.now)
        .drops
        .get(DropReason::EnrolmentLimited);
    assert!(limited >= 4, "{limited}");
    // Then one every 15 s: the other four within a minute and a bit (refused edges retry
    // every 10 s).
    net.run(Duration::from_secs(30));
    let mid = registered(&net);
    assert!((5..=7).contains(&mid), "{mid} after 33 s");
    println!("one source, 8 keys: 4 enrolled at once, {mid} after 33 s, {limited} refusals counted in the first 3 s");
    net.run(Duration::from_secs(45));
    assert_eq!(registered(&net), 8);
}
