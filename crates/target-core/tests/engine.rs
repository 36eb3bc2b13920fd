//! A test fabric of a few dozen lines drives LUs through the engine
//! (`target_core::engine`): SAM task ordering (ORDERED, HEAD OF QUEUE),
//! ABORT TASK of a held task, and a backstore that completes its
//! asynchronous requests later, from another thread. Nothing here sleeps
//! for timing: every wait is on an event (the queue's eventfd, the
//! backstore's condvar).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;

mod common;

use backstore::{Backstore, Capabilities, Completion, IoOp};
use common::{clear_power_on_ua, limits, nexus, one_lun};
use target_core::engine::{Cdb, Task, TaskQueue};
use target_core::{Command, Device, DeviceOptions, IoEngine, LunTable, Nexus, Status, TaskAttr};

// ---- the test fabric ----

struct Fabric {
    q: TaskQueue<&'static str>,
    luns: Arc<LunTable>,
    nexus: Arc<Nexus>,
    /// Answers in the order the fabric got them.
    answers: Vec<(&'static str, Status)>,
}

impl Fabric {
    fn new(dev: Arc<Device>) -> Fabric {
        let f = Fabric {
            q: TaskQueue::new(limits()),
            luns: one_lun(dev),
            nexus: Arc::new(nexus()),
            answers: Vec::new(),
        };
        clear_power_on_ua(&f.luns, &f.nexus);
        f
    }

    /// One command: run here when the LU is inline and ordering allows,
    /// else through the engine.
    fn send(&mut self, name: &'static str, cdb: &[u8], attr: TaskAttr, data_out: Vec<u8>) {
        let inline = self.luns.luns[0].device.options.io_engine == IoEngine::Inline;
        if inline && self.q.may_run_inline(0, attr) {
            let cmd = Command {
                cdb,
                data_out: &data_out,
                expected_len: 4096,
                attr,
            };
            let out = self.luns.execute(&self.nexus, 0, &cmd, &mut Vec::new());
            return self.answers.push((name, out.status));
        }
        let task = Task {
            tag: tag(name),
            lun: 0,
            cdb: Cdb::from_slice(cdb),
            attr,
            expected_len: 4096,
            data_out,
            data_in: Vec::new(),
            long: false,
        };
        assert!(self.q.submit(&self.luns, &self.nexus, task, name).is_ok());
    }

    /// Take the answers that came, without waiting.
    fn reap(&mut self) {
        let answers = &mut self.answers;
        self.q.reap(|f| {
            answers.push((
                f.ctx,
                if f.aborted {
                    Status::Busy
                } else {
                    f.out.status
                },
            ))
        });
    }

    /// Wait (on the queue's eventfd) until `n` answers came in all.
    fn wait_answers(&mut self, n: usize) {
        loop {
            self.reap();
            if self.answers.len() >= n {
                return;
            }
            let fd = self.q.completion_fd().expect("a task was submitted");
            if self.q.prepare_sleep() {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let fired = unsafe { libc::poll(&mut p, 1, 10_000) } == 1;
                self.q.woke(fired);
            }
        }
    }
}

/// The fabric's task tag: the name's bytes.
fn tag(name: &str) -> u64 {
    name.bytes().fold(0, |a, b| a << 8 | u64::from(b))
}

// ---- a backstore that completes later, from another thread ----

/// Keeps every submitted request until the test completes it (by its
/// offset); `started` lists the offsets in the order they were submitted.
#[derive(Default)]
struct LaterStore {
    state: Mutex<Later>,
    changed: Condvar,
    /// Says its submit never blocks (as librbd's AIO).
    never_blocks: bool,
}

#[derive(Default)]
struct Later {
    started: Vec<u64>,
    pending: Vec<(u64, IoOp, Completion)>,
    /// The thread each `submit` ran on.
    submitters: Vec<thread::ThreadId>,
}

impl LaterStore {
    fn wait_started(&self, offset: u64) {
        let mut s = self.state.lock().unwrap();
        while !s.started.contains(&offset) {
            s = self.changed.wait(s).unwrap();
        }
    }

    fn log_sync(&self, offset: u64) -> std::io::Result<()> {
        self.state.lock().unwrap().started.push(offset + 1);
        self.changed.notify_all();
        Ok(())
    }

    fn started(&self) -> Vec<u64> {
        self.state.lock().unwrap().started.clone()
    }

    /// Complete the request at `offset` from a thread of the backstore's
    /// own (as librbd's callbacks or an io_uring reaper would).
    fn complete(self: &Arc<Self>, offset: u64) {
        self.finish(offset, Ok(()))
    }

    fn finish(self: &Arc<Self>, offset: u64, result: std::io::Result<()>) {
        self.wait_started(offset);
        let me = Arc::clone(self);
        thread::spawn(move || {
            let (i, mut s) = loop {
                let s = me.state.lock().unwrap();
                if let Some(i) = s.pending.iter().position(|p| p.0 == offset) {
                    break (i, s);
                }
            };
            let (_, mut op, done) = s.pending.remove(i);
            drop(s);
            if let IoOp::Read { buf, .. } = &mut op {
                buf.fill(0xab);
            }
            done.complete(op, result);
        })
        .join()
        .unwrap();
    }
}

impl Backstore for LaterStore {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            async_submit: true,
            ..Capabilities::default()
        }
    }
    // The synchronous path (commands other than READ/WRITE, e.g. COMPARE
    // AND WRITE) reads zeroes; both log as offset + 1.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        buf.fill(0);
        self.log_sync(offset)
    }
    fn write_at(&self, _: &[u8], offset: u64) -> std::io::Result<()> {
        self.log_sync(offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn submit_never_blocks(&self) -> bool {
        self.never_blocks
    }
    fn submit(&self, op: IoOp, done: Completion) {
        let offset = match &op {
            IoOp::Read { offset, .. } | IoOp::Write { offset, .. } => *offset,
            IoOp::Flush => u64::MAX,
        };
        let mut s = self.state.lock().unwrap();
        s.started.push(offset);
        s.submitters.push(thread::current().id());
        s.pending.push((offset, op, done));
        self.changed.notify_all();
    }
}

fn pool_lu(store: Arc<LaterStore>) -> Arc<Device> {
    let mut opts = DeviceOptions::new("later", "00000000-0000-4000-8000-00000000e001");
    opts.io_engine = IoEngine::Pool;
    Device::new(opts, store)
}

/// The sense key and ASC of an answer's fixed-format sense.
fn sense_key_asc(sense: &[u8]) -> (u8, u8) {
    (sense[2] & 0x0f, sense[12])
}

/// READ(10) / WRITE(10) of one 512-byte block at `lba` (offset lba*512).
fn read(lba: u8) -> [u8; 10] {
    [0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0]
}
fn write(lba: u8) -> [u8; 10] {
    [0x2a, 0, 0, 0, 0, lba, 0, 0, 1, 0]
}

// ---- the tests ----

/// ORDERED waits for the older task and holds the newer SIMPLE one;
/// HEAD OF QUEUE runs ahead of both; each starts only when the engine
/// lets it, and the backstore completes on its own thread.
#[test]
fn ordered_waits_and_blocks_head_of_queue_goes_first() {
    let store = Arc::new(LaterStore::default());
    let mut f = Fabric::new(pool_lu(Arc::clone(&store)));
    f.send("a", &read(1), TaskAttr::Simple, Vec::new());
    store.wait_started(512);
    f.send("ord", &write(2), TaskAttr::Ordered, vec![1; 512]);
    f.send("c", &read(3), TaskAttr::Simple, Vec::new());
    f.send("hoq", &read(4), TaskAttr::HeadOfQueue, Vec::new());
    store.wait_started(4 * 512);
    assert_eq!(
        store.started(),
        [512, 4 * 512],
        "ORDERED and the SIMPLE behind it wait"
    );
    assert!(
        !f.q.may_run_inline(0, TaskAttr::Simple),
        "an inline SIMPLE would wait too"
    );
    store.complete(4 * 512);
    f.wait_answers(1);
    store.complete(512);
    // Reaping A's answer lets ORDERED start, and only it.
    f.wait_answers(2);
    store.wait_started(2 * 512);
    assert_eq!(store.started(), [512, 4 * 512, 2 * 512], "ORDERED alone");
    store.complete(2 * 512);
    f.wait_answers(3);
    store.complete(3 * 512);
    f.wait_answers(4);
    let good = Status::Good;
    assert_eq!(
        f.answers,
        [("hoq", good), ("a", good), ("ord", good), ("c", good)]
    );
    assert!(!f.q.active());
}

/// ABORT TASK of a task ordering still holds: it ends at once (without
/// running), silently or with TASK ABORTED (TAS); the running one is
/// answered normally and the queue is empty afterwards.
#[test]
fn abort_task_of_a_held_task() {
    let store = Arc::new(LaterStore::default());
    let mut f = Fabric::new(pool_lu(Arc::clone(&store)));
    f.send("a", &read(1), TaskAttr::Simple, Vec::new());
    store.wait_started(512);
    f.send("ord", &write(2), TaskAttr::Ordered, vec![1; 512]);
    f.send("c", &read(3), TaskAttr::Simple, Vec::new());
    assert_eq!(f.q.abort(|t| t.tag == tag("c"), false), 1);
    assert!(!f.q.has_tag(tag("c")));
    assert_eq!(f.q.abort(|t| t.tag == tag("ord"), true), 1);
    assert!(!f.q.aborting(), "neither had started: nothing to wait for");
    f.reap();
    assert_eq!(
        f.answers,
        [("c", Status::Busy), ("ord", Status::TaskAborted)]
    );
    store.complete(512);
    f.wait_answers(3);
    assert_eq!(f.answers[2], ("a", Status::Good));
    assert_eq!(store.started(), [512], "the aborted tasks never ran");
    assert!(!f.q.active() && f.q.live() == 0);
}

/// An inline LU runs on the fabric's thread while nothing orders it.
#[test]
fn inline_lu_runs_on_the_fabric_thread() {
    let ram = Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
    let dev = Device::new(
        DeviceOptions::new("r", "00000000-0000-4000-8000-00000000e002"),
        ram,
    );
    let mut f = Fabric::new(dev);
    f.send("w", &write(1), TaskAttr::Ordered, vec![5; 512]);
    f.send("r", &read(1), TaskAttr::Simple, Vec::new());
    assert_eq!(f.answers, [("w", Status::Good), ("r", Status::Good)]);
    assert!(
        f.q.completion_fd().is_none(),
        "the engine was never involved"
    );
}

/// An asynchronous WRITE in flight counts as shared access to the medium:
/// COMPARE AND WRITE (which needs it exclusively) waits until the
/// backstore completed it. (The check that CAW has not touched the medium
/// is a bounded wait for an event that must not come.)
#[test]
fn compare_and_write_waits_for_asynchronous_io_in_flight() {
    let store = Arc::new(LaterStore::default());
    let mut f = Fabric::new(pool_lu(Arc::clone(&store)));
    f.send("w", &write(1), TaskAttr::Simple, vec![1; 512]);
    store.wait_started(512);
    let (luns, nexus) = (Arc::clone(&f.luns), Arc::clone(&f.nexus));
    let caw = thread::spawn(move || {
        let cdb = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0];
        let data = [0u8; 1024];
        let cmd = Command {
            cdb: &cdb,
            data_out: &data,
            expected_len: 1024,
            attr: TaskAttr::Simple,
        };
        luns.execute(&nexus, 0, &cmd, &mut Vec::new()).status
    });
    {
        let s = store.state.lock().unwrap();
        let (s, _) = store
            .changed
            .wait_timeout_while(s, std::time::Duration::from_millis(300), |s| {
                s.started.len() < 2
            })
            .unwrap();
        assert_eq!(s.started, [512], "COMPARE AND WRITE ran beside the write");
    }
    store.complete(512);
    assert_eq!(caw.join().unwrap(), Status::Good);
    assert_eq!(
        store.started(),
        [512, 5 * 512 + 1, 5 * 512 + 1],
        "read, then write"
    );
    f.wait_answers(1);
}

/// The asynchronous path answers as `execute` does: a failed read from the
/// backstore's completion is MEDIUM ERROR; an LBA past the end is refused
/// before the backstore sees anything.
#[test]
fn asynchronous_errors_answer_as_the_synchronous_path() {
    let store = Arc::new(LaterStore::default());
    let f = Fabric::new(pool_lu(Arc::clone(&store)));
    let (tx, rx) = std::sync::mpsc::channel();
    let run = |cdb: &[u8]| {
        let tx = tx.clone();
        let req = target_core::Request {
            cdb,
            expected_len: 512,
            attr: TaskAttr::Simple,
            data_out: Vec::new(),
            data_in: vec![7; 64],
        };
        f.luns
            .submit(&f.nexus, 0, req, move |r| tx.send(r).unwrap());
    };
    run(&read(1));
    store.finish(512, Err(std::io::Error::other("gone")));
    let r = rx.recv().unwrap();
    assert_eq!(r.out.status, Status::CheckCondition);
    assert_eq!(
        sense_key_asc(r.out.sense.as_deref().unwrap()),
        (0x3, 0x11),
        "MEDIUM ERROR, UNRECOVERED READ ERROR"
    );
    assert!(r.data_in.is_empty(), "no Data-In with an error");
    run(&[0x28, 0, 0, 0, 0x08, 0, 0, 0, 1, 0]); // LBA 2048 of 2048 blocks
    let r = rx.recv().unwrap();
    assert_eq!(
        sense_key_asc(r.out.sense.as_deref().unwrap()),
        (0x5, 0x21),
        "LBA OUT OF RANGE"
    );
    assert_eq!(store.started(), [512], "refused before the backstore");
}

/// A pool LU whose backstore's submit never blocks (librbd's AIO) starts
/// READ and WRITE on the fabric's own thread: no worker is woken for them
/// (a thread hop per I/O). Any other asynchronous backstore's go to a
/// worker.
#[test]
fn non_blocking_submit_starts_on_the_fabric_thread() {
    for never_blocks in [true, false] {
        let store = Arc::new(LaterStore {
            never_blocks,
            ..LaterStore::default()
        });
        let mut f = Fabric::new(pool_lu(Arc::clone(&store)));
        f.send("r", &read(1), TaskAttr::Simple, Vec::new());
        f.send("w", &write(2), TaskAttr::Simple, vec![7; 512]);
        store.wait_started(512);
        store.wait_started(1024);
        let here = thread::current().id();
        let on_fabric = store
            .state
            .lock()
            .unwrap()
            .submitters
            .iter()
            .map(|t| *t == here)
            .collect::<Vec<_>>();
        assert_eq!(on_fabric, [never_blocks; 2], "never_blocks={never_blocks}");
        store.complete(512);
        store.complete(1024);
        f.wait_answers(2);
        assert_eq!(f.answers, [("r", Status::Good), ("w", Status::Good)]);
    }
}
