//! The receive path's GRO splitting (`datapath::gro_segments`): a super-packet of any size
//! with any segment size the kernel might report splits into consecutive datagrams of the
//! segment size (the last one possibly shorter) that cover it exactly; an empty datagram is
//! one (empty) datagram, so it counts toward the receive bound. Never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_common::datapath::gro_segments;

fuzz_target!(|input: (u16, u16, bool)| {
    let (n, seg, full) = input;
    // Up to 64 KiB, as one recvmsg into the 64 KiB buffer returns at most.
    let n = if full { 65_535 } else { usize::from(n) };
    let seg = usize::from(seg);
    let packet: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let ranges: Vec<_> = gro_segments(n, seg).collect();
    // The reference: what the kernel built the super-packet from.
    let size = if seg == 0 { n.max(1) } else { seg };
    let want = if n == 0 { 1 } else { n.div_ceil(size) };
    assert_eq!(ranges.len(), want);
    let mut at = 0;
    for (i, r) in ranges.iter().enumerate() {
        assert_eq!(r.start, at, "contiguous");
        assert!(r.end <= n && r.start <= r.end);
        if i + 1 < ranges.len() {
            assert_eq!(r.len(), size, "only the last may be shorter");
        } else {
            assert!(r.len() <= size);
        }
        at = r.end;
    }
    assert_eq!(at, n, "covers the whole super-packet");
    let joined: Vec<u8> = ranges.iter().flat_map(|r| packet[r.clone()].to_vec()).collect();
    assert_eq!(joined, packet);
});
