//! TCP fallback connections, as far as the core decides about them: an edge that cannot use
//! UDP reaches the supernode over TCP and registers every few seconds, so a connection that
//! stayed silent for [`TCP_IDLE`] is gone and the shell is told to close it.
//!
//! The shell owns the sockets. It reports [`Supernode::tcp_opened`] when it accepts a
//! connection and [`Supernode::tcp_closed`] when one breaks; every frame it reads goes to
//! [`Supernode::handle_udp`] with the connection's peer address as the source, which
//! refreshes it. [`Supernode::handle_timeout`] queues a [`Command::CloseTcp`] for each
//! connection idle for [`TCP_IDLE`]; the shell takes them with
//! [`Supernode::drain_commands`] after each `handle_timeout`. The connection is forgotten
//! here when the command is queued. A UDP datagram from the same address as a TCP
//! connection's peer counts as traffic on it: the shell sends replies to that address over
//! the connection, so the two are one source.

use super::Supernode;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A TCP fallback connection silent this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(120);
/// Most TCP fallback connections at once (the shell refuses more; the core watches at most
/// this many, and closes the longest idle if a newly opened one would exceed it).
pub const MAX_TCP: usize = 4096;

/// Something the shell must do for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Close the TCP fallback connection whose peer is this address: it sent nothing for
    /// [`TCP_IDLE`] (an edge behind a TCP fallback registers every few seconds).
    CloseTcp(SocketAddr),
    /// Persist an enrolment in the community's store (and count its token's use there). The
    /// shell writes it off the packet path (a background thread, coalescing bursts); the
    /// core already admits the key.
    SaveEnrolment(super::EnrolmentRecord),
}

/// The TCP fallback connections the shell holds, by peer address, with their last receive.
#[derive(Default)]
pub(super) struct TcpSources {
    last_rx: HashMap<SocketAddr, Instant>,
    commands: Vec<Command>,
}

impl TcpSources {
    fn opened(&mut self, now: Instant, addr: SocketAddr) {
        if !self.last_rx.contains_key(&addr) && self.last_rx.len() >= MAX_TCP {
            // Only if the shell missed a `tcp_closed`: make room by the longest idle.
            if let Some((&a, _)) = self.last_rx.iter().min_by_key(|(a, t)| (**t, **a)) {
                self.last_rx.remove(&a);
                self.commands.push(Command::CloseTcp(a));
            }
        }
        self.last_rx.insert(addr, now);
    }

    /// A datagram or frame from `src`: refreshes it if it is a TCP source.
    pub(super) fn received(&mut self, now: Instant, src: SocketAddr) {
        if self.last_rx.is_empty() {
            return;
        }
        if let Some(t) = self.last_rx.get_mut(&src) {
            *t = now;
        }
    }

    /// Queues a close for every connection idle for [`TCP_IDLE`], in address order.
    pub(super) fn expire(&mut self, now: Instant) {
        let mut idle: Vec<SocketAddr> = self
            .last_rx
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= TCP_IDLE)
            .map(|(a, _)| *a)
            .collect();
        idle.sort();
        for a in idle {
            self.last_rx.remove(&a);
            self.commands.push(Command::CloseTcp(a));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.last_rx.len()
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
    /// [`Supernode::handle_udp`] with `addr` as the source).
    pub fn tcp_opened(&mut self, now: Instant, addr: SocketAddr) {
        self.tcp.opened(now, addr);
    }

    /// The TCP fallback connection from `addr` is gone (broken, or closed by the peer).
    pub fn tcp_closed(&mut self, addr: SocketAddr) {
        self.tcp.last_rx.remove(&addr);
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
    /// `active` every five seconds, and returns the commands it gave.
    fn run(sn: &mut Supernode, from: Instant, secs: u64, active: SocketAddr) -> Vec<Command> {
        let mut out = Output::default();
        let mut got = Vec::new();
        for ms in (0..secs * 1000).step_by(500) {
            let now = from + Duration::from_millis(ms);
            if ms % 5000 == 0 {
                sn.handle_udp(now, active, &mut [0u8; 40], &mut out);
            }
            sn.handle_timeout(now, &mut out);
            got.extend(sn.drain_commands());
        }
        got
    }

    #[test]
    fn an_idle_tcp_source_is_closed_after_120_s_and_an_active_one_is_kept() {
        let t0 = Instant::now();
        let mut sn = one_member(t0);
        let (idle, active) = (at(40001), at(40002));
        sn.tcp_opened(t0, idle);
        sn.tcp_opened(t0, active);
        assert!(run(&mut sn, t0, 119, active).is_empty(), "not yet at 119 s");
        let t1 = t0 + Duration::from_secs(119);
        assert_eq!(run(&mut sn, t1, 2, active), vec![Command::CloseTcp(idle)]);
        let t2 = t1 + Duration::from_secs(2);
        assert!(
            run(&mut sn, t2, 600, active).is_empty(),
            "the active one stays"
        );
        assert_eq!(sn.tcp.len(), 1);
    }

    #[test]
    fn a_closed_connection_is_forgotten_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut sn = one_member(t0);
        sn.tcp_opened(t0, at(1));
        sn.tcp_closed(at(1));
        let later = t0 + Duration::from_secs(1);
        assert!(
            run(&mut sn, later, 200, at(2)).is_empty(),
            "closed: nothing to do"
        );
        // A shell that missed closures cannot grow the table past MAX_TCP: the longest
        // idle connection makes room.
        for i in 0..MAX_TCP as u16 {
            sn.tcp_opened(t0 + Duration::from_millis(u64::from(i)), at(10_000 + i));
        }
        sn.tcp_opened(t0 + Duration::from_secs(10), at(9));
        assert_eq!(sn.tcp.len(), MAX_TCP);
        let cmds: Vec<_> = sn.drain_commands().collect();
        assert_eq!(cmds, vec![Command::CloseTcp(at(10_000))]);
    }
}
