//! `rtarget import-tgt`: a tgt targets.conf (with a conf.d include) becomes
//! a saveconfig.json that `rtarget check` accepts and the daemon serves;
//! what tgt had and rtarget cannot express is listed on stderr.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::initiator::{read10, Client};
use common::*;

#[test]
fn tgt_config_imports_checks_and_serves() {
    let s = setup();
    let dir = s.config.parent().unwrap();
    let img = dir.join("tgt-disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    std::fs::create_dir(dir.join("conf.d")).unwrap();
    let conf = dir.join("targets.conf");
    std::fs::write(
        &conf,
        format!(
            "default-driver iscsi\ninclude {}/conf.d/*.conf\n<target {IQN}>\n    backing-store {}\n    vendor_id ACME\n</target>\n",
            dir.display(),
            img.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/acl.conf"),
        format!(
            "<target iqn.2026-11.org.example:acl>\n  <backing-store {}>\n    lun 3\n  </backing-store>\n  initiator-name iqn.1994-05.com.redhat:c1\n  incominguser alice secretsecret12\n</target>\n",
            img.display()
        ),
    )
    .unwrap();
    std::fs::remove_file(&s.config).unwrap();
    let out = Command::new(BIN)
        .args(["import-tgt"])
        .arg(&conf)
        .arg("--output")
        .arg(&s.config)
        .args(["--portal", &format!("127.0.0.1:{}", s.port)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "rtarget: note: {IQN}: not carried over: vendor_id ACME"
        )) && stderr.contains("2 target(s), 1 storage object(s) imported"),
        "{stderr}"
    );
    // Never overwritten without --force.
    let again = Command::new(BIN)
        .arg("import-tgt")
        .arg(&conf)
        .arg("-o")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("use --force"));

    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Served: the open target (tgt's default) answers a read at LUN 1.
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let ls = ok(&s.socket, &["ls", "/iscsi"]);
    assert!(ls.contains("o- lun1 ") && ls.contains("o- lun3 "), "{ls}");
    assert!(ls.contains("o- iqn.1994-05.com.redhat:c1 "), "{ls}");
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], s.port)));
    c.login(Some(IQN), &[]);
    c.lun = 1;
    c.clear_ua();
    assert_eq!(c.read_cmd(&read10(0, 1), 512).0, 0);
    c.logout();
    d.stop();
}
