//! The TAP device's offloads, done by us: the virtio-net header the kernel puts before each
//! frame (`IFF_VNET_HDR`), TCP segmentation of the large frames TSO hands us, and finishing
//! partial checksums. Pure functions over byte slices, tested below; the syscalls are in
//! `tap.rs`.
//!
//! Why segment here instead of carrying 64 KB frames across the tunnel: the receiver then
//! gets ordinary Ethernet frames, so the wire format, the anti-spoofing checks and peers
//! running older builds are unchanged, and a lost datagram costs one TCP segment, not 45.
//! The saving that matters, one TAP read and one trip through the sender's TCP/IP stack per
//! 64 KB instead of per 1.4 KB, is kept.

/// `struct virtio_net_hdr` (legacy layout, 10 bytes, native endian): what precedes every
/// frame read from or written to a TAP opened with `IFF_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial (see `csum_start`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified (we write this: the frame's
/// integrity was just proven by the AEAD tag, and its sender computed the checksums).
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit of `gso_type`.
pub const GSO_ECN: u8 = 0x80;

const ETH_LEN: usize = 14;

/// A parsed virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `b` (which the caller checked exist).
    pub fn parse(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// The bytes of this header.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// The Internet checksum's running sum (RFC 1071) of `data`, added to `acc`. Sums 32-bit
/// big-endian words into a 64-bit accumulator: several bytes per cycle, no carries lost.
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

/// Folds a running sum to 16 bits (not yet complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Finishes a partial checksum (`F_NEEDS_CSUM`): the kernel left the pseudo-header sum at
/// `start + offset`; the checksum covers `frame[start..]`.
pub fn finish_csum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start + offset;
    if start >= frame.len() || at + 2 > frame.len() {
        return false;
    }
    let mut c = !fold(sum(&frame[start..], 0));
    // UDP sends a computed zero as all ones (zero means "no checksum"); harmless for TCP,
    // whose sum over real data is never zero in ones' complement arithmetic either way.
    if c == 0 && offset == 6 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Splits a TSO frame (`hdr.gso_type` TCPV4 or TCPV6) into MTU-sized TCP segments, each a
/// complete Ethernet frame with correct IP and TCP headers and checksums, built in `seg` and
/// handed to `f` one after the other. Returns false (nothing handed over) for a frame whose
/// headers do not make sense; the caller drops it.
pub fn segment_tcp(
    hdr: &VnetHdr,
    frame: &[u8],
    seg: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]),
) -> bool {
    let v4 = hdr.gso_type & !GSO_ECN == GSO_TCPV4;
    let l4 = hdr.csum_start as usize;
    let mss = hdr.gso_size as usize;
    let ip_len = if v4 { 20 } else { 40 };
    if mss == 0 || l4 < ETH_LEN + ip_len || l4 + 20 > frame.len() {
        return false;
    }
    let thl = usize::from(frame[l4 + 12] >> 4) * 4;
    let hl = l4 + thl;
    if thl < 20 || hl > frame.len() {
        return false;
    }
    if v4 && (frame[ETH_LEN] >> 4 != 4 || usize::from(frame[ETH_LEN] & 0xf) * 4 != l4 - ETH_LEN) {
        return false;
    }
    if !v4 && frame[ETH_LEN] >> 4 != 6 {
        return false;
    }
    let payload = &frame[hl..];
    let seq0 = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().expect("4 bytes"));
    let id0 = u16::from_be_bytes([frame[ETH_LEN + 4], frame[ETH_LEN + 5]]);
    let flags0 = frame[l4 + 13];
    // Pseudo-header addresses: the same for every segment.
    let addr_sum = if v4 {
        sum(&frame[ETH_LEN + 12..ETH_LEN + 20], 0)
    } else {
        sum(&frame[ETH_LEN + 8..ETH_LEN + 40], 0)
    };
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        seg.clear();
        seg.extend_from_slice(&frame[..hl]);
        seg.extend_from_slice(chunk);
        let tcp_len = thl + chunk.len();
        if v4 {
            let ip = &mut seg[ETH_LEN..l4];
            ip[2..4].copy_from_slice(&((l4 - ETH_LEN + tcp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum(ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            let plen = (l4 - ETH_LEN - 40 + tcp_len) as u16;
            seg[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&plen.to_be_bytes());
        }
        let tcp = &mut seg[l4..];
        tcp[4..8].copy_from_slice(&seq0.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut fl = flags0;
        if i + 1 < n {
            fl &= !(0x01 | 0x08); // FIN and PSH only on the last segment
        }
        if i > 0 {
            fl &= !0x80; // CWR only on the first
        }
        tcp[13] = fl;
        tcp[16..18].copy_from_slice(&[0, 0]);
        let pseudo = addr_sum + 6 + tcp_len as u64;
        let c = !fold(sum(tcp, pseudo));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f(seg);
    }
    true
}

/// What to do with one frame read from the TAP, given its virtio-net header: finish its
/// checksum or segment it, then hand each resulting frame to `f`. `frame` is modified in
/// place when only the checksum needs finishing. Returns false for a frame we cannot handle
/// (an unknown GSO type, or inconsistent headers): the caller counts and drops it.
pub fn frames_from_tap(
    hdr: &VnetHdr,
    frame: &mut [u8],
    seg: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]),
) -> bool {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0
                && !finish_csum(frame, hdr.csum_start.into(), hdr.csum_offset.into())
            {
                return false;
            }
            f(frame);
            true
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(hdr, frame, seg, f),
        _ => false,
    }
}

/// The parts of a TCP segment that decide whether it can be coalesced with its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSeg {
    v4: bool,
    /// Offset of the TCP header (Ethernet + IP header).
    l4: usize,
    /// Ethernet + IP + TCP header bytes.
    pub hdr_len: usize,
    seq: u32,
    flags: u8,
    /// Payload bytes after the headers.
    pub payload: usize,
}

impl TcpSeg {
    /// The TCP flags byte.
    pub fn flags_byte(&self) -> u8 {
        self.flags
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_URG: u8 = 0x20;

/// Parses an Ethernet frame as a plain TCP segment that may be coalesced (IPv4 without
/// options or fragments, or IPv6 without extension headers; no SYN, RST, FIN or URG; with
/// payload). Anything else is `None` and is written on its own.
pub fn parse_tcp(f: &[u8]) -> Option<TcpSeg> {
    if f.len() < ETH_LEN + 40 {
        return None;
    }
    let (v4, l4) = match [f[12], f[13]] {
        [0x08, 0x00] => {
            let ip = &f[ETH_LEN..];
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff; // MF and offset
            if ip[0] != 0x45 || ip[9] != 6 || frag != 0 || total != f.len() - ETH_LEN {
                return None;
            }
            (true, ETH_LEN + 20)
        }
        [0x86, 0xdd] => {
            let ip = &f[ETH_LEN..];
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[0] >> 4 != 6
                || ip[6] != 6
                || f.len() < ETH_LEN + 60
                || plen != f.len() - ETH_LEN - 40
            {
                return None;
            }
            (false, ETH_LEN + 40)
        }
        _ => return None,
    };
    let thl = usize::from(f[l4 + 12] >> 4) * 4;
    let flags = f[l4 + 13];
    if thl < 20 || l4 + thl >= f.len() || flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG) != 0 {
        return None;
    }
    Some(TcpSeg {
        v4,
        l4,
        hdr_len: l4 + thl,
        seq: u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().expect("4 bytes")),
        flags,
        payload: f.len() - l4 - thl,
    })
}

/// Whether segment `b` continues `a` in a way the kernel's own GRO would merge: same
/// addresses, ports, IP fields and TCP options, the next sequence number, and `a` is not
/// the end of a push. Sizes are checked by the caller (all but the last must be equal).
pub fn continues(fa: &[u8], a: &TcpSeg, fb: &[u8], b: &TcpSeg) -> bool {
    if a.v4 != b.v4 || a.hdr_len != b.hdr_len || a.flags & TCP_PSH != 0 {
        return false;
    }
    if b.seq != a.seq.wrapping_add(a.payload as u32) || a.flags != b.flags & !TCP_PSH {
        return false;
    }
    let l4 = a.l4;
    // Ethernet addresses and type; the IP header except length, id and checksum.
    let same_ip = if a.v4 {
        fa[..ETH_LEN + 2] == fb[..ETH_LEN + 2]
            && fa[ETH_LEN + 6..ETH_LEN + 10] == fb[ETH_LEN + 6..ETH_LEN + 10]
            && fa[ETH_LEN + 12..l4] == fb[ETH_LEN + 12..l4]
    } else {
        fa[..ETH_LEN + 4] == fb[..ETH_LEN + 4] && fa[ETH_LEN + 6..l4] == fb[ETH_LEN + 6..l4]
    };
    // TCP: ports, ack number, and every option byte (timestamps included) equal.
    same_ip
        && fa[l4..l4 + 4] == fb[l4..l4 + 4]
        && fa[l4 + 8..l4 + 12] == fb[l4 + 8..l4 + 12]
        && fa[l4 + 20..a.hdr_len] == fb[l4 + 20..b.hdr_len]
}

/// Builds the headers of one large frame made of `first`'s headers followed by
/// `total_payload` bytes of coalesced payload, into `out` (which must hold `first.hdr_len`
/// bytes), and the virtio-net header that makes the kernel treat it as a GSO frame of
/// `mss`-byte segments with a partial checksum. `last_flags` are the last segment's TCP
/// flags (its PSH is kept).
pub fn coalesced_headers(
    f: &[u8],
    first: &TcpSeg,
    total_payload: usize,
    mss: usize,
    last_flags: u8,
    out: &mut [u8],
) -> [u8; VNET_HDR_LEN] {
    let (l4, hl) = (first.l4, first.hdr_len);
    out[..hl].copy_from_slice(&f[..hl]);
    let tcp_len = hl - l4 + total_payload;
    let addr_sum = if first.v4 {
        let ip = &mut out[ETH_LEN..l4];
        ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum(ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        sum(&ip[12..20], 0)
    } else {
        out[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        sum(&out[ETH_LEN + 8..ETH_LEN + 40], 0)
    };
    out[l4 + 13] = first.flags | (last_flags & TCP_PSH);
    // CHECKSUM_PARTIAL convention: the folded pseudo-header sum, not complemented.
    let pseudo = fold(addr_sum + 6 + tcp_len as u64);
    out[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if first.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: hl as u16,
        gso_size: mss as u16,
        csum_start: l4 as u16,
        csum_offset: 16,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference checksum: 16-bit words, one at a time (RFC 1071 as written).
    fn slow_csum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut acc = 0u32;
        for w in bytes.chunks(2) {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                u16::from(w[0]) << 8
            };
            acc += u32::from(v);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn tcp4_frame(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = 20 + 32 + payload;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        // TCP: ports, seq 0xfffffff0 (wraps), ack, data offset 8 (32 bytes), flags, window.
        f.extend_from_slice(&[
            0x1f, 0x90, 0xc0, 0x00, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 9, 0x80, flags, 1, 0,
        ]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
        f.extend((0..payload).map(|i| (i * 7 + 3) as u8));
        let c = !fold(sum(&f[14..34], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn check_segment(s: &[u8]) {
        let ip = &s[14..34];
        assert_eq!(slow_csum(&[ip]), 0, "IPv4 header checksum");
        let tcp = &s[34..];
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            s.len() - 14
        );
        let pseudo = [&ip[12..20], &[0, 6], &(tcp.len() as u16).to_be_bytes()[..]].concat();
        assert_eq!(slow_csum(&[&pseudo, tcp]), 0, "TCP checksum");
    }

    #[test]
    fn checksum_matches_the_rfc_1071_reference() {
        for len in [0usize, 1, 2, 3, 5, 64, 1399, 1400, 9001] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            assert_eq!(!fold(sum(&data, 0)), slow_csum(&[&data]), "len {len}");
        }
    }

    #[test]
    fn tso_frame_is_cut_into_valid_segments_that_carry_every_byte() {
        let payload = 1348 * 3 + 500;
        let frame = tcp4_frame(payload, 0x18 | 0x01 | 0x80); // PSH ACK FIN CWR
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1348,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut seg = Vec::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        assert!(segment_tcp(&hdr, &frame, &mut seg, |s| got.push(s.to_vec())));
        assert_eq!(got.len(), 4);
        let mut data = Vec::new();
        for (i, s) in got.iter().enumerate() {
            check_segment(s);
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((i * 1348) as u32));
            assert_eq!(
                u16::from_be_bytes([s[18], s[19]]),
                0x1234 + i as u16,
                "IP id"
            );
            let fl = s[47];
            assert_eq!(fl & 0x01 != 0, i == 3, "FIN only last");
            assert_eq!(fl & 0x08 != 0, i == 3, "PSH only last");
            assert_eq!(fl & 0x80 != 0, i == 0, "CWR only first");
            assert_eq!(fl & 0x10, 0x10, "ACK everywhere");
            data.extend_from_slice(&s[66..]);
        }
        assert_eq!(data, frame[66..]);
        assert_eq!(got[3].len(), 66 + 500);
    }

    #[test]
    fn tcp6_segments_have_valid_checksums() {
        let payload = 3000;
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 6, 64]);
        f.extend((0..32).map(|i| i as u8));
        f.extend_from_slice(&[
            0, 80, 0, 81, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 1, 0, 0, 0, 0, 0,
        ]);
        f.extend((0..payload).map(|i| i as u8));
        let hdr = VnetHdr {
            gso_type: GSO_TCPV6,
            gso_size: 1200,
            csum_start: 54,
            csum_offset: 16,
            ..Default::default()
        };
        let mut seg = Vec::new();
        let mut n = 0;
        assert!(segment_tcp(&hdr, &f, &mut seg, |s| {
            n += 1;
            let plen = usize::from(u16::from_be_bytes([s[18], s[19]]));
            assert_eq!(plen, s.len() - 54);
            let pseudo = [&s[22..54], &(plen as u32).to_be_bytes()[..], &[0, 0, 0, 6]].concat();
            assert_eq!(slow_csum(&[&pseudo, &s[54..]]), 0);
        }));
        assert_eq!(n, 3);
    }

    #[test]
    fn partial_checksum_is_finished_and_nonsense_is_refused() {
        let mut frame = tcp4_frame(100, 0x18);
        // What the kernel leaves for CHECKSUM_PARTIAL: the folded pseudo-header sum.
        let tcp_len = frame.len() - 34;
        let pseudo = fold(sum(&frame[26..34], 6 + tcp_len as u64));
        frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let mut seg = Vec::new();
        let mut out = Vec::new();
        assert!(frames_from_tap(&hdr, &mut frame, &mut seg, |f| out = f.to_vec()));
        check_segment(&out);
        // Offsets beyond the frame, a zero MSS, an unknown GSO type: refused, no panic.
        let bad = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 5000,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(!frames_from_tap(&bad, &mut frame, &mut seg, |_| panic!()));
        let bad = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 0,
            csum_start: 34,
            ..Default::default()
        };
        assert!(!frames_from_tap(&bad, &mut frame, &mut seg, |_| panic!()));
        let bad = VnetHdr {
            gso_type: 3,
            gso_size: 100,
            csum_start: 34,
            ..Default::default()
        };
        assert!(!frames_from_tap(&bad, &mut frame, &mut seg, |_| panic!()));
        let bad = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            csum_start: 60000,
            ..Default::default()
        };
        assert!(!frames_from_tap(
            &bad,
            &mut frame[..40],
            &mut seg,
            |_| panic!()
        ));
    }

    #[test]
    fn segments_coalesce_back_into_the_original_stream() {
        let payload = 1348 * 5 + 77;
        let frame = tcp4_frame(payload, 0x18); // PSH ACK
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1348,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let mut seg = Vec::new();
        let mut segs: Vec<Vec<u8>> = Vec::new();
        assert!(segment_tcp(&hdr, &frame, &mut seg, |s| segs.push(s.to_vec())));
        let parsed: Vec<TcpSeg> = segs
            .iter()
            .map(|s| parse_tcp(s).expect("plain TCP"))
            .collect();
        for i in 1..segs.len() {
            assert!(
                continues(&segs[i - 1], &parsed[i - 1], &segs[i], &parsed[i]),
                "{i}"
            );
        }
        // Out of order, another flow, or after a PSH: no.
        assert!(!continues(&segs[1], &parsed[1], &segs[0], &parsed[0]));
        let mut other = segs[1].clone();
        other[34] ^= 1; // source port
        assert!(!continues(
            &segs[0],
            &parsed[0],
            &other,
            &parse_tcp(&other).unwrap()
        ));
        let last = segs.len() - 1;
        assert!(!continues(&segs[last], &parsed[last], &segs[1], &parsed[1]));
        // The big frame: headers from the first, payloads in order, lengths and checksums
        // consistent. Finishing its partial checksum as the kernel would gives a valid one.
        let mut h = [0u8; 128];
        let v = coalesced_headers(
            &segs[0],
            &parsed[0],
            payload,
            1348,
            parsed[last].flags,
            &mut h,
        );
        let v = VnetHdr::parse(&v);
        assert_eq!(
            (v.gso_type, v.gso_size, v.csum_start, v.hdr_len),
            (GSO_TCPV4, 1348, 34, 66)
        );
        let mut big = h[..66].to_vec();
        for (s, p) in segs.iter().zip(&parsed) {
            big.extend_from_slice(&s[p.hdr_len..]);
        }
        assert_eq!(big[66..], frame[66..]);
        assert!(finish_csum(&mut big, 34, 16));
        check_segment(&big);
        assert_eq!(big[47], 0x18, "PSH of the last segment kept");
        // SYN, FIN, fragments and non-TCP are never coalesced.
        let mut syn = segs[0].clone();
        syn[47] |= TCP_SYN;
        assert!(parse_tcp(&syn).is_none());
        let mut frag = segs[0].clone();
        frag[20] |= 0x20; // MF
        assert!(parse_tcp(&frag).is_none());
        assert!(parse_tcp(&segs[0][..40]).is_none());
    }
}
