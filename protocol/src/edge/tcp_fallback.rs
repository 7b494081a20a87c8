//! When an edge tries its TCP fallback to a supernode, as a pure state machine.
//!
//! Some networks let an edge's outbound UDP reach nothing (a hotel, a strict office
//! firewall). A supernode that has not answered for a while although the edge keeps trying
//! ([`super::Edge::silent_supernodes`]) is then tried over TCP on the same port: the
//! core emits a command to connect, the shell connects on a helper thread (a connect can take
//! seconds) and reports the outcome; while connected, the shell sends that supernode's
//! datagrams over the connection, framed.
//!
//! The rules, which used to live in the edge's poll loop:
//! - silent supernodes are looked at every [`CHECK_INTERVAL`];
//! - a supernode is tried at most once per [`RETRY_INTERVAL`] (a connect in progress or one
//!   that failed is not repeated sooner), and never while a connection to it is up;
//! - a connection that closes makes the supernode eligible again (after the retry interval
//!   since the last try);
//! - a supernode removed by a reload loses its connection (the shell closes it, whatever
//!   state the connection is in).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often silent supernodes are looked at.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two connection attempts to one supernode.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// The fallback state of every supernode the edge has tried over TCP.
#[derive(Debug)]
pub(super) struct TcpFallback {
    next_check: Instant,
    /// When each supernode was last tried, and whether its connection is up.
    tried: HashMap<SocketAddr, Attempt>,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Instant,
    connected: bool,
}

impl TcpFallback {
    /// Nothing tried yet; the first check is due at `now`.
    pub(super) fn new(now: Instant) -> TcpFallback {
        TcpFallback {
            next_check: now,
            tried: HashMap::new(),
        }
    }

    /// True when the next check is due (so that the caller lists silent supernodes only
    /// then).
    pub(super) fn due(&self, now: Instant) -> bool {
        now >= self.next_check
    }

    /// At most every [`CHECK_INTERVAL`]: the supernodes among `silent` to connect to now.
    pub(super) fn poll(&mut self, now: Instant, silent: &[SocketAddr]) -> Vec<SocketAddr> {
        if !self.due(now) {
            return Vec::new();
        }
        self.next_check = now + CHECK_INTERVAL;
        let mut connect = Vec::new();
        for &addr in silent {
            let due = self.tried.get(&addr).is_none_or(|a| {
                !a.connected && now.saturating_duration_since(a.at) >= RETRY_INTERVAL
            });
            if due {
                self.tried.insert(
                    addr,
                    Attempt {
                        at: now,
                        connected: false,
                    },
                );
                connect.push(addr);
            }
        }
        connect
    }

    /// The shell's connection to `addr` is up.
    pub(super) fn connected(&mut self, addr: SocketAddr) {
        if let Some(a) = self.tried.get_mut(&addr) {
            a.connected = true;
        }
    }

    /// The shell's connection to `addr` failed or closed: it may be tried again once the
    /// retry interval since the last attempt has passed.
    pub(super) fn closed(&mut self, addr: SocketAddr) {
        if let Some(a) = self.tried.get_mut(&addr) {
            a.connected = false;
        }
    }

    /// `addr` is no longer one of our supernodes: its connection (if any) is to be closed.
    /// When it was last tried is kept, so that one removed and added again by two reloads is
    /// not tried sooner than [`RETRY_INTERVAL`] after its last attempt.
    pub(super) fn removed(&mut self, addr: SocketAddr) {
        self.closed(addr);
    }

    /// True while the shell reaches `addr` over TCP.
    pub(super) fn uses_tcp(&self, addr: SocketAddr) -> bool {
        self.tried.get(&addr).is_some_and(|a| a.connected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], port))
    }

    #[test]
    fn a_silent_supernode_is_tried_once_per_retry_interval() {
        let t0 = Instant::now();
        let mut f = TcpFallback::new(t0);
        assert_eq!(f.poll(t0, &[sn(1)]), vec![sn(1)]);
        // Checked at most once a second, and the attempt is not repeated for 10 s.
        assert!(f.poll(t0 + Duration::from_millis(500), &[sn(1)]).is_empty());
        for s in 1..10 {
            assert!(f.poll(t0 + Duration::from_secs(s), &[sn(1)]).is_empty());
        }
        // The connect failed: tried again once 10 s have passed.
        f.closed(sn(1));
        assert_eq!(f.poll(t0 + Duration::from_secs(10), &[sn(1)]), vec![sn(1)]);
    }

    #[test]
    fn a_connected_supernode_is_not_tried_again_until_its_connection_closes() {
        let t0 = Instant::now();
        let mut f = TcpFallback::new(t0);
        assert_eq!(f.poll(t0, &[sn(1), sn(2)]), vec![sn(1), sn(2)]);
        f.connected(sn(1));
        assert!(f.uses_tcp(sn(1)) && !f.uses_tcp(sn(2)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(f.poll(later, &[sn(1), sn(2)]), vec![sn(2)]);
        f.closed(sn(1));
        assert!(!f.uses_tcp(sn(1)));
        assert_eq!(
            f.poll(later + Duration::from_secs(1), &[sn(1)]),
            vec![sn(1)]
        );
        // Removed by a reload: no longer on TCP, and its last attempt still counts.
        f.connected(sn(1));
        f.removed(sn(1));
        assert!(!f.uses_tcp(sn(1)));
        let t = later + Duration::from_secs(2);
        assert!(
            f.poll(t, &[sn(1)]).is_empty(),
            "tried within 10 s of the last attempt"
        );
        assert_eq!(f.poll(t + Duration::from_secs(10), &[sn(1)]), vec![sn(1)]);
    }
}
