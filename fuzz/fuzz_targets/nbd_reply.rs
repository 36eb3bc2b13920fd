//! NBD replies and handshakes on untrusted server bytes: the client's
//! parsers must answer with an error (or the server's answer), never panic,
//! never write outside the READ buffer and never claim more bytes than given.
//! The first two bytes pick the mode: structured or simple replies, READ /
//! block status / no payload, the READ length, and a handshake run.
#![no_main]
use backstore::nbd::{parse_handshake, parse_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, len, rest @ ..] = data else {
        return;
    };
    if mode & 0x80 != 0 {
        let _ = parse_handshake(rest, "disk");
        return;
    }
    let structured = mode & 1 != 0;
    let status = mode & 2 != 0;
    let mut buf = vec![0u8; usize::from(*len) * 16];
    let ctx = (mode & 4 != 0).then_some(u32::from(mode >> 3));
    if let Ok((used, _answer)) = parse_reply(rest, structured, 7, 4096, &mut buf, status, ctx) {
        assert!(used <= rest.len());
    }
});
