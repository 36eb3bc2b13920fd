//! Answers of a large received batch go out in parts, not all at its end.
//!
//! A connection handles every complete PDU one receive brought, then sends
//! the queued answers in one `writev`. With an initiator that keeps its
//! whole window in flight and turns answers around in bursts (QD32 from
//! bench/iscsi-load, an initiator's block layer), that makes the two sides
//! take turns: it waits while we handle all 32 commands, we wait (busy
//! polling, BENCHMARKS.md "Session 9: the two modes of ramdisk 4 KiB reads
//! at QD32") while it reads 32 answers and sends 32 new commands. Sending
//! the answers of every [`SPLIT`] PDUs while more of the batch is buffered
//! lets it turn those around on its own CPU while we handle the rest: the
//! next batch is (partly) there when this one is done, and the lock-step
//! becomes a pipeline. Measured (ab.sh --rounds 4, iscsi-load QD32):
//! ramdisk 4 KiB read 1.15-1.26x IOPS at 0.82-0.90x CPU per I/O, random
//! read 1.32x at 0.79x, fileio on /dev/shm read 1.30x at 0.81x; every 16
//! PDUs instead of 8 gave less (1.22x / 1.21x).
//!
//! A batch of [`SPLIT`] PDUs or fewer (QD1, a trickling initiator) is
//! unchanged: one `writev` at its end; so are answers without data (writes'
//! status, [`SPLIT_MIN_BYTES`]): splitting those cost 4 KiB writes at QD32
//! 0.93x IOPS at 1.07x CPU (shm fileio), the extra `writev`s dearer than
//! the little turnaround they overlap.

/// Answers are sent after every this many PDUs of a batch: a few, so
/// the initiator gets work soon, but enough that the extra `writev`s
/// (one per this many PDUs) stay small against the work they overlap.
pub const SPLIT: u32 = 8;
/// Answers queued below this are sent with the batch's end: status-only
/// answers (48 bytes each) leave the initiator little to turn around.
pub const SPLIT_MIN_BYTES: usize = 16 << 10;

/// Whether to send the queued answers now, `handled` PDUs into a batch,
/// with `queued` bytes of answers queued and `buffered` bytes of the batch
/// still unhandled in the receive buffer. The end of the batch sends the
/// rest anyway, so a flush is worth it only while more remains.
pub fn due(handled: u32, queued: usize, buffered: usize) -> bool {
    queued >= SPLIT_MIN_BYTES && buffered > 0 && handled > 0 && handled.is_multiple_of(SPLIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_sends_its_answers_every_split_pdus() {
        // 32 READs of 4 KiB (48 bytes each) in one receive: flushes after
        // 8, 16 and 24 (the answers queued since the last flush); the 32nd
        // is the batch's end (nothing buffered).
        let answer = 48 + 4096;
        let flushes: Vec<u32> = (1..=32u32)
            .filter(|&n| {
                due(
                    n,
                    (n as usize - 1) % 8 * answer + answer,
                    (32 - n as usize) * 48,
                )
            })
            .collect();
        assert_eq!(flushes, [8, 16, 24]);
    }

    #[test]
    fn small_batches_and_empty_queues_are_left_to_the_end_of_the_batch() {
        // QD1 and batches up to SPLIT: never mid-batch.
        let reads = 8 * (48 + 4096);
        for n in 1..SPLIT {
            assert!(!due(n, reads, 4096), "{n}");
        }
        assert!(!due(SPLIT, reads, 0), "the batch's end flushes anyway");
        // Nothing queued (Data-Out PDUs, NOP-Outs that need no answer),
        // or status only (32 WRITEs with immediate data).
        assert!(!due(SPLIT, 0, 4096));
        assert!(!due(SPLIT, 8 * 48, 24 * (48 + 4096)));
        assert!(!due(0, reads, 4096));
        // Part of a next PDU buffered counts as more to come.
        assert!(due(SPLIT, reads, 1));
        assert!(due(2 * SPLIT, SPLIT_MIN_BYTES, 1));
        assert!(!due(SPLIT + 1, reads, 1));
    }
}
