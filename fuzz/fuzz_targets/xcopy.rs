//! EXTENDED COPY (LID1) parameter lists (header, identification CSCD
//! target descriptors, block-to-block segments) through the real copy
//! manager between two RAM LUs, then RECEIVE COPY RESULTS. The designators
//! the copy manager matches are 16 bytes a fuzzer would never guess: when
//! bit 0 of the first byte is set, the harness writes the real designator
//! of LU (bit 1 / bit 2) into the first / second target descriptor. Bit 3
//! makes the CDB's parameter list length disagree with the Data-Out.
#![no_main]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use target_core::{LunTable, Nexus};

struct Rig {
    luns: LunTable,
    nexus: Nexus,
    /// Per LU: the 20 bytes of its NAA designator (4-byte header + 16 NAA 6).
    naa: Vec<[u8; 20]>,
}

/// The LU-associated NAA designator from Device Identification VPD (0x83).
fn designator(luns: &LunTable, n: &Nexus, lun: u64) -> [u8; 20] {
    let mut page = Vec::new();
    common::exec(luns, n, lun, &[0x12, 1, 0x83, 0x10, 0, 0], &[], &mut page);
    let mut at = 4;
    while at + 4 <= page.len() {
        let len = usize::from(page[at + 3]);
        if page[at + 1] & 0x3f == 0x03 && len == 16 {
            return page[at..at + 20].try_into().expect("20 bytes");
        }
        at += 4 + len;
    }
    panic!("no NAA designator for LUN {lun}");
}

fn rig() -> &'static Rig {
    static R: OnceLock<Rig> = OnceLock::new();
    R.get_or_init(|| {
        let nexus = common::nexus(0);
        let luns = common::fresh_table(2, std::slice::from_ref(&nexus));
        let naa = (0..2).map(|l| designator(&luns, &nexus, l)).collect();
        Rig { luns, nexus, naa }
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, params @ ..] = data else {
        return;
    };
    let r = rig();
    let mut params = params.to_vec();
    if flags & 1 != 0 {
        for i in 0..2 {
            let at = 16 + 32 * i;
            if params.len() >= at + 24 {
                let lu = usize::from(flags >> (1 + i)) & 1;
                params[at + 4..at + 24].copy_from_slice(&r.naa[lu]);
            }
        }
    }
    let len = if flags & 8 != 0 {
        params.len() as u32 ^ u32::from(flags >> 4)
    } else {
        params.len() as u32
    };
    let l = len.to_be_bytes();
    let cdb = [
        0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1], l[2], l[3], 0, 0,
    ];
    let mut data_in = Vec::new();
    common::exec(&r.luns, &r.nexus, 0, &cdb, &params, &mut data_in);
    // RECEIVE COPY RESULTS: COPY STATUS for this list identifier, then
    // OPERATING PARAMETERS.
    let id = params.first().copied().unwrap_or(0);
    for (sa, id) in [(0, id), (3, 0)] {
        let cdb = [0x84, sa, id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        common::exec(&r.luns, &r.nexus, 0, &cdb, &[], &mut data_in);
    }
});
