//! Typed settings: every TPG, node ACL and storage-object attribute and
//! TPG parameter rtarget knows, with the values LIO accepts, and the one
//! parse of a saveconfig's attribute maps into typed structs.
//!
//! Validation (`rtarget check`, load), the daemon's build and `set` all use
//! these tables, so a value is refused the same way everywhere, with the
//! allowed values in the message, and the fabric only ever sees typed
//! fields (a value LIO would refuse can no longer be read two ways, as
//! `"authentication": 2` once was: "on" for validation, "off" for login).
//!
//! Ranges are LIO's (drivers/target/iscsi/iscsi_target_tpg.c,
//! iscsi_target_nodeattrib.c, iscsi_target_configfs.c, target_core_configfs.c).
//! rtslib writes integers; numeric strings and JSON booleans are accepted
//! as the same integers, anything else (`"yes"`, `-1` for a flag) is refused.

use serde_json::{Map, Value};

/// One attribute: its name, the values allowed, and whether rtarget acts on
/// it (the others are kept in the file for targetcli).
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// Inclusive ranges; a value must fall in one of them.
    pub allowed: &'static [(i64, i64)],
    pub used: bool,
    /// Offered by `set` (false: would break data already written).
    pub settable: bool,
}

const FLAG: &[(i64, i64)] = &[(0, 1)];
const U32: &[(i64, i64)] = &[(0, u32::MAX as i64)];

const fn spec(name: &'static str, allowed: &'static [(i64, i64)], used: bool) -> Spec {
    Spec {
        name,
        allowed,
        used,
        settable: true,
    }
}

/// `busy_poll_us` of a TPG that does not set it: the budget of the
/// adaptive busy polling (rtarget's iscsi `busypoll`), 0 = off. The one
/// place the default is decided.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;

/// `follow_flow_cpu` of a TPG that does not set it (rtarget's iscsi
/// `flow_cpu`). The one place the default is decided: on, since a move
/// that makes an initiator's commands slower is undone after 128 of them
/// (session 10: QD1 CPU per command 0.18x tgt's, qemu-img's QD1 not
/// slower; docs/latency.md).
pub const DEFAULT_FOLLOW_FLOW_CPU: bool = true;

/// TPG attributes (targetcli `set attribute` on a TPG).
pub const TPG_ATTRIBUTES: &[Spec] = &[
    spec("authentication", FLAG, true),
    // rtarget extension: the most microseconds a connection thread spins
    // on its socket before it sleeps in recv, when its recent waits say a
    // spin pays (docs/latency.md); 0 = never.
    spec("busy_poll_us", &[(0, 1000)], true),
    spec("cache_dynamic_acls", FLAG, false),
    spec("default_cmdsn_depth", &[(1, 512)], true),
    spec("default_erl", &[(0, 2)], false),
    spec("demo_mode_discovery", FLAG, true),
    spec("demo_mode_write_protect", FLAG, true),
    spec("fabric_prot_type", &[(0, 1), (3, 3)], false),
    // rtarget extension: a connection running one command at a time moves
    // its thread onto the CPU its packets arrive on (CPU-local wake-ups),
    // and back when the load grows (docs/latency.md); default 0 = never.
    spec("follow_flow_cpu", FLAG, true),
    spec("generate_node_acls", FLAG, true),
    spec("login_keys_workaround", FLAG, false),
    spec("login_timeout", &[(5, 30)], true),
    spec("netif_timeout", &[(2, 15)], false),
    // LIO keeps the NOP-In timers per ACL (3-60 s); rtarget's TPG-wide
    // ones also take 0: no ping.
    spec("nopin_response_timeout", &[(3, 60)], true),
    spec("nopin_timeout", &[(0, 0), (3, 60)], true),
    spec("prod_mode_write_protect", FLAG, false),
    spec("t10_pi", FLAG, false),
    spec("tpg_enabled_sendtargets", FLAG, false),
];

/// Node ACL attributes (LIO's node attributes, `node_acls[].attributes`).
pub const ACL_ATTRIBUTES: &[Spec] = &[
    // -1: inherit the TPG's (NA_AUTHENTICATION_INHERITED, what LIO shows
    // and rtslib saves when the ACL does not decide).
    spec("authentication", &[(-1, 1)], true),
    spec("dataout_timeout", &[(2, 60)], false),
    spec("dataout_timeout_retries", &[(1, 15)], false),
    spec("default_erl", &[(0, 2)], false),
    spec("nopin_response_timeout", &[(3, 60)], false),
    spec("nopin_timeout", &[(3, 60)], false),
    spec("random_datain_pdu_offsets", FLAG, false),
    spec("random_datain_seq_offsets", FLAG, false),
    spec("random_r2t_offsets", FLAG, false),
    // LIO's node attributes gating TARGET COLD/WARM RESET from this
    // initiator (iscsi_target_tmr.c); 0, LIO's value, refuses them.
    spec("tmr_cold_reset", FLAG, true),
    spec("tmr_warm_reset", FLAG, true),
];

/// Storage object attributes (LIO's device attributes and rtarget's own).
pub const SO_ATTRIBUTES: &[Spec] = &[
    spec("alua_support", FLAG, false),
    spec(
        "block_size",
        &[(512, 512), (1024, 1024), (2048, 2048), (4096, 4096)],
        true,
    ),
    spec("emulate_3pc", FLAG, false),
    spec("emulate_caw", FLAG, false),
    spec("emulate_dpo", FLAG, false),
    spec("emulate_fua_read", FLAG, false),
    spec("emulate_fua_write", FLAG, false),
    spec("emulate_model_alias", FLAG, false),
    spec("emulate_pr", FLAG, false),
    // LIO implements no restricted reordering: only 0.
    spec("emulate_rest_reord", &[(0, 0)], false),
    spec("emulate_rsoc", FLAG, false),
    spec("emulate_tas", FLAG, false),
    spec("emulate_tpu", FLAG, true),
    spec("emulate_tpws", FLAG, true),
    spec("emulate_ua_intlck_ctrl", &[(0, 2)], false),
    spec("emulate_write_cache", FLAG, true),
    spec("enforce_pr_isids", FLAG, false),
    spec("force_pr_aptpl", FLAG, false),
    spec("is_nonrot", FLAG, true),
    spec("max_unmap_block_desc_count", U32, false),
    spec("max_unmap_lba_count", U32, false),
    spec("max_write_same_len", U32, false),
    spec("optimal_sectors", U32, false),
    spec("pgr_support", FLAG, false),
    spec("pi_prot_format", FLAG, false),
    // DIF type 2 is refused by LIO too.
    spec("pi_prot_type", &[(0, 1), (3, 3)], false),
    spec("pi_prot_verify", FLAG, false),
    spec("queue_depth", &[(1, u32::MAX as i64)], false),
    spec("submit_type", &[(0, 2)], false),
    spec("unmap_granularity", U32, false),
    spec("unmap_granularity_alignment", U32, false),
    spec("unmap_zeroes_data", FLAG, false),
    // rtarget extensions (docs/io-engines-and-qos.md, docs/encryption.md).
    // `encryption` cannot be set on an object: turning it on or off under
    // existing data would make that data unreadable.
    Spec {
        name: "encryption",
        allowed: FLAG,
        used: true,
        settable: false,
    },
    // 0 = inline, 1 = pool, 2 = uring; also written by name (see `io_engine`).
    spec("io_engine", &[(0, 2)], true),
    spec("o_direct", FLAG, true),
    spec("qos_rw_ios_per_sec", &[(0, i64::MAX)], true),
    spec("qos_rw_mbytes_per_sec", &[(0, i64::MAX)], true),
    spec("readonly", FLAG, true),
    spec("removable", FLAG, true),
];

/// TPG parameters (RFC 7143 keys as LIO exposes them) and their values.
#[derive(Debug)]
pub enum ParamKind {
    YesNo,
    /// A comma-separated list of these names.
    List(&'static [&'static str]),
    Range(u32, u32),
    /// Free text (TargetAlias), or LIO's legacy marker keys.
    Text,
}

pub const TPG_PARAMETERS: &[(&str, ParamKind)] = &[
    ("AuthMethod", ParamKind::List(&["None", "CHAP"])),
    ("DataDigest", ParamKind::List(&["None", "CRC32C"])),
    ("DataPDUInOrder", ParamKind::YesNo),
    ("DataSequenceInOrder", ParamKind::YesNo),
    ("DefaultTime2Retain", ParamKind::Range(0, 3600)),
    ("DefaultTime2Wait", ParamKind::Range(0, 3600)),
    ("ErrorRecoveryLevel", ParamKind::Range(0, 2)),
    ("FirstBurstLength", ParamKind::Range(512, (1 << 24) - 1)),
    ("HeaderDigest", ParamKind::List(&["None", "CRC32C"])),
    ("IFMarkInt", ParamKind::Text),
    ("IFMarker", ParamKind::YesNo),
    ("ImmediateData", ParamKind::YesNo),
    ("InitialR2T", ParamKind::YesNo),
    ("MaxBurstLength", ParamKind::Range(512, (1 << 24) - 1)),
    ("MaxConnections", ParamKind::Range(1, 65535)),
    ("MaxOutstandingR2T", ParamKind::Range(1, 65535)),
    (
        "MaxRecvDataSegmentLength",
        ParamKind::Range(512, (1 << 24) - 1),
    ),
    (
        "MaxXmitDataSegmentLength",
        ParamKind::Range(512, (1 << 24) - 1),
    ),
    ("OFMarkInt", ParamKind::Text),
    ("OFMarker", ParamKind::YesNo),
    ("TargetAlias", ParamKind::Text),
];

/// The spec of `name` in `table`.
pub fn find(table: &'static [Spec], name: &str) -> Option<&'static Spec> {
    table.iter().find(|s| s.name == name)
}

impl Spec {
    /// "0 or 1", "from 5 to 30", "512, 1024, 2048 or 4096", "-1, 0 or 1".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for &(lo, hi) in self.allowed {
            match hi.checked_sub(lo) {
                Some(0..=2) => parts.extend((lo..=hi).map(|n| n.to_string())),
                _ if hi == i64::MAX => parts.push(format!("{lo} or more")),
                _ => parts.push(format!("from {lo} to {hi}")),
            }
        }
        match parts.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    fn allows(&self, n: i64) -> bool {
        self.allowed.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
    }

    /// A saved value as its integer, or why it is refused.
    pub fn check(&self, v: &Value) -> Result<i64, String> {
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        };
        match n {
            Some(n) if self.allows(n) => Ok(n),
            _ => Err(format!(
                "attribute {}: {} is not allowed (allowed: {})",
                self.name,
                v,
                self.describe()
            )),
        }
    }

    /// A value typed on the command line (`set attribute name=value`).
    pub fn check_str(&self, v: &str) -> Result<i64, String> {
        self.check(&Value::from(v))
    }
}

/// Check a TPG parameter value (`set parameter`, validation).
pub fn check_parameter(k: &str, v: &str) -> Result<(), String> {
    let Some((_, kind)) = TPG_PARAMETERS.iter().find(|(n, _)| *n == k) else {
        return Ok(());
    };
    match kind {
        ParamKind::YesNo if v != "Yes" && v != "No" => {
            Err(format!("parameter {k}: {v:?} must be Yes or No"))
        }
        ParamKind::List(allowed) if !v.split(',').all(|x| allowed.contains(&x)) => Err(format!(
            "parameter {k}: {v:?} must be a comma-separated list of {}",
            allowed.join(", ")
        )),
        ParamKind::Range(lo, hi) => match v.trim().parse::<u32>() {
            Ok(n) if (*lo..=*hi).contains(&n) => Ok(()),
            _ => Err(format!(
                "parameter {k}: {v:?} must be a number from {lo} to {hi}"
            )),
        },
        _ => Ok(()),
    }
}

/// Every attribute of `map` that is in `table`, checked; the integers by
/// name, and one message per refused value.
fn parse_map(
    table: &'static [Spec],
    map: &Map<String, Value>,
) -> (std::collections::HashMap<&'static str, i64>, Vec<String>) {
    let mut got = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for spec in table {
        match map.get(spec.name) {
            None | Some(Value::Null) => {}
            Some(v) => match spec.check(v) {
                Ok(n) => {
                    got.insert(spec.name, n);
                }
                Err(e) => errors.push(e),
            },
        }
    }
    (got, errors)
}

/// A TPG's attributes as the fabric reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpgAttributes {
    /// `None` when the file does not say: the `AuthMethod` parameter and
    /// the credentials decide (rtarget's rule for hand-written files).
    pub authentication: Option<bool>,
    /// Initiators without an ACL log in and see the TPG's LUNs.
    pub generate_node_acls: bool,
    /// The TPG's (demo-mode) LUNs are read-only.
    pub demo_mode_write_protect: bool,
    /// false: SendTargets lists the TPG only to initiators with an ACL
    /// when demo mode is off.
    pub demo_mode_discovery: bool,
    pub cache_dynamic_acls: bool,
    pub prod_mode_write_protect: bool,
    /// The command window (MaxCmdSN - ExpCmdSN + 1).
    pub default_cmdsn_depth: u32,
    /// Seconds a login may take.
    pub login_timeout: u32,
    pub netif_timeout: u32,
    /// Seconds of silence before a NOP-In ping; 0: never ping.
    pub nopin_timeout: u32,
    /// Seconds the ping may stay unanswered.
    pub nopin_response_timeout: u32,
    pub default_erl: u8,
    /// Most microseconds a connection spins on non-blocking receives
    /// before it blocks, where its recent waits say that pays (lower
    /// single-request latency for CPU time); 0: never.
    pub busy_poll_us: u32,
    /// A connection at queue depth 1 runs its thread on the CPU its
    /// packets arrive on, its own CPU mask again when the load grows.
    pub follow_flow_cpu: bool,
}

impl Default for TpgAttributes {
    /// rtarget's defaults (where they differ from LIO's, rtarget's have
    /// always applied: demo mode is not write protected, the window is 128).
    fn default() -> Self {
        TpgAttributes {
            authentication: None,
            generate_node_acls: false,
            demo_mode_write_protect: false,
            demo_mode_discovery: true,
            cache_dynamic_acls: false,
            prod_mode_write_protect: false,
            default_cmdsn_depth: 128,
            login_timeout: 15,
            netif_timeout: 2,
            nopin_timeout: 15,
            nopin_response_timeout: 30,
            default_erl: 0,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            follow_flow_cpu: DEFAULT_FOLLOW_FLOW_CPU,
        }
    }
}

impl TpgAttributes {
    /// Parse `tpg.attributes`. `has_acls`: the TPG lists node ACLs (a
    /// hand-written TPG without `generate_node_acls` and without ACLs would
    /// admit nobody under LIO's default 0; rtarget serves it in demo mode).
    pub fn parse(map: &Map<String, Value>, has_acls: bool) -> Result<Self, Vec<String>> {
        let (got, errors) = parse_map(TPG_ATTRIBUTES, map);
        if !errors.is_empty() {
            return Err(errors);
        }
        let d = TpgAttributes::default();
        let flag = |k: &str, dflt: bool| got.get(k).map_or(dflt, |&n| n != 0);
        // The table bounds every value below u32 (default_erl below 3).
        let num = |k: &str, dflt: u32| got.get(k).map_or(dflt, |&n| n as u32);
        Ok(TpgAttributes {
            authentication: got.get("authentication").map(|&n| n != 0),
            generate_node_acls: flag("generate_node_acls", !has_acls),
            demo_mode_write_protect: flag("demo_mode_write_protect", d.demo_mode_write_protect),
            demo_mode_discovery: flag("demo_mode_discovery", d.demo_mode_discovery),
            cache_dynamic_acls: flag("cache_dynamic_acls", d.cache_dynamic_acls),
            prod_mode_write_protect: flag("prod_mode_write_protect", d.prod_mode_write_protect),
            default_cmdsn_depth: num("default_cmdsn_depth", d.default_cmdsn_depth),
            login_timeout: num("login_timeout", d.login_timeout),
            netif_timeout: num("netif_timeout", d.netif_timeout),
            nopin_timeout: num("nopin_timeout", d.nopin_timeout),
            nopin_response_timeout: num("nopin_response_timeout", d.nopin_response_timeout),
            default_erl: num("default_erl", 0) as u8,
            busy_poll_us: num("busy_poll_us", d.busy_poll_us),
            follow_flow_cpu: flag("follow_flow_cpu", d.follow_flow_cpu),
        })
    }
}

/// A node ACL's attributes as the fabric reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclAttributes {
    /// `Some`: the ACL decides whether CHAP is required; `None` (absent or
    /// -1): an ACL with credentials requires CHAP, one without inherits the
    /// TPG's `authentication`.
    pub authentication: Option<bool>,
    /// TARGET WARM RESET allowed from this initiator (LIO's default: no).
    pub tmr_warm_reset: bool,
    /// TARGET COLD RESET allowed from this initiator (LIO's default: no).
    pub tmr_cold_reset: bool,
}

impl AclAttributes {
    pub fn parse(map: &Map<String, Value>) -> Result<Self, Vec<String>> {
        let (got, errors) = parse_map(ACL_ATTRIBUTES, map);
        if !errors.is_empty() {
            return Err(errors);
        }
        let flag = |k: &str| got.get(k).is_some_and(|&n| n == 1);
        Ok(AclAttributes {
            authentication: match got.get("authentication") {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            tmr_warm_reset: flag("tmr_warm_reset"),
            tmr_cold_reset: flag("tmr_cold_reset"),
        })
    }
}

/// Where an object's commands run (`io_engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngineChoice {
    Inline,
    Pool,
    /// io_uring (fileio and block only).
    Uring,
}

/// A storage object's attributes as the daemon's build reads them; `None`
/// where the backstore decides when the file does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttributes {
    /// 512 when absent.
    pub block_size: u32,
    pub emulate_write_cache: Option<bool>,
    pub emulate_tpu: bool,
    pub emulate_tpws: bool,
    pub is_nonrot: Option<bool>,
    pub readonly: bool,
    pub removable: bool,
    pub encryption: bool,
    pub o_direct: Option<bool>,
    pub io_engine: Option<IoEngineChoice>,
    /// MiB/s; 0: no limit.
    pub qos_rw_mbytes_per_sec: u64,
    /// 0: no limit.
    pub qos_rw_ios_per_sec: u64,
}

impl ObjectAttributes {
    pub fn parse(map: &Map<String, Value>) -> Result<Self, Vec<String>> {
        // The I/O engine is named (inline/pool/uring) as well as numbered.
        let mut numbered;
        let mut map = map;
        let named = match map.get("io_engine") {
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "inline" => Some(IoEngineChoice::Inline),
                "pool" => Some(IoEngineChoice::Pool),
                "uring" => Some(IoEngineChoice::Uring),
                _ => None,
            },
            _ => None,
        };
        if named.is_some() {
            numbered = map.clone();
            numbered.remove("io_engine");
            map = &numbered;
        }
        let (got, mut errors) = parse_map(SO_ATTRIBUTES, map);
        if let Some(e) = errors
            .iter_mut()
            .find(|e| e.starts_with("attribute io_engine:"))
        {
            e.push_str(", or inline / pool / uring");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let opt = |k: &str| got.get(k).map(|&n| n != 0);
        let flag = |k: &str| opt(k).unwrap_or(false);
        let num = |k: &str| got.get(k).map_or(0, |&n| n as u64);
        Ok(ObjectAttributes {
            block_size: got.get("block_size").map_or(512, |&n| n as u32),
            emulate_write_cache: opt("emulate_write_cache"),
            emulate_tpu: flag("emulate_tpu"),
            emulate_tpws: flag("emulate_tpws"),
            is_nonrot: opt("is_nonrot"),
            readonly: flag("readonly"),
            removable: flag("removable"),
            encryption: flag("encryption"),
            o_direct: opt("o_direct"),
            io_engine: named.or(match got.get("io_engine") {
                Some(0) => Some(IoEngineChoice::Inline),
                Some(1) => Some(IoEngineChoice::Pool),
                Some(_) => Some(IoEngineChoice::Uring),
                None => None,
            }),
            qos_rw_mbytes_per_sec: num("qos_rw_mbytes_per_sec"),
            qos_rw_ios_per_sec: num("qos_rw_ios_per_sec"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn ranges_are_described() {
        let d = |t, n| find(t, n).unwrap().describe();
        assert_eq!(d(TPG_ATTRIBUTES, "authentication"), "0 or 1");
        assert_eq!(d(TPG_ATTRIBUTES, "login_timeout"), "from 5 to 30");
        assert_eq!(d(TPG_ATTRIBUTES, "nopin_timeout"), "0 or from 3 to 60");
        assert_eq!(d(TPG_ATTRIBUTES, "fabric_prot_type"), "0, 1 or 3");
        assert_eq!(d(SO_ATTRIBUTES, "block_size"), "512, 1024, 2048 or 4096");
        assert_eq!(d(ACL_ATTRIBUTES, "authentication"), "-1, 0 or 1");
        assert_eq!(d(SO_ATTRIBUTES, "qos_rw_ios_per_sec"), "0 or more");
    }

    /// Issue 9 item 1, in the parse every reader uses: no flag of any
    /// table takes 2, -1 or "yes"; each refusal names the attribute, the
    /// value and what is allowed.
    #[test]
    fn every_flag_refuses_out_of_range_values() {
        for (table, tname) in [
            (TPG_ATTRIBUTES, "tpg"),
            (ACL_ATTRIBUTES, "acl"),
            (SO_ATTRIBUTES, "object"),
        ] {
            for s in table.iter().filter(|s| s.allowed == FLAG) {
                for bad in [json!(2), json!(-1), json!("yes"), json!("2"), json!(1.5)] {
                    let m = map(json!({ s.name: bad.clone() }));
                    let e = match tname {
                        "tpg" => TpgAttributes::parse(&m, false).unwrap_err(),
                        "acl" => AclAttributes::parse(&m).unwrap_err(),
                        _ => ObjectAttributes::parse(&m).unwrap_err(),
                    };
                    assert_eq!(e.len(), 1, "{tname} {} {bad}", s.name);
                    assert!(
                        e[0].contains(s.name) && e[0].contains(&bad.to_string()),
                        "{e:?}"
                    );
                    assert!(e[0].contains("allowed: 0 or 1"), "{e:?}");
                }
                for good in [json!(0), json!(1), json!("1"), json!(true)] {
                    let m = map(json!({ s.name: good }));
                    let ok = match tname {
                        "tpg" => TpgAttributes::parse(&m, false).is_ok(),
                        "acl" => AclAttributes::parse(&m).is_ok(),
                        _ => ObjectAttributes::parse(&m).is_ok(),
                    };
                    assert!(ok, "{tname} {}", s.name);
                }
            }
        }
    }

    #[test]
    fn acl_authentication_is_tri_state() {
        let p = |v: Value| AclAttributes::parse(&map(json!({ "authentication": v })));
        assert_eq!(p(json!(-1)).unwrap().authentication, None);
        assert_eq!(p(json!(0)).unwrap().authentication, Some(false));
        assert_eq!(p(json!(1)).unwrap().authentication, Some(true));
        assert!(p(json!(2)).is_err());
        assert!(p(json!(-2)).is_err());
        let a = AclAttributes::parse(&Map::new()).unwrap();
        assert!(!a.tmr_warm_reset && !a.tmr_cold_reset);
    }

    #[test]
    fn tpg_attributes_typed_with_defaults() {
        let t = TpgAttributes::parse(
            &map(json!({"authentication": 1, "default_cmdsn_depth": "64",
                        "nopin_timeout": 0, "demo_mode_discovery": 0})),
            true,
        )
        .unwrap();
        assert_eq!(t.authentication, Some(true));
        assert_eq!(t.default_cmdsn_depth, 64);
        assert_eq!(t.nopin_timeout, 0);
        assert!(!t.demo_mode_discovery && !t.generate_node_acls);
        assert_eq!(t.login_timeout, 15);
        let t = TpgAttributes::parse(&Map::new(), false).unwrap();
        assert!(t.generate_node_acls);
        assert_eq!(t.authentication, None);
        for bad in [
            json!({"default_cmdsn_depth": 0}),
            json!({"default_cmdsn_depth": 513}),
            json!({"login_timeout": 4}),
            json!({"nopin_timeout": 2}),
            json!({"default_erl": 3}),
            json!({"fabric_prot_type": 2}),
        ] {
            let e = TpgAttributes::parse(&map(bad.clone()), false).unwrap_err();
            assert!(e[0].contains("allowed:"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn follow_flow_cpu_is_a_flag() {
        let t = TpgAttributes::parse(&Map::new(), false).unwrap();
        assert_eq!(
            t.follow_flow_cpu, DEFAULT_FOLLOW_FLOW_CPU,
            "the one default"
        );
        for (v, want) in [(json!(0), false), (json!("1"), true)] {
            let t = TpgAttributes::parse(&map(json!({"follow_flow_cpu": v})), false).unwrap();
            assert_eq!(t.follow_flow_cpu, want);
        }
        assert!(TpgAttributes::parse(&map(json!({"follow_flow_cpu": 2})), false).is_err());
        assert!(find(TPG_ATTRIBUTES, "follow_flow_cpu").is_some_and(|s| s.used && s.settable));
    }

    #[test]
    fn busy_poll_us_is_typed_and_bounded() {
        let t = TpgAttributes::parse(&map(json!({"busy_poll_us": "50"})), false).unwrap();
        assert_eq!(t.busy_poll_us, 50);
        let t = TpgAttributes::parse(&Map::new(), false).unwrap();
        assert_eq!(t.busy_poll_us, DEFAULT_BUSY_POLL_US, "the one default");
        let t = TpgAttributes::parse(&map(json!({"busy_poll_us": 0})), false).unwrap();
        assert_eq!(t.busy_poll_us, 0, "0 turns it off");
        for bad in [json!({"busy_poll_us": 1001}), json!({"busy_poll_us": -1})] {
            let e = TpgAttributes::parse(&map(bad.clone()), false).unwrap_err();
            assert!(e[0].contains("from 0 to 1000"), "{bad}: {e:?}");
        }
        assert!(find(TPG_ATTRIBUTES, "busy_poll_us").is_some_and(|s| s.used && s.settable));
    }

    #[test]
    fn object_attributes_typed() {
        let o = ObjectAttributes::parse(&map(json!({
            "block_size": 4096, "io_engine": "pool", "emulate_tpu": 1,
            "qos_rw_mbytes_per_sec": "8", "emulate_rest_reord": 0
        })))
        .unwrap();
        assert_eq!(o.block_size, 4096);
        assert_eq!(o.io_engine, Some(IoEngineChoice::Pool));
        assert!(o.emulate_tpu && !o.emulate_tpws);
        assert_eq!(o.qos_rw_mbytes_per_sec, 8);
        assert_eq!(o.emulate_write_cache, None);
        for (v, want) in [
            (json!("uring"), IoEngineChoice::Uring),
            (json!(" URING "), IoEngineChoice::Uring),
            (json!(2), IoEngineChoice::Uring),
            (json!("1"), IoEngineChoice::Pool),
        ] {
            let o = ObjectAttributes::parse(&map(json!({ "io_engine": v }))).unwrap();
            assert_eq!(o.io_engine, Some(want));
        }
        for bad in [
            json!({"block_size": 520}),
            json!({"io_engine": "spdk"}),
            json!({"io_engine": 3}),
            json!({"qos_rw_ios_per_sec": -1}),
            json!({"emulate_rest_reord": 1}),
            json!({"pi_prot_type": 2}),
        ] {
            assert!(ObjectAttributes::parse(&map(bad.clone())).is_err(), "{bad}");
        }
        let e = ObjectAttributes::parse(&map(json!({"io_engine": "fast"}))).unwrap_err();
        assert!(e[0].ends_with("or inline / pool / uring"), "{e:?}");
    }

    #[test]
    fn parameters_checked() {
        assert!(check_parameter("ImmediateData", "Yes").is_ok());
        assert!(check_parameter("ImmediateData", "yes").is_err());
        assert!(check_parameter("HeaderDigest", "CRC32C,None").is_ok());
        assert!(check_parameter("HeaderDigest", "MD5").is_err());
        assert!(check_parameter("MaxBurstLength", "100").is_err());
        assert!(check_parameter("ErrorRecoveryLevel", "3").is_err());
        assert!(check_parameter("TargetAlias", "anything").is_ok());
    }
}
