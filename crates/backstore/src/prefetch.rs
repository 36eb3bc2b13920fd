//! Software prefetch for backstores in RAM ([`crate::Backstore::prefetch`]).
//!
//! A connection handles a batch of commands one after the other; while it
//! does the protocol work of one READ, the cache lines of the next can be
//! on their way. A 4 KiB READ at a random place in a 1 GiB ramdisk finds
//! none of its 64 lines in any cache and the hardware prefetcher has no
//! stream to follow, so its copy waits on memory line after line.

/// Bytes prefetched per hint: enough for the small READs that are copied;
/// a larger one streams and the hardware prefetcher follows it.
pub const MAX: usize = 16 << 10;

const LINE: usize = 64;

/// Ask the CPU to load `bytes` into its caches (a hint: no fault, no wait).
pub fn lines(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: a prefetch only hints the cache; the address is
            // inside `bytes` (and a prefetch never faults anyway).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    bytes.as_ptr().add(off).cast(),
                );
            }
            off += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
