//! The Noise IK messages: arbitrary bytes as message 1 or 2 never pass and never panic; a
//! real message with any change is refused; unchanged, it passes and carries its payload.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::key;
use metalvpc_protocol::crypto::Handshake;

#[derive(Arbitrary, Debug)]
enum Case {
    /// Arbitrary bytes as a message 1 to a responder.
    RawInit(Vec<u8>),
    /// Arbitrary bytes as the message 2 of a real initiation.
    RawResp(Vec<u8>),
    /// A real message 1 (with this payload), changed at these places (xor).
    MutatedInit {
        payload: Vec<u8>,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
    /// A real message 2, changed.
    MutatedResp {
        payload: Vec<u8>,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
}

fn mutate(msg: &[u8], edits: &[(u16, u8)], cut: Option<u16>) -> Vec<u8> {
    let mut m = msg.to_vec();
    for &(at, x) in edits {
        let at = usize::from(at);
        if at < m.len() {
            m[at] ^= x;
        } else {
            m.push(x);
        }
    }
    if let Some(c) = cut {
        m.truncate(usize::from(c));
    }
    m
}

fuzz_target!(|case: Case| {
    let (a, b) = (key(7), key(8));
    match case {
        Case::RawInit(m) => {
            assert!(
                Handshake::respond(&b, &m).is_err(),
                "a forged message 1 passed"
            );
        }
        Case::RawResp(m) => {
            let mut m1 = Vec::new();
            let init = Handshake::initiate(&a, &b.public_key(), b"", &mut m1).unwrap();
            assert!(
                init.finish_initiation(&m).is_err(),
                "a forged message 2 passed"
            );
        }
        Case::MutatedInit {
            payload,
            edits,
            cut,
        } => {
            let mut m1 = Vec::new();
            if Handshake::initiate(&a, &b.public_key(), &payload, &mut m1).is_err() {
                // Only a payload too large for one Noise message may fail.
                assert!(payload.len() > 65_535 - 96);
                return;
            }
            let m = mutate(&m1, &edits, cut);
            match Handshake::respond(&b, &m) {
                Ok((_, who, p)) => {
                    assert_eq!(m, m1, "a changed message 1 passed");
                    assert_eq!(who, a.public_key());
                    assert_eq!(p, payload);
                }
                Err(_) => assert_ne!(m, m1, "an intact message 1 failed"),
            }
        }
        Case::MutatedResp {
            payload,
            edits,
            cut,
        } => {
            let mut m1 = Vec::new();
            let init = Handshake::initiate(&a, &b.public_key(), b"", &mut m1).unwrap();
            let (resp, _, _) = Handshake::respond(&b, &m1).unwrap();
            let mut m2 = Vec::new();
            if resp.finish_response(&payload, &mut m2).is_err() {
                assert!(payload.len() > 65_535 - 48);
                return;
            }
            let m = mutate(&m2, &edits, cut);
            match init.finish_initiation(&m) {
                Ok((_, p)) => {
                    assert_eq!(m, m2, "a changed message 2 passed");
                    assert_eq!(p, payload);
                }
                Err(_) => assert_ne!(m, m2, "an intact message 2 failed"),
            }
        }
    }
});
