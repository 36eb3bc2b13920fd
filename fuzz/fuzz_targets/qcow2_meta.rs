//! qcow2 metadata on untrusted images: the header plus the L1, L2 and
//! refcount tables and compressed cluster descriptors they point to. The
//! image lives in a memfd (no file on disk) and is opened through
//! /proc/self/fd; then reads, writes, zeroing, allocation queries, a grow
//! and flushes run over guest offsets the first byte picks, and the image
//! as our writes left it is opened once more. Every step must answer an
//! error or succeed, never panic; an image naming a backing file is
//! skipped (it would open other paths).
#![no_main]
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use backstore::qcow2::{Header, Qcow2Backstore, Qcow2Options};
use backstore::Backstore;
use libfuzzer_sys::fuzz_target;

fn memfd() -> &'static Mutex<(File, PathBuf)> {
    static F: OnceLock<Mutex<(File, PathBuf)>> = OnceLock::new();
    F.get_or_init(|| {
        // SAFETY: a NUL-terminated name and no flags; the fd is owned by
        // the File from here on.
        let fd = unsafe { libc::memfd_create(c"qcow2-fuzz".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create");
        let file = unsafe { File::from_raw_fd(fd) };
        Mutex::new((file, PathBuf::from(format!("/proc/self/fd/{fd}"))))
    })
}

fn exercise(q: &Qcow2Backstore, ops: u8) {
    let size = q.size();
    let mut buf = vec![0u8; 4096];
    let offs = [0, size / 2, size / 3 + 511, size.saturating_sub(4096)];
    for (i, &off) in offs.iter().enumerate() {
        let off = off & !511;
        let _ = q.read_at(&mut buf, off);
        let _ = q.allocation_at(off);
        if ops & (1 << i) != 0 {
            buf[..8].copy_from_slice(&off.to_le_bytes());
            let _ = q.write_at(&buf[..1024], off);
        }
    }
    if ops & 0x10 != 0 {
        let _ = q.discard(offs[1] & !511, 4096);
    }
    if ops & 0x20 != 0 {
        let _ = q.write_zeroes(0, 8192);
    }
    if ops & 0x40 != 0 {
        let _ = q.resize(size.saturating_add(1 << 20));
    }
    let _ = q.flush();
    let _ = q.read_at(&mut buf, 0);
}

fuzz_target!(|data: &[u8]| {
    let [ops, image @ ..] = data else {
        return;
    };
    match Header::parse(image) {
        Ok(h) if h.backing_file.is_none() => {}
        _ => return,
    }
    let guard = memfd().lock().unwrap_or_else(|e| e.into_inner());
    let (file, path) = &*guard;
    file.set_len(0).expect("truncate memfd");
    file.write_all_at(image, 0).expect("fill memfd");
    (&*file).flush().expect("flush memfd");
    let opts = Qcow2Options {
        read_only: ops & 0x80 != 0,
        l2_cache_bytes: 64 << 10,
        refcount_cache_bytes: 64 << 10,
    };
    if let Ok(q) = Qcow2Backstore::open(path, &opts) {
        exercise(&q, *ops);
        drop(q);
        // What we wrote (and flushed on drop) must be an image we can open
        // and read again; it may still fail (the input's own damage).
        if let Ok(q) = Qcow2Backstore::open(path, &opts) {
            exercise(&q, 0);
        }
    }
});
