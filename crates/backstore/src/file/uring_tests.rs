//! The io_uring engine's request path (`UringBackstore::submit`): data,
//! FUA and flush, O_DIRECT bounces, short transfers at the end of a file,
//! errors as the synchronous path's, batching, shutdown and a refused ring.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::FileOptions;

fn open(path: &Path, f: impl FnOnce(&mut FileOptions)) -> UringBackstore {
    let mut o = FileOptions {
        size: Some(1 << 20),
        ..FileOptions::new(path)
    };
    f(&mut o);
    UringBackstore::new(FileBackstore::open(&o).unwrap()).unwrap()
}

/// Submit and wait for the completion (on the reaper: never inline).
fn run(b: &dyn Backstore, op: IoOp) -> (IoOp, io::Result<()>) {
    let (tx, rx) = mpsc::channel();
    let me = std::thread::current().id();
    b.submit(
        op,
        Completion::new(move |op, r| tx.send((op, r, std::thread::current().id())).unwrap()),
    );
    let (op, r, on) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    if r.is_ok() && !op.is_empty() {
        assert_ne!(on, me, "a ring request completes on the reaper");
    }
    (op, r)
}

fn read(b: &dyn Backstore, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let (op, r) = run(
        b,
        IoOp::Read {
            offset,
            buf: vec![0xee; len],
        },
    );
    let IoOp::Read { buf, .. } = op else { panic!() };
    r.map(|()| buf)
}

fn write(b: &dyn Backstore, offset: u64, buf: Vec<u8>, fua: bool) -> io::Result<()> {
    let len = buf.len();
    run(
        b,
        IoOp::Write {
            offset,
            buf,
            len,
            fua,
        },
    )
    .1
}

/// Data written through the ring reads back through the ring and
/// through the file, buffered and O_DIRECT (whose unaligned buffers
/// are bounced), with and without FUA; a flush succeeds.
#[test]
fn read_write_flush_fua_through_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    for direct in [false, true] {
        let p = dir.path().join(format!("d{direct}.img"));
        let b = open(&p, |o| o.direct = direct);
        let data: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 3) as u8).collect();
        write(&b, 8192, data.clone(), false).unwrap();
        // An unaligned buffer start (O_DIRECT bounces it).
        let mut odd = vec![0u8; 4097];
        odd[1..].copy_from_slice(&data[..4096]);
        let off = IoOp::Write {
            offset: 65536,
            buf: odd.split_off(1),
            len: 4096,
            fua: true,
        };
        run(&b, off).1.unwrap();
        assert_eq!(read(&b, 8192, 16384).unwrap(), data, "direct={direct}");
        assert_eq!(read(&b, 65536, 4096).unwrap(), &data[..4096]);
        // Unaligned offset and length: through the page cache.
        write(&b, 1000, vec![5; 700], true).unwrap();
        assert_eq!(read(&b, 1000, 700).unwrap(), vec![5; 700]);
        let mut sync = vec![0u8; 16384];
        b.read_at(&mut sync, 8192).unwrap();
        assert_eq!(sync, data);
        run(&b, IoOp::Flush).1.unwrap();
        assert!(b.capabilities().async_submit);
        assert_eq!(b.file().is_direct(), direct);
    }
}

/// Pages of `path`'s range [off, off+len) in the page cache (mincore).
fn cached(path: &Path, off: usize, len: usize) -> usize {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // mincore writes one byte per page into `v`.
    unsafe {
        let size = off + len;
        let m = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        let mut v = vec![0u8; size.div_ceil(4096)];
        assert_eq!(libc::mincore(m, size, v.as_mut_ptr()), 0);
        libc::munmap(m, size);
        v[off / 4096..].iter().filter(|&&b| b & 1 == 1).count()
    }
}

/// O_DIRECT requests stay out of the page cache even when their
/// buffer is not aligned (bounced, as the synchronous path does).
#[test]
fn o_direct_with_unaligned_buffers_bypasses_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dio.img");
    let b = open(&p, |o| o.direct = true);
    assert!(b.file().is_direct());
    let mut v = vec![3u8; 65536 + 1];
    let unaligned = v.split_off(1);
    assert!(!is_aligned(unaligned.as_ptr()));
    write(&b, 262144, unaligned, false).unwrap();
    assert_eq!(read(&b, 262144, 65536).unwrap(), vec![3u8; 65536]);
    assert_eq!(cached(&p, 262144, 65536), 0, "pages in the page cache");
}

/// A file cut underneath: a read that reaches its end moves what is
/// there, then fails as the synchronous path does (UnexpectedEof).
#[test]
fn short_read_at_eof_fails_like_the_sync_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.img");
    let b = open(&p, |_| {});
    write(&b, 0, vec![9; 8192], false).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(6000)
        .unwrap();
    let e = read(&b, 4096, 4096).unwrap_err();
    let mut sync = vec![0u8; 4096];
    let se = b.read_at(&mut sync, 4096).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(e.kind(), se.kind());
    // Wholly past the end.
    assert_eq!(read(&b, 16384, 512).unwrap_err().kind(), se.kind());
    // Before the cut all is well.
    assert_eq!(read(&b, 0, 4096).unwrap(), vec![9; 4096]);
}

/// Refused requests fail with the synchronous path's errors (so the
/// core answers the same sense): beyond the end, read-only, a failed
/// flush stays failed.
#[test]
fn errors_match_the_sync_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.img");
    let b = open(&p, |_| {});
    let e = read(&b, (1 << 20) - 512, 1024).unwrap_err();
    let se = b.read_at(&mut [0u8; 1024], (1 << 20) - 512).unwrap_err();
    assert_eq!(
        (e.kind(), se.kind()),
        (io::ErrorKind::InvalidInput, se.kind())
    );
    drop(b);
    let ro = open(&p, |o| o.read_only = true);
    let e = write(&ro, 0, vec![1; 512], false).unwrap_err();
    assert_eq!(e.kind(), ro.write_at(&[1; 512], 0).unwrap_err().kind());
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    run(&ro, IoOp::Flush).1.unwrap();
    // A write length past its buffer.
    let rw = open(&p, |_| {});
    let bad = IoOp::Write {
        offset: 0,
        buf: vec![0; 10],
        len: 20,
        fua: false,
    };
    assert_eq!(
        run(&rw, bad).1.unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    // A recorded writeback error fails FUA writes and flushes.
    let _ = rw.file().wb.fault.record("e.img", "test fault");
    assert!(write(&rw, 0, vec![1; 512], true).is_err());
    assert!(run(&rw, IoOp::Flush).1.is_err());
    assert_eq!(rw.flush().is_err(), run(&rw, IoOp::Flush).1.is_err());
}

/// While plugged, submissions wait in the ring without a system call;
/// unplug hands them all over with one wake-up of the reaper.
#[test]
fn plugged_submissions_wake_the_reaper_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir.path().join("p.img"), |_| {});
    let kicks = |b: &UringBackstore| b.shared.kicks.load(Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    let before = kicks(&b);
    plug();
    for i in 0..8u64 {
        let tx = tx.clone();
        b.submit(
            IoOp::Write {
                offset: i * 4096,
                buf: vec![i as u8; 4096],
                len: 4096,
                fua: false,
            },
            Completion::new(move |_, r| tx.send(r.is_ok()).unwrap()),
        );
    }
    assert_eq!(kicks(&b), before, "no wake-up while plugged");
    unplug();
    assert_eq!(kicks(&b), before + 1, "one wake-up for the batch");
    for _ in 0..8 {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    for i in 0..8u64 {
        assert_eq!(read(&b, i * 4096, 4096).unwrap(), vec![i as u8; 4096]);
    }
    let h = b.health();
    assert_eq!(h[0], ("uring_ops", 16));
}

/// Dropping the backstore while requests are in flight waits for them
/// (their buffers are the kernel's until then) and stops the reaper.
#[test]
fn drop_drains_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir.path().join("d.img"), |_| {});
    let (tx, rx) = mpsc::channel();
    for i in 0..32u64 {
        let tx = tx.clone();
        b.submit(
            IoOp::Read {
                offset: i * 512,
                buf: vec![1; 512],
            },
            Completion::new(move |_, r| tx.send(r.is_ok()).unwrap()),
        );
    }
    drop(b);
    drop(tx);
    assert_eq!(rx.iter().filter(|&ok| ok).count(), 32);
}

/// Where the kernel refuses io_uring (here a seccomp filter on this
/// thread answers ENOSYS to io_uring_setup) opening fails, saying so.
#[test]
fn refused_io_uring_is_a_clear_error() {
    #[repr(C)]
    struct Filter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct Prog {
        len: u16,
        filter: *const Filter,
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.img");
    let e = std::thread::spawn(move || {
        let f = |code, jt, jf, k| Filter { code, jt, jf, k };
        let nr = libc::SYS_io_uring_setup as u32;
        let prog = [
            f(0x20, 0, 0, 0),  // ld [nr]
            f(0x15, 0, 1, nr), // jeq io_uring_setup
            f(0x06, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            f(0x06, 0, 0, libc::SECCOMP_RET_ALLOW),
        ];
        let fprog = Prog {
            len: 4,
            filter: prog.as_ptr(),
        };
        // SAFETY: prctl with a valid filter program, for this thread only.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            let mode = libc::SECCOMP_MODE_FILTER as libc::c_ulong;
            assert_eq!(
                libc::prctl(libc::PR_SET_SECCOMP, mode, &fprog as *const Prog),
                0
            );
        }
        let o = FileOptions {
            size: Some(1 << 20),
            ..FileOptions::new(&p)
        };
        UringBackstore::new(FileBackstore::open(&o).unwrap())
            .err()
            .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(e.raw_os_error(), None);
    let msg = e.to_string();
    assert!(
        msg.contains("io_engine=uring") && msg.contains("refuses io_uring"),
        "{msg}"
    );
}

/// Several threads submitting at once (as connection threads and the
/// reaper do): no request is lost between them, every one completes.
#[test]
fn concurrent_submitters_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(open(&dir.path().join("c.img"), |_| {}));
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (b, tx) = (Arc::clone(&b), tx.clone());
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let tx = tx.clone();
                    let offset = ((t * 2000 + i) % 256) * 4096;
                    b.submit(
                        IoOp::Read {
                            offset,
                            buf: vec![0; 4096],
                        },
                        Completion::new(move |_, r| tx.send(r.is_ok()).unwrap()),
                    );
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    let done = (0..8000)
        .take_while(|_| rx.recv_timeout(Duration::from_secs(10)) == Ok(true))
        .count();
    if done < 8000 {
        // A lost request never completes: dropping the backstore would
        // wait for it forever.
        std::mem::forget(b);
        panic!("{done} of 8000 requests completed");
    }
}
