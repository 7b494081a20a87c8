//! Every control message decoder (the first byte picks it) on arbitrary bytes: never a
//! panic, bounded allocation, and whatever decodes is a fixed point of encode/decode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::as_encoded;
use metalvpc_protocol::control::Control;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Control::decode(data) else {
        return;
    };
    // A decoded message never holds more than the input could carry. Re-encoding may add the
    // appended fields an older sender left out, at their defaults: at most 10 bytes
    // (RegisterAck: relay 1, membership 8, assigned flag 1; Register: cipher 1, join flag 1),
    // plus one for an unknown type's lost body.
    let again = m.encode();
    assert!(
        again.len() <= data.len() + 11,
        "{m:?}: {} from {}",
        again.len(),
        data.len()
    );
    assert_eq!(Control::decode(&again).as_ref(), Ok(&m));
    assert_eq!(as_encoded(&m), m);
});
