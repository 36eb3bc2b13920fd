//! PERSISTENT RESERVE OUT (SPC-4 6.16): REGISTER (with SPEC_I_PT and
//! ALL_TG_PT), REGISTER AND IGNORE EXISTING KEY, RESERVE, RELEASE, CLEAR,
//! PREEMPT, PREEMPT AND ABORT and REGISTER AND MOVE, the unit attentions
//! they raise, and APTPL: after every change, while APTPL is active, the
//! state is written to the device's state file before GOOD is returned.

use scsi::Asc;

use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::pr::{all_registrants, initiator_matches, valid_type, PrState, Reservation};
use crate::pr::{EX_AC_RO, MAX_REGISTRATIONS, WR_EX_RO};
use crate::{Nexus, Status};

const SA_REGISTER: u8 = 0;
const SA_RESERVE: u8 = 1;
const SA_RELEASE: u8 = 2;
const SA_CLEAR: u8 = 3;
const SA_PREEMPT: u8 = 4;
const SA_PREEMPT_AND_ABORT: u8 = 5;
const SA_REGISTER_AND_IGNORE: u8 = 6;
const SA_REGISTER_AND_MOVE: u8 = 7;

use crate::proto::{PROTO_ISCSI, PROTO_SAS};

type Uas = Vec<(u64, Asc)>;

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// One PERSISTENT RESERVE OUT as the service actions see it.
#[derive(Clone, Copy)]
struct Prout<'a> {
    n: &'a Nexus,
    sa: u8,
    scope: u8,
    rtype: u8,
    /// RESERVATION KEY.
    key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    sa_key: u64,
    /// The whole parameter list (at least 24 bytes).
    p: &'a [u8],
}

pub(crate) fn persistent_reserve_out(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let sa = cdb.b(1) & 0x1f;
    let scope = cdb.b(2) >> 4;
    let rtype = cdb.b(2) & 0x0f;
    if sa > SA_REGISTER_AND_MOVE {
        return Err(CmdError::cdb_field(1));
    }
    let plen = cdb.be32(5) as usize;
    if plen < 24 {
        return Err(CmdError::ParameterListLength);
    }
    let p = ctx
        .data_out
        .get(..plen)
        .ok_or(CmdError::ParameterListLength)?;
    let key = be64(&p[0..8]);
    let sa_key = be64(&p[8..16]);
    let n = ctx.nexus;
    let dev = ctx.dev;
    let req = Prout {
        n,
        sa,
        scope,
        rtype,
        key,
        sa_key,
        p,
    };
    // Once, or again after another target sharing the LU changed the
    // reservations first (`pr_shared`). The unit attentions raised here
    // are queued before the change can refuse any command.
    let result = crate::pr_shared::update(dev, |inner, raised| {
        let pr = &mut inner.pr;
        pr.touch(n);
        // Restored if the APTPL state cannot be written: no half-done change.
        let before = pr.clone();
        let uas = &mut raised.here;
        uas.clear();
        let result = match sa {
            SA_REGISTER | SA_REGISTER_AND_IGNORE => register(pr, &req, uas),
            SA_REGISTER_AND_MOVE => register_and_move(pr, &req),
            _ => holder_action(pr, &req, uas),
        };
        result?;
        if let Err(e) = crate::pr_file::sync(pr) {
            tracing::error!("persistent reservation state not saved: {e}");
            *pr = before;
            uas.clear();
            return Err(CmdError::InsufficientRegistrationResources);
        }
        crate::pr_shared::events_of(&before, pr, n, sa, &mut raised.events);
        Ok(((), crate::pr_shared::pr_changed(&before, pr)))
    });
    result.map(|()| Status::Good)
}

/// RESERVE, RELEASE, CLEAR, PREEMPT (AND ABORT): the issuer must be
/// registered with the key it names.
fn holder_action(pr: &mut PrState, req: &Prout<'_>, uas: &mut Uas) -> Result<(), CmdError> {
    let Prout {
        n,
        sa,
        scope,
        rtype,
        key,
        sa_key,
        p,
    } = *req;
    if p.len() != 24 {
        return Err(CmdError::ParameterListLength);
    }
    // SPEC_I_PT only goes with REGISTER; ALL_TG_PT and APTPL are ignored
    // by the other service actions (SPC-4 6.16.3).
    if p[20] & 0x08 != 0 {
        return Err(CmdError::param(20));
    }
    let Some(i) = pr.find(n) else {
        return Err(CmdError::ReservationConflict);
    };
    if pr.regs[i].key != key {
        return Err(CmdError::ReservationConflict);
    }
    match sa {
        SA_RESERVE => reserve(pr, i, scope, rtype),
        SA_RELEASE => release(pr, n, scope, rtype, uas),
        SA_CLEAR => {
            for id in pr.other_registrants(n) {
                uas.push((id, Asc::RESERVATIONS_PREEMPTED));
            }
            pr.regs.clear();
            pr.reservation = None;
            pr.bump();
            Ok(())
        }
        SA_PREEMPT | SA_PREEMPT_AND_ABORT => preempt(pr, i, scope, rtype, sa_key, uas),
        _ => Err(CmdError::cdb_field(1)),
    }
}

/// One iSCSI or SAS TransportID at the start of `b`: the initiator
/// identity it names (a SAS address as the `naa.` name its fabric gives
/// the nexus) and its length in bytes.
fn parse_transport_id(b: &[u8], at: u16) -> Result<(String, usize), CmdError> {
    if b.len() < 4 {
        return Err(CmdError::ParameterListLength);
    }
    if b[0] & 0x0f == PROTO_SAS {
        // SPC-4 7.6.4.7: 24 bytes, format 00b, the address in bytes 4..12.
        if b[0] >> 6 != 0 {
            return Err(CmdError::param(at));
        }
        let a = b.get(4..12).ok_or(CmdError::ParameterListLength)?;
        if b.len() < 24 {
            return Err(CmdError::ParameterListLength);
        }
        return Ok((crate::proto::sas_name(a), 24));
    }
    if b[0] & 0x0f != PROTO_ISCSI {
        return Err(CmdError::param(at));
    }
    let format = b[0] >> 6;
    let len = 4 + usize::from(u16::from_be_bytes([b[2], b[3]]));
    let body = b.get(4..len).ok_or(CmdError::ParameterListLength)?;
    let name_len = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    let name = std::str::from_utf8(&body[..name_len]).map_err(|_| CmdError::param(at + 4))?;
    let valid = !name.is_empty()
        && name.bytes().all(|c| c.is_ascii_graphic())
        && match format {
            0 => !name.contains(",i,"),
            1 => name
                .split_once(",i,0x")
                .or_else(|| name.split_once(",i,0X"))
                .is_some_and(|(n, isid)| {
                    !n.is_empty() && !isid.is_empty() && isid.bytes().all(|c| c.is_ascii_hexdigit())
                }),
            _ => false,
        };
    if !valid {
        return Err(CmdError::param(at));
    }
    Ok((name.to_string(), len))
}

/// The TransportIDs of a REGISTER with SPEC_I_PT (bytes 24.. of the
/// parameter list).
fn spec_i_pt_list(p: &[u8]) -> Result<Vec<String>, CmdError> {
    let head = p.get(24..28).ok_or(CmdError::ParameterListLength)?;
    let total = be32(head);
    if p.len() != 28 + total {
        return Err(CmdError::ParameterListLength);
    }
    let mut out = Vec::new();
    let mut at = 28;
    while at < p.len() {
        let (name, len) = parse_transport_id(&p[at..], at as u16)?;
        out.push(name);
        at += len;
    }
    Ok(out)
}

/// REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 5.9.7).
fn register(pr: &mut PrState, req: &Prout<'_>, uas: &mut Uas) -> Result<(), CmdError> {
    let Prout {
        n,
        sa,
        key,
        sa_key,
        p,
        ..
    } = *req;
    let ignore = sa == SA_REGISTER_AND_IGNORE;
    let flags = p[20];
    let spec_i_pt = flags & 0x08 != 0;
    let all_tg_pt = flags & 0x04 != 0;
    let aptpl = flags & 0x01 != 0;
    if spec_i_pt && ignore {
        return Err(CmdError::param(20));
    }
    let tids = if spec_i_pt {
        spec_i_pt_list(p)?
    } else if p.len() != 24 {
        return Err(CmdError::ParameterListLength);
    } else {
        Vec::new()
    };
    let Some(i) = pr.find(n) else {
        if !ignore && key != 0 {
            return Err(CmdError::ReservationConflict);
        }
        if sa_key == 0 {
            return Ok(());
        }
        // Every named port must be new (and named once) before any change.
        let mut new: Vec<&String> = Vec::new();
        for (k, t) in tids.iter().enumerate() {
            if initiator_matches(t, &n.initiator_port) {
                continue; // the issuer itself: registered below anyway
            }
            let taken = pr.regs.iter().any(|r| {
                (initiator_matches(&r.initiator, t) || initiator_matches(t, &r.initiator))
                    && (r.all_tg_pt || all_tg_pt || r.target == n.target_port)
            });
            if taken || new.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                return Err(CmdError::param(28 + k as u16));
            }
            new.push(t);
        }
        if pr.regs.len() + 1 + new.len() > MAX_REGISTRATIONS {
            return Err(CmdError::InsufficientRegistrationResources);
        }
        let target = n.target_port.clone();
        let rel = n.relative_port_id;
        pr.add(
            sa_key,
            n.initiator_port.clone(),
            target.clone(),
            all_tg_pt,
            rel,
        );
        for t in new {
            pr.add(sa_key, t.clone(), target.clone(), all_tg_pt, rel);
        }
        pr.aptpl = aptpl;
        pr.bump();
        return Ok(());
    };
    if spec_i_pt {
        // SPEC_I_PT only registers an unregistered nexus (SPC-4 6.16.3).
        return Err(CmdError::param(20));
    }
    if !ignore && pr.regs[i].key != key {
        return Err(CmdError::ReservationConflict);
    }
    if sa_key == 0 {
        let was_ro_holder = pr.holds(&pr.regs[i])
            && pr
                .reservation
                .as_ref()
                .is_some_and(|r| matches!(r.rtype, WR_EX_RO | EX_AC_RO));
        let others = pr.other_registrants(n);
        let id = pr.regs[i].id;
        pr.remove_where(|r| r.id == id);
        if was_ro_holder {
            uas.extend(others.into_iter().map(|o| (o, Asc::RESERVATIONS_RELEASED)));
        }
    } else {
        pr.regs[i].key = sa_key;
    }
    pr.aptpl = aptpl;
    pr.bump();
    Ok(())
}

/// REGISTER AND MOVE (SPC-4 5.9.8): the holder registers another I_T
/// nexus (TransportID + relative target port) and hands it the
/// reservation, optionally unregistering itself.
fn register_and_move(pr: &mut PrState, req: &Prout<'_>) -> Result<(), CmdError> {
    let Prout {
        n,
        scope,
        rtype,
        key,
        sa_key,
        p,
        ..
    } = *req;
    let unreg = p[17] & 0x02 != 0;
    let aptpl = p[17] & 0x01 != 0;
    let rel = u16::from_be_bytes([p[18], p[19]]);
    let tlen = be32(&p[20..24]);
    if p.len() != 24 + tlen {
        return Err(CmdError::ParameterListLength);
    }
    let Some(i) = pr.find(n) else {
        return Err(CmdError::ReservationConflict);
    };
    if pr.regs[i].key != key {
        return Err(CmdError::ReservationConflict);
    }
    let src_id = pr.regs[i].id;
    // Only the holder of a single-holder reservation can move it.
    match &pr.reservation {
        Some(r) if r.holder == Some(src_id) => {}
        _ => return Err(CmdError::ReservationConflict),
    }
    if sa_key == 0 {
        return Err(CmdError::param(8));
    }
    if scope != 0 || !valid_type(rtype) || all_registrants(rtype) {
        return Err(CmdError::cdb_field(2));
    }
    let (initiator, len) = parse_transport_id(&p[24..], 24)?;
    if len != tlen {
        return Err(CmdError::ParameterListLength);
    }
    // The destination target port: the core knows a port's name only from
    // a nexus or registration that used it.
    let target = if rel == n.relative_port_id {
        n.target_port.clone()
    } else {
        pr.regs
            .iter()
            .find(|r| !r.all_tg_pt && r.rel_port == rel)
            .map(|r| r.target.clone())
            .ok_or(CmdError::param(18))?
    };
    if initiator_matches(&initiator, &n.initiator_port) && target == n.target_port {
        return Err(CmdError::param(24));
    }
    let existing = pr.regs.iter().position(|r| {
        initiator_matches(&r.initiator, &initiator) && (r.all_tg_pt || r.target == target)
    });
    let dest = match existing {
        Some(d) => {
            pr.regs[d].key = sa_key;
            pr.regs[d].id
        }
        None => {
            if pr.regs.len() >= MAX_REGISTRATIONS {
                return Err(CmdError::InsufficientRegistrationResources);
            }
            pr.add(sa_key, initiator, target, false, rel)
        }
    };
    pr.reservation = Some(Reservation {
        holder: Some(dest),
        rtype,
    });
    if unreg {
        pr.regs.retain(|r| r.id != src_id);
    }
    pr.aptpl = aptpl;
    pr.bump();
    Ok(())
}

fn check_scope_type(scope: u8, rtype: u8) -> Result<(), CmdError> {
    if scope != 0 || !valid_type(rtype) {
        return Err(CmdError::cdb_field(2));
    }
    Ok(())
}

fn reserve(pr: &mut PrState, i: usize, scope: u8, rtype: u8) -> Result<(), CmdError> {
    check_scope_type(scope, rtype)?;
    let me = &pr.regs[i];
    match &pr.reservation {
        Some(r) if pr.holds(me) && r.rtype == rtype => Ok(()),
        Some(_) => Err(CmdError::ReservationConflict),
        None => {
            let holder = (!all_registrants(rtype)).then_some(me.id);
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
    uas: &mut Uas,
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
    if !matches!(r.rtype, crate::pr::WR_EX | crate::pr::EX_AC) {
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
    i: usize,
    scope: u8,
    rtype: u8,
    sa_key: u64,
    uas: &mut Uas,
) -> Result<(), CmdError> {
    let me = pr.regs[i].id;
    let mut drop_key = |pr: &mut PrState, pred: &dyn Fn(&crate::pr::Registration) -> bool| {
        let removed = pr.remove_where(|r| r.id != me && pred(r));
        uas.extend(
            removed
                .into_iter()
                .map(|id| (id, Asc::REGISTRATIONS_PREEMPTED)),
        );
    };
    let current = pr.reservation.as_ref().map(|r| r.rtype);
    let new_res = Reservation {
        holder: (!all_registrants(rtype)).then_some(me),
        rtype,
    };
    match current {
        None => {
            if sa_key == 0 {
                return Err(CmdError::param(8));
            }
            drop_key(pr, &|r| r.key == sa_key);
        }
        Some(t) if all_registrants(t) => {
            if sa_key == 0 {
                check_scope_type(scope, rtype)?;
                drop_key(pr, &|_| true);
                pr.reservation = Some(new_res);
            } else {
                drop_key(pr, &|r| r.key == sa_key);
            }
        }
        Some(_) => {
            if Some(sa_key) == pr.holder_key() {
                check_scope_type(scope, rtype)?;
                drop_key(pr, &|r| r.key == sa_key);
                pr.reservation = Some(new_res);
            } else {
                if sa_key == 0 {
                    return Err(CmdError::param(8));
                }
                drop_key(pr, &|r| r.key == sa_key);
            }
        }
    }
    pr.bump();
    Ok(())
}

#[cfg(test)]
#[path = "pr_tests.rs"]
mod tests;
