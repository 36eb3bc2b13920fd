//! What the server shares with each live normal session: the LUN table the
//! session currently sees (swapped by the management side when a target is
//! reconfigured, picked up by the connection thread through an epoch check,
//! so the data path takes no lock per command), per-LUN I/O counters
//! (relaxed atomics), and the facts `sessions detail` shows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use iscsi_wire::negotiate::SessionParams;
use target_core::LunTable;

use crate::{LunIo, TpgConfig};

/// Counters of one mapped LUN in one session.
#[derive(Default)]
pub struct LunCounters {
    pub commands: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
}

impl LunCounters {
    /// Count one command. Only the session's own thread writes (readers
    /// just load), so a plain load and store suffice: no locked
    /// read-modify-write on the data path.
    pub fn count(&self, read: u64, written: u64) {
        let add = |a: &AtomicU64, n: u64| {
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
        };
        add(&self.commands, 1);
        add(&self.read_bytes, read);
        add(&self.write_bytes, written);
    }
}

/// A LUN table with one counter block per entry (same order as
/// `table.luns`).
#[derive(Clone)]
pub struct LunView {
    pub table: Arc<LunTable>,
    pub counters: Arc<[Arc<LunCounters>]>,
}

impl LunView {
    pub fn new(table: Arc<LunTable>) -> LunView {
        let counters = table.luns.iter().map(|_| Arc::default()).collect();
        LunView { table, counters }
    }

    /// A view of `table` that keeps the counters of LUNs this view already
    /// had (same LUN number and LU).
    fn successor(&self, table: Arc<LunTable>) -> LunView {
        let counters = table
            .luns
            .iter()
            .map(|l| {
                self.table
                    .luns
                    .iter()
                    .position(|o| o.id == l.id && Arc::ptr_eq(&o.device, &l.device))
                    .map_or_else(Arc::default, |i| Arc::clone(&self.counters[i]))
            })
            .collect();
        LunView { table, counters }
    }
}

/// Same LUN numbers, same LUs, same write protection.
pub fn same_table(a: &LunTable, b: &LunTable) -> bool {
    a.luns.len() == b.luns.len()
        && a.luns.iter().zip(&b.luns).all(|(x, y)| {
            x.id == y.id && x.write_protect == y.write_protect && Arc::ptr_eq(&x.device, &y.device)
        })
}

/// Which LUN table an initiator gets in a TPG: its ACL's, else the TPG's
/// when demo mode is on; `None` when it may not use the TPG at all.
pub fn table_for(tpg: &TpgConfig, initiator: &str) -> Option<(Arc<LunTable>, bool)> {
    if let Some(acl) = find_acl(tpg, initiator) {
        return Some((Arc::clone(&acl.luns), true));
    }
    demo_mode(tpg).then(|| (Arc::clone(&tpg.luns), false))
}

pub fn find_acl<'a>(tpg: &'a TpgConfig, initiator: &str) -> Option<&'a crate::AclConfig> {
    tpg.acls
        .iter()
        .find(|a| a.initiator.eq_ignore_ascii_case(initiator))
}

/// `generate_node_acls=1`: initiators without an ACL log in and see the
/// TPG's LUNs.
pub fn demo_mode(tpg: &TpgConfig) -> bool {
    tpg.attributes.generate_node_acls
}

/// Shared between the server's registry and the session's thread.
pub struct SessionLive {
    /// Bumped (Release) after every `install`; the session compares it with
    /// the epoch it last loaded.
    pub epoch: AtomicU64,
    view: Mutex<LunView>,
    pub local: SocketAddr,
    pub cid: u16,
    /// The table comes from a node ACL (false: demo mode); follows `install`.
    pub acl: AtomicBool,
    pub authenticated: bool,
    pub params: SessionParams,
}

impl SessionLive {
    pub fn new(
        table: Arc<LunTable>,
        local: SocketAddr,
        cid: u16,
        acl: bool,
        authenticated: bool,
        params: SessionParams,
    ) -> SessionLive {
        SessionLive {
            epoch: AtomicU64::new(0),
            view: Mutex::new(LunView::new(table)),
            local,
            cid,
            acl: AtomicBool::new(acl),
            authenticated,
            params,
        }
    }

    pub fn view(&self) -> LunView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Give the session `table` (from an ACL or not) unless it already has
    /// an equal one. Returns whether the table changed.
    pub fn install(&self, table: Arc<LunTable>, acl: bool) -> bool {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        self.acl.store(acl, Ordering::Relaxed);
        if same_table(&v.table, &table) {
            return false;
        }
        *v = v.successor(table);
        self.epoch.fetch_add(1, Ordering::Release);
        true
    }

    /// Per-LUN counters for `sessions detail`.
    pub fn lun_io(&self) -> Vec<LunIo> {
        let v = self.view();
        v.table
            .luns
            .iter()
            .zip(v.counters.iter())
            .map(|(l, c)| LunIo {
                lun: l.id,
                device: l.device.options.name.clone(),
                write_protect: l.write_protect,
                commands: c.commands.load(Ordering::Relaxed),
                read_bytes: c.read_bytes.load(Ordering::Relaxed),
                write_bytes: c.write_bytes.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Negotiated parameters with their RFC 7143 key names.
pub fn param_list(p: &SessionParams) -> Vec<(String, String)> {
    let yn = |b: bool| if b { "Yes" } else { "No" }.to_string();
    let dg = |b: bool| if b { "CRC32C" } else { "None" }.to_string();
    vec![
        ("HeaderDigest".into(), dg(p.header_digest)),
        ("DataDigest".into(), dg(p.data_digest)),
        ("MaxConnections".into(), p.max_connections.to_string()),
        ("InitialR2T".into(), yn(p.initial_r2t)),
        ("ImmediateData".into(), yn(p.immediate_data)),
        (
            "MaxRecvDataSegmentLength".into(),
            p.target_mrdsl.to_string(),
        ),
        (
            "MaxXmitDataSegmentLength".into(),
            p.initiator_mrdsl.to_string(),
        ),
        ("MaxBurstLength".into(), p.max_burst_length.to_string()),
        ("FirstBurstLength".into(), p.first_burst_length.to_string()),
        ("DefaultTime2Wait".into(), p.default_time2wait.to_string()),
        (
            "DefaultTime2Retain".into(),
            p.default_time2retain.to_string(),
        ),
        (
            "MaxOutstandingR2T".into(),
            p.max_outstanding_r2t.to_string(),
        ),
        ("DataPDUInOrder".into(), yn(p.data_pdu_in_order)),
        ("DataSequenceInOrder".into(), yn(p.data_sequence_in_order)),
        (
            "ErrorRecoveryLevel".into(),
            p.error_recovery_level.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use target_core::{Device, DeviceOptions, Lun};

    fn dev(name: &str) -> Arc<Device> {
        let b = Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
        Device::new(DeviceOptions::new(name, "uuid"), b)
    }

    fn table(l: &[(u64, &Arc<Device>, bool)]) -> Arc<LunTable> {
        Arc::new(LunTable {
            luns: l
                .iter()
                .map(|(id, d, wp)| Lun {
                    id: *id,
                    device: Arc::clone(d),
                    write_protect: *wp,
                })
                .collect(),
        })
    }

    #[test]
    fn install_swaps_only_real_changes_and_keeps_counters() {
        let (a, b) = (dev("a"), dev("b"));
        let live = SessionLive::new(
            table(&[(0, &a, false)]),
            "127.0.0.1:3260".parse().unwrap(),
            0,
            false,
            false,
            SessionParams::default(),
        );
        live.view().counters[0]
            .commands
            .fetch_add(5, Ordering::Relaxed);
        // Equal table (new Arc, same content): no epoch bump.
        assert!(!live.install(table(&[(0, &a, false)]), false));
        assert_eq!(live.epoch.load(Ordering::Acquire), 0);
        assert!(live.install(table(&[(0, &a, false), (1, &b, false)]), false));
        assert_eq!(live.epoch.load(Ordering::Acquire), 1);
        let io = live.lun_io();
        assert_eq!((io[0].lun, io[0].commands), (0, 5));
        assert_eq!((io[1].lun, io[1].commands), (1, 0));
        // write_protect flips count as a change.
        assert!(live.install(table(&[(0, &a, true), (1, &b, false)]), true));
        assert!(live.acl.load(Ordering::Relaxed));
    }

    #[test]
    fn acl_or_demo_mode_decides_the_table() {
        let a = dev("a");
        let mut tpg = TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![],
            luns: table(&[(0, &a, false)]),
            acls: vec![crate::AclConfig {
                initiator: "iqn.x:Init".into(),
                luns: table(&[(3, &a, true)]),
                chap: None,
                attributes: Default::default(),
            }],
            attributes: Default::default(),
            chap: None,
            offer: Default::default(),
        };
        let (t, acl) = table_for(&tpg, "IQN.X:init").unwrap();
        assert!(acl && t.luns[0].id == 3);
        assert!(table_for(&tpg, "iqn.other").is_none());
        tpg.attributes.generate_node_acls = true;
        let (t, acl) = table_for(&tpg, "iqn.other").unwrap();
        assert!(!acl && t.luns[0].id == 0);
    }
}
