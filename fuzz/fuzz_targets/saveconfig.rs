//! saveconfig.json on untrusted text: parse, validate (which parses every
//! storage-object, TPG and ACL attribute map and the TPG parameters through
//! config::settings, and checks the ALUA groups), and what parses must
//! serialize to JSON that parses back to the same model.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = config::parse_str(text, Path::new("fuzz.json")) else {
        return;
    };
    let _ = config::validate(&cfg);
    let json = config::to_json(&cfg);
    let again = config::parse_str(&json, Path::new("again.json")).expect("saved JSON parses");
    assert_eq!(config::to_json(&again), json, "saveconfig round trip");
});
