//! The shared backstore conformance checks: the same read / write / FUA /
//! flush / discard / write-zeroes / resize / out-of-range / size /
//! concurrency tests for every engine, so each one behaves as the target
//! core expects. A capability a backstore lacks must be declared
//! ([`Backstore::capabilities`]); the checks then
//! verify that the operation is refused without side effects instead.
//!
//! Test support, not a data-path module: [`check`] panics (with the
//! backstore's name and the failing step) on the first violation. It is
//! public so out-of-tree handlers can run it from their own tests:
//!
//! ```no_run
//! use backstore::conformance::{check, Expect};
//! let store = backstore::RamBackstore::new(8 << 20).unwrap();
//! check("ram", &store, &Expect::default());
//! ```

use std::io;

use crate::Backstore;

/// What a backstore under test is expected to do.
pub struct Expect {
    /// Reads return what was written (false for nullio, which drops writes).
    pub stores_data: bool,
    /// Writes are accepted (false for read-only media).
    pub writable: bool,
    /// Called with the new size before the resize step grows the backstore,
    /// for media that must grow underneath first (a loop device).
    pub grow_medium: Option<Box<dyn Fn(u64)>>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            stores_data: true,
            writable: true,
            grow_medium: None,
        }
    }
}

/// Deterministic bytes (xorshift), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read(b: &dyn Backstore, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xA5u8; len];
    b.read_at(&mut v, off)
        .unwrap_or_else(|e| panic!("read {off}+{len}: {e}"));
    v
}

fn zero(v: &[u8]) -> bool {
    v.iter().all(|&x| x == 0)
}

/// Run every check against `b`. Needs at least 4 MiB; uses the whole medium.
pub fn check(name: &str, b: &dyn Backstore, expect: &Expect) {
    let size = b.size();
    assert!(
        size >= 4 << 20,
        "{name}: size {size} too small for the suite"
    );
    assert_eq!(size % 512, 0, "{name}: size is not a multiple of 512");
    let caps = b.capabilities();
    assert_eq!(
        caps.read_only, !expect.writable,
        "{name}: read_only capability"
    );
    out_of_range(name, b, size);
    if !expect.writable {
        read_only(name, b, size);
        resize(name, b, expect);
        return;
    }
    read_write(name, b, expect, size);
    discard_and_zeroes(name, b, expect);
    concurrent(name, b, expect);
    resize(name, b, expect);
}

fn out_of_range(name: &str, b: &dyn Backstore, size: u64) {
    let mut buf = vec![0u8; 4096];
    b.read_at(&mut buf[..512], size - 512)
        .unwrap_or_else(|e| panic!("{name}: read of the last block: {e}"));
    for (off, len) in [
        (size, 512),
        (size - 512, 1024),
        (size + 4096, 4096),
        (u64::MAX - 511, 512),
    ] {
        assert!(
            b.read_at(&mut buf[..len], off).is_err(),
            "{name}: read at {off}+{len} past the end accepted"
        );
        assert!(
            b.write_at(&buf[..len], off).is_err(),
            "{name}: write at {off}+{len} past the end accepted"
        );
        assert!(
            b.write_at_fua(&buf[..len], off).is_err(),
            "{name}: FUA write past the end accepted"
        );
        assert!(
            b.discard(off, len as u64).is_err(),
            "{name}: discard past the end accepted"
        );
        assert!(
            b.write_zeroes(off, len as u64).is_err(),
            "{name}: write_zeroes past the end accepted"
        );
    }
    assert_eq!(b.size(), size, "{name}: size changed by refused requests");
}

fn read_only(name: &str, b: &dyn Backstore, size: u64) {
    let before = read(b, 0, 4096);
    assert!(
        b.write_at(&[1u8; 4096], 0).is_err(),
        "{name}: write on read-only"
    );
    assert!(
        b.write_at_fua(&[1u8; 512], 0).is_err(),
        "{name}: FUA on read-only"
    );
    assert!(
        b.write_zeroes(0, 4096).is_err(),
        "{name}: zeroes on read-only"
    );
    assert!(b.discard(0, 4096).is_err(), "{name}: discard on read-only");
    b.flush()
        .unwrap_or_else(|e| panic!("{name}: flush on read-only: {e}"));
    assert_eq!(read(b, 0, 4096), before, "{name}: read-only data changed");
    assert_eq!(b.size(), size);
}

fn read_write(name: &str, b: &dyn Backstore, expect: &Expect, size: u64) {
    // Aligned, 512-byte granular, across 64 KiB / 1 MiB boundaries, at the end.
    let cases: [(u64, usize); 6] = [
        (0, 4096),
        (4096 + 512, 1536),
        ((64 << 10) - 512, 8192),
        ((1 << 20) - 4096, 256 << 10),
        (3 << 20, 512),
        (size - 8192, 8192),
    ];
    for (i, (off, len)) in cases.iter().enumerate() {
        let data = pattern(*len, i as u64 + 1);
        b.write_at(&data, *off)
            .unwrap_or_else(|e| panic!("{name}: write {off}+{len}: {e}"));
        let back = read(b, *off, *len);
        if expect.stores_data {
            assert!(back == data, "{name}: read-back of {off}+{len} differs");
        } else {
            assert!(zero(&back), "{name}: a data-less backstore returned data");
        }
    }
    let data = pattern(4096, 99);
    b.write_at_fua(&data, 2 << 20)
        .unwrap_or_else(|e| panic!("{name}: FUA write: {e}"));
    b.flush().unwrap_or_else(|e| panic!("{name}: flush: {e}"));
    if expect.stores_data {
        assert!(read(b, 2 << 20, 4096) == data, "{name}: FUA read-back");
        // A read of an unaligned buffer address still fills it.
        let mut odd = vec![0u8; 4097];
        b.read_at(&mut odd[1..], 2 << 20).unwrap();
        assert!(odd[1..] == data[..], "{name}: unaligned buffer read");
    }
}

fn discard_and_zeroes(name: &str, b: &dyn Backstore, expect: &Expect) {
    let caps = b.capabilities();
    let base = 1 << 20;
    let data = pattern(256 << 10, 7);
    b.write_at(&data, base).unwrap();
    // write_zeroes always works (the trait's default writes zero buffers).
    b.write_zeroes(base + 4096, 8192)
        .unwrap_or_else(|e| panic!("{name}: write_zeroes: {e}"));
    let back = read(b, base, 256 << 10);
    assert!(
        zero(&back[4096..12288]),
        "{name}: write_zeroes range not zero"
    );
    if expect.stores_data {
        assert!(
            back[..4096] == data[..4096],
            "{name}: write_zeroes spilled before"
        );
        assert!(
            back[12288..] == data[12288..],
            "{name}: write_zeroes spilled after"
        );
    }
    b.write_zeroes(base, 0)
        .unwrap_or_else(|e| panic!("{name}: empty write_zeroes: {e}"));
    let r = b.discard(base + (64 << 10), 128 << 10);
    let back = read(b, base, 256 << 10);
    if caps.discard {
        r.unwrap_or_else(|e| panic!("{name}: discard (advertised): {e}"));
        assert!(
            zero(&back[64 << 10..192 << 10]),
            "{name}: discarded range not zero"
        );
        if expect.stores_data {
            assert!(
                back[192 << 10..] == data[192 << 10..],
                "{name}: discard spilled"
            );
        }
        if let Ok(Some(e)) = b.allocation_at(base + (64 << 10)) {
            assert!(e.len > 0, "{name}: empty extent");
        }
    } else {
        let e = r.err().unwrap_or_else(|| {
            panic!("{name}: discard succeeded but capabilities().discard is false")
        });
        let _ = e;
        if expect.stores_data {
            assert!(
                back[64 << 10..] == data[64 << 10..],
                "{name}: refused discard changed data"
            );
        }
    }
    if let Ok(Some(e)) = b.allocation_at(0) {
        assert!(
            e.len > 0 && e.len <= b.size(),
            "{name}: extent length {}",
            e.len
        );
    }
}

fn concurrent(name: &str, b: &dyn Backstore, expect: &Expect) {
    let size = b.size();
    let per = (size / 4) & !4095;
    let stores = expect.stores_data;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                for i in 0..16u64 {
                    let off = t * per + (i * 16384) % (per - 16384);
                    let data = pattern(16384, 1000 + t * 100 + i);
                    b.write_at(&data, off)
                        .unwrap_or_else(|e| panic!("{name}: thread {t} write: {e}"));
                    let back = read(b, off, 16384);
                    if stores {
                        assert!(back == data, "{name}: thread {t} read-back differs");
                    }
                }
            });
        }
    });
}

fn resize(name: &str, b: &dyn Backstore, expect: &Expect) {
    let size = b.size();
    if !b.capabilities().resize {
        let e = b.resize(size + (1 << 20)).err().unwrap_or_else(|| {
            panic!("{name}: resize succeeded but capabilities().resize is false")
        });
        let _ = e;
        assert_eq!(b.size(), size, "{name}: refused resize changed the size");
        return;
    }
    let tail = if expect.writable && expect.stores_data {
        let t = pattern(4096, 55);
        b.write_at(&t, size - 4096).unwrap();
        Some(t)
    } else {
        None
    };
    let grown = size + (3 << 20);
    if let Some(g) = &expect.grow_medium {
        g(grown);
    }
    b.resize(grown)
        .unwrap_or_else(|e| panic!("{name}: resize to {grown}: {e}"));
    assert_eq!(b.size(), grown, "{name}: size after resize");
    let back = read(b, size - 4096, 8192);
    if let Some(t) = tail {
        assert!(
            back[..4096] == t[..],
            "{name}: data before the old end lost"
        );
    }
    // A read-only medium that grew (a device grown underneath, a computed
    // pattern) holds whatever it holds there; a writable one starts empty.
    if expect.writable {
        assert!(zero(&back[4096..]), "{name}: grown range not zero");
    }
    if expect.writable {
        let d = pattern(4096, 66);
        b.write_at(&d, grown - 4096)
            .unwrap_or_else(|e| panic!("{name}: write in the grown range: {e}"));
        if expect.stores_data {
            assert!(
                read(b, grown - 4096, 4096) == d,
                "{name}: grown range read-back"
            );
        }
    }
    assert!(
        b.write_at(&[0u8; 512], grown).is_err(),
        "{name}: past the new end"
    );
    b.resize(grown)
        .unwrap_or_else(|e| panic!("{name}: resize to the same size: {e}"));
    let e = b
        .resize(size)
        .err()
        .unwrap_or_else(|| panic!("{name}: shrink accepted"));
    assert_eq!(
        e.kind(),
        io::ErrorKind::InvalidInput,
        "{name}: shrink error kind"
    );
    assert_eq!(b.size(), grown, "{name}: refused shrink changed the size");
    b.flush()
        .unwrap_or_else(|e| panic!("{name}: flush after resize: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capabilities, RamBackstore};

    /// A ramdisk that misbehaves in one chosen way.
    struct Liar {
        inner: RamBackstore,
        /// Claims discard but does nothing.
        fake_discard: bool,
        /// Claims resize but refuses it.
        fake_resize: bool,
    }

    impl Backstore for Liar {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                discard: true,
                resize: true,
                ..self.inner.capabilities()
            }
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.inner.write_at(buf, offset)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
            if self.fake_discard {
                match offset.checked_add(len) {
                    Some(end) if end <= self.size() => Ok(()),
                    _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
                }
            } else {
                self.inner.discard(offset, len)
            }
        }
        fn resize(&self, new_size: u64) -> io::Result<()> {
            if self.fake_resize {
                Err(io::Error::from(io::ErrorKind::Unsupported))
            } else {
                self.inner.resize(new_size)
            }
        }
    }

    fn liar(fake_discard: bool, fake_resize: bool) -> Liar {
        Liar {
            inner: RamBackstore::new(8 << 20).unwrap(),
            fake_discard,
            fake_resize,
        }
    }

    #[test]
    fn an_honest_wrapper_passes() {
        check("honest", &liar(false, false), &Expect::default());
    }

    #[test]
    #[should_panic(expected = "discarded range not zero")]
    fn advertised_discard_must_zero() {
        check("liar", &liar(true, false), &Expect::default());
    }

    #[test]
    #[should_panic(expected = "resize to")]
    fn advertised_resize_must_work() {
        check("liar", &liar(false, true), &Expect::default());
    }
}
