//! A backstore may keep a WRITE's buffer (rbd hands it to librbd instead of
//! a copy): the task's answer still counts the Data-Out it carried (the
//! fabric's residual and statistics), with no buffer to give back.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use backstore::{Backstore, Capabilities, Completion, IoOp, RamBackstore};
use common::{clear_power_on_ua, limits, nexus, one_lun};
use target_core::engine::{Cdb, Finished, Task, TaskQueue};
use target_core::{Device, DeviceOptions, Status, TaskAttr};

/// A RAM disk whose asynchronous writes keep their buffer.
struct KeepsWrites(RamBackstore);

impl Backstore for KeepsWrites {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            async_submit: true,
            ..self.0.capabilities()
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn submit(&self, mut op: IoOp, done: Completion) {
        let r = op.run_sync(&self.0);
        if let IoOp::Write { buf, .. } = &mut op {
            drop(std::mem::take(buf));
        }
        done.complete(op, r)
    }
}

#[test]
fn a_write_whose_buffer_the_backstore_kept_counts_its_data_out() {
    let mut o = DeviceOptions::new("keep0", "5b3c9a2e-0000-4000-8000-0000000000f7");
    o.write_cache = false;
    let store = Arc::new(KeepsWrites(RamBackstore::new(1 << 20).unwrap()));
    let luns = one_lun(Device::new(o, store));
    let nexus = Arc::new(nexus());
    clear_power_on_ua(&luns, &nexus);
    let mut q: TaskQueue<()> = TaskQueue::new(limits());
    // WRITE(10) of 128 blocks at LBA 8.
    let cdb = [0x2a, 0, 0, 0, 0, 8, 0, 0, 128, 0];
    let task = Task {
        tag: 7,
        lun: 0,
        cdb: Cdb::from_slice(&cdb),
        attr: TaskAttr::Simple,
        expected_len: 65536,
        data_out: vec![0x5a; 65536],
        data_in: Vec::new(),
        long: false,
    };
    assert!(q.submit(&luns, &nexus, task, ()).is_ok());
    let mut answers: Vec<Finished<()>> = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while answers.is_empty() && Instant::now() < until {
        q.reap(|f| answers.push(f));
        std::thread::sleep(Duration::from_millis(1));
    }
    let f = answers.pop().expect("the write was answered");
    assert_eq!(f.out.status, Status::Good);
    assert!(f.data_out.is_empty(), "the backstore kept the buffer");
    assert_eq!(
        f.data_out.len() + f.streamed,
        65536,
        "the Data-Out the write carried"
    );
    // The data is there.
    let mut back = vec![0; 65536];
    luns.luns[0]
        .device
        .backstore
        .read_at(&mut back, 8 * 512)
        .unwrap();
    assert!(back.iter().all(|&b| b == 0x5a));
}
