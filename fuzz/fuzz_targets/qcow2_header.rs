//! qcow2 header parsing on untrusted image bytes: an error or a header whose
//! derived sizes are sane, never a panic or an overflow.
#![no_main]
use backstore::qcow2::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
});
