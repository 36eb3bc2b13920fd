//! The APTPL persistent reservation state file (target-core pr_file) on
//! untrusted text: parse, and what parses must survive render + parse.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        target_core::fuzz_pr_file(text);
    }
});
