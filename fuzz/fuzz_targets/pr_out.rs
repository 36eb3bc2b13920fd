//! PERSISTENT RESERVE OUT parameter lists (basic list, SPEC_I_PT
//! TransportIDs, REGISTER AND MOVE) through the real emulation: a fresh RAM
//! LU per input, three nexuses, up to 8 commands, with PERSISTENT RESERVE
//! IN reading the state back. Each record: flags (bits 0-1 nexus, bit 7
//! PR IN instead, bit 6 Data-Out shorter than the CDB says), service
//! action, scope/type, parameter list length, the list.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let nexuses = [common::nexus(0), common::nexus(1), common::nexus(2)];
    let luns = common::fresh_table(1, &nexuses);
    let mut rest = data;
    let mut data_in = Vec::new();
    for _ in 0..8 {
        let [flags, sa, scope_type, len_byte, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(*len_byte).min(tail.len());
        let (params, tail) = tail.split_at(len);
        rest = tail;
        let n = &nexuses[usize::from(flags & 3) % 3];
        if flags & 0x80 != 0 {
            // PR IN: READ KEYS / READ RESERVATION / REPORT CAPABILITIES /
            // READ FULL STATUS, allocation length from the next byte.
            let cdb = [0x5e, sa & 0x1f, 0, 0, 0, 0, 0, *scope_type, *len_byte, 0];
            common::exec(&luns, n, 0, &cdb, &[], &mut data_in);
            continue;
        }
        let l = (params.len() as u32).to_be_bytes();
        let cdb = [
            0x5f,
            sa & 0x1f,
            *scope_type,
            0,
            0,
            l[0],
            l[1],
            l[2],
            l[3],
            0,
        ];
        let out = if flags & 0x40 != 0 {
            &params[..params.len() / 2]
        } else {
            params
        };
        common::exec(&luns, n, 0, &cdb, out, &mut data_in);
    }
});
