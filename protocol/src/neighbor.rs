//! Neighbour suppression: ARP requests and IPv6 neighbour solicitations from our own kernel
//! for a member's address are answered locally, from what the supernode told us, instead of
//! being flooded to every member. In a community of 100 servers that is one frame on the TAP
//! instead of 99 datagrams per lookup.
//!
//! Only a member's own addresses are answered: its overlay address, the IPv6 link-local
//! address derived from its MAC (what Linux configures by default), and IPv6 /128 entries of
//! its `allowed_cidrs` (its ULA address). Anything else, floating addresses included (they
//! move by gratuitous ARP, and the current holder must answer), is flooded as before.

use crate::eth::{ETHERTYPE_ARP, ETHERTYPE_IPV6, ETH_HEADER_LEN};
use crate::keys::Mac;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What our kernel asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// ARP "who has `target`? tell `sender_ip` at `sender_mac`".
    Arp {
        /// Who asks (our kernel's MAC).
        sender_mac: Mac,
        /// Its address.
        sender_ip: Ipv4Addr,
        /// The address asked about.
        target: Ipv4Addr,
    },
    /// Neighbour solicitation for `target` from `source` (not a duplicate address check).
    Ns {
        /// Who asks (our kernel's MAC).
        sender_mac: Mac,
        /// Its address.
        source: Ipv6Addr,
        /// The address asked about.
        target: Ipv6Addr,
    },
}

impl Question {
    /// The address asked about.
    pub fn target(&self) -> IpAddr {
        match self {
            Question::Arp { target, .. } => IpAddr::V4(*target),
            Question::Ns { target, .. } => IpAddr::V6(*target),
        }
    }
}

/// Parses an ARP request or an IPv6 neighbour solicitation; anything else is `None`.
pub fn question(f: &[u8]) -> Option<Question> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let p = f.get(ETH_HEADER_LEN..)?;
    match ethertype {
        ETHERTYPE_ARP => {
            // Ethernet/IPv4 request only.
            if p.len() < 28 || p[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
                return None;
            }
            let sender_ip = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
            let target = Ipv4Addr::new(p[24], p[25], p[26], p[27]);
            if sender_ip == target || sender_ip.is_unspecified() {
                return None; // gratuitous ARP or an address probe: not a question for us
            }
            Some(Question::Arp {
                sender_mac: Mac(p[8..14].try_into().ok()?),
                sender_ip,
                target,
            })
        }
        ETHERTYPE_IPV6 => {
            // Fixed header, next header ICMPv6, hop limit 255, type 135 code 0.
            if p.len() < 40 + 24 || p[0] >> 4 != 6 || p[6] != 58 || p[7] != 255 {
                return None;
            }
            let icmp = &p[40..];
            if icmp[0] != 135 || icmp[1] != 0 {
                return None;
            }
            let source = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?);
            if source.is_unspecified() {
                return None; // duplicate address detection: the owner must answer
            }
            Some(Question::Ns {
                sender_mac: Mac(f[6..12].try_into().ok()?),
                source,
                target: Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?),
            })
        }
        _ => None,
    }
}

/// The IPv6 link-local address Linux derives from `mac` (modified EUI-64).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The answer `owner` (at `owner_mac`) would give to `q`, as a frame for our TAP.
pub fn answer(q: &Question, owner_mac: Mac) -> Vec<u8> {
    match *q {
        Question::Arp {
            sender_mac,
            sender_ip,
            target,
        } => {
            let mut f = Vec::with_capacity(42);
            f.extend_from_slice(&sender_mac.0);
            f.extend_from_slice(&owner_mac.0);
            f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
            f.extend_from_slice(&owner_mac.0);
            f.extend_from_slice(&target.octets());
            f.extend_from_slice(&sender_mac.0);
            f.extend_from_slice(&sender_ip.octets());
            f
        }
        Question::Ns {
            sender_mac,
            source,
            target,
        } => {
            // ICMPv6 neighbour advertisement: solicited + override, target, and the target
            // link-layer address option.
            let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
            icmp.extend_from_slice(&target.octets());
            icmp.extend_from_slice(&[2, 1]);
            icmp.extend_from_slice(&owner_mac.0);
            let len = (icmp.len() as u32).to_be_bytes();
            let sum = checksum(&[
                &target.octets(),
                &source.octets(),
                &len,
                &[0, 0, 0, 58],
                &icmp,
            ]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut f = Vec::with_capacity(ETH_HEADER_LEN + 40 + icmp.len());
            f.extend_from_slice(&sender_mac.0);
            f.extend_from_slice(&owner_mac.0);
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[58, 255]);
            f.extend_from_slice(&target.octets());
            f.extend_from_slice(&source.octets());
            f.extend_from_slice(&icmp);
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_request(mac: Mac, ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac.0);
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac.0);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    #[test]
    fn arp_request_and_reply() {
        let me = Mac([2, 1, 1, 1, 1, 1]);
        let owner = Mac([2, 2, 2, 2, 2, 2]);
        let req = arp_request(me, [10, 0, 0, 1], [10, 0, 0, 2]);
        let q = question(&req).expect("a question");
        assert_eq!(q.target(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        let r = answer(&q, owner);
        assert_eq!(&r[..6], &me.0);
        assert_eq!(&r[6..12], &owner.0);
        assert_eq!(&r[20..22], &[0, 2]); // a reply
        assert_eq!(&r[22..28], &owner.0);
        assert_eq!(&r[28..32], &[10, 0, 0, 2]);
        assert_eq!(&r[38..42], &[10, 0, 0, 1]);
        // Gratuitous ARP and probes are not questions.
        assert!(question(&arp_request(me, [10, 0, 0, 1], [10, 0, 0, 1])).is_none());
        assert!(question(&arp_request(me, [0, 0, 0, 0], [10, 0, 0, 1])).is_none());
        assert!(question(&req[..30]).is_none());
    }

    #[test]
    fn neighbour_solicitation_and_advertisement() {
        let me = Mac([2, 1, 1, 1, 1, 1]);
        let owner = Mac([2, 2, 2, 2, 2, 2]);
        let src: Ipv6Addr = "fd10::1".parse().unwrap();
        let target: Ipv6Addr = "fd10::2".parse().unwrap();
        // Build an NS the way the kernel does (without options; enough for the parser).
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        let mut f = vec![0x33, 0x33, 0xff, 0, 0, 2];
        f.extend_from_slice(&me.0);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, icmp.len() as u8, 58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&"ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&icmp);
        let q = question(&f).expect("an NS");
        assert_eq!(q.target(), IpAddr::V6(target));
        let na = answer(&q, owner);
        assert_eq!(&na[..6], &me.0);
        assert_eq!(na[14 + 40], 136);
        // The checksum verifies: summing with it included gives zero.
        let icmp = &na[14 + 40..];
        let len = (icmp.len() as u32).to_be_bytes();
        assert_eq!(
            checksum(&[&target.octets(), &src.octets(), &len, &[0, 0, 0, 58], icmp]),
            0
        );
        // Duplicate address detection (source ::) is left to the owner.
        let mut dad = f.clone();
        dad[22..38].copy_from_slice(&[0; 16]);
        assert!(question(&dad).is_none());
    }

    #[test]
    fn link_local_from_mac() {
        assert_eq!(
            link_local(Mac([0x02, 0x12, 0x34, 0x56, 0x78, 0x9a])),
            "fe80::12:34ff:fe56:789a".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn never_panics_on_short_or_odd_frames() {
        for len in 0..100 {
            let f = vec![0x86; len];
            let _ = question(&f);
            let mut g = vec![0u8; len];
            if len > 13 {
                g[12] = 8;
                g[13] = 6;
            }
            let _ = question(&g);
        }
    }
}
