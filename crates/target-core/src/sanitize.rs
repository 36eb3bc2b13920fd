//! SANITIZE (SBC-3 5.23, 4.11): OVERWRITE fills every block with the
//! initiator's pattern (INVERT alternates it between passes); BLOCK ERASE
//! deallocates every block of a thin LU (reads then return zeroes, GET LBA
//! STATUS says deallocated; WABEREQ=01 in VPD B1); EXIT FAILURE MODE leaves
//! the failure state a failed sanitize leaves behind. CRYPTOGRAPHIC ERASE
//! is offered only when the backstore stores data encrypted
//! (`Capabilities::crypto_erase`, the `encryption` attribute): it replaces
//! the media key, so what was written reads back as unrelated data
//! (WACEREQ=01 in VPD B1); elsewhere there is no key to destroy and the
//! service action is refused (and not listed by REPORT SUPPORTED OPCODES).
//!
//! While a sanitize runs, every command but INQUIRY, REPORT LUNS and
//! REQUEST SENSE gets NOT READY, SANITIZE IN PROGRESS with a progress
//! indication (REQUEST SENSE returns that as its data), on every nexus,
//! through resets and reconnects. With IMMED=1 the work runs on a thread of
//! its own and GOOD comes back at once; with IMMED=0 it runs on the calling
//! thread and the status follows completion, as SBC-3 asks (a fabric that
//! keeps serving a connection's other commands meanwhile must call
//! `execute` for it off that connection's thread).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use scsi::cdb::Cdb;
use scsi::{opcode as op, Sense};

use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::{Device, Status};

pub(crate) const SA_OVERWRITE: u8 = 0x01;
pub(crate) const SA_BLOCK_ERASE: u8 = 0x02;
pub(crate) const SA_CRYPTO_ERASE: u8 = 0x03;
pub(crate) const SA_EXIT_FAILURE_MODE: u8 = 0x1f;

/// Bytes written per backstore call.
const CHUNK: usize = 1 << 20;

/// The device's sanitize state, shared with a background worker.
#[derive(Default)]
pub(crate) struct SanitizeState {
    /// A sanitize operation is in progress (one atomic load per command
    /// while idle).
    active: AtomicBool,
    /// The last sanitize failed: medium access fails with SANITIZE COMMAND
    /// FAILED until a sanitize succeeds or EXIT FAILURE MODE is accepted.
    failed: AtomicBool,
    /// AUSE of the failed sanitize: whether EXIT FAILURE MODE may end it.
    ause: AtomicBool,
    /// Completed fraction, in 65536ths.
    progress: AtomicU16,
    /// Notified when a sanitize ends, for whoever waits for that
    /// (`wait_idle`) instead of polling; the command path only ever reads
    /// `active`.
    ended: Condvar,
    ended_lock: Mutex<()>,
}

impl SanitizeState {
    fn in_progress(&self) -> CmdError {
        CmdError::SanitizeInProgress {
            progress: self.progress.load(Ordering::Relaxed),
        }
    }

    /// What a command meets while a sanitize runs or after one failed
    /// (SBC-3 4.11.2).
    pub(crate) fn gate(&self, cdb: &Cdb) -> Result<(), CmdError> {
        if self.active.load(Ordering::Acquire)
            && !matches!(
                cdb.opcode(),
                op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE
            )
        {
            return Err(self.in_progress());
        }
        if self.failed.load(Ordering::Acquire)
            && cdb.opcode() != op::SANITIZE
            && crate::medium::needs_medium(cdb)
        {
            return Err(CmdError::SanitizeFailed);
        }
        Ok(())
    }

    /// Wait until no sanitize runs, at most `limit`; whether none does.
    #[cfg(test)]
    pub(crate) fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let g = self.ended_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_g, _) = self
            .ended
            .wait_timeout_while(g, limit, |_| self.active.load(Ordering::Acquire))
            .unwrap_or_else(|e| e.into_inner());
        !self.active.load(Ordering::Acquire)
    }

    /// REQUEST SENSE data while a sanitize runs.
    pub(crate) fn request_sense(&self) -> Option<Sense> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        // The same sense data the refused commands get.
        self.in_progress().answer().1
    }
}

fn check_reserved(ctx: &Ctx<'_>) -> Result<(), CmdError> {
    let cdb = &ctx.cdb;
    if cdb.b(1) & 0x40 != 0 {
        return Err(CmdError::cdb_bit(1, 6));
    }
    for i in 2..7 {
        if cdb.b(i) != 0 {
            return Err(CmdError::cdb_field(i as u16));
        }
    }
    Ok(())
}

/// What the worker does.
enum Work {
    /// One block of pattern (already repeated to the block size), the
    /// number of passes, and whether odd passes write it inverted.
    Overwrite {
        block: Vec<u8>,
        passes: u8,
        invert: bool,
    },
    BlockErase,
    CryptoErase,
}

pub(crate) fn sanitize(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    check_reserved(ctx)?;
    let plen = usize::from(ctx.cdb.be16(7));
    let dev = ctx.dev;
    let st = &dev.state.sanitize;
    let work = match ctx.cdb.service_action() {
        SA_EXIT_FAILURE_MODE => {
            if plen != 0 {
                return Err(CmdError::cdb_field(7));
            }
            if st.failed.load(Ordering::Acquire) && !st.ause.load(Ordering::Acquire) {
                // The failed sanitize did not allow an unrestricted exit.
                return Err(CmdError::cdb_field(1));
            }
            st.failed.store(false, Ordering::Release);
            return Ok(Status::Good);
        }
        SA_OVERWRITE => overwrite_params(ctx, plen)?,
        SA_BLOCK_ERASE if dev.thin() => {
            if plen != 0 {
                return Err(CmdError::cdb_field(7));
            }
            Work::BlockErase
        }
        SA_CRYPTO_ERASE if dev.state.caps.crypto_erase => {
            if plen != 0 {
                return Err(CmdError::cdb_field(7));
            }
            Work::CryptoErase
        }
        _ => return Err(CmdError::cdb_field(1)),
    };
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let immed = ctx.cdb.b(1) & 0x80 != 0;
    let ause = ctx.cdb.b(1) & 0x20 != 0;
    if st
        .active
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(st.in_progress());
    }
    st.progress.store(0, Ordering::Relaxed);
    st.ause.store(ause, Ordering::Release);
    if !immed {
        return finish(dev, run(dev, &work)).map(|()| Status::Good);
    }
    let device: Arc<Device> = ctx.lun.device.clone();
    let spawned = std::thread::Builder::new()
        .name("sanitize".to_string())
        .spawn(move || {
            let res = run(&device, &work);
            if let Err(e) = finish(&device, res) {
                tracing::error!("background SANITIZE failed: {e}");
            }
        });
    if let Err(e) = spawned {
        st.active.store(false, Ordering::Release);
        tracing::error!("cannot start the SANITIZE worker: {e}");
        return Err(CmdError::InternalTargetFailure);
    }
    Ok(Status::Good)
}

/// Record the outcome and end the in-progress state.
fn finish(dev: &Device, res: io::Result<()>) -> Result<(), CmdError> {
    let st = &dev.state.sanitize;
    st.failed.store(res.is_err(), Ordering::Release);
    st.active.store(false, Ordering::Release);
    // Taking the lock orders this after a waiter's check of `active`, so
    // the notification cannot fall between its check and its wait.
    drop(st.ended_lock.lock().unwrap_or_else(|e| e.into_inner()));
    st.ended.notify_all();
    res.map_err(CmdError::WriteError)
}

fn overwrite_params(ctx: &Ctx<'_>, plen: usize) -> Result<Work, CmdError> {
    let bs = ctx.dev.block_size() as usize;
    if plen <= 4 || plen > bs + 4 {
        return Err(CmdError::cdb_field(7));
    }
    let p = ctx
        .data_out
        .get(..plen)
        .ok_or(CmdError::ParameterListLength)?;
    let invert = p[0] & 0x80 != 0;
    let passes = p[0] & 0x1f;
    let pat_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if passes == 0 {
        return Err(CmdError::param(0));
    }
    if pat_len == 0 || pat_len > bs || pat_len + 4 != plen {
        return Err(CmdError::param(2));
    }
    // The pattern repeats from the start of every block.
    let block = p[4..4 + pat_len].iter().copied().cycle().take(bs).collect();
    Ok(Work::Overwrite {
        block,
        passes,
        invert,
    })
}

/// Do the work, holding the medium exclusively so that a command which
/// passed the in-progress gate just before it closed cannot interleave.
fn run(dev: &Device, work: &Work) -> io::Result<()> {
    let _order = dev.io_exclusive();
    let st = &dev.state.sanitize;
    let total = dev.num_blocks() * dev.block_size();
    match work {
        Work::BlockErase => {
            crate::provisioning::deallocate(dev, 0, total).map_err(cmd_io)?;
        }
        // Key replacement only: the stored ciphertext stays, unreadable
        // under the new key (as on a self-encrypting drive).
        Work::CryptoErase => dev.backstore.crypto_erase()?,
        Work::Overwrite {
            block,
            passes,
            invert,
        } => {
            let bs = block.len().max(1);
            let chunk = (CHUNK / bs * bs).max(bs);
            let mut buf = Vec::with_capacity(chunk);
            let work_total = total.saturating_mul(u64::from(*passes)).max(1);
            for pass in 0..*passes {
                buf.clear();
                while buf.len() < chunk {
                    buf.extend_from_slice(block);
                }
                if *invert && pass % 2 == 1 {
                    buf.iter_mut().for_each(|b| *b = !*b);
                }
                let mut off = 0u64;
                while off < total {
                    let n = ((total - off) as usize).min(chunk);
                    dev.backstore.write_at(&buf[..n], off)?;
                    off += n as u64;
                    let done = u64::from(pass) * total + off;
                    let frac = (u128::from(done) * 65536 / u128::from(work_total)).min(65535);
                    st.progress.store(frac as u16, Ordering::Relaxed);
                }
            }
        }
    }
    // Sanitized means on the medium, not in a cache. Through the LU's
    // sticky guard like SYNCHRONIZE CACHE: no success after an earlier
    // failed flush, and a failure here fails every later flush too.
    crate::rw::flush(dev).map_err(cmd_io)
}

fn cmd_io(e: CmdError) -> io::Error {
    match e {
        CmdError::WriteError(e) | CmdError::ReadError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    fn cdb(sa: u8, plen: u16) -> Vec<u8> {
        let l = plen.to_be_bytes();
        vec![0x48, sa, 0, 0, 0, 0, 0, l[0], l[1], 0]
    }

    #[test]
    fn overwrite_fills_every_block_with_the_pattern() {
        let t = Rig::new();
        let mut p = vec![0x01, 0, 0, 4];
        p.extend_from_slice(&[1, 2, 3, 4]);
        let (o, _) = t.run(&cdb(0x01, 8), &p);
        assert_eq!(o.status, Status::Good);
        let want: Vec<u8> = [1u8, 2, 3, 4].iter().copied().cycle().take(512).collect();
        assert_eq!(t.store.bytes(0, 512), want);
        assert_eq!(t.store.bytes((BLOCKS as usize - 1) * 512, 512), want);
    }

    #[test]
    fn overwrite_parameter_checks() {
        let t = Rig::new();
        for plen in [0u16, 4, 517] {
            let (o, _) = t.run(&cdb(0x01, plen), &vec![0x01u8; 600]);
            assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "plen {plen}");
        }
        let (o, _) = t.run(&cdb(0x01, 8), &[0x00, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x26, 0)), "count 0");
        let (o, _) = t.run(&cdb(0x01, 8), &[0x01, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x26, 0)), "pattern length 0");
        let mut c = cdb(0x01, 8);
        c[1] |= 0x40;
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "reserved bit");
        let mut c = cdb(0x01, 8);
        c[4] = 1;
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "reserved byte");
    }

    #[test]
    fn other_service_actions() {
        let t = Rig::new();
        t.ok(&cdb(0x1f, 0));
        t.expect_sense(&cdb(0x1f, 8), 5, 0x24, 0);
        t.expect_sense(&cdb(0x02, 0), 5, 0x24, 0);
        t.expect_sense(&cdb(0x03, 0), 5, 0x24, 0);
        let thin = Rig::thin();
        thin.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[7u8; 512]);
        thin.ok(&cdb(0x02, 0));
        assert_eq!(thin.store.bytes(0, 512), vec![0u8; 512]);
        thin.expect_sense(&cdb(0x02, 4), 5, 0x24, 0);
        let ro = Rig::read_only();
        let (o, _) = ro.run(&cdb(0x01, 8), &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
    }

    /// An LU on an encrypted RAM backstore, the power-on UA consumed.
    struct Crypt {
        _dir: tempfile::TempDir,
        table: crate::LunTable,
        me: crate::Nexus,
        inner: std::sync::Arc<backstore::RamBackstore>,
    }

    impl Crypt {
        fn new(thin: bool) -> Crypt {
            use std::sync::Arc;
            let dir = tempfile::tempdir().unwrap();
            let inner = Arc::new(backstore::RamBackstore::new(BLOCKS * 512).unwrap());
            let key = dir.path().join("keys").join("key");
            let c = backstore::CryptBackstore::open(inner.clone(), &key).unwrap();
            let mut opts = crate::DeviceOptions::new("c", WWN);
            opts.thin_provisioning = thin;
            let device = crate::Device::new(opts, Arc::new(c));
            let t = Crypt {
                _dir: dir,
                table: crate::LunTable {
                    luns: vec![crate::Lun {
                        id: 0,
                        device,
                        write_protect: false,
                    }],
                },
                me: crate::Nexus {
                    id: 1,
                    initiator_port: "iqn.x:i,i,0x1".into(),
                    target_port: "iqn.x:t,t,0x1".into(),
                    relative_port_id: 1,
                    tpg_tag: 1,
                },
                inner,
            };
            t.run(&TUR, &[]);
            t
        }

        fn run(&self, cdb: &[u8], data_out: &[u8]) -> (crate::Outcome, Vec<u8>) {
            let mut d = Vec::new();
            let cmd = crate::Command {
                cdb,
                data_out,
                expected_len: 1 << 20,
                attr: crate::TaskAttr::Simple,
            };
            let o = self.table.execute(&self.me, 0, &cmd, &mut d);
            (o, d)
        }
    }

    const READ1: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

    #[test]
    fn crypto_erase_replaces_the_key_on_an_encrypted_lu() {
        let t = Crypt::new(false);
        let (o, _) = t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0x61; 512]);
        assert_eq!(o.status, Status::Good);
        let (_, before) = t.run(&READ1, &[]);
        assert_eq!(before, vec![0x61; 512]);
        let mut raw = vec![0u8; 512];
        backstore::Backstore::read_at(&*t.inner, &mut raw, 0).unwrap();
        // Parameter list length must be 0.
        let (o, _) = t.run(&cdb(0x03, 8), &[0; 8]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)));
        let (o, _) = t.run(&cdb(0x03, 0), &[]);
        assert_eq!(o.status, Status::Good);
        let (o, after) = t.run(&READ1, &[]);
        assert_eq!(o.status, Status::Good, "WACEREQ=01: reads succeed");
        assert_ne!(after, before, "old data readable after crypto erase");
        let mut raw_after = vec![0u8; 512];
        backstore::Backstore::read_at(&*t.inner, &mut raw_after, 0).unwrap();
        assert_eq!(raw, raw_after, "erased by the key, not by rewriting");
        // Never-written blocks still read as zeroes.
        let (_, d) = t.run(&[0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0], &[]);
        assert_eq!(d, vec![0u8; 512]);
        // IMMED: GOOD at once, done by the time a TUR passes.
        let mut c = cdb(0x03, 0);
        c[1] |= 0x80;
        let (o, _) = t.run(&c, &[]);
        assert_eq!(o.status, Status::Good);
        let dev = &t.table.luns[0].device;
        assert!(
            dev.state.sanitize.wait_idle(SANITIZE_LIMIT),
            "never finished"
        );
        assert_eq!(t.run(&TUR, &[]).0.status, Status::Good);
        let (_, again) = t.run(&READ1, &[]);
        assert_ne!(again, after, "second key replaced too");
    }

    /// A crypto erase that cannot store its new key fails like the other
    /// service actions: the old key stays, medium access fails until a
    /// sanitize succeeds or (with AUSE=1) EXIT FAILURE MODE.
    #[test]
    fn failed_crypto_erase_leaves_failure_mode() {
        let t = Crypt::new(false);
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0x61; 512]);
        // The key directory turns into a file: the new key cannot be written.
        let keys = t._dir.path().join("keys");
        std::fs::remove_dir_all(&keys).unwrap();
        std::fs::write(&keys, b"not a directory").unwrap();
        let mut c = cdb(0x03, 0);
        c[1] |= 0x20; // AUSE
        let (o, _) = t.run(&c, &[]);
        assert_eq!(sense_of(&o), Some((3, 0x0c, 0)));
        let (o, _) = t.run(&READ1, &[]);
        assert_eq!(
            sense_of(&o),
            Some((3, 0x31, 0x03)),
            "SANITIZE COMMAND FAILED"
        );
        let (o, _) = t.run(&cdb(0x1f, 0), &[]);
        assert_eq!(o.status, Status::Good, "EXIT FAILURE MODE");
        let (o, d) = t.run(&READ1, &[]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(d, vec![0x61; 512], "the old key is still in force");
    }

    #[test]
    fn crypto_erase_is_listed_and_flagged_only_when_encrypted() {
        // REPORT SUPPORTED OPCODES, one command: SANITIZE / CRYPTO ERASE.
        let rsoc = [0xa3, 0x0c, 0x02, 0x48, 0, 0x03, 0, 0, 0x10, 0, 0, 0];
        let vpd_b1 = [0x12, 1, 0xb1, 0, 0x40, 0];
        let t = Crypt::new(true);
        let (_, d) = t.run(&rsoc, &[]);
        assert_eq!(d[1] & 0x07, 0x03, "supported");
        let (_, d) = t.run(&vpd_b1, &[]);
        assert_eq!(d[7] & 0x30, 0x10, "WACEREQ=01");
        assert_eq!(d[7] & 0xc0, 0x40, "WABEREQ=01 (thin)");
        let plain = Rig::thin();
        let (_, d) = plain.ok(&rsoc);
        assert_eq!(d[1] & 0x07, 0x01, "not supported");
        let (_, d) = plain.ok(&vpd_b1);
        assert_eq!(d[7] & 0x30, 0, "WACEREQ=0");
        plain.expect_sense(&cdb(0x03, 0), 5, 0x24, 0);
    }

    const TUR: [u8; 6] = [0, 0, 0, 0, 0, 0];

    /// How long a test waits for a background sanitize before failing.
    const SANITIZE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

    /// Wait for a background sanitize to end, then answer a TUR.
    fn wait_done(t: &Rig) -> crate::Outcome {
        assert!(
            t.dev.state.sanitize.wait_idle(SANITIZE_LIMIT),
            "sanitize never finished"
        );
        t.run(&TUR, &[]).0
    }

    #[test]
    fn immed_runs_in_the_background_and_gates_other_commands() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.run_as(&other, &TUR, &[]);
        t.store.stall();
        let mut c = cdb(0x01, 8);
        c[1] |= 0x80; // IMMED
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 9, 8, 7, 6]);
        assert_eq!(o.status, Status::Good, "IMMED: status at once");
        for n in [&t.me, &other] {
            let (o, _) = t.run_as(n, &TUR, &[]);
            assert_eq!(sense_of(&o), Some((2, 0x04, 0x1b)), "TUR");
            let (o, _) = t.run_as(n, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
            assert_eq!(sense_of(&o), Some((2, 0x04, 0x1b)), "READ");
            assert_eq!(o.sense.as_ref().map(|s| s[15] & 0x80), Some(0x80), "SKSV");
        }
        t.ok(&[0x12, 0, 0, 0, 36, 0]);
        let (_, d) = t.ok(&[0x03, 0, 0, 0, 18, 0]);
        assert_eq!((d[2], d[12], d[13], d[15] & 0x80), (2, 0x04, 0x1b, 0x80));
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 9, 8, 7, 6]);
        assert_eq!(sense_of(&o), Some((2, 0x04, 0x1b)), "no second sanitize");
        // Resets do not stop it.
        t.table
            .task_management(&t.me, crate::TmfFunction::LogicalUnitReset, 0);
        t.run(&TUR, &[]);
        let (o, _) = t.run(&TUR, &[]);
        assert_eq!(sense_of(&o), Some((2, 0x04, 0x1b)));
        t.store.unstall();
        assert_eq!(wait_done(&t).status, Status::Good);
        assert_eq!(t.store.bytes(512, 4), vec![9, 8, 7, 6]);
    }

    #[test]
    fn failed_sanitize_leaves_failure_mode_until_exit() {
        let t = Rig::new();
        t.store.fail(true);
        let (o, _) = t.run(&cdb(0x01, 8), &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((3, 0x0c, 0)));
        t.store.fail(false);
        t.expect_sense(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 3, 0x31, 0x03);
        t.ok(&[0x12, 0, 0, 0, 36, 0]);
        // AUSE was 0: EXIT FAILURE MODE is refused; a good sanitize ends it.
        t.expect_sense(&cdb(0x1f, 0), 5, 0x24, 0);
        let (o, _) = t.run(&cdb(0x01, 8), &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(o.status, Status::Good);
        t.ok(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        // With AUSE=1, EXIT FAILURE MODE ends it.
        t.store.fail(true);
        let mut c = cdb(0x01, 8);
        c[1] |= 0x20;
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(o.status, crate::Status::CheckCondition);
        t.store.fail(false);
        t.expect_sense(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 3, 0x31, 0x03);
        t.ok(&cdb(0x1f, 0));
        t.ok(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn sanitize_flush_goes_through_the_sticky_guard() {
        let t = Rig::new();
        let overwrite = [0x01, 0, 0, 4, 1, 2, 3, 4];
        t.store.fail_flush(true);
        let (o, _) = t.run(&cdb(0x01, 8), &overwrite);
        assert_eq!(o.status, Status::CheckCondition);
        assert!(t.dev.state.flush_fault.is_set(), "the failure sticks");
        // The store's flush works again, yet nothing may vouch for the
        // writes before the failure: the next sanitize fails as well.
        t.store.fail_flush(false);
        let (o, _) = t.run(&cdb(0x01, 8), &overwrite);
        assert_eq!(o.status, Status::CheckCondition);
    }
}
