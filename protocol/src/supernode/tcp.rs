//! TCP fallback connections, as far as the core decides about them: an edge that cannot use
//! UDP reaches the supernode over TCP and registers every few seconds. The core admits or
//! refuses each new connection and tells the shell which ones to close:
//!
//! * at most [`MAX_TCP_PER_SOURCE`] connections per source (an IPv4 address, or an IPv6 /64)
//!   and [`MAX_TCP`] in all; a connection over either limit is refused (counted as the drop
//!   `tcp_refused`), except that a full table makes room by closing its oldest connection
//!   that never authenticated;
//! * a connection that carried no authenticated packet within [`TCP_UNAUTHENTICATED`] of
//!   opening is closed (a handshake over TCP completes in one round trip);
//! * a connection whose last authenticated packet is [`TCP_IDLE`] old is closed. Only a
//!   packet that authenticated renews it (a completed handshake, a member's data or relay
//!   packet that opened under its session): junk, replays and refused handshakes do not.
//!
//! The shell owns the sockets. It asks [`Supernode::tcp_opened`] when it accepts a connection
//! (and closes it at once on `false`) and reports [`Supernode::tcp_closed`] when one breaks;
//! every frame it reads goes to [`Supernode::handle_udp`] with the connection's peer address
//! as the source. [`Supernode::handle_timeout`] (and `tcp_opened`, when it makes room) queue
//! a [`Command::CloseTcp`] for each connection to close; the shell takes them with
//! [`Supernode::drain_commands`]. The connection is forgotten here when the command is
//! queued. An authenticated UDP datagram from the same address as a TCP connection's peer
//! counts as traffic on it: the shell sends replies to that address over the connection, so
//! the two are one source.

use super::Supernode;
use crate::io::DropReason;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A TCP fallback connection with no authenticated packet for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(120);
/// A TCP fallback connection that has not carried one authenticated packet this long after
/// it opened is closed.
pub const TCP_UNAUTHENTICATED: Duration = Duration::from_secs(10);
/// Most TCP fallback connections at once.
pub const MAX_TCP: usize = 4096;
/// Most TCP fallback connections from one source: an IPv4 address, or an IPv6 /64 (an edge
/// needs one per supernode address; a few more cover NAT sharing and reconnects).
pub const MAX_TCP_PER_SOURCE: usize = 8;

/// Something the shell must do for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Close the TCP fallback connection whose peer is this address: it carried no
    /// authenticated packet for [`TCP_IDLE`] ([`TCP_UNAUTHENTICATED`] after opening), or it
    /// made room for a new connection in a full table.
    CloseTcp(SocketAddr),
    /// Persist an enrolment in the community's store (and count its token's use there). The
    /// shell writes it off the packet path (a background thread, coalescing bursts); the
    /// core already admits the key.
    SaveEnrolment(super::EnrolmentRecord),
    /// Keep these claims of MACs (other than keys' derived ones) for `community`, replacing
    /// what was kept before, and hand them back after a restart
    /// ([`Supernode::restore_macs`]): a MAC stays with its key while the key is offline and
    /// across restarts. At most one claim per key of the community.
    SaveMacs {
        /// The community's name.
        community: String,
        /// (owner, MAC), in key order.
        claims: Vec<(crate::keys::PublicKey, crate::keys::Mac)>,
    },
}

/// One connection the shell holds.
#[derive(Debug, Clone, Copy)]
struct Conn {
    opened: Instant,
    /// When its last authenticated packet arrived; None: never.
    last_auth: Option<Instant>,
}

impl Conn {
    fn due(&self, now: Instant) -> bool {
        match self.last_auth {
            None => now.saturating_duration_since(self.opened) >= TCP_UNAUTHENTICATED,
            Some(t) => now.saturating_duration_since(t) >= TCP_IDLE,
        }
    }
}

/// What the per-source limit counts by: an IPv4 address, an IPv6 /64.
pub fn tcp_source(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The TCP fallback connections the shell holds, by peer address.
#[derive(Default)]
pub(super) struct TcpSources {
    conns: HashMap<SocketAddr, Conn>,
    per_source: HashMap<IpAddr, usize>,
    commands: Vec<Command>,
}

impl TcpSources {
    /// Admits a new connection from `addr`, or refuses it (false).
    fn opened(&mut self, now: Instant, addr: SocketAddr) -> bool {
        if self.conns.contains_key(&addr) {
            // The shell missed a close: the same peer address is a new connection.
            self.forget(addr);
        }
        let source = tcp_source(addr);
        if self.per_source.get(&source).copied().unwrap_or(0) >= MAX_TCP_PER_SOURCE {
            return false;
        }
        if self.conns.len() >= MAX_TCP {
            // Make room by the oldest connection that never authenticated; a table full of
            // members' connections admits nobody new.
            let oldest = self
                .conns
                .iter()
                .filter(|(_, c)| c.last_auth.is_none())
                .min_by_key(|(a, c)| (c.opened, **a))
                .map(|(a, _)| *a);
            let Some(a) = oldest else { return false };
            self.forget(a);
            self.commands.push(Command::CloseTcp(a));
        }
        self.conns.insert(
            addr,
            Conn {
                opened: now,
                last_auth: None,
            },
        );
        *self.per_source.entry(source).or_insert(0) += 1;
        true
    }

    /// Removes `addr` from both tables.
    fn forget(&mut self, addr: SocketAddr) {
        if self.conns.remove(&addr).is_none() {
            return;
        }
        let source = tcp_source(addr);
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// A packet from `src` authenticated: renews its connection, if it is a TCP source.
    pub(super) fn authenticated(&mut self, now: Instant, src: SocketAddr) {
        // Called for every authenticated packet: no hashing while no edge uses TCP.
        if self.conns.is_empty() {
            return;
        }
        if let Some(c) = self.conns.get_mut(&src) {
            c.last_auth = Some(now);
        }
    }

    /// Queues a close for every connection that is due, in address order.
    pub(super) fn expire(&mut self, now: Instant) {
        if self.conns.is_empty() {
            return;
        }
        let mut due: Vec<SocketAddr> = self
            .conns
            .iter()
            .filter(|(_, c)| c.due(now))
            .map(|(a, _)| *a)
            .collect();
        due.sort();
        for a in due {
            self.forget(a);
            self.commands.push(Command::CloseTcp(a));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    pub(super) fn pending(&self) -> usize {
        self.commands.len()
    }

    /// Queues a command that is not about TCP (they share one queue, in order).
    pub(super) fn command(&mut self, c: Command) {
        self.commands.push(c);
    }
}

impl Supernode {
    /// The shell accepted a TCP fallback connection from `addr` (its frames come to
    /// [`Supernode::handle_udp`] with `addr` as the source). False: refused (over the
    /// per-source or the total limit, counted as `tcp_refused`); the shell closes it at once.
    /// May queue a [`Command::CloseTcp`] for a connection that made room.
    #[must_use]
    pub fn tcp_opened(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let ok = self.tcp.opened(now, addr);
        if !ok {
            self.drops.add(DropReason::TcpRefused);
        }
        ok
    }

    /// The TCP fallback connection from `addr` is gone (broken, or closed by the peer).
    pub fn tcp_closed(&mut self, addr: SocketAddr) {
        self.tcp.forget(addr);
    }

    /// Commands for the shell since the last call (see [`Command`]).
    pub fn drain_commands(&mut self) -> std::vec::Drain<'_, Command> {
        self.tcp.commands.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::one_member;
    use super::*;
    use crate::io::Output;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 50], port))
    }

    /// Steps the supernode's timers from `from` for `secs` seconds, feeding a junk frame from
    /// `junk` every second and counting an authenticated packet from `member` every five
    /// seconds, and returns the commands it gave.
    fn run(
        sn: &mut Supernode,
        from: Instant,
        secs: u64,
        member: SocketAddr,
        junk: SocketAddr,
    ) -> Vec<Command> {
        let mut out = Output::default();
        let mut got = Vec::new();
        for ms in (0..secs * 1000).step_by(500) {
            let now = from + Duration::from_millis(ms);
            if ms % 5000 == 0 {
                sn.tcp.authenticated(now, member);
            }
            if ms % 1000 == 0 {
                sn.handle_udp(now, junk, &mut [0u8; 40], &mut out);
                sn.handle_udp(now, junk, &mut [0u8; 3], &mut out);
            }
            sn.handle_timeout(now, &mut out);
            got.extend(sn.drain_commands());
        }
        got
    }

    #[test]
    fn a_tcp_connection_sending_only_junk_is_closed_after_10_s_and_an_authenticated_one_is_kept() {
        let t0 = Instant::now();
        let mut sn = one_member(t0);
        let (junk, member) = (at(40001), at(40002));
        assert!(sn.tcp_opened(t0, junk));
        assert!(sn.tcp_opened(t0, member));
        assert!(
            run(&mut sn, t0, 9, member, junk).is_empty(),
            "not yet at 9 s"
        );
        let t1 = t0 + Duration::from_secs(9);
        assert_eq!(
            run(&mut sn, t1, 2, member, junk),
            vec![Command::CloseTcp(junk)],
            "junk frames do not count as traffic"
        );
        let t2 = t1 + Duration::from_secs(2);
        assert!(
            run(&mut sn, t2, 600, member, at(9)).is_empty(),
            "the authenticated one stays"
        );
        assert_eq!(sn.tcp.len(), 1);
    }

    #[test]
    fn an_authenticated_tcp_connection_that_falls_silent_is_closed_after_120_s() {
        let t0 = Instant::now();
        let mut sn = one_member(t0);
        let (idle, other) = (at(40001), at(40002));
        assert!(sn.tcp_opened(t0, idle));
        sn.tcp.authenticated(t0 + Duration::from_secs(1), idle);
        let t1 = t0 + Duration::from_secs(1);
        assert!(run(&mut sn, t1, 119, other, at(9)).is_empty());
        let t2 = t1 + Duration::from_secs(119);
        assert_eq!(
            run(&mut sn, t2, 2, other, at(9)),
            vec![Command::CloseTcp(idle)]
        );
    }

    #[test]
    fn one_source_holds_at_most_8_tcp_connections() {
        let t0 = Instant::now();
        let mut sn = one_member(t0);
        for p in 0..MAX_TCP_PER_SOURCE as u16 {
            assert!(sn.tcp_opened(t0, at(1000 + p)));
        }
        assert!(
            !sn.tcp_opened(t0, at(2000)),
            "a ninth from the same address"
        );
        assert_eq!(sn.drops.get(DropReason::TcpRefused), 1);
        assert!(sn.tcp_opened(t0, SocketAddr::from(([198, 18, 0, 51], 2000))));
        // IPv6: one /64 is one source, another /64 another.
        let v6 = |net: u16, host: u16| -> SocketAddr {
            SocketAddr::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0, net, 0, 0, 0, host).into(),
                7000,
            )
        };
        for h in 0..MAX_TCP_PER_SOURCE as u16 {
            assert!(sn.tcp_opened(t0, v6(1, h)));
        }
        assert!(!sn.tcp_opened(t0, v6(1, 999)));
        assert!(sn.tcp_opened(t0, v6(2, 1)));
        // A closed connection frees its place.
        sn.tcp_closed(at(1000));
        assert!(sn.tcp_opened(t0, at(2000)));
        assert!(!sn.tcp_opened(t0, at(2001)));
    }

    #[test]
    fn a_full_table_makes_room_by_the_oldest_unauthenticated_connection() {
        let t0 = Instant::now();
        let mut sn = one_member(t0);
        let host = |i: usize, port: u16| -> SocketAddr {
            SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], port))
        };
        for i in 0..MAX_TCP {
            assert!(sn.tcp_opened(t0 + Duration::from_millis(i as u64), host(i, 1)));
            if i % 2 == 0 {
                sn.tcp.authenticated(t0, host(i, 1));
            }
        }
        assert_eq!(sn.tcp.len(), MAX_TCP);
        assert!(sn.tcp_opened(t0 + Duration::from_secs(5), at(9)));
        assert_eq!(sn.tcp.len(), MAX_TCP);
        let cmds: Vec<_> = sn.drain_commands().collect();
        assert_eq!(cmds, vec![Command::CloseTcp(host(1, 1))]);
        // A closed connection is forgotten.
        sn.tcp_closed(at(9));
        assert_eq!(sn.tcp.len(), MAX_TCP - 1);
    }
}
