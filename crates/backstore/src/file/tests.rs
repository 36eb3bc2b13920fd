//! Tests of the file backstore (`file.rs`).

use super::*;
use std::os::unix::fs::MetadataExt;

fn opts(path: &Path, size: Option<u64>) -> FileOptions {
    FileOptions {
        size,
        ..FileOptions::new(path)
    }
}

#[test]
fn creates_sparse_file_of_given_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    let b = FileBackstore::open(&opts(&p, Some(1 << 30))).unwrap();
    assert_eq!(b.size(), 1 << 30);
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(md.len(), 1 << 30);
    // Sparse: far fewer than 1 GiB of 512-byte blocks allocated.
    assert!(md.blocks() * 512 < 1 << 20, "blocks={}", md.blocks());
}

#[test]
fn missing_file_without_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = FileBackstore::open(&opts(&dir.path().join("nope"), None))
        .err()
        .unwrap();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn size_from_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    std::fs::write(&p, vec![7u8; 8192]).unwrap();
    let b = FileBackstore::open(&opts(&p, None)).unwrap();
    assert_eq!(b.size(), 8192);
    let mut buf = [0u8; 512];
    b.read_at(&mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&x| x == 7));
}

fn roundtrip(o: FileOptions) {
    let b = FileBackstore::open(&o).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
    b.write_at(&data, 4096).unwrap();
    b.write_at_fua(&data[..512], 1 << 20).unwrap();
    b.flush().unwrap();
    let mut back = vec![0u8; 65536];
    b.read_at(&mut back, 4096).unwrap();
    assert_eq!(back, data);
    let mut small = vec![0u8; 512];
    b.read_at(&mut small, 1 << 20).unwrap();
    assert_eq!(small, data[..512]);
    // Unaligned buffer address (O_DIRECT path must bounce).
    let mut big = vec![0u8; 4096 + 1];
    b.read_at(&mut big[1..], 4096).unwrap();
    assert_eq!(&big[1..], &data[..4096]);
    b.write_at(&data[1..4097], 8192).unwrap();
    b.read_at(&mut back[..4096], 8192).unwrap();
    assert_eq!(&back[..4096], &data[1..4097]);
}

#[test]
fn read_back_write_back() {
    let dir = tempfile::tempdir().unwrap();
    roundtrip(opts(&dir.path().join("a"), Some(4 << 20)));
}

#[test]
fn read_back_write_through_reports_no_cache() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileOptions {
        write_back: false,
        ..opts(&dir.path().join("a"), Some(4 << 20))
    };
    assert!(!FileBackstore::open(&o).unwrap().capabilities().write_cache);
    roundtrip(o);
}

#[test]
fn read_back_direct() {
    // /var/tmp is disk-backed on most systems (tmpfs refuses O_DIRECT; then
    // the backstore falls back and the test still checks the data).
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    roundtrip(FileOptions {
        direct: true,
        ..opts(&dir.path().join("a"), Some(4 << 20))
    });
}

#[test]
fn discard_reads_zeroes_and_deallocates() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackstore::open(&opts(&dir.path().join("a"), Some(4 << 20))).unwrap();
    assert!(b.capabilities().discard);
    b.write_at(&vec![0xAB; 1 << 20], 0).unwrap();
    assert!(b.extent_at(0).unwrap().allocated);
    b.discard(0, 1 << 20).unwrap();
    let mut buf = vec![1u8; 1 << 20];
    b.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    let e = b.extent_at(0).unwrap();
    assert!(!e.allocated);
    assert_eq!(e.len, 4 << 20);
}

#[test]
fn write_zeroes_zeroes() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackstore::open(&opts(&dir.path().join("a"), Some(1 << 20))).unwrap();
    b.write_at(&vec![0xCD; 8192], 0).unwrap();
    b.write_zeroes(512, 4096).unwrap();
    let mut buf = vec![0u8; 8192];
    b.read_at(&mut buf, 0).unwrap();
    assert!(buf[..512].iter().all(|&x| x == 0xCD));
    assert!(buf[512..4608].iter().all(|&x| x == 0));
    assert!(buf[4608..].iter().all(|&x| x == 0xCD));
}

#[test]
fn extent_reports_data_then_hole() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackstore::open(&opts(&dir.path().join("a"), Some(8 << 20))).unwrap();
    b.write_at(&vec![1u8; 1 << 20], 2 << 20).unwrap();
    let e = b.extent_at(0).unwrap();
    assert_eq!(
        e,
        Extent {
            allocated: false,
            len: 2 << 20
        }
    );
    let e = b.extent_at(2 << 20).unwrap();
    assert!(e.allocated);
    assert!(e.len >= 1 << 20 && e.len < 6 << 20);
    assert!(b.extent_at(8 << 20).is_err());
}

#[test]
fn bounds_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackstore::open(&opts(&dir.path().join("a"), Some(8192))).unwrap();
    let mut buf = [0u8; 512];
    assert!(b.read_at(&mut buf, 8192 - 256).is_err());
    assert!(b.write_at(&buf, 8192).is_err());
    assert!(b.write_at(&buf, u64::MAX - 10).is_err());
    assert!(b.discard(4096, 8192).is_err());
    assert!(b.write_zeroes(0, 8193).is_err());
    b.read_at(&mut buf, 8192 - 512).unwrap();
}

#[test]
fn read_only_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a");
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    let b = FileBackstore::open(&FileOptions {
        read_only: true,
        ..opts(&p, None)
    })
    .unwrap();
    assert!(b.capabilities().read_only);
    assert!(b.write_at(&[0u8; 512], 0).is_err());
    assert!(b.discard(0, 512).is_err());
}

#[test]
fn rotational_follows_option_then_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a");
    for want in [true, false] {
        let o = FileOptions {
            rotational: Some(want),
            ..opts(&p, Some(4096))
        };
        assert_eq!(
            FileBackstore::open(&o).unwrap().capabilities().rotational,
            want
        );
    }
    let meta = std::fs::metadata(&p).unwrap();
    let dev = meta.dev();
    let sysfs = format!(
        "/sys/dev/block/{}:{}/queue/rotational",
        libc::major(dev),
        libc::minor(dev)
    );
    if let Ok(s) = std::fs::read_to_string(sysfs) {
        let b = FileBackstore::open(&opts(&p, None)).unwrap();
        assert_eq!(b.capabilities().rotational, s.trim() == "1");
    }
}

#[test]
fn existing_file_is_extended_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a");
    std::fs::write(&p, vec![9u8; 4096]).unwrap();
    let b = FileBackstore::open(&opts(&p, Some(1 << 20))).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
    let mut buf = [0u8; 4096];
    b.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 9));
    drop(b);
    let b = FileBackstore::open(&opts(&p, Some(4096))).unwrap();
    assert_eq!(b.size(), 4096);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
}
