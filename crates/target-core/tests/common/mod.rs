//! The set-up the engine tests share: one LU as LUN 0, one nexus, the
//! power-on unit attention cleared, a queue with ample memory limits.
#![allow(dead_code)]

use std::sync::Arc;

use target_core::engine::Limits;
use target_core::{Command, Device, Lun, LunTable, Nexus, TaskAttr};

/// `dev` as LUN 0 of a table of its own.
pub fn one_lun(dev: Arc<Device>) -> Arc<LunTable> {
    Arc::new(LunTable {
        luns: vec![Lun {
            id: 0,
            device: dev,
            write_protect: false,
        }],
    })
}

/// The one I_T nexus of a test.
pub fn nexus() -> Nexus {
    Nexus {
        id: 1,
        initiator_port: "i".into(),
        target_port: "t".into(),
        relative_port_id: 1,
        tpg_tag: 1,
    }
}

/// Answer the power-on unit attention (a TEST UNIT READY takes it), so the
/// commands a test sends see none.
pub fn clear_power_on_ua(luns: &LunTable, nexus: &Nexus) {
    let tur = Command {
        cdb: &[0; 6],
        data_out: &[],
        expected_len: 0,
        attr: TaskAttr::Simple,
    };
    luns.execute(nexus, 0, &tur, &mut Vec::new());
}

/// Memory limits no test reaches.
pub fn limits() -> Limits {
    Limits {
        queue_bytes: 64 << 20,
        total_bytes: 1 << 40,
    }
}
