//! The TCP fallback transport: when an edge gets no answer from a supernode over UDP (outbound
//! UDP blocked), it connects to the same port over TCP and exchanges the very same packets,
//! each prefixed with its length (u16, big-endian). The protocol core does not know the
//! difference: the shells map the supernode's (or the edge's) address to the connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// Most bytes waiting to be written before packets are dropped (like a full UDP buffer).
const MAX_WBUF: usize = 1 << 20;
/// Most bytes of incomplete frames held.
const MAX_RBUF: usize = 1 << 18;

/// One framed connection, non-blocking.
pub struct FramedTcp {
    stream: TcpStream,
    /// The other end.
    pub peer: SocketAddr,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// When the last complete frame arrived.
    pub last_rx: Instant,
    /// Packets dropped because the connection could not keep up.
    pub dropped: u64,
}

impl FramedTcp {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> std::io::Result<FramedTcp> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(FramedTcp {
            stream,
            peer: crate::canonical(peer),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            last_rx: Instant::now(),
            dropped: 0,
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// True while bytes wait to be written (poll for writability).
    pub fn wants_write(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Reads what is available and hands each complete packet to `f`. Returns false when the
    /// connection is finished: closed, broken, or sending something that is not our framing.
    pub fn read_frames(&mut self, mut f: impl FnMut(&mut [u8])) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if self.rbuf.len() + n > MAX_RBUF {
                        return false;
                    }
                    self.rbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let mut at = 0;
        while self.rbuf.len() - at >= 2 {
            let len = usize::from(u16::from_be_bytes([self.rbuf[at], self.rbuf[at + 1]]));
            if len == 0 {
                return false;
            }
            if self.rbuf.len() - at - 2 < len {
                break;
            }
            f(&mut self.rbuf[at + 2..at + 2 + len]);
            self.last_rx = Instant::now();
            at += 2 + len;
        }
        self.rbuf.drain(..at);
        true
    }

    /// Queues one packet and writes what the socket takes. Returns false when the connection
    /// broke. A packet that does not fit the write buffer is dropped and counted.
    pub fn send(&mut self, pkt: &[u8]) -> bool {
        if pkt.is_empty()
            || pkt.len() > usize::from(u16::MAX)
            || self.wbuf.len() + pkt.len() + 2 > MAX_WBUF
        {
            self.dropped += 1;
            return true;
        }
        self.wbuf
            .extend_from_slice(&(pkt.len() as u16).to_be_bytes());
        self.wbuf.extend_from_slice(pkt);
        self.flush()
    }

    /// Writes buffered bytes. Returns false when the connection broke.
    pub fn flush(&mut self) -> bool {
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Where the daemons send their datagrams: the UDP socket, except to an address reached
/// over a TCP fallback connection.
pub struct Transport {
    /// The UDP socket.
    pub udp: std::net::UdpSocket,
    /// TCP connections by the address the core knows the other end by.
    pub tcp: std::collections::HashMap<SocketAddr, FramedTcp>,
    /// Connections that finished or broke since [`Transport::take_closed`] (the loop tells
    /// the core, which decides what happens next).
    closed: Vec<SocketAddr>,
}

impl Transport {
    /// Wraps the bound UDP socket.
    pub fn new(udp: std::net::UdpSocket) -> std::io::Result<Transport> {
        Ok(Transport {
            udp,
            tcp: Default::default(),
            closed: Vec::new(),
        })
    }

    /// Drops the connection with `addr` because it finished or broke, and notes it for
    /// [`Transport::take_closed`].
    pub fn drop_tcp(&mut self, addr: SocketAddr) {
        if self.tcp.remove(&addr).is_some() {
            self.closed.push(addr);
        }
    }

    /// The connections that finished or broke since the last call.
    pub fn take_closed(&mut self) -> std::vec::Drain<'_, SocketAddr> {
        self.closed.drain(..)
    }

    /// Reads every complete packet from connection `addr` into `f`, flushes what waits to be
    /// written, and drops the connection when it is finished.
    pub fn service_tcp(&mut self, addr: SocketAddr, readable: bool, f: impl FnMut(&mut [u8])) {
        let Some(conn) = self.tcp.get_mut(&addr) else {
            return;
        };
        let alive = (!readable || conn.read_frames(f)) && conn.flush();
        if !alive {
            tracing::info!("TCP connection with {addr} closed");
            self.drop_tcp(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn frames_round_trip_and_garbage_closes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let (s, peer) = l.accept().unwrap();
        let mut a = FramedTcp::new(c, addr).unwrap();
        let mut b = FramedTcp::new(s, peer).unwrap();
        for i in 1..=50u8 {
            assert!(a.send(&vec![i; usize::from(i) * 20]));
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 50 && Instant::now() < deadline {
            assert!(b.read_frames(|p| got.push(p.to_vec())));
            a.flush();
        }
        assert_eq!(got.len(), 50);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, p)| p.len() == (i + 1) * 20 && p[0] == (i + 1) as u8));
        // A zero length is not our framing: the connection is finished.
        let mut raw = a.stream.try_clone().unwrap();
        raw.write_all(&[0, 0]).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut alive = true;
        while alive && Instant::now() < deadline {
            alive = b.read_frames(|_| {});
        }
        assert!(!alive);
    }
}
