//! The management API's request parser on arbitrary bytes: never a panic, accepts only
//! `GET /path` with a bounded path, and answers exactly as the parser it replaced (the whole
//! head read lossily, first line, first two words).
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_common::{parse_request, Request, MAX_REQUEST_BYTES, MAX_REQUEST_PATH};

fn reference(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let first = text.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    (method == "GET" && path.starts_with('/') && path.len() <= MAX_REQUEST_PATH)
        .then(|| path.to_string())
}

fuzz_target!(|head: &[u8]| {
    let got = parse_request(head);
    if let Ok(Request { path }) = &got {
        assert!(path.starts_with('/') && path.len() <= MAX_REQUEST_PATH);
        assert!(head.len() <= MAX_REQUEST_BYTES);
    }
    if head.len() <= MAX_REQUEST_BYTES {
        assert_eq!(got.ok().map(|r| r.path), reference(head));
    }
});
