//! Just enough Ethernet parsing for forwarding and anti-spoofing, on the hot path: fixed
//! offsets, no allocation. (`etherparse` is used off the hot path, in tests.)

use crate::keys::Mac;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethernet header length.
pub const ETH_HEADER_LEN: usize = 14;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A gratuitous ARP (an unsolicited request "who has `ip`? tell `ip`") from `mac` to the
/// broadcast address: Linux updates an existing neighbour entry for `ip` with `mac` on it.
pub fn gratuitous_arp(mac: Mac, ip: std::net::Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // Ethernet, IPv4, address lengths 6 and 4, operation 1 (request).
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    // Target MAC zero; target IP the sender's own.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The sender hardware address inside an ARP frame (None for other frames or short ones).
pub fn arp_sender_mac(f: &[u8]) -> Option<Mac> {
    if ethertype(f) != ETHERTYPE_ARP || f.len() < ETH_HEADER_LEN + 14 {
        return None;
    }
    Some(Mac(f[ETH_HEADER_LEN + 8..ETH_HEADER_LEN + 14]
        .try_into()
        .ok()?))
}

/// Destination MAC of a frame of at least 14 bytes.
pub fn dst_mac(f: &[u8]) -> Mac {
    Mac(f[0..6].try_into().unwrap())
}
/// Source MAC of a frame of at least 14 bytes.
pub fn src_mac(f: &[u8]) -> Mac {
    Mac(f[6..12].try_into().unwrap())
}
/// EtherType of a frame of at least 14 bytes.
pub fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

/// What a frame says about its sender's network-layer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceIp {
    /// An address to check against the sender's allowed set.
    Addr(IpAddr),
    /// No address to check (e.g. ARP probe from 0.0.0.0, IPv6 from :: or link-local,
    /// non-IP protocols): the MAC check alone applies.
    None,
    /// A frame that claims to be IP/ARP but is too short: drop it.
    Truncated,
    /// A VLAN-tagged or other frame we do not look inside: drop it, so nothing hides an
    /// address behind a tag.
    Unsupported,
}

/// Extracts the network-layer source address of a frame of at least 14 bytes.
pub fn source_ip(f: &[u8]) -> SourceIp {
    let p = &f[ETH_HEADER_LEN..];
    match ethertype(f) {
        ETHERTYPE_IPV4 => {
            if p.len() < 20 || p[0] >> 4 != 4 {
                return SourceIp::Truncated;
            }
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            if src.is_unspecified() && is_dhcp_client_request(p) {
                // A DHCP client has no address yet: DISCOVER and REQUEST come from 0.0.0.0
                // (RFC 2131 4.1). Bound by the MAC check; nothing else may use 0.0.0.0.
                return SourceIp::None;
            }
            SourceIp::Addr(IpAddr::V4(src))
        }
        ETHERTYPE_ARP => {
            // htype(2) ptype(2) hlen(1) plen(1) oper(2) sha(6) spa(4) …
            if p.len() < 28 {
                return SourceIp::Truncated;
            }
            let spa = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
            if spa.is_unspecified() {
                SourceIp::None
            } else {
                SourceIp::Addr(IpAddr::V4(spa))
            }
        }
        ETHERTYPE_IPV6 => {
            if p.len() < 40 || p[0] >> 4 != 6 {
                return SourceIp::Truncated;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
            // Link-local and unspecified sources are not named here: the edge checks IPv6
            // frames from members fully (link-local = the sender's own, ND) in `icmpv6`.
            if src.is_unspecified() || (src.segments()[0] & 0xffc0) == 0xfe80 {
                SourceIp::None
            } else {
                SourceIp::Addr(IpAddr::V6(src))
            }
        }
        0x8100 | 0x88a8 | 0x9100 => SourceIp::Unsupported,
        _ => SourceIp::None,
    }
}

/// An IPv4 packet (`p`, from the IP header on) that is UDP from port 68 to port 67, unfragmented:
/// a DHCP client's message to servers.
fn is_dhcp_client_request(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
    if ihl < 20 || p[9] != 17 || fragment || p.len() < ihl + 8 {
        return false;
    }
    let udp = &p[ihl..];
    u16::from_be_bytes([udp[0], udp[1]]) == 68 && u16::from_be_bytes([udp[2], udp[3]]) == 67
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn finds_sources() {
        let mut ip = vec![0x45; 20];
        ip[12..16].copy_from_slice(&[10, 0, 0, 9]);
        assert_eq!(
            source_ip(&frame(ETHERTYPE_IPV4, &ip)),
            SourceIp::Addr("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            source_ip(&frame(ETHERTYPE_IPV4, &ip[..19])),
            SourceIp::Truncated
        );

        let mut arp = vec![0u8; 28];
        arp[14..18].copy_from_slice(&[10, 0, 0, 3]);
        assert_eq!(
            source_ip(&frame(ETHERTYPE_ARP, &arp)),
            SourceIp::Addr("10.0.0.3".parse().unwrap())
        );
        arp[14..18].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(source_ip(&frame(ETHERTYPE_ARP, &arp)), SourceIp::None);

        let mut v6 = vec![0x60; 40];
        v6[8..24].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV6, &v6)), SourceIp::None);
        v6[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            source_ip(&frame(ETHERTYPE_IPV6, &v6)),
            SourceIp::Addr("fd00::1".parse().unwrap())
        );

        // 0.0.0.0 is accepted (MAC check only) for a DHCP client's UDP 68 -> 67 only.
        let mut dhcp = vec![0u8; 28];
        dhcp[0] = 0x45;
        dhcp[9] = 17;
        dhcp[16..20].copy_from_slice(&[255, 255, 255, 255]);
        dhcp[20..24].copy_from_slice(&[0, 68, 0, 67]);
        let zero = SourceIp::Addr("0.0.0.0".parse().unwrap());
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &dhcp)), SourceIp::None);
        let mut other = dhcp.clone();
        other[23] = 53; // to port 53
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &other)), zero);
        let mut other = dhcp.clone();
        other[21] = 67; // from port 67 (a server's port)
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &other)), zero);
        let mut other = dhcp.clone();
        other[9] = 6; // TCP
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &other)), zero);
        let mut other = dhcp.clone();
        other[7] = 1; // a later fragment: its "ports" are payload
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &other)), zero);
        // The UDP header cut off, or a header length pointing past the packet.
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &dhcp[..24])), zero);
        let mut other = dhcp.clone();
        other[0] = 0x4f;
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &other)), zero);
        let mut other = dhcp.clone();
        other[0] = 0x41; // header length below 20
        assert_eq!(source_ip(&frame(ETHERTYPE_IPV4, &other)), zero);
        // Another source address with the DHCP ports is checked as usual.
        let mut other = dhcp.clone();
        other[12..16].copy_from_slice(&[10, 0, 0, 9]);
        assert_eq!(
            source_ip(&frame(ETHERTYPE_IPV4, &other)),
            SourceIp::Addr("10.0.0.9".parse().unwrap())
        );

        assert_eq!(source_ip(&frame(0x8100, &[0; 30])), SourceIp::Unsupported);
        assert_eq!(source_ip(&frame(0x88cc, &[0; 30])), SourceIp::None);
        let f = frame(ETHERTYPE_IPV4, &ip);
        assert_eq!(dst_mac(&f), Mac::BROADCAST);
        assert_eq!(src_mac(&f), Mac([2, 0, 0, 0, 0, 1]));
    }
}
