//! Tests of `validate` (kept apart so validate.rs stays under ~800 lines).

use super::*;
use serde_json::json;

pub(crate) fn cfg(v: Value) -> SaveConfig {
    serde_json::from_value(v).unwrap()
}

pub(crate) fn base() -> Value {
    json!({
        "storage_objects": [
            {"plugin": "fileio", "name": "d0", "dev": "/tmp/d0.img", "size": 1048576},
            {"plugin": "ramdisk", "name": "r0", "size": 1048576}
        ],
        "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.org.rtarget:t", "tpgs": [{
            "tag": 1, "attributes": {"generate_node_acls": 1},
            "luns": [{"index": 0, "storage_object": "/backstores/fileio/d0"},
                     {"index": 1, "storage_object": "/backstores/ramdisk/r0"}],
            "portals": [{"ip_address": "127.0.0.1", "port": 3260}],
            "node_acls": []
        }]}]
    })
}

fn errors(v: Value) -> Vec<String> {
    validate(&cfg(v))
        .unwrap_err()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

#[test]
fn valid_config_has_no_warnings() {
    assert_eq!(validate(&cfg(base())), Ok(vec![]));
}

#[test]
fn duplicate_storage_object() {
    let mut v = base();
    v["storage_objects"][1] = json!({"plugin": "fileio", "name": "d0", "dev": "/x"});
    let e = errors(v);
    assert!(
        e.iter()
            .any(|m| m.contains("duplicate storage object /backstores/fileio/d0")),
        "{e:?}"
    );
}

#[test]
fn lun_to_missing_storage_object() {
    let mut v = base();
    v["targets"][0]["tpgs"][0]["luns"][1]["storage_object"] = json!("/backstores/fileio/nope");
    let e = errors(v);
    assert!(
        e.iter()
            .any(|m| m
                .contains("luns[1] lun1: storage object /backstores/fileio/nope does not exist")),
        "{e:?}"
    );
}

#[test]
fn malformed_lun_path_and_duplicate_index() {
    let mut v = base();
    v["targets"][0]["tpgs"][0]["luns"][1] = json!({"index": 0, "storage_object": "fileio/d0"});
    let e = errors(v);
    assert!(
        e.iter().any(|m| m.contains("malformed storage_object")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.contains("duplicate LUN index 0")),
        "{e:?}"
    );
}

#[test]
fn bad_sizes() {
    let mut v = base();
    v["storage_objects"][0]["size"] = json!(1000);
    v["storage_objects"][1]["size"] = json!(0);
    let e = errors(v);
    assert!(
        e.iter()
            .any(|m| m.contains("not a multiple of block_size 512")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.contains("size must be greater than 0")),
        "{e:?}"
    );
    let mut v = base();
    v["storage_objects"][0]["attributes"] = json!({"block_size": 520});
    assert!(errors(v)
        .iter()
        .any(|m| m.contains("block_size: 520 is not allowed (allowed: 512, 1024, 2048 or 4096)")));
    let mut v = base();
    v["storage_objects"][1]
        .as_object_mut()
        .unwrap()
        .remove("size");
    assert!(errors(v)
        .iter()
        .any(|m| m.contains("ramdisk storage object needs 'size'")));
}

#[test]
fn duplicate_target_tpg_portal() {
    let mut v = base();
    let t = v["targets"][0].clone();
    v["targets"].as_array_mut().unwrap().push(t);
    let tpg = v["targets"][0]["tpgs"][0].clone();
    v["targets"][0]["tpgs"].as_array_mut().unwrap().push(tpg);
    let p = v["targets"][0]["tpgs"][0]["portals"][0].clone();
    v["targets"][0]["tpgs"][0]["portals"]
        .as_array_mut()
        .unwrap()
        .push(p);
    let e = errors(v);
    assert!(
        e.iter().any(|m| m.contains("duplicate iscsi target")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("duplicate TPG tag 1")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("duplicate portal")), "{e:?}");
}

#[test]
fn bad_iqn_and_ip() {
    let mut v = base();
    v["targets"][0]["wwn"] = json!("foo");
    v["targets"][0]["tpgs"][0]["portals"][0]["ip_address"] = json!("1.2.3");
    let e = errors(v);
    assert!(e.iter().any(|m| m.contains("not an iSCSI name")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("invalid ip_address")), "{e:?}");
}

/// vhost targets: a targetcli-style one passes (with a `socket` key
/// rtslib ignores); a bad WWN, a second TPG, portals or a relative
/// socket path are errors.
#[test]
fn vhost_targets() {
    let mut v = base();
    let lun = v["targets"][0]["tpgs"][0]["luns"][0].clone();
    // As rtslib dumps a vhost target (TPG attribute fabric_prot_type,
    // LUN alias and ALUA group), plus rtarget's socket key.
    let mut lun = lun;
    lun["alias"] = json!("8c3f5a1b2d");
    lun["alua_tg_pt_gp_name"] = json!("default_tg_pt_gp");
    v["targets"].as_array_mut().unwrap().push(json!({
        "fabric": "vhost", "wwn": "naa.5001405abcdef012", "socket": "/tmp/v.sock",
        "tpgs": [{"tag": 1, "enable": true, "attributes": {"fabric_prot_type": 0},
                  "parameters": {}, "luns": [lun], "portals": [], "node_acls": []}]
    }));
    let w = validate(&cfg(v.clone())).unwrap();
    assert!(w.is_empty(), "{w:?}");
    v["targets"][1]["wwn"] = json!("naa.123");
    v["targets"][1]["socket"] = json!("rel.sock");
    let t = v["targets"][1]["tpgs"][0].clone();
    v["targets"][1]["tpgs"].as_array_mut().unwrap().push(t);
    v["targets"][1]["tpgs"][1]["tag"] = json!(2);
    v["targets"][1]["tpgs"][0]["portals"] = json!([{"ip_address": "127.0.0.1", "port": 3260}]);
    let e = errors(v);
    for want in [
        "not a vhost WWN",
        "one TPG",
        "no portals",
        "not an absolute path",
    ] {
        assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:?}");
    }
}

/// loopback targets: rtslib's shape (naa WWN, one TPG with LUNs) plus
/// rtarget's ublk queue keys passes; bad WWN, two TPGs, portals and
/// out-of-range queue keys are errors.
#[test]
fn loopback_targets() {
    let mut v = base();
    let lun = v["targets"][0]["tpgs"][0]["luns"][0].clone();
    v["targets"].as_array_mut().unwrap().push(json!({
        "fabric": "loopback", "wwn": "naa.5001405abcdef013", "ublk_queues": 2,
        "tpgs": [{"tag": 1, "enable": true, "attributes": {"fabric_prot_type": 0},
                  "parameters": {}, "luns": [lun], "portals": [], "node_acls": []}]
    }));
    let w = validate(&cfg(v.clone())).unwrap();
    assert!(w.is_empty(), "{w:?}");
    v["targets"][1]["wwn"] = json!("naa.123");
    v["targets"][1]["ublk_queue_depth"] = json!(0);
    let t = v["targets"][1]["tpgs"][0].clone();
    v["targets"][1]["tpgs"].as_array_mut().unwrap().push(t);
    v["targets"][1]["tpgs"][1]["tag"] = json!(2);
    v["targets"][1]["tpgs"][0]["portals"] = json!([{"ip_address": "127.0.0.1", "port": 3260}]);
    let e = errors(v);
    for want in [
        "not a loopback WWN",
        "one TPG",
        "no portals",
        "ublk_queue_depth 0",
    ] {
        assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:?}");
    }
}

#[test]
fn mapped_lun_must_exist() {
    let mut v = base();
    v["targets"][0]["tpgs"][0]["node_acls"] = json!([{"node_wwn": "iqn.1994-05.com.redhat:x", "mapped_luns": [{"index": 0, "tpg_lun": 7, "write_protect": false}]}]);
    let e = errors(v);
    assert!(
        e.iter().any(|m| m.contains("tpg_lun 7 does not exist")),
        "{e:?}"
    );
}

#[test]
fn unsupported_things_are_warnings() {
    let mut v = base();
    v["storage_objects"]
        .as_array_mut()
        .unwrap()
        .push(json!({"plugin": "pscsi", "name": "p", "dev": "/dev/sg0"}));
    v["targets"][0]["tpgs"][0]["luns"]
        .as_array_mut()
        .unwrap()
        .push(json!({"index": 2, "storage_object": "/backstores/pscsi/p"}));
    v["targets"][0]["tpgs"][0]["chap_userid"] = json!("u");
    v["targets"][0]["tpgs"][0]["mystery"] = json!(1);
    v["targets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"fabric": "qla2xxx", "wwn": "naa.5001405", "tpgs": []}));
    let w: Vec<String> = validate(&cfg(v))
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert!(
        w.iter()
            .any(|m| m.contains("plugin \"pscsi\" is not supported")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|m| m.contains("LUN skipped: /backstores/pscsi/p")),
        "{w:?}"
    );
    assert!(w.iter().any(|m| m.contains("CHAP")), "{w:?}");
    assert!(
        w.iter().any(|m| m.contains("unknown key \"mystery\"")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|m| m.contains("fabric \"qla2xxx\" is not supported")),
        "{w:?}"
    );
}

#[test]
fn rtarget_extension_attributes() {
    let with = |attrs: Value| {
        let mut v = base();
        v["storage_objects"][0]["attributes"] = attrs;
        validate(&cfg(v))
    };
    assert_eq!(
        with(
            json!({"io_engine": "pool", "o_direct": 1, "qos_rw_mbytes_per_sec": 8,
                        "qos_rw_ios_per_sec": "100", "removable": 0, "encryption": 0})
        ),
        Ok(vec![])
    );
    assert_eq!(with(json!({"io_engine": "uring"})), Ok(vec![]));
    assert_eq!(with(json!({"io_engine": 2})), Ok(vec![]));
    for bad in [
        json!({"io_engine": "spdk"}),
        json!({"io_engine": 3}),
        json!({"o_direct": "maybe"}),
        json!({"qos_rw_mbytes_per_sec": -1}),
        json!({"qos_rw_ios_per_sec": "fast"}),
    ] {
        assert!(with(bad.clone()).is_err(), "{bad} accepted");
    }
    // Only file-backed objects have a ring.
    let mut v = base();
    v["storage_objects"][1]["attributes"] = json!({"io_engine": "uring"});
    let e = validate(&cfg(v)).unwrap_err();
    assert!(
        format!("{e:?}").contains("io_engine=uring is for fileio and block"),
        "{e:?}"
    );
}

#[test]
fn user_objects() {
    let with = |so: Value| {
        let mut v = base();
        v["storage_objects"].as_array_mut().unwrap().push(so);
        validate(&cfg(v))
    };
    assert_eq!(
        with(
            json!({"plugin": "user", "name": "q", "config": "qcow//i.qcow2",
                        "size": 1048576, "hw_max_sectors": 128, "control": ""})
        ),
        Ok(vec![])
    );
    let w = with(json!({"plugin": "user", "name": "q", "config": "rbd/pool/img", "size": 1048576}))
        .unwrap();
    assert!(
        w[0].message
            .contains("user handler \"rbd\" is not supported"),
        "{w:?}"
    );
    // A handler the process registers becomes valid; others stay reported.
    let pattern =
        json!({"plugin": "user", "name": "p", "config": "pattern/seed=1", "size": 1048576});
    assert!(!with(pattern.clone()).unwrap().is_empty());
    set_user_handlers(["qcow", "nbd", "qemu", "pattern"]);
    assert_eq!(with(pattern), Ok(vec![]));
    let w = with(json!({"plugin": "user", "name": "q", "config": "rbd/pool/img", "size": 1048576}))
        .unwrap();
    assert!(w[0].message.contains("\"pattern\""), "{w:?}");
    let e = with(json!({"plugin": "user", "name": "q", "size": 1048576})).unwrap_err();
    assert!(e[0].message.contains("needs 'config'"), "{e:?}");
    let e = with(json!({"plugin": "user", "name": "q", "config": "qcow/rel.qcow2"})).unwrap_err();
    assert!(e[0].message.contains("must be absolute"), "{e:?}");
}

/// Issue 9 item 1 at `rtarget check` / load: every boolean-like TPG,
/// ACL and storage-object attribute refuses 2, -1 and "yes", naming the
/// attribute, the value and the allowed values.
#[test]
fn every_boolean_like_attribute_refuses_out_of_range_values() {
    use crate::settings::{ACL_ATTRIBUTES, SO_ATTRIBUTES, TPG_ATTRIBUTES};
    let flags = |t: &'static [crate::settings::Spec]| {
        t.iter()
            .filter(|s| s.allowed == [(0, 1)])
            .map(|s| s.name)
            .collect::<Vec<_>>()
    };
    let mut tried = 0;
    for (name, place) in flags(TPG_ATTRIBUTES)
        .into_iter()
        .map(|n| (n, "tpg"))
        .chain(flags(ACL_ATTRIBUTES).into_iter().map(|n| (n, "acl")))
        .chain(flags(SO_ATTRIBUTES).into_iter().map(|n| (n, "so")))
    {
        for bad in [json!(2), json!(-1), json!("yes")] {
            let mut v = base();
            let attrs = json!({ name: bad.clone() });
            match place {
                "tpg" => v["targets"][0]["tpgs"][0]["attributes"] = attrs,
                "acl" => {
                    v["targets"][0]["tpgs"][0]["node_acls"] =
                        json!([{"node_wwn": "iqn.1994-05.com.redhat:x", "attributes": attrs}])
                }
                _ => v["storage_objects"][0]["attributes"] = attrs,
            }
            let e = errors(v);
            assert!(
                e.iter()
                    .any(|m| m.contains(&format!("attribute {name}: {bad}"))
                        && m.contains("(allowed: 0 or 1)")),
                "{place} {name}={bad}: {e:?}"
            );
            tried += 1;
        }
    }
    // authentication, generate_node_acls, demo_mode_write_protect, ...
    assert!(tried >= 3 * 35, "{tried}");
}

#[test]
fn ipv6_portals() {
    assert!(parse_ip("[::0]").is_some());
    assert!(parse_ip("::0").is_some());
    assert!(parse_ip("0.0.0.0").is_some());
    assert!(parse_ip("[1.2.3.4").is_none());
}
