//! What one member can make the supernode send: return-path proof before its endpoint moves,
//! per-member budgets for the requests that are answered with more than they cost (member
//! lists, signed lists, lookups), a bounded fan-out of its changes to the other members, and
//! the filter on the local endpoints it announces. The figures are in `docs/security.md`
//! ("Amplification and rate limits").

use super::table::{Candidate, NodeRef};
use super::Supernode;
use crate::control::Control;
use crate::io::{DropReason, Output};
use crate::ratelimit::TokenBucket;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Whole member lists (`SyncRequest`) a member gets: 3 at once, then one per 2 s.
pub const LIST_BURST: u32 = 3;
/// See [`LIST_BURST`].
pub const LIST_PERIOD: Duration = Duration::from_secs(2);
/// Signed memberships (`SignedListRequest`) a member gets: 2 at once, then one per 10 s.
pub const SIGNED_BURST: u32 = 2;
/// See [`SIGNED_BURST`].
pub const SIGNED_PERIOD: Duration = Duration::from_secs(10);
/// Lookups a member gets answered: 32 at once, then 16 per second (each may also send the
/// member it found one `PeerNotify`).
pub const LOOKUP_BURST: u32 = 32;
/// See [`LOOKUP_BURST`].
pub const LOOKUP_PERIOD: Duration = Duration::from_millis(62);
/// Path challenges sent for a member (to a new source): 2 at once, then one per second.
pub const CHALLENGE_BURST: u32 = 2;
/// See [`CHALLENGE_BURST`].
pub const CHALLENGE_PERIOD: Duration = Duration::from_secs(1);
/// A challenge to the same source is repeated after this long without an answer.
pub const CHALLENGE_RETRY: Duration = Duration::from_secs(1);
/// Changes of a member pushed to every other member: 3 at once, then one per 5 s; a change
/// beyond that is pushed when the budget allows (members that ask meanwhile get it in the
/// whole list).
pub const ANNOUNCE_BURST: u32 = 3;
/// See [`ANNOUNCE_BURST`].
pub const ANNOUNCE_PERIOD: Duration = Duration::from_secs(5);
/// Most local endpoints of a member the supernode keeps and passes on.
pub const MAX_LOCALS: usize = 4;

/// A member's budgets (full at first; they survive re-registrations and reloads).
#[derive(Debug, Clone)]
pub(super) struct Budgets {
    pub lists: TokenBucket,
    pub signed: TokenBucket,
    pub lookups: TokenBucket,
    pub challenges: TokenBucket,
    pub announces: TokenBucket,
    /// A change is waiting for the announce budget.
    pub announce_pending: bool,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            lists: TokenBucket::new(LIST_BURST, LIST_PERIOD),
            signed: TokenBucket::new(SIGNED_BURST, SIGNED_PERIOD),
            lookups: TokenBucket::new(LOOKUP_BURST, LOOKUP_PERIOD),
            challenges: TokenBucket::new(CHALLENGE_BURST, CHALLENGE_PERIOD),
            announces: TokenBucket::new(ANNOUNCE_BURST, ANNOUNCE_PERIOD),
            announce_pending: false,
        }
    }
}

/// True if a member may announce `e` as a local endpoint: a unicast address with a port, not
/// loopback, link-local, multicast or broadcast, and not inside the community network (that
/// would be an overlay address, tunnelled into itself).
fn usable_local(network: &IpNet, e: &SocketAddr) -> bool {
    let ip = e.ip();
    let bad = match ip {
        IpAddr::V4(a) => a.is_broadcast() || a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    e.port() != 0
        && !ip.is_unspecified()
        && !ip.is_loopback()
        && !ip.is_multicast()
        && !bad
        && !network.contains(&ip)
}

/// The local endpoints the supernode keeps of what a member announced: the usable ones,
/// at most [`MAX_LOCALS`], without repeats.
pub(super) fn filter_locals(network: &IpNet, announced: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut kept: Vec<SocketAddr> = Vec::new();
    for e in announced {
        if kept.len() < MAX_LOCALS && usable_local(network, &e) && !kept.contains(&e) {
            kept.push(e);
        }
    }
    kept
}

impl Supernode {
    /// An authenticated packet of `len` bytes from member `r` arrived from `src`: refresh
    /// it, and if `src` is not its proven endpoint, challenge `src` (within the member's
    /// budget, with a datagram no larger than the one that came). The endpoint moves only
    /// when the answer comes back from `src` ([`Supernode::on_path_response`]).
    pub(super) fn seen(
        &mut self,
        now: Instant,
        r: NodeRef,
        src: SocketAddr,
        len: usize,
        out: &mut Output,
    ) {
        // Authenticated: the only kind of packet that keeps a TCP fallback connection open.
        self.tcp.authenticated(now, src);
        let (reg, _, _) = self.table.node_mut(r).parts();
        let Some(reg) = reg else { return };
        reg.last_seen = now;
        if reg.endpoint == src {
            return;
        }
        let nonce = self.rng.next_u64();
        let (reg, budget, traffic) = self.table.node_mut(r).parts();
        let Some(reg) = reg else { return };
        let asked = reg.candidate.is_some_and(|c| {
            c.addr == src && now.saturating_duration_since(c.sent) < CHALLENGE_RETRY
        });
        if asked || !budget.challenges.ready(now) {
            return;
        }
        let msg = Control::PathChallenge { nonce }.encode();
        if reg.send_to(&msg, src, len, out) {
            budget.challenges.allow(now);
            reg.candidate = Some(Candidate {
                addr: src,
                nonce,
                sent: now,
            });
            traffic.tx_packets += 1;
        }
    }

    /// A `PathResponse` from member `r` arrived from `src`: if it answers the challenge sent
    /// to `src`, that is the member's endpoint from now on (roaming, NAT rebinding), and the
    /// other members are told (within the announce budget).
    pub(super) fn on_path_response(
        &mut self,
        now: Instant,
        r: NodeRef,
        src: SocketAddr,
        nonce: u64,
        out: &mut Output,
    ) {
        let Some(reg) = self.table.node_mut(r).reg_mut() else {
            return;
        };
        let proven = reg
            .candidate
            .is_some_and(|c| c.addr == src && c.nonce == nonce);
        if !proven {
            return;
        }
        reg.candidate = None;
        if reg.endpoint != src {
            reg.endpoint = src;
            self.announce(now, r, None, out);
        }
    }

    /// Member `r` changed (registered, moved, restarted, new MAC or local endpoints): push
    /// the change to every registered member except `skip` if the member's announce budget
    /// allows, else when it does ([`Supernode::flush_announces`]).
    pub(super) fn announce(
        &mut self,
        now: Instant,
        r: NodeRef,
        skip: Option<NodeRef>,
        out: &mut Output,
    ) {
        let node = self.table.node_mut(r);
        if node.reg().is_none() {
            return;
        }
        if !node.budget.announces.allow(now) {
            node.budget.announce_pending = true;
            return;
        }
        node.budget.announce_pending = false;
        self.table.community_mut(r.community).epoch += 1;
        self.push_member(r, skip, out);
    }

    /// Pushes the changes that waited for their member's announce budget.
    pub(super) fn flush_announces(&mut self, now: Instant, out: &mut Output) {
        for c in self.table.community_ids() {
            for r in self.table.members(c) {
                let node = self.table.node_mut(r);
                if node.budget.announce_pending && node.budget.announces.ready(now) {
                    self.announce(now, r, None, out);
                }
            }
        }
    }

    /// Takes a token from one of member `r`'s request budgets; counts a drop if it is spent.
    pub(super) fn within_budget(
        &mut self,
        now: Instant,
        r: NodeRef,
        pick: fn(&mut Budgets) -> &mut TokenBucket,
    ) -> bool {
        let ok = pick(&mut self.table.node_mut(r).budget).allow(now);
        if !ok {
            self.drops.add(DropReason::RateLimited);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_local_endpoints_are_filtered_and_bounded() {
        let net: IpNet = "10.0.0.0/16".parse().unwrap();
        let e = |s: &str| s.parse::<SocketAddr>().unwrap();
        let announced = vec![
            e("0.0.0.0:7655"),
            e("127.0.0.1:7655"),
            e("224.0.0.1:7655"),
            e("255.255.255.255:7655"),
            e("169.254.1.1:7655"),
            e("198.18.5.1:0"),
            e("10.0.3.4:7655"),
            e("[::1]:7655"),
            e("[fe80::1]:7655"),
            e("[ff02::1]:7655"),
            e("[::]:7655"),
            e("198.18.5.1:7655"),
            e("198.18.5.1:7655"),
            e("192.168.1.5:7655"),
            e("[fd00::5]:7655"),
            e("172.16.0.9:7655"),
            e("172.16.0.10:7655"),
        ];
        assert_eq!(
            filter_locals(&net, announced),
            vec![
                e("198.18.5.1:7655"),
                e("192.168.1.5:7655"),
                e("[fd00::5]:7655"),
                e("172.16.0.9:7655"),
            ]
        );
    }
}
