//! Who can log in to a TPG, as the iSCSI fabric's login decides it (an
//! ACL's `authentication` attribute, else its credentials, else the TPG's
//! `authentication` with the TPG's credentials for initiators without an
//! ACL): validation warns about configurations where nobody, or one ACL's
//! initiator, cannot log in.

use serde_json::{Map, Value};

use crate::model::Tpg;
use crate::validate::Report;

/// `chap_userid` and `chap_password` both set (the fabric ignores one
/// without the other).
pub(crate) fn creds_complete(m: &Map<String, Value>) -> bool {
    let has = |k: &str| m.get(k).is_some_and(|v| !crate::value_string(v).is_empty());
    has("chap_userid") && has("chap_password")
}

/// Who can log in to the TPG, as the fabric decides it (iscsi login's
/// auth policy): warn when nobody can, or when an ACL's initiator cannot.
pub(crate) fn check_logins(
    r: &mut Report,
    loc: &str,
    tpg: &Tpg,
    a: &crate::TpgAttributes,
    tpg_creds: bool,
) {
    let tpg_auth = a.authentication == Some(true);
    let no_acl_no_demo = !a.generate_node_acls && tpg.node_acls.is_empty();
    if no_acl_no_demo {
        r.warn(
            loc,
            "generate_node_acls=0 and no node ACLs: no initiator can log in until an ACL is created (acls create IQN) or generate_node_acls=1",
        );
    }
    // Initiators without an ACL: the TPG's rule and credentials.
    let demo_ok = a.generate_node_acls && (!tpg_auth || tpg_creds);
    let mut acl_ok = false;
    for (i, acl) in tpg.node_acls.iter().enumerate() {
        // An ACL's own attribute decides; else its credentials require
        // CHAP; else the TPG's attribute applies.
        let own = crate::AclAttributes::parse(&acl.attributes)
            .ok()
            .and_then(|x| x.authentication);
        let creds = creds_complete(&acl.extra);
        let required = own.unwrap_or(creds || tpg_auth);
        if !required || creds {
            acl_ok = true;
        } else if tpg_auth && own.is_none() {
            r.warn(
                &format!("{loc} / node_acls[{i}] {}", acl.node_wwn),
                "authentication=1 but this ACL has no CHAP credentials (chap_userid/chap_password): its initiator cannot log in",
            );
        }
    }
    if tpg_auth && !demo_ok && !acl_ok && !no_acl_no_demo {
        r.warn(
            loc,
            "authentication=1 but neither the TPG (for initiators without an ACL, generate_node_acls=1) nor any ACL has CHAP credentials (chap_userid/chap_password): every login will be refused",
        );
    } else if tpg_auth && tpg_creds && !a.generate_node_acls {
        r.warn(
            loc,
            "the TPG's CHAP credentials are used only for initiators without an ACL (generate_node_acls=1); with generate_node_acls=0 each ACL needs its own (set auth in the ACL)",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{base, cfg};
    use crate::validate::validate;
    use serde_json::{json, Value};

    #[test]
    fn tpg_chap_warnings() {
        let warn = |extra: Value, attrs: Value| -> Vec<String> {
            let mut v = base();
            let tpg = v["targets"][0]["tpgs"][0].as_object_mut().unwrap();
            tpg.insert("attributes".into(), attrs);
            for (k, x) in extra.as_object().unwrap() {
                tpg.insert(k.clone(), x.clone());
            }
            validate(&cfg(v))
                .unwrap()
                .iter()
                .map(|i| i.to_string())
                .collect()
        };
        let creds = json!({"chap_userid": "u", "chap_password": "secretsecret"});
        let on = json!({"authentication": 1, "generate_node_acls": 1});
        assert_eq!(warn(creds.clone(), on.clone()), Vec::<String>::new());
        let w = warn(json!({}), on);
        assert!(
            w.iter().any(|m| m.contains("every login will be refused")),
            "{w:?}"
        );
        let w = warn(creds, json!({"authentication": 1, "generate_node_acls": 0}));
        assert!(
            w.iter()
                .any(|m| m.contains("used only for initiators without an ACL")),
            "{w:?}"
        );
        let w = warn(json!({}), json!({"generate_node_acls": 0}));
        assert!(
            w.iter().any(|m| m.contains("no initiator can log in")),
            "{w:?}"
        );
        let w = warn(json!({"chap_mutual_userid": "m"}), json!({}));
        assert!(
            w.iter().any(|m| m.contains("mutual CHAP needs both")),
            "{w:?}"
        );
    }

    /// Issue 9 item 3: a LIO configuration whose ACLs carry their own CHAP
    /// credentials (TPG authentication=1, none at the TPG) serves those
    /// initiators: no "every login will be refused". The warning stays for
    /// configurations where no login can succeed, and an ACL that cannot
    /// log in is named.
    #[test]
    fn chap_warning_only_when_no_login_can_succeed() {
        let warnings = |tpg_attrs: Value, acls: Value| -> Vec<String> {
            let mut v = base();
            v["targets"][0]["tpgs"][0]["attributes"] = tpg_attrs;
            v["targets"][0]["tpgs"][0]["node_acls"] = acls;
            validate(&cfg(v))
                .unwrap()
                .iter()
                .map(|i| i.to_string())
                .collect()
        };
        // As targetcli saves it: LIO's node attributes (authentication -1:
        // inherited), credentials on the ACL, empty ones on the TPG.
        let lio_acl = json!({"node_wwn": "iqn.1994-05.com.redhat:h1",
            "chap_userid": "h1", "chap_password": "h1secretsecret",
            "attributes": {"authentication": -1, "dataout_timeout": 3, "dataout_timeout_retries": 5,
                "default_erl": 0, "nopin_response_timeout": 30, "nopin_timeout": 15,
                "random_datain_pdu_offsets": 0, "random_datain_seq_offsets": 0,
                "random_r2t_offsets": 0},
            "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": false}]});
        let lio_tpg = json!({"authentication": 1, "cache_dynamic_acls": 0,
            "default_cmdsn_depth": 64, "default_erl": 0, "demo_mode_discovery": 1,
            "demo_mode_write_protect": 1, "fabric_prot_type": 0, "generate_node_acls": 0,
            "login_keys_workaround": 1, "login_timeout": 15, "netif_timeout": 2,
            "prod_mode_write_protect": 0, "t10_pi": 0, "tpg_enabled_sendtargets": 1});
        let w = warnings(lio_tpg.clone(), json!([lio_acl.clone()]));
        assert_eq!(w, Vec::<String>::new());
        // Demo mode on as well, still no TPG credentials: the ACL works.
        let mut demo = lio_tpg.clone();
        demo["generate_node_acls"] = json!(1);
        let w = warnings(demo, json!([lio_acl.clone()]));
        assert!(!w.iter().any(|m| m.contains("every login")), "{w:?}");
        // An ACL that opts out of CHAP can log in too.
        let w = warnings(
            lio_tpg.clone(),
            json!([{"node_wwn": "iqn.1994-05.com.redhat:h2", "attributes": {"authentication": 0}}]),
        );
        assert!(!w.iter().any(|m| m.contains("every login")), "{w:?}");
        // No credentials anywhere: nobody can log in.
        let w = warnings(
            lio_tpg.clone(),
            json!([{"node_wwn": "iqn.1994-05.com.redhat:h2"}]),
        );
        assert!(
            w.iter().any(|m| m.contains("every login will be refused")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|m| m.contains("node_acls[0] iqn.1994-05.com.redhat:h2")
                    && m.contains("cannot log in")),
            "{w:?}"
        );
        // One ACL with, one without: only the one without is named.
        let w = warnings(
            lio_tpg,
            json!([lio_acl, {"node_wwn": "iqn.1994-05.com.redhat:h2"}]),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("h2") && w[0].contains("cannot log in"),
            "{w:?}"
        );
    }
}
