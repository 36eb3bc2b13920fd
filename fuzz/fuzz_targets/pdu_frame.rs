//! PDU framing on untrusted bytes: every prefix of the input is offered to the
//! framer with every digest setting; it must answer "need more", a frame that
//! lies inside the buffer, or an error — never panic.
#![no_main]
use iscsi_wire::{parse_frame, Digests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (header, data_digest) in [(false, false), (true, false), (true, true)] {
        let digests = Digests {
            header,
            data: data_digest,
        };
        let mut rest = data;
        // Walk the buffer frame by frame as the connection loop does.
        while let Ok(Some(frame)) = parse_frame(rest, digests, 262_144) {
            let len = frame.total_len;
            assert!(len > 0 && len <= rest.len());
            rest = &rest[len..];
        }
    }
});
