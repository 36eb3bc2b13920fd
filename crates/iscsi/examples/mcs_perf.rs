//! Load for one session spread over C connections (MC/S), which neither
//! libiscsi's iscsi-perf nor open-iscsi can open: 4 KiB random READs, QD
//! commands in flight over the whole session (QD/C per connection), one
//! CmdSN counter for the session. Prints `iops N` at the end.
//!
//! `cargo run --release -p iscsi --example mcs_perf -- ADDR IQN CONNS QD SECS [BLOCKS]`
//! (used by bench/sessions.sh --connections). The target's TPG must allow
//! CONNS connections (`MaxConnections`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read10, Client};
use iscsi_wire::response::{DataIn, ScsiResponse};
use iscsi_wire::{Bhs, Opcode};

/// Send one 4 KiB READ at a pseudo-random block with the next CmdSN of
/// the session.
fn send_read(c: &mut Client, sn: &AtomicU32, rng: &mut u64, blocks: u64) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let lba = (*rng % (blocks / 8)) * 8;
    c.cmdsn = sn.fetch_add(1, Ordering::SeqCst);
    let cmd = c.scsi_cmd_header(&read10(lba as u32, 8), true, false, 4096);
    let mut b = Bhs::default();
    cmd.write_to(&mut b);
    c.send(&b, &[]);
}

/// One connection's share: `qd` READs in flight until `end`; how many
/// completed.
fn drive(mut c: Client, sn: Arc<AtomicU32>, qd: usize, end: Instant, blocks: u64) -> u64 {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(c.cid).wrapping_mul(0x1234_5678_9abc);
    for _ in 0..qd {
        send_read(&mut c, &sn, &mut rng, blocks);
    }
    let (mut done, mut in_flight) = (0u64, qd);
    while in_flight > 0 {
        let p = c.recv().expect("response");
        let finished = match p.bhs.opcode() {
            Opcode::DATA_IN => DataIn::parse(&p.bhs).status.is_some(),
            Opcode::SCSI_RESPONSE => {
                assert_eq!(ScsiResponse::parse(&p.bhs).status, 0, "READ failed");
                true
            }
            _ => false,
        };
        if !finished {
            continue;
        }
        done += 1;
        in_flight -= 1;
        if Instant::now() < end {
            send_read(&mut c, &sn, &mut rng, blocks);
            in_flight += 1;
        }
    }
    done
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: mcs_perf ADDR IQN CONNS QD SECS [BLOCKS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = a[1].parse().expect("ADDR");
    let iqn = a[2].as_str();
    let conns: u16 = a[3].parse().expect("CONNS");
    let qd: usize = a[4].parse().expect("QD");
    let secs: u64 = a[5].parse().expect("SECS");
    let blocks: u64 = a.get(6).map_or(1 << 21, |b| b.parse().expect("BLOCKS"));
    let max = conns.to_string();
    let mut lead = Client::connect(addr);
    lead.isid = [0x80, 0, 0, 0x4d, 0x43, 0x53];
    lead.login(Some(iqn), &[("MaxConnections", max.as_str())]);
    lead.clear_ua();
    let sn = Arc::new(AtomicU32::new(lead.cmdsn));
    let mut clients = Vec::new();
    for cid in 1..conns {
        let mut c = Client::connect(addr);
        (c.isid, c.tsih, c.cid, c.cmdsn) = (lead.isid, lead.tsih, cid, lead.cmdsn);
        c.login(Some(iqn), &[]);
        clients.push(c);
    }
    clients.insert(0, lead);
    let end = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let per = (qd / usize::from(conns)).max(1);
    let threads: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let sn = Arc::clone(&sn);
            std::thread::spawn(move || drive(c, sn, per, end, blocks))
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    let iops = total as f64 / t0.elapsed().as_secs_f64();
    println!("iops {iops:.0}");
}
