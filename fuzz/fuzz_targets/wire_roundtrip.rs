//! Structured: any outer header with any body encodes and decodes back to itself.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_protocol::wire::{self, Packet};

#[derive(Arbitrary, Debug)]
enum Header {
    Init {
        sender: u32,
    },
    Resp {
        sender: u32,
        receiver: u32,
    },
    Data {
        receiver: u32,
        counter: u64,
    },
    Relay {
        receiver: u32,
        counter: u64,
        peer: u32,
    },
}

fuzz_target!(|input: (Header, Vec<u8>)| {
    let (h, body) = input;
    let mut b = Vec::new();
    let min = match h {
        Header::Init { sender } => {
            wire::put_init_header(&mut b, sender);
            wire::INIT_HEADER_LEN + 96
        }
        Header::Resp { sender, receiver } => {
            wire::put_resp_header(&mut b, sender, receiver);
            wire::RESP_HEADER_LEN + 48
        }
        Header::Data { receiver, counter } => {
            b.resize(wire::DATA_HEADER_LEN, 0);
            wire::write_data_header(&mut b, receiver, counter);
            wire::DATA_OVERHEAD
        }
        Header::Relay {
            receiver,
            counter,
            peer,
        } => {
            b.resize(wire::RELAY_HEADER_LEN, 0);
            wire::write_relay_header(&mut b, receiver, counter, peer);
            wire::RELAY_OVERHEAD + 4
        }
    };
    let hlen = b.len();
    b.extend_from_slice(&body);
    let decoded = wire::decode(&b);
    if b.len() < min || b.len() > wire::MAX_PACKET {
        assert_eq!(
            decoded,
            Err(wire::WireError::Malformed),
            "{h:?} {}",
            b.len()
        );
        return;
    }
    let expect = match h {
        Header::Init { sender } => Packet::Init {
            sender,
            noise: &b[hlen..],
        },
        Header::Resp { sender, receiver } => Packet::Resp {
            sender,
            receiver,
            noise: &b[hlen..],
        },
        Header::Data { receiver, counter } => Packet::Data { receiver, counter },
        Header::Relay {
            receiver,
            counter,
            peer,
        } => Packet::Relay {
            receiver,
            counter,
            peer,
        },
    };
    assert_eq!(decoded, Ok(expect));
});
