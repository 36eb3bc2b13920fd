//! Frontend and backend in one process: rust-vmm's vhost-user frontend over
//! the target's real unix socket, a memfd as guest memory, and the split
//! virtqueues driven by `common::Guest`. Covers the SCSI data path, the
//! virtio LUN format, multi-queue, indirect descriptors, EVENT_IDX,
//! control-queue TMFs, hotplug events and guest detach.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use backstore::Backstore;
use common::*;
use target_core::{Device, DeviceOptions, Lun, LunTable};
use vhost_scsi::virtio::*;
use vhost_scsi::{VhostConfig, VhostServer};

const TARGET: u8 = 1;
const BLOCKS: u64 = 16384; // 8 MiB of 512-byte blocks

fn device(name: &str, size: u64) -> Arc<Device> {
    let store = Arc::new(backstore::RamBackstore::new(size).unwrap());
    Device::new(
        DeviceOptions::new(name, "6b2b3c4d-0000-4000-8000-00000000000a"),
        store,
    )
}

fn table(devs: &[(u64, &Arc<Device>)]) -> LunTable {
    LunTable {
        luns: devs
            .iter()
            .map(|(id, d)| Lun {
                id: *id,
                device: Arc::clone(d),
                write_protect: false,
            })
            .collect(),
    }
}

fn server(dir: &tempfile::TempDir, luns: LunTable) -> VhostServer {
    let mut cfg = VhostConfig::new(
        dir.path().join("sub/vhost.sock"),
        "naa.5001405a1b2c3d4e",
        "naa.5001405f00d00001",
    );
    cfg.target_id = TARGET;
    cfg.request_queues = 4;
    VhostServer::start(cfg, luns).unwrap()
}

fn lun(l: u64) -> [u8; 8] {
    encode_lun(TARGET, l)
}

const TUR: [u8; 6] = [0; 6];

#[test]
fn scsi_over_vhost_user() {
    let dir = tempfile::tempdir().unwrap();
    let disk = device("disk0", BLOCKS * 512);
    let srv = server(&dir, table(&[(0, &disk)]));
    let sock = dir.path().join("sub/vhost.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket is private");
    assert!(!srv.connected());

    // 2 request queues used of the 4 offered (GET_QUEUE_NUM says 6).
    let mut g = Guest::connect(&sock, 4);
    assert_eq!(g.frontend_queue_num(), 6);
    assert!(g.features & (1 << 29) != 0, "EVENT_IDX offered");
    assert!(g.features & (1 << 28) != 0, "indirect descriptors offered");
    wait_until("guest attached", || srv.connected());
    assert_eq!(
        srv.shared().guest().as_deref(),
        Some("naa.5001405f00d00001")
    );

    // INQUIRY: disk, rtarget's vendor; does not consume the power-on UA.
    let r = g.scsi(0, lun(0), 1, &[0x12, 0, 0, 0, 96, 0], &[], 96, false);
    assert_eq!((r.response, r.status), (VIRTIO_SCSI_S_OK as u8, 0));
    assert_eq!(r.data[0], 0, "direct-access block device");
    assert_eq!(&r.data[8..16], b"RTARGET ");
    assert_eq!(r.used_len as usize, CMD_RESP_LEN + 96 - r.resid as usize);

    // The first TUR reports the power-on unit attention, with sense.
    let r = g.scsi(0, lun(0), 2, &TUR, &[], 0, false);
    assert_eq!(r.status, 2);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)));
    let r = g.scsi(0, lun(0), 3, &TUR, &[], 0, false);
    assert_eq!(r.status, 0);

    // READ CAPACITY(10).
    let r = g.scsi(
        0,
        lun(0),
        4,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
        8,
        false,
    );
    assert_eq!(r.status, 0);
    assert_eq!(&r.data[..4], &((BLOCKS - 1) as u32).to_be_bytes());
    assert_eq!(&r.data[4..8], &512u32.to_be_bytes());

    // WRITE(10) 8 blocks at LBA 10 through indirect descriptors on request
    // queue 1, READ(10) them back on request queue 0.
    let pattern: Vec<u8> = (0..8 * 512).map(|i| (i * 7 + 3) as u8).collect();
    let r = g.scsi(
        1,
        lun(0),
        5,
        &[0x2a, 0, 0, 0, 0, 10, 0, 0, 8, 0],
        &pattern,
        0,
        true,
    );
    assert_eq!((r.response, r.status, r.resid), (0, 0, 0), "{r:?}");
    let r = g.scsi(
        0,
        lun(0),
        6,
        &[0x28, 0, 0, 0, 0, 10, 0, 0, 8, 0],
        &[],
        8 * 512,
        false,
    );
    assert_eq!(r.status, 0);
    assert_eq!(r.data, pattern, "read back what was written");
    let mut back = vec![0u8; 512];
    disk.backstore.read_at(&mut back, 10 * 512).unwrap();
    assert_eq!(back[..], pattern[..512], "it reached the backstore");
    // A short Data-In buffer: the residual says how much was not sent.
    let r = g.scsi(0, lun(0), 7, &[0x12, 0, 0, 0, 96, 0], &[], 200, true);
    assert_eq!(r.status, 0);
    assert_eq!(r.resid, 200 - 96);

    // REPORT LUNS through the well-known LUN lists LUN 0.
    let wlun = [1, TARGET, 0xc1, 0x01, 0, 0, 0, 0];
    let r = g.scsi(
        0,
        wlun,
        8,
        &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
        256,
        false,
    );
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(&r.data[..4], &8u32.to_be_bytes(), "one LUN");
    assert_eq!(&r.data[8..16], &[0u8; 8]);

    // Another virtio target, or a malformed LUN field: BAD_TARGET.
    let r = g.scsi(0, encode_lun(TARGET + 1, 0), 9, &TUR, &[], 0, false);
    assert_eq!(r.response, VIRTIO_SCSI_S_BAD_TARGET as u8);
    let r = g.scsi(0, [0, TARGET, 0x40, 0, 0, 0, 0, 0], 10, &TUR, &[], 0, false);
    assert_eq!(r.response, VIRTIO_SCSI_S_BAD_TARGET as u8);
    // An unmapped LUN of our target: the core's SPC-4 answers.
    let r = g.scsi(0, lun(5), 11, &[0x12, 0, 0, 0, 36, 0], &[], 36, false);
    assert_eq!((r.response, r.status), (0, 0));
    assert_eq!(r.data[0], 0x7f, "peripheral qualifier 3: no LU here");
    let r = g.scsi(0, lun(5), 12, &TUR, &[], 0, false);
    assert_eq!(r.status, 2);
    assert_eq!(r.sense_triple(), Some((5, 0x25, 0)));

    // Control queue: LOGICAL UNIT RESET completes and the next command
    // sees the reset's unit attention; ABORT TASK / QUERY TASK of a tag
    // not running complete; bad LUNs are told apart.
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, lun(0), 0), 0);
    let r = g.scsi(0, lun(0), 13, &TUR, &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)));
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_ABORT_TASK, lun(0), 99), 0);
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_QUERY_TASK, lun(0), 99), 0);
    assert_eq!(
        g.tmf(VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, lun(3), 0),
        VIRTIO_SCSI_S_INCORRECT_LUN as u8
    );
    assert_eq!(
        g.tmf(VIRTIO_SCSI_T_TMF_ABORT_TASK_SET, encode_lun(7, 0), 0),
        VIRTIO_SCSI_S_BAD_TARGET as u8
    );
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET, lun(0), 0), 0);
    let r = g.scsi(0, lun(0), 13, &TUR, &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)), "I_T nexus loss");
    assert_eq!(g.tmf(77, lun(0), 0), VIRTIO_SCSI_S_FUNCTION_REJECTED as u8);
    // Asynchronous notification: none offered (event_actual 0), answered OK
    // as QEMU does.
    let mut an = [0u8; AN_REQ_LEN];
    an[..4].copy_from_slice(&VIRTIO_SCSI_T_AN_SUBSCRIBE.to_le_bytes());
    an[4..12].copy_from_slice(&lun(0));
    an[12..].copy_from_slice(&0x10u32.to_le_bytes());
    let u = g.call(0, &[Buf::Out(&an), Buf::In(5)], false);
    assert_eq!((u.len, &u.bufs[0][..]), (5, &[0, 0, 0, 0, 0][..]));

    // Hotplug: a LUN added while the guest runs comes as TRANSPORT_RESET
    // RESCAN on the event queue, a removed one as REMOVED, a resize as
    // PARAM_CHANGE 2A/09.
    let disk1 = device("disk1", 1 << 20);
    let w = g.post_event_buffer();
    srv.shared().set_luns(table(&[(0, &disk), (1, &disk1)]));
    let ev = g.wait_event(&w);
    assert_eq!(ev.event, VIRTIO_SCSI_T_TRANSPORT_RESET);
    assert_eq!(ev.reason, VIRTIO_SCSI_EVT_RESET_RESCAN);
    assert_eq!(ev.lun, event_lun(TARGET, 1));
    let r = g.scsi(0, lun(1), 14, &TUR, &[], 0, false);
    assert_eq!(r.status, 2, "the new LUN answers (power-on UA first)");
    disk1.resize(2 << 20).unwrap();
    // Events wait for buffers: queue two, then post buffers.
    srv.shared().lun_resized(1);
    srv.shared().set_luns(table(&[(0, &disk)]));
    let w = g.post_event_buffer();
    let ev = g.wait_event(&w);
    assert_eq!(ev.event, VIRTIO_SCSI_T_PARAM_CHANGE);
    assert_eq!(ev.reason, 0x2a | (0x09 << 8));
    let w = g.post_event_buffer();
    let ev = g.wait_event(&w);
    assert_eq!(
        (ev.event, ev.reason, ev.lun),
        (
            VIRTIO_SCSI_T_TRANSPORT_RESET,
            VIRTIO_SCSI_EVT_RESET_REMOVED,
            event_lun(TARGET, 1)
        )
    );
    // LUN 0's nexus was told the inventory changed.
    let r = g.scsi(0, lun(0), 15, &TUR, &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x3f, 0x0e)));

    // The guest goes away: the target notices and takes the next one.
    drop(g);
    wait_until("guest detached", || !srv.connected());
    let mut g = Guest::connect(&sock, 3);
    let r = g.scsi(
        0,
        lun(0),
        1,
        &[0x28, 0, 0, 0, 0, 10, 0, 0, 8, 0],
        &[],
        8 * 512,
        false,
    );
    assert_eq!(r.status, 2, "a new nexus: power-on UA");
    let r = g.scsi(
        0,
        lun(0),
        1,
        &[0x28, 0, 0, 0, 0, 10, 0, 0, 8, 0],
        &[],
        8 * 512,
        false,
    );
    assert_eq!((r.status, r.data == pattern), (0, true));
}

/// Stopping the target with a guest attached closes the guest's socket,
/// joins the threads and removes the socket file.
#[test]
fn stop_with_guest_attached() {
    let dir = tempfile::tempdir().unwrap();
    let disk = device("disk0", 1 << 20);
    let mut srv = server(&dir, table(&[(0, &disk)]));
    let sock = dir.path().join("sub/vhost.sock");
    let mut g = Guest::connect(&sock, 3);
    wait_until("guest attached", || srv.connected());
    let r = g.scsi(0, lun(0), 1, &[0x12, 0, 0, 0, 36, 0], &[], 36, false);
    assert_eq!(r.status, 0);
    srv.stop();
    assert!(!srv.connected());
    assert!(!sock.exists());
    assert!(g.frontend_queue_num_fails());
}

/// A RAM backstore whose reads wait at a gate the test opens, so a command
/// stays running in the engine's pool while others are sent.
struct Gated {
    inner: backstore::RamBackstore,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    open: (std::sync::Mutex<bool>, std::sync::Condvar),
}

impl backstore::Backstore for Gated {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn capabilities(&self) -> backstore::Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let _ = self.entered.lock().unwrap().send(());
        let mut open = self.open.0.lock().unwrap();
        while !*open {
            open = self.open.1.wait(open).unwrap();
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An `io_engine=pool` LU through the engine: answers come back from the
/// worker pool on the request queue they came from (thread 0 reaps them);
/// an ORDERED command waits behind a running READ and holds a SIMPLE one
/// behind it; ABORT TASK of the held ORDERED command on the control queue
/// returns its chain ABORTED and lets the SIMPLE one run while the READ
/// still runs; the READ then completes with its data.
#[test]
fn pool_lu_ordered_and_abort_task_through_the_control_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, entered) = std::sync::mpsc::channel();
    let store = Arc::new(Gated {
        inner: backstore::RamBackstore::new(1 << 20).unwrap(),
        entered: std::sync::Mutex::new(tx),
        open: Default::default(),
    });
    let mut opts = DeviceOptions::new("pool0", "6b2b3c4d-0000-4000-8000-00000000000b");
    opts.io_engine = target_core::IoEngine::Pool;
    let disk = Device::new(opts, store.clone());
    let srv = server(&dir, table(&[(0, &disk)]));
    let mut g = Guest::connect(&dir.path().join("sub/vhost.sock"), 3);
    wait_until("guest attached", || srv.connected());

    // Answered through the engine (the pool LU never runs inline).
    let r = g.scsi(0, lun(0), 1, &TUR, &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)), "power-on UA");

    let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let (h7, w7) = g.post_scsi(0, lun(0), 7, VIRTIO_SCSI_S_SIMPLE, &read, 512);
    entered.recv().unwrap();
    let (h8, w8) = g.post_scsi(0, lun(0), 8, VIRTIO_SCSI_S_ORDERED, &TUR, 0);
    let (h9, w9) = g.post_scsi(0, lun(0), 9, VIRTIO_SCSI_S_SIMPLE, &TUR, 0);
    // Both reach the task set (the request queue's thread takes them in
    // order) and stay there, not answered: they wait behind the READ.
    let succeeded = VIRTIO_SCSI_S_FUNCTION_SUCCEEDED as u8;
    wait_until("9 in the task set", || {
        g.tmf(VIRTIO_SCSI_T_TMF_QUERY_TASK, lun(0), 9) == succeeded
    });
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_QUERY_TASK, lun(0), 8), succeeded);

    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_ABORT_TASK, lun(0), 8), 0);
    assert_eq!(g.wait_used_id(2), (h8, CMD_RESP_LEN as u32));
    assert_eq!(g.scsi_resp(&w8).response, VIRTIO_SCSI_S_ABORTED as u8);
    assert_eq!(g.wait_used_id(2).0, h9, "released by the abort");
    let r9 = g.scsi_resp(&w9);
    assert_eq!((r9.response, r9.status), (0, 0));
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_QUERY_TASK, lun(0), 7), succeeded);

    store.inner.write_at(&[0x5a; 512], 0).unwrap();
    *store.open.0.lock().unwrap() = true;
    store.open.1.notify_all();
    assert_eq!(g.wait_used_id(2), (h7, (CMD_RESP_LEN + 512) as u32));
    let r7 = g.scsi_resp(&w7);
    assert_eq!((r7.response, r7.status, r7.resid), (0, 0, 0));
    assert_eq!(g.read_bufs(&w7[1..])[0], vec![0x5a; 512]);
    assert_eq!(g.tmf(VIRTIO_SCSI_T_TMF_QUERY_TASK_SET, lun(0), 0), 0);
}

/// Event buffers the guest posts while no event is pending wait for
/// events; with EVENT_IDX they must not keep thread 0 (control, event and
/// the engine's answers) looping over them: a pool LU's answer arrives.
#[test]
fn idle_event_buffers_do_not_stall_engine_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DeviceOptions::new("pool1", "6b2b3c4d-0000-4000-8000-00000000000d");
    opts.io_engine = target_core::IoEngine::Pool;
    let store = Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
    let disk = Device::new(opts, store);
    let srv = server(&dir, table(&[(0, &disk)]));
    let mut g = Guest::connect(&dir.path().join("sub/vhost.sock"), 3);
    assert!(g.features & (1 << 29) != 0, "EVENT_IDX negotiated");
    wait_until("guest attached", || srv.connected());
    for _ in 0..4 {
        g.post_event_buffer();
    }
    let r = g.scsi(0, lun(0), 1, &TUR, &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)), "answered by thread 0");
    let r = g.scsi(0, lun(0), 2, &TUR, &[], 0, false);
    assert_eq!(r.status, 0);
}
