//! Helpers of the streamed-write tests (`streamed_write.rs`,
//! `streamed_edges.rs`): an LU over `backstore::testing::RecordsPieces`
//! (it takes writes piece by piece and records them), the PDUs such a
//! test waits for one by one, and those it sends its own way (an R2T's
//! answer, an ABORT TASK of a write under way).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backstore::testing::RecordsPieces;
use iscsi_wire::request::{DataOut, ScsiCommand, TaskMgmtRequest};
use iscsi_wire::response::{R2t, ScsiResponse};
use iscsi_wire::tmf::TmfFunction;
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

use super::{serve_device, session, Client};

impl Client {
    /// The one final Data-Out answering `r`, DataSN `datasn` (0 unless a
    /// test wants it wrong), and the part of `data` (the whole write's) it
    /// carries: for tests that send it their own way.
    pub fn r2t_answer<'a>(&self, r: &R2t, data: &'a [u8], datasn: u32) -> (DataOut, &'a [u8]) {
        let d = DataOut {
            final_bit: true,
            lun: [0; 8],
            itt: r.itt,
            ttt: r.ttt,
            exp_statsn: self.exp_statsn,
            datasn,
            buffer_offset: r.buffer_offset,
        };
        let (off, len) = (r.buffer_offset as usize, r.desired_len as usize);
        (d, &data[off..off + len])
    }

    /// An immediate ABORT TASK (ITT `itt`) of `cmd`, to send with
    /// [`Client::send_tmf`] (the test reads the answer its own way).
    pub fn abort_task(&self, itt: u32, cmd: &ScsiCommand) -> TaskMgmtRequest {
        TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::AbortTask,
            lun: [0; 8],
            itt,
            referenced_tag: cmd.itt,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
            ref_cmdsn: cmd.cmdsn,
            exp_datasn: 0,
        }
    }
}

/// libiscsi's session shape: 256 KiB of immediate data, then one R2T of
/// 256 KiB at a time.
pub const LIBISCSI: &[(&str, &str)] = &[
    ("ImmediateData", "Yes"),
    ("InitialR2T", "Yes"),
    ("FirstBurstLength", "262144"),
    ("MaxBurstLength", "262144"),
    ("MaxRecvDataSegmentLength", "262144"),
    ("MaxOutstandingR2T", "1"),
];

/// A server exporting a `size`-byte [`RecordsPieces`] LU, and a client
/// logged in with `keys`.
pub fn stream_rig(
    size: usize,
    keys: &[(&str, &str)],
) -> (
    Arc<RecordsPieces>,
    Arc<iscsi::IscsiServer>,
    SocketAddr,
    Client,
) {
    let store = RecordsPieces::new(size as u64);
    let dev = Device::new(
        DeviceOptions::new("stream0", "5b3c9a2e-0000-4000-8000-0000000000f3"),
        store.clone(),
    );
    let (srv, addr) = serve_device(dev);
    let c = session(addr, keys);
    (store, srv, addr, c)
}

/// Wait (up to 5 s) until the backstore has seen `n` pieces.
pub fn pieces_reach(store: &RecordsPieces, n: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let got = store.pieces().len();
        if got >= n || Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn expect_r2t(c: &mut Client) -> R2t {
    let p = c.recv().expect("R2T");
    assert_eq!(p.bhs.opcode(), Opcode::R2T, "an R2T, not an answer");
    R2t::parse(&p.bhs)
}

pub fn expect_response(c: &mut Client) -> ScsiResponse {
    let p = c.recv().expect("SCSI Response");
    assert_eq!(p.bhs.opcode(), Opcode::SCSI_RESPONSE);
    let r = ScsiResponse::parse(&p.bhs);
    c.last_sense = p.data.get(2..).unwrap_or_default().to_vec();
    assert_eq!(r.sn.statsn, c.exp_statsn, "StatSN");
    c.exp_statsn += 1;
    r
}

/// (key, ASC, ASCQ) of the last sense data.
pub fn sense(c: &Client) -> (u8, u8, u8) {
    let s = &c.last_sense;
    (s[2] & 0x0f, s[12], s[13])
}

/// Nothing arrives for 300 ms (the target holds back what it must not send
/// yet; `what` names what came too early), then the usual 10 s read
/// timeout again.
#[track_caller]
pub fn assert_quiet(c: &mut Client, what: &str) {
    c.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(c.recv().is_err(), "{what}");
    c.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}
