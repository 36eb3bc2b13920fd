//! Management tests around login and restore: TPG CHAP set through the
//! CLI and enforced, a taken default portal, and a saveconfig.json written
//! by targetcli restored live and served.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::Path;

/// TPG CHAP set with `set auth` applies to the next login: the right
/// secret logs in, a wrong one or none is refused.
#[test]
fn tpg_chap_set_through_the_cli_is_enforced() {
    if !host::require_tool("iscsi-inq") {
        return;
    }
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let tpg = format!("/iscsi/{IQN}/tpg1");
    ok(&s.socket, &["/backstores/ramdisk", "create", "r0", "16M"]);
    ok(&s.socket, &["/iscsi", "create", IQN]);
    ok(
        &s.socket,
        &[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r0"],
    );
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "attribute",
            "authentication=1",
            "generate_node_acls=1",
        ],
    );
    let out = ok(
        &s.socket,
        &[&tpg, "set", "auth", "userid=u1", "password=secret123456"],
    );
    assert!(!out.contains("secret123456"), "{out}");
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[gen-acls, tpg-auth, 1-way auth]"));
    let inq = |creds: &str| {
        let url = format!("iscsi://{creds}127.0.0.1:{}/{IQN}/0", s.port);
        tool(&["iscsi-inq", &url]).unwrap()
    };
    let good = inq("u1%secret123456@");
    assert!(
        good.status.success() && String::from_utf8_lossy(&good.stdout).contains("DIRECT_ACCESS"),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    // Mutual CHAP: the target proves itself with the mutual secret.
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "auth",
            "mutual_userid=tgt",
            "mutual_password=tsecret654321",
        ],
    );
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[gen-acls, tpg-auth, mutual auth]"));
    let mutual = |tp: &str| {
        let url = format!(
            "iscsi://u1%secret123456@127.0.0.1:{}/{IQN}/0?target_user=tgt&target_password={tp}",
            s.port
        );
        tool(&["iscsi-inq", &url]).unwrap()
    };
    assert!(mutual("tsecret654321").status.success());
    let out = mutual("wrongwrong1234");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CHAP_R"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["u1%wrongwrong12@", ""] {
        let out = inq(bad);
        assert!(!out.status.success(), "login with {bad:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Authentication failure"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.stop();
}

/// A default portal whose port is taken does not stop target creation.
#[test]
fn taken_default_portal_leaves_the_target_without_a_portal() {
    let s = setup();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let d = Daemon::start(&s.config, &s.socket, port);
    let out = cli(&s.socket, &["/iscsi", "create", IQN]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    let ls = ok(&s.socket, &["ls", &format!("/iscsi/{IQN}/tpg1/portals")]);
    assert!(ls.contains("[Portals: 0]"), "{ls}");
    // Another port works at once.
    let out = ok(
        &s.socket,
        &[
            &format!("/iscsi/{IQN}/tpg1/portals"),
            "create",
            "127.0.0.1",
            &s.port.to_string(),
        ],
    );
    assert!(out.contains("Created network portal"), "{out}");
    d.stop();
}

/// A saveconfig.json written by targetcli-fb (fileio, block, ramdisk,
/// ACLs, CHAP, two targets) restores live and serves; only the machine
/// specific paths and the portal are rewritten for the test.
#[test]
fn targetcli_saveconfig_restores_live_and_serves() {
    let s = setup();
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/data/targetcli-sample.json"
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
    let dir = s.config.parent().unwrap().to_path_buf();
    for so in v["storage_objects"].as_array_mut().unwrap() {
        if let Some(dev) = so["dev"].as_str() {
            let name = Path::new(dev).file_name().unwrap().to_owned();
            let path = dir.join(name);
            if so["plugin"] == "block" {
                std::fs::File::create(&path)
                    .unwrap()
                    .set_len(64 << 20)
                    .unwrap();
            }
            so["dev"] = serde_json::json!(path);
        }
    }
    v["targets"][0]["tpgs"][0]["portals"][0] = serde_json::json!({"ip_address": "127.0.0.1", "port": s.port, "iser": false, "offload": false});
    let restored = dir.join("from-targetcli.json");
    std::fs::write(&restored, serde_json::to_string_pretty(&v).unwrap()).unwrap();

    let d = Daemon::start(&s.config, &s.socket, s.port);
    let out = cli(&s.socket, &["restoreconfig", restored.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // ACLs and their CHAP credentials are enforced now: not reported.
    assert!(!stderr.contains("not enforced"), "{stderr}");
    let iqn = v["targets"][0]["wwn"].as_str().unwrap();
    let ls = ok(&s.socket, &["ls"]);
    for want in [
        "[Storage Objects: 2]",
        "[TPGs: 1]",
        "[ACLs: 1]",
        "[LUNs: 3]",
        "[Targets: 2]",
        "[disabled]",
        "o- iqn.1994-05.com.redhat:4d1f3e5a7b9c ",
        "[nullio (1.0TiB) activated]",
    ] {
        assert!(ls.contains(want), "missing {want:?} in\n{ls}");
    }
    if have_iscsi_ls() {
        let out = iscsi_ls(s.port);
        assert!(out.contains(&format!("Target:{iqn}")), "{out}");
        assert!(out.contains("Lun:0") && out.contains("Lun:2"), "{out}");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    assert_eq!(saved["targets"], v["targets"]);
    d.stop();
}
