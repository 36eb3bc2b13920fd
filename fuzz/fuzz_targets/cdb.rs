//! The target core on untrusted CDBs: any CDB with any Data-Out against a small
//! thin RAM LU must produce a status (and sense on CHECK CONDITION), never a
//! panic. Input layout: 1 byte CDB length selector, the CDB, then Data-Out.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let cdb_len = [6usize, 10, 12, 16][usize::from(sel & 3)];
    if rest.len() < cdb_len {
        return;
    }
    let (cdb, data_out) = rest.split_at(cdb_len);
    // A fresh 64 KiB LU per input: state one input leaves (an ALUA state
    // whose nonop/transition delay sleeps on every later command, a
    // reservation, a sanitize failure) must not slow or steer the next,
    // and a crash must replay from its input alone.
    let nexus = common::nexus(0);
    let luns = common::fresh_table(1, std::slice::from_ref(&nexus));
    let mut data_in = Vec::new();
    common::exec(&luns, &nexus, 0, cdb, data_out, &mut data_in);
});
