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
    // A decoded message never holds more than the input could carry.
    let again = m.encode();
    assert!(
        again.len() <= data.len() + 1,
        "{m:?}: {} from {}",
        again.len(),
        data.len()
    );
    assert_eq!(Control::decode(&again).as_ref(), Ok(&m));
    assert_eq!(as_encoded(&m), m);
});
