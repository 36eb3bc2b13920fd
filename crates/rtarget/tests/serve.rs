//! End-to-end tests of the `rtarget` binary: demo creation, config errors,
//! serving the demo target to libiscsi's `iscsi-ls`, clean shutdown.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::host::{require_tool, run};
use common::{have_iscsi_ls, iscsi_ls_at, Daemon, BIN};

/// `rtarget serve` on `config` and `state`, listening on a free port.
fn serve(config: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// The daemon of [`serve`], logging at info level; does not wait.
fn start(config: &Path, state: &Path) -> Daemon {
    let mut cmd = serve(config, state);
    cmd.env("RUST_LOG", "info");
    Daemon::spawn(cmd)
}

/// The `ADDRESS:PORT` the daemon says it listens on.
fn listening(d: &mut Daemon) -> String {
    let line = d.wait_line("rtarget: listening on ");
    line.trim_start_matches("rtarget: listening on ")
        .trim()
        .to_string()
}

fn run_serve(config: &Path, state: &Path) -> std::process::Output {
    serve(config, state).output().expect("run rtarget")
}

#[test]
fn broken_config_is_a_located_error_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let text = "{\n  \"storage_objects\": [\n    {\"plugin\": \"fileio\",, }\n  ]\n}\n";
    std::fs::write(&cfg, text).unwrap();
    let out = run_serve(&cfg, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:", cfg.display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
    assert!(!dir.path().join("backup").exists());
    assert!(!dir.path().join("demo0.img").exists());
}

#[test]
fn invalid_config_lists_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let text = r#"{"storage_objects": [], "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.x:y",
        "tpgs": [{"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/fileio/missing"}],
                  "portals": [{"ip_address": "127.0.0.1", "port": 3260}]}]}]}"#;
    std::fs::write(&cfg, text).unwrap();
    let out = run_serve(&cfg, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("storage object /backstores/fileio/missing does not exist"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
}

#[test]
fn check_subcommand_reports_warnings() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/data/targetcli-sample.json"
    );
    let out = Command::new(BIN)
        .args(["check", "--config", sample])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK (5 storage objects, 2 targets"),
        "{stdout}"
    );
    // Its ACLs and CHAP credentials are served: nothing to warn about.
    assert!(!stdout.contains("not enforced"), "{stdout}");
    // What rtarget keeps but does not act on is reported.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    std::fs::write(
        &cfg,
        r#"{"targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.x:y", "tpgs": [{"tag": 1,
            "portals": [{"ip_address": "127.0.0.1", "port": 3260, "iser": true}]}]}]}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("warning: "), "{stdout}");
}

/// Without a config: the demo config and sparse image are written, the
/// daemon serves the demo target (iscsi-ls sees it), and SIGTERM stops it
/// with status 0.
#[test]
fn demo_target_is_created_served_and_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("etc/saveconfig.json");
    let state = dir.path().join("state");
    let mut d = start(&cfg, &state);
    let addr = listening(&mut d);

    let saved = std::fs::read_to_string(&cfg).expect("demo config written");
    let v: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(v["targets"][0]["wwn"], "iqn.2026-11.org.rtarget:demo");
    assert_eq!(v["storage_objects"][0]["name"], "demo0");
    let img = std::fs::metadata(state.join("demo0.img")).unwrap();
    assert_eq!(img.len(), 1 << 30);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&img) * 512 < 1 << 20,
        "image is not sparse"
    );
    assert!(d
        .wait_line_within("  libiscsi  iscsi-ls -s iscsi://", Duration::from_secs(5))
        .is_some());

    if have_iscsi_ls() {
        let stdout = iscsi_ls_at(&addr);
        assert!(
            stdout.contains("Target:iqn.2026-11.org.rtarget:demo"),
            "{stdout}"
        );
        assert!(stdout.contains("Lun:0"), "{stdout}");
    }

    d.stop();

    // A second start reuses the saved config (no demo banner, same identity).
    let mut d = start(&cfg, &state);
    assert!(d
        .wait_line_within("rtarget: listening on ", Duration::from_secs(30))
        .is_some());
    assert!(
        !d.seen.iter().any(|l| l.contains("demo target was created")),
        "{:?}",
        d.seen
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), saved);
    d.signal(libc::SIGINT);
    assert!(d
        .wait_exit(Duration::from_secs(20))
        .expect("no exit on SIGINT")
        .success());
}

/// 64 MiB of random data written to the demo LUN with qemu-img and read
/// back byte for byte.
#[test]
fn demo_lun_round_trips_data_through_qemu_img() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let mut d = start(&cfg, dir.path());
    let addr = listening(&mut d);
    let url = format!("iscsi://{addr}/iqn.2026-11.org.rtarget:demo/0");

    let input = dir.path().join("in.raw");
    let mut data = vec![0u8; 64 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
        .unwrap();
    std::fs::write(&input, &data).unwrap();
    let args = ["convert", "-n", "-f", "raw", "-O", "raw"];
    run(
        "qemu-img",
        &[&args[..], &[input.to_str().unwrap(), &url]].concat(),
    );

    let output = dir.path().join("out.raw");
    let (from, to) = (format!("if={url}"), format!("of={}", output.display()));
    let args = ["dd", "-f", "raw", "-O", "raw", "bs=1M", "count=64"];
    run("qemu-img", &[&args[..], &[&from, &to]].concat());
    let back = std::fs::read(&output).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "data read back differs from data written");

    d.signal(libc::SIGTERM);
    assert!(d
        .wait_exit(Duration::from_secs(20))
        .expect("no exit on SIGTERM")
        .success());
    // The demo image holds the data after shutdown (flushed, same bytes).
    let mut img = vec![0u8; data.len()];
    let f = std::fs::File::open(dir.path().join("demo0.img")).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut img, 0).unwrap();
    assert!(img == data, "image differs after shutdown");
}

/// Issue 9 item 1: `"authentication": 2` with TPG CHAP credentials passed
/// `rtarget check` and the daemon served every initiator without CHAP (LIO
/// accepts only 0 and 1). Now both refuse the file, naming the attribute,
/// the value and the allowed values, and nothing is served.
#[test]
fn out_of_range_authentication_is_refused_at_check_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let text = r#"{"storage_objects": [{"plugin": "ramdisk", "name": "r0", "size": 1048576}],
        "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.org.example:t1", "tpgs": [{"tag": 1,
            "attributes": {"authentication": 2, "generate_node_acls": 1},
            "chap_userid": "user", "chap_password": "secretsecret",
            "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r0"}],
            "portals": [{"ip_address": "127.0.0.1", "port": 3260}], "node_acls": []}]}]}"#;
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "check accepted it: {said}");
    assert!(
        said.contains("authentication") && said.contains("2") && said.contains("0 or 1"),
        "{said}"
    );

    let mut d = start(&cfg, dir.path());
    if let Some(line) = d.wait_line_within("rtarget: listening on ", Duration::from_secs(30)) {
        // What a new user saw: a login without CHAP is let in.
        let addr = line.trim_start_matches("rtarget: listening on ").trim();
        let mut c = common::initiator::Client::connect(addr.parse().unwrap());
        let (r, _) = c.login_pdu(
            0,
            1,
            true,
            &[
                ("InitiatorName", "iqn.2026-11.org.example:h1"),
                ("AuthMethod", "None"),
                ("SessionType", "Normal"),
                ("TargetName", "iqn.2026-11.org.example:t1"),
            ],
        );
        panic!(
            "authentication=2 was served; a login without CHAP got status {}/{}",
            r.status_class, r.status_detail
        );
    }
    let st = d
        .wait_exit(Duration::from_secs(20))
        .expect("daemon neither served nor exited");
    assert!(!st.success());
    let stderr = d.seen.join("\n");
    assert!(
        stderr.contains("authentication") && stderr.contains("0 or 1"),
        "{stderr}"
    );
}
