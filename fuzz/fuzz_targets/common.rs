//! Shared rig for the targets that drive the real command emulation: thin
//! RAM-backed LUs (no file I/O) and one call that runs a CDB through
//! `LunTable::execute`, asserting what every answer must satisfy.
#![allow(dead_code)]
use std::sync::Arc;

use backstore::RamBackstore;
use target_core::{
    Command, Device, DeviceOptions, IoEngine, Lun, LunTable, Nexus, Outcome, Status, TaskAttr,
};

/// 64 KiB LUs: big enough for multi-block commands, cheap to build per input.
pub const LU_BYTES: u64 = 64 << 10;

pub fn device(n: u8) -> Arc<Device> {
    let ram = RamBackstore::new(LU_BYTES).expect("ram backstore");
    Device::new(
        DeviceOptions {
            name: format!("fuzz{n}"),
            wwn: format!("f0f0f0f0-0000-4000-8000-0000000000{n:02x}"),
            block_size: 512,
            vendor: "RTARGET".into(),
            product: "RAMDISK".into(),
            revision: "0.1".into(),
            write_cache: true,
            read_only: false,
            thin_provisioning: true,
            io_engine: IoEngine::Inline,
        },
        Arc::new(ram),
    )
}

/// `count` LUs, LUN i -> device i.
pub fn table(count: u8) -> LunTable {
    LunTable {
        luns: (0..count)
            .map(|i| Lun {
                id: u64::from(i),
                device: device(i),
                write_protect: false,
            })
            .collect(),
    }
}

/// A fresh table whose power-on unit attention each of `nexuses` has
/// already seen (TEST UNIT READY until GOOD): otherwise the first command
/// of every input would stop at the UNIT ATTENTION and never reach the
/// code under test.
pub fn fresh_table(count: u8, nexuses: &[Nexus]) -> LunTable {
    let luns = table(count);
    let mut data_in = Vec::new();
    for n in nexuses {
        for lun in 0..u64::from(count) {
            for _ in 0..4 {
                if exec(&luns, n, lun, &[0; 6], &[], &mut data_in).status == Status::Good {
                    break;
                }
            }
        }
    }
    luns
}

/// Nexus `i` (distinct initiator ports, same target port).
pub fn nexus(i: u8) -> Nexus {
    Nexus {
        id: u64::from(i) + 1,
        initiator_port: format!("iqn.2026-11.org.fuzz:i{i},i,0x00000000000{i}"),
        target_port: "iqn.2026-11.org.fuzz:t,t,0x0001".into(),
        relative_port_id: 1,
        tpg_tag: 1,
    }
}

/// Run one command; a CHECK CONDITION must carry sense.
pub fn exec(
    luns: &LunTable,
    n: &Nexus,
    lun: u64,
    cdb: &[u8],
    data_out: &[u8],
    data_in: &mut Vec<u8>,
) -> Outcome {
    let expected_len = data_out.len().max(4096) as u32;
    let cmd = Command {
        cdb,
        data_out,
        expected_len,
        attr: TaskAttr::Simple,
    };
    let out = luns.execute(n, lun, &cmd, data_in);
    if out.status == Status::CheckCondition {
        assert!(out.sense.is_some(), "CHECK CONDITION without sense");
    }
    out
}
