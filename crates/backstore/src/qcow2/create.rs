//! Creating an empty qcow2 v3 image: header, refcount table, refcount
//! blocks and a zeroed L1 table laid out contiguously from cluster 0, every
//! one of those clusters counted once, so `qemu-img check` finds it clean.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{Header, Qcow2Error, EXT_BACKING_FORMAT, MAX_L1_BYTES};
use super::meta::put64;
use super::refcount::rc_write;

const REFCOUNT_ORDER: u32 = 4;

/// A backing file to record in a new image: its name as written into the
/// header (absolute, or relative to the new image's directory) and its
/// format (`qcow2` or `raw`).
pub struct NewBacking<'a> {
    pub name: &'a str,
    pub format: &'a str,
}

pub fn create_image(path: &Path, size: u64, cluster_size: u64) -> Result<(), Qcow2Error> {
    create_image_backed(path, size, cluster_size, None)
}

/// Where the backing-format extension and the backing file name go in
/// cluster 0: the extension right after the 112-byte header, the end
/// marker, then the name (as qemu-img lays them out). Returns the bytes of
/// cluster 0 used, or an error when they don't fit.
fn write_backing(out: &mut [u8], b: &NewBacking<'_>) -> Result<usize, Qcow2Error> {
    const MAX_NAME: usize = 1023; // qcow2 spec: backing_file_size <= 1023
    if b.name.is_empty() || b.name.len() > MAX_NAME {
        return Err(Qcow2Error::Argument(format!(
            "backing file name must be 1 to {MAX_NAME} bytes"
        )));
    }
    if !matches!(b.format, "qcow2" | "raw") {
        return Err(Qcow2Error::Argument(format!(
            "backing format {:?} is not qcow2 or raw",
            b.format
        )));
    }
    let ext = 112;
    let fmt_len = b.format.len();
    let name_off = ext + 8 + fmt_len.next_multiple_of(8) + 8;
    let end = name_off + b.name.len();
    if end > out.len() {
        return Err(Qcow2Error::Argument(
            "backing file name does not fit in the header cluster".into(),
        ));
    }
    out[ext..ext + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    out[ext + 4..ext + 8].copy_from_slice(&(fmt_len as u32).to_be_bytes());
    out[ext + 8..ext + 8 + fmt_len].copy_from_slice(b.format.as_bytes());
    // The end-of-extensions marker is the zeroes already there.
    out[name_off..end].copy_from_slice(b.name.as_bytes());
    out[8..16].copy_from_slice(&(name_off as u64).to_be_bytes());
    out[16..20].copy_from_slice(&(b.name.len() as u32).to_be_bytes());
    Ok(end)
}

/// [`create_image`], optionally recording a backing file: the new image
/// then reads through to it wherever it has no cluster of its own.
pub fn create_image_backed(
    path: &Path,
    size: u64,
    cluster_size: u64,
    backing: Option<&NewBacking<'_>>,
) -> Result<(), Qcow2Error> {
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(Qcow2Error::Argument(format!(
            "cluster size {cluster_size} must be a power of two from 512 to 2 MiB"
        )));
    }
    let cs = cluster_size;
    let bits = cs.trailing_zeros();
    let l1_size = size.div_ceil(cs).div_ceil(cs / 8);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(Qcow2Error::Argument(format!(
            "size {size} needs a larger cluster size than {cs}"
        )));
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let per_block = (cs * 8) >> REFCOUNT_ORDER;
    // Table and blocks must count themselves too: iterate to a fixed point.
    let (mut nt, mut nb) = (1u64, 1u64);
    let total = loop {
        let total = 1 + nt + nb + l1_clusters;
        let nb2 = total.div_ceil(per_block);
        let nt2 = (nb2 * 8).div_ceil(cs);
        if (nt2, nb2) == (nt, nb) {
            break total;
        }
        (nt, nb) = (nt2.max(nt), nb2.max(nb));
    };
    let rct_off = cs;
    let blocks_off = (1 + nt) * cs;
    let l1_off = (1 + nt + nb) * cs;

    let h = Header {
        version: 3,
        cluster_bits: bits,
        size,
        crypt_method: 0,
        l1_size: u32::try_from(l1_size).map_err(|_| Qcow2Error::Argument("size".into()))?,
        l1_table_offset: l1_off,
        refcount_table_offset: rct_off,
        refcount_table_clusters: nt as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible: 0,
        compatible: 0,
        autoclear: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: 112,
        compression_type: 0,
        backing_file: None,
        backing_format: None,
        feature_names: Vec::new(),
    };
    let mut hbuf = vec![0u8; cs as usize];
    h.write_v3(&mut hbuf);
    let used = match backing {
        Some(b) => write_backing(&mut hbuf, b)?,
        None => 112,
    };

    let mut table = vec![0u8; (nt * cs) as usize];
    for i in 0..nb {
        put64(&mut table, i as usize, blocks_off + i * cs);
    }
    let mut blocks = vec![0u8; (nb * cs) as usize];
    for c in 0..total {
        let b = &mut blocks[(c / per_block * cs) as usize..][..cs as usize];
        rc_write(b, (c % per_block) as usize, REFCOUNT_ORDER, 1);
    }

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all_at(&table, rct_off)?;
    f.write_all_at(&blocks, blocks_off)?;
    f.set_len(total * cs)?;
    // The header last: a crash before this leaves no valid image behind.
    f.write_all_at(&hbuf[..used.max(512)], 0)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::super::{Qcow2Backstore, Qcow2Options};
    use crate::Backstore;

    /// `None` when qemu-img is not installed, which fails under CI=true
    /// (the rule of tests/common: `in_ci`).
    fn qemu_img(args: &[&str]) -> Option<String> {
        let Ok(out) = Command::new("qemu-img").args(args).output() else {
            let ci =
                std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"));
            assert!(!ci, "CI=true, and qemu-img is not installed");
            eprintln!("SKIP: qemu-img is not installed");
            return None;
        };
        assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An overlay created over a qcow2 base (relative name) and over a raw
    /// base (absolute name) reads the base where it has no data of its own,
    /// takes writes without touching the base, and reopens with its chain;
    /// qemu-img (when installed) sees the backing file and a clean image.
    #[test]
    fn overlay_over_qcow2_and_raw_bases() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4u64 << 20;
        let base = dir.path().join("base.qcow2");
        {
            let b = Qcow2Backstore::create(&base, size, 65536).unwrap();
            b.write_at(&[0xaa; 65536], 0).unwrap();
            b.write_at(&[0xbb; 4096], 1 << 20).unwrap();
        }
        let raw = dir.path().join("base.raw");
        std::fs::write(&raw, vec![0x5a; size as usize]).unwrap();

        for (name, format, fill) in [
            ("base.qcow2".to_string(), "qcow2", None),
            (raw.display().to_string(), "raw", Some(0x5au8)),
        ] {
            let top = dir.path().join(format!("top-{format}.qcow2"));
            let base_before = std::fs::read(dir.path().join(&name)).unwrap();
            {
                let t =
                    Qcow2Backstore::create_with_backing(&top, None, 65536, &name, format).unwrap();
                assert_eq!(t.size(), size, "size defaults to the backing file's");
                t.write_at(&[0xcc; 512], 512).unwrap();
            }
            let t = Qcow2Backstore::open(&top, &Qcow2Options::default()).unwrap();
            let mut buf = vec![0u8; 4096];
            t.read_at(&mut buf, 0).unwrap();
            let under = fill.unwrap_or(0xaa);
            assert!(
                buf[..512].iter().all(|&b| b == under),
                "{format}: base data"
            );
            assert!(
                buf[512..1024].iter().all(|&b| b == 0xcc),
                "{format}: own data"
            );
            assert!(
                buf[1024..].iter().all(|&b| b == under),
                "{format}: COW kept base"
            );
            t.read_at(&mut buf, 1 << 20).unwrap();
            assert!(buf.iter().all(|&b| b == fill.unwrap_or(0xbb)), "{format}");
            drop(t);
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                base_before,
                "{format}: base untouched"
            );
            let top_s = top.to_str().unwrap();
            if let Some(info) = qemu_img(&["info", "--output=json", top_s]) {
                assert!(
                    info.contains(&format!("\"backing-filename\": \"{name}\"")),
                    "{info}"
                );
                assert!(
                    info.contains(&format!("\"backing-filename-format\": \"{format}\"")),
                    "{info}"
                );
                qemu_img(&["check", top_s]);
            }
        }
        // Bad requests are refused before anything is written.
        let own = dir.path().join("own.qcow2");
        assert!(
            Qcow2Backstore::create_with_backing(&own, None, 65536, "own.qcow2", "qcow2").is_err()
        );
        assert!(
            Qcow2Backstore::create_with_backing(&own, None, 65536, "base.qcow2", "vmdk").is_err()
        );
        assert!(Qcow2Backstore::create_with_backing(&own, None, 65536, "missing", "raw").is_err());
        assert!(!own.exists());
    }
}
