//! Online growth of the virtual disk: the L1 table grows in place when its
//! clusters have room, otherwise it moves to new contiguous clusters; the
//! header switches to the new table only once it is durable, and the size
//! field changes last, so a crash leaves either the old or the new size.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::header::MAX_L1_BYTES;
use super::meta::put64;
use super::Qcow2Backstore;

/// Header offsets of `size` and of `l1_size` (followed by `l1_table_offset`).
const SIZE_FIELD: u64 = 24;
const L1_FIELDS: u64 = 36;

impl Qcow2Backstore {
    /// Grow the virtual disk to `new_size` bytes (shrinking is refused).
    /// Durable when it returns; new space reads as zeroes, or from the
    /// backing file where that reaches.
    pub fn grow(&self, new_size: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut m = self.meta()?;
        let old_size = self.size.load(Ordering::Acquire);
        if new_size < old_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "qcow2 images can only grow",
            ));
        }
        if new_size == old_size {
            return Ok(());
        }
        let cs = self.g.cs;
        let entries = new_size.div_ceil(cs).div_ceil(self.g.l2_entries);
        if entries * 8 > MAX_L1_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size too large for this cluster size",
            ));
        }
        let old_entries = m.l1.len() as u64;
        if entries > old_entries {
            // Everything the new table copies must be on disk first.
            let synced = m.flush_stage1()?;
            m.sync()?;
            if m.flush_stage2(synced)? {
                m.sync()?;
            }
            let clusters = (entries * 8).div_ceil(cs);
            let mut buf = vec![0u8; (clusters * cs) as usize];
            for (i, e) in m.l1.iter().enumerate() {
                put64(&mut buf, i, *e);
            }
            let (old_off, old_clusters) = (m.l1_off, m.l1_clusters);
            if clusters <= old_clusters {
                // The new entries are zero; write them before they count.
                let from = (old_entries * 8) as usize;
                let to = (entries * 8) as usize;
                m.file.write_all_at(&buf[from..to], old_off + from as u64)?;
            } else {
                let off = m.alloc_contiguous(clusters)?;
                m.file.write_all_at(&buf, off)?;
                m.cover_clusters()?;
                m.write_refcounts()?;
                (m.l1_off, m.l1_clusters) = (off, clusters);
            }
            m.sync()?;
            let mut f = [0u8; 12];
            f[..4].copy_from_slice(&(entries as u32).to_be_bytes());
            f[4..].copy_from_slice(&m.l1_off.to_be_bytes());
            m.file.write_all_at(&f, L1_FIELDS)?;
            m.sync()?;
            m.l1.resize(entries as usize, 0);
            if m.l1_off != old_off {
                // Unreferenced now that the header is durable.
                let bits = self.g.cluster_bits;
                for c in (old_off >> bits)..(old_off >> bits) + old_clusters {
                    let r = m.rc_get(c)?;
                    m.rc_set(c, r.saturating_sub(1))?;
                    m.free_hint = m.free_hint.min(c);
                }
                m.write_dirty_blocks()?;
            }
        }
        m.file.write_all_at(&new_size.to_be_bytes(), SIZE_FIELD)?;
        m.sync()?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Backstore, Qcow2Backstore, Qcow2Options};

    /// Through the trait: the new size is durable in the header (a reopen
    /// sees it), the old data stays, the new range reads zeroes and takes
    /// writes, shrinking is refused and read-only images cannot grow.
    #[test]
    fn resize_through_the_trait_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.qcow2");
        let q = Qcow2Backstore::create(&p, 1 << 20, 64 << 10).unwrap();
        assert!(q.capabilities().resize);
        q.write_at(&[4u8; 4096], (1 << 20) - 4096).unwrap();
        // Each L1 entry maps 512 MiB here: 1 GiB adds an entry.
        q.resize(1 << 30).unwrap();
        q.write_at(&[8u8; 4096], (1 << 30) - 4096).unwrap();
        let e = q.resize(1 << 20).unwrap_err();
        assert!(e.to_string().contains("shrink"), "{e}");
        q.flush().unwrap();
        drop(q);
        let ro = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let q = Qcow2Backstore::open(&p, &ro).unwrap();
        assert_eq!(q.size(), 1 << 30);
        assert!(!q.capabilities().resize);
        assert!(q.resize(2 << 30).is_err());
        let mut buf = vec![0u8; 8192];
        q.read_at(&mut buf, (1 << 20) - 4096).unwrap();
        assert!(buf[..4096].iter().all(|&x| x == 4));
        assert!(buf[4096..].iter().all(|&x| x == 0));
        q.read_at(&mut buf[..4096], (1 << 30) - 4096).unwrap();
        assert!(buf[..4096].iter().all(|&x| x == 8));
    }
}
