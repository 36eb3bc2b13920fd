//! The management API's wire types (docs/api.md): one JSON object per line
//! each way. The daemon ([`crate::api`]) decodes a [`Request`] and answers
//! an [`Answer`] of one of the response structs below; the client
//! ([`crate::client`], [`crate::shell`]) builds the same [`Request`] values
//! and decodes the same response structs, so an op name or a field is
//! spelled in one place. The types depend on serde, and for the session
//! view on the iSCSI fabric's structs they are made from.

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

pub mod session;
pub use session::{AclKind, GatewayState, SessionDetail, SessionSummary, VhostGuest};
pub mod stats;
pub use stats::Stats;

/// Every op, in the order error messages list them.
pub const OPS: &[&str] = &[
    "ls",
    "info",
    "create",
    "delete",
    "set",
    "get",
    "enable",
    "disable",
    "resize",
    "saveconfig",
    "restoreconfig",
    "clearconfig",
    "sessions",
    "stats",
    "ping",
];

/// One request. Fields the client leaves empty are not sent; the daemon
/// takes a missing or `null` field as empty (`path`: `/`). Unknown fields
/// are ignored, so older and newer clients interoperate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Ls {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
        /// Levels below `path` (`None`: the whole subtree; 0: the node only).
        #[serde(
            default,
            deserialize_with = "de_depth",
            skip_serializing_if = "Option::is_none"
        )]
        depth: Option<u64>,
        /// Columns of the rendered text (default 80).
        #[serde(
            default,
            deserialize_with = "de_width",
            skip_serializing_if = "Option::is_none"
        )]
        width: Option<u64>,
    },
    Info {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
    },
    Create {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
        #[serde(
            default,
            deserialize_with = "de_argv",
            skip_serializing_if = "Vec::is_empty"
        )]
        argv: Vec<String>,
        #[serde(
            default,
            deserialize_with = "de_object",
            skip_serializing_if = "Map::is_empty"
        )]
        args: Map<String, Value>,
    },
    Delete {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
        #[serde(
            default,
            deserialize_with = "de_argv",
            skip_serializing_if = "Vec::is_empty"
        )]
        argv: Vec<String>,
        #[serde(
            default,
            deserialize_with = "de_object",
            skip_serializing_if = "Map::is_empty"
        )]
        args: Map<String, Value>,
    },
    Set {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
        #[serde(default, deserialize_with = "de_group")]
        group: String,
        /// Name to value (strings, numbers, booleans).
        #[serde(
            default,
            deserialize_with = "de_object",
            skip_serializing_if = "Map::is_empty"
        )]
        values: Map<String, Value>,
        /// `name=value` words.
        #[serde(
            default,
            deserialize_with = "de_argv",
            skip_serializing_if = "Vec::is_empty"
        )]
        argv: Vec<String>,
    },
    Get {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
        #[serde(default, deserialize_with = "de_group")]
        group: String,
        /// Empty (with `argv`): every name of the group.
        #[serde(
            default,
            deserialize_with = "de_names",
            skip_serializing_if = "Vec::is_empty"
        )]
        names: Vec<String>,
        #[serde(
            default,
            deserialize_with = "de_argv",
            skip_serializing_if = "Vec::is_empty"
        )]
        argv: Vec<String>,
    },
    Enable {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
    },
    Disable {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
    },
    Resize {
        #[serde(default = "root", deserialize_with = "de_path")]
        path: String,
        /// `None`: the first word of `argv`, else the device's own size.
        #[serde(
            default,
            deserialize_with = "de_size",
            skip_serializing_if = "Option::is_none"
        )]
        size: Option<Size>,
        #[serde(
            default,
            deserialize_with = "de_argv",
            skip_serializing_if = "Vec::is_empty"
        )]
        argv: Vec<String>,
    },
    Saveconfig {
        /// `None`: the daemon's `--config` file.
        #[serde(
            default,
            deserialize_with = "de_file",
            skip_serializing_if = "Option::is_none"
        )]
        file: Option<String>,
    },
    Restoreconfig {
        #[serde(
            default,
            deserialize_with = "de_file",
            skip_serializing_if = "Option::is_none"
        )]
        file: Option<String>,
    },
    Clearconfig {
        /// Must be true: clearing deletes everything.
        #[serde(default, deserialize_with = "de_confirm")]
        confirm: bool,
    },
    Sessions {
        #[serde(
            default,
            deserialize_with = "de_detail",
            skip_serializing_if = "is_false"
        )]
        detail: bool,
    },
    /// Every storage object's core counters ([`Stats`]).
    Stats,
}

/// `resize`'s size: `"2G"`, `"+1G"` (grow by), or a byte count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Bytes(n) => write!(f, "{n}"),
            Size::Text(s) => f.write_str(s),
        }
    }
}

impl Request {
    /// The op name on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Ls { .. } => "ls",
            Request::Info { .. } => "info",
            Request::Create { .. } => "create",
            Request::Delete { .. } => "delete",
            Request::Set { .. } => "set",
            Request::Get { .. } => "get",
            Request::Enable { .. } => "enable",
            Request::Disable { .. } => "disable",
            Request::Resize { .. } => "resize",
            Request::Saveconfig { .. } => "saveconfig",
            Request::Restoreconfig { .. } => "restoreconfig",
            Request::Clearconfig { .. } => "clearconfig",
            Request::Sessions { .. } => "sessions",
            Request::Stats => "stats",
        }
    }

    /// The tree path the request is about, as sent (for the log; never
    /// the whole request, whose `set auth` values are secrets).
    pub fn path(&self) -> Option<&str> {
        match self {
            Request::Ls { path, .. }
            | Request::Info { path }
            | Request::Create { path, .. }
            | Request::Delete { path, .. }
            | Request::Set { path, .. }
            | Request::Get { path, .. }
            | Request::Enable { path }
            | Request::Disable { path }
            | Request::Resize { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Decode one request line. The errors name what is wrong (bad JSON,
    /// no or an unknown `op`, a field of the wrong type) for the answer.
    pub fn parse(line: &str) -> Result<Request, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
        let Value::Object(m) = &v else {
            return Err(
                "a request is a JSON object like {\"op\":\"ls\",\"path\":\"/\"}".to_string(),
            );
        };
        let ops = OPS.join(", ");
        let op = match m.get("op") {
            Some(Value::String(op)) => op.clone(),
            _ => return Err(format!("missing \"op\" ({ops})")),
        };
        if !OPS.contains(&op.as_str()) {
            return Err(format!("unknown op {op:?} ({ops})"));
        }
        Request::deserialize(v).map_err(|e| format!("bad {op:?} request: {e}"))
    }
}

fn root() -> String {
    "/".to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A field that is absent or `null` reads as `None`; a value of another
/// type gets `msg`, which names the field (serde's own message does not).
fn field<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
    msg: &str,
) -> Result<Option<T>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|_| de::Error::custom(msg)),
    }
}

fn de_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(field(d, "\"path\" must be a string")?.unwrap_or_else(root))
}

fn de_depth<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    field(d, "\"depth\" must be a non-negative integer")
}

fn de_width<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    field(d, "\"width\" must be a non-negative integer")
}

fn de_argv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(field(d, "\"argv\" must be an array of strings")?.unwrap_or_default())
}

fn de_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(field(d, "\"names\" must be an array of strings")?.unwrap_or_default())
}

fn de_object<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(field(d, "\"args\" and \"values\" must be objects of name: value")?.unwrap_or_default())
}

fn de_group<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(field(d, "\"group\" must be a string")?.unwrap_or_default())
}

fn de_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    field(d, "\"file\" must be a string")
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Size>, D::Error> {
    field(d, "\"size\" must be a string like \"2G\" or a byte count")
}

fn de_detail<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(field(d, "\"detail\" must be true or false")?.unwrap_or(false))
}

/// `confirm`: a boolean, or a word the CLI takes for one (`"yes"`).
fn de_confirm<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match field::<D, Value>(d, "")? {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::String(s)) => {
            crate::args::parse_bool("confirm", &s).map_err(|e| de::Error::custom(format!("{e:#}")))
        }
        Some(_) => Err(de::Error::custom("\"confirm\" must be true or false")),
    }
}

/// One answer line: `{"ok":true, ...fields of T}` or
/// `{"ok":false,"error":"message"}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    Ok(T),
    Err(String),
}

impl<T: Serialize> Serialize for Answer<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Good<'a, T> {
            ok: bool,
            #[serde(flatten)]
            body: &'a T,
        }
        #[derive(Serialize)]
        struct Bad<'a> {
            ok: bool,
            error: &'a str,
        }
        match self {
            Answer::Ok(body) => Good { ok: true, body }.serialize(s),
            Answer::Err(error) => Bad { ok: false, error }.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Answer<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.get("ok") {
            Some(Value::Bool(true)) => T::deserialize(v).map(Answer::Ok).map_err(de::Error::custom),
            Some(Value::Bool(false)) => Ok(Answer::Err(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
            )),
            _ => Err(de::Error::custom("an answer has \"ok\": true or false")),
        }
    }
}

/// What a successful request answers, by op (the daemon's side; the client
/// decodes the one struct it expects).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Version(Version),
    Listing(Listing),
    Info(Info),
    Change(Change),
    Saved(Saved),
    Values(Values),
    Sessions(Sessions<SessionSummary>),
    SessionsDetail(Sessions<SessionDetail>),
    Stats(Stats),
}

/// `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    /// Panics caught in any daemon thread since start (a healthy daemon: 0).
    #[serde(default)]
    pub panics: u64,
}

/// `ls`: the rendered text and the (pruned) tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub text: String,
    pub tree: Node,
}

/// One node of the object tree (built by `manage::tree`).
pub use manage::tree::Node;

/// `info`: the object's saved settings (rtslib's schema, passwords
/// masked), or `None` where the path has none of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub info: Option<Map<String, Value>>,
}

/// Every change (`create`, `delete`, `set`, `enable`, `disable`,
/// `resize`, `restoreconfig`, `clearconfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub message: String,
    /// Validation warnings the change introduced, live-apply caveats.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `saveconfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub message: String,
}

/// `get`: name to value; `null` = not set (the built-in default applies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Values {
    pub values: Map<String, Value>,
}

/// `sessions` (`T` = [`SessionSummary`]) or `sessions` with `detail`
/// (`T` = [`SessionDetail`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sessions<T> {
    pub sessions: Vec<T>,
    /// Guests attached to vhost targets (each one I_T nexus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<VhostGuest>,
    /// This daemon's gateways of shared media (RBD images with
    /// `alua_group`): who holds the lock, failovers, blocklisted peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayState>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const API_MD: &str = include_str!("../../../docs/api.md");

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    /// `line` is in docs/api.md verbatim, `req` serializes to exactly it,
    /// and the daemon decodes it back to `req`.
    fn doc_example(req: Request, line: &str) {
        assert!(
            API_MD.lines().any(|l| l == line),
            "docs/api.md has no example line {line}"
        );
        assert_eq!(serde_json::to_string(&req).unwrap(), line);
        assert_eq!(Request::parse(line).unwrap(), req);
    }

    const T1: &str = "/iscsi/iqn.2026-11.org.example:t1/tpg1";

    #[test]
    fn doc_ping() {
        doc_example(Request::Ping, r#"{"op":"ping"}"#);
    }

    #[test]
    fn doc_ls() {
        let ls = Request::Ls {
            path: "/iscsi".into(),
            depth: Some(1),
            width: None,
        };
        doc_example(ls, r#"{"op":"ls","path":"/iscsi","depth":1}"#);
    }

    #[test]
    fn doc_info() {
        let path = "/backstores/fileio/disk1".into();
        doc_example(
            Request::Info { path },
            r#"{"op":"info","path":"/backstores/fileio/disk1"}"#,
        );
    }

    #[test]
    fn doc_create() {
        let args = map(json!({"name": "disk1", "file_or_dev": "/var/lib/d.img", "size": "1G"}));
        let create = Request::Create {
            path: "/backstores/fileio".into(),
            argv: Vec::new(),
            args,
        };
        doc_example(
            create,
            r#"{"op":"create","path":"/backstores/fileio","args":{"name":"disk1","file_or_dev":"/var/lib/d.img","size":"1G"}}"#,
        );
        let create = Request::Create {
            path: format!("{T1}/acls/iqn.1994-05.com.redhat:host1"),
            argv: vec!["0".into(), "1".into(), "write_protect=1".into()],
            args: Map::new(),
        };
        doc_example(
            create,
            r#"{"op":"create","path":"/iscsi/iqn.2026-11.org.example:t1/tpg1/acls/iqn.1994-05.com.redhat:host1","argv":["0","1","write_protect=1"]}"#,
        );
    }

    #[test]
    fn doc_delete() {
        let delete = Request::Delete {
            path: "/backstores/fileio".into(),
            argv: vec!["disk1".into()],
            args: Map::new(),
        };
        doc_example(
            delete,
            r#"{"op":"delete","path":"/backstores/fileio","argv":["disk1"]}"#,
        );
        let delete = Request::Delete {
            path: format!("{T1}/portals/127.0.0.1:3260"),
            argv: Vec::new(),
            args: Map::new(),
        };
        doc_example(
            delete,
            r#"{"op":"delete","path":"/iscsi/iqn.2026-11.org.example:t1/tpg1/portals/127.0.0.1:3260"}"#,
        );
    }

    #[test]
    fn doc_set() {
        let set = Request::Set {
            path: T1.into(),
            group: "attribute".into(),
            values: map(json!({"generate_node_acls": 1, "demo_mode_write_protect": 0})),
            argv: Vec::new(),
        };
        doc_example(
            set,
            r#"{"op":"set","path":"/iscsi/iqn.2026-11.org.example:t1/tpg1","group":"attribute","values":{"generate_node_acls":1,"demo_mode_write_protect":0}}"#,
        );
        let set = Request::Set {
            path: "/iscsi".into(),
            group: "discovery_auth".into(),
            values: Map::new(),
            argv: ["enable=1", "userid=disc", "password=discsecret123"]
                .map(String::from)
                .to_vec(),
        };
        doc_example(
            set,
            r#"{"op":"set","path":"/iscsi","group":"discovery_auth","argv":["enable=1","userid=disc","password=discsecret123"]}"#,
        );
    }

    #[test]
    fn doc_get() {
        let get = Request::Get {
            path: T1.into(),
            group: "attribute".into(),
            names: vec!["generate_node_acls".into()],
            argv: Vec::new(),
        };
        doc_example(
            get,
            r#"{"op":"get","path":"/iscsi/iqn.2026-11.org.example:t1/tpg1","group":"attribute","names":["generate_node_acls"]}"#,
        );
    }

    #[test]
    fn doc_enable_disable() {
        let path = T1.to_string();
        doc_example(
            Request::Enable { path: path.clone() },
            r#"{"op":"enable","path":"/iscsi/iqn.2026-11.org.example:t1/tpg1"}"#,
        );
        doc_example(
            Request::Disable { path },
            r#"{"op":"disable","path":"/iscsi/iqn.2026-11.org.example:t1/tpg1"}"#,
        );
    }

    #[test]
    fn doc_resize() {
        let resize = Request::Resize {
            path: "/backstores/user:qcow/vm1".into(),
            size: Some(Size::Text("+10G".into())),
            argv: Vec::new(),
        };
        doc_example(
            resize,
            r#"{"op":"resize","path":"/backstores/user:qcow/vm1","size":"+10G"}"#,
        );
        // A byte count stays a number.
        let line = r#"{"op":"resize","path":"/","size":4194304}"#;
        let Request::Resize { size, .. } = Request::parse(line).unwrap() else {
            panic!()
        };
        assert_eq!(size, Some(Size::Bytes(4194304)));
    }

    #[test]
    fn doc_saveconfig_restoreconfig_clearconfig() {
        let file = Some("/root/rtarget-backup.json".to_string());
        doc_example(
            Request::Saveconfig { file: file.clone() },
            r#"{"op":"saveconfig","file":"/root/rtarget-backup.json"}"#,
        );
        doc_example(
            Request::Restoreconfig { file },
            r#"{"op":"restoreconfig","file":"/root/rtarget-backup.json"}"#,
        );
        doc_example(
            Request::Clearconfig { confirm: true },
            r#"{"op":"clearconfig","confirm":true}"#,
        );
        // The word form of confirm, as older clients sent it.
        let c = Request::parse(r#"{"op":"clearconfig","confirm":"yes"}"#).unwrap();
        assert_eq!(c, Request::Clearconfig { confirm: true });
    }

    #[test]
    fn doc_sessions() {
        doc_example(Request::Sessions { detail: false }, r#"{"op":"sessions"}"#);
        doc_example(
            Request::Sessions { detail: true },
            r#"{"op":"sessions","detail":true}"#,
        );
    }

    /// Every request line of docs/api.md decodes, every op has one, and
    /// the op list of the error messages is the enum's.
    #[test]
    fn every_op_has_a_doc_example() {
        let mut seen = Vec::new();
        for line in API_MD.lines().filter(|l| l.starts_with(r#"{"op":"#)) {
            if line == r#"{"op":"bogus"}"# {
                continue;
            }
            let req = Request::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(serde_json::to_string(&req).unwrap(), line);
            seen.push(req.op());
        }
        for op in OPS {
            assert!(seen.contains(op), "docs/api.md has no {op} example");
        }
        assert_eq!(seen.iter().filter(|o| !OPS.contains(o)).count(), 0);
    }

    /// Each answer line of docs/api.md decodes as the type its request
    /// gets and encodes back to the same line.
    #[test]
    fn doc_answers_round_trip() {
        fn again<T: Serialize + DeserializeOwned>(line: &str) -> String {
            let a: Answer<T> = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            serde_json::to_string(&a).unwrap()
        }
        let mut last = None;
        let mut checked = 0;
        for line in API_MD.lines() {
            if line.starts_with(r#"{"op":"#) {
                last = Some(Request::parse(line).map_err(|_| ()));
                continue;
            }
            if !line.starts_with(r#"{"ok":"#) {
                continue;
            }
            let back = match last.clone().expect("an answer follows a request") {
                Err(()) => again::<Change>(line),
                Ok(Request::Ping) => again::<Version>(line),
                Ok(Request::Get { .. }) => again::<Values>(line),
                Ok(Request::Saveconfig { .. }) => again::<Saved>(line),
                Ok(Request::Sessions { detail: false }) => again::<Sessions<SessionSummary>>(line),
                Ok(Request::Sessions { detail: true }) => again::<Sessions<SessionDetail>>(line),
                Ok(Request::Stats) => again::<Stats>(line),
                Ok(_) => again::<Change>(line),
            };
            assert_eq!(back, line);
            checked += 1;
        }
        assert!(checked >= 7, "{checked}");
    }

    /// The error of the doc's `bogus` example is what the daemon answers.
    #[test]
    fn unknown_and_malformed_requests_name_the_problem() {
        let err = |l: &str| Request::parse(l).unwrap_err();
        let answer = Answer::<Change>::Err(err(r#"{"op":"bogus"}"#));
        let line = serde_json::to_string(&answer).unwrap();
        assert!(API_MD.lines().any(|l| l == line), "{line}");
        assert!(err("nope").starts_with("bad JSON"));
        assert!(err("[1]").starts_with("a request is a JSON object"));
        assert!(err(r#"{"path":"/"}"#).starts_with("missing \"op\""));
        assert!(err(r#"{"op":7}"#).starts_with("missing \"op\""));
        for (line, want) in [
            (r#"{"op":"ls","depth":-1}"#, "\"depth\" must be"),
            (r#"{"op":"ls","width":"wide"}"#, "\"width\" must be"),
            (r#"{"op":"ls","path":3}"#, "\"path\" must be a string"),
            (r#"{"op":"create","argv":"x"}"#, "\"argv\" must be an array"),
            (r#"{"op":"create","argv":[1]}"#, "\"argv\" must be an array"),
            (r#"{"op":"create","args":[]}"#, "must be objects"),
            (r#"{"op":"set","group":1}"#, "\"group\" must be a string"),
            (r#"{"op":"get","group":"a","names":"x"}"#, "\"names\""),
            (r#"{"op":"resize","size":true}"#, "\"size\" must be"),
            (r#"{"op":"resize","size":-1}"#, "\"size\" must be"),
            (r#"{"op":"saveconfig","file":1}"#, "\"file\" must be"),
            (r#"{"op":"clearconfig","confirm":"maybe"}"#, "not a boolean"),
            (r#"{"op":"clearconfig","confirm":1}"#, "\"confirm\""),
            (r#"{"op":"sessions","detail":"yes"}"#, "\"detail\""),
        ] {
            let e = err(line);
            assert!(e.contains(want), "{line}: {e}");
        }
        // Missing and null fields take their defaults; unknown ones are ignored.
        assert_eq!(
            Request::parse(r#"{"op":"ls","path":null,"depth":null,"colour":1}"#).unwrap(),
            Request::Ls {
                path: "/".into(),
                depth: None,
                width: None
            }
        );
        assert_eq!(
            Request::parse(r#"{"op":"ping","path":"/"}"#).unwrap(),
            Request::Ping
        );
    }
}
