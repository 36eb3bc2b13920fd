//! GET LBA STATUS for rbd: the allocated ranges `rbd_diff_iterate2`
//! reports, turned into the [`Extent`] at an offset.

use std::ffi::{c_int, c_void};

use crate::Extent;

/// How far one GET LBA STATUS looks (bounds the cost of one query).
pub(super) const STATUS_WINDOW: u64 = 64 << 20;

/// `rbd_diff_iterate2`'s callback: collect (offset, len, exists).
pub(super) extern "C" fn on_extent(off: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Vec `allocation_at` passed, alive for the call.
    let v = unsafe { &mut *arg.cast::<Vec<(u64, u64, bool)>>() };
    v.push((off, len as u64, exists != 0));
    0
}

/// The extent at `offset` from the allocated ranges found in
/// `[offset, end)`: data up to where the allocated run ends, else a hole up
/// to the next data (or `end`).
pub(super) fn extent_from(mut ranges: Vec<(u64, u64, bool)>, offset: u64, end: u64) -> Extent {
    ranges.retain(|r| r.2 && r.1 > 0 && r.0 + r.1 > offset);
    ranges.sort_unstable();
    match ranges.first() {
        Some(&(start, _, _)) if start <= offset => {
            let mut reach = offset;
            for &(s, l, _) in &ranges {
                if s > reach {
                    break;
                }
                reach = reach.max(s + l);
            }
            Extent {
                allocated: true,
                len: reach.min(end) - offset,
            }
        }
        Some(&(start, _, _)) => Extent {
            allocated: false,
            len: start.min(end) - offset,
        },
        None => Extent {
            allocated: false,
            len: end - offset,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_from_diff_ranges() {
        let e = |allocated, len| Extent { allocated, len };
        // Data at 4K..12K and 12K..16K (adjacent: one run), more at 64K.
        let r = vec![(65536, 4096, true), (4096, 8192, true), (12288, 4096, true)];
        assert_eq!(extent_from(r.clone(), 0, 1 << 20), e(false, 4096));
        assert_eq!(extent_from(r.clone(), 4096, 1 << 20), e(true, 12288));
        assert_eq!(extent_from(r.clone(), 8192, 1 << 20), e(true, 8192));
        assert_eq!(
            extent_from(r.clone(), 16384, 1 << 20),
            e(false, 65536 - 16384)
        );
        assert_eq!(
            extent_from(r.clone(), 69632, 1 << 20),
            e(false, (1 << 20) - 69632)
        );
        // Clipped to the window; holes reported by librbd are ignored.
        assert_eq!(extent_from(r, 4096, 8192), e(true, 4096));
        assert_eq!(extent_from(vec![(0, 4096, false)], 0, 4096), e(false, 4096));
    }
}
