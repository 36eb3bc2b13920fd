//! Reservations shared by two "gateways" (two devices, as two rtarget
//! processes serving one RBD image would have) through an in-memory
//! [`SharedState`] with the RADOS object's semantics: compare-and-swap on a
//! version, announcements run every other holder's hook before returning.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use backstore::shared_state::{ChangeHook, SharedState};

use super::*;
use crate::testutil::*;
use crate::{Lun, LunTable, Outcome, Status};

#[derive(Default)]
struct Bus {
    blob: Mutex<Option<(u64, Vec<u8>)>>,
    hooks: Mutex<BTreeMap<u64, Arc<dyn Fn() + Send + Sync>>>,
    alive: Mutex<Vec<u64>>,
    /// Stores refused (as if another holder had won the race) before the
    /// next one succeeds.
    lose: Mutex<usize>,
    /// Holders whose hooks announcements skip (a stopped process).
    deaf: Mutex<Vec<u64>>,
    /// `cache_for` (the trait's default when unset).
    lease: Mutex<Option<std::time::Duration>>,
}

struct Handle {
    bus: Arc<Bus>,
    id: u64,
}

impl SharedState for Handle {
    fn load(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        Ok(self.bus.blob.lock().unwrap().clone())
    }
    fn compare_and_swap(&self, version: Option<u64>, data: &[u8]) -> io::Result<bool> {
        let mut lose = self.bus.lose.lock().unwrap();
        let mut b = self.bus.blob.lock().unwrap();
        if *lose > 0 {
            // Someone else stores a no-op change meanwhile.
            *lose -= 1;
            let (v, d) = b.clone().unwrap_or((0, Vec::new()));
            *b = Some((v + 1, d));
            return Ok(false);
        }
        if b.as_ref().map(|(v, _)| *v) != version {
            return Ok(false);
        }
        *b = Some((version.map_or(1, |v| v + 1), data.to_vec()));
        Ok(true)
    }
    fn announce(&self) {
        let hooks: Vec<_> = {
            let h = self.bus.hooks.lock().unwrap();
            h.iter()
                .filter(|(id, _)| **id != self.id && !self.bus.deaf.lock().unwrap().contains(id))
                .map(|(_, f)| Arc::clone(f))
                .collect()
        };
        for f in hooks {
            f();
        }
    }
    fn subscribe(&self, hook: ChangeHook) {
        self.bus
            .hooks
            .lock()
            .unwrap()
            .insert(self.id, Arc::from(hook));
    }
    fn holder_id(&self) -> u64 {
        self.id
    }
    fn cache_for(&self) -> std::time::Duration {
        let lease = *self.bus.lease.lock().unwrap();
        lease.unwrap_or(std::time::Duration::from_secs(1))
    }
    fn holder_alive(&self, id: u64) -> bool {
        self.bus.alive.lock().unwrap().contains(&id)
    }
}

/// One gateway: its own device (same WWN) on the shared bus, its own
/// target port (TPG `tag`).
struct Gw {
    table: LunTable,
    tag: u16,
}

impl Gw {
    fn new(bus: &Arc<Bus>, id: u64) -> Gw {
        let store = Arc::new(MemStore::new(BLOCKS * 512, false));
        let dev = Device::new(crate::DeviceOptions::new("disk0", WWN), store);
        bus.alive.lock().unwrap().push(id);
        dev.set_pr_store(Arc::new(Handle {
            bus: Arc::clone(bus),
            id,
        }))
        .unwrap();
        let table = LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect: false,
            }],
        };
        Gw {
            table,
            tag: id as u16,
        }
    }

    fn dev(&self) -> &Arc<Device> {
        &self.table.luns[0].device
    }

    /// Initiator `i`'s nexus through this gateway.
    fn nexus(&self, i: u64) -> Nexus {
        Nexus {
            id: u64::from(self.tag) * 100 + i,
            initiator_port: format!("iqn.2026-01.test:init{i},i,0x1"),
            target_port: format!("iqn.2026-01.test:tgt,t,0x{:04x}", self.tag),
            relative_port_id: self.tag,
            tpg_tag: self.tag,
        }
    }

    fn run(&self, n: &Nexus, cdb: &[u8], data: &[u8]) -> Outcome {
        let cmd = crate::Command {
            cdb,
            data_out: data,
            expected_len: data.len() as u32,
            attr: crate::TaskAttr::Simple,
        };
        self.table.execute(n, 0, &cmd, &mut Vec::new())
    }

    /// The first command of a nexus meets its power-on unit attention.
    fn login(&self, i: u64) -> Nexus {
        let n = self.nexus(i);
        let o = self.run(&n, &[0; 6], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x29, 0)));
        n
    }

    fn prout(&self, n: &Nexus, sa: u8, rtype: u8, key: u64, sa_key: u64) -> Status {
        let mut p = key.to_be_bytes().to_vec();
        p.extend_from_slice(&sa_key.to_be_bytes());
        p.resize(24, 0);
        self.run(n, &[0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0], &p)
            .status
    }

    fn write(&self, n: &Nexus) -> Outcome {
        self.run(n, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512])
    }

    fn keys(&self, n: &Nexus) -> Vec<u64> {
        let mut buf = Vec::new();
        let cmd = crate::Command {
            cdb: &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0],
            data_out: &[],
            expected_len: 0,
            attr: crate::TaskAttr::Simple,
        };
        let o = self.table.execute(n, 0, &cmd, &mut buf);
        assert_eq!(o.status, Status::Good);
        buf[8..]
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// Register and reserve through gateway A; another initiator's WRITE
/// through gateway B conflicts, and still does from a restarted B.
#[test]
fn a_reservation_made_through_one_gateway_holds_at_the_other_and_after_restart() {
    let bus = Arc::new(Bus::default());
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let a1 = a.login(1);
    let b2 = b.login(2);
    assert_eq!(b.write(&b2).status, Status::Good);
    assert_eq!(a.prout(&a1, 0, 0, 0, 0xaa), Status::Good);
    assert_eq!(a.prout(&a1, 1, 1, 0xaa, 0), Status::Good, "WR_EX");
    assert_eq!(b.write(&b2).status, Status::ReservationConflict);
    assert_eq!(b.keys(&b2), vec![0xaa]);
    // The holder writes through its own gateway.
    assert_eq!(a.write(&a1).status, Status::Good);
    drop(b);
    bus.hooks.lock().unwrap().remove(&2);
    let b = Gw::new(&bus, 3);
    let b2 = b.login(2);
    assert_eq!(
        b.write(&b2).status,
        Status::ReservationConflict,
        "restarted"
    );
    // A release through A reaches B at once (the announcement).
    assert_eq!(a.prout(&a1, 2, 1, 0xaa, 0), Status::Good);
    assert_eq!(b.write(&b2).status, Status::Good);
}

/// Two gateways register in turn: neither change is lost (the second
/// store fails its compare-and-swap on a stale version and starts again
/// from the stored state), and the generation counts both.
#[test]
fn concurrent_changes_through_two_gateways_are_both_kept() {
    let bus = Arc::new(Bus::default());
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a1, b2) = (a.login(1), b.login(2));
    assert_eq!(a.prout(&a1, 0, 0, 0, 0xaa), Status::Good);
    *bus.lose.lock().unwrap() = 3;
    assert_eq!(b.prout(&b2, 0, 0, 0, 0xbb), Status::Good);
    let mut k = a.keys(&a1);
    k.sort();
    assert_eq!(k, vec![0xaa, 0xbb]);
    // A PREEMPT through B removes A's registration and tells A's nexus.
    assert_eq!(a.prout(&a1, 1, 3, 0xaa, 0), Status::Good, "EX_AC");
    assert_eq!(b.prout(&b2, 4, 3, 0xbb, 0xaa), Status::Good);
    let o = a.run(&a1, &[0; 6], &[]);
    assert_eq!(
        sense_of(&o),
        Some((6, 0x2a, 0x05)),
        "REGISTRATIONS PREEMPTED"
    );
    assert_eq!(
        a.run(&a1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]).status,
        Status::ReservationConflict
    );
    let d = {
        let mut buf = Vec::new();
        let cmd = crate::Command {
            cdb: &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0],
            data_out: &[],
            expected_len: 0,
            attr: crate::TaskAttr::Simple,
        };
        a.table.execute(&a1, 0, &cmd, &mut buf);
        buf
    };
    assert_eq!(
        u32::from_be_bytes(d[..4].try_into().unwrap()),
        3,
        "generation"
    );
    assert_eq!(&d[8..16], &0xbbu64.to_be_bytes());
}

/// SPC-2 RESERVE through A conflicts at B; the holder's nexus loss on A
/// releases it at B too; a reservation held through a gateway that died
/// is released by the next gateway that starts.
#[test]
fn spc2_reservations_are_shared_and_die_with_their_gateway() {
    let bus = Arc::new(Bus::default());
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a1, b2) = (a.login(1), b.login(2));
    assert_eq!(a.run(&a1, &[0x16, 0, 0, 0, 0, 0], &[]).status, Status::Good);
    assert_eq!(b.write(&b2).status, Status::ReservationConflict);
    assert_eq!(
        b.run(&b2, &[0x16, 0, 0, 0, 0, 0], &[]).status,
        Status::ReservationConflict
    );
    a.table.nexus_gone(&a1);
    assert_eq!(b.write(&b2).status, Status::Good);
    // Again; then gateway A dies with the reservation.
    let a1 = a.login(1);
    assert_eq!(a.run(&a1, &[0x16, 0, 0, 0, 0, 0], &[]).status, Status::Good);
    drop(a);
    bus.alive.lock().unwrap().retain(|&i| i != 1);
    bus.hooks.lock().unwrap().remove(&1);
    assert_eq!(b.write(&b2).status, Status::ReservationConflict);
    let c = Gw::new(&bus, 3);
    let c2 = c.login(2);
    assert_eq!(c.write(&c2).status, Status::Good);
    assert_eq!(b.write(&b2).status, Status::Good, "announced to B too");
}

#[test]
fn stored_form_round_trips_and_refuses_garbage() {
    let bus = Arc::new(Bus::default());
    let a = Gw::new(&bus, 1);
    let a1 = a.login(1);
    assert_eq!(a.prout(&a1, 0, 0, 0, 0xaa), Status::Good);
    assert_eq!(a.prout(&a1, 1, 5, 0xaa, 0), Status::Good);
    assert_eq!(
        a.run(&a1, &[0x16, 0, 0, 0, 0, 0], &[]).status,
        Status::ReservationConflict
    );
    let (_, blob) = bus.blob.lock().unwrap().clone().unwrap();
    let text = String::from_utf8(blob).unwrap();
    let st = parse(&text).unwrap();
    assert_eq!(st.pr.regs.len(), 1);
    assert_eq!(st.pr.regs[0].target, "iqn.2026-01.test:tgt,t,0x0001");
    assert_eq!(st.pr.reservation.as_ref().map(|r| r.rtype), Some(5));
    let inner = a.dev().state.res.lock();
    assert_eq!(render(&inner, &inner.shared.events), text);
    drop(inner);
    for bad in [
        "",
        "rtarget-pr-shared 2\n",
        &text.replace("reservation=1 5", "reservation=9 5"),
        &text.replace("reservation=1 5", "reservation=0 5"),
        &text.replace("reg=1", "reg=7"),
        &(text.clone() + "bogus=1\n"),
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

/// A LOGICAL UNIT RESET through A is the LU's: B's nexuses get the reset
/// unit attention too, and an SPC-2 reservation held through B is gone.
#[test]
fn a_reset_through_one_gateway_reaches_the_other() {
    let bus = Arc::new(Bus::default());
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a1, b2) = (a.login(1), b.login(2));
    assert_eq!(b.run(&b2, &[0x16, 0, 0, 0, 0, 0], &[]).status, Status::Good);
    assert_eq!(a.write(&a1).status, Status::ReservationConflict);
    let r = a
        .table
        .task_management(&a1, crate::TmfFunction::LogicalUnitReset, 0);
    assert_eq!(r, crate::TmfResult::Complete);
    let o = b.run(&b2, &[0; 6], &[]);
    assert_eq!(sense_of(&o), Some((6, 0x29, 0)), "B's nexus");
    let o = a.run(&a1, &[0; 6], &[]);
    assert_eq!(sense_of(&o), Some((6, 0x29, 0)), "A's own");
    assert_eq!(a.write(&a1).status, Status::Good, "SPC-2 released");
}

/// A gateway that missed an announcement (stopped while the sender waited,
/// then woken) does not admit a WRITE from its stale copy once the lease
/// passed: it reloads first and finds the reservation made meanwhile.
#[test]
fn a_gateway_that_missed_an_announcement_reloads_before_deciding() {
    let bus = Arc::new(Bus::default());
    *bus.lease.lock().unwrap() = Some(std::time::Duration::from_millis(30));
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a2, b1) = (a.login(2), b.login(1));
    assert_eq!(a.write(&a2).status, Status::Good);
    bus.deaf.lock().unwrap().push(1);
    assert_eq!(b.prout(&b1, 0, 0, 0, 0xaa), Status::Good);
    assert_eq!(b.prout(&b1, 1, 1, 0xaa, 0), Status::Good, "WR_EX");
    std::thread::sleep(std::time::Duration::from_millis(40));
    assert_eq!(a.write(&a2).status, Status::ReservationConflict);
    assert_eq!(a.keys(&a2), vec![0xaa]);
}

/// SAM-5 5.14: a pending unit attention is reported before the command
/// runs, so before its reservation conflict. A gateway that missed the
/// announcement of a PREEMPT learns of it while checking a command of the
/// preempted nexus (its reload raises REGISTRATIONS PREEMPTED): that
/// command reports the unit attention, the next one the conflict.
#[test]
fn a_preempted_nexus_meets_its_unit_attention_before_the_conflict() {
    let bus = Arc::new(Bus::default());
    // Every command reloads: no lease to wait out.
    *bus.lease.lock().unwrap() = Some(std::time::Duration::ZERO);
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a1, b2) = (a.login(1), b.login(2));
    assert_eq!(a.prout(&a1, 0, 0, 0, 0xaa), Status::Good);
    assert_eq!(b.prout(&b2, 0, 0, 0, 0xbb), Status::Good);
    assert_eq!(a.prout(&a1, 1, 3, 0xaa, 0), Status::Good, "EX_AC");
    bus.deaf.lock().unwrap().push(1);
    assert_eq!(b.prout(&b2, 4, 3, 0xbb, 0xaa), Status::Good, "PREEMPT");
    let o = a.write(&a1);
    assert_eq!(
        sense_of(&o),
        Some((6, 0x2a, 0x05)),
        "REGISTRATIONS PREEMPTED first, not {:?}",
        o.status
    );
    assert_eq!(a.write(&a1).status, Status::ReservationConflict);
}

/// A reservation taken through one gateway fences the other's streamed
/// writes (`ua::raised`, which `WriteStream::fenced` compares): its copy
/// moves when the announcement reloads it, so a write streaming there
/// runs its checks again before its next piece and meets the conflict.
#[test]
fn a_reservation_through_one_gateway_fences_streams_at_the_other() {
    let bus = Arc::new(Bus::default());
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a1, b2) = (a.login(1), b.login(2));
    let fence = || b.dev().state.ua.raised();
    let before = fence();
    assert_eq!(a.run(&a1, &[0x16, 0, 0, 0, 0, 0], &[]).status, Status::Good);
    assert_ne!(fence(), before, "SPC-2 RESERVE through A");
    assert_eq!(a.run(&a1, &[0x17, 0, 0, 0, 0, 0], &[]).status, Status::Good);
    assert_eq!(a.prout(&a1, 0, 0, 0, 0xaa), Status::Good);
    let before = fence();
    assert_eq!(a.prout(&a1, 1, 1, 0xaa, 0), Status::Good, "WR_EX");
    assert_ne!(fence(), before, "PERSISTENT RESERVE OUT RESERVE through A");
    let cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let refused = b.table.recheck_streamed_write(&b2, 0, &cdb, 512);
    assert_eq!(
        refused.map_err(|o| o.status),
        Err(Status::ReservationConflict),
        "the checks run again"
    );
}

/// A gateway that missed the announcement (stopped meanwhile) loads the
/// other's reservation on its next change instead: a RESERVE refused
/// there fences its streamed writes too.
#[test]
fn a_reservation_loaded_by_a_refused_change_fences_streams() {
    let bus = Arc::new(Bus::default());
    let (a, b) = (Gw::new(&bus, 1), Gw::new(&bus, 2));
    let (a1, b2) = (a.login(1), b.login(2));
    bus.deaf.lock().unwrap().push(2);
    let before = b.dev().state.ua.raised();
    assert_eq!(a.run(&a1, &[0x16, 0, 0, 0, 0, 0], &[]).status, Status::Good);
    assert_eq!(b.dev().state.ua.raised(), before, "B did not hear of it");
    let o = b.run(&b2, &[0x16, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        o.status,
        Status::ReservationConflict,
        "loaded by B's RESERVE"
    );
    assert_ne!(b.dev().state.ua.raised(), before, "B's streams are fenced");
}
