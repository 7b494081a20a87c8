//! The management endpoint under slow clients: a request (arbitrary bytes) fed to the head
//! reader in arbitrary small chunks, as a client trickling it would send it, gives the same
//! head, the same parse and the same verdict (answer, 400 or 401, with and without a token)
//! as the request fed at once; the head never grows past `MAX_REQUEST_HEAD`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metalvpc_common::{check_request, HeadReader, MgmtToken, MAX_REQUEST_HEAD};

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (sizes, request) = input;
    let mut whole = HeadReader::default();
    whole.feed(&request);
    let mut slow = HeadReader::default();
    let (mut at, mut i) = (0, 0);
    while at < request.len() {
        let n = sizes.get(i).map_or(1, |&s| usize::from(s % 8).max(1));
        i += 1;
        let end = (at + n).min(request.len());
        slow.feed(&request[at..end]);
        assert!(slow.head().len() <= MAX_REQUEST_HEAD);
        at = end;
    }
    assert_eq!(slow.head(), whole.head());
    assert_eq!(slow.is_done(), whole.is_done());
    let token = MgmtToken::from_text(b"fuzz-token-0123456789").unwrap();
    for t in [None, Some(&token)] {
        assert_eq!(check_request(slow.head(), t), check_request(whole.head(), t));
    }
});
