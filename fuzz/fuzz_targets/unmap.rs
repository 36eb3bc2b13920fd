//! UNMAP parameter lists through the real emulation (thin RAM LU): the
//! first byte is CDB byte 1 (ANCHOR), the second the group/flags that pick
//! a CDB parameter list length equal to, shorter than or longer than the
//! Data-Out; the rest is the parameter list.
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
    let [b1, sel, params @ ..] = data else {
        return;
    };
    let (luns, n) = rig();
    let len = match sel & 3 {
        0 => params.len(),
        1 => params.len() / 2,
        2 => params.len() + usize::from(*sel >> 2),
        _ => usize::from(*sel),
    };
    let l = (len.min(0xffff) as u16).to_be_bytes();
    let cdb = [0x42, *b1, 0, 0, 0, 0, 0, l[0], l[1], 0];
    let mut data_in = Vec::new();
    common::exec(luns, n, 0, &cdb, params, &mut data_in);
});
