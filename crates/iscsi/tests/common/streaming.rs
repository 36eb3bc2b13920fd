//! Helpers of the streamed-write tests (`streamed_write.rs`,
//! `streamed_edges.rs`): an LU over `backstore::testing::RecordsPieces`
//! (it takes writes piece by piece and records them) and the PDUs such a
//! test waits for one by one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backstore::testing::RecordsPieces;
use iscsi_wire::response::{R2t, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

use super::{serve_device, session, Client};

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
