//! Copies of large writes into memory the CPU will not read again soon
//! (ramdisk chunks, `ram`): non-temporal stores, which write whole cache
//! lines to memory without first reading them in (a plain copy into a cold
//! destination reads every line before overwriting it, doubling the memory
//! traffic) and without evicting the hot data of the connection threads.
//!
//! Only for large pieces: a small write is likely to be read back soon and
//! a plain copy keeps it in the cache.

/// Pieces at least this large are copied with non-temporal stores.
pub const STREAM_MIN: usize = 64 * 1024;

/// `dst.copy_from_slice(src)`, with non-temporal stores where the CPU has
/// them (x86-64: SSE2, always present). Ends with a store fence, so the
/// bytes are visible to any thread that later takes the lock the caller
/// holds (non-temporal stores are not ordered by a lock release alone).
pub fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        // Head up to a 16-byte aligned destination, plainly.
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let body = (dst.len() - head) / 64 * 64;
        let d = dst[head..].as_mut_ptr();
        let s = src[head..].as_ptr();
        let mut i = 0;
        while i < body {
            // SAFETY: i + 64 <= body <= dst.len() - head, and src has the
            // same length: every 16-byte access is in bounds; `d + i` is
            // 16-byte aligned (head aligned it, i is a multiple of 64);
            // loads are unaligned loads. SSE2 is part of x86-64.
            unsafe {
                let a = _mm_loadu_si128(s.add(i).cast::<__m128i>());
                let b = _mm_loadu_si128(s.add(i + 16).cast::<__m128i>());
                let c = _mm_loadu_si128(s.add(i + 32).cast::<__m128i>());
                let e = _mm_loadu_si128(s.add(i + 48).cast::<__m128i>());
                _mm_stream_si128(d.add(i).cast::<__m128i>(), a);
                _mm_stream_si128(d.add(i + 16).cast::<__m128i>(), b);
                _mm_stream_si128(d.add(i + 32).cast::<__m128i>(), c);
                _mm_stream_si128(d.add(i + 48).cast::<__m128i>(), e);
            }
            i += 64;
        }
        let done = head + body;
        dst[done..].copy_from_slice(&src[done..]);
        // SAFETY: a fence has no preconditions.
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_exactly_at_every_alignment_and_length() {
        let src: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0xAAu8; 70_100];
        for (off, len) in [
            (0, 0),
            (0, 1),
            (1, 15),
            (3, 64),
            (5, 129),
            (16, 65_536),
            (7, 69_990),
        ] {
            dst.fill(0xAA);
            copy_streaming(&mut dst[off..off + len], &src[..len]);
            assert!(dst[off..off + len] == src[..len], "off {off} len {len}");
            assert!(
                dst[..off].iter().all(|&b| b == 0xAA),
                "before, off {off} len {len}"
            );
            assert!(
                dst[off + len..].iter().all(|&b| b == 0xAA),
                "after, off {off} len {len}"
            );
        }
    }
}
