//! CHAP on untrusted login keys: the target side of one exchange fed with
//! arbitrary key=value pairs, plus the binary-value decoder on raw strings.
#![no_main]
use iscsi_wire::chap::{decode_binary, ChapCredentials, ChapServer};
use iscsi_wire::text::parse_pairs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = decode_binary(s);
    }
    let Ok(pairs) = parse_pairs(data) else {
        return;
    };
    let creds = ChapCredentials {
        userid: "user".into(),
        password: "secret-secret".into(),
        mutual_userid: Some("target".into()),
        mutual_password: Some("other-secret".into()),
    };
    let mut srv = ChapServer::new(creds, 7, [0x5a; 16]);
    // Feed the same pairs twice: the second step sees the state the first left.
    for _ in 0..2 {
        if srv.step(&pairs).is_err() {
            break;
        }
    }
});
