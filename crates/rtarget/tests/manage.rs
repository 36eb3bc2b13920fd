//! End-to-end tests of live management: a daemon on a temporary API socket,
//! driven by the one-shot CLI and the shell exactly as a user would (the
//! seed walk-through), checked with libiscsi's `iscsi-ls`, the saved
//! config, and a restart. Storage plugins are in `manage_backstores.rs`,
//! authentication and restoring targetcli files in `manage_restore.rs`.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// The seed walk-through with the one-shot CLI, served live without a
/// restart, saved, and served again after a restart.
#[test]
fn walkthrough_applies_live_saves_and_survives_restart() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let mode = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let tpg = format!("/iscsi/{IQN}/tpg1");
    let img = s.image.to_str().unwrap();
    ok(
        &s.socket,
        &["/backstores/fileio", "create", "mydisk1", img, "64M"],
    );
    let out = ok(&s.socket, &["/iscsi", "create", &format!("wwn={IQN}")]);
    assert!(out.contains(&format!("Created target {IQN}")), "{out}");
    demo_mode(&s.socket, &tpg);
    ok(
        &s.socket,
        &[
            &format!("{tpg}/luns"),
            "create",
            "storage_object=/backstores/fileio/mydisk1",
        ],
    );
    assert_eq!(std::fs::metadata(&s.image).unwrap().len(), 64 << 20);

    let ls = ok(&s.socket, &["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert!(
        lines[0].starts_with("o- / ...") && lines[0].ends_with("[...]"),
        "{ls}"
    );
    // Padded to 80 columns (long paths overflow, as in targetcli).
    assert!(lines.iter().all(|l| l.chars().count() >= 80), "{ls}");
    assert_eq!(lines[1].chars().count(), 80, "{ls}");
    for want in [
        "  o- backstores ",
        "  | o- fileio ",
        "[Storage Objects: 1]",
        "  | | o- mydisk1 ",
        &format!("[{img} (64.0MiB) write-back activated]"),
        "  o- iscsi ",
        "[Targets: 1]",
        &format!("  | o- {IQN} "),
        "[TPGs: 1]",
        "  |   o- tpg1 ",
        "[gen-acls, no-auth]",
        "[LUNs: 1]",
        "  |     | o- lun0 ",
        &format!("[fileio/mydisk1 ({img}) (default_tg_pt_gp)]"),
        "[Portals: 1]",
        &format!("  |       o- 127.0.0.1:{} ", s.port),
        "[OK]",
        "  o- loopback ",
        "  o- vhost ",
    ] {
        assert!(ls.contains(want), "missing {want:?} in:\n{ls}");
    }
    let ls1 = ok(&s.socket, &["ls", "/iscsi", "1"]);
    assert_eq!(ls1.lines().count(), 2, "{ls1}");

    if have_iscsi_ls() {
        let out = iscsi_ls(s.port);
        assert!(out.contains(&format!("Target:{IQN}")), "{out}");
        assert!(out.contains("Lun:0"), "{out}");
        // A second portal starts listening at once.
        let port2 = free_port();
        ok(
            &s.socket,
            &[
                &format!("{tpg}/portals"),
                "create",
                "127.0.0.1",
                &port2.to_string(),
            ],
        );
        let out = iscsi_ls(port2);
        assert!(
            out.contains(&format!("Target:{IQN}")) && out.contains("Lun:0"),
            "{out}"
        );
        ok(
            &s.socket,
            &[
                &format!("{tpg}/portals"),
                "delete",
                "127.0.0.1",
                &port2.to_string(),
            ],
        );
    }

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    assert_eq!(saved["storage_objects"][0]["name"], "mydisk1");
    assert_eq!(saved["storage_objects"][0]["size"], 64 << 20);
    let t = &saved["targets"][0];
    assert_eq!(t["wwn"], IQN);
    assert_eq!(t["tpgs"][0]["attributes"]["generate_node_acls"], 1);
    assert_eq!(
        t["tpgs"][0]["luns"][0]["storage_object"],
        "/backstores/fileio/mydisk1"
    );
    assert_eq!(t["tpgs"][0]["portals"].as_array().unwrap().len(), 1);

    d.stop();
    assert!(!s.socket.exists(), "socket left behind");
    let mut d = Daemon::start(&s.config, &s.socket, s.port);
    let line = d.wait_line("rtarget: listening on ");
    assert_eq!(line, format!("rtarget: listening on 127.0.0.1:{}", s.port));
    assert!(ok(&s.socket, &["ls"]).contains("[fileio/mydisk1 ("));
    if have_iscsi_ls() {
        assert!(iscsi_ls(s.port).contains("Lun:0"));
    }
    d.stop();
}

#[test]
fn bad_arguments_fail_clearly_and_the_daemon_survives() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    ok(&s.socket, &["/backstores/ramdisk", "create", "r1", "16M"]);
    // The common mistakes: each error names what was expected and shows
    // a command that works ("e.g.").
    let bad: &[(&[&str], &str)] = &[
        (
            &["/backstores/fileio", "create", "d1"],
            "missing parameter file_or_dev; usage: create name file_or_dev [size]",
        ),
        (
            &["/backstores/ramdisk", "create", "r2"],
            "missing parameter size",
        ),
        (
            &["/backstores/fileio", "create", "d1", "/x.img", "12Q"],
            "unknown unit (bytes, or a number with k, M, G or T",
        ),
        (
            &["/backstores/user:qcow", "create", "q1", "8Q", "/x.qcow2"],
            "unknown unit",
        ),
        (
            &["/iscsi", "create", "not-an-iqn"],
            "not a valid iSCSI name",
        ),
        (&["/nowhere", "ls"], "no such path: /nowhere"),
        (
            &["/backstores/fileio/nope", "info"],
            "`ls /backstores/fileio`",
        ),
        (
            &["/iscsi", "frobnicate"],
            "unknown command \"frobnicate\" after the path /iscsi",
        ),
        (
            &["bogus", "command"],
            "\"bogus\" is neither a command nor a path",
        ),
        (
            &["/backstores/fileio", "create", "bogus=1"],
            "unknown parameter",
        ),
        (
            &[
                "/backstores/ramdisk",
                "create",
                "a",
                "1G",
                "false",
                "x",
                "y",
            ],
            "too many arguments (5 given, create takes at most 4)",
        ),
        (&["/", "set", "attribute", "a=1"], "no configuration group"),
        (
            &[
                "/backstores/ramdisk/r1",
                "set",
                "attribute",
                "emulate_bogus=1",
            ],
            "unknown attribute \"emulate_bogus\"",
        ),
        (
            &[
                "/backstores/ramdisk/r1",
                "get",
                "attribute",
                "emulate_bogus",
            ],
            "unknown attribute \"emulate_bogus\"",
        ),
        (
            &["/backstores/ramdisk", "delete"],
            "missing parameter name; usage: delete name; e.g. /backstores/ramdisk delete disk1",
        ),
        (
            &["/backstores/ramdisk", "delete", "nope"],
            "no such storage object /backstores/ramdisk/nope",
        ),
        (&["ls", "/", "x=1"], "ls takes [PATH] [DEPTH] (e.g."),
        (&["sessions", "all"], "e.g. `sessions detail`"),
        (
            &["--bogus", "ls"],
            "the options are --socket PATH and --json",
        ),
    ];
    for (args, want) in bad {
        let out = cli(&s.socket, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(
            stderr.contains("e.g."),
            "{args:?} shows no example: {stderr}"
        );
    }
    // Raw protocol garbage gets an error line, and the daemon keeps serving.
    let mut c = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    c.write_all(
        concat!(
            "not json\n",
            "{\"op\":\"nope\"}\n",
            "[1]\n",
            "{\"path\":\"/\"}\n",
            "{\"op\":\"ls\",\"depth\":-1}\n",
            "{\"op\":\"create\",\"path\":\"/iscsi\",\"argv\":\"iqn.x\"}\n",
            "{\"op\":\"set\",\"path\":\"/iscsi\",\"argv\":[\"a=1\"]}\n",
            "{\"op\":\"sessions\",\"detail\":\"yes\"}\n",
            "{\"op\":\"ping\"}\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut r = BufReader::new(c);
    for want in [
        "bad JSON",
        "unknown op",
        "a request is a JSON object",
        r#"missing "op""#,
        r#""depth" must be a non-negative integer"#,
        r#""argv" must be an array of strings"#,
        r#"missing "group""#,
        r#""detail" must be true or false"#,
    ] {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false, "{line}");
        assert!(v["error"].as_str().unwrap().contains(want), "{line}");
    }
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    let out = ok(&s.socket, &["--json", "ls", "/", "0"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["tree"]["name"], "/");
    // Nothing bad was saved: only the ramdisk the attribute cases use.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    let objects = saved["storage_objects"].as_array().unwrap();
    assert_eq!(
        (objects.len(), &objects[0]["name"]),
        (1, &serde_json::json!("r1"))
    );
    assert_eq!(saved["targets"], serde_json::json!([]));
    d.stop();

    let out = cli(&s.socket, &["ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the rtarget daemon"));
}

#[test]
fn shell_reads_commands_from_stdin() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let script = format!(
        "/backstores/ramdisk create r0 16M\ncd /iscsi\npwd\ncreate {IQN}\ncd {IQN}/tpg1\npwd\nluns/ create /backstores/ramdisk/r0\nls luns\nget attribute generate_node_acls\nsaveconfig\nbookmarks add t1\ncd /\ncd @t1/luns\npwd\nexit\nls\n"
    );
    let mut child = Command::new(BIN)
        .env("HOME", s.config.parent().unwrap())
        .arg("--socket")
        .arg(&s.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Created ramdisk r0"), "{stdout}");
    assert!(stdout.contains("\n/iscsi\n"), "{stdout}");
    assert!(stdout.contains(&format!("/iscsi/{IQN}/tpg1\n")), "{stdout}");
    assert!(
        stdout.contains("o- luns ") && stdout.contains("[ramdisk/r0 (default_tg_pt_gp)]"),
        "{stdout}"
    );
    assert!(stdout.contains("generate_node_acls=0"), "{stdout}");
    assert!(stdout.contains("Configuration saved to"), "{stdout}");
    assert!(
        stdout.contains(&format!("/iscsi/{IQN}/tpg1/luns\n")),
        "{stdout}"
    );
    assert!(s.config.with_file_name(".rtarget_bookmarks").exists());
    // `exit` ends the script: the final `ls` did not run.
    assert_eq!(stdout.matches("o- ").count(), 2, "{stdout}");

    // A failing command makes the script's exit status non-zero.
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&s.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cd /nowhere\nbogus command\ncd /iscsi\nfrobnicate x\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such path: /nowhere"), "{stderr}");
    // The word that is neither a path nor a command is the one named
    // (relative to the shell's directory).
    assert!(
        stderr.contains("\"bogus\" is neither a command nor a path (/bogus does not exist)")
            && stderr.contains(
                "\"frobnicate\" is neither a command nor a path (/iscsi/frobnicate does not exist)"
            ),
        "{stderr}"
    );
    d.stop();
}

#[test]
fn saveconfig_clearconfig_restoreconfig_and_enable() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let copy = s.config.with_file_name("copy.json");
    ok(&s.socket, &["/backstores/ramdisk", "create", "r0", "16M"]);
    ok(&s.socket, &["/iscsi", "create", IQN]);
    let tpg = format!("/iscsi/{IQN}/tpg1");
    ok(&s.socket, &[&tpg, "disable"]);
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[disabled]"));
    ok(&s.socket, &[&tpg, "enable"]);
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[no-gen-acls, no-auth]"));
    let out = ok(&s.socket, &[&tpg, "status"]);
    assert_eq!(out, format!("Status for {tpg}: no-gen-acls, no-auth\n"));
    ok(
        &s.socket,
        &[&tpg, "set", "auth", "userid=u1", "password=secret12"],
    );
    let out = ok(&s.socket, &["/backstores/ramdisk/r0", "info"]);
    assert!(
        out.contains("plugin: ramdisk\n") && out.contains("size: 16777216\n"),
        "{out}"
    );
    let out = ok(&s.socket, &[&tpg, "info"]);
    assert!(
        out.contains("chap_userid: u1\n") && !out.contains("secret12"),
        "{out}"
    );
    let out = ok(&s.socket, &[&tpg, "get", "auth", "password"]);
    assert_eq!(out, "password=secret12\n");
    let out = ok(&s.socket, &["saveconfig", copy.to_str().unwrap()]);
    assert!(out.contains("Configuration saved to"), "{out}");

    let out = cli(&s.socket, &["clearconfig"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("confirm=true"));
    ok(&s.socket, &["clearconfig", "confirm=true"]);
    let ls = ok(&s.socket, &["ls"]);
    assert!(ls.contains("[Targets: 0]") && !ls.contains("r0"), "{ls}");
    let saved = std::fs::read_to_string(&s.config).unwrap();
    assert!(!saved.contains(IQN), "{saved}");

    ok(&s.socket, &["restoreconfig", copy.to_str().unwrap()]);
    let ls = ok(&s.socket, &["ls"]);
    assert!(
        ls.contains(&format!("o- {IQN} ")) && ls.contains("o- r0 "),
        "{ls}"
    );
    assert!(std::fs::read_to_string(&s.config).unwrap().contains(IQN));

    // Global preferences: no autosave, no default portal.
    ok(
        &s.socket,
        &[
            "set",
            "global",
            "auto_save=false",
            "auto_add_default_portal=false",
        ],
    );
    assert_eq!(
        ok(&s.socket, &["get", "global", "auto_save"]),
        "auto_save=false\n"
    );
    let prefs = s.config.with_file_name("rtarget-prefs.json");
    assert!(std::fs::read_to_string(&prefs)
        .unwrap()
        .contains("\"auto_save\": false"));
    let before = std::fs::read_to_string(&s.config).unwrap();
    let iqn2 = "iqn.2026-11.org.example:t2";
    let out = cli(&s.socket, &["/iscsi", "create", iqn2]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT saved"));
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), before);
    assert!(
        ok(&s.socket, &["ls", &format!("/iscsi/{iqn2}/tpg1/portals")]).contains("[Portals: 0]")
    );
    ok(&s.socket, &["saveconfig"]);
    assert!(std::fs::read_to_string(&s.config).unwrap().contains(iqn2));
    assert!(!cli(&s.socket, &["set", "global", "auto_sve=1"])
        .status
        .success());
    d.stop();
}
