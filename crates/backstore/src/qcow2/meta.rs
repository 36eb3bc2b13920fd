//! The mutable metadata of an open image: the L1 table, the L2 table cache,
//! the refcount table and block cache (see `refcount.rs`), and the flush
//! protocol that writes them back in an order that keeps the image
//! consistent after a crash:
//!
//! 1. refcount blocks (and, behind a sync, a changed refcount table), plus
//!    L2 tables that no on-disk L1 entry references yet;
//! 2. `fdatasync` — guest data, refcounts and new tables are now durable;
//! 3. the other dirty L2 tables and the L1 table; `fdatasync`.
//!
//! So an L2/L1 entry never reaches the disk before the cluster it points to
//! has its data and refcount there; a crash can only leak clusters. Frees go
//! the other way (pointer removed first, refcount decremented after the
//! pointer change is durable), so they are queued in `pending_free` and
//! applied after a flush.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::cache::TableCache;

/// Bits 9..55 of L1/L2 entries: the host offset.
pub const OFF_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const COPIED: u64 = 1 << 63;
pub const COMPRESSED: u64 = 1 << 62;
pub const ZERO_FLAG: u64 = 1;

/// Sizes derived from the header, fixed for the life of the image.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub version: u32,
    pub cluster_bits: u32,
    pub cs: u64,
    pub l2_entries: u64,
    pub rc_order: u32,
    pub rc_per_block: u64,
}

impl Geometry {
    pub fn new(version: u32, cluster_bits: u32, rc_order: u32) -> Self {
        let cs = 1u64 << cluster_bits;
        Geometry {
            version,
            cluster_bits,
            cs,
            l2_entries: cs / 8,
            rc_order,
            rc_per_block: (cs * 8) >> rc_order,
        }
    }
}

/// What a guest cluster maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Reads from the backing file, or zeroes.
    Unallocated,
    /// v3 zero flag without a host cluster.
    Zero,
    /// v3 zero flag over a preallocated host cluster.
    ZeroAlloc {
        host: u64,
        copied: bool,
    },
    Data {
        host: u64,
        copied: bool,
    },
    /// Deflate stream at `off`, at most `len` bytes long.
    Compressed {
        off: u64,
        len: u64,
    },
}

pub fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("qcow2 image corrupt: {what}"),
    )
}

impl Geometry {
    pub fn classify(&self, e: u64) -> io::Result<Cluster> {
        if e & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let off = e & ((1u64 << x) - 1);
            let sectors = (e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1);
            let end = (off & !511) + (sectors + 1) * 512;
            return Ok(Cluster::Compressed {
                off,
                len: end - off,
            });
        }
        let host = e & OFF_MASK;
        let copied = e & COPIED != 0;
        if !host.is_multiple_of(self.cs) {
            return Err(corrupt("unaligned data cluster offset"));
        }
        if self.version >= 3 && e & ZERO_FLAG != 0 {
            return Ok(if host == 0 {
                Cluster::Zero
            } else {
                Cluster::ZeroAlloc { host, copied }
            });
        }
        Ok(if host == 0 {
            Cluster::Unallocated
        } else {
            Cluster::Data { host, copied }
        })
    }

    /// Host clusters holding refcounts for this mapping (for frees).
    pub fn host_span(&self, c: Cluster) -> Option<(u64, u64)> {
        match c {
            Cluster::Data { host, .. } | Cluster::ZeroAlloc { host, .. } => Some((host, self.cs)),
            Cluster::Compressed { off, len } => Some((off, len)),
            Cluster::Unallocated | Cluster::Zero => None,
        }
    }
}

pub fn get64(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[i * 8..i * 8 + 8]);
    u64::from_be_bytes(b)
}

pub fn put64(data: &mut [u8], i: usize, v: u64) {
    data[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
}

pub struct Meta {
    pub g: Geometry,
    pub file: File,
    pub l1: Vec<u64>,
    pub l1_off: u64,
    /// Clusters reserved for the L1 table (it may grow in place within them).
    pub l1_clusters: u64,
    /// Dirty L1 entries, as an index range [lo, hi).
    pub l1_dirty: Option<(usize, usize)>,
    /// The L1 entries as last written to the file: an L2 table loaded back
    /// from disk that no written entry points to is still fresh.
    pub l1_disk: Vec<u64>,
    pub l2: TableCache,
    pub rct: Vec<u64>,
    pub rct_off: u64,
    pub rct_clusters: u64,
    pub rct_dirty: bool,
    pub rcb: TableCache,
    /// Host clusters whose refcount drops once the pointer removal is durable.
    pub pending_free: Vec<u64>,
    /// How many frees were ever queued before `pending_free[0]`: flushes
    /// name the frees they made safe by this running count, so concurrent
    /// flushes never apply one queued after their own L2 writes.
    pub freed_before: u64,
    /// Every cluster below this one is in use.
    pub free_hint: u64,
    /// Every cluster from this one on is free.
    pub end_cluster: u64,
    /// The file is at least this long. Fresh clusters past the end get only
    /// their data written (the rest reads as zeroes); flush extends the file
    /// over them before any table points there, so QEMU sees whole clusters.
    pub file_len: u64,
    /// Counts writes that must be durable before tables that point to
    /// them (refcounts, fresh tables, allocated data); see `flush_stage2`.
    pub writes: u64,
    /// One cluster of bounce space for copy-on-write (reused, not per request).
    pub scratch: Vec<u8>,
}

impl Meta {
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn read_table(&self, off: u64) -> io::Result<Box<[u8]>> {
        let mut data = vec![0u8; self.g.cs as usize].into_boxed_slice();
        self.file.read_exact_at(&mut data, off)?;
        Ok(data)
    }

    fn l1_index(&self, gc: u64) -> io::Result<(usize, usize)> {
        let i = usize::try_from(gc / self.g.l2_entries).map_err(|_| corrupt("L1 index"))?;
        if i >= self.l1.len() {
            return Err(corrupt("guest offset beyond the L1 table"));
        }
        Ok((i, (gc % self.g.l2_entries) as usize))
    }

    /// Cache slot of the L2 table for L1 entry `i`; with `create`, allocate
    /// a zeroed table when there is none.
    fn l2_slot(&mut self, i: usize, create: bool) -> io::Result<Option<usize>> {
        let e = self.l1[i];
        let off = e & OFF_MASK;
        if off == 0 {
            if !create {
                return Ok(None);
            }
            let host = self.alloc_cluster()?;
            self.make_room_l2()?;
            let zero = vec![0u8; self.g.cs as usize].into_boxed_slice();
            let s = self.l2.insert(host, zero, true, true);
            self.l1[i] = host | COPIED;
            self.mark_l1(i);
            return Ok(Some(s));
        }
        if !off.is_multiple_of(self.g.cs) {
            return Err(corrupt("unaligned L2 table offset"));
        }
        if create && e & COPIED == 0 {
            // Shared with an internal snapshot: copy before modifying.
            return self.cow_l2(i, off).map(Some);
        }
        if let Some(s) = self.l2.find(off) {
            return Ok(Some(s));
        }
        self.make_room_l2()?;
        let data = self.read_table(off)?;
        // A fresh table evicted before the flush that writes its L1 entry
        // comes back fresh: marking it otherwise would make its next
        // eviction sync the file (the cost of random writes over more L2
        // tables than the cache holds).
        let fresh = self.l1_disk.get(i).is_none_or(|&d| d & OFF_MASK != off);
        Ok(Some(self.l2.insert(off, data, false, fresh)))
    }

    /// Give L1 entry `i` a private copy of the shared L2 table at `old`.
    /// Cluster refcounts count L1 tables that reach a cluster (a snapshot
    /// took its references when it was made), so the clusters keep theirs;
    /// only the old table loses ours, once the new L1 entry is durable.
    fn cow_l2(&mut self, i: usize, old: u64) -> io::Result<usize> {
        let mut data = match self.l2.find(old) {
            Some(s) => self.l2.get(s).data.clone(),
            None => self.read_table(old)?,
        };
        // Shared clusters must not be written in place through the copy.
        for j in 0..self.g.l2_entries as usize {
            let e = get64(&data, j);
            put64(&mut data, j, e & !COPIED);
        }
        let host = self.alloc_cluster()?;
        self.make_room_l2()?;
        let s = self.l2.insert(host, data, true, true);
        self.l1[i] = host | COPIED;
        self.mark_l1(i);
        self.free_later(old, self.g.cs);
        Ok(s)
    }

    fn mark_l1(&mut self, i: usize) {
        self.l1_dirty = Some(match self.l1_dirty {
            Some((lo, hi)) => (lo.min(i), hi.max(i + 1)),
            None => (i, i + 1),
        });
    }

    fn make_room_l2(&mut self) -> io::Result<()> {
        while self.l2.is_full() {
            let Some(v) = self.l2.victim() else { break };
            let t = self.l2.get(v);
            if t.dirty {
                if !t.fresh {
                    // The on-disk L1 points here: what this table points to
                    // must be durable first.
                    self.cover_clusters()?;
                    self.write_refcounts()?;
                    self.sync()?;
                }
                let t = self.l2.get(v);
                self.file.write_all_at(&t.data, t.key)?;
                self.writes += 1;
            }
            self.l2.remove(v);
        }
        Ok(())
    }

    /// The raw L2 entry of guest cluster `gc` (0 when it has no L2 table).
    pub fn l2_entry(&mut self, gc: u64) -> io::Result<u64> {
        let (i, j) = self.l1_index(gc)?;
        let e = match self.l2_slot(i, false)? {
            Some(s) => get64(&self.l2.get(s).data, j),
            None => 0,
        };
        // Nothing under a shared L2 table may be written in place.
        Ok(if self.l1[i] & COPIED == 0 {
            e & !COPIED
        } else {
            e
        })
    }

    pub fn lookup(&mut self, gc: u64) -> io::Result<Cluster> {
        let e = self.l2_entry(gc)?;
        self.g.classify(e)
    }

    /// Whether the L2 table covering `gc` exists (for skipping holes fast).
    pub fn has_l2(&self, gc: u64) -> bool {
        self.l1_index(gc)
            .map(|(i, _)| self.l1[i] & OFF_MASK != 0)
            .unwrap_or(false)
    }

    pub fn set_l2_entry(&mut self, gc: u64, v: u64) -> io::Result<()> {
        let (i, j) = self.l1_index(gc)?;
        let s = self
            .l2_slot(i, true)?
            .ok_or_else(|| corrupt("no L2 table"))?;
        let t = self.l2.get_mut(s);
        put64(&mut t.data, j, v);
        t.dirty = true;
        Ok(())
    }

    pub fn is_dirty(&self) -> bool {
        self.l1_dirty.is_some() || self.rct_dirty || self.l2.any_dirty() || self.rcb.any_dirty()
    }

    /// Running count of queued frees (see `freed_before`).
    pub fn frees_queued(&self) -> u64 {
        self.freed_before + self.pending_free.len() as u64
    }

    /// Extend the file over every allocated cluster.
    pub fn cover_clusters(&mut self) -> io::Result<()> {
        let end = self.end_cluster << self.g.cluster_bits;
        if self.file_len < end {
            self.file.set_len(end)?;
            self.file_len = end;
            self.writes += 1;
        }
        Ok(())
    }

    /// Write every dirty refcount block; a changed refcount table goes out
    /// only after the blocks it points to are durable.
    pub fn write_refcounts(&mut self) -> io::Result<()> {
        self.write_dirty_blocks()?;
        if self.rct_dirty {
            self.sync()?;
            let mut buf = vec![0u8; (self.rct_clusters * self.g.cs) as usize];
            for (i, e) in self.rct.iter().enumerate() {
                put64(&mut buf, i, *e);
            }
            self.file.write_all_at(&buf, self.rct_off)?;
            self.rct_dirty = false;
        }
        Ok(())
    }

    pub fn write_dirty_blocks(&mut self) -> io::Result<()> {
        for t in self.rcb.slots_mut() {
            if t.dirty {
                self.file.write_all_at(&t.data, t.key)?;
                t.dirty = false;
                self.writes += 1;
            }
        }
        Ok(())
    }

    /// Flush stage 1: write what may precede the first sync (refcounts,
    /// tables no on-disk L1 entry points to, file extension). Returns the
    /// write counter a sync issued after this call covers.
    pub fn flush_stage1(&mut self) -> io::Result<u64> {
        self.cover_clusters()?;
        self.write_refcounts()?;
        for t in self.l2.slots_mut() {
            if t.dirty && t.fresh {
                self.file.write_all_at(&t.data, t.key)?;
                t.dirty = false;
            }
        }
        self.writes += 1;
        Ok(self.writes)
    }

    fn stage1_clean(&self) -> bool {
        !self.rct_dirty
            && !self.rcb.any_dirty()
            && self.file_len >= self.end_cluster << self.g.cluster_bits
            && !self.l2.any_dirty_fresh()
    }

    /// Flush stage 2, once a sync covering counter `synced` completed: write
    /// the tables that point to data (the caller syncs again if this
    /// returns true). When allocations happened since stage 1 (the sync ran
    /// without the lock), their refcounts and data are made durable first.
    pub fn flush_stage2(&mut self, synced: u64) -> io::Result<bool> {
        if self.writes != synced || !self.stage1_clean() {
            self.flush_stage1()?;
            self.sync()?;
        }
        let mut wrote = false;
        for t in self.l2.slots_mut() {
            if t.dirty {
                self.file.write_all_at(&t.data, t.key)?;
                t.dirty = false;
                wrote = true;
            }
        }
        if let Some((lo, hi)) = self.l1_dirty {
            let mut buf = vec![0u8; (hi - lo) * 8];
            for (k, e) in self.l1[lo..hi].iter().enumerate() {
                put64(&mut buf, k, *e);
            }
            self.file.write_all_at(&buf, self.l1_off + lo as u64 * 8)?;
            if self.l1_disk.len() < hi {
                self.l1_disk.resize(hi, 0);
            }
            self.l1_disk[lo..hi].copy_from_slice(&self.l1[lo..hi]);
            self.l1_dirty = None;
            wrote = true;
        }
        // Not durable yet, but clearing `fresh` early only makes later
        // evictions more careful.
        for t in self.l2.slots_mut() {
            t.fresh = false;
        }
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_descriptor_fields() {
        let g = Geometry::new(3, 16, 4);
        // 64 KiB clusters: offset in bits 0..54, extra sectors in 54..62.
        let e = COMPRESSED | (3u64 << 54) | 0x12345;
        let end = (0x12345 & !511) + 4 * 512;
        assert_eq!(
            g.classify(e).unwrap(),
            Cluster::Compressed {
                off: 0x12345,
                len: end - 0x12345
            }
        );
    }

    #[test]
    fn zero_flag_only_counts_in_v3() {
        let v3 = Geometry::new(3, 16, 4);
        let v2 = Geometry::new(2, 16, 4);
        assert_eq!(v3.classify(ZERO_FLAG).unwrap(), Cluster::Zero);
        assert_eq!(
            v3.classify(0x30000 | ZERO_FLAG | COPIED).unwrap(),
            Cluster::ZeroAlloc {
                host: 0x30000,
                copied: true
            }
        );
        assert_eq!(
            v2.classify(0x30000 | ZERO_FLAG).unwrap(),
            Cluster::Data {
                host: 0x30000,
                copied: false
            }
        );
        assert_eq!(v2.classify(0).unwrap(), Cluster::Unallocated);
    }

    /// An L2 table evicted and loaded back before any flush is still
    /// unreferenced on disk, so it stays fresh (its next eviction needs no
    /// sync); after a flush wrote its L1 entry it no longer is.
    #[test]
    fn reloaded_table_is_fresh_until_its_l1_entry_is_written() {
        use crate::{Backstore, Qcow2Backstore, Qcow2Options};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("evict.qcow2");
        drop(Qcow2Backstore::create(&p, 64 << 20, 4096).unwrap());
        let opts = Qcow2Options {
            l2_cache_bytes: 4 * 4096,
            ..Qcow2Options::default()
        };
        let q = Qcow2Backstore::open(&p, &opts).unwrap();
        // One 4 KiB cluster in each of six L2 tables (2 MiB each): table 0
        // is evicted, then loaded back by the second write to it.
        let fresh_of_table0 = |q: &Qcow2Backstore| {
            let mut m = q.meta.lock().unwrap();
            let key = m.l1[0] & OFF_MASK;
            let s = m.l2.find(key).expect("table 0 cached");
            m.l2.get(s).fresh
        };
        for t in 0..6u64 {
            q.write_at(&[t as u8 + 1; 4096], t << 21).unwrap();
        }
        q.write_at(&[9; 4096], 4096).unwrap();
        assert!(fresh_of_table0(&q), "reloaded before any flush");
        q.flush().unwrap();
        for t in 1..6u64 {
            q.write_at(&[t as u8 + 1; 4096], (t << 21) + 8192).unwrap();
        }
        q.write_at(&[7; 4096], 12288).unwrap();
        assert!(
            !fresh_of_table0(&q),
            "reloaded after its L1 entry was written"
        );
        drop(q);
        let q = Qcow2Backstore::open(&p, &Qcow2Options::default()).unwrap();
        let mut b = [0u8; 4096];
        for (off, v) in [(0u64, 1u8), (4096, 9), (12288, 7), (5 << 21, 6)] {
            q.read_at(&mut b, off).unwrap();
            assert!(b.iter().all(|&x| x == v), "at {off}");
        }
    }

    #[test]
    fn unaligned_data_cluster_is_corruption() {
        let g = Geometry::new(3, 16, 4);
        assert!(g.classify(0x10200).is_err());
    }

    #[test]
    fn compressed_span_covers_every_touched_cluster() {
        let g = Geometry::new(3, 9, 4);
        // 512-byte clusters: 1 extra sector starting mid-sector spans 2..3 clusters.
        let x = 62 - (9 - 8);
        let c = g.classify(COMPRESSED | (1u64 << x) | 0x500).unwrap();
        assert_eq!(g.host_span(c), Some((0x500, 0x600 - 0x500 + 512)));
    }
}
