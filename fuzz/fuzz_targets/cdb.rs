//! The target core on untrusted CDBs: any CDB with any Data-Out against a small
//! thin RAM LU must produce a status (and sense on CHECK CONDITION), never a
//! panic. Input layout: 1 byte CDB length selector, the CDB, then Data-Out.
#![no_main]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use target_core::{LunTable, Nexus};

/// A 64 KiB LU: whole-LU commands (WRITE SAME with 0 blocks, FORMAT UNIT,
/// SANITIZE, big READs) cost little, so the fuzzer spends its time on
/// decoding rather than on copying.
fn table() -> &'static (LunTable, Nexus) {
    static T: OnceLock<(LunTable, Nexus)> = OnceLock::new();
    T.get_or_init(|| {
        let n = common::nexus(0);
        (common::fresh_table(1, std::slice::from_ref(&n)), n)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let cdb_len = [6usize, 10, 12, 16][usize::from(sel & 3)];
    if rest.len() < cdb_len {
        return;
    }
    let (cdb, data_out) = rest.split_at(cdb_len);
    let (luns, nexus) = table();
    let mut data_in = Vec::new();
    common::exec(luns, nexus, 0, cdb, data_out, &mut data_in);
});
