//! IPv6 frames from a member, as strict as IPv4 and ARP: the source address must be the
//! member's (its link-local address, derived from its MAC, or one the community grants it),
//! and neighbour discovery (RFC 4861) may speak only for the member itself. Bounds-checked
//! at every step; a truncated header or ND message is `Malformed`.
//!
//! - A link-local source must be the sender's own ([`crate::neighbor::link_local`] of its MAC:
//!   the edge sets the TAP to EUI-64 addresses, so that this is what the kernel uses), or in
//!   its `allowed_cidrs`; any other source must be in its address set.
//! - The unspecified source `::` only for duplicate address detection (a neighbour
//!   solicitation to the target's solicited-node group, without a source link-layer option,
//!   for an address the sender owns), router solicitations (without that option) and MLD
//!   listener reports.
//! - Neighbour solicitation (135): a source link-layer option, if any, is the sender's MAC.
//! - Neighbour advertisement (136): the target is an address the sender owns; a target
//!   link-layer option, if any, is the sender's MAC.
//! - Router solicitations (133) pass with the same option check; router advertisements
//!   (134) and redirects (137) only from a member the community lets send them
//!   (`ipv6_router`), else `router_advertisement`.
//! - An ICMPv6 message behind a fragment header is not looked into: dropped (`unsupported`;
//!   RFC 6980 forbids fragmented ND).

use crate::eth::ETH_HEADER_LEN;
use crate::io::DropReason;
use crate::keys::Mac;
use std::net::Ipv6Addr;

/// ICMPv6 next-header value.
const ICMPV6: u8 = 58;
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const REDIRECT: u8 = 137;
const MLD_V1_REPORT: u8 = 131;
const MLD_V2_REPORT: u8 = 143;
/// ND option types: source and target link-layer address.
const OPT_SLLA: u8 = 1;
const OPT_TLLA: u8 = 2;

/// Who sent an IPv6 frame.
pub struct Sender<'a> {
    /// Its MAC (the frame's source MAC was already checked against it).
    pub mac: Mac,
    /// Whether it owns an address (its link-local, its overlay address, its allowed ranges).
    pub owns: &'a dyn Fn(Ipv6Addr) -> bool,
    /// It may send router advertisements and redirects (`ipv6_router`).
    pub router: bool,
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// The solicited-node multicast group of `a` (ff02::1:ffXX:XXXX).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The ICMPv6 message of an IPv6 packet `p` (from the IPv6 header on, already checked to be
/// 40 bytes or more): Ok(None) for another upper layer, Err for a malformed or fragmented
/// one. Hop-by-hop, routing and destination options headers are skipped.
fn icmp_of(p: &[u8]) -> Result<Option<&[u8]>, DropReason> {
    let len = usize::from(u16::from_be_bytes([p[4], p[5]]));
    let Some(body) = p.get(40..40 + len) else {
        return Err(DropReason::Malformed);
    };
    let (mut next, mut at) = (p[6], 0usize);
    for _ in 0..8 {
        match next {
            ICMPV6 => return Ok(body.get(at..)),
            // Hop-by-hop, routing, destination options: length in 8-byte units after 8.
            0 | 43 | 60 => {
                let h = body.get(at..at + 2).ok_or(DropReason::Malformed)?;
                let n = (usize::from(h[1]) + 1) * 8;
                if body.len() < at + n {
                    return Err(DropReason::Malformed);
                }
                next = h[0];
                at += n;
            }
            // A fragment: its first piece may hide an ND message behind it.
            44 => {
                let h = body.get(at..at + 8).ok_or(DropReason::Malformed)?;
                return if h[0] == ICMPV6 {
                    Err(DropReason::Unsupported)
                } else {
                    Ok(None)
                };
            }
            _ => return Ok(None),
        }
    }
    Err(DropReason::Unsupported)
}

/// The link-layer address options (source, target) of an ND message's options.
fn lladdr_options(mut opts: &[u8]) -> Result<(Option<Mac>, Option<Mac>), DropReason> {
    let (mut slla, mut tlla) = (None, None);
    while !opts.is_empty() {
        if opts.len() < 2 {
            return Err(DropReason::Malformed);
        }
        let n = usize::from(opts[1]) * 8;
        if n == 0 || n > opts.len() {
            return Err(DropReason::Malformed);
        }
        if opts[0] == OPT_SLLA || opts[0] == OPT_TLLA {
            if n < 8 {
                return Err(DropReason::Malformed);
            }
            let mac = Mac(opts[2..8].try_into().map_err(|_| DropReason::Malformed)?);
            // Two options of one kind that disagree: which would a kernel take?
            let slot = if opts[0] == OPT_SLLA {
                &mut slla
            } else {
                &mut tlla
            };
            if slot.is_some_and(|m| m != mac) {
                return Err(DropReason::SourceMismatch);
            }
            *slot = Some(mac);
        }
        opts = &opts[n..];
    }
    Ok((slla, tlla))
}

/// Checks an IPv6 frame (EtherType 0x86dd, at least [`ETH_HEADER_LEN`] bytes) from `who`.
pub fn check(f: &[u8], who: &Sender<'_>) -> Result<(), DropReason> {
    let p = &f[ETH_HEADER_LEN..];
    if p.len() < 40 || p[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let (src, dst) = (addr(&p[8..24]), addr(&p[24..40]));
    let icmp = icmp_of(p)?;
    let kind = match icmp {
        Some(m) if m.len() < 4 => return Err(DropReason::Malformed),
        Some(m) => Some(m[0]),
        None => None,
    };
    if src.is_unspecified() {
        let allowed = matches!(
            kind,
            Some(NEIGHBOR_SOLICITATION | ROUTER_SOLICITATION | MLD_V1_REPORT | MLD_V2_REPORT)
        );
        if !allowed {
            return Err(DropReason::SourceMismatch);
        }
    } else if !(who.owns)(src) {
        return Err(DropReason::SourceMismatch);
    }
    let (Some(m), Some(kind)) = (icmp, kind) else {
        return Ok(());
    };
    match kind {
        ROUTER_ADVERTISEMENT | REDIRECT if !who.router => Err(DropReason::RouterAdvertisement),
        ROUTER_SOLICITATION | ROUTER_ADVERTISEMENT => {
            let fixed = if kind == ROUTER_SOLICITATION { 8 } else { 16 };
            let opts = m.get(fixed..).ok_or(DropReason::Malformed)?;
            match lladdr_options(opts)? {
                (Some(s), _) if s != who.mac || src.is_unspecified() => {
                    Err(DropReason::SourceMismatch)
                }
                _ => Ok(()),
            }
        }
        NEIGHBOR_SOLICITATION => {
            let target = addr(m.get(8..24).ok_or(DropReason::Malformed)?);
            let (slla, _) = lladdr_options(&m[24..])?;
            if src.is_unspecified() {
                // Duplicate address detection: for the sender's own address, to its group,
                // and no link-layer option (RFC 4862 5.4.2).
                if slla.is_some() || dst != solicited_node(target) || !(who.owns)(target) {
                    return Err(DropReason::SourceMismatch);
                }
                return Ok(());
            }
            if slla.is_some_and(|s| s != who.mac) {
                return Err(DropReason::SourceMismatch);
            }
            Ok(())
        }
        NEIGHBOR_ADVERTISEMENT => {
            let target = addr(m.get(8..24).ok_or(DropReason::Malformed)?);
            let (_, tlla) = lladdr_options(&m[24..])?;
            if !(who.owns)(target) || tlla.is_some_and(|t| t != who.mac) {
                return Err(DropReason::SourceMismatch);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Test frames: IPv6 ND messages as a member's kernel sends them.
#[cfg(test)]
pub(crate) mod frames {
    use super::*;

    /// An IPv6 frame from `src_mac` with `payload` as ICMPv6 (next header 58).
    pub(crate) fn icmpv6(
        dst_mac: [u8; 6],
        src_mac: Mac,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        icmp: &[u8],
    ) -> Vec<u8> {
        let mut f = dst_mac.to_vec();
        f.extend_from_slice(&src_mac.0);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[ICMPV6, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(icmp);
        f
    }

    /// An ND message of `kind` about `target` with one link-layer option (`opt`, `mac`).
    pub(crate) fn nd(kind: u8, target: Ipv6Addr, opt: Option<(u8, Mac)>) -> Vec<u8> {
        let flags = if kind == NEIGHBOR_ADVERTISEMENT {
            0x20
        } else {
            0
        };
        let mut icmp = vec![kind, 0, 0, 0, flags, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if let Some((t, mac)) = opt {
            icmp.extend_from_slice(&[t, 1]);
            icmp.extend_from_slice(&mac.0);
        }
        icmp
    }

    /// An unsolicited NA (override) to all nodes from `src_mac`/`src`: `target` is at `lladdr`.
    pub(crate) fn na(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr, lladdr: Mac) -> Vec<u8> {
        let icmp = nd(NEIGHBOR_ADVERTISEMENT, target, Some((OPT_TLLA, lladdr)));
        icmpv6(
            [0x33, 0x33, 0, 0, 0, 1],
            src_mac,
            src,
            "ff02::1".parse().unwrap(),
            &icmp,
        )
    }

    /// An NS from `src_mac`/`src` for `target`, with `src_mac` as source link-layer option
    /// unless `src` is `::` (DAD).
    pub(crate) fn ns(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr, slla: Mac) -> Vec<u8> {
        let opt = (!src.is_unspecified()).then_some((OPT_SLLA, slla));
        let icmp = nd(NEIGHBOR_SOLICITATION, target, opt);
        let group = solicited_node(target).octets();
        let mut dst_mac = [0x33, 0x33, 0, 0, 0, 0];
        dst_mac[2..].copy_from_slice(&group[12..]);
        icmpv6(dst_mac, src_mac, src, solicited_node(target), &icmp)
    }

    /// A router advertisement from `src_mac`/`src` with its MAC as source option.
    pub(crate) fn ra(src_mac: Mac, src: Ipv6Addr) -> Vec<u8> {
        let mut icmp = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, 64, 0, 0x07, 0x08];
        icmp.extend_from_slice(&[0; 8]);
        icmp.extend_from_slice(&[OPT_SLLA, 1]);
        icmp.extend_from_slice(&src_mac.0);
        icmpv6(
            [0x33, 0x33, 0, 0, 0, 1],
            src_mac,
            src,
            "ff02::1".parse().unwrap(),
            &icmp,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::frames::*;
    use super::*;
    use crate::neighbor::link_local;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);

    fn check_a(f: &[u8], router: bool) -> Result<(), DropReason> {
        let ula: Ipv6Addr = "fd10::a".parse().unwrap();
        let owns = move |x: Ipv6Addr| x == link_local(A) || x == ula;
        check(
            f,
            &Sender {
                mac: A,
                owns: &owns,
                router,
            },
        )
    }

    #[test]
    fn a_member_speaks_nd_only_for_itself() {
        let (a_ll, b_ll) = (link_local(A), link_local(B));
        let ula: Ipv6Addr = "fd10::a".parse().unwrap();
        let b_ula: Ipv6Addr = "fd10::b".parse().unwrap();
        // Its own NA, NS and DAD pass.
        assert_eq!(check_a(&na(A, a_ll, a_ll, A), false), Ok(()));
        assert_eq!(check_a(&na(A, a_ll, ula, A), false), Ok(()));
        assert_eq!(check_a(&ns(A, a_ll, b_ll, A), false), Ok(()));
        assert_eq!(
            check_a(&ns(A, Ipv6Addr::UNSPECIFIED, ula, A), false),
            Ok(())
        );
        // Another's target, another's MAC in an option, another's source.
        let bad = DropReason::SourceMismatch;
        assert_eq!(check_a(&na(A, a_ll, b_ula, A), false), Err(bad));
        assert_eq!(check_a(&na(A, a_ll, a_ll, B), false), Err(bad));
        assert_eq!(check_a(&na(A, b_ll, b_ll, A), false), Err(bad));
        assert_eq!(check_a(&ns(A, a_ll, b_ll, B), false), Err(bad));
        assert_eq!(check_a(&ns(A, b_ll, a_ll, A), false), Err(bad));
        // DAD for another's address, or with a link-layer option, or to another group.
        let unspec = Ipv6Addr::UNSPECIFIED;
        assert_eq!(check_a(&ns(A, unspec, b_ula, A), false), Err(bad));
        let mut with_opt = ns(A, a_ll, ula, A);
        with_opt[22..38].copy_from_slice(&unspec.octets());
        assert_eq!(check_a(&with_opt, false), Err(bad));
        // `::` for anything else.
        assert_eq!(check_a(&na(A, unspec, ula, A), false), Err(bad));
        // Router advertisements only with ipv6_router.
        assert_eq!(
            check_a(&ra(A, a_ll), false),
            Err(DropReason::RouterAdvertisement)
        );
        assert_eq!(check_a(&ra(A, a_ll), true), Ok(()));
        assert_eq!(check_a(&ra(A, b_ll), true), Err(bad));
    }

    #[test]
    fn truncated_or_odd_nd_messages_are_malformed_never_a_panic() {
        let a_ll = link_local(A);
        let good = na(A, a_ll, a_ll, A);
        for n in 14..good.len() {
            let mut f = good[..n].to_vec();
            if n >= 20 {
                // The payload length still says the whole message.
                f[18..20].copy_from_slice(&((good.len() - 54) as u16).to_be_bytes());
            }
            assert!(check_a(&f, false).is_err(), "cut at {n}");
        }
        // An option of length 0 (an endless loop in a careless parser).
        let mut f = good.clone();
        f[54 + 25] = 0;
        assert_eq!(check_a(&f, false), Err(DropReason::Malformed));
        // A payload length that says less: the message is cut short.
        let mut f = good.clone();
        f[18..20].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(check_a(&f, false), Err(DropReason::Malformed));
        // Every byte of a frame changed in turn: no panic.
        for i in 14..good.len() {
            for v in [0u8, 1, 0x3a, 0xff] {
                let mut f = good.clone();
                f[i] = v;
                let _ = check_a(&f, v == 1);
            }
        }
    }
}
