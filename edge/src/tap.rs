//! The TAP device, created and configured with raw ioctls (no `ip` commands, no netlink
//! crate): TUNSETIFF to create it, then SIOCSIFHWADDR / SIOCSIFMTU / SIOCSIFADDR /
//! SIOCSIFNETMASK / SIOCSIFFLAGS on an AF_INET socket. The device is not persistent: it goes
//! away when the daemon exits, and comes back configured on the next start.
//!
//! Offloads: the device is opened with `IFF_VNET_HDR` and told (`TUNSETOFFLOAD`) that we
//! accept partial checksums and TCP segmentation (TSO4/TSO6). The kernel then hands over up
//! to 64 KB of one TCP flow per read, with a virtio-net header in front, instead of one
//! 1.4 KB frame per read, and skips computing checksums; `offload.rs` segments and finishes
//! them. Writes carry a virtio-net header too. `METALVPC_OFFLOAD=0` in the environment turns
//! all of it off (for comparisons and as an escape hatch).

use crate::offload::{self, VnetHdr};
use anyhow::{bail, Result};
use metalvpc_protocol::Mac;
use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// An open TAP device.
pub struct Tap {
    fd: OwnedFd,
    /// Kernel name of the device.
    pub name: String,
    /// Frames carry a virtio-net header (`IFF_VNET_HDR`) and TSO/checksum offloads are on.
    pub offload: bool,
}

/// Buffers for reading from the TAP: one read (virtio-net header and up to 64 KB), and one
/// segment being built. Allocated once.
pub struct TapRx {
    buf: Vec<u8>,
    seg: Vec<u8>,
    /// Frames the kernel handed over that we could not segment (counted, dropped).
    pub bad_frames: u64,
}

impl Default for TapRx {
    fn default() -> Self {
        TapRx {
            buf: vec![0u8; offload::VNET_HDR_LEN + 65_536 + 64],
            seg: Vec::with_capacity(16_384),
            bad_frames: 0,
        }
    }
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        bail!("interface name '{name}' is not valid: 1 to 15 characters, no '/' or spaces");
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

fn ioctl(
    fd: RawFd,
    req: libc::c_ulong,
    ifr: &mut libc::ifreq,
    what: &str,
    name: &str,
) -> Result<()> {
    // SAFETY: every request used here takes a pointer to an ifreq, which `ifr` is.
    if unsafe { libc::ioctl(fd, req as _, ifr as *mut libc::ifreq) } < 0 {
        let e = std::io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (the edge needs root or CAP_NET_ADMIN)"
        } else {
            ""
        };
        bail!("{what} on {name} failed: {e}{hint}");
    }
    Ok(())
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the API is used.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Tap {
    /// Creates (or attaches to) TAP device `name`, non-blocking, with offloads unless
    /// `METALVPC_OFFLOAD=0` or the kernel refuses them.
    pub fn open(name: &str) -> Result<Tap> {
        let want = std::env::var("METALVPC_OFFLOAD").map_or(true, |v| v != "0");
        if want {
            match Self::open_with(name, true) {
                Ok(t) => return Ok(t),
                Err(e) => tracing::warn!("TAP offloads unavailable ({e:#}); using plain frames"),
            }
        }
        Self::open_with(name, false)
    }

    fn open_with(name: &str, offload: bool) -> Result<Tap> {
        // SAFETY: open(2) with a constant, NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            bail!(
                "cannot open /dev/net/tun: {} (is the tun module loaded? does the edge run as root or with CAP_NET_ADMIN?)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | if offload { IFF_VNET_HDR } else { 0 };
        ioctl(
            fd.as_raw_fd(),
            TUNSETIFF,
            &mut ifr,
            "creating the TAP device (TUNSETIFF)",
            name,
        )?;
        // SAFETY: the kernel wrote a NUL-terminated name into ifr_name.
        let actual = unsafe { CStr::from_ptr(ifr.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if offload {
            let flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
            // SAFETY: TUNSETOFFLOAD takes the flags as the argument value itself.
            if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, flags as libc::c_ulong) }
                < 0
            {
                bail!(
                    "TUNSETOFFLOAD on {actual}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Tap {
            fd,
            name: actual,
            offload,
        })
    }

    /// Sets MAC, MTU, IPv4 address and netmask, and brings the link up.
    pub fn configure(&self, mac: Mac, mtu: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        if prefix > 32 {
            bail!("{addr}/{prefix}: an IPv4 prefix is at most 32");
        }
        // SAFETY: a plain datagram socket used only for interface ioctls.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: s is a fresh descriptor we own.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let s = s.as_raw_fd();
        let name = self.name.as_str();

        let mut ifr = ifreq(name)?;
        // SAFETY: writing the hwaddr variant of the union.
        unsafe {
            ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (d, b) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac.0) {
                *d = b as libc::c_char;
            }
        }
        ioctl(
            s,
            libc::SIOCSIFHWADDR,
            &mut ifr,
            "setting the MAC address",
            name,
        )?;

        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        ioctl(s, libc::SIOCSIFMTU, &mut ifr, "setting the MTU", name)?;

        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
        ioctl(s, libc::SIOCSIFADDR, &mut ifr, "setting the address", name)?;

        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
        ioctl(
            s,
            libc::SIOCSIFNETMASK,
            &mut ifr,
            "setting the netmask",
            name,
        )?;

        let mut ifr = ifreq(name)?;
        ioctl(
            s,
            libc::SIOCGIFFLAGS,
            &mut ifr,
            "reading the link flags",
            name,
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags variant.
        unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        ioctl(
            s,
            libc::SIOCSIFFLAGS,
            &mut ifr,
            "bringing the link up",
            name,
        )?;
        Ok(())
    }

    /// Reads one packet from the device and hands each Ethernet frame in it to `f` (several
    /// when the kernel passed a TSO frame). `Ok(false)` when nothing is waiting.
    pub fn read_frames(&self, rx: &mut TapRx, mut f: impl FnMut(&[u8])) -> std::io::Result<bool> {
        let buf = &mut rx.buf;
        // SAFETY: reading into a valid buffer of the given length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock {
                Ok(false)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        if !self.offload {
            f(&buf[..n]);
            return Ok(true);
        }
        if n < offload::VNET_HDR_LEN {
            rx.bad_frames += 1;
            return Ok(true);
        }
        let (h, frame) = buf[..n].split_at_mut(offload::VNET_HDR_LEN);
        let hdr = VnetHdr::parse(h);
        if !offload::frames_from_tap(&hdr, frame, &mut rx.seg, f) {
            rx.bad_frames += 1;
        }
        Ok(true)
    }

    /// Writes one frame. A full queue drops the frame (as a NIC would).
    pub fn write(&self, frame: &[u8]) -> std::io::Result<()> {
        if self.offload {
            // The frame was authenticated by the AEAD and its checksums computed by the
            // sender: tell the kernel not to verify them again.
            let hdr = VnetHdr {
                flags: offload::F_DATA_VALID,
                ..Default::default()
            }
            .encode();
            return self.write_with_header(&hdr, frame);
        }
        // SAFETY: writing from a valid buffer of the given length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes the frames of `out` to the device. With offloads, consecutive segments of one
    /// TCP flow (as a bulk transfer delivers them) are written as one large frame with a
    /// virtio-net GSO header, the receive-side counterpart of TSO: the kernel's TCP stack
    /// then handles one packet per run instead of one per segment, as with GRO on a NIC.
    /// The payloads are gathered by `writev` straight from `out`, without copying.
    pub fn write_frames(&self, out: &metalvpc_protocol::Output) {
        const MAX_RUN: usize = 64;
        let frames = &out.frames;
        let mut i = 0;
        while i < frames.len() {
            let f = &out.buf[frames[i].clone()];
            let first = if self.offload {
                offload::parse_tcp(f)
            } else {
                None
            };
            let Some(first) = first else {
                // A full TAP queue drops the frame, as a full NIC queue would; TCP recovers.
                let _ = self.write(f);
                i += 1;
                continue;
            };
            let mss = first.payload;
            let (mut j, mut total, mut prev, mut prev_f) = (i + 1, mss, first, f);
            let mut last_flags = first.flags_byte();
            while j < frames.len() && j - i < MAX_RUN {
                let g = &out.buf[frames[j].clone()];
                let Some(seg) = offload::parse_tcp(g) else {
                    break;
                };
                if seg.payload > mss
                    || total + seg.payload > 64_000
                    || !offload::continues(prev_f, &prev, g, &seg)
                {
                    break;
                }
                total += seg.payload;
                last_flags = seg.flags_byte();
                j += 1;
                (prev, prev_f) = (seg, g);
                if seg.payload < mss {
                    break; // a shorter segment ends a run
                }
            }
            if j == i + 1 {
                let _ = self.write(f);
                i = j;
                continue;
            }
            let mut hdrs = [0u8; 128];
            let vnet = offload::coalesced_headers(f, &first, total, mss, last_flags, &mut hdrs);
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_RUN + 2];
            iov[0] = libc::iovec {
                iov_base: vnet.as_ptr() as *mut libc::c_void,
                iov_len: vnet.len(),
            };
            iov[1] = libc::iovec {
                iov_base: hdrs.as_ptr() as *mut libc::c_void,
                iov_len: first.hdr_len,
            };
            for (k, r) in frames[i..j].iter().enumerate() {
                let payload = &out.buf[r.start + first.hdr_len..r.end];
                iov[2 + k] = libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                };
            }
            // SAFETY: j - i + 2 iovecs over buffers (`vnet`, `hdrs`, `out.buf`) that outlive
            // the call; writev only reads them.
            unsafe {
                libc::writev(
                    self.fd.as_raw_fd(),
                    iov.as_ptr(),
                    (j - i + 2) as libc::c_int,
                )
            };
            i = j;
        }
    }

    /// Writes a virtio-net header and a frame (possibly a large GSO frame) in one `writev`.
    pub fn write_with_header(&self, hdr: &[u8], frame: &[u8]) -> std::io::Result<()> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: two iovecs over valid buffers that outlive the call; writev only reads them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The host's underlay addresses (not loopback, not link-local, not the TAP), each with
/// `port`: announced to peers so that two edges on one LAN can talk without NAT.
pub fn local_endpoints(port: u16, skip_if: &str) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if name == skip_if {
            continue;
        }
        // SAFETY: ifa_addr is non-null; the family says which sockaddr it is.
        let ip: std::net::IpAddr = match unsafe { (*ifa.ifa_addr).sa_family } as i32 {
            libc::AF_INET => {
                // SAFETY: family AF_INET means sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into()
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into()
            }
            _ => continue,
        };
        let skip = match ip {
            std::net::IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
            std::net::IpAddr::V6(a) => {
                a.is_loopback() || (a.segments()[0] & 0xffc0) == 0xfe80 || a.is_unspecified()
            }
        };
        let sa = std::net::SocketAddr::new(ip, port);
        if !skip && !out.contains(&sa) && out.len() < metalvpc_protocol::control::MAX_ENDPOINTS {
            out.push(sa);
        }
    }
    // SAFETY: freeing the list getifaddrs returned.
    unsafe { libc::freeifaddrs(ifap) };
    out
}
