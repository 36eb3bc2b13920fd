//! Host cluster accounting: reading and writing refcounts of any width
//! (`refcount_order` 0..=6), allocating free clusters, creating refcount
//! blocks, growing the refcount table, and applying deferred frees.
//!
//! A refcount block that does not exist means every cluster it would cover
//! is free, so a new block is placed on the first cluster of its own range
//! and counts itself. The table grows by moving to the end of the used area
//! together with any blocks needed to count its own clusters; the header
//! switches to it only after the new table and blocks are durable.

use std::io;
use std::os::unix::fs::FileExt;

use super::header::{MAX_REFCOUNT_TABLE_BYTES, REFCOUNT_TABLE_FIELD_OFFSET};
use super::meta::{corrupt, put64, Meta};

/// Refcount `i` of a block whose entries are `1 << order` bits wide.
pub fn rc_read(block: &[u8], i: usize, order: u32) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let shift = (i % per_byte) * bits;
            u64::from((block[i / per_byte] >> shift) & ((1u8 << bits) - 1))
        }
        3 => u64::from(block[i]),
        4 => u64::from(u16::from_be_bytes([block[2 * i], block[2 * i + 1]])),
        5 => {
            let b = &block[4 * i..4 * i + 4];
            u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        _ => super::meta::get64(block, i),
    }
}

/// Store refcount `i`; `v` must fit in the entry width.
pub fn rc_write(block: &mut [u8], i: usize, order: u32, v: u64) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let shift = (i % per_byte) * bits;
            let mask = ((1u8 << bits) - 1) << shift;
            let b = &mut block[i / per_byte];
            *b = (*b & !mask) | (((v as u8) << shift) & mask);
        }
        3 => block[i] = v as u8,
        4 => block[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_be_bytes()),
        5 => block[4 * i..4 * i + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        _ => put64(block, i, v),
    }
}

impl Meta {
    fn rc_max(&self) -> u64 {
        if self.g.rc_order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.g.rc_order)) - 1
        }
    }

    /// The header, L1 table and refcount table: clusters a corrupted
    /// refcount must never hand out (a cheap subset of QEMU's overlap checks).
    fn is_fixed_metadata(&self, c: u64) -> bool {
        let bits = self.g.cluster_bits;
        let within = |off: u64, n: u64| c >= off >> bits && c < (off >> bits) + n;
        c == 0 || within(self.l1_off, self.l1_clusters) || within(self.rct_off, self.rct_clusters)
    }

    fn has_block(&self, ti: u64) -> bool {
        usize::try_from(ti)
            .ok()
            .and_then(|i| self.rct.get(i))
            .is_some_and(|&e| e != 0)
    }

    /// Cache slot of refcount block `ti`, or `None` when it doesn't exist.
    fn block_slot(&mut self, ti: u64) -> io::Result<Option<usize>> {
        if !self.has_block(ti) {
            return Ok(None);
        }
        let off = self.rct[ti as usize] & !0x1ff;
        if off == 0 || !off.is_multiple_of(self.g.cs) {
            return Err(corrupt("bad refcount block offset"));
        }
        if let Some(s) = self.rcb.find(off) {
            return Ok(Some(s));
        }
        self.make_room_rcb()?;
        let data = self.read_table(off)?;
        Ok(Some(self.rcb.insert(off, data, false, false)))
    }

    fn make_room_rcb(&mut self) -> io::Result<()> {
        // Refcount blocks may be written back at any time: on disk they can
        // only be ahead of the L2 tables, which at worst leaks clusters.
        while self.rcb.is_full() {
            let Some(v) = self.rcb.victim() else { break };
            let t = self.rcb.get(v);
            if t.dirty {
                self.file.write_all_at(&t.data, t.key)?;
                self.writes += 1;
            }
            self.rcb.remove(v);
        }
        Ok(())
    }

    pub fn rc_get(&mut self, c: u64) -> io::Result<u64> {
        let ppb = self.g.rc_per_block;
        Ok(match self.block_slot(c / ppb)? {
            Some(s) => rc_read(&self.rcb.get(s).data, (c % ppb) as usize, self.g.rc_order),
            None => 0,
        })
    }

    pub fn rc_set(&mut self, c: u64, v: u64) -> io::Result<()> {
        if v > self.rc_max() {
            return Err(io::Error::other("qcow2 refcount overflow"));
        }
        let ppb = self.g.rc_per_block;
        let s = self.ensure_block(c / ppb)?;
        let order = self.g.rc_order;
        let t = self.rcb.get_mut(s);
        rc_write(&mut t.data, (c % ppb) as usize, order, v);
        t.dirty = true;
        Ok(())
    }

    fn ensure_block(&mut self, ti: u64) -> io::Result<usize> {
        loop {
            if let Some(s) = self.block_slot(ti)? {
                return Ok(s);
            }
            if ti >= self.rct.len() as u64 {
                self.grow_rct(ti)?;
                continue;
            }
            let first = ti * self.g.rc_per_block;
            if self.is_fixed_metadata(first) {
                return Err(corrupt("no refcount block for clusters in use"));
            }
            let mut data = vec![0u8; self.g.cs as usize].into_boxed_slice();
            rc_write(&mut data, 0, self.g.rc_order, 1);
            self.make_room_rcb()?;
            let off = first << self.g.cluster_bits;
            self.rcb.insert(off, data, true, false);
            self.rct[ti as usize] = off;
            self.rct_dirty = true;
            self.end_cluster = self.end_cluster.max(first + 1);
        }
    }

    fn find_free(&mut self) -> io::Result<u64> {
        let ppb = self.g.rc_per_block;
        let mut c = self.free_hint;
        loop {
            let ti = c / ppb;
            let Some(s) = self.block_slot(ti)? else {
                return Ok(c);
            };
            let block = &self.rcb.get(s).data;
            let order = self.g.rc_order;
            if let Some(i) =
                ((c % ppb) as usize..ppb as usize).find(|&i| rc_read(block, i, order) == 0)
            {
                return Ok(ti * ppb + i as u64);
            }
            c = (ti + 1) * ppb;
        }
    }

    /// Allocate one host cluster (refcount 1) and return its offset.
    pub fn alloc_cluster(&mut self) -> io::Result<u64> {
        loop {
            let c = self.find_free()?;
            let ti = c / self.g.rc_per_block;
            if self.block_slot(ti)?.is_none() {
                // Creating the block may take `c` itself: search again.
                self.ensure_block(ti)?;
                continue;
            }
            if (c << self.g.cluster_bits) >= 1 << 56 {
                return Err(io::Error::other("qcow2 image full (56-bit host offsets)"));
            }
            if self.is_fixed_metadata(c) {
                return Err(corrupt("refcounts say a metadata cluster is free"));
            }
            self.rc_set(c, 1)?;
            self.free_hint = c + 1;
            self.end_cluster = self.end_cluster.max(c + 1);
            return Ok(c << self.g.cluster_bits);
        }
    }

    /// Allocate `n` contiguous clusters at the end of the used area (for
    /// tables that must be contiguous) and return the first offset.
    pub fn alloc_contiguous(&mut self, n: u64) -> io::Result<u64> {
        let ppb = self.g.rc_per_block;
        loop {
            let e = self.end_cluster;
            // Blocks created here may land inside the run: then start over.
            match (e / ppb..=(e + n - 1) / ppb).find(|&t| !self.has_block(t)) {
                Some(t) => {
                    self.ensure_block(t)?;
                }
                None => {
                    if ((e + n) << self.g.cluster_bits) >= 1 << 56 {
                        return Err(io::Error::other("qcow2 image full (56-bit host offsets)"));
                    }
                    if (e..e + n).any(|c| self.is_fixed_metadata(c)) {
                        return Err(corrupt("end of the used area overlaps metadata"));
                    }
                    for c in e..e + n {
                        self.rc_set(c, 1)?;
                    }
                    self.end_cluster = e + n;
                    return Ok(e << self.g.cluster_bits);
                }
            }
        }
    }

    /// Queue the clusters under `[off, off + len)` for a refcount decrement
    /// once the L2 change that dropped them is durable.
    pub fn free_later(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let bits = self.g.cluster_bits;
        for c in (off >> bits)..=((off + len - 1) >> bits) {
            self.pending_free.push(c);
        }
    }

    /// Apply queued frees; the caller has flushed, and no I/O through a
    /// stale mapping is in flight (so the clusters can be reused).
    /// Only frees queued before the running count `upto` are applied: later
    /// ones came after the flush's L2 writes, so may not be durable yet.
    pub fn apply_frees(&mut self, upto: u64) -> io::Result<()> {
        let n = upto.saturating_sub(self.freed_before) as usize;
        let n = n.min(self.pending_free.len());
        let frees: Vec<u64> = self.pending_free.drain(..n).collect();
        self.freed_before += n as u64;
        for c in frees {
            let r = self.rc_get(c)?;
            if r == 0 {
                tracing::warn!(cluster = c, "qcow2: freeing a cluster with refcount 0");
                continue;
            }
            self.rc_set(c, r - 1)?;
            if r == 1 {
                self.free_hint = self.free_hint.min(c);
            }
        }
        self.write_dirty_blocks()
    }

    /// Replace the refcount table with a larger one that has an entry `need_ti`.
    fn grow_rct(&mut self, need_ti: u64) -> io::Result<()> {
        let (cs, ppb, bits) = (self.g.cs, self.g.rc_per_block, self.g.cluster_bits);
        let per_cluster = cs / 8;
        let old_len = self.rct.len() as u64;
        let e = self.end_cluster;
        let mut want = (need_ti + 1).max(old_len * 2);
        let (k, nb) = loop {
            let k = want.div_ceil(per_cluster);
            let mut nb = 0;
            loop {
                let last = e + k + nb - 1;
                let need = (e / ppb..=last / ppb)
                    .filter(|&t| !self.has_block(t))
                    .count() as u64;
                if need <= nb {
                    break;
                }
                nb = need;
            }
            let max_ti = (e + k + nb - 1) / ppb;
            if max_ti < k * per_cluster && need_ti < k * per_cluster {
                break (k, nb);
            }
            want = want.max(max_ti + 1);
        };
        if k * cs > MAX_REFCOUNT_TABLE_BYTES {
            return Err(io::Error::other("qcow2 refcount table limit reached"));
        }
        self.write_dirty_blocks()?;
        let mut table = self.rct.clone();
        table.resize((k * per_cluster) as usize, 0);
        let mut next = e + k;
        let mut new_blocks = Vec::new();
        for t in e / ppb..=(e + k + nb - 1) / ppb {
            if table[t as usize] == 0 {
                table[t as usize] = next << bits;
                new_blocks.push(next << bits);
                next += 1;
            }
        }
        let (old_off, old_clusters) = (self.rct_off, self.rct_clusters);
        self.rct = table;
        self.rct_off = e << bits;
        self.rct_clusters = k;
        for off in new_blocks {
            self.make_room_rcb()?;
            self.rcb
                .insert(off, vec![0u8; cs as usize].into_boxed_slice(), true, false);
        }
        for c in e..next {
            self.rc_set(c, 1)?;
        }
        self.end_cluster = next;
        // New blocks and table durable first, then the header switches.
        self.rct_dirty = true;
        self.write_refcounts()?;
        self.sync()?;
        let mut field = [0u8; 12];
        field[..8].copy_from_slice(&self.rct_off.to_be_bytes());
        field[8..].copy_from_slice(&(k as u32).to_be_bytes());
        self.file
            .write_all_at(&field, REFCOUNT_TABLE_FIELD_OFFSET)?;
        self.sync()?;
        for c in (old_off >> bits)..(old_off >> bits) + old_clusters {
            let r = self.rc_get(c)?;
            self.rc_set(c, r.saturating_sub(1))?;
            self.free_hint = self.free_hint.min(c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips_without_touching_neighbours() {
        for order in 0..=6u32 {
            let bits = 1u32 << order;
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let mut block = vec![0u8; 512];
            let n = 512 * 8 / bits as usize;
            for i in 0..n {
                rc_write(&mut block, i, order, (i as u64 * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    rc_read(&block, i, order),
                    (i as u64 * 7) & max,
                    "order {order} i {i}"
                );
            }
        }
        // Sub-byte widths count from the least significant bit.
        let mut b = [0u8; 1];
        rc_write(&mut b, 0, 0, 1);
        assert_eq!(b[0], 1);
        rc_write(&mut b, 1, 1, 3);
        assert_eq!(b[0], 0b1101);
    }
}
