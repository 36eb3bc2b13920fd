//! TARGET WARM / COLD RESET and LIO's node attributes `tmr_warm_reset` /
//! `tmr_cold_reset` (issue 9, likely items): a reset reaches every
//! initiator (a warm one resets every LU, a cold one ends every session),
//! so an ACL's initiator may reset the target only when its ACL allows it;
//! initiators without an ACL (demo mode) keep SAM's behaviour.

mod common;

use std::sync::Arc;

use common::*;
use iscsi::AclConfig;

const GUARDED: &str = "iqn.2026-11.org.rtarget:guarded";
const TRUSTED: &str = "iqn.2026-11.org.rtarget:trusted";

fn logged_in(addr: std::net::SocketAddr, initiator: &str) -> Client {
    let mut c = Client::connect(addr);
    c.initiator = initiator.into();
    c.login(Some(IQN), &[]);
    c.clear_ua();
    c
}

/// READ(10) of block 0 answers GOOD: the session lives and has no unit
/// attention pending (a reset would have queued one).
fn reads_clean(c: &mut Client) -> bool {
    c.read_cmd(&read10(0, 1), 512).0 == 0
}

#[test]
fn target_resets_need_the_acls_tmr_attributes() {
    let mut t = target(IQN, 1 << 20, &[]);
    let tpg = &mut t.tpgs[0];
    // Demo mode stays on: a third initiator logs in without an ACL.
    tpg.attributes.generate_node_acls = true;
    let acl = |name: &str, allowed: bool| AclConfig {
        initiator: name.into(),
        luns: Arc::clone(&tpg.luns),
        chap: None,
        attributes: config::AclAttributes {
            tmr_warm_reset: allowed,
            tmr_cold_reset: allowed,
            ..Default::default()
        },
    };
    // As imported from LIO: the node attributes are 0.
    tpg.acls = vec![acl(GUARDED, false), acl(TRUSTED, true)];
    let srv = iscsi::IscsiServer::new();
    srv.set_target(t);
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();

    let mut guarded = logged_in(addr, GUARDED);
    let mut trusted = logged_in(addr, TRUSTED);
    let mut demo = logged_in(addr, INITIATOR);

    // Refused as LIO refuses it: "authorization failed", nothing reset.
    assert_eq!(guarded.tmf_code(7), 6, "TARGET COLD RESET");
    assert_eq!(guarded.tmf_code(6), 6, "TARGET WARM RESET");
    assert!(reads_clean(&mut trusted), "other initiator disturbed");
    assert!(reads_clean(&mut demo), "other initiator disturbed");
    assert!(reads_clean(&mut guarded), "refused reset still acted");
    assert_eq!(srv.sessions().len(), 3);

    // Allowed by the ACL: the warm reset resets the LUs for everyone.
    assert_eq!(trusted.tmf_code(6), 0, "TARGET WARM RESET (allowed)");
    assert!(
        !reads_clean(&mut guarded),
        "no unit attention after a reset"
    );
    guarded.clear_ua();
    demo.clear_ua();
    trusted.clear_ua();

    // Without an ACL (demo mode): SAM's behaviour, as before.
    assert_eq!(demo.tmf_code(6), 0, "TARGET WARM RESET (demo mode)");
    assert_eq!(demo.tmf_code(7), 0, "TARGET COLD RESET (demo mode)");
    assert!(demo.closed());
    assert!(guarded.closed());
    assert!(trusted.closed());
    srv.shutdown();
}
