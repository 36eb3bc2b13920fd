//! The session view of the API (`sessions`, `sessions detail`): what the
//! daemon makes of the iSCSI fabric's session structs and what the client
//! prints, one type for both.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A guest attached to a vhost target, as `sessions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhostGuest {
    /// The nexus WWN (the guest's initiator port).
    pub nexus: String,
    pub target: String,
    pub tpg: u16,
    pub socket: String,
}

/// A gateway of a shared medium, as `sessions` lists it
/// ([`backstore::GatewayReport`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayState {
    pub storage_object: String,
    /// `pool/image`.
    pub medium: String,
    /// The summary line `ls` shows under the storage object.
    pub state: String,
    pub group: u16,
    pub lock_owner: bool,
    pub failovers: u64,
    pub fenced: u64,
    pub blocklisted: Vec<String>,
}

impl GatewayState {
    pub fn new(storage_object: &str, r: &backstore::GatewayReport) -> GatewayState {
        GatewayState {
            storage_object: storage_object.to_string(),
            medium: r.medium.clone(),
            state: r.summary(),
            group: r.group,
            lock_owner: r.lock_owner,
            failovers: r.failovers,
            fenced: r.fenced,
            blocklisted: r.blocklisted.clone(),
        }
    }
}

/// One logged-in session, as `sessions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub initiator: String,
    /// Hex, 12 digits.
    pub isid: String,
    pub target: String,
    pub tpg: u16,
    pub tsih: u16,
    pub peer: SocketAddr,
    /// CIDs of the session's connections (several with MC/S).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cids: Vec<u16>,
}

/// One session in detail (`sessions` with `"detail": true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionSummary,
    pub acl: AclKind,
    /// CHAP authenticated the initiator.
    pub authenticated: bool,
    pub connections: Vec<Connection>,
    /// Negotiated operational parameters, RFC 7143 key names, in the
    /// fabric's order.
    #[serde(with = "pairs")]
    pub parameters: Vec<(String, String)>,
    /// The LUNs the session sees, with counters since login.
    pub luns: Vec<LunIo>,
}

/// How a session got its access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclKind {
    /// Through a node ACL.
    Explicit,
    /// Demo mode (`generate_node_acls=1`).
    Generated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub cid: u16,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LunIo {
    pub lun: u64,
    pub storage_object: String,
    pub write_protect: bool,
    pub commands: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl From<&iscsi::SessionInfo> for SessionSummary {
    fn from(s: &iscsi::SessionInfo) -> Self {
        SessionSummary {
            initiator: s.initiator.clone(),
            isid: s.isid.iter().map(|b| format!("{b:02x}")).collect(),
            target: s.target.clone(),
            tpg: s.tpg_tag,
            tsih: s.tsih,
            peer: s.peer,
            cids: s.cids.clone(),
        }
    }
}

impl From<&iscsi::SessionDetail> for SessionDetail {
    fn from(d: &iscsi::SessionDetail) -> Self {
        SessionDetail {
            session: (&d.info).into(),
            acl: if d.acl {
                AclKind::Explicit
            } else {
                AclKind::Generated
            },
            authenticated: d.authenticated,
            // Every connection of the session (MC/S); the leading one when
            // the fabric lists none.
            connections: if d.connections.is_empty() {
                vec![Connection {
                    cid: d.cid,
                    peer: d.info.peer,
                    local: d.local,
                }]
            } else {
                d.connections
                    .iter()
                    .map(|c| Connection {
                        cid: c.cid,
                        peer: c.peer,
                        local: c.local,
                    })
                    .collect()
            },
            parameters: d.parameters.clone(),
            luns: d
                .luns
                .iter()
                .map(|l| LunIo {
                    lun: l.lun,
                    storage_object: l.device.clone(),
                    write_protect: l.write_protect,
                    commands: l.commands,
                    read_bytes: l.read_bytes,
                    write_bytes: l.write_bytes,
                })
                .collect(),
        }
    }
}

/// Ordered `(name, value)` pairs as a JSON object.
mod pairs {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, x) in v {
            m.serialize_entry(k, x)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of name: string")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = a.next_entry()? {
                    v.push(kv);
                }
                Ok(v)
            }
        }
        d.deserialize_map(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The daemon's view of a fabric session is what the client decodes.
    #[test]
    fn session_detail_from_the_fabric() {
        let peer: SocketAddr = "127.0.0.1:40512".parse().unwrap();
        let d = iscsi::SessionDetail {
            info: iscsi::SessionInfo {
                initiator: "iqn.i".into(),
                isid: [0x40, 0, 1, 0x37, 0, 0xab],
                target: "iqn.t".into(),
                tpg_tag: 2,
                tsih: 9,
                peer,
                cids: vec![0, 1],
            },
            local: "[::1]:3260".parse().unwrap(),
            cid: 0,
            connections: vec![
                iscsi::ConnectionInfo {
                    cid: 0,
                    peer,
                    local: "[::1]:3260".parse().unwrap(),
                },
                iscsi::ConnectionInfo {
                    cid: 1,
                    peer: "127.0.0.1:40513".parse().unwrap(),
                    local: "[::1]:3260".parse().unwrap(),
                },
            ],
            acl: false,
            authenticated: false,
            parameters: vec![("MaxBurstLength".into(), "262144".into())],
            luns: vec![iscsi::LunIo {
                lun: 3,
                device: "r0".into(),
                write_protect: false,
                commands: 5,
                read_bytes: 512,
                write_bytes: 0,
            }],
        };
        let ours = SessionDetail::from(&d);
        let wire = serde_json::to_value(&ours).unwrap();
        assert_eq!(wire["isid"], "4000013700ab");
        assert_eq!(wire["tpg"], 2);
        assert_eq!(wire["acl"], "generated");
        assert_eq!(wire["connections"][0]["local"], "[::1]:3260");
        assert_eq!(wire["connections"][1]["cid"], 1);
        assert_eq!(wire["cids"], json!([0, 1]));
        assert_eq!(wire["parameters"], json!({"MaxBurstLength": "262144"}));
        assert_eq!(wire["luns"][0]["storage_object"], "r0");
        let back: SessionDetail = serde_json::from_value(wire).unwrap();
        assert_eq!(back, ours);
    }
}
