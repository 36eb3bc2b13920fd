//! Management API request lines (rtarget's proto::Request::parse) on
//! untrusted bytes: an error message or a request, never a panic. rtarget is
//! a binary crate, so its protocol module is compiled in here from source
//! (it depends only on serde, serde_json and the manage library); what
//! parses must also serialize and parse back to the same request.
#![no_main]
#![allow(dead_code, unused_imports)]

// proto.rs names the manage library's argument parsers `crate::args`, as
// rtarget's main.rs does.
use manage::args;

#[path = "../../crates/rtarget/src"]
mod rtarget {
    pub mod proto;
}

use libfuzzer_sys::fuzz_target;
use rtarget::proto::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = Request::parse(line) {
        let _ = (req.op(), req.path());
        let json = serde_json::to_string(&req).expect("a request serializes");
        let again = Request::parse(&json).expect("a serialized request parses");
        assert_eq!(again, req, "request round trip");
    }
});
