//! R2T order across write tasks: the oldest writes of a connection get
//! their R2Ts first (`dataout::R2T_LANES` at a time), younger ones when an
//! older one has all its data. An initiator that answers R2Ts in the order
//! it queued its data (libiscsi) otherwise moves every write one burst per
//! round, and all of them reach the backstore late.

mod common;

use common::*;
use iscsi_wire::response::{R2t, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

#[test]
fn oldest_writes_get_r2ts_first_and_every_write_completes() {
    const LEN: usize = 1 << 20;
    const WRITES: usize = 5;
    let dev = Device::new(
        DeviceOptions::new("lanes0", "5b3c9a2e-0000-4000-8000-0000000000f2"),
        MemStore::new(8 << 20),
    );
    let (srv, addr) = serve_device(dev);
    let mut c = session(
        addr,
        &[
            ("ImmediateData", "No"),
            ("InitialR2T", "Yes"),
            ("MaxBurstLength", "262144"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxOutstandingR2T", "1"),
        ],
    );
    let data = pattern(LEN, 0x5a);
    let mut itts = Vec::new();
    let mut stream = Vec::new();
    for i in 0..WRITES {
        let lba = (i * LEN / 512) as u32;
        let mut cmd = c.scsi_cmd_header(&write10(lba, (LEN / 512) as u16), false, true, LEN as u32);
        cmd.final_bit = true;
        itts.push(cmd.itt);
        stream.extend_from_slice(&c.encode_cmd(&cmd, &[]));
    }
    c.send_raw(&stream).unwrap();
    let first = c.r2ts_until_nop();
    let asked: Vec<u32> = first.iter().map(|r| r.itt).collect();
    assert_eq!(asked, itts[..2], "R2Ts only for the two oldest writes");
    // Answer in the order received; each answer earns the next R2T of that
    // write or, once an old write has all its data, the first of a younger.
    let mut pending: std::collections::VecDeque<R2t> = first.into();
    let mut done = Vec::new();
    let mut sent = std::collections::HashMap::<u32, usize>::new();
    while done.len() < WRITES {
        if let Some(r) = pending.pop_front() {
            // Writes the target still gathers data for, oldest first.
            let waiting: Vec<u32> = itts
                .iter()
                .copied()
                .filter(|i| sent.get(i).copied().unwrap_or(0) < LEN)
                .collect();
            assert!(
                waiting[..2.min(waiting.len())].contains(&r.itt),
                "R2T for {:#x} while older writes {waiting:x?} still wait",
                r.itt
            );
            c.answer_r2t(&r, &data);
            *sent.entry(r.itt).or_default() += r.desired_len as usize;
        }
        let p = c.recv().expect("R2T or SCSI Response");
        match p.bhs.opcode() {
            Opcode::R2T => pending.push_back(R2t::parse(&p.bhs)),
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                assert_eq!(r.status, 0);
                c.exp_statsn = r.sn.statsn.wrapping_add(1);
                done.push(r.itt);
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    let (st, got, _) = c.read_cmd(&read10(((WRITES - 1) * LEN / 512) as u32, 8), 4096);
    assert_eq!(st, 0);
    assert!(got == data[..4096]);
    c.logout();
    srv.shutdown();
}
