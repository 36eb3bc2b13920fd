//! A durable streamed write (`engine::WriteStream`, FUA or the write cache
//! off) is one flush after its last piece: the backstore sees the flush
//! only once every piece has completed, and the answer comes only once the
//! flush has. Pieces themselves never carry FUA. Without durability, or
//! after a failed piece, there is no flush. Driven step by step on the
//! test's thread (`backstore::testing::RecordsPieces` holds completions).

use std::sync::Arc;

mod common;

use backstore::testing::RecordsPieces;
use common::{clear_power_on_ua, limits, nexus, one_lun};
use target_core::engine::{Cdb, Finished, TaskQueue, WriteStream};
use target_core::{Device, DeviceOptions, LunTable, Nexus, Status, StreamCheck, TaskAttr};

const PIECE: usize = 256 * 1024;

struct Rig {
    store: Arc<RecordsPieces>,
    luns: Arc<LunTable>,
    nexus: Nexus,
    q: TaskQueue<()>,
}

fn rig(write_cache: bool) -> Rig {
    let store = RecordsPieces::new(8 << 20);
    let mut o = DeviceOptions::new("flush0", "5b3c9a2e-0000-4000-8000-0000000000f4");
    o.write_cache = write_cache;
    let luns = one_lun(Device::new(o, store.clone()));
    let nexus = nexus();
    clear_power_on_ua(&luns, &nexus);
    let q = TaskQueue::new(limits());
    Rig {
        store,
        luns,
        nexus,
        q,
    }
}

/// WRITE(10) of `blocks` at LBA 0, FUA if `fua`.
fn write10(blocks: u16, fua: bool) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2a;
    c[1] = if fua { 0x08 } else { 0 };
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

impl Rig {
    /// A streamed write of two pieces, started.
    fn start(&mut self, fua: bool) -> WriteStream {
        let len = 2 * PIECE;
        let cdb = write10((len / 512) as u16, fua);
        let plan =
            match self
                .luns
                .check_streamed_write(&self.nexus, 0, &cdb, TaskAttr::Simple, len as u32)
            {
                StreamCheck::Stream(p) => p,
                StreamCheck::Answer(o) => panic!("refused: {o:?}"),
                StreamCheck::Unsuited => panic!("not streamed"),
            };
        self.q
            .start_stream(plan, 1, 0, Cdb::from_slice(&cdb), ())
            .expect("a completion sink")
    }

    /// The answers that came (all completions run on this thread).
    fn answers(&mut self) -> Vec<Finished<()>> {
        let mut v = Vec::new();
        self.q.reap(|f| v.push(f));
        v
    }
}

/// Both pieces in flight, then the data's end (the handle dropped).
fn feed_two(ws: &mut WriteStream) {
    assert!(ws.piece(0, vec![0x11; PIECE]).is_none());
    assert!(ws.piece(PIECE, vec![0x22; PIECE]).is_none());
}

#[test]
fn a_durable_stream_flushes_after_its_last_piece_and_answers_after_the_flush() {
    for (write_cache, fua) in [(true, true), (false, false)] {
        let mut r = rig(write_cache);
        r.store.hold();
        let mut ws = r.start(fua);
        feed_two(&mut ws);
        drop(ws);
        // Sealed, pieces in flight: no flush yet, no answer.
        assert_eq!(r.store.flushes(), 0);
        assert!(r.answers().is_empty());
        assert_eq!(r.store.release_held(), 2, "the two pieces");
        // Every piece completed: the flush is in, the answer waits for it.
        assert_eq!(r.store.flushes(), 1);
        assert!(
            r.answers().is_empty(),
            "answered before the flush completed"
        );
        assert_eq!(r.store.release(), 1, "the flush");
        let a = r.answers();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].out.status, Status::Good);
        assert_eq!(a[0].streamed, 2 * PIECE);
        let pieces = r.store.pieces();
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| !p.fua), "{pieces:?}");
    }
}

#[test]
fn a_flush_waits_for_a_piece_still_in_flight_when_the_stream_is_sealed() {
    let mut r = rig(true);
    r.store.hold();
    let mut ws = r.start(true);
    assert!(ws.piece(0, vec![0x11; PIECE]).is_none());
    // The first piece completes while the stream is still fed: no flush.
    assert_eq!(r.store.release_held(), 1);
    assert_eq!(r.store.flushes(), 0);
    assert!(ws.piece(PIECE, vec![0x22; PIECE]).is_none());
    drop(ws);
    assert_eq!(r.store.flushes(), 0, "flushed with a piece in flight");
    assert_eq!(r.store.release_held(), 1);
    assert_eq!(r.store.flushes(), 1);
    r.store.release();
    let a = r.answers();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].out.status, Status::Good);
}

#[test]
fn no_flush_without_durability_or_after_a_failed_piece() {
    let mut r = rig(true);
    let mut ws = r.start(false);
    feed_two(&mut ws);
    drop(ws);
    let a = r.answers();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].out.status, Status::Good);
    assert_eq!(r.store.flushes(), 0, "a write-back write is not flushed");

    let mut r = rig(true);
    r.store.fail_at(PIECE as u64 + 512);
    let mut ws = r.start(true);
    feed_two(&mut ws);
    drop(ws);
    let a = r.answers();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].out.status, Status::CheckCondition);
    assert_eq!(r.store.flushes(), 0, "a failed write is not flushed");
}

/// A stream still fed with no piece in flight can only move on through
/// the fabric's own calls: the fabric need not wait for the sink for it
/// (`TaskQueue::waits_elsewhere`); a piece in flight, or a sealed stream
/// whose answer may come from elsewhere, it must.
#[test]
fn only_a_piece_in_flight_or_a_sealed_stream_is_awaited_elsewhere() {
    let mut r = rig(true);
    assert!(!r.q.waits_elsewhere(), "an empty queue");
    r.store.hold();
    let mut ws = r.start(false);
    assert!(r.q.active());
    assert!(!r.q.waits_elsewhere(), "fed, nothing in flight");
    assert!(ws.piece(0, vec![0x11; PIECE]).is_none());
    assert!(r.q.waits_elsewhere(), "a piece in flight");
    assert_eq!(r.store.release_held(), 1);
    assert!(!r.q.waits_elsewhere(), "the piece completed");
    assert!(ws.piece(PIECE, vec![0x22; PIECE]).is_none());
    drop(ws);
    assert!(r.q.waits_elsewhere(), "sealed with a piece in flight");
    r.store.release();
    assert_eq!(r.answers().len(), 1);
    assert!(!r.q.active() && !r.q.waits_elsewhere());
}
