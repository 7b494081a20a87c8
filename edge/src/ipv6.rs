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
