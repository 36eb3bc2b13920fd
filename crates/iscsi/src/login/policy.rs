//! Who may log in how: the TPG a connection reaches and what its
//! configuration offers (AuthMethod from the `authentication` attributes and
//! the credentials of the TPG or the initiator's ACL). Pure functions of the
//! configuration, shared by the login machine and the live-session checks.

use std::net::SocketAddr;

use iscsi_wire::chap::ChapCredentials;
use iscsi_wire::negotiate::{AuthMethod, TargetOffer};

use crate::{AclConfig, TargetConfig, TpgConfig};

/// The TPG a connection reached: the enabled one with a portal matching the
/// local address (wildcard portals match any address with their port),
/// otherwise the first enabled one.
pub(crate) fn pick_tpg(t: &TargetConfig, local: SocketAddr) -> Option<TpgConfig> {
    let enabled = || t.tpgs.iter().filter(|g| g.enable);
    enabled()
        .find(|g| {
            g.portals
                .iter()
                .any(|p| *p == local || (p.ip().is_unspecified() && p.port() == local.port()))
        })
        .or_else(|| enabled().next())
        .cloned()
}

/// Who authenticates how: the credentials to check and whether CHAP is
/// required, for an initiator with or without an ACL.
pub(crate) struct AuthPolicy {
    pub creds: Option<ChapCredentials>,
    /// `Some`: decided by the ACL; `None`: the TPG's `authentication`.
    pub required: Option<bool>,
}

pub(crate) fn auth_policy(tpg: &TpgConfig, acl: Option<&AclConfig>) -> AuthPolicy {
    match acl {
        Some(a) => AuthPolicy {
            creds: a.chap.clone(),
            required: a
                .attributes
                .authentication
                .or_else(|| a.chap.is_some().then_some(true)),
        },
        None => AuthPolicy {
            creds: tpg.chap.clone(),
            required: None,
        },
    }
}

/// What a new login of an initiator (with `acl` or without) must prove:
/// `None` when a login without CHAP is accepted, else the credentials CHAP
/// checks (`Some(None)`: CHAP required with nothing to check against, so
/// no login passes). Live sessions are held to the same rule when the
/// configuration changes under them (`sessions::live_access`).
pub(crate) fn login_requires(
    tpg: &TpgConfig,
    acl: Option<&AclConfig>,
) -> Option<Option<ChapCredentials>> {
    let offer = build_offer_for(Some(tpg), acl);
    (!offer.auth_methods.contains(&AuthMethod::None)).then(|| auth_policy(tpg, acl).creds)
}

pub(crate) fn build_offer(tpg: Option<&TpgConfig>) -> TargetOffer {
    build_offer_for(tpg, None)
}

pub(crate) fn build_offer_for(tpg: Option<&TpgConfig>, acl: Option<&AclConfig>) -> TargetOffer {
    let mut offer = TargetOffer::default();
    if let Some(t) = tpg {
        let policy = auth_policy(t, acl);
        offer = t.offer.clone();
        // What this fabric implements caps what a configuration may offer.
        // MaxConnections is the TPG's (LIO's default, 1, unless set):
        // sessions may carry several connections (MC/S, `session_core`).
        offer.error_recovery_level = 0;
        // As in LIO, the `authentication` attribute decides over the
        // AuthMethod parameter (whose targetcli default is "CHAP,None").
        // An ACL's own rule (credentials set, or its attribute) decides
        // before the TPG's.
        match policy.required.or(t.attributes.authentication) {
            Some(true) => offer.auth_methods = vec![AuthMethod::Chap],
            Some(false) => offer.auth_methods = vec![AuthMethod::None],
            None => {}
        }
        // Never pick CHAP when there is nothing to check it against and
        // None is acceptable.
        if policy.creds.is_none() && offer.auth_methods.contains(&AuthMethod::None) {
            offer.auth_methods.retain(|m| *m != AuthMethod::Chap);
        }
    }
    offer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A TPG with `authentication` (`None`: not in the file), CHAP
    /// credentials or not, and these parameters.
    fn tpg(auth: Option<bool>, creds: bool, params: &[(&str, &str)]) -> TpgConfig {
        TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![],
            luns: Arc::new(target_core::LunTable::default()),
            acls: vec![],
            attributes: config::TpgAttributes {
                authentication: auth,
                ..Default::default()
            },
            chap: creds.then(|| ChapCredentials {
                userid: "u".into(),
                password: "p".into(),
                mutual_userid: None,
                mutual_password: None,
            }),
            offer: crate::tpg_offer(params.iter().copied()).unwrap(),
        }
    }

    #[test]
    fn auth_methods_offered() {
        use AuthMethod::{Chap, None as No};
        let both = [("AuthMethod", "CHAP,None")];
        type Case<'a> = (
            Option<bool>,
            bool,
            &'a [(&'a str, &'a str)],
            Vec<AuthMethod>,
        );
        let cases: Vec<Case> = vec![
            (None, false, &[], vec![No]),
            (Some(false), false, &both, vec![No]),
            (None, false, &both, vec![No]),
            (None, true, &both, vec![Chap, No]),
            (Some(true), false, &[], vec![Chap]),
            (Some(true), true, &[("AuthMethod", "None")], vec![Chap]),
        ];
        for (a, c, p, want) in cases {
            assert_eq!(
                build_offer(Some(&tpg(a, c, p))).auth_methods,
                want,
                "{a:?} {c} {p:?}"
            );
        }
    }

    #[test]
    fn tpg_parameters_reach_the_offer() {
        let o = build_offer(Some(&tpg(
            None,
            false,
            &[("MaxRecvDataSegmentLength", "8192"), ("InitialR2T", "Yes")],
        )));
        assert_eq!(o.max_recv_data_segment_length, 8192);
        assert!(o.initial_r2t);
        // ERL beyond what is implemented is never offered; MaxConnections
        // is the TPG's.
        let o = build_offer(Some(&tpg(
            None,
            false,
            &[("ErrorRecoveryLevel", "2"), ("MaxConnections", "8")],
        )));
        assert_eq!((o.error_recovery_level, o.max_connections), (0, 8));
        assert_eq!(build_offer(Some(&tpg(None, false, &[]))).max_connections, 1);
        assert_eq!(build_offer(None), TargetOffer::default());
    }
}
