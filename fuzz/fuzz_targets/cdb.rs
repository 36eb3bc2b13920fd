//! The target core on untrusted CDBs: any CDB with any Data-Out against a small
//! thin RAM LU must produce a status (and sense on CHECK CONDITION), never a
//! panic. Input layout: 1 byte CDB length selector, the CDB, then Data-Out.
#![no_main]
use std::sync::{Arc, OnceLock};

use backstore::RamBackstore;
use libfuzzer_sys::fuzz_target;
use target_core::{Command, Device, DeviceOptions, Lun, LunTable, Nexus, Status, TaskAttr};

fn table() -> &'static (LunTable, Nexus) {
    static T: OnceLock<(LunTable, Nexus)> = OnceLock::new();
    T.get_or_init(|| {
        let ram = RamBackstore::new(1 << 20).expect("ram backstore");
        let dev = Device::new(
            DeviceOptions {
                name: "fuzz0".into(),
                wwn: "f0f0f0f0-0000-4000-8000-000000000001".into(),
                block_size: 512,
                vendor: "RTARGET".into(),
                product: "RAMDISK".into(),
                revision: "0.1".into(),
                write_cache: true,
                read_only: false,
                thin_provisioning: true,
                io_engine: target_core::IoEngine::Inline,
            },
            Arc::new(ram),
        );
        let luns = LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect: false,
            }],
        };
        let nexus = Nexus {
            id: 1,
            initiator_port: "iqn.2026-11.org.fuzz:i,i,0x000000000001".into(),
            target_port: "iqn.2026-11.org.fuzz:t,t,0x0001".into(),
            relative_port_id: 1,
            tpg_tag: 1,
        };
        (luns, nexus)
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
    let cmd = Command {
        cdb,
        data_out,
        expected_len: data_out.len().max(4096) as u32,
        attr: TaskAttr::Simple,
    };
    let mut data_in = Vec::new();
    let out = luns.execute(nexus, 0, &cmd, &mut data_in);
    if out.status == Status::CheckCondition {
        assert!(out.sense.is_some(), "CHECK CONDITION without sense");
    }
});
