//! A host-side vhost-user frontend for benchmarks (bench/vhost.sh): no
//! guest, so TCG does not distort anything. It maps a memfd as guest
//! memory, runs `--queues` split request virtqueues itself (one thread
//! each, as a guest's vCPUs each drive their own queue) and keeps `--qd`
//! requests in flight in total (qd / queues per queue) against a
//! vhost-user-scsi backend (rtarget) or a vhost-user-blk one
//! (qemu-storage-daemon), for `--secs` seconds, then prints one line:
//! `ios=N errors=E secs=S iops=I mbps=M cpu_us_per_io=C queue_ios=N0/N1/..`
//! (C: the backend process' user+system CPU time per I/O, when `--pid`
//! names it; N0..: I/Os per queue).
//!
//! usage: vhost_bench --socket PATH --kind scsi|blk --rw randread|randwrite|read
//!                    --bs BYTES --qd N --secs S --size BYTES [--queues Q]
//!                    [--event-idx 0|1] [--pid PID] [--target T]
//!
//! Each request takes three descriptors (header, data, response; data
//! before the response for Data-Out / writes as virtio wants), local slot
//! `j` of a queue at descriptors `3j..3j+3`, so a ring needs 3 * its depth
//! entries. A slot's descriptors and header never change (written once);
//! a new request only rewrites the LBA and the avail ring entry, so the
//! frontend's own cost per I/O stays small next to the backend's.
//! Notifications as a Linux guest's virtio driver does them: EVENT_IDX when
//! the backend offers it (`--event-idx 0` turns it off; then the backend's
//! NO_NOTIFY flag is honoured), a kick per batch of new requests only when
//! the backend asked for one, and a call wanted only once the thread has
//! nothing left to reap.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicU64, Ordering};
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
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// virtio-blk: more than one request queue.
const VIRTIO_BLK_F_MQ: u64 = 1 << 12;

pub struct Args {
    socket: PathBuf,
    scsi: bool,
    write: bool,
    random: bool,
    bs: u64,
    qd: usize,
    queues: usize,
    event_idx: bool,
    secs: f64,
    size: u64,
    pid: Option<u32>,
    target: u8,
}

/// The options, from the command line's words (after the program name).
pub fn parse_args(v: Vec<String>) -> Args {
    let mut a = Args {
        socket: PathBuf::new(),
        scsi: true,
        write: false,
        random: true,
        bs: 4096,
        qd: 32,
        queues: 1,
        event_idx: true,
        secs: 5.0,
        size: 1 << 30,
        pid: None,
        target: 1,
    };
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
            "--queues" => a.queues = val.parse().unwrap(),
            "--event-idx" => a.event_idx = val != "0",
            "--secs" => a.secs = val.parse().unwrap(),
            "--size" => a.size = val.parse().unwrap(),
            "--pid" => a.pid = Some(val.parse().unwrap()),
            "--target" => a.target = val.parse().unwrap(),
            o => panic!("unknown option {o}"),
        }
    }
    assert!(a.queues >= 1 && a.queues <= 8, "1..=8 queues");
    assert!(a.qd >= a.queues, "fewer requests than queues");
    assert!(
        a.qd.div_ceil(a.queues) * 3 <= QSIZE as usize,
        "qd too deep for the ring"
    );
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

/// One request virtqueue and the requests its thread keeps in flight.
struct Ring {
    mem: GuestMemoryMmap,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
    /// EVENT_IDX negotiated.
    event_idx: bool,
    /// The avail index the backend was last told about (kicked or not).
    published: u16,
    /// Global index of this queue's first slot (its data buffers).
    first_slot: usize,
    /// Requests this queue keeps in flight.
    depth: usize,
}

/// Per global slot: header, response, data.
struct Layout {
    bs: u64,
}

impl Layout {
    fn base(&self, i: usize) -> u64 {
        DATA_BASE + i as u64 * (self.bs + 4096)
    }
    fn hdr(&self, i: usize) -> u64 {
        self.base(i)
    }
    fn resp(&self, i: usize) -> u64 {
        self.base(i) + 1024
    }
    fn data(&self, i: usize) -> u64 {
        self.base(i) + 4096
    }
}

/// Where the block number sits in a slot's header: the CDB's LBA
/// (READ(16)/WRITE(16) bytes 2..10, big-endian) or virtio-blk's sector.
fn lba_offset(scsi: bool) -> u64 {
    if scsi {
        (CMD_REQ_LEN - CDB_SIZE + 2) as u64
    } else {
        8
    }
}

/// What all queue threads share.
struct Shared<'a> {
    a: &'a Args,
    lay: Layout,
    end: Instant,
    /// Next block of a sequential run (shared, so the whole stays sequential).
    seq: AtomicU64,
}

#[derive(Default)]
struct Count {
    ios: u64,
    errors: u64,
}

/// Write slot `j`'s descriptors and header once: only the LBA changes.
fn prepare(s: &Shared<'_>, r: &Ring, j: usize) {
    let a = s.a;
    let i = r.first_slot + j;
    let write_desc = |d: u16, addr: u64, len: u32, flags: u16| {
        let o = r.desc + 16 * u64::from(d);
        r.mem.write_obj(addr, GuestAddress(o)).unwrap();
        r.mem.write_obj(len, GuestAddress(o + 8)).unwrap();
        r.mem.write_obj(flags, GuestAddress(o + 12)).unwrap();
        r.mem.write_obj(d + 1, GuestAddress(o + 14)).unwrap();
    };
    let (hlen, rlen) = if a.scsi {
        (CMD_REQ_LEN, CMD_RESP_LEN)
    } else {
        (16, 1)
    };
    if a.scsi {
        let n = (a.bs / 512) as u32;
        let mut cdb = [0u8; CDB_SIZE];
        cdb[0] = if a.write { 0x8a } else { 0x88 };
        cdb[10..14].copy_from_slice(&n.to_be_bytes());
        let req = CmdReq {
            lun: encode_lun(a.target, 0),
            id: i as u64,
            task_attr: 0,
            cdb,
        };
        r.mem
            .write_slice(&req.to_bytes(), GuestAddress(s.lay.hdr(i)))
            .unwrap();
    } else {
        let mut h = [0u8; 16];
        h[0] = u8::from(a.write);
        r.mem.write_slice(&h, GuestAddress(s.lay.hdr(i))).unwrap();
    }
    let d0 = (3 * j) as u16;
    write_desc(d0, s.lay.hdr(i), hlen as u32, DESC_F_NEXT);
    // virtio-scsi: response before Data-In, Data-Out before response.
    // virtio-blk: data before the status byte either way.
    let dflags = if a.write { 0 } else { DESC_F_WRITE };
    if a.scsi && !a.write {
        write_desc(
            d0 + 1,
            s.lay.resp(i),
            rlen as u32,
            DESC_F_WRITE | DESC_F_NEXT,
        );
        write_desc(d0 + 2, s.lay.data(i), a.bs as u32, dflags);
    } else {
        write_desc(d0 + 1, s.lay.data(i), a.bs as u32, dflags | DESC_F_NEXT);
        write_desc(d0 + 2, s.lay.resp(i), rlen as u32, DESC_F_WRITE);
    }
}

/// Point slot `j` at a new block and put it on the avail ring.
fn post(s: &Shared<'_>, r: &mut Ring, j: usize, block: u64) {
    let a = s.a;
    let at = GuestAddress(s.lay.hdr(r.first_slot + j) + lba_offset(a.scsi));
    if a.scsi {
        let lba = block * a.bs / 512;
        r.mem.write_obj(lba.to_be_bytes(), at).unwrap();
    } else {
        r.mem.write_obj((block * a.bs / 512).to_le(), at).unwrap();
    }
    let slot = r.avail + 4 + 2 * u64::from(r.avail_idx % QSIZE);
    r.mem.write_obj((3 * j) as u16, GuestAddress(slot)).unwrap();
    r.avail_idx = r.avail_idx.wrapping_add(1);
}

/// vring_need_event of the VIRTIO spec (2.7.10): did `new_idx` pass `event`
/// since `old`?
fn need_event(event: u16, new_idx: u16, old: u16) -> bool {
    new_idx.wrapping_sub(event).wrapping_sub(1) < new_idx.wrapping_sub(old)
}

/// Make the new requests visible; kick if the backend wants to be kicked.
fn publish(r: &mut Ring) {
    fence(Ordering::SeqCst);
    r.mem
        .write_obj(r.avail_idx, GuestAddress(r.avail + 2))
        .unwrap();
    fence(Ordering::SeqCst);
    let (old, new_idx) = (r.published, r.avail_idx);
    r.published = new_idx;
    let kick = if r.event_idx {
        // avail_event: after the used ring's entries.
        let at = GuestAddress(r.used + 4 + 8 * u64::from(QSIZE));
        need_event(r.mem.read_obj(at).unwrap(), new_idx, old)
    } else {
        let flags: u16 = r.mem.read_obj(GuestAddress(r.used)).unwrap();
        flags & VRING_USED_F_NO_NOTIFY == 0
    };
    if kick {
        r.kick.write(1).unwrap();
    }
}

/// Ask for a call at the next used buffer (EVENT_IDX: used_event, after
/// the avail ring's entries); returns the used index seen after asking,
/// so a completion that raced the request is not slept through.
fn want_call(r: &Ring) -> u16 {
    if r.event_idx {
        let at = GuestAddress(r.avail + 4 + 2 * u64::from(QSIZE));
        r.mem.write_obj(r.last_used, at).unwrap();
        fence(Ordering::SeqCst);
    }
    r.mem.read_obj(GuestAddress(r.used + 2)).unwrap()
}

/// Did slot `i`'s request succeed, and was it an I/O?
fn check(s: &Shared<'_>, r: &Ring, i: usize) -> (bool, bool) {
    if s.a.scsi {
        let mut b = [0u8; CMD_RESP_LEN];
        r.mem
            .read_slice(&mut b, GuestAddress(s.lay.resp(i)))
            .unwrap();
        let c = CmdResp::parse(&b);
        // A new nexus' first command reports the power-on unit
        // attention (sense key 6): not an I/O, not an error.
        let ua = c.status == 2 && c.sense_len > 2 && c.sense[2] & 0xf == 6;
        (c.response == 0 && (c.status == 0 || ua), !ua)
    } else {
        let st = r.mem.read_obj::<u8>(GuestAddress(s.lay.resp(i))).unwrap();
        (st == 0, true)
    }
}

/// One queue's thread: keep its depth in flight until the end time.
fn drive(s: &Shared<'_>, mut r: Ring, seed: u64) -> Count {
    let a = s.a;
    let blocks = a.size / a.bs;
    let mut rng = seed | 1;
    let mut next_block = || {
        if a.random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % blocks
        } else {
            s.seq.fetch_add(1, Ordering::Relaxed) % blocks
        }
    };
    for j in 0..r.depth {
        prepare(s, &r, j);
        post(s, &mut r, j, next_block());
    }
    publish(&mut r);
    let mut c = Count::default();
    let mut inflight = r.depth;
    while inflight > 0 {
        let mut idx: u16 = r.mem.read_obj(GuestAddress(r.used + 2)).unwrap();
        if idx == r.last_used {
            idx = want_call(&r);
        }
        if idx == r.last_used {
            let mut p = libc::pollfd {
                fd: r.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 10_000) };
            assert!(n > 0, "no completion within 10 s");
            let _ = r.call.read();
            continue;
        }
        fence(Ordering::Acquire);
        let more = Instant::now() < s.end;
        while r.last_used != idx {
            let e = r.used + 4 + 8 * u64::from(r.last_used % QSIZE);
            let id: u32 = r.mem.read_obj(GuestAddress(e)).unwrap();
            r.last_used = r.last_used.wrapping_add(1);
            let j = id as usize / 3;
            let (ok, counted) = check(s, &r, r.first_slot + j);
            c.errors += u64::from(!ok);
            c.ios += u64::from(counted);
            if more {
                post(s, &mut r, j, next_block());
            } else {
                inflight -= 1;
            }
        }
        if more {
            publish(&mut r);
        }
    }
    c
}

/// Negotiate, map the memory, set up every virtqueue; returns the
/// frontend (kept open for the run) and the request rings.
fn connect(a: &Args, mem: &GuestMemoryMmap) -> (Frontend, Vec<Ring>) {
    let mut fe = Frontend::connect(&a.socket, 16).unwrap();
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    if offered & PROTOCOL_FEATURES != 0 {
        let proto = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(
            proto & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK),
        )
        .unwrap();
        if a.queues > 1 {
            let n = fe.get_queue_num().unwrap();
            let want = a.queues as u64 + if a.scsi { 2 } else { 0 };
            assert!(n >= want, "the backend offers {n} queues, {want} wanted");
        }
    } else {
        assert!(a.queues == 1, "no MQ without protocol features");
    }
    let mq = if !a.scsi && a.queues > 1 {
        VIRTIO_BLK_F_MQ
    } else {
        0
    };
    let ei = if a.event_idx {
        VIRTIO_RING_F_EVENT_IDX
    } else {
        0
    };
    let features = offered & (VIRTIO_F_VERSION_1 | PROTOCOL_FEATURES | mq | ei);
    fe.set_features(features).unwrap();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    fe.set_mem_table(&[info]).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    // virtio-scsi: control, event, then the request queues; virtio-blk:
    // request queues only.
    let skip = if a.scsi { 2 } else { 0 };
    let mut rings = Vec::new();
    let mut first_slot = 0;
    for i in 0..skip + a.queues {
        let base = RING_BASE * (i as u64 + 1);
        let q = i.saturating_sub(skip);
        let depth = a.qd / a.queues + usize::from(q < a.qd % a.queues);
        let r = Ring {
            mem: mem.clone(),
            desc: base,
            avail: base + 0x1000 * 4,
            used: base + 0x1000 * 8,
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            event_idx: features & VIRTIO_RING_F_EVENT_IDX != 0,
            published: 0,
            first_slot,
            depth: if i < skip { 0 } else { depth },
        };
        first_slot += r.depth;
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
        if i >= skip {
            rings.push(r);
        }
    }
    (fe, rings)
}

fn main() {
    let (line, errors) = run(&parse_args(std::env::args().skip(1).collect()));
    println!("{line}");
    if errors > 0 {
        std::process::exit(1);
    }
}

/// One measurement: the report line and the number of failed requests
/// (tests/bench_frontend.rs calls this too).
pub fn run(a: &Args) -> (String, u64) {
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
    let (_fe, rings) = connect(a, &mem);

    let cpu0 = a.pid.map(cpu_secs);
    let start = Instant::now();
    let s = Shared {
        a,
        lay: Layout { bs: a.bs },
        end: start + Duration::from_secs_f64(a.secs),
        seq: AtomicU64::new(0),
    };
    let counts: Vec<Count> = std::thread::scope(|sc| {
        let hs: Vec<_> = rings
            .into_iter()
            .enumerate()
            .map(|(q, r)| {
                let s = &s;
                sc.spawn(move || drive(s, r, 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(q as u64 + 1)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let ios: u64 = counts.iter().map(|c| c.ios).sum();
    let errors: u64 = counts.iter().map(|c| c.errors).sum();
    let cpu = cpu0.map(|c0| (cpu_secs(a.pid.unwrap()) - c0) / ios as f64 * 1e6);
    let per_queue: Vec<String> = counts.iter().map(|c| c.ios.to_string()).collect();
    let line = format!(
        "ios={ios} errors={errors} secs={secs:.2} iops={:.0} mbps={:.1} cpu_us_per_io={} queue_ios={}",
        ios as f64 / secs,
        ios as f64 * a.bs as f64 / secs / 1e6,
        cpu.map_or("-".into(), |c| format!("{c:.1}")),
        per_queue.join("/")
    );
    (line, errors)
}
