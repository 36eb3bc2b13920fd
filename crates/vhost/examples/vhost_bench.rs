//! A host-side vhost-user frontend for benchmarks (bench/vhost.sh): no
//! guest, so TCG does not distort anything. It maps a memfd as guest
//! memory, runs one split virtqueue itself and keeps `--qd` requests in
//! flight against a vhost-user-scsi backend (rtarget) or a vhost-user-blk
//! one (qemu-storage-daemon), for `--secs` seconds, then prints one line:
//! `ios=N secs=S iops=I mbps=M cpu_us_per_io=C` (C: the backend process'
//! user+system CPU time per I/O, when `--pid` names it).
//!
//! usage: vhost_bench --socket PATH --kind scsi|blk --rw randread|randwrite|read
//!                    --bs BYTES --qd N --secs S --size BYTES [--pid PID] [--target T]
//!
//! Each request takes three descriptors (header, data, response; data
//! before the response for Data-Out / writes as virtio wants), slot `i` at
//! descriptors `3i..3i+3`, so the ring needs 3 * qd entries. No EVENT_IDX:
//! the backend notifies every completion and we kick once per batch.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_scsi::virtio::{encode_lun, CmdReq, CmdResp, CDB_SIZE, CMD_REQ_LEN, CMD_RESP_LEN};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QSIZE: u16 = 256;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const RING_BASE: u64 = 0x10000;
const DATA_BASE: u64 = 1 << 20;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const PROTOCOL_FEATURES: u64 = 1 << 30;

struct Args {
    socket: PathBuf,
    scsi: bool,
    write: bool,
    random: bool,
    bs: u64,
    qd: usize,
    secs: f64,
    size: u64,
    pid: Option<u32>,
    target: u8,
}

fn args() -> Args {
    let mut a = Args {
        socket: PathBuf::new(),
        scsi: true,
        write: false,
        random: true,
        bs: 4096,
        qd: 32,
        secs: 5.0,
        size: 1 << 30,
        pid: None,
        target: 1,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for kv in v.chunks(2) {
        let val = kv.get(1).cloned().unwrap_or_default();
        match kv[0].as_str() {
            "--socket" => a.socket = val.into(),
            "--kind" => a.scsi = val == "scsi",
            "--rw" => {
                a.write = val.contains("write");
                a.random = val.starts_with("rand");
            }
            "--bs" => a.bs = val.parse().unwrap(),
            "--qd" => a.qd = val.parse().unwrap(),
            "--secs" => a.secs = val.parse().unwrap(),
            "--size" => a.size = val.parse().unwrap(),
            "--pid" => a.pid = Some(val.parse().unwrap()),
            "--target" => a.target = val.parse().unwrap(),
            o => panic!("unknown option {o}"),
        }
    }
    assert!(a.qd * 3 <= QSIZE as usize, "qd too deep for the ring");
    a
}

/// The process' user + system CPU time, in seconds (all its threads).
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" of the command name: utime is the 12th, stime 13th.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz
}

struct Ring {
    mem: GuestMemoryMmap,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
}

fn main() {
    let a = args();
    let mem_size = (DATA_BASE + a.qd as u64 * (a.bs + 4096)) as usize;
    // SAFETY: a valid NUL-terminated name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"vhost-bench".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: `fd` is fresh and owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(mem_size as u64).unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
        GuestAddress(0),
        mem_size,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap();

    let mut fe = Frontend::connect(&a.socket, 8).unwrap();
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    if offered & PROTOCOL_FEATURES != 0 {
        let proto = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(
            proto & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK),
        )
        .unwrap();
    }
    fe.set_features(offered & (VIRTIO_F_VERSION_1 | PROTOCOL_FEATURES))
        .unwrap();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    fe.set_mem_table(&[info]).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    // virtio-scsi: control, event, request 0; virtio-blk: request 0.
    let nq = if a.scsi { 3 } else { 1 };
    let mut rings = Vec::new();
    for i in 0..nq {
        let base = RING_BASE * (i as u64 + 1);
        let r = Ring {
            mem: mem.clone(),
            desc: base,
            avail: base + 0x1000 * 4,
            used: base + 0x1000 * 8,
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
        };
        fe.set_vring_num(i, QSIZE).unwrap();
        fe.set_vring_addr(
            i,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: host + r.desc,
                used_ring_addr: host + r.used,
                avail_ring_addr: host + r.avail,
                log_addr: None,
            },
        )
        .unwrap();
        fe.set_vring_base(i, 0).unwrap();
        fe.set_vring_call(i, &r.call).unwrap();
        fe.set_vring_kick(i, &r.kick).unwrap();
        fe.set_vring_enable(i, true).unwrap();
        rings.push(r);
    }
    let mut ring = rings.pop().unwrap();

    // Per slot: header at hdr(i), data at data(i), response at resp(i).
    let slot_base = |i: usize| DATA_BASE + i as u64 * (a.bs + 4096);
    let hdr = |i: usize| slot_base(i);
    let resp = |i: usize| slot_base(i) + 1024;
    let data = |i: usize| slot_base(i) + 4096;
    let blocks = a.size / a.bs;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut seq = 0u64;
    let mut next_offset = || {
        let b = if a.random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % blocks
        } else {
            seq += 1;
            (seq - 1) % blocks
        };
        b * a.bs
    };
    let (hlen, rlen) = if a.scsi {
        (CMD_REQ_LEN, CMD_RESP_LEN)
    } else {
        (16, 1)
    };
    let write_desc = |r: &Ring, i: u16, addr: u64, len: u32, flags: u16| {
        let d = r.desc + 16 * u64::from(i);
        r.mem.write_obj(addr, GuestAddress(d)).unwrap();
        r.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        r.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        r.mem.write_obj(i + 1, GuestAddress(d + 14)).unwrap();
    };
    // Fill slot `i` with a new request and put it on the avail ring.
    let post = |r: &mut Ring, i: usize, off: u64| {
        if a.scsi {
            let lba = off / 512;
            let n = (a.bs / 512) as u32;
            let mut cdb = [0u8; CDB_SIZE];
            cdb[0] = if a.write { 0x8a } else { 0x88 };
            cdb[2..10].copy_from_slice(&lba.to_be_bytes());
            cdb[10..14].copy_from_slice(&n.to_be_bytes());
            let req = CmdReq {
                lun: encode_lun(a.target, 0),
                id: i as u64,
                task_attr: 0,
                cdb,
            };
            r.mem
                .write_slice(&req.to_bytes(), GuestAddress(hdr(i)))
                .unwrap();
        } else {
            let mut h = [0u8; 16];
            h[0] = u8::from(a.write);
            h[8..].copy_from_slice(&(off / 512).to_le_bytes());
            r.mem.write_slice(&h, GuestAddress(hdr(i))).unwrap();
        }
        let d0 = (3 * i) as u16;
        write_desc(r, d0, hdr(i), hlen as u32, DESC_F_NEXT);
        // virtio-scsi: response before Data-In, Data-Out before response.
        // virtio-blk: data before the status byte either way.
        let (dflags, rflags) = (if a.write { 0 } else { DESC_F_WRITE }, DESC_F_WRITE);
        if a.scsi && !a.write {
            write_desc(r, d0 + 1, resp(i), rlen as u32, rflags | DESC_F_NEXT);
            write_desc(r, d0 + 2, data(i), a.bs as u32, dflags);
        } else {
            write_desc(r, d0 + 1, data(i), a.bs as u32, dflags | DESC_F_NEXT);
            write_desc(r, d0 + 2, resp(i), rlen as u32, rflags);
        }
        let slot = r.avail + 4 + 2 * u64::from(r.avail_idx % QSIZE);
        r.mem.write_obj(d0, GuestAddress(slot)).unwrap();
        r.avail_idx = r.avail_idx.wrapping_add(1);
    };
    let publish = |r: &Ring| {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        r.mem
            .write_obj(r.avail_idx, GuestAddress(r.avail + 2))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        r.kick.write(1).unwrap();
    };

    let cpu0 = a.pid.map(cpu_secs);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    for i in 0..a.qd {
        let off = next_offset();
        post(&mut ring, i, off);
    }
    publish(&ring);
    let (mut ios, mut inflight, mut errors) = (0u64, a.qd, 0u64);
    while inflight > 0 {
        let idx: u16 = ring.mem.read_obj(GuestAddress(ring.used + 2)).unwrap();
        if idx == ring.last_used {
            let mut p = libc::pollfd {
                fd: ring.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 10_000) };
            assert!(n > 0, "no completion within 10 s");
            let _ = ring.call.read();
            continue;
        }
        let more = Instant::now() < end;
        while ring.last_used != idx {
            let e = ring.used + 4 + 8 * u64::from(ring.last_used % QSIZE);
            let id: u32 = ring.mem.read_obj(GuestAddress(e)).unwrap();
            ring.last_used = ring.last_used.wrapping_add(1);
            let i = id as usize / 3;
            let (ok, counted) = if a.scsi {
                let mut b = [0u8; CMD_RESP_LEN];
                ring.mem.read_slice(&mut b, GuestAddress(resp(i))).unwrap();
                let r = CmdResp::parse(&b);
                // A new nexus' first command reports the power-on unit
                // attention (sense key 6): not an I/O, not an error.
                let ua = r.status == 2 && r.sense_len > 2 && r.sense[2] & 0xf == 6;
                (r.response == 0 && (r.status == 0 || ua), !ua)
            } else {
                let s = ring.mem.read_obj::<u8>(GuestAddress(resp(i))).unwrap();
                (s == 0, true)
            };
            errors += u64::from(!ok);
            ios += u64::from(counted);
            if more {
                let off = next_offset();
                post(&mut ring, i, off);
            } else {
                inflight -= 1;
            }
        }
        if more {
            publish(&ring);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu0.map(|c0| (cpu_secs(a.pid.unwrap()) - c0) / ios as f64 * 1e6);
    println!(
        "ios={ios} errors={errors} secs={secs:.2} iops={:.0} mbps={:.1} cpu_us_per_io={}",
        ios as f64 / secs,
        ios as f64 * a.bs as f64 / secs / 1e6,
        cpu.map_or("-".into(), |c| format!("{c:.1}"))
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
