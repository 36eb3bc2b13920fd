//! Unit tests of [`super`] (the create/enable verbs), in their own file to keep
//! ops.rs under the size limit.

use super::*;

pub(crate) fn ctx() -> Ctx {
    Ctx {
        default_portal: "127.0.0.1:3260".parse().unwrap(),
        add_default_portal: true,
        auto_add_mapped_luns: true,
        // A distinct UUID per call (each a different NAA designator).
        new_uuid: Box::new(|| {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            Ok(format!(
                "{:08x}-0b0a-4908-8706-050403020100",
                0x0f0e_0d0c + n
            ))
        }),
        stat: Box::new(|p| match p {
            "/data" => Some(PathKind::Other),
            "/data/old.img" => Some(PathKind::File(1 << 20)),
            "/dev/sdz" => Some(PathKind::BlockDevice),
            _ => None,
        }),
    }
}

pub(crate) fn run(cfg: &mut SaveConfig, path: &str, words: &[&str]) -> Result<String> {
    create(cfg, path, &Args::from_words(words)?, &ctx())
}

const IQN: &str = "iqn.2026-11.org.example:t1";

/// targetcli's vhost walkthrough: `/vhost create` (WWN generated),
/// `tpg1/luns create`, the `socket` attribute; vhost TPGs have only
/// `luns`, one TPG per target, a WWN names one target across fabrics.
#[test]
fn vhost_walkthrough() {
    let mut cfg = SaveConfig::default();
    run(&mut cfg, "/backstores/ramdisk", &["r0", "1M"]).unwrap();
    let msg = run(&mut cfg, "/vhost", &[]).unwrap();
    let wwn = cfg.targets[0].wwn.clone();
    assert!(config::vhost::valid_wwn(&wwn), "{wwn}");
    assert!(msg.contains("nexus naa.5001405"), "{msg}");
    let tpg = format!("/vhost/{wwn}/tpg1");
    run(
        &mut cfg,
        &format!("{tpg}/luns"),
        &["/backstores/ramdisk/r0"],
    )
    .unwrap();
    assert_eq!(
        cfg.targets[0].tpgs[0].luns[0].storage_object,
        "/backstores/ramdisk/r0"
    );
    assert!(locate(&cfg, &format!("{tpg}/acls")).is_err());
    assert!(run(&mut cfg, &format!("/vhost/{wwn}"), &[])
        .unwrap_err()
        .to_string()
        .contains("one TPG"));
    assert!(run(&mut cfg, "/vhost", &[&wwn]).is_err(), "exists");
    assert!(
        run(&mut cfg, "/iscsi", &[&wwn]).is_err(),
        "one WWN, one target"
    );
    assert!(run(&mut cfg, "/vhost", &["naa.12"]).is_err());
    let kv = |v: &str| vec![("socket".to_string(), v.to_string())];
    let t = format!("/vhost/{wwn}");
    assert!(set(&mut cfg, &t, "attribute", &kv("rel.sock")).is_err());
    set(&mut cfg, &t, "attribute", &kv("/tmp/v.sock")).unwrap();
    assert_eq!(config::vhost::socket_of(&cfg.targets[0]), "/tmp/v.sock");
    assert!(config::validate(&cfg).unwrap().is_empty());
    let tree = crate::tree::build_live(&cfg, &|_| None, &|_| Some("naa.5001405000000001".into()));
    let node = tree.find(&tpg).unwrap();
    assert_eq!(node.children.len(), 1, "luns only");
    assert!(
        node.summary.contains("socket /tmp/v.sock, guest attached"),
        "{}",
        node.summary
    );
    let saved = serde_json::to_value(&cfg).unwrap();
    assert_eq!(saved["targets"][0]["fabric"], "vhost");
    delete(&mut cfg, "/vhost", &Args::from_words(&[&wwn]).unwrap()).unwrap();
    assert!(cfg.targets.is_empty());
}

fn walkthrough() -> SaveConfig {
    let mut cfg = SaveConfig::default();
    run(
        &mut cfg,
        "/backstores/fileio",
        &["mydisk1", "/data/d.img", "64M"],
    )
    .unwrap();
    run(&mut cfg, "/iscsi", &[&format!("wwn={IQN}")]).unwrap();
    let tpg = format!("/iscsi/{IQN}/tpg1");
    let vals: Vec<(String, String)> = [("authentication", "0"), ("generate_node_acls", "1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    set(&mut cfg, &tpg, "attribute", &vals).unwrap();
    run(
        &mut cfg,
        &format!("{tpg}/luns"),
        &["storage_object=/backstores/fileio/mydisk1"],
    )
    .unwrap();
    cfg
}

#[test]
fn seed_walkthrough_builds_a_valid_config() {
    let cfg = walkthrough();
    assert_eq!(config::validate(&cfg).map(|_| ()), Ok(()));
    let so = &cfg.storage_objects[0];
    assert_eq!((so.size, so.write_back), (Some(64 << 20), Some(true)));
    let tpg = &cfg.targets[0].tpgs[0];
    assert_eq!(tpg.tag, Some(1));
    assert_eq!(tpg.portals[0].ip_address, "127.0.0.1");
    assert_eq!(tpg.attributes["generate_node_acls"], 1);
    assert_eq!(tpg.luns[0].storage_object, "/backstores/fileio/mydisk1");
    assert_eq!(
        locate(&cfg, &format!("/iscsi/{IQN}/tpg1/luns/lun0")).unwrap(),
        Loc::Lun(IQN.into(), 1, 0)
    );
    assert_eq!(
        locate(&cfg, &format!("/iscsi/{IQN}/tpg1/portals/127.0.0.1:3260")).unwrap(),
        Loc::Portal(IQN.into(), 1, "127.0.0.1:3260".into())
    );
}

#[test]
fn bad_requests_are_clear_errors() {
    let mut cfg = walkthrough();
    let e = |r: Result<String>| r.unwrap_err().to_string();
    assert!(e(run(
        &mut cfg,
        "/backstores/fileio",
        &["mydisk1", "/data/x.img", "1G"]
    ))
    .contains("already exists"));
    assert!(e(run(
        &mut cfg,
        "/backstores/fileio",
        &["d2", "/data/new.img"]
    ))
    .contains("size is required"));
    assert!(e(run(
        &mut cfg,
        "/backstores/fileio",
        &["d2", "/nodir/new.img", "1G"]
    ))
    .contains("does not exist"));
    assert!(e(run(
        &mut cfg,
        "/backstores/fileio",
        &["d2", "rel.img", "1G"]
    ))
    .contains("absolute"));
    assert!(e(run(&mut cfg, "/iscsi", &["not-an-iqn"])).contains("not a valid iSCSI name"));
    assert!(e(run(&mut cfg, "/nowhere", &[])).contains("no such path: /nowhere"));
    let luns = format!("/iscsi/{IQN}/tpg1/luns");
    assert!(e(run(&mut cfg, &luns, &["/backstores/fileio/nope"])).contains("does not exist"));
    assert!(e(run(
        &mut cfg,
        &luns,
        &["/backstores/fileio/mydisk1", "lun0"]
    ))
    .contains("lun0 already exists"));
    let tpg = format!("/iscsi/{IQN}/tpg1");
    let bad = vec![("authentcation".to_string(), "0".to_string())];
    assert!(e(set(&mut cfg, &tpg, "attribute", &bad)).contains("unknown attribute"));
    for (k, v, want) in [
        ("MaxBurstLength", "100", "from 512"),
        ("HeaderDigest", "CRC32C,MD5", "comma-separated list"),
        ("ErrorRecoveryLevel", "3", "from 0 to 2"),
    ] {
        let bad = vec![(k.to_string(), v.to_string())];
        assert!(
            e(set(&mut cfg, &tpg, "parameter", &bad)).contains(want),
            "{k}"
        );
    }
    let good = vec![
        ("HeaderDigest".to_string(), "CRC32C,None".to_string()),
        ("MaxBurstLength".to_string(), "1048576".to_string()),
    ];
    set(&mut cfg, &tpg, "parameter", &good).unwrap();
    let bad = vec![("InitialR2T".to_string(), "maybe".to_string())];
    assert!(e(set(&mut cfg, &tpg, "parameter", &bad)).contains("Yes or No"));
    assert!(run(&mut cfg, "/backstores/fileio", &["d3", "/data/old.img"]).is_ok());
    assert_eq!(cfg.storage_objects[1].size, Some(1 << 20));
}

#[test]
fn qcow_objects_live_under_user_and_are_referenced_as_user() {
    let mut cfg = SaveConfig::default();
    let e = run(
        &mut cfg,
        "/backstores/user:qcow",
        &["q", "cfgstring=/data/new.qcow2"],
    );
    assert!(e.unwrap_err().to_string().contains("size is required"));
    run(
        &mut cfg,
        "/backstores/user:qcow",
        &["q", "1G", "/data/new.qcow2"],
    )
    .unwrap();
    let so = &cfg.storage_objects[0];
    assert_eq!(
        (so.plugin.as_str(), so.path()),
        ("user", "/backstores/user/q".into())
    );
    assert_eq!(so.user_config(), Some(("qcow", "/data/new.qcow2")));
    assert_eq!(
        locate(&cfg, "/backstores/user:qcow/q").unwrap(),
        Loc::Object("user:qcow".into(), "q".into())
    );
    assert_eq!(
        object_ref(&cfg, "/backstores/user:qcow/q").as_deref(),
        Some("/backstores/user/q")
    );
    run(&mut cfg, "/iscsi", &[IQN]).unwrap();
    let luns = format!("/iscsi/{IQN}/tpg1/luns");
    run(&mut cfg, &luns, &["/backstores/user:qcow/q"]).unwrap();
    assert_eq!(
        cfg.targets[0].tpgs[0].luns[0].storage_object,
        "/backstores/user/q"
    );
    assert!(config::validate(&cfg).is_ok());
    delete(&mut cfg, "/backstores/user:qcow/q", &Args::default()).unwrap();
    assert!(cfg.storage_objects.is_empty() && cfg.targets[0].tpgs[0].luns.is_empty());
}

/// `create q1 /existing.qcow2` (no size) under the short name `qcow2`:
/// the image's own size, saved as user:qcow.
#[test]
fn existing_qcow2_needs_no_size_and_qcow2_is_user_qcow() {
    let mut cfg = SaveConfig::default();
    let msg = run(&mut cfg, "/backstores/qcow2", &["q", "/data/old.img"]).unwrap();
    assert!(msg.contains("using /data/old.img"), "{msg}");
    let so = &cfg.storage_objects[0];
    assert_eq!((so.path(), so.size), ("/backstores/user/q".into(), None));
    assert_eq!(so.user_config(), Some(("qcow", "/data/old.img")));
    // A size as the second word keeps targetcli's order.
    let e = e(run(&mut cfg, "/backstores/qcow2", &["q2", "1G"]));
    assert!(e.contains("missing parameter cfgstring"), "{e}");
    let e = run(&mut cfg, "/backstores/qcow2", &["q3", "/data/new.qcow2"]).unwrap_err();
    assert!(
        e.to_string().contains("size is required")
            && e.to_string()
                .contains("e.g. /backstores/user:qcow create q1 "),
        "{e}"
    );
}

/// The loopback default portal says so, with the commands that open it.
#[test]
fn loopback_default_portal_is_explained() {
    let msg = run(&mut SaveConfig::default(), "/iscsi", &[IQN]).unwrap();
    assert!(
        msg.contains("127.0.0.1 is reachable from this host only")
            && msg.contains(&format!("`/iscsi/{IQN}/tpg1/portals create 0.0.0.0 3260`")),
        "{msg}"
    );
}

/// Each common mistake names what was expected and shows an example.
#[test]
fn errors_show_an_example() {
    let mut cfg = walkthrough();
    for (path, words, want) in [
        ("/backstores/ramdisk", &["r1"][..], "missing parameter size; usage: create name size [nullio] [wwn]; e.g. /backstores/ramdisk create ram1 1G"),
        ("/backstores/fileio", &["d", "/data/d2.img", "1Q"], "unknown unit (bytes, or a number with k, M, G or T; e.g. 64M, 8G)"),
        ("/backstores/ramdisk", &["r", "1G", "0", "w", "x"], "too many arguments (5 given, create takes at most 4); usage: create name size [nullio] [wwn]; e.g."),
        ("/backstores/fileio", &["d", "/data/d2.img", "1G", "colour=red"], "unknown parameter \"colour\""),
        ("/nowhere/x", &[], "no such path: /nowhere/x (e.g. `ls /nowhere` shows what is there)"),
        ("/iscsi", &["bad name"], "is not a valid iSCSI name (e.g. iqn."),
        ("/iscsi", &["iqn.2026-11.org.example:t1", "x"], "e.g. /iscsi create iqn.2026-11.org.example:t1"),
    ] {
        let e = e(run(&mut cfg, path, words));
        assert!(e.contains(want), "{path} {words:?}: {e}");
    }
    let e = crate::ops_edit::set(
        &mut cfg,
        "/backstores/fileio/mydisk1",
        "attribute",
        &[("colour".into(), "1".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown attribute \"colour\"; known: ")
            && e.ends_with("e.g. set attribute emulate_tpu=1"),
        "{e}"
    );
}

fn e(r: Result<String>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn qemu_objects_take_a_config_string_and_size_zero() {
    let mut cfg = SaveConfig::default();
    // SIZE 0: the image's virtual size (not saved); the string is
    // saved in its canonical FORMAT/PATH form.
    run(
        &mut cfg,
        "/backstores/user:qemu",
        &[
            "v",
            "0",
            "cfgstring=format=vmdk;file=/data/old.img;readonly=on",
        ],
    )
    .unwrap();
    let so = &cfg.storage_objects[0];
    assert_eq!(so.size, None);
    assert_eq!(
        so.user_config(),
        Some(("qemu", "vmdk//data/old.img;readonly=on"))
    );
    assert_eq!(so.ui_plugin(), "user:qemu");
    assert!(config::validate(&cfg).is_ok());
    for (words, want) in [
        (&["w", "0", "vmdk/rel.vmdk"][..], "must be absolute"),
        (&["w", "0", "/data/old.img"][..], "expected FORMAT/PATH"),
        (&["w", "0", "vmdk//data/new.vmdk"][..], "size is required"),
        (
            &["w", "0", "vmdk//data/old.img;bogus=1"][..],
            "unknown option",
        ),
    ] {
        let e = run(&mut cfg, "/backstores/user:qemu", words).unwrap_err();
        assert!(e.to_string().contains(want), "{words:?}: {e}");
    }
    // A missing image with a size is created when it opens.
    run(
        &mut cfg,
        "/backstores/user:qemu",
        &["w", "1G", "vhdx//data/new.vhdx"],
    )
    .unwrap();
    assert_eq!(cfg.storage_objects[1].size, Some(1 << 30));
}

#[test]
fn acls_portals_and_cascading_delete() {
    let mut cfg = walkthrough();
    let tpg = format!("/iscsi/{IQN}/tpg1");
    run(
        &mut cfg,
        &format!("{tpg}/acls"),
        &["iqn.1994-05.com.redhat:c1"],
    )
    .unwrap();
    run(&mut cfg, &format!("{tpg}/portals"), &["::1", "3261"]).unwrap();
    assert!(config::validate(&cfg).is_ok());
    let t = &cfg.targets[0].tpgs[0];
    assert_eq!(t.node_acls[0].mapped_luns[0].tpg_lun, 0);
    assert_eq!(t.portals[1].ip_address, "[::1]");
    let g = get(&cfg, &tpg, "attribute", &["generate_node_acls".into()]).unwrap();
    assert_eq!(g["generate_node_acls"], 1);
    let none = Args::default();
    delete(&mut cfg, &format!("{tpg}/portals/[::1]:3261"), &none).unwrap();
    delete(
        &mut cfg,
        "/backstores/fileio",
        &Args::from_words(&["mydisk1"]).unwrap(),
    )
    .unwrap();
    let t = &cfg.targets[0].tpgs[0];
    assert!(t.luns.is_empty() && t.node_acls[0].mapped_luns.is_empty());
    assert_eq!(t.portals.len(), 1);
    delete(&mut cfg, "/iscsi", &Args::from_words(&[IQN]).unwrap()).unwrap();
    assert!(cfg.targets.is_empty());
    assert!(delete(&mut cfg, "/iscsi", &Args::from_words(&[IQN]).unwrap()).is_err());
}

/// `user:qcow create ... backing=BASE` makes a native overlay over an
/// existing image (size from the base), and refuses backing= for an
/// image that already exists.
#[test]
fn qcow_overlay_with_backing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    drop(backstore::Qcow2Backstore::create(&base, 8 << 20, 65536).unwrap());
    let real = Ctx {
        stat: Box::new(|p| {
            std::fs::metadata(p).ok().map(|m| {
                if m.is_file() {
                    PathKind::File(m.len())
                } else {
                    PathKind::Other
                }
            })
        }),
        ..ctx()
    };
    let top = dir.path().join("top.qcow2");
    let words = [
        "ov".to_string(),
        format!("cfgstring={}", top.display()),
        format!("backing={}", base.display()),
    ];
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut cfg = SaveConfig::default();
    let args = Args::from_words(&words).unwrap();
    create(&mut cfg, "/backstores/user:qcow", &args, &real).unwrap();
    assert_eq!(cfg.storage_objects[0].size, Some(8 << 20));
    let q = backstore::Qcow2Backstore::open(&top, &Default::default()).unwrap();
    assert_eq!(q.backing_file(), Some(base.as_path()));
    let again = create(
        &mut SaveConfig::default(),
        "/backstores/user:qcow",
        &args,
        &real,
    );
    assert!(again.unwrap_err().to_string().contains("exists"));
}
