//! Asymmetric logical unit access (SPC-4 5.15): the target port groups of
//! one LU, their access states, which target port (LUN of a TPG) sits in
//! which group, REPORT TARGET PORT GROUPS, SET TARGET PORT GROUPS, and the
//! per-command access-state gate.
//!
//! The model is LIO's: every LU owns its groups (`default_tg_pt_gp`, id 0,
//! always exists) and each target port that maps the LU names one group.
//! Management configures groups and ports ([`crate::Device::alua_configure`]);
//! a state that management changes is an implicit transition (2A/06 for
//! every nexus), one that an initiator changes with STPG an explicit one
//! (2A/06 for every other nexus).
//!
//! The gate costs one relaxed atomic load while every group is
//! active/optimized, which is the only state a LU without ALUA setup has.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use scsi::cdb::Cdb;
use scsi::{opcode as op, Asc};

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::{CmdError, Inaccessible};
use crate::{Nexus, Status};

/// ASYMMETRIC ACCESS STATE CHANGED.
pub(crate) const ASYMMETRIC_ACCESS_STATE_CHANGED: Asc = Asc::ASYMMETRIC_ACCESS_STATE_CHANGED;
/// MAINTENANCE OUT service action SET TARGET PORT GROUPS.
pub(crate) const MO_SET_TARGET_PORT_GROUPS: u8 = 0x0a;

/// `alua_access_type` bits (rtslib: 1 implicit, 2 explicit, 3 both);
/// they are also the INQUIRY TPGS field.
pub const ALUA_IMPLICIT: u8 = 0x1;
pub const ALUA_EXPLICIT: u8 = 0x2;

/// `alua_access_status` values (RTPG STATUS CODE, SPC-4 6.37).
pub const STATUS_NONE: u8 = 0;
pub const STATUS_EXPLICIT: u8 = 1;
pub const STATUS_IMPLICIT: u8 = 2;

/// Supported-state bits of an RTPG descriptor byte 1 (SPC-4 table 170).
pub const SUP_TRANSITIONING: u8 = 0x80;
pub const SUP_OFFLINE: u8 = 0x40;
pub const SUP_LBA_DEPENDENT: u8 = 0x10;
pub const SUP_UNAVAILABLE: u8 = 0x08;
pub const SUP_STANDBY: u8 = 0x04;
pub const SUP_NONOPTIMIZED: u8 = 0x02;
pub const SUP_OPTIMIZED: u8 = 0x01;

/// LIO's limits (target_core_alua.h), so a file LIO accepts is accepted.
pub const MAX_NONOP_DELAY_MSECS: u32 = 10_000;
pub const MAX_TRANS_DELAY_MSECS: u32 = 30_000;
pub const MAX_IMPLICIT_TRANS_SECS: u32 = 255;

/// rtslib's name of the group every LUN starts in.
pub const DEFAULT_GROUP: &str = "default_tg_pt_gp";

/// A primary target port asymmetric access state (SPC-4 5.15.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AccessState {
    ActiveOptimized = 0x0,
    ActiveNonOptimized = 0x1,
    Standby = 0x2,
    Unavailable = 0x3,
    LbaDependent = 0x4,
    Offline = 0xe,
    Transitioning = 0xf,
}

impl AccessState {
    /// The state with this code (rtslib's `alua_access_state` value).
    pub fn from_code(code: u8) -> Option<AccessState> {
        use AccessState::*;
        Some(match code {
            0x0 => ActiveOptimized,
            0x1 => ActiveNonOptimized,
            0x2 => Standby,
            0x3 => Unavailable,
            0x4 => LbaDependent,
            0xe => Offline,
            0xf => Transitioning,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// targetcli's wording (`ALUA state: ...`).
    pub fn name(self) -> &'static str {
        use AccessState::*;
        match self {
            ActiveOptimized => "Active/optimized",
            ActiveNonOptimized => "Active/non-optimized",
            Standby => "Standby",
            Unavailable => "Unavailable",
            LbaDependent => "LBA Dependent",
            Offline => "Offline",
            Transitioning => "Transitioning",
        }
    }

    /// Its bit in the supported-states mask.
    pub fn support_bit(self) -> u8 {
        use AccessState::*;
        match self {
            ActiveOptimized => SUP_OPTIMIZED,
            ActiveNonOptimized => SUP_NONOPTIMIZED,
            Standby => SUP_STANDBY,
            Unavailable => SUP_UNAVAILABLE,
            LbaDependent => SUP_LBA_DEPENDENT,
            Offline => SUP_OFFLINE,
            Transitioning => SUP_TRANSITIONING,
        }
    }
}

/// One target port group of a LU (rtslib's `alua_tpgs[]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AluaGroup {
    pub name: String,
    /// TARGET PORT GROUP identifier (0 for the default group).
    pub id: u16,
    pub state: AccessState,
    /// [`ALUA_IMPLICIT`] | [`ALUA_EXPLICIT`] (0: no ALUA on this group).
    pub access_type: u8,
    pub preferred: bool,
    /// Supported states, `SUP_*` bits.
    pub supported: u8,
    /// `STATUS_*`.
    pub status: u8,
    /// Delay added to commands on an active/non-optimized port.
    pub nonop_delay_msecs: u32,
    /// Time a transition spends in the transitioning state.
    pub trans_delay_msecs: u32,
    /// IMPLICIT TRANSITION TIME reported in the extended RTPG header.
    pub implicit_trans_secs: u32,
}

impl AluaGroup {
    /// A group with LIO's defaults: active/optimized, implicit and
    /// explicit, every state but LBA dependent supported, 100 ms
    /// non-optimized delay.
    pub fn new(name: &str, id: u16) -> AluaGroup {
        AluaGroup {
            name: name.to_string(),
            id,
            state: AccessState::ActiveOptimized,
            access_type: ALUA_IMPLICIT | ALUA_EXPLICIT,
            preferred: false,
            supported: SUP_TRANSITIONING
                | SUP_OFFLINE
                | SUP_UNAVAILABLE
                | SUP_STANDBY
                | SUP_NONOPTIMIZED
                | SUP_OPTIMIZED,
            status: STATUS_NONE,
            nonop_delay_msecs: 100,
            trans_delay_msecs: 0,
            implicit_trans_secs: 0,
        }
    }
}

/// A target port through which the LU is mapped, and its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AluaPort {
    /// The fabric's target port name ([`Nexus::target_port`]).
    pub target_port: String,
    pub relative_port_id: u16,
    /// Group id (an [`AluaGroup::id`]).
    pub group: u16,
}

struct Group {
    g: AluaGroup,
    /// The state management last asked for: a reconfiguration that repeats
    /// it keeps a state an initiator set with STPG since.
    configured: AccessState,
}

struct Inner {
    groups: Vec<Group>,
    ports: Vec<AluaPort>,
}

impl Inner {
    fn group(&self, id: u16) -> Option<&Group> {
        self.groups.iter().find(|g| g.g.id == id)
    }

    /// The group of the port `nexus` came in on; an unregistered port is
    /// in the default group, as every LIO LUN starts.
    fn group_of(&self, nexus: &Nexus) -> Option<&Group> {
        let id = self
            .ports
            .iter()
            .find(|p| p.target_port == nexus.target_port)
            .map_or(0, |p| p.group);
        self.group(id).or_else(|| self.group(0))
    }

    fn restricted(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.g.state != AccessState::ActiveOptimized)
    }

    /// (port, effective state) pairs, to tell whether anything changed.
    fn port_states(&self) -> Vec<(String, Option<AccessState>)> {
        self.ports
            .iter()
            .map(|p| {
                (
                    p.target_port.clone(),
                    self.group(p.group).map(|g| g.g.state),
                )
            })
            .collect()
    }
}

pub(crate) struct AluaState {
    /// Some group is not active/optimized: commands take the slow gate.
    restricted: AtomicBool,
    inner: RwLock<Inner>,
    /// Set when the medium's owner decides the states (`crate::alua_owner`).
    pub(crate) ownership: OnceLock<Arc<dyn backstore::Ownership>>,
    /// Group state changes by STPG / by management (monitoring).
    explicit: AtomicU64,
    implicit: AtomicU64,
}

impl Default for AluaState {
    fn default() -> AluaState {
        AluaState {
            restricted: AtomicBool::new(false),
            inner: RwLock::new(Inner {
                groups: vec![Group {
                    g: AluaGroup::new(DEFAULT_GROUP, 0),
                    configured: AccessState::ActiveOptimized,
                }],
                ports: Vec::new(),
            }),
            ownership: OnceLock::new(),
            explicit: AtomicU64::new(0),
            implicit: AtomicU64::new(0),
        }
    }
}

/// What an access state lets through (SPC-4 5.15.2.4.4 - 5.15.2.4.8; LIO
/// target_core_alua.c). INQUIRY, REPORT LUNS, REQUEST SENSE and REPORT
/// TARGET PORT GROUPS work in every state.
fn allowed(state: AccessState, cdb: &Cdb) -> bool {
    let o = cdb.opcode();
    let sa = cdb.service_action();
    let always = matches!(o, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE)
        || (o == op::MAINTENANCE_IN && sa == op::MI_REPORT_TARGET_PORT_GROUPS);
    if always {
        return true;
    }
    let stpg = o == op::MAINTENANCE_OUT && sa == MO_SET_TARGET_PORT_GROUPS;
    match state {
        AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => true,
        AccessState::LbaDependent => true,
        AccessState::Standby => {
            // READ CAPACITY too, as LIO allows: Linux's sd reads the
            // capacity of every path while probing, and a standby path that
            // refused it would come up as a zero-sized disk under multipath.
            let capacity = o == op::READ_CAPACITY_10
                || (o == op::SERVICE_ACTION_IN_16 && sa == op::SAI_READ_CAPACITY_16);
            stpg || capacity
                || matches!(
                    o,
                    op::MODE_SENSE_6
                    | op::MODE_SENSE_10
                    | op::MODE_SELECT_6
                    | op::MODE_SELECT_10
                    | 0x4c // LOG SELECT
                    | 0x4d // LOG SENSE
                    | 0x1c // RECEIVE DIAGNOSTIC RESULTS
                    | 0x1d // SEND DIAGNOSTIC
                    | op::PERSISTENT_RESERVE_IN
                    | op::PERSISTENT_RESERVE_OUT
                    | op::MAINTENANCE_IN
                )
        }
        AccessState::Unavailable => stpg,
        AccessState::Offline | AccessState::Transitioning => false,
    }
}

/// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, with the state's ASCQ.
fn not_accessible(state: AccessState) -> CmdError {
    CmdError::NotAccessible(match state {
        AccessState::Transitioning => Inaccessible::Transitioning,
        AccessState::Standby => Inaccessible::Standby,
        AccessState::Offline => Inaccessible::Offline,
        // Only the four refusing states reach here (see `allowed`).
        AccessState::Unavailable
        | AccessState::ActiveOptimized
        | AccessState::ActiveNonOptimized
        | AccessState::LbaDependent => Inaccessible::Unavailable,
    })
}

impl AluaState {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every mutation replaces whole fields; a poisoned lock holds
        // consistent data.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// (explicit, implicit) group state changes so far.
    pub(crate) fn transitions(&self) -> (u64, u64) {
        (
            self.explicit.load(Ordering::Relaxed),
            self.implicit.load(Ordering::Relaxed),
        )
    }

    fn count(&self, explicit: bool, n: usize) {
        let c = if explicit {
            &self.explicit
        } else {
            &self.implicit
        };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn publish(&self, inner: &Inner) {
        self.restricted.store(inner.restricted(), Ordering::Release);
    }

    /// The per-command gate: `Ok` when the port's state lets `cdb` run.
    #[inline]
    pub(crate) fn gate(&self, nexus: &Nexus, cdb: &Cdb) -> Result<(), CmdError> {
        if !self.restricted.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.slow_gate(nexus, cdb)
    }

    #[cold]
    fn slow_gate(&self, nexus: &Nexus, cdb: &Cdb) -> Result<(), CmdError> {
        let (state, delay) = {
            let inner = self.read();
            let Some(g) = inner.group_of(nexus) else {
                return Ok(());
            };
            (g.g.state, g.g.nonop_delay_msecs)
        };
        if !allowed(state, cdb) {
            return Err(not_accessible(state));
        }
        // LIO delays every command of a non-optimized path (nonop_delay),
        // so initiators that ignore ALUA still see why it is not optimized.
        // Reports stay instant: path checkers must not time out on them.
        if state == AccessState::ActiveNonOptimized
            && delay > 0
            && !allowed(AccessState::Unavailable, cdb)
        {
            std::thread::sleep(Duration::from_millis(u64::from(
                delay.min(MAX_NONOP_DELAY_MSECS),
            )));
        }
        Ok(())
    }

    /// The group (id, access type) the port of `nexus` belongs to.
    pub(crate) fn port_group(&self, nexus: &Nexus) -> (u16, u8) {
        let inner = self.read();
        inner
            .group_of(nexus)
            .map_or((0, ALUA_IMPLICIT), |g| (g.g.id, g.g.access_type))
    }

    pub(crate) fn groups(&self) -> Vec<AluaGroup> {
        self.read().groups.iter().map(|g| g.g.clone()).collect()
    }

    /// Management's configuration. Returns whether some port's access
    /// state changed (the caller then queues 2A/06 for every nexus).
    pub(crate) fn configure(&self, groups: &[AluaGroup], ports: &[AluaPort]) -> bool {
        let mut inner = self.write();
        let before = inner.port_states();
        let before_groups: Vec<(u16, AccessState)> =
            inner.groups.iter().map(|g| (g.g.id, g.g.state)).collect();
        let mut next: Vec<Group> = Vec::with_capacity(groups.len() + 1);
        for want in groups {
            if next.iter().any(|g| g.g.id == want.id) {
                continue;
            }
            let mut g = want.clone();
            if let Some(old) = inner.groups.iter().find(|o| o.g.id == want.id) {
                if want.state == old.configured || want.state == old.g.state {
                    // Unchanged by management (or already so): keep what
                    // STPG made of it, status included.
                    g.state = old.g.state;
                    g.status = old.g.status;
                } else {
                    g.status = STATUS_IMPLICIT;
                }
            }
            next.push(Group {
                configured: want.state,
                g,
            });
        }
        if !next.iter().any(|g| g.g.id == 0) {
            next.insert(
                0,
                Group {
                    g: AluaGroup::new(DEFAULT_GROUP, 0),
                    configured: AccessState::ActiveOptimized,
                },
            );
        }
        next.sort_by_key(|g| g.g.id);
        inner.groups = next;
        inner.ports = ports.to_vec();
        self.publish(&inner);
        let changed_groups = before_groups
            .iter()
            .filter(|(id, st)| inner.group(*id).is_some_and(|g| g.g.state != *st))
            .count();
        self.count(false, changed_groups);
        changed_groups > 0 || inner.port_states() != before
    }

    /// The transitions that make the states follow `owner` (see
    /// `crate::alua_owner`): its group active/optimized, every other one
    /// active/non-optimized; nobody: the configured states; another,
    /// unknown gateway: this gateway's group (`local`) not optimized.
    pub(crate) fn owner_changes(
        &self,
        owner: backstore::Owner,
        local: u16,
    ) -> Vec<(u16, AccessState)> {
        use backstore::Owner;
        let inner = self.read();
        inner
            .groups
            .iter()
            .filter_map(|g| {
                let want = match owner {
                    Owner::Group(o) if o == g.g.id => AccessState::ActiveOptimized,
                    Owner::Group(_) => AccessState::ActiveNonOptimized,
                    Owner::Nobody => g.configured,
                    Owner::Elsewhere if g.g.id == local => AccessState::ActiveNonOptimized,
                    Owner::Elsewhere => g.g.state,
                };
                (g.g.state != want).then_some((g.g.id, want))
            })
            .collect()
    }

    /// Move the groups in `changes` to their states. `explicit` marks an
    /// STPG (status "altered by explicit STPG"). A group with a transition
    /// delay spends it in the transitioning state first, visible to every
    /// other command meanwhile.
    pub(crate) fn transition(&self, changes: &[(u16, AccessState)], explicit: bool) {
        let (delay, before) = {
            let mut inner = self.write();
            let before: Vec<(u16, AccessState)> =
                inner.groups.iter().map(|g| (g.g.id, g.g.state)).collect();
            let mut delay = 0;
            for (id, _) in changes {
                if let Some(g) = inner.groups.iter_mut().find(|g| g.g.id == *id) {
                    if g.g.trans_delay_msecs > 0 {
                        delay = delay.max(g.g.trans_delay_msecs);
                        g.g.state = AccessState::Transitioning;
                    }
                }
            }
            self.publish(&inner);
            (delay.min(MAX_TRANS_DELAY_MSECS), before)
        };
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(u64::from(delay)));
        }
        let mut inner = self.write();
        for (id, state) in changes {
            if let Some(g) = inner.groups.iter_mut().find(|g| g.g.id == *id) {
                g.g.state = *state;
                g.g.status = if explicit {
                    STATUS_EXPLICIT
                } else {
                    STATUS_IMPLICIT
                };
            }
        }
        let changed = before
            .iter()
            .filter(|(id, st)| inner.group(*id).is_some_and(|g| g.g.state != *st))
            .count();
        self.count(explicit, changed);
        self.publish(&inner);
    }
}

/// REPORT TARGET PORT GROUPS (SPC-4 6.37): every group of the LU with its
/// state, preferred bit, supported states, status and member ports. The
/// answer does not depend on the path it is asked through, except that a
/// port management never registered reports itself in the default group.
pub(crate) fn report_target_port_groups(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let extended = match cdb.b(1) >> 5 {
        0 => false,
        1 => true,
        _ => return Err(CmdError::cdb_field(1)),
    };
    let alloc = cdb.be32(6) as usize;
    // Several gateways: every one answers with the owner the cluster records.
    ctx.dev.follow_owner(true);
    let inner = ctx.dev.state.alua.read();
    data_in.extend_from_slice(&[0; 4]);
    if extended {
        let secs = inner
            .groups
            .iter()
            .map(|g| g.g.implicit_trans_secs)
            .max()
            .unwrap_or(0)
            .min(MAX_IMPLICIT_TRANS_SECS) as u8;
        data_in.extend_from_slice(&[0x10, secs, 0, 0]);
    }
    let asker_known = inner
        .ports
        .iter()
        .any(|p| p.target_port == ctx.nexus.target_port);
    for g in &inner.groups {
        let mut members: Vec<u16> = inner
            .ports
            .iter()
            .filter(|p| p.group == g.g.id)
            .map(|p| p.relative_port_id)
            .collect();
        if g.g.id == 0 && !asker_known {
            members.push(ctx.nexus.relative_port_id);
        }
        members.sort_unstable();
        members.dedup();
        let id = g.g.id.to_be_bytes();
        let pref = if g.g.preferred { 0x80 } else { 0 };
        data_in.extend_from_slice(&[
            pref | g.g.state.code(),
            g.g.supported,
            id[0],
            id[1],
            0,
            g.g.status,
            0,
            members.len().min(255) as u8,
        ]);
        for rel in members.iter().take(255) {
            let r = rel.to_be_bytes();
            data_in.extend_from_slice(&[0, 0, r[0], r[1]]);
        }
    }
    drop(inner);
    let len = u32::try_from(data_in.len() - 4).unwrap_or(u32::MAX);
    data_in[..4].copy_from_slice(&len.to_be_bytes());
    truncate_to(alloc, data_in)
}

/// SET TARGET PORT GROUPS (SPC-4 6.48): explicit transitions. All
/// descriptors are checked before any state changes.
pub(crate) fn set_target_port_groups(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let alua = &ctx.dev.state.alua;
    let (_, access) = alua.port_group(ctx.nexus);
    if access & ALUA_EXPLICIT == 0 {
        // The TPGS field this port reports says explicit ALUA is absent.
        return Err(CmdError::InvalidOpcode);
    }
    let len = ctx.cdb.be32(6) as usize;
    if len == 0 {
        return Ok(Status::Good);
    }
    if len < 4 || !(len - 4).is_multiple_of(4) {
        return Err(CmdError::ParameterListLength);
    }
    if ctx.data_out.len() < len {
        return Err(CmdError::ParameterListLength);
    }
    let params = &ctx.data_out[4..len];
    let mut changes: Vec<(u16, AccessState)> = Vec::with_capacity(params.len() / 4);
    {
        let inner = alua.read();
        for (i, d) in params.chunks_exact(4).enumerate() {
            let at = (4 + 4 * i) as u16;
            let state = AccessState::from_code(d[0] & 0x0f).ok_or(CmdError::param(at))?;
            // Only primary states an initiator may ask for (SPC-4 6.48).
            if !matches!(
                state,
                AccessState::ActiveOptimized
                    | AccessState::ActiveNonOptimized
                    | AccessState::Standby
                    | AccessState::Unavailable
            ) {
                return Err(CmdError::param(at));
            }
            let id = u16::from_be_bytes([d[2], d[3]]);
            let g = inner.group(id).ok_or(CmdError::param(at + 2))?;
            if g.g.access_type & ALUA_EXPLICIT == 0 || g.g.supported & state.support_bit() == 0 {
                return Err(CmdError::param(at));
            }
            if changes.iter().any(|(c, _)| *c == id) {
                return Err(CmdError::param(at + 2));
            }
            changes.push((id, state));
        }
    }
    if alua.ownership.get().is_some() {
        return crate::alua_owner::set_target_port_groups(ctx.dev, &changes);
    }
    alua.transition(&changes, true);
    ctx.dev
        .state
        .ua
        .queue_others(Some(ctx.nexus.id), ASYMMETRIC_ACCESS_STATE_CHANGED);
    Ok(Status::Good)
}

impl crate::Device {
    /// Set the LU's target port groups and which port sits in which group
    /// (management). Groups missing the default one get it back; a
    /// group's state that differs from what management last set is an
    /// implicit transition, and any port whose state changed makes every
    /// nexus get ASYMMETRIC ACCESS STATE CHANGED.
    pub fn alua_configure(&self, groups: &[AluaGroup], ports: &[AluaPort]) {
        let alua = &self.state.alua;
        // Transition delays apply to management changes too (LIO's
        // implicit transitions go through the same path).
        let pending: Vec<(u16, AccessState)> = {
            let inner = alua.read();
            groups
                .iter()
                .filter(|w| {
                    inner.group(w.id).is_some_and(|o| {
                        o.configured != w.state && o.g.state != w.state && w.trans_delay_msecs > 0
                    })
                })
                .map(|w| (w.id, w.state))
                .collect()
        };
        let mut changed = false;
        if !pending.is_empty() {
            alua.transition(&pending, false);
            changed = true;
        }
        changed |= alua.configure(groups, ports);
        if changed {
            self.state
                .ua
                .queue_others(None, ASYMMETRIC_ACCESS_STATE_CHANGED);
        }
        // The owner, where one decides, overrides what management set.
        self.follow_owner(false);
    }

    /// The LU's groups with their current states (STPG included).
    pub fn alua_groups(&self) -> Vec<AluaGroup> {
        self.state.alua.groups()
    }
}

#[cfg(test)]
#[path = "alua_tests.rs"]
mod tests;
