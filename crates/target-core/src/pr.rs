//! Persistent reservations (SPC-4 5.9, PERSISTENT RESERVE IN 6.15 and OUT
//! 6.16): registrations keyed by I_T nexus identity (initiator port name +
//! target port name, so they survive reconnects), the six reservation
//! types, and the access rules [`crate::reservation`] enforces. State lives
//! in memory only (APTPL is not offered: PTPL_C = 0).

use scsi::Asc;

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::reservation::Access;
use crate::{Nexus, Status};

const WR_EX: u8 = 1;
const EX_AC: u8 = 3;
const WR_EX_RO: u8 = 5;
const EX_AC_RO: u8 = 6;
const WR_EX_AR: u8 = 7;
const EX_AC_AR: u8 = 8;

/// Registrations kept per LU before INSUFFICIENT REGISTRATION RESOURCES.
const MAX_REGISTRATIONS: usize = 256;

fn valid_type(t: u8) -> bool {
    matches!(t, WR_EX | EX_AC | WR_EX_RO | EX_AC_RO | WR_EX_AR | EX_AC_AR)
}

fn all_registrants(t: u8) -> bool {
    matches!(t, WR_EX_AR | EX_AC_AR)
}

struct Registration {
    key: u64,
    initiator: String,
    target: String,
    /// The nexus this I_T pair last used, for unit attentions.
    nexus: u64,
    rel_port: u16,
}

impl Registration {
    fn is(&self, n: &Nexus) -> bool {
        self.initiator == n.initiator_port && self.target == n.target_port
    }
}

pub(crate) struct Reservation {
    /// `None` for the all-registrants types: every registrant holds it.
    holder: Option<(String, String)>,
    rtype: u8,
}

#[derive(Default)]
pub(crate) struct PrState {
    generation: u32,
    regs: Vec<Registration>,
    pub reservation: Option<Reservation>,
}

impl PrState {
    fn find(&self, n: &Nexus) -> Option<usize> {
        self.regs.iter().position(|r| r.is(n))
    }

    fn holds(&self, r: &Registration) -> bool {
        match &self.reservation {
            None => false,
            Some(res) => match &res.holder {
                None => true,
                Some((i, t)) => *i == r.initiator && *t == r.target,
            },
        }
    }

    fn is_holder(&self, n: &Nexus) -> bool {
        self.find(n).is_some_and(|i| self.holds(&self.regs[i]))
    }

    /// SPC-4 table 67 for a nexus that does not hold the reservation.
    pub(crate) fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        let Some(res) = &self.reservation else {
            return false;
        };
        if access == Access::Always || self.is_holder(n) {
            return false;
        }
        let registered = self.find(n).is_some();
        match res.rtype {
            WR_EX => access == Access::Write,
            WR_EX_RO | WR_EX_AR => access == Access::Write && !registered,
            EX_AC_RO | EX_AC_AR => !registered,
            _ => true,
        }
    }

    /// Remove the registrations `pred` selects, releasing a reservation
    /// whose holder goes away (the last registrant, for all-registrants).
    /// Returns the nexus ids removed.
    fn remove_where(&mut self, pred: impl Fn(&Registration) -> bool) -> Vec<u64> {
        let mut removed = Vec::new();
        let mut release = false;
        let mut i = 0;
        while i < self.regs.len() {
            if pred(&self.regs[i]) {
                let r = self.regs.remove(i);
                if self
                    .reservation
                    .as_ref()
                    .is_some_and(|res| res.holder.is_some())
                    && self.holds(&r)
                {
                    release = true;
                }
                removed.push(r.nexus);
            } else {
                i += 1;
            }
        }
        if release || (self.regs.is_empty() && self.reservation.is_some()) {
            self.reservation = None;
        }
        removed
    }

    fn other_registrants(&self, n: &Nexus) -> Vec<u64> {
        self.regs
            .iter()
            .filter(|r| !r.is(n))
            .map(|r| r.nexus)
            .collect()
    }

    /// SPC-2 RESERVE/RELEASE and reset handling do not touch PR state; an
    /// I_T nexus loss keeps registrations (they are persistent by design).
    fn touch(&mut self, n: &Nexus) {
        if let Some(i) = self.find(n) {
            self.regs[i].nexus = n.id;
            self.regs[i].rel_port = n.relative_port_id;
        }
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(crate) fn persistent_reserve_out(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let sa = cdb.b(1) & 0x1f;
    let scope = cdb.b(2) >> 4;
    let rtype = cdb.b(2) & 0x0f;
    if sa > 6 {
        // REGISTER AND MOVE and reserved service actions.
        return Err(CmdError::cdb_field(1));
    }
    let plen = cdb.be32(5) as usize;
    if plen != 24 {
        return Err(CmdError::ParameterListLength);
    }
    let p = ctx
        .data_out
        .get(..24)
        .ok_or(CmdError::ParameterListLength)?;
    let key = be64(&p[0..8]);
    let sa_key = be64(&p[8..16]);
    // SPEC_I_PT, ALL_TG_PT and APTPL are not supported (SIP_C/ATP_C/PTPL_C = 0).
    if p[20] & 0x0d != 0 || p[20] & 0x04 != 0 {
        return Err(CmdError::param(20));
    }
    let n = ctx.nexus;
    let dev = ctx.dev;
    let res = &dev.state.res;
    let mut inner = res.lock();
    let pr = &mut inner.pr;
    pr.touch(n);
    let mut uas: Vec<(u64, Asc)> = Vec::new();
    let me = pr.find(n);
    let result = match sa {
        0 | 6 => {
            let ignore = sa == 6;
            match me {
                None => {
                    if !ignore && key != 0 {
                        Err(CmdError::ReservationConflict)
                    } else if sa_key == 0 {
                        Ok(())
                    } else if pr.regs.len() >= MAX_REGISTRATIONS {
                        Err(CmdError::InsufficientRegistrationResources)
                    } else {
                        pr.regs.push(Registration {
                            key: sa_key,
                            initiator: n.initiator_port.clone(),
                            target: n.target_port.clone(),
                            nexus: n.id,
                            rel_port: n.relative_port_id,
                        });
                        pr.generation = pr.generation.wrapping_add(1);
                        Ok(())
                    }
                }
                Some(i) if !ignore && pr.regs[i].key != key => Err(CmdError::ReservationConflict),
                Some(i) => {
                    if sa_key == 0 {
                        let was_ro_holder = pr.holds(&pr.regs[i])
                            && pr
                                .reservation
                                .as_ref()
                                .is_some_and(|r| matches!(r.rtype, WR_EX_RO | EX_AC_RO));
                        pr.remove_where(|r| r.is(n));
                        if was_ro_holder {
                            for id in pr.other_registrants(n) {
                                uas.push((id, Asc::RESERVATIONS_RELEASED));
                            }
                        }
                    } else {
                        pr.regs[i].key = sa_key;
                    }
                    pr.generation = pr.generation.wrapping_add(1);
                    Ok(())
                }
            }
        }
        _ => {
            let Some(i) = me else {
                return Err(CmdError::ReservationConflict);
            };
            if pr.regs[i].key != key {
                return Err(CmdError::ReservationConflict);
            }
            match sa {
                1 => reserve(pr, n, scope, rtype),
                2 => release(pr, n, scope, rtype, &mut uas),
                3 => {
                    for id in pr.other_registrants(n) {
                        uas.push((id, Asc::RESERVATIONS_PREEMPTED));
                    }
                    pr.regs.clear();
                    pr.reservation = None;
                    pr.generation = pr.generation.wrapping_add(1);
                    Ok(())
                }
                _ => preempt(pr, n, scope, rtype, sa_key, &mut uas),
            }
        }
    };
    res.publish(&inner);
    drop(inner);
    for (id, asc) in uas {
        dev.state.ua.queue_for(id, asc);
    }
    result.map(|()| Status::Good)
}

fn check_scope_type(scope: u8, rtype: u8) -> Result<(), CmdError> {
    if scope != 0 || !valid_type(rtype) {
        return Err(CmdError::cdb_field(2));
    }
    Ok(())
}

fn reserve(pr: &mut PrState, n: &Nexus, scope: u8, rtype: u8) -> Result<(), CmdError> {
    check_scope_type(scope, rtype)?;
    match &pr.reservation {
        Some(r) if pr.is_holder(n) && r.rtype == rtype => Ok(()),
        Some(_) => Err(CmdError::ReservationConflict),
        None => {
            let holder = if all_registrants(rtype) {
                None
            } else {
                Some((n.initiator_port.clone(), n.target_port.clone()))
            };
            pr.reservation = Some(Reservation { holder, rtype });
            Ok(())
        }
    }
}

fn release(
    pr: &mut PrState,
    n: &Nexus,
    scope: u8,
    rtype: u8,
    uas: &mut Vec<(u64, Asc)>,
) -> Result<(), CmdError> {
    let Some(r) = &pr.reservation else {
        return Ok(());
    };
    if !pr.is_holder(n) {
        return Ok(());
    }
    if scope != 0 || r.rtype != rtype {
        return Err(CmdError::InvalidReleaseOfPr);
    }
    if !matches!(r.rtype, WR_EX | EX_AC) {
        for id in pr.other_registrants(n) {
            uas.push((id, Asc::RESERVATIONS_RELEASED));
        }
    }
    pr.reservation = None;
    Ok(())
}

/// PREEMPT / PREEMPT AND ABORT (SPC-4 5.9.11.4); the abort part is the
/// fabric's (it owns the task queues).
fn preempt(
    pr: &mut PrState,
    n: &Nexus,
    scope: u8,
    rtype: u8,
    sa_key: u64,
    uas: &mut Vec<(u64, Asc)>,
) -> Result<(), CmdError> {
    let current = pr.reservation.as_ref().map(|r| (r.rtype, r.holder.clone()));
    let new_res = |n: &Nexus| Reservation {
        holder: if all_registrants(rtype) {
            None
        } else {
            Some((n.initiator_port.clone(), n.target_port.clone()))
        },
        rtype,
    };
    match current {
        None => {
            if sa_key == 0 {
                return Err(CmdError::param(8));
            }
            let removed = pr.remove_where(|r| r.key == sa_key && !r.is(n));
            uas.extend(
                removed
                    .into_iter()
                    .map(|id| (id, Asc::REGISTRATIONS_PREEMPTED)),
            );
        }
        Some((t, _)) if all_registrants(t) => {
            if sa_key == 0 {
                check_scope_type(scope, rtype)?;
                let removed = pr.remove_where(|r| !r.is(n));
                uas.extend(
                    removed
                        .into_iter()
                        .map(|id| (id, Asc::REGISTRATIONS_PREEMPTED)),
                );
                pr.reservation = Some(new_res(n));
            } else {
                let removed = pr.remove_where(|r| r.key == sa_key && !r.is(n));
                uas.extend(
                    removed
                        .into_iter()
                        .map(|id| (id, Asc::REGISTRATIONS_PREEMPTED)),
                );
            }
        }
        Some((_, holder)) => {
            let holder_key = holder.and_then(|(i, t)| {
                pr.regs
                    .iter()
                    .find(|r| r.initiator == i && r.target == t)
                    .map(|r| r.key)
            });
            if Some(sa_key) == holder_key {
                check_scope_type(scope, rtype)?;
                let removed = pr.remove_where(|r| r.key == sa_key && !r.is(n));
                uas.extend(
                    removed
                        .into_iter()
                        .map(|id| (id, Asc::REGISTRATIONS_PREEMPTED)),
                );
                pr.reservation = Some(new_res(n));
            } else {
                if sa_key == 0 {
                    return Err(CmdError::param(8));
                }
                let removed = pr.remove_where(|r| r.key == sa_key && !r.is(n));
                uas.extend(
                    removed
                        .into_iter()
                        .map(|id| (id, Asc::REGISTRATIONS_PREEMPTED)),
                );
            }
        }
    }
    pr.generation = pr.generation.wrapping_add(1);
    Ok(())
}

pub(crate) fn persistent_reserve_in(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let sa = cdb.b(1) & 0x1f;
    let alloc = usize::from(cdb.be16(7));
    let mut inner = ctx.dev.state.res.lock();
    let pr = &mut inner.pr;
    pr.touch(ctx.nexus);
    data_in.extend_from_slice(&pr.generation.to_be_bytes());
    data_in.extend_from_slice(&[0; 4]);
    match sa {
        0 => {
            for r in &pr.regs {
                data_in.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        1 => {
            if let Some(res) = &pr.reservation {
                let key = match &res.holder {
                    None => 0,
                    Some((i, t)) => pr
                        .regs
                        .iter()
                        .find(|r| r.initiator == *i && r.target == *t)
                        .map_or(0, |r| r.key),
                };
                data_in.extend_from_slice(&key.to_be_bytes());
                data_in.extend_from_slice(&[0, 0, 0, 0, 0, res.rtype, 0, 0]);
            }
        }
        2 => {
            data_in.clear();
            // Length 8; CRH (RESERVE conflicts with a PR); TMV + ALLOW
            // COMMANDS 1; the six types.
            data_in.extend_from_slice(&[
                0,
                8,
                0x10,
                0x90,
                0x80 | 0x40 | 0x20 | 0x08 | 0x02,
                0x01,
                0,
                0,
            ]);
            return truncate_to(alloc, data_in);
        }
        3 => {
            for r in &pr.regs {
                let holder = pr.holds(r);
                data_in.extend_from_slice(&r.key.to_be_bytes());
                data_in.extend_from_slice(&[0; 4]);
                data_in.push(u8::from(holder));
                data_in.push(if holder {
                    pr.reservation.as_ref().map_or(0, |x| x.rtype)
                } else {
                    0
                });
                data_in.extend_from_slice(&[0; 4]);
                data_in.extend_from_slice(&r.rel_port.to_be_bytes());
                let mut tid: Vec<u8> = r.initiator.bytes().take(220).collect();
                tid.push(0);
                while !tid.len().is_multiple_of(4) {
                    tid.push(0);
                }
                let tid_len = 4 + tid.len();
                data_in.extend_from_slice(&(tid_len as u32).to_be_bytes());
                // iSCSI TransportID, format 01b: initiator port name with ISID.
                data_in.extend_from_slice(&[0x45, 0]);
                data_in.extend_from_slice(&(tid.len() as u16).to_be_bytes());
                data_in.extend_from_slice(&tid);
            }
        }
        _ => {
            data_in.clear();
            return Err(CmdError::cdb_field(1));
        }
    }
    let len = u32::try_from(data_in.len() - 8).unwrap_or(u32::MAX);
    data_in[4..8].copy_from_slice(&len.to_be_bytes());
    truncate_to(alloc, data_in)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Nexus, Status};

    fn prout(sa: u8, rtype: u8, key: u64, sa_key: u64) -> (Vec<u8>, Vec<u8>) {
        let cdb = vec![0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
        let mut p = key.to_be_bytes().to_vec();
        p.extend_from_slice(&sa_key.to_be_bytes());
        p.resize(24, 0);
        (cdb, p)
    }

    fn out(t: &Rig, n: &Nexus, sa: u8, rtype: u8, key: u64, sa_key: u64) -> crate::Outcome {
        let (c, p) = prout(sa, rtype, key, sa_key);
        t.run_as(n, &c, &p).0
    }

    fn prin(t: &Rig, n: &Nexus, sa: u8) -> Vec<u8> {
        let (o, d) = t.run_as(n, &[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "{:?}", sense_of(&o));
        d
    }

    fn two() -> (Rig, Nexus) {
        let t = Rig::new();
        let b = t.nexus(2);
        t.run_as(&b, &[0, 0, 0, 0, 0, 0], &[]);
        (t, b)
    }

    #[test]
    fn register_read_keys_and_unregister() {
        let (t, b) = two();
        let a = t.me.clone();
        assert_eq!(out(&t, &a, 0, 0, 0, 0xaa).status, Status::Good);
        assert_eq!(out(&t, &b, 6, 0, 0, 0xbb).status, Status::Good);
        let d = prin(&t, &a, 0);
        assert_eq!(&d[4..8], &16u32.to_be_bytes());
        assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
        assert_eq!(&d[16..24], &0xbbu64.to_be_bytes());
        let gen = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(gen, 2);
        assert_eq!(
            out(&t, &a, 0, 0, 0x11, 0).status,
            Status::ReservationConflict,
            "wrong key"
        );
        assert_eq!(out(&t, &a, 0, 0, 0xaa, 0).status, Status::Good);
        let d = prin(&t, &a, 0);
        assert_eq!(&d[4..8], &8u32.to_be_bytes());
    }

    #[test]
    fn write_exclusive_blocks_writes_of_others_only() {
        let (t, b) = two();
        let a = t.me.clone();
        out(&t, &a, 0, 0, 0, 0xaa);
        assert_eq!(out(&t, &a, 1, 1, 0xaa, 0).status, Status::Good);
        let d = prin(&t, &b, 1);
        assert_eq!(&d[4..8], &16u32.to_be_bytes());
        assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
        assert_eq!(d[21], 1);
        let (o, _) = t.run_as(&b, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
        assert_eq!(o.status, Status::Good);
        let (o, _) = t.run_as(&b, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
        assert_eq!(o.status, Status::ReservationConflict);
        let (o, _) = t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(
            out(&t, &a, 2, 3, 0xaa, 0).status,
            Status::CheckCondition,
            "wrong type"
        );
        assert_eq!(out(&t, &a, 2, 1, 0xaa, 0).status, Status::Good);
        let (o, _) = t.run_as(&b, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
        assert_eq!(o.status, Status::Good);
    }

    #[test]
    fn exclusive_access_registrants_only() {
        let (t, b) = two();
        let a = t.me.clone();
        let c = t.nexus(3);
        t.run_as(&c, &[0, 0, 0, 0, 0, 0], &[]);
        out(&t, &a, 0, 0, 0, 0xaa);
        out(&t, &b, 0, 0, 0, 0xbb);
        assert_eq!(out(&t, &a, 1, 6, 0xaa, 0).status, Status::Good);
        let (o, _) = t.run_as(&b, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
        assert_eq!(o.status, Status::Good, "registrant");
        let (o, _) = t.run_as(&c, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
        assert_eq!(o.status, Status::ReservationConflict, "not registered");
        let (o, _) = t.run_as(&c, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "TUR always allowed");
        assert_eq!(
            out(&t, &b, 1, 6, 0xbb, 0).status,
            Status::ReservationConflict
        );
    }

    #[test]
    fn all_registrants_reports_key_zero() {
        let (t, b) = two();
        let a = t.me.clone();
        out(&t, &a, 0, 0, 0, 0xaa);
        out(&t, &b, 0, 0, 0, 0xbb);
        assert_eq!(out(&t, &a, 1, 7, 0xaa, 0).status, Status::Good);
        let d = prin(&t, &b, 1);
        assert_eq!(&d[8..16], &0u64.to_be_bytes());
        assert_eq!(d[21], 7);
        // b is a registrant, hence a holder: it may release.
        assert_eq!(out(&t, &b, 2, 7, 0xbb, 0).status, Status::Good);
        let (o, _) = t.run(&[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x2a, 4)), "reservations released");
        let d = prin(&t, &a, 1);
        assert_eq!(&d[4..8], &0u32.to_be_bytes());
    }

    #[test]
    fn preempt_and_clear() {
        let (t, b) = two();
        let a = t.me.clone();
        out(&t, &a, 0, 0, 0, 0xaa);
        out(&t, &b, 0, 0, 0, 0xbb);
        out(&t, &b, 1, 3, 0xbb, 0);
        assert_eq!(out(&t, &a, 4, 1, 0xaa, 0xbb).status, Status::Good);
        let d = prin(&t, &a, 1);
        assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
        assert_eq!(d[21], 1);
        let (o, _) = t.run_as(&b, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x2a, 5)), "registrations preempted");
        let d = prin(&t, &a, 0);
        assert_eq!(&d[4..8], &8u32.to_be_bytes());
        out(&t, &b, 0, 0, 0, 0xbb);
        assert_eq!(out(&t, &b, 3, 0, 0xbb, 0).status, Status::Good);
        let (o, _) = t.run(&[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x2a, 3)), "reservations preempted");
        let d = prin(&t, &a, 0);
        assert_eq!(&d[4..8], &0u32.to_be_bytes());
    }

    #[test]
    fn prin_capabilities_and_bad_actions() {
        let t = Rig::new();
        let d = prin(&t, &t.me, 2);
        assert_eq!(d.len(), 8);
        assert_eq!(&d[..2], &[0, 8]);
        for sa in 4..0x20u8 {
            let (o, _) = t.run(&[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
            assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "sa {sa}");
        }
        let (c, p) = prout(0, 0, 0, 1);
        let mut c2 = c.clone();
        c2[8] = 20;
        assert_eq!(sense_of(&t.run(&c2, &p).0), Some((5, 0x1a, 0)));
        let mut p2 = p.clone();
        p2[20] = 0x01;
        assert_eq!(sense_of(&t.run(&c, &p2).0), Some((5, 0x26, 0)), "APTPL");
    }

    #[test]
    fn read_full_status_describes_registrants() {
        let t = Rig::new();
        out(&t, &t.me, 0, 0, 0, 0xaa);
        out(&t, &t.me, 1, 1, 0xaa, 0);
        let d = prin(&t, &t.me, 3);
        assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
        assert_eq!(d[20], 1, "R_HOLDER");
        assert_eq!(d[21], 1);
        let add = u32::from_be_bytes([d[28], d[29], d[30], d[31]]) as usize;
        assert_eq!(d.len(), 32 + add);
        assert_eq!(d[32], 0x45);
    }

    #[test]
    fn spc2_reserve_conflicts_with_pr() {
        let t = Rig::new();
        out(&t, &t.me, 0, 0, 0, 0xaa);
        out(&t, &t.me, 1, 1, 0xaa, 0);
        let (o, _) = t.run(&[0x16, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::ReservationConflict);
    }
}
