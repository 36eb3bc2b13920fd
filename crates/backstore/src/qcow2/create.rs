//! Creating an empty qcow2 v3 image: header, refcount table, refcount
//! blocks and a zeroed L1 table laid out contiguously from cluster 0, every
//! one of those clusters counted once, so `qemu-img check` finds it clean.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{Header, Qcow2Error, MAX_L1_BYTES};
use super::meta::put64;
use super::refcount::rc_write;

const REFCOUNT_ORDER: u32 = 4;

pub fn create_image(path: &Path, size: u64, cluster_size: u64) -> Result<(), Qcow2Error> {
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
    f.write_all_at(&hbuf[..512], 0)?;
    f.sync_all()?;
    Ok(())
}
