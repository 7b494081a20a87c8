//! The TCP fallback's framing parser (`FrameReader`, what `FramedTcp` reads with) fed an
//! arbitrary byte stream in arbitrary chunks: the packets it hands over are exactly what the
//! simple parser (`parse_whole`) finds in the whole stream (up to a zero length, which ends it), however
//! the stream is split, and it never holds more than one incomplete frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_common::tcp::{parse_whole, FrameReader, MAX_FRAME};

fuzz_target!(|input: (Vec<u16>, Vec<u8>)| {
    let (sizes, mut stream) = input;
    let (want, ends) = parse_whole(&stream);
    let mut r = FrameReader::default();
    let mut got = Vec::new();
    let mut ended = false;
    let mut rest = &mut stream[..];
    let mut i = 0;
    while !rest.is_empty() && !ended {
        let n = sizes
            .get(i)
            .map_or(rest.len(), |&s| usize::from(s).clamp(1, rest.len()));
        i += 1;
        let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        ended = r.feed(chunk, &mut |p| got.push(p.to_vec())).is_err();
        assert!(r.held() <= 2 + MAX_FRAME, "held {}", r.held());
        assert!(r.capacity() <= 2 * (2 + MAX_FRAME), "capacity {}", r.capacity());
    }
    assert_eq!(ended, ends);
    assert_eq!(got, want);
});
