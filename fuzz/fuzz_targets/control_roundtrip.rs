//! Structured: any control message, including over-long strings and lists, decodes from its
//! encoding to what the encoder promises (strings cut at 255 bytes on a char boundary, lists
//! cut at their limits, CIDRs without host bits); every truncation fails cleanly or decodes
//! to a message of its own.
#![no_main]
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::{arb_control, as_encoded};
use metalvpc_protocol::control::Control;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(m) = arb_control(&mut u) else {
        return;
    };
    let bytes = m.encode();
    assert_eq!(Control::decode(&bytes), Ok(as_encoded(&m)), "{m:?}");
    // Appended bytes (fields of a later version) are ignored.
    let mut longer = bytes.clone();
    longer.extend_from_slice(u.take_rest());
    assert_eq!(Control::decode(&longer), Ok(as_encoded(&m)));
    // Every cut of a short message; about 256 cuts spread over a long one (every cut of a
    // long list would make each input quadratic and starve the fuzzer).
    let step = (bytes.len() / 256).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        let _ = Control::decode(&bytes[..cut]);
    }
});
