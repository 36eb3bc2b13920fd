//! Implicit ALUA driven by the medium's owner ([`backstore::ownership`]):
//! several gateways serve one medium (an RBD image with `alua_group=N`),
//! each a target port group, and whichever owns the medium (holds the
//! image's exclusive lock) is active/optimized, the others
//! active/non-optimized. Every gateway reads the owner the cluster records,
//! so all answer REPORT TARGET PORT GROUPS alike.
//!
//! The owner changes underneath (a write at another gateway took over, or
//! this one was fenced): the backstore's hook brings the states in line and
//! every nexus gets ASYMMETRIC ACCESS STATE CHANGED, as for any implicit
//! transition. SET TARGET PORT GROUPS asking for this gateway's group to
//! be active/optimized takes the medium over; other requests change
//! nothing, since the lock, not the initiator, decides the states.

use std::sync::Arc;

use backstore::Ownership;

use crate::alua::{AccessState, ASYMMETRIC_ACCESS_STATE_CHANGED};
use crate::dispatch::HandlerResult;
use crate::error::{CmdError, Inaccessible};
use crate::{Device, Status};

impl Device {
    /// Let `o` decide this LU's ALUA states from now on (once; later calls
    /// are ignored).
    pub fn set_ownership(self: &Arc<Self>, o: Arc<dyn Ownership>) {
        // Weak: the hook lives in the backstore, which the device owns.
        let weak = Arc::downgrade(self);
        o.on_change(Box::new(move || {
            if let Some(d) = weak.upgrade() {
                d.follow_owner(false);
            }
        }));
        if self.state.alua.ownership.set(o).is_ok() {
            self.follow_owner(false);
        }
    }

    /// Bring the group states in line with the owner (`refresh`: read it
    /// from the cluster first). A no-op without an owner.
    pub(crate) fn follow_owner(&self, refresh: bool) {
        let alua = &self.state.alua;
        let Some(o) = alua.ownership.get() else {
            return;
        };
        let owner = o.owner(refresh);
        let changes = alua.owner_changes(owner, o.local_group());
        if changes.is_empty() {
            return;
        }
        alua.transition(&changes, false);
        self.state
            .ua
            .queue_others(None, ASYMMETRIC_ACCESS_STATE_CHANGED);
    }
}

/// SET TARGET PORT GROUPS on an owned medium (`changes` already checked).
pub(crate) fn set_target_port_groups(
    dev: &Device,
    changes: &[(u16, AccessState)],
) -> HandlerResult {
    let Some(o) = dev.state.alua.ownership.get() else {
        return Ok(Status::Good);
    };
    let local = o.local_group();
    if changes
        .iter()
        .any(|(id, s)| *id == local && *s == AccessState::ActiveOptimized)
    {
        if let Err(e) = o.take_over() {
            tracing::warn!(error = %e, "SET TARGET PORT GROUPS: cannot take the medium over");
            // Retry later (or elsewhere), as for any transition under way.
            return Err(CmdError::NotAccessible(Inaccessible::Transitioning));
        }
    }
    dev.follow_owner(false);
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use backstore::ownership::{path_lost, OwnerHook};
    use backstore::Owner;

    use super::*;
    use crate::alua::{AluaGroup, AluaPort};
    use crate::testutil::*;

    const RTPG: [u8; 12] = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    const TUR: [u8; 6] = [0; 6];

    /// Gateway 1's view of a medium whose owner the test sets.
    #[derive(Default)]
    struct Fake {
        owner: Mutex<Option<Owner>>,
        hook: Mutex<Option<OwnerHook>>,
        refuse: Mutex<bool>,
        takeovers: Mutex<u32>,
    }

    impl Fake {
        fn set(&self, o: Owner) {
            *self.owner.lock().unwrap() = Some(o);
            if let Some(h) = self.hook.lock().unwrap().as_ref() {
                h();
            }
        }
    }

    impl Ownership for Fake {
        fn local_group(&self) -> u16 {
            1
        }
        fn owner(&self, _refresh: bool) -> Owner {
            self.owner.lock().unwrap().unwrap_or(Owner::Nobody)
        }
        fn take_over(&self) -> std::io::Result<()> {
            if *self.refuse.lock().unwrap() {
                return Err(path_lost("no"));
            }
            *self.takeovers.lock().unwrap() += 1;
            self.set(Owner::Group(1));
            Ok(())
        }
        fn on_change(&self, hook: OwnerHook) {
            *self.hook.lock().unwrap() = Some(hook);
        }
    }

    struct Shared(Arc<Fake>);

    impl Ownership for Shared {
        fn local_group(&self) -> u16 {
            self.0.local_group()
        }
        fn owner(&self, refresh: bool) -> Owner {
            self.0.owner(refresh)
        }
        fn take_over(&self) -> std::io::Result<()> {
            self.0.take_over()
        }
        fn on_change(&self, hook: OwnerHook) {
            self.0.on_change(hook)
        }
    }

    /// (state code of group 1, of group 2) in an RTPG answer.
    fn states(t: &Rig) -> (u8, u8) {
        // Past any UA the transitions queued.
        while t.run(&TUR, &[]).0.status != Status::Good {}
        let (_, a) = t.ok(&RTPG);
        // Groups in id order: default (no ports), 1 (one port), 2 (one port).
        (a[12] & 0x0f, a[24] & 0x0f)
    }

    /// This gateway's port in group 1; the other gateway's in group 2
    /// (configured as LIO/ceph-iscsi do: both groups on every gateway).
    fn gateway_rig() -> (Rig, Arc<Fake>) {
        let t = Rig::new();
        let mut g1 = AluaGroup::new("gw1", 1);
        let mut g2 = AluaGroup::new("gw2", 2);
        g1.nonop_delay_msecs = 0;
        g2.nonop_delay_msecs = 0;
        g2.state = AccessState::ActiveNonOptimized;
        t.dev.alua_configure(
            &[g1, g2],
            &[
                AluaPort {
                    target_port: t.me.target_port.clone(),
                    relative_port_id: 1,
                    group: 1,
                },
                AluaPort {
                    target_port: "iqn.2026-01.test:tgt,t,0x0002".into(),
                    relative_port_id: 2,
                    group: 2,
                },
            ],
        );
        t.run(&TUR, &[]); // the configuration's UA
        let fake = Arc::new(Fake::default());
        t.dev.set_ownership(Arc::new(Shared(Arc::clone(&fake))));
        (t, fake)
    }

    #[test]
    fn the_owner_decides_the_states_and_stpg_takes_over() {
        let (t, fake) = gateway_rig();
        // Nobody owns it: the configured states.
        assert_eq!(states(&t), (0, 1));
        // The other gateway owns it: it is optimized, this one is not, and
        // initiators hear of it.
        fake.set(Owner::Group(2));
        assert_eq!(sense_of(&t.run(&TUR, &[]).0), Some((6, 0x2a, 0x06)));
        assert_eq!(states(&t), (1, 0));
        // Fenced, the owner unknown: this gateway stops claiming.
        fake.set(Owner::Group(1));
        t.run(&TUR, &[]);
        assert_eq!(states(&t), (0, 1));
        fake.set(Owner::Elsewhere);
        t.run(&TUR, &[]);
        assert_eq!(states(&t).0, 1);
        // STPG for another group changes nothing; for this gateway's group
        // it takes the medium over.
        fake.set(Owner::Group(2));
        t.run(&TUR, &[]);
        let stpg = |state: u8, id: u8| {
            let data = [0, 0, 0, 0, state, 0, 0, id];
            let cdb = [0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0];
            t.run(&cdb, &data).0
        };
        assert_eq!(stpg(0, 2).status, Status::Good);
        assert_eq!((states(&t), *fake.takeovers.lock().unwrap()), ((1, 0), 0));
        assert_eq!(stpg(0, 1).status, Status::Good);
        assert_eq!((states(&t), *fake.takeovers.lock().unwrap()), ((0, 1), 1));
        // A takeover that fails: retry (NOT READY, ALUA transition).
        fake.set(Owner::Group(2));
        t.run(&TUR, &[]);
        *fake.refuse.lock().unwrap() = true;
        assert_eq!(sense_of(&stpg(0, 1)), Some((2, 0x04, 0x0a)));
    }

    #[test]
    fn a_lost_path_is_an_alua_transition_not_a_medium_error() {
        for e in [
            CmdError::WriteError(path_lost("fenced")),
            CmdError::ReadError(path_lost("fenced")),
        ] {
            let (st, sense) = e.answer();
            let s = sense.unwrap().to_fixed();
            assert_eq!(
                (st, s[2] & 0x0f, s[12], s[13]),
                (Status::CheckCondition, 2, 4, 0x0a)
            );
        }
        let (_, s) = CmdError::WriteError(std::io::Error::other("x")).answer();
        assert_eq!(
            s.unwrap().to_fixed()[2] & 0x0f,
            3,
            "other errors stay medium errors"
        );
    }
}
