//! The registry side of multiple connections per session (MC/S): a login
//! with a TSIH joins the session it names (RFC 7143 §6.3.5-6.3.6), the
//! same CID reinstates that connection, a connection leaving ends the
//! session only when it was the last one, and the stopping of a session's
//! connections (logout, reinstatement).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::login::JoinRefused;
use crate::server::{SessionKey, Shared, REINSTATE_WAIT};
use crate::session_core::{ConnSlot, SessionCore};
use crate::sessions::SessionLive;

impl Shared {
    /// Whether a login of connection `cid` may join the session `key`
    /// with this TSIH: it exists, and has room for one more connection
    /// unless the CID is already in use (connection reinstatement).
    pub fn join_check(&self, key: &SessionKey, tsih: u16, cid: u16) -> Result<(), JoinRefused> {
        let s = self.lock_sessions();
        let e = s
            .get(key)
            .filter(|e| e.tsih == tsih)
            .ok_or(JoinRefused::NoSession)?;
        if e.core.conn_of_cid(cid).is_none()
            && e.core.conns().len() >= usize::from(e.core.max_conns)
        {
            return Err(JoinRefused::TooMany);
        }
        Ok(())
    }

    /// Add connection `slot` to the session `key`/`tsih` at the end of its
    /// login. A connection with the same CID is replaced (connection
    /// reinstatement, RFC 7143 §6.3.4: at ERL 0 its tasks just end), and
    /// this returns only once its thread has ended, so no PDU it read runs
    /// later.
    pub fn add_connection(
        &self,
        key: &SessionKey,
        tsih: u16,
        slot: ConnSlot,
    ) -> Result<(Arc<SessionCore>, Arc<SessionLive>), JoinRefused> {
        let cid = slot.cid;
        let (core, live, old) = {
            let s = self.lock_sessions();
            let e = s
                .get(key)
                .filter(|e| e.tsih == tsih)
                .ok_or(JoinRefused::NoSession)?;
            let old = e.core.replace(slot.clone());
            if old.is_none() {
                if e.core.conns().len() >= usize::from(e.core.max_conns) {
                    return Err(JoinRefused::TooMany);
                }
                e.core.attach(slot);
            }
            (Arc::clone(&e.core), Arc::clone(&e.live), old)
        };
        if let Some(old) = old {
            tracing::info!(initiator = %key.initiator, cid,
                "connection reinstatement: closing the old connection");
            if !self.stop_conns(&core, &[old], Instant::now() + REINSTATE_WAIT) {
                return Err(JoinRefused::Busy);
            }
        }
        Ok((core, live))
    }

    /// Connection `conn_id` of session `key` is leaving: true when it was
    /// the last one and the session is gone from the registry. A second
    /// call (from `Drop` after `end`) does nothing.
    pub fn leave_session(&self, key: &SessionKey, core: &Arc<SessionCore>, conn_id: u64) -> bool {
        let mut s = self.lock_sessions();
        // Listed: it leaves now. Not listed: replaced by a connection
        // reinstatement (the session goes on) or already left.
        if core.detach(conn_id) != Some(0) {
            return false;
        }
        if s.get(key).is_some_and(|e| Arc::ptr_eq(&e.core, core)) {
            s.remove(key);
        }
        true
    }

    /// Close these connections of `core` and wait until their threads
    /// have ended; false if one is still there at `deadline`.
    pub fn stop_conns(&self, core: &SessionCore, ids: &[u64], deadline: Instant) -> bool {
        let handles: Vec<_> = {
            let conns = self.lock_conns();
            ids.iter().filter_map(|id| conns.get(id).cloned()).collect()
        };
        for h in &handles {
            h.kill();
        }
        // A thread waiting for its CmdSN turn must see its stop flag.
        core.wake();
        for h in &handles {
            while self.lock_conns().contains_key(&h.id) {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        true
    }
}
