//! Packet capture with tcpdump inside a namespace, and a minimal pcap reader.

use crate::exec::exec_in;
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `tcpdump -w` inside a namespace; stopped (and reaped) by [`Capture::stop`]
/// or on drop.
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Starts capturing on `iface` in `ns` into `path` (BPF `filter`, may be empty), and
    /// returns once tcpdump reports it is listening, so no early packet is missed.
    pub fn start(ns: &str, iface: &str, filter: &str, path: &Path) -> Result<Capture> {
        let log = path.with_extension("tcpdump.log");
        let logf = std::fs::File::create(&log)?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "0",
            "-w",
        ])
        .arg(path);
        // tcpdump drops privileges to user "tcpdump" by default; stay root so it can write
        // into the test's directory.
        cmd.args(["-Z", "root"]);
        if !filter.is_empty() {
            cmd.args(filter.split_whitespace());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("spawning tcpdump")?;
        crate::cleanup::register_pid(child.id());
        let mut cap = Capture {
            child: Some(child),
            path: path.to_path_buf(),
            log,
        };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&cap.log).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(cap);
            }
            if let Some(st) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("tcpdump in {ns} exited ({st}): {text}");
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("tcpdump in {ns} did not start within 10 s: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the captured frames.
    pub fn stop(mut self) -> Result<Vec<Frame>> {
        // Let in-flight packets reach the file before stopping.
        std::thread::sleep(Duration::from_millis(300));
        self.halt();
        read_pcap(&self.path)
    }

    fn halt(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            crate::cleanup::unregister_pid(c.id());
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One captured link-layer frame (Ethernet: every interface the tests capture on is a
/// veth or a TAP).
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Vec<u8>,
}

/// A UDP datagram found in a [`Frame`].
#[derive(Debug, Clone, Copy)]
pub struct Udp<'a> {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub payload: &'a [u8],
}

impl Frame {
    /// The IPv4 packet inside an Ethernet frame, if any (no VLAN tags in our labs).
    pub fn ipv4(&self) -> Option<&[u8]> {
        let d = &self.data;
        if d.len() < 14 + 20 || d[12..14] != [0x08, 0x00] {
            return None;
        }
        Some(&d[14..])
    }

    /// The UDP datagram inside, if this is an unfragmented IPv4/UDP frame.
    pub fn udp(&self) -> Option<Udp<'_>> {
        let ip = self.ipv4()?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < ihl + 8 {
            return None;
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 {
            return None; // a fragment: not used by our tests
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let u = &ip[ihl..total];
        if u.len() < 8 {
            return None;
        }
        Some(Udp {
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            sport: u16::from_be_bytes([u[0], u[1]]),
            dport: u16::from_be_bytes([u[2], u[3]]),
            payload: &u[8..],
        })
    }
}

/// Reads a classic pcap file (either byte order, micro- or nanosecond timestamps).
pub fn read_pcap(path: &Path) -> Result<Vec<Frame>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_pcap(&b).with_context(|| format!("parsing {}", path.display()))
}

/// Parses classic pcap bytes into frames (only Ethernet link type is accepted).
pub fn parse_pcap(b: &[u8]) -> Result<Vec<Frame>> {
    if b.len() < 24 {
        bail!("short pcap file ({} bytes)", b.len());
    }
    let magic = [b[0], b[1], b[2], b[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {magic:02x?})"),
    };
    let u32at = |i: usize| -> u32 {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32at(20);
    if linktype != 1 {
        bail!("unsupported pcap link type {linktype} (want 1, Ethernet)");
    }
    let mut frames = Vec::new();
    let mut i = 24;
    // A record header is 16 bytes; tcpdump killed mid-write may leave a partial last record.
    while i + 16 <= b.len() {
        let incl = u32at(i + 8) as usize;
        let start = i + 16;
        if start + incl > b.len() {
            break;
        }
        frames.push(Frame {
            data: b[start..start + incl].to_vec(),
        });
        i = start + incl;
    }
    Ok(frames)
}

/// Sends one raw link-layer frame out of `iface` in namespace `ns` (AF_PACKET), byte for
/// byte — used to replay a captured packet exactly as it was first sent.
pub fn send_raw_frame(ns: &str, iface: &str, frame: &[u8]) -> Result<()> {
    let iface = std::ffi::CString::new(iface)?;
    let frame = frame.to_vec();
    crate::netns::in_netns(ns, move || -> Result<()> {
        // SAFETY: plain socket syscalls with valid, correctly sized arguments.
        unsafe {
            let idx = libc::if_nametoindex(iface.as_ptr());
            if idx == 0 {
                bail!("if_nametoindex: {}", std::io::Error::last_os_error());
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = idx as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != frame.len() as isize {
                bail!("sendto: {err}");
            }
        }
        Ok(())
    })?
}

/// Recomputes the UDP checksum of an Ethernet/IPv4/UDP frame in place.
///
/// Needed before replaying a frame captured on the *sending* host: with checksum offload
/// (veth default) tcpdump records the packet before the checksum is filled in, and the
/// receiving kernel would drop the replayed copy as corrupt. The UDP payload itself is
/// left byte-for-byte identical.
pub fn fix_udp_checksum(frame: &mut [u8]) -> bool {
    let Some(u) = (Frame {
        data: frame.to_vec(),
    })
    .udp()
    .map(|u| (u.src, u.dst, u.payload.len())) else {
        return false;
    };
    let (src, dst, plen) = u;
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let start = 14 + ihl;
    let udp_len = 8 + plen;
    frame[start + 6] = 0;
    frame[start + 7] = 0;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(&frame[start..start + udp_len]);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 {
        c = 0xffff;
    }
    frame[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
    true
}

/// Frames in which `marker` occurs anywhere (headers included).
pub fn frames_containing<'a>(frames: &'a [Frame], marker: &[u8]) -> Vec<&'a Frame> {
    frames
        .iter()
        .filter(|f| crate::contains_bytes(&f.data, marker))
        .collect()
}

/// Runs `tcpdump -r` on a capture (for human-readable diagnostics in failure messages).
pub fn describe(ns: &str, path: &Path, max: usize) -> String {
    let out = exec_in(
        ns,
        &[
            "tcpdump",
            "-n",
            "-r",
            &path.to_string_lossy(),
            "-c",
            &max.to_string(),
        ],
        Duration::from_secs(10),
    );
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_udp_in_pcap() {
        // pcap header (LE, usec, Ethernet) + one record holding Ethernet/IPv4/UDP "hi".
        let mut b = vec![
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0,
            0,
        ];
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        f.extend([
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 11, 198, 18, 0, 12,
        ]);
        f.extend([0x1d, 0xe7, 0x1d, 0xe7, 0, 10, 0, 0, b'h', b'i']);
        let len = f.len() as u32;
        b.extend([0u8; 8]);
        b.extend(len.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(&f);
        let frames = parse_pcap(&b).unwrap();
        assert_eq!(frames.len(), 1);
        let u = frames[0].udp().unwrap();
        assert_eq!(
            (u.src, u.sport, u.dst, u.dport),
            (
                "198.18.0.11".parse().unwrap(),
                7655,
                "198.18.0.12".parse().unwrap(),
                7655
            )
        );
        assert_eq!(u.payload, b"hi");
        assert_eq!(frames_containing(&frames, b"hi").len(), 1);
        let mut f2 = frames[0].data.clone();
        assert!(fix_udp_checksum(&mut f2));
        // Verifying: the one's-complement sum over pseudo-header + UDP must be 0xffff.
        let udp = &f2[34..];
        let mut sum: u32 = 0;
        for c in [&[198u8, 18, 0, 11, 198, 18, 0, 12, 0, 17, 0, 10][..], udp]
            .concat()
            .chunks(2)
        {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
