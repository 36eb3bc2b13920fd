//! MODE SELECT (6)/(10) parameter lists (header, block descriptors, pages)
//! through the real emulation on a fresh RAM LU per input, then MODE SENSE
//! of all pages so what was accepted is rendered back. First byte: bit 0
//! picks (6)/(10), bits 1-2 PF/SP, bits 3-4 how the CDB length relates to
//! the Data-Out; the rest is the parameter list.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [sel, params @ ..] = data else {
        return;
    };
    let n = common::nexus(0);
    let luns = common::fresh_table(1, std::slice::from_ref(&n));
    let len = match (sel >> 3) & 3 {
        0 | 1 => params.len(),
        2 => params.len() / 2,
        _ => params.len() + 8,
    };
    let flags = ((sel << 3) & 0x10) | ((sel >> 2) & 1);
    let cdb: Vec<u8> = if sel & 1 == 0 {
        vec![0x15, flags, 0, 0, len.min(0xff) as u8, 0]
    } else {
        let l = (len.min(0xffff) as u16).to_be_bytes();
        vec![0x55, flags, 0, 0, 0, 0, 0, l[0], l[1], 0]
    };
    let mut data_in = Vec::new();
    common::exec(&luns, &n, 0, &cdb, params, &mut data_in);
    // MODE SENSE (10), all pages, current and saved values.
    for pc in [0x3f, 0xff] {
        common::exec(
            &luns,
            &n,
            0,
            &[0x5a, 0, pc, 0, 0, 0, 0, 0x10, 0, 0],
            &[],
            &mut data_in,
        );
    }
});
