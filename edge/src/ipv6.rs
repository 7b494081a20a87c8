//! The TAP device's IPv6 (ULA) address, set with the SIOCSIFADDR ioctl on an IPv6 socket (the
//! same raw-ioctl approach as `tap.rs`; no netlink dependency).

use anyhow::{bail, Result};
use std::net::Ipv6Addr;

#[repr(C)]
struct In6Ifreq {
    addr: [u8; 16],
    prefixlen: u32,
    ifindex: libc::c_int,
}

/// Adds `addr/prefix` to interface `name` (which must exist and be up for the kernel to use it).
pub fn add_address(name: &str, addr: Ipv6Addr, prefix: u8) -> Result<()> {
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        bail!("interface {name}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!(
            "IPv6 socket: {} (is IPv6 disabled on this host?)",
            std::io::Error::last_os_error()
        );
    }
    let req = In6Ifreq {
        addr: addr.octets(),
        prefixlen: u32::from(prefix),
        ifindex: ifindex as libc::c_int,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket takes a struct in6_ifreq, which `req` is.
    let r = unsafe { libc::ioctl(fd, libc::SIOCSIFADDR as _, &req as *const In6Ifreq) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    if r < 0 && err.raw_os_error() == Some(libc::EACCES) {
        bail!("setting {addr}/{prefix} on {name}: IPv6 is disabled for new interfaces on this host (sysctl net.ipv6.conf.default.disable_ipv6 = 1); enable it or remove `interface.address6`");
    }
    if r < 0 && err.raw_os_error() != Some(libc::EEXIST) {
        bail!("setting {addr}/{prefix} on {name}: {err}");
    }
    Ok(())
}

/// Makes the kernel derive interface `name`'s IPv6 link-local address from its MAC (EUI-64,
/// what `ip link set <name> addrgenmode eui64` does). Peers accept IPv6 from this server's
/// link-local address only if it is that one (`protocol/src/icmpv6.rs`); on a host whose
/// default is stable-privacy addresses the TAP would otherwise get one its peers drop. Call
/// it before the link comes up. By netlink (RTM_SETLINK with IFLA_AF_SPEC / AF_INET6 /
/// IFLA_INET6_ADDR_GEN_MODE), which works where /proc/sys is read-only (the unit's
/// ProtectKernelTunables).
pub fn use_eui64(name: &str) -> Result<()> {
    const RTM_SETLINK: u16 = 19;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_AF_SPEC: u16 = 26;
    const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
    const IN6_ADDR_GEN_MODE_EUI64: u8 = 0;
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        bail!("interface {name}: {}", std::io::Error::last_os_error());
    }
    // nlmsghdr (16) | ifinfomsg (16) | IFLA_AF_SPEC { AF_INET6 { ADDR_GEN_MODE u8 } } (16).
    let mut msg = [0u8; 48];
    msg[0..4].copy_from_slice(&48u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_SETLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    msg[32..34].copy_from_slice(&16u16.to_ne_bytes());
    msg[34..36].copy_from_slice(&IFLA_AF_SPEC.to_ne_bytes());
    msg[36..38].copy_from_slice(&12u16.to_ne_bytes());
    msg[38..40].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    msg[40..42].copy_from_slice(&5u16.to_ne_bytes());
    msg[42..44].copy_from_slice(&IFLA_INET6_ADDR_GEN_MODE.to_ne_bytes());
    msg[44] = IN6_ADDR_GEN_MODE_EUI64;
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        bail!("netlink socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: sending our own buffer of msg.len() bytes (the kernel is the default peer).
    let n = unsafe { libc::send(raw, msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        bail!("netlink send: {}", std::io::Error::last_os_error());
    }
    let mut ack = [0u8; 256];
    // SAFETY: receiving into our own buffer of ack.len() bytes.
    let n = unsafe { libc::recv(raw, ack.as_mut_ptr().cast(), ack.len(), 0) };
    if n < 20 {
        bail!(
            "netlink: no acknowledgement ({})",
            std::io::Error::last_os_error()
        );
    }
    let kind = u16::from_ne_bytes([ack[4], ack[5]]);
    let err = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
    if kind == NLMSG_ERROR && err != 0 {
        bail!(
            "setting EUI-64 IPv6 addresses on {name}: {}",
            std::io::Error::from_raw_os_error(-err)
        );
    }
    Ok(())
}
