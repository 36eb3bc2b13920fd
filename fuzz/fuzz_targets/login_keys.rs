//! Login/Text key=value parsing and negotiation on untrusted bytes: parse the
//! data segment, then let a fresh negotiator answer it in both stages.
#![no_main]
use iscsi_wire::negotiate::{Negotiator, Stage, TargetOffer};
use iscsi_wire::text::parse_pairs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse_pairs(data) {
        for stage in [Stage::Security, Stage::Operational] {
            let mut neg = Negotiator::new(TargetOffer::default());
            let _ = neg.respond(&pairs, stage);
            let _ = neg.declarations();
        }
    }
});
