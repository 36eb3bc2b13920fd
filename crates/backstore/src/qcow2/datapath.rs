//! The data path: splitting guest ranges into runs of clusters with the same
//! mapping, reading them (host data, zeroes, backing file, compressed
//! clusters), writing them (in place when the cluster is allocated and not
//! shared, otherwise allocate + copy-on-write under the metadata lock), and
//! zeroing/deallocating ranges.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use flate2::{Decompress, FlushDecompress};

use super::meta::{corrupt, Cluster, Meta, COPIED, ZERO_FLAG};
use super::Qcow2Backstore;
use crate::{Backstore, Extent};

/// Zero source for partial-cluster zeroing (no allocation per request).
static ZEROES: [u8; 64 << 10] = [0u8; 64 << 10];

/// Longest guest range one `allocation_at` answer scans.
const EXTENT_SCAN_CLUSTERS: u64 = 1 << 20;

impl Qcow2Backstore {
    /// The mapping of `pos` and how many bytes (at most `max`) share it
    /// contiguously. Writes only merge clusters that can be written in place.
    fn run(&self, m: &mut Meta, pos: u64, max: u64, write: bool) -> io::Result<(Cluster, usize)> {
        let cs = self.g.cs;
        let gc = pos >> self.g.cluster_bits;
        let first = m.lookup(gc)?;
        let mut n = (cs - (pos & (cs - 1))).min(max);
        let mergeable = match first {
            Cluster::Compressed { .. } => false,
            Cluster::Data { copied, .. } => !write || copied,
            _ => !write,
        };
        let mut next = gc + 1;
        while mergeable && n < max {
            let c = m.lookup(next)?;
            let same = match (first, c) {
                (Cluster::Data { host: a, .. }, Cluster::Data { host: b, copied }) => {
                    b == a + (next - gc) * cs && (!write || copied)
                }
                (Cluster::Unallocated, Cluster::Unallocated) => true,
                (
                    Cluster::Zero | Cluster::ZeroAlloc { .. },
                    Cluster::Zero | Cluster::ZeroAlloc { .. },
                ) => true,
                _ => false,
            };
            if !same {
                break;
            }
            n = (n + cs).min(max);
            next += 1;
        }
        Ok((first, n as usize))
    }

    pub(super) fn read_inner(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (c, n) = {
                let mut m = self.meta()?;
                self.run(&mut m, pos, (buf.len() - done) as u64, false)?
            };
            let chunk = &mut buf[done..done + n];
            let within = pos & (self.g.cs - 1);
            match c {
                Cluster::Data { host, .. } => self.read_host(chunk, host + within)?,
                Cluster::Zero | Cluster::ZeroAlloc { .. } => chunk.fill(0),
                Cluster::Unallocated => self.read_backing(chunk, pos)?,
                Cluster::Compressed { off, len } => {
                    // Small reads walk a cluster piece by piece: keep the
                    // last one inflated (compressed clusters never change).
                    let mut last = self.inflated.lock().map_err(|_| super::lock_err())?;
                    let (key, out) = &mut *last;
                    if *key != Some(off) {
                        *key = None;
                        out.resize(self.g.cs as usize, 0);
                        self.decompress(off, len, out)?;
                        *key = Some(off);
                    }
                    chunk.copy_from_slice(&out[within as usize..within as usize + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Read host bytes; a fresh cluster's tail may lie past the end of the
    /// file until the next flush extends it, and reads as zeroes.
    fn read_host(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf[got..].fill(0);
        Ok(())
    }

    fn read_backing(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match &self.backing {
            Some(b) => b.read(buf, pos),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// Inflate one compressed cluster (raw deflate, as QEMU writes it).
    fn decompress(&self, off: u64, len: u64, out: &mut [u8]) -> io::Result<()> {
        let mut input = vec![0u8; len as usize];
        // The last sector may extend past the end of the file.
        let mut got = 0;
        while got < input.len() {
            match self.file.read_at(&mut input[got..], off + got as u64)? {
                0 => break,
                k => got += k,
            }
        }
        let mut d = Decompress::new(false);
        d.decompress(&input[..got], out, FlushDecompress::Finish)
            .map_err(|_| corrupt("bad compressed cluster"))?;
        if d.total_out() != out.len() as u64 {
            return Err(corrupt("short compressed cluster"));
        }
        Ok(())
    }

    pub(super) fn write_inner(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let mut m = self.meta()?;
            let (c, n) = self.run(&mut m, pos, (buf.len() - done) as u64, true)?;
            let data = &buf[done..done + n];
            match c {
                Cluster::Data { host, copied: true } => {
                    drop(m);
                    // Before the write: a flush that misses the flag started
                    // before this write, so needn't cover it.
                    self.unsynced.store(true, Ordering::Release);
                    self.file
                        .write_all_at(data, host + (pos & (self.g.cs - 1)))?;
                }
                old => self.write_alloc(&mut m, old, pos, data)?,
            }
            done += n;
        }
        Ok(())
    }

    /// Write `data` (inside one cluster) where the cluster has no private
    /// host cluster yet: allocate one, fill what `data` doesn't cover from
    /// the old contents, and point the L2 entry at it.
    fn write_alloc(&self, m: &mut Meta, old: Cluster, pos: u64, data: &[u8]) -> io::Result<()> {
        let cs = self.g.cs;
        let gc = pos >> self.g.cluster_bits;
        let within = (pos & (cs - 1)) as usize;
        let fresh_from = m.end_cluster;
        let (host, reused) = match old {
            Cluster::ZeroAlloc { host, copied: true } => (host, true),
            _ => (m.alloc_cluster()?, false),
        };
        let reads_zero = match old {
            Cluster::Zero => true,
            Cluster::Unallocated => self.backing.is_none(),
            _ => false,
        };
        if within == 0 && data.len() as u64 == cs {
            self.file.write_all_at(data, host)?;
            m.file_len = m.file_len.max(host + cs);
        } else if reads_zero && host >> self.g.cluster_bits >= fresh_from {
            // Never-used space past the old end reads as zeroes already:
            // write only the data (no 16x amplification for 4K into 64K).
            self.file.write_all_at(data, host + within as u64)?;
            m.file_len = m.file_len.max(host + (within + data.len()) as u64);
        } else {
            let mut sc = std::mem::take(&mut m.scratch);
            sc.resize(cs as usize, 0);
            let r = self.old_contents(old, gc, &mut sc).and_then(|()| {
                sc[within..within + data.len()].copy_from_slice(data);
                self.file.write_all_at(&sc, host)
            });
            m.scratch = sc;
            r?;
            m.file_len = m.file_len.max(host + cs);
        }
        // The new L2 entry must not become durable before this data.
        m.writes += 1;
        m.set_l2_entry(gc, host | COPIED)?;
        if !reused {
            if let Some((off, len)) = self.g.host_span(old) {
                m.free_later(off, len);
            }
        }
        Ok(())
    }

    fn old_contents(&self, old: Cluster, gc: u64, out: &mut [u8]) -> io::Result<()> {
        match old {
            Cluster::Unallocated => self.read_backing(out, gc << self.g.cluster_bits),
            Cluster::Zero | Cluster::ZeroAlloc { .. } => {
                out.fill(0);
                Ok(())
            }
            Cluster::Data { host, .. } => self.read_host(out, host),
            Cluster::Compressed { off, len } => self.decompress(off, len, out),
        }
    }

    /// Discard and write-zeroes: whole clusters lose their host cluster
    /// (zero flag in v3, unallocated in v2 without a backing file); partial
    /// clusters get zeroes written unless they already read as zeroes.
    pub(super) fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.check(offset, len)?;
        let _gate = self.gate.read().map_err(|_| super::lock_err())?;
        let cs = self.g.cs;
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let within = pos & (cs - 1);
            let n = (cs - within).min(end - pos);
            // The last cluster of a disk whose size isn't cluster aligned
            // counts as whole when the range runs to the end of the disk.
            let whole = within == 0 && (n == cs || pos + n == self.size());
            let gc = pos >> self.g.cluster_bits;
            let mut m = self.meta()?;
            let handled = whole && self.zero_cluster(&mut m, gc)?;
            if !handled {
                let c = m.lookup(gc)?;
                drop(m);
                let reads_zero = matches!(c, Cluster::Zero | Cluster::ZeroAlloc { .. })
                    || (c == Cluster::Unallocated && self.backing.is_none());
                if !reads_zero {
                    let mut done = 0;
                    while done < n {
                        let k = (n - done).min(ZEROES.len() as u64);
                        self.write_inner(&ZEROES[..k as usize], pos + done)?;
                        done += k;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Make guest cluster `gc` read as zeroes without writing data; false
    /// when the format can't express it (v2 over a backing file).
    fn zero_cluster(&self, m: &mut Meta, gc: u64) -> io::Result<bool> {
        let old = m.lookup(gc)?;
        let new = if self.g.version >= 3 {
            match old {
                Cluster::Zero => return Ok(true),
                Cluster::Unallocated if self.backing.is_none() => return Ok(true),
                _ => ZERO_FLAG,
            }
        } else {
            if self.backing.is_some() {
                return Ok(false);
            }
            if old == Cluster::Unallocated {
                return Ok(true);
            }
            0
        };
        m.set_l2_entry(gc, new)?;
        if let Some((off, len)) = self.g.host_span(old) {
            m.free_later(off, len);
        }
        Ok(true)
    }

    /// Whether `offset` holds data (true) or reads as zeroes without it, and
    /// how far that holds. Unallocated clusters over a backing file count as
    /// data: we don't look into the backing file.
    pub(super) fn extent_at(&self, offset: u64) -> io::Result<Extent> {
        let bits = self.g.cluster_bits;
        let size = self.size();
        let total = size.div_ceil(self.g.cs);
        let backing_end = self
            .backing
            .as_ref()
            .map_or(0, |b| b.size().div_ceil(self.g.cs));
        let mut m = self.meta()?;
        let state = |m: &mut Meta, gc: u64| -> io::Result<bool> {
            Ok(match m.lookup(gc)? {
                Cluster::Data { .. } | Cluster::Compressed { .. } => true,
                Cluster::Zero | Cluster::ZeroAlloc { .. } => false,
                Cluster::Unallocated => gc < backing_end,
            })
        };
        let gc0 = offset >> bits;
        let allocated = state(&mut m, gc0)?;
        let limit = total.min(gc0 + EXTENT_SCAN_CLUSTERS);
        let mut gc = gc0 + 1;
        while gc < limit {
            if !allocated && !m.has_l2(gc) && gc >= backing_end {
                // A whole L2 table's worth of holes.
                gc = (gc / self.g.l2_entries + 1) * self.g.l2_entries;
                continue;
            }
            if state(&mut m, gc)? != allocated {
                break;
            }
            gc += 1;
        }
        let end = (gc.min(limit) << bits).min(size);
        Ok(Extent {
            allocated,
            len: end - offset,
        })
    }
}
