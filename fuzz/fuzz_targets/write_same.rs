//! WRITE SAME (10) and (16) through the real emulation (thin RAM LU):
//! the first byte's low bit picks the CDB form, the next 16 bytes fill the CDB fields
//! (flags, LBA, block count, ...), the rest is the Data-Out block. UNMAP,
//! ANCHOR and NDOB paths included; the ranges are checked by the core.
#![no_main]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use target_core::{LunTable, Nexus};

fn rig() -> &'static (LunTable, Nexus) {
    static R: OnceLock<(LunTable, Nexus)> = OnceLock::new();
    R.get_or_init(|| {
        let n = common::nexus(0);
        (common::fresh_table(1, std::slice::from_ref(&n)), n)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let (head, data_out) = data.split_at(17);
    let f = &head[1..];
    // The core implements the (10) and (16) forms (no variable-length CDBs).
    let cdb: Vec<u8> = if head[0] & 1 == 0 {
        [&[0x41], &f[..9]].concat()
    } else {
        [&[0x93], &f[..15]].concat()
    };
    let (luns, n) = rig();
    let mut data_in = Vec::new();
    common::exec(luns, n, 0, &cdb, data_out, &mut data_in);
});
