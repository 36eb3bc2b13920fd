//! The zero-copy data path: READ and WRITE data move between the backstore
//! and the guest's own buffers (`Backstore::read_vectored_at` /
//! `write_vectored_at` on lent guest memory), never through the slice
//! methods and a core `Vec`; small transfers inline on the queue's thread,
//! large ones on the engine's workers. Other commands (INQUIRY) bounce.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use backstore::{Backstore, Capabilities, IoVecs, RamBackstore};
use common::*;
use target_core::{Device, DeviceOptions, Lun, LunTable};
use vhost_scsi::virtio::*;
use vhost_scsi::{VhostConfig, VhostServer};

/// A RAM backstore that counts which path the data took.
struct Counting {
    inner: RamBackstore,
    slices: AtomicUsize,
    vectored: AtomicUsize,
    /// Bytes moved through the vectored methods.
    vectored_bytes: AtomicUsize,
}

impl Backstore for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.slices.fetch_add(1, Ordering::SeqCst);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.slices.fetch_add(1, Ordering::SeqCst);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn read_vectored_at(&self, bufs: &IoVecs, offset: u64) -> std::io::Result<()> {
        self.vectored.fetch_add(1, Ordering::SeqCst);
        self.vectored_bytes.fetch_add(bufs.len(), Ordering::SeqCst);
        let mut v = vec![0u8; bufs.len()];
        self.inner.read_at(&mut v, offset)?;
        bufs.copy_from(&v);
        Ok(())
    }
    fn write_vectored_at(&self, bufs: &IoVecs, offset: u64, _fua: bool) -> std::io::Result<()> {
        self.vectored.fetch_add(1, Ordering::SeqCst);
        self.vectored_bytes.fetch_add(bufs.len(), Ordering::SeqCst);
        let mut v = Vec::new();
        bufs.copy_to(&mut v);
        self.inner.write_at(&v, offset)
    }
}

fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn read_and_write_use_the_guests_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Counting {
        inner: RamBackstore::new(8 << 20).unwrap(),
        slices: AtomicUsize::new(0),
        vectored: AtomicUsize::new(0),
        vectored_bytes: AtomicUsize::new(0),
    });
    let disk = Device::new(
        DeviceOptions::new("zc0", "6b2b3c4d-0000-4000-8000-00000000000c"),
        store.clone(),
    );
    let luns = LunTable {
        luns: vec![Lun {
            id: 0,
            device: disk,
            write_protect: false,
        }],
    };
    let mut cfg = VhostConfig::new(
        dir.path().join("vhost.sock"),
        "naa.5001405a1b2c3d4f",
        "naa.5001405f00d00002",
    );
    cfg.target_id = 1;
    cfg.request_queues = 2;
    let srv = VhostServer::start(cfg, luns).unwrap();
    let mut g = Guest::connect(&dir.path().join("vhost.sock"), 4);
    wait_until("guest attached", || srv.connected());
    let lun = encode_lun(1, 0);
    let r = g.scsi(0, lun, 1, &[0; 6], &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)), "power-on UA");

    // Small (inline on the queue's thread) and large (the engine's
    // workers: at least 128 KiB) transfers, Data-In over two descriptors.
    for (tag, blocks) in [(10u64, 8u16), (20, 512)] {
        let len = usize::from(blocks) * 512;
        let pattern: Vec<u8> = (0..len).map(|i| (i * 7 + tag as usize) as u8).collect();
        let w = g.scsi(0, lun, tag, &rw10(0x2a, 16, blocks), &pattern, 0, true);
        assert_eq!((w.response, w.status, w.resid), (0, 0, 0), "{w:?}");
        let r = g.scsi(0, lun, tag + 1, &rw10(0x28, 16, blocks), &[], len, false);
        assert_eq!((r.status, r.resid), (0, 0));
        assert_eq!(r.used_len as usize, CMD_RESP_LEN + len);
        assert_eq!(r.data, pattern, "{len} bytes read back");
    }
    assert_eq!(store.slices.load(Ordering::SeqCst), 0, "no slice I/O");
    assert_eq!(store.vectored.load(Ordering::SeqCst), 4);
    assert_eq!(
        store.vectored_bytes.load(Ordering::SeqCst),
        2 * (8 + 512) * 512
    );

    // A READ longer than the guest's buffer fills what fits.
    let r = g.scsi(0, lun, 30, &rw10(0x28, 16, 2), &[], 700, false);
    assert_eq!((r.status, r.used_len as usize), (0, CMD_RESP_LEN + 700));
    // Other commands bounce: INQUIRY lands in the guest's buffer.
    let r = g.scsi(1, lun, 31, &[0x12, 0, 0, 0, 96, 0], &[], 96, false);
    assert_eq!((r.status, &r.data[8..16]), (0, &b"RTARGET "[..]));
    assert_eq!(store.slices.load(Ordering::SeqCst), 0);
}
