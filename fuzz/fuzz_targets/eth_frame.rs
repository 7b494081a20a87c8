//! The Ethernet parsing of the forwarding path on any frame of at least 14 bytes (callers
//! refuse shorter ones): never a panic, and an address is only ever read from where the
//! frame's type says it is.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_protocol::eth::{self, SourceIp};
use std::net::IpAddr;

fuzz_target!(|f: &[u8]| {
    if f.len() < eth::ETH_HEADER_LEN {
        return;
    }
    assert_eq!(eth::dst_mac(f).0, f[0..6]);
    assert_eq!(eth::src_mac(f).0, f[6..12]);
    let ty = eth::ethertype(f);
    let p = &f[14..];
    match eth::source_ip(f) {
        SourceIp::Addr(IpAddr::V4(a)) => match ty {
            eth::ETHERTYPE_IPV4 => {
                assert!(p.len() >= 20 && p[0] >> 4 == 4);
                assert_eq!(a.octets(), p[12..16]);
            }
            eth::ETHERTYPE_ARP => {
                assert!(p.len() >= 28 && !a.is_unspecified());
                assert_eq!(a.octets(), p[14..18]);
            }
            _ => panic!("an IPv4 address from ethertype {ty:#06x}"),
        },
        SourceIp::Addr(IpAddr::V6(a)) => {
            assert_eq!(ty, eth::ETHERTYPE_IPV6);
            assert!(p.len() >= 40 && p[0] >> 4 == 6);
            assert_eq!(a.octets(), p[8..24]);
            assert!(!a.is_unspecified() && a.segments()[0] & 0xffc0 != 0xfe80);
        }
        SourceIp::Truncated => assert!(matches!(
            ty,
            eth::ETHERTYPE_IPV4 | eth::ETHERTYPE_ARP | eth::ETHERTYPE_IPV6
        )),
        SourceIp::Unsupported => assert!(matches!(ty, 0x8100 | 0x88a8 | 0x9100)),
        SourceIp::None => {}
    }
});
