//! Text requests in the full feature phase (RFC 7143 §11.10-11.11): joining
//! continued requests (C bit), SendTargets answers built from the target
//! table (a wildcard portal advertises the connection's local address),
//! other keys through the negotiator, and long answers split across Text
//! Responses with a target transfer tag the initiator echoes to get more.

use std::net::SocketAddr;
use std::sync::Arc;

use iscsi_wire::negotiate::Stage;
use iscsi_wire::request::TextRequest;
use iscsi_wire::response::{RejectReason, TextResponse};
use iscsi_wire::text::{encode_pairs, parse_pairs, push_pair, TextAccumulator};
use iscsi_wire::{Bhs, Frame, RESERVED_TAG};

use crate::session::{Action, Session};
use crate::txq::TxQueue;
use crate::TargetConfig;

/// A Text exchange in progress.
#[derive(Default)]
pub struct TextState {
    acc: TextAccumulator,
    /// Rest of a long answer and the tag that asks for it.
    pending: Vec<u8>,
    sent: usize,
    ttt: u32,
    itt: u32,
}

/// `TargetAddress` value of one portal.
fn address(p: SocketAddr, local: SocketAddr, tag: u16) -> String {
    let ip = if p.ip().is_unspecified() {
        local.ip()
    } else {
        p.ip()
    };
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{},{tag}", p.port()),
        std::net::IpAddr::V6(a) => format!("[{a}]:{},{tag}", p.port()),
    }
}

/// The SendTargets answer for `targets` as `initiator` may see it: as in
/// LIO, a TPG without demo mode and with `demo_mode_discovery=0` is listed
/// only to initiators that have an ACL in it.
pub fn send_targets(targets: &[Arc<TargetConfig>], local: SocketAddr, initiator: &str) -> Vec<u8> {
    let visible = |g: &crate::TpgConfig| {
        g.attributes.demo_mode_discovery || crate::sessions::table_for(g, initiator).is_some()
    };
    let mut out = Vec::new();
    for t in targets {
        let tpgs: Vec<_> = t.tpgs.iter().filter(|g| g.enable && visible(g)).collect();
        if tpgs.is_empty() {
            continue;
        }
        push_pair(&mut out, "TargetName", &t.iqn);
        for g in tpgs {
            for p in &g.portals {
                push_pair(&mut out, "TargetAddress", &address(*p, local, g.tag));
            }
        }
    }
    out
}

impl Session {
    pub fn text_request(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let t = TextRequest::parse(&f.bhs);
        if !self.accept_cmdsn(t.immediate, t.cmdsn) {
            return Action::Continue;
        }
        if t.ttt != RESERVED_TAG {
            if t.ttt == self.text.ttt && t.itt == self.text.itt && !self.text.pending.is_empty() {
                self.send_text_chunk(t, tx);
            } else {
                self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
            }
            return Action::Continue;
        }
        // A new request ends any unfinished long answer.
        self.text.pending.clear();
        self.text.sent = 0;
        let all = match self.text.acc.push(f.data, t.cont) {
            Ok(Some(all)) => all,
            Ok(None) => {
                // Ask for the rest of a continued request.
                let ttt = self.alloc_ttt();
                self.text.ttt = ttt;
                self.text.itt = t.itt;
                let r = TextResponse {
                    final_bit: false,
                    cont: false,
                    lun: t.lun,
                    itt: t.itt,
                    ttt,
                    sn: self.sn_next(),
                };
                let mut b = Bhs::default();
                r.write_to(&mut b);
                tx.push_pdu(&b, &[], self.digests);
                return Action::Continue;
            }
            Err(_) => {
                self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
                return Action::Continue;
            }
        };
        let Ok(pairs) = parse_pairs(&all) else {
            self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
            return Action::Continue;
        };
        let mut answer = Vec::new();
        if let Some(st) = pairs.iter().find(|p| p.key == "SendTargets") {
            let targets: Vec<Arc<TargetConfig>> = match st.value.as_str() {
                "All" => self.shared.all_targets(),
                "" => self.target.iter().cloned().collect(),
                iqn => self.shared.target(iqn).into_iter().collect(),
            };
            answer = send_targets(&targets, self.local, &self.initiator_name);
        }
        let others: Vec<_> = pairs
            .into_iter()
            .filter(|p| p.key != "SendTargets")
            .collect();
        if !others.is_empty() {
            match self.neg.respond(&others, Stage::FullFeature) {
                Ok(a) => {
                    answer.extend_from_slice(&encode_pairs(&a));
                    self.params.initiator_mrdsl = self.neg.params.initiator_mrdsl;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "text negotiation error");
                    self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
                    return Action::Continue;
                }
            }
        }
        self.text.pending = answer;
        self.text.sent = 0;
        self.text.itt = t.itt;
        self.send_text_chunk(t, tx);
        Action::Continue
    }

    fn send_text_chunk(&mut self, t: TextRequest, tx: &mut TxQueue) {
        let max = (self.params.initiator_mrdsl as usize).max(512);
        let rest = self.text.pending.len() - self.text.sent;
        let n = rest.min(max);
        let last = n == rest;
        let ttt = if last { RESERVED_TAG } else { self.alloc_ttt() };
        self.text.ttt = ttt;
        let r = TextResponse {
            final_bit: last,
            cont: !last,
            lun: t.lun,
            itt: t.itt,
            ttt,
            sn: self.sn_next(),
        };
        let mut b = Bhs::default();
        r.write_to(&mut b);
        let start = self.text.sent;
        tx.push_pdu(&b, &self.text.pending[start..start + n], self.digests);
        self.text.sent += n;
        if last {
            self.text.pending.clear();
            self.text.sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TpgConfig;
    use target_core::LunTable;

    fn target(iqn: &str, portals: &[&str], enable: bool) -> Arc<TargetConfig> {
        Arc::new(TargetConfig {
            iqn: iqn.into(),
            tpgs: vec![TpgConfig {
                tag: 1,
                relative_port_id: 1,
                enable,
                portals: portals.iter().map(|p| p.parse().unwrap()).collect(),
                luns: Arc::new(LunTable::default()),
                acls: vec![],
                attributes: Default::default(),
                chap: None,
                offer: Default::default(),
            }],
        })
    }

    #[test]
    fn send_targets_lists_enabled_targets_and_resolves_wildcards() {
        let local: SocketAddr = "127.0.0.1:3260".parse().unwrap();
        let ts = vec![
            target("iqn.a", &["0.0.0.0:3260"], true),
            target("iqn.b", &["10.0.0.1:3261", "[::1]:3260"], true),
            target("iqn.off", &["10.0.0.1:3260"], false),
        ];
        let got = parse_pairs(&send_targets(&ts, local, "iqn.x")).unwrap_or_default();
        let _ = got;
        let raw = send_targets(&ts, local, "iqn.x");
        let text = String::from_utf8(raw).unwrap();
        assert_eq!(
            text,
            "TargetName=iqn.a\0TargetAddress=127.0.0.1:3260,1\0\
             TargetName=iqn.b\0TargetAddress=10.0.0.1:3261,1\0TargetAddress=[::1]:3260,1\0"
        );
    }

    #[test]
    fn hidden_tpgs_are_listed_only_to_their_acls() {
        let local: SocketAddr = "127.0.0.1:3260".parse().unwrap();
        let mut t = (*target("iqn.h", &["127.0.0.1:3260"], true)).clone();
        let a = &mut t.tpgs[0].attributes;
        a.generate_node_acls = false;
        a.demo_mode_discovery = false;
        t.tpgs[0].acls.push(crate::AclConfig {
            initiator: "iqn.member".into(),
            luns: Arc::new(LunTable::default()),
            chap: None,
            attributes: Default::default(),
        });
        let ts = vec![Arc::new(t)];
        assert!(send_targets(&ts, local, "iqn.stranger").is_empty());
        let text = String::from_utf8(send_targets(&ts, local, "iqn.member")).unwrap();
        assert!(text.starts_with("TargetName=iqn.h\0"), "{text}");
    }
}
