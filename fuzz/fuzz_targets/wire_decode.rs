//! The outer wire decoder on arbitrary bytes: never a panic; whatever decodes re-encodes to
//! the same header bytes (reserved bytes aside) and borrows only what the packet holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_protocol::wire::{self, Packet, WireError};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = wire::decode(data) else {
        if let Err(WireError::BadVersion(v)) = wire::decode(data) {
            assert!(!data.is_empty() && data[0] == v && v != wire::VERSION);
        }
        return;
    };
    assert!(data.len() <= wire::MAX_PACKET);
    let mut header = Vec::new();
    match p {
        Packet::Init { sender, noise } => {
            wire::put_init_header(&mut header, sender);
            assert_eq!(noise, &data[wire::INIT_HEADER_LEN..]);
        }
        Packet::Resp {
            sender,
            receiver,
            noise,
        } => {
            wire::put_resp_header(&mut header, sender, receiver);
            assert_eq!(noise, &data[wire::RESP_HEADER_LEN..]);
        }
        Packet::Data { receiver, counter } => {
            assert!(data.len() >= wire::DATA_OVERHEAD);
            header.resize(wire::DATA_HEADER_LEN, 0);
            wire::write_data_header(&mut header, receiver, counter);
        }
        Packet::Relay {
            receiver,
            counter,
            peer,
        } => {
            assert!(data.len() >= wire::RELAY_OVERHEAD + 4);
            header.resize(wire::RELAY_HEADER_LEN, 0);
            wire::write_relay_header(&mut header, receiver, counter, peer);
        }
        Packet::CookieReply { receiver } => {
            assert_eq!(data.len(), metalvpc_protocol::cookie::COOKIE_REPLY_LEN);
            header.extend_from_slice(&[wire::VERSION, wire::TYPE_COOKIE_REPLY, 0, 0]);
            header.extend_from_slice(&receiver.to_le_bytes());
        }
    }
    // Bytes 2 and 3 are reserved: sent as 0, ignored on receipt.
    let mut seen = data[..header.len()].to_vec();
    seen[2..4].copy_from_slice(&[0, 0]);
    assert_eq!(seen, header);
});
