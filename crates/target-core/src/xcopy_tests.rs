//! EXTENDED COPY between two LUs of one LUN table, under the access rules of
//! the LUs it reads and writes: two initiators, reservations (persistent
//! WRITE EXCLUSIVE and EXCLUSIVE ACCESS, SPC-2 RESERVE), ALUA, write
//! protection, an ejected medium and a running sanitize. In every case the
//! copy must get what the same nexus's direct READ / WRITE gets.

use backstore::Backstore;

use crate::inquiry::naa6;
use crate::testutil::*;
use crate::{Command, Device, DeviceOptions, Lun, LunTable, Nexus, Outcome, Status, TaskAttr};

const WWN1: &str = "0b5e7a11-2222-4333-8444-555566667777";
const TUR: [u8; 6] = [0; 6];
/// Bytes of the four blocks every copy here moves.
const LEN: usize = 4 * 512;

/// LU 0 and LU 1 (two devices) in one table; `a` (the rigs' own nexus)
/// and `b` past their power-on UAs on both.
struct Two {
    lu0: Rig,
    lu1: Rig,
    table: LunTable,
    a: Nexus,
    b: Nexus,
}

impl Two {
    fn new() -> Two {
        Two::with(DeviceOptions::new("disk1", WWN1), false)
    }

    fn with(opts: DeviceOptions, lu1_write_protect: bool) -> Two {
        let lu0 = Rig::new();
        let lu1 = Rig::with_options(opts);
        let table = LunTable {
            luns: vec![
                Lun {
                    id: 0,
                    device: lu0.dev.clone(),
                    write_protect: false,
                },
                Lun {
                    id: 1,
                    device: lu1.dev.clone(),
                    write_protect: lu1_write_protect,
                },
            ],
        };
        let (a, b) = (lu0.me.clone(), lu0.nexus(2));
        let t = Two {
            lu0,
            lu1,
            table,
            a,
            b,
        };
        for lun in [0, 1] {
            let o = t.exec(&t.b, lun, &TUR, &[]);
            assert_eq!(sense_of(&o), Some((6, 0x29, 0)), "power-on UA of b");
            assert_eq!(t.exec(&t.a, lun, &TUR, &[]).status, Status::Good);
        }
        // Recognisable contents, written to the stores themselves (LU 1
        // may be read-only): 0x11 on LU 0, 0x22 on LU 1.
        t.lu0.store.write_at(&[0x11; LEN], 0).expect("store");
        t.lu1.store.write_at(&[0x22; LEN], 0).expect("store");
        t
    }

    fn exec(&self, n: &Nexus, lun: u64, cdb: &[u8], data_out: &[u8]) -> Outcome {
        let cmd = Command {
            cdb,
            data_out,
            expected_len: data_out.len().max(LEN) as u32,
            attr: TaskAttr::Simple,
        };
        self.table.execute(n, lun, &cmd, &mut Vec::new())
    }

    /// EXTENDED COPY sent to LUN `to`: 4 blocks from LBA 0 of the `src`
    /// device to LBA 0 of the `dst` device.
    fn copy(&self, n: &Nexus, to: u64, src: &Device, dst: &Device) -> Outcome {
        let p = xcopy_params(src, dst);
        let mut cdb = vec![0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb.extend_from_slice(&(p.len() as u32).to_be_bytes());
        cdb.extend_from_slice(&[0, 0]);
        self.exec(n, to, &cdb, &p)
    }

    /// A copies LU 0 into LU 1 with XCOPY sent to LU 0.
    fn push(&self) -> Outcome {
        self.copy(&self.a, 0, &self.lu0.dev, &self.lu1.dev)
    }

    /// A copies LU 1 into LU 0 with XCOPY sent to LU 0.
    fn pull(&self) -> Outcome {
        self.copy(&self.a, 0, &self.lu1.dev, &self.lu0.dev)
    }

    fn lu0_bytes(&self) -> Vec<u8> {
        self.lu0.store.bytes(0, LEN)
    }

    fn lu1_bytes(&self) -> Vec<u8> {
        self.lu1.store.bytes(0, LEN)
    }
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    vec![0x2a, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = write10(lba, blocks);
    c[0] = 0x28;
    c
}

/// Identification CSCD descriptor naming `dev` by its NAA designator.
fn cscd(dev: &Device) -> Vec<u8> {
    let mut d = vec![0xe4, 0, 0, 0, 0x01, 0x03, 0, 16];
    d.extend_from_slice(&naa6(dev));
    d.resize(28, 0);
    d.extend_from_slice(&[0, 0, 2, 0]);
    d
}

/// One block-to-block segment: 4 blocks, CSCD 0 LBA 0 to CSCD 1 LBA 0.
fn xcopy_params(src: &Device, dst: &Device) -> Vec<u8> {
    let mut seg = vec![0x02, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0, 4];
    seg.extend_from_slice(&0u64.to_be_bytes());
    seg.extend_from_slice(&0u64.to_be_bytes());
    let mut p = vec![0x01, 0x18, 0, 64, 0, 0, 0, 0];
    p.extend_from_slice(&(seg.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&cscd(src));
    p.extend_from_slice(&cscd(dst));
    p.extend_from_slice(&seg);
    p
}

/// PERSISTENT RESERVE OUT from `n` on LUN `lun`.
fn prout(t: &Two, n: &Nexus, lun: u64, sa: u8, rtype: u8, key: u64, sa_key: u64) -> Outcome {
    let cdb = [0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&sa_key.to_be_bytes());
    p.resize(24, 0);
    t.exec(n, lun, &cdb, &p)
}

/// B registers on LU 1 and takes a reservation of `rtype` there.
fn b_reserves_lu1(t: &Two, rtype: u8) {
    assert_eq!(prout(t, &t.b, 1, 0, 0, 0, 0xbb).status, Status::Good);
    assert_eq!(prout(t, &t.b, 1, 1, rtype, 0xbb, 0).status, Status::Good);
}

#[test]
fn both_directions_copy_while_nothing_restricts_them() {
    let t = Two::new();
    assert_eq!(t.push().status, Status::Good, "{:?}", sense_of(&t.push()));
    assert_eq!(t.lu1_bytes(), vec![0x11; LEN]);
    t.exec(&t.a, 1, &write10(0, 4), &[0x33; LEN]);
    assert_eq!(t.pull().status, Status::Good);
    assert_eq!(t.lu0_bytes(), vec![0x33; LEN]);
}

/// B holds WRITE EXCLUSIVE on LU 1: A may not write it, directly or by a
/// copy sent to LU 0; reading it (into LU 0) stays allowed, and B, the
/// holder, may copy into it.
#[test]
fn write_exclusive_on_the_destination_refuses_the_copy() {
    let t = Two::new();
    b_reserves_lu1(&t, 1);
    let o = t.exec(&t.a, 1, &write10(0, 4), &[0x44; LEN]);
    assert_eq!(o.status, Status::ReservationConflict, "direct WRITE");
    let o = t.push();
    assert_eq!(o.status, Status::ReservationConflict, "{:?}", sense_of(&o));
    assert_eq!(t.lu1_bytes(), vec![0x22; LEN], "LU 1 unchanged");
    let o = t.exec(&t.a, 1, &read10(0, 4), &[]);
    assert_eq!(o.status, Status::Good, "direct READ allowed under WE");
    assert_eq!(t.pull().status, Status::Good, "copy out of LU 1 allowed");
    assert_eq!(t.lu0_bytes(), vec![0x22; LEN]);
    t.exec(&t.a, 0, &write10(0, 4), &[0x55; LEN]);
    let o = t.copy(&t.b, 0, &t.lu0.dev, &t.lu1.dev);
    assert_eq!(o.status, Status::Good, "the holder copies in");
    assert_eq!(t.lu1_bytes(), vec![0x55; LEN]);
}

/// B holds EXCLUSIVE ACCESS on LU 1: A may not read it either, so a copy
/// out of it into LU 0 is refused and LU 0 keeps its data.
#[test]
fn exclusive_access_on_the_source_refuses_the_copy() {
    let t = Two::new();
    b_reserves_lu1(&t, 3);
    let o = t.exec(&t.a, 1, &read10(0, 4), &[]);
    assert_eq!(o.status, Status::ReservationConflict, "direct READ");
    let o = t.pull();
    assert_eq!(o.status, Status::ReservationConflict, "{:?}", sense_of(&o));
    assert_eq!(t.lu0_bytes(), vec![0x11; LEN], "nothing read out of LU 1");
    assert_eq!(t.push().status, Status::ReservationConflict);
    assert_eq!(t.lu1_bytes(), vec![0x22; LEN]);
    // Released: both directions work again.
    assert_eq!(prout(&t, &t.b, 1, 2, 3, 0xbb, 0).status, Status::Good);
    assert_eq!(t.pull().status, Status::Good);
    assert_eq!(t.lu0_bytes(), vec![0x22; LEN]);
}

/// An SPC-2 RESERVE of LU 1 by B shuts A out of it in both directions.
#[test]
fn spc2_reserve_of_either_lu_refuses_the_copy() {
    let t = Two::new();
    assert_eq!(
        t.exec(&t.b, 1, &[0x16, 0, 0, 0, 0, 0], &[]).status,
        Status::Good
    );
    let o = t.exec(&t.a, 1, &read10(0, 4), &[]);
    assert_eq!(o.status, Status::ReservationConflict, "direct READ");
    assert_eq!(t.push().status, Status::ReservationConflict);
    assert_eq!(t.pull().status, Status::ReservationConflict);
    assert_eq!(t.lu0_bytes(), vec![0x11; LEN]);
    assert_eq!(t.lu1_bytes(), vec![0x22; LEN]);
    assert_eq!(
        t.exec(&t.b, 1, &[0x17, 0, 0, 0, 0, 0], &[]).status,
        Status::Good
    );
    assert_eq!(t.push().status, Status::Good);
    assert_eq!(t.lu1_bytes(), vec![0x11; LEN]);
}

/// LU 1 is in standby on A's port: a copy into or out of it gets what a
/// WRITE or READ there gets, NOT READY, LOGICAL UNIT NOT ACCESSIBLE,
/// TARGET PORT IN STANDBY STATE.
#[test]
fn alua_standby_lu_refuses_the_copy() {
    use crate::alua::{AccessState, AluaGroup, DEFAULT_GROUP};
    let t = Two::new();
    let mut g = AluaGroup::new(DEFAULT_GROUP, 0);
    g.state = AccessState::Standby;
    t.lu1.dev.alua_configure(&[g], &[]);
    let o = t.exec(&t.a, 1, &TUR, &[]);
    assert_eq!(sense_of(&o), Some((6, 0x2a, 0x06)), "state change UA");
    let o = t.exec(&t.a, 1, &write10(0, 4), &[0x44; LEN]);
    assert_eq!(sense_of(&o), Some((2, 0x04, 0x0b)), "direct WRITE");
    assert_eq!(sense_of(&t.push()), Some((2, 0x04, 0x0b)));
    assert_eq!(t.lu1_bytes(), vec![0x22; LEN]);
    assert_eq!(sense_of(&t.pull()), Some((2, 0x04, 0x0b)));
    assert_eq!(t.lu0_bytes(), vec![0x11; LEN]);
}

/// A read-only destination, by its mapping or by the device itself,
/// refuses the copy with DATA PROTECT, WRITE PROTECTED; reading from it
/// still works.
#[test]
fn write_protected_destination_refuses_the_copy() {
    let mut ro = DeviceOptions::new("disk1", WWN1);
    ro.read_only = true;
    for (t, what) in [
        (
            Two::with(DeviceOptions::new("disk1", WWN1), true),
            "mapping",
        ),
        (Two::with(ro, false), "device"),
    ] {
        let o = t.exec(&t.a, 1, &write10(0, 4), &[0x44; LEN]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "{what}: direct WRITE");
        assert_eq!(sense_of(&t.push()), Some((7, 0x27, 0)), "{what}");
        assert_eq!(t.lu1_bytes(), vec![0x22; LEN], "{what}: LU 1 unchanged");
        assert_eq!(t.pull().status, Status::Good, "{what}: copy out");
        assert_eq!(t.lu0_bytes(), vec![0x22; LEN], "{what}");
    }
}

/// A removable LU 1 with its medium ejected: NOT READY, MEDIUM NOT
/// PRESENT both ways.
#[test]
fn ejected_medium_refuses_the_copy() {
    let t = Two::new();
    t.lu1.dev.set_removable(true);
    assert_eq!(
        t.exec(&t.a, 1, &[0x1b, 0, 0, 0, 0x02, 0], &[]).status,
        Status::Good
    );
    let o = t.exec(&t.a, 1, &read10(0, 4), &[]);
    assert_eq!(sense_of(&o), Some((2, 0x3a, 0)), "direct READ");
    assert_eq!(sense_of(&t.pull()), Some((2, 0x3a, 0)));
    assert_eq!(sense_of(&t.push()), Some((2, 0x3a, 0)));
    assert_eq!(t.lu0_bytes(), vec![0x11; LEN]);
}

/// While LU 1 is being sanitized nothing may read it, a copy included.
#[test]
fn sanitize_in_progress_refuses_the_copy() {
    let t = Two::new();
    t.lu1.store.stall();
    // SANITIZE OVERWRITE, IMMED: runs in the background, held by the stall.
    let sanitize = [0x48, 0x81, 0, 0, 0, 0, 0, 0, 8, 0];
    let o = t.exec(&t.a, 1, &sanitize, &[0x01, 0, 0, 4, 9, 9, 9, 9]);
    assert_eq!(o.status, Status::Good);
    let o = t.exec(&t.a, 1, &read10(0, 4), &[]);
    assert_eq!(sense_of(&o), Some((2, 0x04, 0x1b)), "direct READ");
    assert_eq!(sense_of(&t.pull()), Some((2, 0x04, 0x1b)));
    assert_eq!(t.lu0_bytes(), vec![0x11; LEN], "nothing read out of LU 1");
    t.lu1.store.unstall();
}
