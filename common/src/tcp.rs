//! The TCP fallback transport: when an edge gets no answer from a supernode over UDP (outbound
//! UDP blocked), it connects to the same port over TCP and exchanges the very same packets,
//! each prefixed with its length (u16, big-endian). The protocol core does not know the
//! difference: the shells map the supernode's (or the edge's) address to the connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// Most bytes waiting to be written to one connection before packets to it are dropped and
/// counted (like a full UDP buffer): the kernel's socket buffer comes first, this is what
/// does not fit there.
pub const MAX_WBUF: usize = 256 << 10;
/// The longest frame (its length is a u16): a connection never holds more than one
/// incomplete frame and its 2-byte header unparsed.
pub const MAX_FRAME: usize = u16::MAX as usize;
/// Bytes read from one connection per wake, so that a busy connection does not starve the
/// others (the rest stays in the kernel's buffer, and the socket stays readable).
const READ_BUDGET: usize = 256 << 10;
/// Capacity a buffer keeps once it is empty again; a burst's larger allocation is freed.
const KEEP_CAPACITY: usize = 16 << 10;

/// The length-prefixed framing, parsed as bytes arrive: complete frames are handed over as
/// they are found (straight from the bytes just read), and only an incomplete frame at the
/// end of a read is kept, so at most `2 + MAX_FRAME` bytes are held.
#[derive(Default)]
pub struct FrameReader {
    partial: Vec<u8>,
}

/// A zero-length frame: not our framing (the connection is finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFraming;

impl FrameReader {
    /// Bytes of an incomplete frame held.
    pub fn held(&self) -> usize {
        self.partial.len()
    }

    /// Bytes allocated for them.
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// Parses `chunk`, the next bytes of the stream: each complete frame's packet goes to
    /// `f`, an incomplete one at the end is kept for the next call.
    pub fn feed(
        &mut self,
        mut chunk: &mut [u8],
        f: &mut impl FnMut(&mut [u8]),
    ) -> Result<(), NotFraming> {
        if !self.partial.is_empty() {
            if self.partial.len() < 2 {
                let take = (2 - self.partial.len()).min(chunk.len());
                self.partial.extend_from_slice(&chunk[..take]);
                chunk = &mut std::mem::take(&mut chunk)[take..];
                if self.partial.len() < 2 {
                    return Ok(());
                }
            }
            let len = usize::from(u16::from_be_bytes([self.partial[0], self.partial[1]]));
            if len == 0 {
                return Err(NotFraming);
            }
            let take = (2 + len - self.partial.len()).min(chunk.len());
            self.partial.reserve_exact(2 + len - self.partial.len());
            self.partial.extend_from_slice(&chunk[..take]);
            chunk = &mut std::mem::take(&mut chunk)[take..];
            if self.partial.len() < 2 + len {
                return Ok(());
            }
            f(&mut self.partial[2..]);
            self.partial.clear();
            if self.partial.capacity() > KEEP_CAPACITY {
                self.partial = Vec::new();
            }
        }
        while chunk.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([chunk[0], chunk[1]]));
            if len == 0 {
                return Err(NotFraming);
            }
            if chunk.len() < 2 + len {
                break;
            }
            let (frame, rest) = std::mem::take(&mut chunk).split_at_mut(2 + len);
            f(&mut frame[2..]);
            chunk = rest;
        }
        if !chunk.is_empty() {
            if chunk.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([chunk[0], chunk[1]]));
                self.partial.reserve_exact(2 + len);
            }
            self.partial.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// The framing parsed the simple way, for tests and fuzz targets to hold [`FrameReader`]
/// against: the packets of a whole `stream` before its first zero length, and whether one
/// came.
pub fn parse_whole(stream: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let (mut frames, mut at) = (Vec::new(), 0);
    while stream.len() - at >= 2 {
        let len = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
        if len == 0 {
            return (frames, true);
        }
        if stream.len() - at - 2 < len {
            break;
        }
        frames.push(stream[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
    (frames, false)
}

/// One framed connection, non-blocking.
pub struct FramedTcp {
    stream: TcpStream,
    /// The other end.
    pub peer: SocketAddr,
    reader: FrameReader,
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
            reader: FrameReader::default(),
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

    /// Bytes held for this connection: an incomplete frame read, and what waits to be written
    /// (allocated capacity, not just length).
    pub fn buffered(&self) -> usize {
        self.reader.capacity() + self.wbuf.capacity()
    }

    /// Reads what is available (up to a budget per call; the rest on the next wake) and hands
    /// each complete packet to `f` as it is parsed. Returns false when the connection is
    /// finished: closed, broken, or sending something that is not our framing.
    pub fn read_frames(&mut self, mut f: impl FnMut(&mut [u8])) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        let last_rx = &mut self.last_rx;
        let mut deliver = |p: &mut [u8]| {
            *last_rx = Instant::now();
            f(p)
        };
        while budget > 0 {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    if self.reader.feed(&mut buf[..n], &mut deliver).is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
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
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = Vec::new();
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

    /// A socket pair over loopback with a large receive buffer on the accepted side (so a
    /// burst lands in it whole): (the connecting stream, the accepted one framed).
    fn pair() -> (TcpStream, FramedTcp) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let v: libc::c_int = 4 << 20;
        // SAFETY: setting an int option on our socket (inherited by accepted sockets).
        unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let (s, peer) = l.accept().unwrap();
        (c, FramedTcp::new(s, peer).unwrap())
    }

    /// The review's scenario (sr_a_burst_of_valid_frames_over_256k_closes_the_connection):
    /// a legitimate peer whose well-formed packets pile up faster than one poll round reads
    /// them (1.6 MB readable at once) keeps its connection, and every packet is handed over.
    #[test]
    fn a_burst_of_valid_frames_over_256k_is_processed_and_the_connection_stays() {
        let (mut c, mut b) = pair();
        let mut burst = Vec::new();
        for i in 0..800u32 {
            burst.extend_from_slice(&1000u16.to_be_bytes());
            burst.extend_from_slice(&[i as u8; 1000]);
        }
        let t = std::thread::spawn(move || {
            c.write_all(&burst).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            c
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut got = Vec::new();
        let mut most_held = 0;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 800 && Instant::now() < deadline {
            let alive = b.read_frames(|p| got.push((p.len(), p[0])));
            assert!(alive, "closed after {} frames", got.len());
            most_held = most_held.max(b.buffered());
        }
        let _ = t.join();
        assert_eq!(got.len(), 800);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &(len, first))| len == 1000 && first == i as u8));
        assert!(
            most_held <= 2 * (2 + 1000),
            "held {most_held} bytes between reads"
        );
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_at_most_one_frame_is_held() {
        let mut stream = Vec::new();
        for len in [1usize, 2, 3, 700, MAX_FRAME, 5, 40_000] {
            stream.extend_from_slice(&(len as u16).to_be_bytes());
            stream.extend((0..len).map(|i| (i * 7 + len) as u8));
        }
        stream.extend_from_slice(&[0x01]); // half a header at the end
        let (want, _) = parse_whole(&stream);
        for step in [1usize, 2, 3, 1000, 16 * 1024, 70_000, stream.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for chunk in stream.clone().chunks_mut(step) {
                r.feed(chunk, &mut |p| got.push(p.to_vec())).unwrap();
                assert!(r.held() <= 2 + MAX_FRAME, "step {step}: {}", r.held());
                assert!(r.capacity() <= 2 * (2 + MAX_FRAME), "step {step}");
            }
            assert_eq!(got, want, "step {step}");
            assert_eq!(r.held(), 1);
        }
        // A zero length is not our framing, wherever it falls.
        let mut bad = stream[..stream.len() - 1].to_vec();
        bad.extend_from_slice(&[0, 0, 0, 1, 9]);
        for step in [1usize, 3, bad.len()] {
            let mut r = FrameReader::default();
            let mut n = 0;
            let ended = bad
                .clone()
                .chunks_mut(step)
                .any(|c| r.feed(c, &mut |_| n += 1).is_err());
            assert!(ended && n == want.len(), "step {step}");
        }
    }

    #[test]
    fn a_peer_that_never_reads_gets_its_packets_dropped_not_unbounded_memory() {
        let (c, mut b) = pair();
        for _ in 0..20_000 {
            assert!(b.send(&[7u8; 1000]), "still connected");
        }
        assert!(b.wbuf.len() <= MAX_WBUF, "{} queued", b.wbuf.len());
        assert!(b.dropped > 0);
        // Once it reads, the queue drains and its memory is given back.
        let mut c = c;
        c.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while b.wants_write() && Instant::now() < deadline {
            let _ = c.read(&mut sink);
            assert!(b.flush());
        }
        assert!(!b.wants_write());
        assert!(b.buffered() <= KEEP_CAPACITY, "{}", b.buffered());
    }
}
