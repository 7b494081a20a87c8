//! Path MTU: the frames that probe a peer's direct path, the ICMP answers for frames too large
//! for it, and TCP MSS clamping.
//!
//! An edge probes each direct path with padded *MTU probe* frames of several outer sizes
//! (sent with don't-fragment set by the shell); the peer acknowledges each size it received,
//! and the largest acknowledged size is the path's MTU. A frame from our TAP that would not fit
//! is not sent into a black hole: an IPv4 packet with don't-fragment set gets an ICMP
//! "fragmentation needed" and an IPv6 packet an ICMPv6 "packet too big", written back to our
//! TAP with the MTU that fits, so the sender's TCP lowers its segment size at once.
//!
//! Probe frames are ordinary Ethernet frames with the IEEE local experimental EtherType
//! 0x88B5 and the payload `"MVPMTU"`, kind (1 probe, 2 ack) and the outer size (u16): an edge
//! that does not know them delivers them to its TAP, where the kernel ignores them.

use crate::eth::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HEADER_LEN};
use crate::keys::Mac;

/// EtherType of probe frames.
pub const ETHERTYPE_PROBE: u16 = 0x88b5;
const MAGIC: &[u8; 6] = b"MVPMTU";
/// Outer IP packet sizes tried, largest first (the largest is the configured one).
pub const CANDIDATES: [u16; 8] = [1500, 1480, 1460, 1440, 1420, 1400, 1360, 1280];
/// The smallest IPv6 MTU: never report less.
const IPV6_MIN_MTU: u16 = 1280;

/// A probe or its acknowledgement for outer size `size`, from `src` to `dst`, padded so that
/// the whole frame is `frame_len` bytes (at least its 23-byte header).
pub fn probe_frame(dst: Mac, src: Mac, ack: bool, size: u16, frame_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame_len.max(23));
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE_PROBE.to_be_bytes());
    f.extend_from_slice(MAGIC);
    f.push(if ack { 2 } else { 1 });
    f.extend_from_slice(&size.to_le_bytes());
    f.resize(frame_len.max(f.len()), 0);
    f
}

/// `Some((is_ack, size))` for a probe frame.
pub fn parse_probe(f: &[u8]) -> Option<(bool, u16)> {
    if f.len() < 23 || f[12..14] != ETHERTYPE_PROBE.to_be_bytes() || &f[14..20] != MAGIC {
        return None;
    }
    let ack = match f[20] {
        1 => false,
        2 => true,
        _ => return None,
    };
    Some((ack, u16::from_le_bytes([f[21], f[22]])))
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(hi) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What to do with a frame too large for the path: the ICMP answer for our TAP, if the
/// frame is one that must not be fragmented (IPv4 with don't-fragment, or IPv6), with
/// `mtu` the largest IP packet that fits.
pub fn too_big_answer(frame: &[u8], mtu: u16) -> Option<Vec<u8>> {
    if frame.len() < ETH_HEADER_LEN + 20 {
        return None;
    }
    let eth_type = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[ETH_HEADER_LEN..];
    let mut f = Vec::with_capacity(ETH_HEADER_LEN + 96);
    // Back to the sender, as if from the frame's destination.
    f.extend_from_slice(&frame[6..12]);
    f.extend_from_slice(&frame[0..6]);
    match eth_type {
        ETHERTYPE_IPV4 if ip[0] >> 4 == 4 => {
            let df = ip[6] & 0x40 != 0;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if !df || ihl < 20 || ip.len() < ihl {
                return None;
            }
            // ICMP: type 3 code 4, unused (2), next-hop MTU (2), the original header + 8 bytes.
            let quoted = &ip[..(ihl + 8).min(ip.len())];
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&mtu.to_be_bytes());
            icmp.extend_from_slice(quoted);
            let sum = checksum(&[&icmp]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let total = (20 + icmp.len()) as u16;
            let mut hdr = [0u8; 20];
            hdr[0] = 0x45;
            hdr[2..4].copy_from_slice(&total.to_be_bytes());
            hdr[8] = 64;
            hdr[9] = 1; // ICMP
            hdr[12..16].copy_from_slice(&ip[16..20]); // from the original destination
            hdr[16..20].copy_from_slice(&ip[12..16]); // to the original source
            let sum = checksum(&[&hdr]);
            hdr[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            f.extend_from_slice(&hdr);
            f.extend_from_slice(&icmp);
            Some(f)
        }
        ETHERTYPE_IPV6 if ip[0] >> 4 == 6 && ip.len() >= 40 => {
            // ICMPv6 type 2 (packet too big): MTU (4), then as much of the packet as fits
            // in a minimum-size IPv6 packet.
            let quoted = &ip[..ip.len().min(1280 - 40 - 8)];
            let mut icmp = vec![2, 0, 0, 0];
            icmp.extend_from_slice(&u32::from(mtu.max(IPV6_MIN_MTU)).to_be_bytes());
            icmp.extend_from_slice(quoted);
            let (src, dst) = (&ip[24..40], &ip[8..24]);
            let len = (icmp.len() as u32).to_be_bytes();
            let sum = checksum(&[src, dst, &len, &[0, 0, 0, 58], &icmp]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[58, 64]);
            f.extend_from_slice(src);
            f.extend_from_slice(dst);
            f.extend_from_slice(&icmp);
            Some(f)
        }
        _ => None,
    }
}

/// Lowers the MSS option of a TCP SYN (IPv4 or IPv6, no extension headers) to at most
/// `max_mss` for IPv4 (20 less for IPv6, whose header is 20 bytes longer), fixing the TCP
/// checksum. Returns true if it changed the frame.
pub fn clamp_mss(frame: &mut [u8], max_mss: u16) -> bool {
    if frame.len() < ETH_HEADER_LEN + 40 {
        return false;
    }
    let eth_type = u16::from_be_bytes([frame[12], frame[13]]);
    let (tcp_at, limit) = {
        let ip = &frame[ETH_HEADER_LEN..];
        match eth_type {
            ETHERTYPE_IPV4 if ip[0] >> 4 == 4 && ip[9] == 6 => {
                // Not a later fragment.
                if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                    return false;
                }
                (ETH_HEADER_LEN + usize::from(ip[0] & 0x0f) * 4, max_mss)
            }
            ETHERTYPE_IPV6 if ip[0] >> 4 == 6 && ip[6] == 6 => {
                (ETH_HEADER_LEN + 40, max_mss.saturating_sub(20))
            }
            _ => return false,
        }
    };
    let Some(tcp) = frame.get_mut(tcp_at..) else {
        return false;
    };
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return false; // not a SYN
    }
    let hlen = usize::from(tcp[12] >> 4) * 4;
    if hlen < 20 || tcp.len() < hlen {
        return false;
    }
    let mut i = 20;
    while i < hlen {
        match tcp[i] {
            0 => return false,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > hlen {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old <= limit {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&limit.to_be_bytes());
                    // RFC 1624 incremental update: HC' = ~(~HC + ~m + m').
                    let hc = u16::from_be_bytes([tcp[16], tcp[17]]);
                    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(limit);
                    while sum > 0xffff {
                        sum = (sum & 0xffff) + (sum >> 16);
                    }
                    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp_syn(mss: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = vec![
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut tcp = vec![0u8; 24];
        tcp[12] = 6 << 4;
        tcp[13] = 0x02;
        tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        let pseudo = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 24];
        let sum = checksum(&[&pseudo, &tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn mss_is_clamped_and_the_checksum_stays_valid() {
        let mut f = ipv4_tcp_syn(1460);
        assert!(clamp_mss(&mut f, 1350));
        let tcp = &f[34..];
        assert_eq!(u16::from_be_bytes([tcp[22], tcp[23]]), 1350);
        let pseudo = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 24];
        assert_eq!(checksum(&[&pseudo, tcp]), 0, "checksum no longer verifies");
        // Already small enough, or not a SYN: untouched.
        let mut g = ipv4_tcp_syn(1200);
        assert!(!clamp_mss(&mut g, 1350));
        let mut h = ipv4_tcp_syn(1460);
        h[34 + 13] = 0x10;
        assert!(!clamp_mss(&mut h, 1350));
        for len in 0..f.len() {
            let mut cut = f[..len].to_vec();
            let _ = clamp_mss(&mut cut, 1000);
        }
    }

    #[test]
    fn frag_needed_quotes_the_packet_and_names_the_mtu() {
        let f = ipv4_tcp_syn(1460);
        let a = too_big_answer(&f, 1300).expect("DF is set");
        assert_eq!(&a[0..6], &f[6..12]);
        let ip = &a[14..];
        assert_eq!(ip[9], 1);
        assert_eq!(&ip[12..16], &[10, 0, 0, 2]);
        assert_eq!(&ip[16..20], &[10, 0, 0, 1]);
        assert_eq!(checksum(&[&ip[..20]]), 0);
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1300);
        assert_eq!(checksum(&[icmp]), 0);
        assert_eq!(&icmp[8..28], &f[14..34], "quotes the original header");
        // Without DF: no answer (the caller sends it on).
        let mut no_df = f.clone();
        no_df[14 + 6] = 0;
        assert!(too_big_answer(&no_df, 1300).is_none());
        for len in 0..f.len() {
            let _ = too_big_answer(&f[..len], 1300);
        }
    }

    #[test]
    fn probes_round_trip() {
        let a = Mac([2, 0, 0, 0, 0, 1]);
        let b = Mac([2, 0, 0, 0, 0, 2]);
        let p = probe_frame(b, a, false, 1400, 1300);
        assert_eq!(p.len(), 1300);
        assert_eq!(parse_probe(&p), Some((false, 1400)));
        assert_eq!(
            parse_probe(&probe_frame(a, b, true, 1400, 0)),
            Some((true, 1400))
        );
        assert_eq!(parse_probe(&p[..22]), None);
    }
}
