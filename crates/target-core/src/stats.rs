//! Per-LU statistics for monitoring: commands by class (read, write,
//! flush, other) with a latency histogram each, bytes moved, CHECK
//! CONDITIONs by sense key, reservation conflicts and the commands in
//! flight. Counted once for every fabric, where the core starts and
//! answers a command ([`crate::LunTable::execute`], and the asynchronous
//! READ/WRITE of [`crate::LunTable::submit`] from its start to its
//! completion), so the latency is the core's and the backstore's: time a
//! command spends in a fabric's queues before the core sees it is not in it.
//!
//! The data path pays two clock reads (TSC stamps, see
//! [`crate::stats_clock`]) and three or four relaxed atomic adds per
//! command: no lock, no allocation. Histograms have fixed
//! power-of-two buckets (1 µs to 2^23 µs, about 8 s, then +Inf) so a
//! command finds its bucket with one `leading_zeros`; readers (a metrics
//! scrape, `rtarget top`) take a [`LuStats`] snapshot and build what they
//! need from it. Counters only grow, from the LU's creation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use scsi::opcode as op;

use crate::stats_clock::{nanos_between, stamp};
use crate::{Outcome, Status};

/// Histogram slots: bucket `i < BUCKETS - 1` counts latencies under 2^i
/// µs (and at least 2^(i-1) µs); the last one everything slower.
pub const BUCKETS: usize = 25;

/// The classes commands are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// READ (6/10/12/16).
    Read,
    /// Commands that write the medium from Data-Out: WRITE (6/10/12/16),
    /// WRITE AND VERIFY, WRITE SAME, COMPARE AND WRITE, ORWRITE, WRITE
    /// ATOMIC.
    Write,
    /// SYNCHRONIZE CACHE (10/16).
    Flush,
    /// Everything else (INQUIRY, TEST UNIT READY, UNMAP, PR, ...).
    Other,
}

impl OpClass {
    pub const ALL: [OpClass; 4] = [
        OpClass::Read,
        OpClass::Write,
        OpClass::Flush,
        OpClass::Other,
    ];

    /// The class of a CDB's operation code.
    #[inline]
    pub fn of(opcode: u8) -> OpClass {
        match opcode {
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => OpClass::Read,
            op::WRITE_6
            | op::WRITE_10
            | op::WRITE_12
            | op::WRITE_16
            | op::WRITE_AND_VERIFY_10
            | op::WRITE_AND_VERIFY_12
            | op::WRITE_AND_VERIFY_16
            | op::WRITE_SAME_10
            | op::WRITE_SAME_16
            | op::COMPARE_AND_WRITE
            | op::ORWRITE_16
            | op::WRITE_ATOMIC_16 => OpClass::Write,
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => OpClass::Flush,
            _ => OpClass::Other,
        }
    }

    /// Label value (`op="read"`).
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Write => "write",
            OpClass::Flush => "flush",
            OpClass::Other => "other",
        }
    }
}

/// Upper bound of histogram bucket `i` in seconds (`f64::MAX`: +Inf, the
/// way prometheus-client spells it).
pub fn bucket_upper_secs(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::MAX
    } else {
        (1u64 << i) as f64 * 1e-6
    }
}

/// Sense key names (SPC-4 table 28), lower case for labels.
pub const SENSE_KEYS: [&str; 16] = [
    "no_sense",
    "recovered_error",
    "not_ready",
    "medium_error",
    "hardware_error",
    "illegal_request",
    "unit_attention",
    "data_protect",
    "blank_check",
    "vendor_specific",
    "copy_aborted",
    "aborted_command",
    "reserved_0c",
    "volume_overflow",
    "miscompare",
    "completed",
];

#[derive(Default)]
struct Class {
    buckets: [AtomicU64; BUCKETS],
    nanos: AtomicU64,
}

/// The live counters of one LU (in `DeviceState`).
#[derive(Default)]
pub(crate) struct Counters {
    started: AtomicU64,
    classes: [Class; 4],
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    sense: [AtomicU64; 16],
    conflicts: AtomicU64,
}

/// A command the core started (at `at`, a [`crate::stats_clock`] stamp):
/// [`Started::end`] counts its answer. Dropped unanswered (a panic
/// unwinding through the core, or a backstore dropping its completion
/// uncalled) it ends all the same, as the HARDWARE ERROR the I/O engine
/// answers for a panicked command, so it does not stay in flight for
/// ever. `H` reaches the LU's counters: a borrow on the synchronous paths,
/// the device's I/O token in an asynchronous completion.
#[must_use]
pub(crate) struct Started<H: AsRef<Counters>> {
    /// `None` once counted.
    counters: Option<H>,
    at: u64,
    opcode: u8,
}

impl<H: AsRef<Counters>> Started<H> {
    /// The command answered `out` after moving `data_in` bytes to the
    /// initiator and `data_out` from it.
    #[inline]
    pub(crate) fn end(mut self, out: &Outcome, data_in: usize, data_out: usize) {
        if let Some(c) = self.counters.take() {
            c.as_ref()
                .record(self.at, self.opcode, out, data_in, data_out);
        }
    }

    /// The same command, its counters now reached through `h` (one that
    /// a completion closure can own).
    #[inline]
    pub(crate) fn hand_to<H2: AsRef<Counters>>(mut self, h: H2) -> Started<H2> {
        self.counters = None;
        Started {
            counters: Some(h),
            at: self.at,
            opcode: self.opcode,
        }
    }
}

impl<H: AsRef<Counters>> Drop for Started<H> {
    fn drop(&mut self) {
        if let Some(c) = self.counters.take() {
            c.as_ref().unwound(self.at, self.opcode);
        }
    }
}

impl AsRef<Counters> for Counters {
    fn as_ref(&self) -> &Counters {
        self
    }
}

#[inline]
fn bucket_of(nanos: u64) -> usize {
    let us = nanos / 1000;
    ((u64::BITS - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

impl Counters {
    /// A command with `opcode` starts.
    #[inline]
    pub(crate) fn begin(&self, opcode: u8) -> Started<&Counters> {
        self.started.fetch_add(1, Relaxed);
        Started {
            counters: Some(self),
            at: stamp(),
            opcode,
        }
    }

    /// Count the latency of a command started at `at`; its class.
    #[inline]
    fn completed(&self, at: u64, opcode: u8) -> OpClass {
        let nanos = nanos_between(at, stamp());
        let class = OpClass::of(opcode);
        let c = &self.classes[class as usize];
        c.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
        c.nanos.fetch_add(nanos, Relaxed);
        class
    }

    #[inline]
    fn record(&self, at: u64, opcode: u8, out: &Outcome, data_in: usize, data_out: usize) {
        let class = self.completed(at, opcode);
        if out.status != Status::Good {
            self.failed(out);
            return;
        }
        match class {
            OpClass::Read => self.read_bytes.fetch_add(data_in as u64, Relaxed),
            OpClass::Write => self.write_bytes.fetch_add(data_out as u64, Relaxed),
            _ => 0,
        };
    }

    /// A command that never answered (see [`Started`]).
    #[cold]
    fn unwound(&self, at: u64, opcode: u8) {
        self.completed(at, opcode);
        self.sense[usize::from(scsi::SenseKey::HardwareError as u8)].fetch_add(1, Relaxed);
    }

    #[cold]
    fn failed(&self, out: &Outcome) {
        match (out.status, out.sense.as_deref()) {
            (Status::CheckCondition, Some(s)) if s.len() > 2 => {
                self.sense[usize::from(s[2] & 0x0f)].fetch_add(1, Relaxed);
            }
            (Status::ReservationConflict, _) => {
                self.conflicts.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    pub(crate) fn snapshot(&self) -> LuStats {
        // Completed commands are read before started ones, so a command
        // counted as completed is always counted as started too.
        let classes = std::array::from_fn(|i| {
            let c = &self.classes[i];
            ClassStats {
                buckets: std::array::from_fn(|b| c.buckets[b].load(Relaxed)),
                nanos: c.nanos.load(Relaxed),
            }
        });
        LuStats {
            started: self.started.load(Relaxed),
            classes,
            read_bytes: self.read_bytes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            sense: std::array::from_fn(|i| self.sense[i].load(Relaxed)),
            reservation_conflicts: self.conflicts.load(Relaxed),
            ..LuStats::default()
        }
    }
}

/// Completed commands of one [`OpClass`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Per bucket, not cumulative (see [`BUCKETS`]).
    pub buckets: [u64; BUCKETS],
    /// Sum of their latencies.
    pub nanos: u64,
}

impl ClassStats {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// A reading of one LU's counters ([`crate::Device::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LuStats {
    /// Commands the core started (completed ones and those in flight).
    pub started: u64,
    /// Completed commands by [`OpClass`] (index `class as usize`).
    pub classes: [ClassStats; 4],
    /// Data-In bytes of successful READs.
    pub read_bytes: u64,
    /// Data-Out bytes of successful writes.
    pub write_bytes: u64,
    /// CHECK CONDITIONs by sense key (see [`SENSE_KEYS`]).
    pub sense: [u64; 16],
    pub reservation_conflicts: u64,
    /// Unit attention conditions queued for a nexus / reported to one.
    pub ua_established: u64,
    pub ua_reported: u64,
    /// ALUA group state changes asked by an initiator (SET TARGET PORT
    /// GROUPS) / made by management.
    pub alua_explicit_transitions: u64,
    pub alua_implicit_transitions: u64,
}

impl LuStats {
    pub fn class(&self, c: OpClass) -> &ClassStats {
        &self.classes[c as usize]
    }

    pub fn completed(&self) -> u64 {
        self.classes.iter().map(ClassStats::count).sum()
    }

    /// Commands started and not yet answered (the LU's queue depth in
    /// the core).
    pub fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.completed())
    }

    /// Sum of every class's latencies.
    pub fn nanos(&self) -> u64 {
        self.classes.iter().map(|c| c.nanos).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(999), 0);
        assert_eq!(bucket_of(1_000), 1);
        assert_eq!(bucket_of(1_999), 1);
        assert_eq!(bucket_of(2_000), 2);
        assert_eq!(bucket_of(3_999), 2);
        assert_eq!(bucket_of(100_000), 7, "100 µs < 128 µs");
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        // A latency in bucket i is under its upper bound.
        for nanos in [0, 500, 1_000, 7_000, 100_000, 5_000_000, 8_000_000_000] {
            let i = bucket_of(nanos);
            assert!((nanos as f64) * 1e-9 < bucket_upper_secs(i), "{nanos}");
            if i > 0 {
                assert!((nanos as f64) * 1e-9 >= bucket_upper_secs(i - 1), "{nanos}");
            }
        }
        assert_eq!(bucket_upper_secs(BUCKETS - 1), f64::MAX);
    }

    #[test]
    fn classes_of_opcodes() {
        assert_eq!(OpClass::of(op::READ_16), OpClass::Read);
        assert_eq!(OpClass::of(op::WRITE_10), OpClass::Write);
        assert_eq!(OpClass::of(op::COMPARE_AND_WRITE), OpClass::Write);
        assert_eq!(OpClass::of(op::SYNCHRONIZE_CACHE_16), OpClass::Flush);
        assert_eq!(OpClass::of(op::INQUIRY), OpClass::Other);
        assert_eq!(OpClass::of(op::UNMAP), OpClass::Other);
    }

    #[test]
    fn end_counts_latency_bytes_and_sense_keys() {
        let c = Counters::default();
        let good = Outcome {
            status: Status::Good,
            sense: None,
        };
        let s = c.begin(op::READ_10);
        assert_eq!(c.snapshot().in_flight(), 1);
        s.end(&good, 4096, 0);
        c.begin(op::WRITE_16).end(&good, 0, 512);
        let mut sense = vec![0u8; 18];
        sense[2] = 0x03;
        let medium = Outcome {
            status: Status::CheckCondition,
            sense: Some(sense),
        };
        c.begin(op::READ_10).end(&medium, 0, 0);
        let conflict = Outcome {
            status: Status::ReservationConflict,
            sense: None,
        };
        c.begin(op::WRITE_10).end(&conflict, 0, 512);
        let s = c.snapshot();
        assert_eq!((s.started, s.completed(), s.in_flight()), (4, 4, 0));
        assert_eq!(s.class(OpClass::Read).count(), 2);
        assert_eq!(s.class(OpClass::Write).count(), 2);
        assert_eq!(s.class(OpClass::Flush).count(), 0);
        assert_eq!(
            (s.read_bytes, s.write_bytes),
            (4096, 512),
            "failed ones move nothing"
        );
        assert_eq!(s.sense[3], 1);
        assert_eq!(SENSE_KEYS[3], "medium_error");
        assert_eq!(s.reservation_conflicts, 1);
    }
}

/// The counters as the LU keeps them, through `execute` and `submit`.
#[cfg(test)]
mod lu_tests {
    use std::sync::mpsc;

    use crate::stats::{OpClass, SENSE_KEYS};
    use crate::testutil::*;
    use crate::{Request, TaskAttr};

    const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    const WRITE10: [u8; 10] = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];

    #[test]
    fn execute_counts_classes_bytes_sense_and_ua() {
        let t = Rig::fresh();
        t.expect_sense(&[0; 6], 6, 0x29, 0);
        t.ok(&READ10);
        assert_eq!(t.run(&WRITE10, &[1u8; 4096]).0.status, crate::Status::Good);
        t.ok(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        t.expect_sense(&[0x28, 0, 0, 0, 0x10, 0, 0, 0, 1, 0], 5, 0x21, 0);
        // An unmapped LUN is no LU's command.
        t.run_lun(7, &READ10, &[]);
        let s = t.dev.stats();
        assert_eq!((s.started, s.in_flight()), (5, 0));
        let counts: Vec<u64> = OpClass::ALL.iter().map(|c| s.class(*c).count()).collect();
        assert_eq!(counts, [2, 1, 1, 1], "read, write, flush, other (TUR)");
        assert_eq!((s.read_bytes, s.write_bytes), (4096, 4096));
        assert_eq!(s.sense[5], 1, "{}", SENSE_KEYS[5]);
        assert_eq!(s.sense[6], 1, "{}", SENSE_KEYS[6]);
        assert_eq!((s.ua_established, s.ua_reported), (1, 1));
        assert!(s.class(OpClass::Read).nanos > 0);
    }

    /// Completes asynchronous I/O only when the test says so; with
    /// `panics`, panics in every call instead (a backstore bug unwinding
    /// through the core).
    #[derive(Default)]
    struct Deferred {
        held: std::sync::Mutex<Vec<(backstore::IoOp, backstore::Completion)>>,
        panics: bool,
    }

    impl Deferred {
        fn check(&self) {
            assert!(!self.panics, "backstore bug");
        }
    }

    impl backstore::Backstore for Deferred {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn capabilities(&self) -> backstore::Capabilities {
            backstore::Capabilities {
                async_submit: true,
                ..Default::default()
            }
        }
        fn read_at(&self, buf: &mut [u8], _: u64) -> std::io::Result<()> {
            self.check();
            buf.fill(0);
            Ok(())
        }
        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            self.check();
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            self.check();
            Ok(())
        }
        fn submit(&self, op: backstore::IoOp, done: backstore::Completion) {
            self.check();
            self.held.lock().unwrap().push((op, done));
        }
    }

    /// An LU on `store` at LUN 0: its device and table.
    fn lu(store: std::sync::Arc<Deferred>) -> (std::sync::Arc<crate::Device>, crate::LunTable) {
        let dev = crate::Device::new(crate::DeviceOptions::new("d", WWN), store);
        let table = crate::LunTable {
            luns: vec![crate::Lun {
                id: 0,
                device: dev.clone(),
                write_protect: false,
            }],
        };
        (dev, table)
    }

    /// The asynchronous path counts a READ from its start to the
    /// backstore's completion: in flight until the backstore completes.
    #[test]
    fn submit_counts_in_flight_until_completion() {
        let store = std::sync::Arc::new(Deferred::default());
        let (dev, table) = lu(store.clone());
        let me = Rig::new().me;
        let (tx, rx) = mpsc::channel();
        let send = |cdb: &[u8], tx: mpsc::Sender<crate::Status>| {
            let req = Request {
                cdb,
                expected_len: 4096,
                attr: TaskAttr::Simple,
                data_out: Vec::new(),
                data_in: Vec::new(),
            };
            table.submit(&me, 0, req, move |r| tx.send(r.out.status).unwrap());
        };
        // The power-on UA is answered at once (no backstore I/O).
        send(&READ10, tx.clone());
        assert_eq!(rx.recv().unwrap(), crate::Status::CheckCondition);
        send(&READ10, tx.clone());
        assert!(rx.try_recv().is_err(), "held by the backstore");
        let s = dev.stats();
        assert_eq!((s.started, s.in_flight()), (2, 1));
        for (op, done) in store.held.lock().unwrap().drain(..) {
            done.complete(op, Ok(()));
        }
        assert_eq!(rx.recv().unwrap(), crate::Status::Good);
        let s = dev.stats();
        assert_eq!((s.in_flight(), s.class(OpClass::Read).count()), (0, 2));
        assert_eq!((s.read_bytes, s.sense[6]), (4096, 1));
    }

    /// A command that panics in the core (as the I/O engine's workers
    /// catch it) leaves the in-flight count, counted as the HARDWARE
    /// ERROR the engine answers for it: on the synchronous path
    /// (`execute`, SYNCHRONIZE CACHE) and on the asynchronous one (the
    /// completion dropped uncalled by the unwinding `submit`).
    #[test]
    fn a_panicking_command_does_not_stay_in_flight() {
        let (dev, table) = lu(std::sync::Arc::new(Deferred {
            panics: true,
            ..Deferred::default()
        }));
        let me = Rig::new().me;
        // The power-on UA first: answered without the backstore.
        let mut data_in = Vec::new();
        let cmd = |cdb: &'static [u8]| crate::Command {
            cdb,
            data_out: &[],
            expected_len: 4096,
            attr: TaskAttr::Simple,
        };
        const TUR: [u8; 6] = [0; 6];
        table.execute(&me, 0, &cmd(&TUR), &mut data_in);
        const SYNC: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.execute(&me, 0, &cmd(&SYNC), &mut data_in)
        }));
        assert!(r.is_err());
        let s = dev.stats();
        assert_eq!((s.started, s.in_flight()), (2, 0));
        assert_eq!(s.class(OpClass::Flush).count(), 1);
        assert_eq!(s.sense[4], 1, "{}", SENSE_KEYS[4]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let req = Request {
                cdb: &READ10,
                expected_len: 4096,
                attr: TaskAttr::Simple,
                data_out: Vec::new(),
                data_in: Vec::new(),
            };
            table.submit(&me, 0, req, |_| panic!("never answered"));
        }));
        assert!(r.is_err());
        let s = dev.stats();
        assert_eq!((s.started, s.in_flight()), (3, 0));
        assert_eq!((s.class(OpClass::Read).count(), s.sense[4]), (1, 2));
    }
}
