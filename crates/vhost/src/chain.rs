//! A request's descriptor chain walked once, per request: its
//! device-readable and device-writable areas as slices of the mapped guest
//! memory. The request header is read from the first, the response written
//! into the second, and what follows each header is lent to the core as
//! Data-Out / Data-In. virtio-queue's `Reader` and `Writer` would walk the
//! chain once each (and `lend` twice more), each walk allocating and
//! translating every descriptor through vm-memory's region iterator; at
//! 4 KiB that was a tenth of the backend's CPU per I/O.

use std::io;

use backstore::iov::Keep;
use backstore::IoVecs;
use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemory, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Slices of guest memory, in chain order.
pub(crate) type Segs<'a> = Vec<VolatileSlice<'a, ()>>;

/// The readable and writable areas of one chain.
pub(crate) struct ChainBufs<'a> {
    pub(crate) readable: Segs<'a>,
    pub(crate) writable: Segs<'a>,
}

impl<'a> ChainBufs<'a> {
    /// Walk `chain` (indirect tables included) and translate each
    /// descriptor: one region lookup when it lies in one region (always,
    /// for QEMU's memory layouts), the region iterator otherwise.
    pub(crate) fn new<M>(
        mem: &'a GuestMemoryMmap,
        chain: &DescriptorChain<M>,
    ) -> io::Result<ChainBufs<'a>>
    where
        M: Deref + Clone,
        M::Target: GuestMemory,
    {
        let mut b = ChainBufs {
            readable: Vec::with_capacity(4),
            writable: Vec::with_capacity(4),
        };
        for d in chain.clone() {
            let segs = if d.is_write_only() {
                &mut b.writable
            } else {
                &mut b.readable
            };
            let len = d.len() as usize;
            if len == 0 {
                continue;
            }
            match GuestMemoryBackend::get_slice(mem, d.addr(), len) {
                Ok(s) => segs.push(s),
                Err(_) => {
                    for s in GuestMemoryBackend::get_slices(mem, d.addr(), len) {
                        segs.push(s.map_err(io::Error::other)?);
                    }
                }
            }
        }
        Ok(b)
    }
}

/// Total bytes of `segs`.
pub(crate) fn len(segs: &Segs<'_>) -> usize {
    segs.iter().map(|s| s.len()).sum()
}

/// Copy the first bytes of `segs` into `out`; returns how many there were.
pub(crate) fn read(segs: &Segs<'_>, out: &mut [u8]) -> usize {
    let mut n = 0;
    for s in segs {
        if n == out.len() {
            break;
        }
        n += s.copy_to(&mut out[n..]);
    }
    n
}

/// Copy `data` into the first bytes of `segs`; returns how many fit.
pub(crate) fn write(segs: &Segs<'_>, data: &[u8]) -> usize {
    let mut n = 0;
    for s in segs {
        if n == data.len() {
            break;
        }
        let k = s.len().min(data.len() - n);
        s.copy_from(&data[n..n + k]);
        n += k;
    }
    n
}

/// `segs` past their first `skip` bytes, lent to the core.
pub(crate) fn lend(segs: &Segs<'_>, mut skip: usize, keep: &Keep) -> IoVecs {
    let rest = segs.iter().filter_map(|s| {
        let k = skip.min(s.len());
        skip -= k;
        (s.len() > k).then(|| (s.ptr_guard_mut().as_ptr().wrapping_add(k), s.len() - k))
    });
    // SAFETY: each segment lies inside a region of the guest memory
    // mapping (vm-memory checked the descriptor against the regions when
    // it made the slice), and `keep` holds that mapping (the `Arc` of the
    // memory table) for as long as the `IoVecs` lives, also after a new
    // memory table or the guest's disconnect. The guest may write its
    // memory meanwhile: the core never makes references to it (IoVecs'
    // contract).
    unsafe { IoVecs::new(rest, keep.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    /// A header split over two descriptors, a response header sharing a
    /// descriptor with Data-In, and a descriptor crossing two memory
    /// regions: the areas come out whole and in order.
    #[test]
    fn one_walk_splits_headers_and_data() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
        ])
        .unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let descs = [
            (0x5000, 10, NEXT),
            (0x6000, 20, NEXT),
            // Data-Out crossing the region boundary.
            (0xfff0, 0x20, NEXT),
            (0x7000, 8, WRITE | NEXT),
            (0x8000, 100, WRITE),
        ];
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| RawDescriptor::from(SplitDescriptor::new(a, l, f, i as u16 + 1)))
            .collect();
        let chain = q.build_desc_chain(&raw).unwrap();
        mem.write_slice(&(0u8..10).collect::<Vec<_>>(), GuestAddress(0x5000))
            .unwrap();
        mem.write_slice(&(10u8..30).collect::<Vec<_>>(), GuestAddress(0x6000))
            .unwrap();
        let b = ChainBufs::new(&mem, &chain).unwrap();
        assert_eq!(b.readable.len(), 4, "the crossing descriptor is two slices");
        assert_eq!((len(&b.readable), len(&b.writable)), (62, 108));
        let mut hdr = [0u8; 25];
        assert_eq!(read(&b.readable, &mut hdr), 25);
        assert_eq!(hdr.to_vec(), (0u8..25).collect::<Vec<_>>());
        let keep: Keep = std::sync::Arc::new(());
        assert_eq!(lend(&b.readable, 25, &keep).len(), 37);
        assert_eq!(write(&b.writable, &[7u8; 12]), 12);
        let mut got = [0u8; 4];
        mem.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(got, [7, 7, 7, 7]);
        assert_eq!(lend(&b.writable, 12, &keep).len(), 96);
    }
}
