//! The daemon skeleton both binaries run: one poll loop over the UDP socket, the daemon's own
//! descriptor (the edge's TAP device, the supernode's TCP listener), the TCP fallback
//! connections, the wake-up pipe (signals, management requests, helper threads) and the core's
//! timers; reload on SIGHUP; systemd readiness, status and watchdog; management requests
//! answered on the loop thread; clean shutdown.
//!
//! # How a daemon plugs in
//! A daemon is a value that implements [`Daemon`]: it owns its protocol core and whatever is
//! its own (TAP device, configuration, fallback state), and answers one handler per source.
//! [`Shell`] owns what both daemons share ([`Io`]: the [`Transport`], the batched
//! [`datapath::Udp`], the core's [`Output`], the [`ReloadStats`]; plus the [`Waker`], the
//! management channel and the poll set), and [`Shell::run`] drives the loop:
//!
//! ```text
//! let shell = Shell::new(udp_socket, &cfg.management, token)?; // waker, management, transport
//! let mut daemon = MyDaemon { core, .. };                   // impl Daemon
//! shell.run(Some(own_fd), &mut daemon)                      // until SIGINT/SIGTERM
//! ```
//!
//! A trait rather than closures registered per descriptor (boringtun's `device/` registers
//! `register_udp_handler`, `register_iface_handler`, `register_timers`): every handler works
//! on the same core, so registered closures would each need it mutably (boringtun's take a
//! shared `&Device` and lock per packet; we lock nothing). One `&mut impl Daemon` passed to
//! the loop gives each handler the core in turn, and the compiler checks that a daemon
//! answers every source. `Shell::run` is generic, so the packet handlers (`handle_udp`, the
//! TAP loop) are called directly and can be inlined: no dynamic dispatch, per packet or
//! per wake.
//!
//! # One wake, in order
//! Poll slots are the same for both daemons: 0 the waker, 1 UDP, 2 the daemon's own
//! descriptor (given to [`Shell::run`] once: it stays the same for the whole run; without
//! one the slot is empty), 3.. one per TCP connection (with write interest while it has
//! bytes queued). After the poll:
//! 1. the waker's pipe is drained; a SIGHUP since the last wake runs [`Daemon::reload`]
//!    between systemd's `RELOADING=1` and `READY=1`;
//! 2. UDP: up to 8 batches of 64 datagrams (GRO hands over many per call) into
//!    [`Core::handle_udp`], [`Daemon::flush`] after each batch;
//! 3. the daemon's descriptor, if readable: [`Daemon::on_source`];
//! 4. each ready TCP connection: complete packets into [`Core::handle_udp`], queued bytes
//!    written, a finished connection dropped;
//! 5. connections that finished or broke are reported to the core ([`Core::tcp_closed`]);
//!    then [`Daemon::housekeeping`] (the edge takes over TCP connections its helper threads
//!    opened);
//! 6. the core's timers ([`Core::handle_timeout`]), then [`Daemon::flush`];
//! 7. [`Daemon::events`]: logging what happened and carrying out the core's commands (the
//!    edge: connect or close a TCP fallback, keep the signed membership, configure an
//!    assigned address; the supernode: close an idle TCP connection);
//! 8. management requests, each answered by [`Daemon::answer`];
//! 9. systemd: `READY=1` once [`Daemon::systemd_state`] says so, `STATUS=` and watchdog pings.
//!
//! The poll waits no longer than the core's next timer (`poll_timeout`) or the next watchdog
//! ping. On SIGINT or SIGTERM the loop ends: `STOPPING=1`, [`Daemon::stopping`], and a Unix
//! management socket is removed.
//!
//! The loop allocates nothing per wake once warm: the poll set and the list of TCP
//! connections polled are refilled in place.

use crate::poll::PollSet;
use crate::{datapath, serve_management, MgmtAddr, MgmtRequest, MgmtToken, ReloadStats, Transport};
use crate::{WakeHandle, Waker};
use anyhow::Result;
use metalvpc_protocol::Output;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::time::Instant;

/// Poll slots, the same for both daemons: the waker's pipe first, then the UDP socket, the
/// daemon's own descriptor, and from `TCP` on the TCP connections.
const WAKER: usize = 0;
const UDP: usize = WAKER + 1;
const SOURCE: usize = UDP + 1;
const TCP: usize = SOURCE + 1;
/// Datagrams per UDP batch, and batches per wake: up to 512 datagrams, so timers and
/// management still get their turn under load.
const UDP_BATCH: usize = 64;
const UDP_BATCHES: usize = 512 / UDP_BATCH;

/// The sans-IO entry points of a protocol core that the loop drives. The edge's and the
/// supernode's cores have them with the same signatures; the impls below forward.
pub trait Core {
    /// When the core's next timer is due.
    fn poll_timeout(&self) -> Instant;
    /// One datagram (or TCP-framed packet) from `src`.
    fn handle_udp(&mut self, now: Instant, src: SocketAddr, pkt: &mut [u8], out: &mut Output);
    /// The core's timers.
    fn handle_timeout(&mut self, now: Instant, out: &mut Output);
    /// A TCP fallback connection with `addr` finished or broke.
    fn tcp_closed(&mut self, addr: SocketAddr);
}

macro_rules! core_forwards {
    ($($ty:ty),*) => {$(
        impl Core for $ty {
            #[inline]
            fn poll_timeout(&self) -> Instant {
                <$ty>::poll_timeout(self)
            }
            #[inline]
            fn handle_udp(&mut self, now: Instant, src: SocketAddr, pkt: &mut [u8], out: &mut Output) {
                <$ty>::handle_udp(self, now, src, pkt, out)
            }
            #[inline]
            fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
                <$ty>::handle_timeout(self, now, out)
            }
            fn tcp_closed(&mut self, addr: SocketAddr) {
                <$ty>::tcp_closed(self, addr)
            }
        }
    )*};
}
core_forwards!(
    metalvpc_protocol::edge::Edge,
    metalvpc_protocol::supernode::Supernode
);

/// What a daemon answers: its core and one handler per source. Called on the loop thread
/// only, in the order the module doc gives.
pub trait Daemon {
    /// The protocol core.
    type Core: Core;
    /// The core, for the loop's UDP, TCP and timer work.
    fn core(&mut self) -> &mut Self::Core;
    /// The daemon's descriptor (given to [`Shell::run`]) is readable.
    fn on_source(&mut self, io: &mut Io);
    /// Writes what the core produced: by default the datagrams ([`Io::send`]); the edge
    /// writes its TAP frames first.
    fn flush(&self, io: &mut Io) {
        io.send();
    }
    /// Once per wake, after the TCP connections were serviced.
    fn housekeeping(&mut self, _io: &mut Io) {}
    /// SIGHUP: re-read the config (record the outcome in `io.reloads`).
    fn reload(&mut self, io: &mut Io);
    /// Once per wake, after the timers: log the core's events and carry out its commands
    /// (the core decides; the shell acts).
    fn events(&mut self, io: &mut Io);
    /// A management request (`/status`, `/metrics`).
    fn answer(&self, req: MgmtRequest, io: &Io);
    /// What systemd is told: (ready?, the status line).
    fn systemd_state(&self) -> (bool, String);
    /// The loop ended (SIGINT/SIGTERM): the last log line.
    fn stopping(&self);
}

/// What the loop and the handlers share: where datagrams go and what the core produced.
pub struct Io {
    /// The UDP socket and the TCP fallback connections.
    pub transport: Transport,
    /// Batched UDP (GRO in, GSO out) on the transport's socket.
    pub udp: datapath::Udp,
    /// The core's output, written by [`Daemon::flush`].
    pub out: Output,
    /// Reloads done and refused, for `status` and `/metrics`.
    pub reloads: ReloadStats,
    wake: WakeHandle,
}

impl Io {
    /// Sends the datagrams of `out` and clears it (frames, if any, must be written first).
    pub fn send(&mut self) {
        self.udp.send_all(&mut self.transport, &self.out);
        self.out.clear();
    }

    /// A handle a helper thread uses to wake the loop.
    pub fn wake_handle(&self) -> WakeHandle {
        self.wake
    }
}

/// The loop's owner: [`Io`], the waker, the management channel and the poll set.
pub struct Shell {
    io: Io,
    waker: Waker,
    mgmt: mpsc::Receiver<MgmtRequest>,
    management: MgmtAddr,
    poll: PollSet,
    /// The TCP connections polled this wake, in slot order from [`TCP`].
    tcp: Vec<SocketAddr>,
}

impl Shell {
    /// Installs the signal handlers and the waker, starts the management server on
    /// `management` (TCP requests must carry `token`, if given), and wraps the bound UDP
    /// socket (turning on GRO where the kernel has it).
    pub fn new(
        udp: std::net::UdpSocket,
        management: &MgmtAddr,
        token: Option<MgmtToken>,
    ) -> Result<Shell> {
        let waker = Waker::install()?;
        let mgmt = serve_management(management, token, waker.handle())?;
        let transport = Transport::new(udp)?;
        let udp = datapath::Udp::new(&transport.udp);
        Ok(Shell {
            io: Io {
                transport,
                udp,
                out: Output::default(),
                reloads: ReloadStats::default(),
                wake: waker.handle(),
            },
            waker,
            mgmt,
            management: management.clone(),
            poll: PollSet::default(),
            tcp: Vec::new(),
        })
    }

    /// The shared state, before the loop runs (e.g. for `io().udp.describe()`).
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// Runs the loop until SIGINT or SIGTERM, then shuts down cleanly. `source` is the
    /// daemon's own descriptor (the edge's TAP device, the supernode's TCP listener), polled
    /// for reading in slot 2 for the whole run; it must stay open until `run` returns.
    pub fn run<D: Daemon>(mut self, source: Option<RawFd>, d: &mut D) -> Result<()> {
        let mut sd = crate::systemd::Service::from_env();
        let io = &mut self.io;
        while !self.waker.stopping() {
            let timeout = sd.cap_timeout(
                d.core()
                    .poll_timeout()
                    .saturating_duration_since(Instant::now()),
            );
            self.poll.clear();
            self.poll.push(self.waker.fd(), false);
            self.poll.push(io.transport.udp.as_raw_fd(), false);
            self.poll.push(source.unwrap_or(-1), false);
            self.tcp.clear();
            for (addr, conn) in &io.transport.tcp {
                self.tcp.push(*addr);
                self.poll.push(conn.fd(), conn.wants_write());
            }
            self.poll.wait(timeout);
            if self.poll.readable(WAKER) {
                self.waker.drain();
            }
            if self.waker.take_reload() {
                sd.reloading();
                d.reload(io);
                sd.reloaded();
            }
            if self.poll.readable(UDP) {
                for _ in 0..UDP_BATCHES {
                    let now = Instant::now();
                    let core = d.core();
                    let n = io.udp.recv_batch(UDP_BATCH, |src, pkt| {
                        core.handle_udp(now, src, pkt, &mut io.out)
                    });
                    d.flush(io);
                    if n < UDP_BATCH {
                        break;
                    }
                }
            }
            if self.poll.readable(SOURCE) {
                d.on_source(io);
            }
            for (i, addr) in self.tcp.iter().enumerate() {
                let (r, w) = (self.poll.readable(TCP + i), self.poll.writable(TCP + i));
                if r || w {
                    let core = d.core();
                    io.transport.service_tcp(*addr, r, |p| {
                        core.handle_udp(Instant::now(), *addr, p, &mut io.out)
                    });
                }
            }
            // Connections that finished or broke (reading, writing or sending): the core
            // decides what follows (the edge may try again, the supernode forgets it).
            let core = d.core();
            for addr in io.transport.take_closed() {
                core.tcp_closed(addr);
            }
            d.housekeeping(io);
            d.core().handle_timeout(Instant::now(), &mut io.out);
            d.flush(io);
            d.events(io);
            while let Ok(req) = self.mgmt.try_recv() {
                d.answer(req, io);
            }
            sd.tick(|| d.systemd_state());
        }
        sd.stopping();
        d.stopping();
        if let MgmtAddr::Unix(p) = &self.management {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

/// A binary's `main` once its command line is parsed: the one-shot commands get the default
/// SIGPIPE back ([`crate::restore_sigpipe`]; not `run`, a daemon), `cmd` runs, and an error
/// is printed as `<name>: error: …` with its causes, exiting with status 1.
pub fn main(name: &str, daemon: bool, cmd: impl FnOnce() -> Result<()>) {
    if !daemon {
        crate::restore_sigpipe();
    }
    if let Err(e) = cmd() {
        eprintln!("{name}: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core that echoes every datagram to its sender.
    #[derive(Default)]
    struct Echo {
        handled: usize,
    }

    impl Core for Echo {
        fn poll_timeout(&self) -> Instant {
            Instant::now() + std::time::Duration::from_secs(3600)
        }
        fn handle_udp(&mut self, _: Instant, src: SocketAddr, pkt: &mut [u8], out: &mut Output) {
            self.handled += 1;
            let start = out.buf.len();
            out.buf.extend_from_slice(pkt);
            out.transmit_from(start, src);
        }
        fn handle_timeout(&mut self, _: Instant, _: &mut Output) {}
        fn tcp_closed(&mut self, _: SocketAddr) {}
    }

    #[derive(Default)]
    struct EchoDaemon {
        core: Echo,
        wakes: usize,
        stopped: std::cell::Cell<bool>,
    }

    impl Daemon for EchoDaemon {
        type Core = Echo;
        fn core(&mut self) -> &mut Echo {
            &mut self.core
        }
        fn on_source(&mut self, _: &mut Io) {
            unreachable!("no descriptor of its own");
        }
        fn flush(&self, io: &mut Io) {
            assert!(io.out.frames.is_empty());
            io.send();
        }
        fn reload(&mut self, _: &mut Io) {}
        fn events(&mut self, _: &mut Io) {
            self.wakes += 1;
        }
        fn answer(&self, req: MgmtRequest, _: &Io) {
            let handled = self.core.handled;
            req.answer(
                || serde_json::json!({ "handled": handled }),
                |_| String::new(),
            );
        }
        fn systemd_state(&self) -> (bool, String) {
            (true, String::new())
        }
        fn stopping(&self) {
            self.stopped.set(true);
        }
    }

    #[test]
    fn the_loop_feeds_the_core_answers_management_and_cleans_up_on_sigterm() {
        let dir = std::env::temp_dir().join(format!("mvpc-daemon-{}", std::process::id()));
        let path = dir.join("mgmt.sock");
        let management = MgmtAddr::Unix(path.clone());
        let udp = crate::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = udp.local_addr().unwrap();
        let shell = Shell::new(udp, &management, None).unwrap();
        let client = std::thread::spawn(move || {
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            c.send_to(b"ping", addr).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"ping"[..], addr));
            let body =
                crate::query_management(&management, "/status", std::path::Path::new("t.toml"))
                    .unwrap();
            // SAFETY: kill(2) on our own process with a signal whose handler Waker installed.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            body
        });
        let mut d = EchoDaemon::default();
        shell.run(None, &mut d).unwrap();
        let body = client.join().unwrap();
        assert!(body.contains("\"handled\":1"), "{body}");
        assert_eq!(d.core.handled, 1);
        assert!(d.wakes >= 1 && d.stopped.get());
        assert!(
            !path.exists(),
            "the management socket is removed at shutdown"
        );
        let _ = std::fs::remove_dir(&dir);
    }
}
