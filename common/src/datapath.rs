//! Batched UDP for both daemons' data paths: many datagrams per system call in both directions.
//!
//! * Send: consecutive datagrams of the core's [`Output`] to one destination are contiguous
//!   in its arena and, for a bulk flow, of equal size; such a run goes out in one `sendmsg`
//!   with a `UDP_SEGMENT` control message (UDP GSO, Linux 4.18+): the kernel cuts it into
//!   datagrams after one trip through the stack. Anything else is sent one by one.
//! * Receive: with `UDP_GRO` (Linux 5.0+) the kernel hands over up to 64 KB of datagrams from
//!   one sender per `recvmsg`, with their size in a control message; we split them again.
//!
//! If the kernel refuses either option, we fall back to one datagram per call and say so once.

use crate::Transport;
use metalvpc_protocol::Output;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use tracing::warn;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's limit of segments per GSO send (UDP_MAX_SEGMENTS is 64 on older kernels).
const MAX_SEGMENTS: usize = 64;
/// Bytes per GSO send: the payload of one IP datagram at most.
const MAX_GSO_BYTES: usize = 65_000;

/// The batched UDP side of a daemon (edge or supernode).
pub struct Udp {
    fd: RawFd,
    v6: bool,
    gso: bool,
    gro: bool,
    rx: Vec<u8>,
    errors: u64,
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: an int option on a socket we own, with its correct length.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn to_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Splits `out.transmits[from..]` into the first run that can go out in one GSO send:
/// same destination, contiguous bytes, equal sizes (the last may be shorter). Returns the
/// end index of the run and the segment size.
pub fn gso_run(out: &Output, from: usize) -> (usize, usize) {
    let t = &out.transmits;
    let first = &t[from];
    let seg = first.range.len();
    let (mut end, mut bytes) = (from + 1, seg);
    while end < t.len() && end - from < MAX_SEGMENTS {
        let (prev, next) = (&t[end - 1], &t[end]);
        let len = next.range.len();
        if next.dst != first.dst
            || next.range.start != prev.range.end
            || len > seg
            || len == 0
            || bytes + len > MAX_GSO_BYTES
        {
            break;
        }
        end += 1;
        bytes += len;
        if len < seg {
            break; // a shorter datagram can only be the last of a run
        }
    }
    (end, seg)
}

/// The datagrams in one receive of `n` bytes whose GRO segment size is `seg` (`n` when the
/// kernel gave none; 0 counts as none): consecutive ranges of `seg` bytes, the last one
/// possibly shorter. An empty datagram is one empty range: it counts toward the receive bound
/// like any other (a flood of them cannot keep the loop receiving), and the core drops it as
/// malformed.
pub fn gro_segments(n: usize, seg: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let seg = if seg == 0 { n.max(1) } else { seg };
    let count = if n == 0 { 1 } else { n.div_ceil(seg) };
    (0..count).map(move |i| (i * seg).min(n)..(i.saturating_add(1).saturating_mul(seg)).min(n))
}

impl Udp {
    /// Wraps the transport's UDP socket and turns on GRO where the kernel has it.
    pub fn new(sock: &std::net::UdpSocket) -> Udp {
        let fd = sock.as_raw_fd();
        let off = std::env::var("METALVPC_OFFLOAD").is_ok_and(|v| v == "0");
        let gro = !off && setsockopt_int(fd, SOL_UDP, UDP_GRO, 1);
        Udp {
            fd,
            v6: sock.local_addr().is_ok_and(|a| a.is_ipv6()),
            gso: !off,
            gro,
            rx: vec![0u8; 65_536],
            errors: 0,
        }
    }

    /// For the start-up log line: which batching the kernel accepted.
    pub fn describe(&self) -> String {
        format!(
            "UDP GSO {}, GRO {}",
            if self.gso { "on" } else { "off" },
            if self.gro { "on" } else { "off" }
        )
    }

    /// Receives up to `max` datagrams (a GRO batch counts as its datagrams), handing each to
    /// `f` with its (canonical) source. Returns how many were handed over.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(SocketAddr, &mut [u8])) -> usize {
        let mut count = 0;
        while count < max {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut cmsg = [0u64; 8];
            let mut iov = libc::iovec {
                iov_base: self.rx.as_mut_ptr().cast(),
                iov_len: self.rx.len(),
            };
            // SAFETY: all-zero is a valid msghdr; the pointers are set just below.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut ss as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cmsg);
            // SAFETY: msg points at live buffers of the stated sizes for the whole call.
            let n = unsafe { libc::recvmsg(self.fd, &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                break;
            }
            let n = n as usize;
            let Some(src) = from_sockaddr(&ss) else {
                count += 1; // it took a turn all the same
                continue;
            };
            let src = crate::canonical(src);
            let mut seg = n;
            // SAFETY: walking the control messages the kernel wrote into `cmsg`, with the
            // libc macros, within msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                        let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                        if v > 0 {
                            seg = v as usize;
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            for r in gro_segments(n, seg) {
                f(src, &mut self.rx[r]);
                count += 1;
            }
        }
        count
    }

    /// Sends every datagram of `out` (to TCP-fallback destinations over their connection),
    /// in as few system calls as the kernel allows.
    pub fn send_all(&mut self, transport: &mut Transport, out: &Output) {
        let mut i = 0;
        while i < out.transmits.len() {
            let t = &out.transmits[i];
            if let Some(conn) = transport.tcp.get_mut(&t.dst) {
                // Rare (a supernode reached over TCP): its framed connection instead.
                if !conn.send(out.bytes(t)) {
                    warn!("TCP connection with {} broke", t.dst);
                    transport.drop_tcp(t.dst);
                }
                i += 1;
                continue;
            }
            let (end, seg) = if self.gso {
                gso_run(out, i)
            } else {
                (i + 1, 0)
            };
            let bytes = &out.buf[t.range.start..out.transmits[end - 1].range.end];
            let dst = crate::for_socket(self.v6, t.dst);
            if end - i > 1 {
                match self.send(dst, bytes, Some(seg as u16)) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                        ) =>
                    {
                        warn!("UDP GSO refused by the kernel ({e}); sending one datagram per call");
                        self.gso = false;
                        continue; // resend this run one by one
                    }
                    Err(e) => self.count_error(t.dst, e),
                }
            } else if let Err(e) = self.send(dst, bytes, None) {
                self.count_error(t.dst, e);
            }
            i = end;
        }
    }

    fn count_error(&mut self, dst: SocketAddr, e: std::io::Error) {
        self.errors += 1;
        if self.errors.is_power_of_two() {
            warn!(
                "UDP send to {dst} failed: {e} ({} failures so far)",
                self.errors
            );
        }
    }

    fn send(&self, dst: SocketAddr, bytes: &[u8], seg: Option<u16>) -> std::io::Result<()> {
        let (mut ss, len) = to_sockaddr(dst);
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut cmsg = [0u64; 4];
        // SAFETY: all-zero is a valid msghdr; the pointers are set just below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut ss as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(seg) = seg {
            msg.msg_control = cmsg.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure size computation.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: the control buffer is large enough for one cmsg with 2 data bytes
            // (checked: CMSG_SPACE(2) = 24 <= 32) and is 8-byte aligned.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            }
        }
        // SAFETY: msg points at live buffers for the whole call; sendmsg only reads them.
        let n = unsafe { libc::sendmsg(self.fd, &msg, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_protocol::Transmit;

    fn out_with(sizes: &[(usize, u8)]) -> Output {
        let mut out = Output::default();
        for &(n, d) in sizes {
            let start = out.buf.len();
            out.buf.resize(start + n, d);
            out.transmit_from(start, SocketAddr::from(([198, 18, 0, d], 7655)));
        }
        out
    }

    #[test]
    fn runs_group_equal_contiguous_datagrams_to_one_destination() {
        let out = out_with(&[
            (1400, 1),
            (1400, 1),
            (1400, 1),
            (600, 1),
            (1400, 1),
            (1400, 2),
        ]);
        assert_eq!(gso_run(&out, 0), (4, 1400)); // the shorter one ends the run
        assert_eq!(gso_run(&out, 4), (5, 1400)); // next has another destination
        assert_eq!(gso_run(&out, 5), (6, 1400));
        // A larger datagram cannot follow; neither can one whose bytes are elsewhere.
        let out = out_with(&[(100, 1), (200, 1)]);
        assert_eq!(gso_run(&out, 0), (1, 100));
        let mut out = out_with(&[(100, 1), (100, 1)]);
        out.transmits[1] = Transmit {
            dst: out.transmits[1].dst,
            range: 0..100,
        };
        assert_eq!(gso_run(&out, 0), (1, 100));
        // At most MAX_SEGMENTS and MAX_GSO_BYTES per run.
        let out = out_with(&[(100, 1); 100]);
        assert_eq!(gso_run(&out, 0), (MAX_SEGMENTS, 100));
        let out = out_with(&[(1400, 1); 60]);
        assert_eq!(gso_run(&out, 0).0, MAX_GSO_BYTES / 1400);
    }

    #[test]
    fn gso_and_gro_carry_every_datagram_over_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let mut ua = Udp::new(&a);
        let mut ub = Udp::new(&b);
        let dst = b.local_addr().unwrap();
        let mut out = Output::default();
        for i in 0..40u8 {
            let start = out.buf.len();
            let n = if i == 39 { 333 } else { 1200 };
            out.buf.extend(std::iter::repeat_n(i, n));
            out.transmit_from(start, dst);
        }
        let mut transport = Transport::new(a.try_clone().unwrap()).unwrap();
        ua.send_all(&mut transport, &out);
        let mut got: Vec<(usize, u8)> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            ub.recv_batch(64, |src, d| {
                assert_eq!(src, a.local_addr().unwrap());
                assert!(d.iter().all(|x| *x == d[0]));
                got.push((d.len(), d[0]));
            });
        }
        let want: Vec<(usize, u8)> = (0..40u8)
            .map(|i| (if i == 39 { 333 } else { 1200 }, i))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_flood_of_empty_datagrams_counts_toward_the_receive_bound() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ub = Udp::new(&b);
        // 150: what the default receive buffer holds of them (each costs a buffer's overhead).
        for _ in 0..150 {
            a.send_to(&[], b.local_addr().unwrap()).unwrap();
        }
        a.send_to(b"last", b.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // One batch takes its 64 and returns: the loop gets to its timers and management
        // between batches, however long the flood lasts.
        let mut seen = Vec::new();
        let n = ub.recv_batch(64, |_, d| seen.push(d.len()));
        assert_eq!((n, seen.len()), (64, 64));
        assert!(
            seen.iter().all(|&l| l == 0),
            "handed over as empty: the core drops them"
        );
        let mut rest = 0;
        while ub.recv_batch(64, |_, d| rest += usize::from(!d.is_empty())) > 0 {}
        assert_eq!(rest, 1, "the datagram after the flood arrives");
    }

    #[test]
    fn gro_segments_cover_the_receive_exactly() {
        let all = |n, seg| gro_segments(n, seg).collect::<Vec<_>>();
        assert_eq!(all(0, 0), vec![0..0]);
        assert_eq!(all(0, 1400), vec![0..0]);
        assert_eq!(all(100, 0), vec![0..100]);
        assert_eq!(all(100, 100), vec![0..100]);
        assert_eq!(all(250, 100), vec![0..100, 100..200, 200..250]);
        assert_eq!(all(100, 5000), vec![0..100]);
    }
}
