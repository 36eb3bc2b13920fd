//! A minimal virtio-scsi driver for tests: the vhost-user frontend is
//! rust-vmm's `vhost::vhost_user::Frontend`, guest memory is a memfd shared
//! with the backend, and the split virtqueues are laid out and driven here
//! as a guest's virtio_scsi driver would (with EVENT_IDX and, on request,
//! indirect descriptors).

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_scsi::virtio::*;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const MEM_SIZE: usize = 16 << 20;
pub const QUEUE_SIZE: u16 = 64;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// Data buffers live past the rings.
const DATA_START: u64 = 1 << 20;

pub struct Vq {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
}

pub struct Guest {
    pub frontend: Frontend,
    pub mem: GuestMemoryMmap,
    pub vqs: Vec<Vq>,
    next_data: u64,
    pub features: u64,
}

/// One buffer of a request: guest-readable or guest-writable.
pub enum Buf<'a> {
    Out(&'a [u8]),
    In(usize),
}

/// What came back for one chain: bytes the device wrote and the writable
/// buffers' contents.
pub struct Used {
    pub len: u32,
    pub bufs: Vec<Vec<u8>>,
}

fn memfd(size: usize) -> File {
    // SAFETY: a valid NUL-terminated name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"vhost-test".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size as u64).unwrap();
    f
}

impl Guest {
    /// Connect, negotiate as QEMU does and start `queues` virtqueues.
    pub fn connect(path: &Path, queues: usize) -> Guest {
        let mut frontend = Frontend::connect(path, 64).unwrap();
        frontend.set_owner().unwrap();
        let offered = frontend.get_features().unwrap();
        let proto = frontend.get_protocol_features().unwrap();
        assert!(proto.contains(VhostUserProtocolFeatures::MQ));
        frontend
            .set_protocol_features(
                proto & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK),
            )
            .unwrap();
        frontend.set_features(offered).unwrap();
        let file = memfd(MEM_SIZE);
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            MEM_SIZE,
            Some(FileOffset::new(file, 0)),
        )])
        .unwrap();
        let region = mem.find_region(GuestAddress(0)).unwrap();
        let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
        frontend.set_mem_table(&[info]).unwrap();
        let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        let mut vqs = Vec::new();
        for i in 0..queues {
            let base = 0x10000 * (i as u64 + 1);
            let vq = Vq {
                desc: base,
                avail: base + 0x1000,
                used: base + 0x2000,
                avail_idx: 0,
                last_used: 0,
                kick: EventFd::new(EFD_NONBLOCK).unwrap(),
                call: EventFd::new(EFD_NONBLOCK).unwrap(),
            };
            frontend.set_vring_num(i, QUEUE_SIZE).unwrap();
            frontend
                .set_vring_addr(
                    i,
                    &VringConfigData {
                        queue_max_size: QUEUE_SIZE,
                        queue_size: QUEUE_SIZE,
                        flags: 0,
                        desc_table_addr: host + vq.desc,
                        used_ring_addr: host + vq.used,
                        avail_ring_addr: host + vq.avail,
                        log_addr: None,
                    },
                )
                .unwrap();
            frontend.set_vring_base(i, 0).unwrap();
            frontend.set_vring_call(i, &vq.call).unwrap();
            frontend.set_vring_kick(i, &vq.kick).unwrap();
            frontend.set_vring_enable(i, true).unwrap();
            vqs.push(vq);
        }
        Guest {
            frontend,
            mem,
            vqs,
            next_data: DATA_START,
            features: offered,
        }
    }

    fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_data;
        self.next_data += (len as u64).div_ceil(64) * 64 + 64;
        if self.next_data > MEM_SIZE as u64 {
            self.next_data = DATA_START;
            return self.alloc(len);
        }
        a
    }

    /// Post one chain on virtqueue `q` (no wait).
    pub fn post(&mut self, q: usize, bufs: &[Buf<'_>], indirect: bool) -> Vec<(u64, usize)> {
        self.post_head(q, bufs, indirect).1
    }

    /// Post one chain on virtqueue `q` (no wait); also returns its head
    /// descriptor index (the used element's id).
    pub fn post_head(
        &mut self,
        q: usize,
        bufs: &[Buf<'_>],
        indirect: bool,
    ) -> (u32, Vec<(u64, usize)>) {
        let mut descs = Vec::new();
        let mut writable = Vec::new();
        for b in bufs {
            match b {
                Buf::Out(d) => {
                    let a = self.alloc(d.len());
                    self.mem.write_slice(d, GuestAddress(a)).unwrap();
                    descs.push((a, d.len() as u32, 0u16));
                }
                Buf::In(n) => {
                    let a = self.alloc(*n);
                    self.mem
                        .write_slice(&vec![0xeeu8; *n], GuestAddress(a))
                        .unwrap();
                    descs.push((a, *n as u32, DESC_F_WRITE));
                    writable.push((a, *n));
                }
            }
        }
        let vq = &self.vqs[q];
        let head = vq.avail_idx % QUEUE_SIZE;
        // Each chain takes descriptors from `head * 4`: at most 4 per chain,
        // at most QUEUE_SIZE / 4 chains in flight.
        let slot = u64::from(head % (QUEUE_SIZE / 4)) * 4;
        let write_desc =
            |table: u64, i: u64, (addr, len, flags): (u64, u32, u16), next: Option<u16>| {
                let d = table + 16 * i;
                self.mem.write_obj(addr, GuestAddress(d)).unwrap();
                self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
                let f = flags | if next.is_some() { DESC_F_NEXT } else { 0 };
                self.mem.write_obj(f, GuestAddress(d + 12)).unwrap();
                self.mem
                    .write_obj(next.unwrap_or(0), GuestAddress(d + 14))
                    .unwrap();
            };
        let n = descs.len();
        if indirect {
            let table = self.next_data;
            self.next_data += 16 * n as u64 + 64;
            for (i, d) in descs.iter().enumerate() {
                write_desc(table, i as u64, *d, (i + 1 < n).then_some(i as u16 + 1));
            }
            write_desc(vq.desc, slot, (table, 16 * n as u32, DESC_F_INDIRECT), None);
        } else {
            assert!(n <= 4);
            for (i, d) in descs.iter().enumerate() {
                let next = (i + 1 < n).then_some((slot + i as u64 + 1) as u16);
                write_desc(vq.desc, slot + i as u64, *d, next);
            }
        }
        let vq = &mut self.vqs[q];
        let ring = vq.avail + 4 + 2 * u64::from(vq.avail_idx % QUEUE_SIZE);
        self.mem.write_obj(slot as u16, GuestAddress(ring)).unwrap();
        // used_event: tell us about the next completion (EVENT_IDX).
        let used_event = vq.avail + 4 + 2 * u64::from(QUEUE_SIZE);
        self.mem
            .write_obj(vq.last_used, GuestAddress(used_event))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        vq.avail_idx = vq.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(vq.avail_idx, GuestAddress(vq.avail + 2))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        vq.kick.write(1).unwrap();
        (slot as u32, writable)
    }

    /// Wait for the next used element of virtqueue `q`, whichever chain it
    /// is: (id = head descriptor, bytes written).
    pub fn wait_used_id(&mut self, q: usize) -> (u32, u32) {
        let used = self.next_used(q);
        // used_event: as a driver re-enabling callbacks, ask to be told of
        // the next one (answers may now come without a new request).
        let vq = &self.vqs[q];
        let used_event = vq.avail + 4 + 2 * u64::from(QUEUE_SIZE);
        self.mem
            .write_obj(vq.last_used, GuestAddress(used_event))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        used
    }

    /// Wait for (the call eventfd) and take the next used element of
    /// virtqueue `q`: (id, bytes written).
    fn next_used(&mut self, q: usize) -> (u32, u32) {
        let vq = &mut self.vqs[q];
        loop {
            let idx: u16 = self.mem.read_obj(GuestAddress(vq.used + 2)).unwrap();
            if idx != vq.last_used {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: vq.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
            assert!(
                r > 0,
                "no used-buffer notification within 10 s on queue {q}"
            );
            let _ = vq.call.read();
        }
        let elem = vq.used + 4 + 8 * u64::from(vq.last_used % QUEUE_SIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
        vq.last_used = vq.last_used.wrapping_add(1);
        (id, len)
    }

    /// Read back a posted chain's writable buffers.
    pub fn read_bufs(&self, writable: &[(u64, usize)]) -> Vec<Vec<u8>> {
        writable
            .iter()
            .map(|&(a, n)| {
                let mut v = vec![0u8; n];
                self.mem.read_slice(&mut v, GuestAddress(a)).unwrap();
                v
            })
            .collect()
    }

    /// Post a SCSI command with a task attribute on request queue `rq`
    /// without waiting: (head id, writable buffers: response, Data-In).
    pub fn post_scsi(
        &mut self,
        rq: usize,
        lun: [u8; 8],
        id: u64,
        attr: u32,
        cdb: &[u8],
        data_in: usize,
    ) -> (u32, Vec<(u64, usize)>) {
        let mut c = [0u8; CDB_SIZE];
        c[..cdb.len()].copy_from_slice(cdb);
        let req = CmdReq {
            lun,
            id,
            task_attr: attr as u8,
            cdb: c,
        }
        .to_bytes();
        let mut bufs = vec![Buf::Out(&req), Buf::In(CMD_RESP_LEN)];
        if data_in > 0 {
            bufs.push(Buf::In(data_in));
        }
        self.post_head(2 + rq, &bufs, false)
    }

    /// The response header of a chain `post_scsi` posted.
    pub fn scsi_resp(&self, writable: &[(u64, usize)]) -> CmdResp {
        let b = self.read_bufs(&writable[..1]);
        CmdResp::parse(&b[0].clone().try_into().unwrap())
    }

    /// Wait for the next used element of virtqueue `q` (the call eventfd
    /// fires: EVENT_IDX asked for it), reading back `writable`.
    pub fn wait_used(&mut self, q: usize, writable: &[(u64, usize)]) -> Used {
        let (_, len) = self.next_used(q);
        let bufs = self.read_bufs(writable);
        Used { len, bufs }
    }

    pub fn call(&mut self, q: usize, bufs: &[Buf<'_>], indirect: bool) -> Used {
        let w = self.post(q, bufs, indirect);
        self.wait_used(q, &w)
    }
}

/// One SCSI command's result as the guest sees it.
#[derive(Debug)]
pub struct ScsiResult {
    pub response: u8,
    pub status: u8,
    pub resid: u32,
    pub sense: Vec<u8>,
    pub data: Vec<u8>,
    pub used_len: u32,
}

impl ScsiResult {
    /// (sense key, ASC, ASCQ) of fixed-format sense.
    pub fn sense_triple(&self) -> Option<(u8, u8, u8)> {
        (self.sense.len() >= 14).then(|| (self.sense[2] & 0xf, self.sense[12], self.sense[13]))
    }
}

impl Guest {
    /// A SCSI command on request queue `rq` (virtqueue 2 + rq). Data-In is
    /// split over two descriptors to exercise gathering.
    #[allow(clippy::too_many_arguments)]
    pub fn scsi(
        &mut self,
        rq: usize,
        lun: [u8; 8],
        id: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: usize,
        indirect: bool,
    ) -> ScsiResult {
        let mut c = [0u8; CDB_SIZE];
        c[..cdb.len()].copy_from_slice(cdb);
        let req = CmdReq {
            lun,
            id,
            task_attr: VIRTIO_SCSI_S_SIMPLE as u8,
            cdb: c,
        }
        .to_bytes();
        let mut bufs = vec![Buf::Out(&req)];
        if !data_out.is_empty() {
            bufs.push(Buf::Out(data_out));
        }
        bufs.push(Buf::In(CMD_RESP_LEN));
        let half = data_in / 2;
        if half > 0 {
            bufs.push(Buf::In(half));
        }
        if data_in - half > 0 {
            bufs.push(Buf::In(data_in - half));
        }
        let u = self.call(2 + rq, &bufs, indirect);
        let resp = CmdResp::parse(&u.bufs[0].clone().try_into().unwrap());
        let data: Vec<u8> = u.bufs[1..].concat();
        ScsiResult {
            response: resp.response,
            status: resp.status,
            resid: resp.resid,
            sense: resp.sense[..resp.sense_len as usize].to_vec(),
            data,
            used_len: u.len,
        }
    }

    /// A TMF on the control queue; returns the response byte.
    pub fn tmf(&mut self, subtype: u32, lun: [u8; 8], id: u64) -> u8 {
        let req = TmfReq { subtype, lun, id }.to_bytes();
        let u = self.call(0, &[Buf::Out(&req), Buf::In(1)], false);
        assert_eq!(u.len, 1);
        u.bufs[0][0]
    }

    /// Post one empty buffer on the event queue.
    pub fn post_event_buffer(&mut self) -> Vec<(u64, usize)> {
        self.post(1, &[Buf::In(EVENT_LEN)], false)
    }

    pub fn wait_event(&mut self, w: &[(u64, usize)]) -> Event {
        let u = self.wait_used(1, w);
        assert_eq!(u.len as usize, EVENT_LEN);
        Event::parse(&u.bufs[0].clone().try_into().unwrap())
    }

    pub fn wait_call(&self, q: usize, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.vqs[q].call.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

impl Guest {
    pub fn frontend_queue_num(&mut self) -> u64 {
        self.frontend.get_queue_num().unwrap()
    }

    /// The backend is gone: requests fail.
    pub fn frontend_queue_num_fails(&mut self) -> bool {
        self.frontend.get_queue_num().is_err()
    }
}
