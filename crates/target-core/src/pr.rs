//! Persistent reservations (SPC-4 5.9): the registration and reservation
//! state, the access rules [`crate::reservation`] enforces, and PERSISTENT
//! RESERVE IN (6.15). PERSISTENT RESERVE OUT lives in [`crate::pr_out`], the
//! APTPL state file in [`crate::pr_file`].
//!
//! Registrations are keyed by I_T nexus identity (initiator port name +
//! target port name), so they survive reconnects. A registration made with
//! ALL_TG_PT covers the initiator port through every target port (one
//! descriptor with ALL_TG_PT=1 in READ FULL STATUS, as SPC-4 allows), and
//! one made through a TransportID in format 00b (initiator device name, no
//! ISID) covers every port of that initiator.
//!
//! Unit attentions for a registrant go to every live I_T nexus its identity
//! covers, resolved when the attention is raised from the LU's directory of
//! live nexuses ([`PrState::note_nexus`]): a nexus enters it with its first
//! command (the dispatcher notes every nexus it reports a unit attention
//! to, and each new nexus meets its power-on one first; PERSISTENT RESERVE
//! commands note their nexus too) and leaves it when it ends. So registrations restored
//! from the APTPL file, made through SPEC_I_PT or REGISTER AND MOVE, or
//! outliving a logout reach their initiator whether or not it has sent a
//! PERSISTENT RESERVE command since.

use std::path::PathBuf;

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::reservation::Access;
use crate::Nexus;

pub(crate) const WR_EX: u8 = 1;
pub(crate) const EX_AC: u8 = 3;
pub(crate) const WR_EX_RO: u8 = 5;
pub(crate) const EX_AC_RO: u8 = 6;
pub(crate) const WR_EX_AR: u8 = 7;
pub(crate) const EX_AC_AR: u8 = 8;

/// Registrations kept per LU before INSUFFICIENT REGISTRATION RESOURCES.
pub(crate) const MAX_REGISTRATIONS: usize = 256;

pub(crate) fn valid_type(t: u8) -> bool {
    matches!(t, WR_EX | EX_AC | WR_EX_RO | EX_AC_RO | WR_EX_AR | EX_AC_AR)
}

pub(crate) fn all_registrants(t: u8) -> bool {
    matches!(t, WR_EX_AR | EX_AC_AR)
}

/// Whether a registered initiator identity covers the initiator port
/// `port`: the same port name, or (for a device name without `,i,ISID`)
/// any port of that initiator. iSCSI names compare case-insensitively.
pub(crate) fn initiator_matches(reg: &str, port: &str) -> bool {
    if reg.eq_ignore_ascii_case(port) {
        return true;
    }
    let (r, p) = (reg.as_bytes(), port.as_bytes());
    !reg.contains(",i,")
        && p.len() > r.len()
        && p[..r.len()].eq_ignore_ascii_case(r)
        && p[r.len()..].starts_with(b",i,")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    /// Stable identity while registered: the reservation names its holder
    /// by it.
    pub id: u64,
    pub key: u64,
    /// Initiator port name (`iqn…,i,0x<ISID>`) or initiator device name.
    pub initiator: String,
    /// Target port name the registration was made through.
    pub target: String,
    /// Registered through every target port (ALL_TG_PT=1).
    pub all_tg_pt: bool,
    pub rel_port: u16,
}

impl Registration {
    pub(crate) fn is(&self, n: &Nexus) -> bool {
        self.covers(&n.initiator_port, &n.target_port)
    }

    fn covers(&self, initiator_port: &str, target_port: &str) -> bool {
        initiator_matches(&self.initiator, initiator_port)
            && (self.all_tg_pt || self.target == target_port)
    }
}

/// A nexus that has talked to the LU and not ended: its identity, so unit
/// attentions for registrations can find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveNexus {
    pub id: u64,
    pub initiator_port: String,
    pub target_port: String,
}

/// Live nexuses remembered per LU; past this the oldest is dropped (a
/// fabric that never reports nexus loss cannot grow it without bound).
const MAX_LIVE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// Registration id of the holder; `None` for the all-registrants
    /// types, where every registrant holds it.
    pub holder: Option<u64>,
    pub rtype: u8,
}

#[derive(Clone, Default)]
pub(crate) struct PrState {
    pub generation: u32,
    pub regs: Vec<Registration>,
    pub reservation: Option<Reservation>,
    pub next_id: u64,
    /// Activate Persist Through Power Loss: the last APTPL bit received.
    pub aptpl: bool,
    /// Where APTPL state is kept (`Device::set_pr_state_file`).
    pub file: Option<PathBuf>,
    /// Live nexuses, by identity (not saved: nexus ids die with the run).
    pub live: Vec<LiveNexus>,
}

impl PrState {
    pub(crate) fn find(&self, n: &Nexus) -> Option<usize> {
        self.regs.iter().position(|r| r.is(n))
    }

    pub(crate) fn holds(&self, r: &Registration) -> bool {
        match &self.reservation {
            None => false,
            Some(res) => res.holder.is_none_or(|id| id == r.id),
        }
    }

    pub(crate) fn is_holder(&self, n: &Nexus) -> bool {
        self.find(n).is_some_and(|i| self.holds(&self.regs[i]))
    }

    pub(crate) fn holder_key(&self) -> Option<u64> {
        let id = self.reservation.as_ref()?.holder?;
        self.regs.iter().find(|r| r.id == id).map(|r| r.key)
    }

    /// Add a registration; returns its id.
    pub(crate) fn add(
        &mut self,
        key: u64,
        initiator: String,
        target: String,
        all_tg_pt: bool,
        rel_port: u16,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.regs.push(Registration {
            id,
            key,
            initiator,
            target,
            all_tg_pt,
            rel_port,
        });
        id
    }

    pub(crate) fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
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

    /// Ids of the live nexuses `r` covers.
    fn nexuses_of<'a>(&'a self, r: &'a Registration) -> impl Iterator<Item = u64> + 'a {
        self.live
            .iter()
            .filter(|l| r.covers(&l.initiator_port, &l.target_port))
            .map(|l| l.id)
    }

    /// Remove the registrations `pred` selects, releasing a reservation
    /// whose holder goes away (the last registrant, for all-registrants).
    /// Returns the ids of the live nexuses the removed registrations covered.
    pub(crate) fn remove_where(&mut self, pred: impl Fn(&Registration) -> bool) -> Vec<u64> {
        let holder = self.reservation.as_ref().and_then(|r| r.holder);
        let (gone, kept): (Vec<Registration>, Vec<Registration>) =
            std::mem::take(&mut self.regs).into_iter().partition(pred);
        self.regs = kept;
        let release = gone.iter().any(|r| holder == Some(r.id));
        if release || self.regs.is_empty() {
            self.reservation = None;
        }
        let mut ids: Vec<u64> = gone.iter().flat_map(|r| self.nexuses_of(r)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Ids of the live nexuses of every registrant but `n`.
    pub(crate) fn other_registrants(&self, n: &Nexus) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .regs
            .iter()
            .filter(|r| !r.is(n))
            .flat_map(|r| self.nexuses_of(r))
            .filter(|&id| id != n.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// `n` is talking to the LU: remember its identity (for unit attentions
    /// to the registrations that cover it) and the relative port its
    /// registration is reached through.
    pub(crate) fn note_nexus(&mut self, n: &Nexus) {
        if !self.live.iter().any(|l| l.id == n.id) {
            if self.live.len() >= MAX_LIVE {
                self.live.remove(0);
            }
            self.live.push(LiveNexus {
                id: n.id,
                initiator_port: n.initiator_port.clone(),
                target_port: n.target_port.clone(),
            });
        }
        if let Some(i) = self.find(n) {
            if !self.regs[i].all_tg_pt {
                self.regs[i].rel_port = n.relative_port_id;
            }
        }
    }

    /// Same as [`PrState::note_nexus`] (PERSISTENT RESERVE commands call it).
    pub(crate) fn touch(&mut self, n: &Nexus) {
        self.note_nexus(n)
    }

    /// The nexus ended: registrations stay (they are persistent), but no
    /// unit attention may be queued for its id any more.
    pub(crate) fn forget_nexus(&mut self, id: u64) {
        self.live.retain(|l| l.id != id);
    }
}

/// The TransportID naming `initiator`: SAS (SPC-4 7.6.4.7) for a bare
/// `naa.` port name (vhost, loopback: [`crate::proto`]), else iSCSI
/// (7.6.4.6): format 01b for an initiator port (`name,i,0x<ISID>`), 00b
/// for a device name.
pub(crate) fn transport_id(initiator: &str, out: &mut Vec<u8>) {
    if let Some(a) = crate::proto::sas_address(initiator)
        .filter(|_| crate::proto::of_initiator(initiator) == crate::proto::PROTO_SAS)
    {
        out.push(crate::proto::PROTO_SAS);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&a);
        out.extend_from_slice(&[0; 12]);
        return;
    }
    let mut name: Vec<u8> = initiator.bytes().take(220).collect();
    name.push(0);
    while !name.len().is_multiple_of(4) || name.len() < 20 {
        name.push(0);
    }
    let format = if initiator.contains(",i,") { 0x40 } else { 0 };
    out.extend_from_slice(&[format | 0x05, 0]);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(&name);
}

pub(crate) fn persistent_reserve_in(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let sa = cdb.b(1) & 0x1f;
    let alloc = usize::from(cdb.be16(7));
    // Another target sharing the LU may have changed them (`pr_shared`).
    crate::pr_shared::refresh(ctx.dev);
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
                // All-registrants types report key 0 (SPC-4 6.15.3).
                let key = pr.holder_key().unwrap_or(0);
                data_in.extend_from_slice(&key.to_be_bytes());
                data_in.extend_from_slice(&[0, 0, 0, 0, 0, res.rtype, 0, 0]);
            }
        }
        2 => {
            data_in.clear();
            // Length 8; CRH (RESERVE conflicts with a PR), SIP_C, ATP_C,
            // PTPL_C; TMV, ALLOW COMMANDS 1, PTPL_A; the six types.
            data_in.extend_from_slice(&[
                0,
                8,
                0x10 | 0x08 | 0x04 | 0x01,
                0x90 | u8::from(pr.aptpl),
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
                data_in.push(u8::from(r.all_tg_pt) << 1 | u8::from(holder));
                data_in.push(if holder {
                    pr.reservation.as_ref().map_or(0, |x| x.rtype)
                } else {
                    0
                });
                data_in.extend_from_slice(&[0; 4]);
                let rel = if r.all_tg_pt { 0 } else { r.rel_port };
                data_in.extend_from_slice(&rel.to_be_bytes());
                let at = data_in.len();
                data_in.extend_from_slice(&[0; 4]);
                transport_id(&r.initiator, data_in);
                let tid_len = (data_in.len() - at - 4) as u32;
                data_in[at..at + 4].copy_from_slice(&tid_len.to_be_bytes());
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
    use super::*;

    #[test]
    fn initiator_identity_matching() {
        let port = "iqn.2026-01.test:init1,i,0x1";
        assert!(initiator_matches(port, port));
        assert!(initiator_matches("IQN.2026-01.TEST:INIT1,i,0x1", port));
        assert!(
            initiator_matches("iqn.2026-01.test:init1", port),
            "device name"
        );
        assert!(
            !initiator_matches("iqn.2026-01.test:init", port),
            "prefix only"
        );
        assert!(!initiator_matches("iqn.2026-01.test:init1,i,0x2", port));
    }

    fn nexus(id: u64, initiator: &str, target: &str) -> Nexus {
        Nexus {
            id,
            initiator_port: initiator.into(),
            target_port: target.into(),
            relative_port_id: 1,
            tpg_tag: 1,
        }
    }

    /// A registration reaches every live nexus its identity covers (here
    /// ALL_TG_PT through two target ports), and none that has ended.
    #[test]
    fn unit_attentions_resolve_registrations_to_live_nexuses() {
        let (i, i2) = ("iqn.x:a,i,0x1", "iqn.x:b,i,0x1");
        let mut pr = PrState::default();
        pr.add(1, i.into(), "iqn.t,t,0x1".into(), true, 0);
        pr.add(2, i2.into(), "iqn.t,t,0x1".into(), false, 1);
        let a1 = nexus(10, i, "iqn.t,t,0x1");
        let a2 = nexus(11, i, "iqn.t,t,0x2");
        let b = nexus(12, i2, "iqn.t,t,0x1");
        let b_other_port = nexus(13, i2, "iqn.t,t,0x2");
        assert!(pr.other_registrants(&b).is_empty(), "nobody seen yet");
        for n in [&a1, &a2, &b, &b_other_port] {
            pr.note_nexus(n);
        }
        pr.note_nexus(&a1); // once only
        assert_eq!(pr.live.len(), 4);
        assert_eq!(pr.other_registrants(&b), vec![10, 11]);
        assert_eq!(
            pr.other_registrants(&a1),
            vec![12],
            "b is not registered via port 2"
        );
        pr.forget_nexus(10);
        assert_eq!(pr.other_registrants(&b), vec![11]);
        assert_eq!(pr.remove_where(|r| r.key == 1), vec![11]);
    }

    #[test]
    fn transport_id_formats() {
        let mut v = Vec::new();
        transport_id("iqn.x:a,i,0x1", &mut v);
        assert_eq!(v[0], 0x45);
        let len = usize::from(u16::from_be_bytes([v[2], v[3]]));
        assert_eq!(v.len(), 4 + len);
        assert!(len.is_multiple_of(4) && len >= 20);
        v.clear();
        transport_id("iqn.x:a", &mut v);
        assert_eq!(v[0], 0x05);
        v.clear();
        transport_id("naa.5001405f00d00001", &mut v);
        assert_eq!(v.len(), 24, "SAS: fixed length");
        assert_eq!(v[0], 0x06);
        assert_eq!(&v[4..12], &[0x50, 0x01, 0x40, 0x5f, 0x00, 0xd0, 0x00, 0x01]);
    }
}
