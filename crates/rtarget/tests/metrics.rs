//! `serve --metrics ADDR:PORT`: a Prometheus scrape of a live daemon shows
//! the session and its LUN's counters moving with the I/O an initiator
//! does, the storage object, panics and reloads; other paths are 404.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::initiator::{read10, write10};
use common::*;

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(scrape: &str, series: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
        .parse()
        .unwrap()
}

#[test]
fn scrape_shows_sessions_and_lun_counters_moving() {
    let s = setup();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&s.config)
        .arg("--socket")
        .arg(&s.socket)
        .arg("--state-dir")
        .arg(s.config.parent().unwrap())
        .arg("--default-portal")
        .arg(format!("127.0.0.1:{}", s.port))
        .args(["--metrics", "127.0.0.1:0"]);
    let mut d = Daemon::spawn(cmd);
    let line = d.wait_line("rtarget: metrics on http://");
    let addr: SocketAddr = line
        .trim_start_matches("rtarget: metrics on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    ok(&s.socket, &["/backstores/ramdisk", "create", "r1", "16M"]);
    demo_target(&s.socket, IQN, &["/backstores/ramdisk/r1"]);

    let (head, body) = get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(sample(&body, "rtarget_panics_total"), 0);
    assert_eq!(sample(&body, "rtarget_targets"), 1);
    assert_eq!(
        sample(
            &body,
            "rtarget_storage_object_size_bytes{storage_object=\"/backstores/ramdisk/r1\"}"
        ),
        16 << 20
    );
    assert!(!body.contains("rtarget_sessions{"), "{body}");

    let mut c = initiator::Client::connect(SocketAddr::from(([127, 0, 0, 1], s.port)));
    c.login(Some(IQN), &[]);
    c.clear_ua();
    let data = vec![0x5au8; 8 * 512];
    assert_eq!(c.write_cmd(&write10(0, 8), &data).status, 0);
    let (st, back, _) = c.read_cmd(&read10(0, 8), 8 * 512);
    assert_eq!((st, back.len()), (0, 8 * 512));

    let (_, body) = get(addr, "/metrics");
    assert_eq!(
        sample(
            &body,
            &format!("rtarget_sessions{{target=\"{IQN}\",tpg=\"1\"}}")
        ),
        1
    );
    let lun = body
        .lines()
        .find(|l| l.starts_with("rtarget_session_lun_read_bytes_total{"))
        .unwrap_or_else(|| panic!("{body}"));
    let labels = &lun[lun.find('{').unwrap()..=lun.find('}').unwrap()];
    assert!(
        labels.contains("lun=\"0\"")
            && labels.contains(&format!("target=\"{IQN}\""))
            && labels.contains("storage_object=\"/backstores/ramdisk/r1\""),
        "{labels}"
    );
    assert_eq!(
        sample(
            &body,
            &format!("rtarget_session_lun_read_bytes_total{labels}")
        ),
        4096
    );
    assert_eq!(
        sample(
            &body,
            &format!("rtarget_session_lun_write_bytes_total{labels}")
        ),
        4096
    );
    let commands = sample(
        &body,
        &format!("rtarget_session_lun_commands_total{labels}"),
    );
    // The UA-clearing TEST UNIT READY, the write and the read at least.
    assert!(commands >= 3, "{commands}");
    core_counters(&body);
    busy_polls_are_counted(addr);

    // More reads: the counters move between scrapes.
    for lba in 0..4 {
        assert_eq!(c.read_cmd(&read10(lba * 8, 8), 4096).0, 0);
    }
    let (_, body) = get(addr, "/metrics");
    assert_eq!(
        sample(
            &body,
            &format!("rtarget_session_lun_read_bytes_total{labels}")
        ),
        5 * 4096
    );
    assert_eq!(
        sample(
            &body,
            &format!("rtarget_session_lun_commands_total{labels}")
        ),
        commands + 4
    );

    // A reload is counted by its outcome.
    std::fs::write(&s.config, "not json").unwrap();
    d.signal(libc::SIGHUP);
    // Counted before the error is logged.
    while !d
        .wait_line_within("", std::time::Duration::from_secs(30))
        .expect("no reload failure logged")
        .contains("reload failed")
    {}
    let failed = "rtarget_config_reloads_total{result=\"failed\"}";
    let body = get(addr, "/metrics").1;
    assert_eq!(sample(&body, failed), 1);

    dashboard_queries_find_their_metrics(&body);

    let (head, _) = get(addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    c.logout();
    d.stop();
}

/// The core's per-LU series after one login, the UA-clearing command, an
/// 8-block write and read: the histograms hold them, the UA is counted as
/// established, reported and as a CHECK CONDITION, the login as a success.
fn core_counters(body: &str) {
    const SO: &str = "storage_object=\"/backstores/ramdisk/r1\"";
    let count = |op: &str| {
        sample(
            body,
            &format!("rtarget_lu_latency_seconds_count{{{SO},op=\"{op}\"}}"),
        )
    };
    assert!(count("read") >= 1 && count("write") >= 1, "{body}");
    for op in ["read", "write"] {
        let inf = format!("rtarget_lu_latency_seconds_bucket{{le=\"+Inf\",{SO},op=\"{op}\"}}");
        assert_eq!(sample(body, &inf), count(op));
        // Some finite bucket (under 8 s) holds each command.
        let finite =
            format!("rtarget_lu_latency_seconds_bucket{{le=\"8.388608\",{SO},op=\"{op}\"}}");
        assert_eq!(sample(body, &finite), count(op), "{body}");
    }
    assert_eq!(
        sample(body, &format!("rtarget_lu_read_bytes_total{{{SO}}}")),
        4096
    );
    assert_eq!(
        sample(body, &format!("rtarget_lu_write_bytes_total{{{SO}}}")),
        4096
    );
    assert_eq!(sample(body, &format!("rtarget_lu_in_flight{{{SO}}}")), 0);
    let ua = format!("rtarget_lu_check_conditions_total{{{SO},sense_key=\"unit_attention\"}}");
    assert_eq!(sample(body, &ua), 1);
    let reported = format!("rtarget_lu_unit_attentions_total{{{SO},event=\"reported\"}}");
    assert_eq!(sample(body, &reported), 1);
    let implicit = format!("rtarget_alua_transitions_total{{{SO},kind=\"implicit\"}}");
    assert_eq!(sample(body, &implicit), 0);
    let ok = "rtarget_iscsi_logins_total{result=\"success\",reason=\"normal\"}";
    assert_eq!(sample(body, ok), 1);
    let bad = "rtarget_iscsi_logins_total{result=\"failure\",reason=\"target_not_found\"}";
    assert_eq!(sample(body, bad), 0);
}

fn busy_polls_are_counted(addr: SocketAddr) {
    // Busy polling is on by default: the session's waits for its next
    // command are counted. A connection reports its waits when it next
    // blocks (the commands above may each have found the next already
    // there): by now it has, or soon will, with nothing more to read.
    let waits = |body: &str| -> u64 {
        ["data", "ran_out", "yielded", "skipped"]
            .iter()
            .map(|r| {
                sample(
                    body,
                    &format!("rtarget_iscsi_busy_polls_total{{result=\"{r}\"}}"),
                )
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let scrape = loop {
        let scrape = get(addr, "/metrics").1;
        if waits(&scrape) > 0 || std::time::Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(waits(&scrape) > 0, "{scrape}");
    assert!(scrape.contains("rtarget_iscsi_busy_poll_spin_seconds_total "));
    // follow_flow_cpu: every outcome is listed, moved or not.
    for to in ["flow", "followed", "own", "unknown", "late", "slower"] {
        let name = format!("rtarget_iscsi_flow_cpu_moves_total{{to=\"{to}\"}}");
        assert!(scrape.contains(&name), "{name}: {scrape}");
    }
}

/// docs/grafana/rtarget.json: every query names only metrics that a scrape
/// (with a session doing I/O) has, so no panel stays empty for a typo; and
/// every metric of the scrape has a panel.
fn dashboard_queries_find_their_metrics(scrape: &str) {
    let text = include_str!("../../../docs/grafana/rtarget.json");
    for family in scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = family.split(' ');
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        let used = match kind {
            "counter" => text.contains(&format!("{name}_total")),
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| text.contains(&format!("{name}{s}"))),
            _ => text.contains(name),
        };
        assert!(used, "no dashboard panel shows {name} ({kind})");
    }
    let dash: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut queries = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            queries += 1;
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("rtarget_"))
                .collect();
            assert!(!names.is_empty(), "{expr} names no rtarget metric");
            for n in names {
                // Backstore events need a user:qemu or NBD object: the NBD
                // test in manage_backstores.rs finds that series.
                // The owner gauge needs RBD gateways (tests-e2e/rbd_gateways.py).
                if n == "rtarget_backstore_events_total"
                    || n == "rtarget_storage_object_owner_group"
                {
                    continue;
                }
                let found = scrape
                    .lines()
                    .any(|l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} ")));
                assert!(
                    found,
                    "panel {:?}: {n} is not in the scrape",
                    panel["title"]
                );
            }
        }
    }
    assert!(queries >= 10, "{queries}");
}

/// `set global metrics=ADDR:PORT` starts, moves and stops the endpoint
/// live; a bad address keeps the running one; the setting survives a
/// restart.
#[test]
fn global_setting_moves_the_endpoint_live() {
    let d = Served::start();
    let (p1, p2) = (free_port(), free_port());
    let a1 = SocketAddr::from(([127, 0, 0, 1], p1));
    let a2 = SocketAddr::from(([127, 0, 0, 1], p2));
    // (No "nothing listens on a1 yet" check: a free port can be taken by a
    // test running beside this one; CI saw it once.)
    d.ok(&["set", "global", &format!("metrics={a1}")]);
    assert!(get(a1, "/metrics").1.contains("rtarget_targets 0"));
    // Not an address of this host: refused, the endpoint stays.
    let e = d.fails(&["set", "global", "metrics=192.0.2.1:9550"]);
    assert!(
        e.contains("cannot listen for metrics on 192.0.2.1:9550"),
        "{e}"
    );
    assert!(get(a1, "/metrics").0.starts_with("HTTP/1.1 200"));
    d.ok(&["set", "global", &format!("metrics={a2}")]);
    assert!(get(a2, "/metrics").0.starts_with("HTTP/1.1 200"));
    assert!(
        TcpStream::connect(a1).is_err(),
        "the old endpoint still listens"
    );
    let got = d.ok(&["get", "global", "metrics"]);
    assert!(got.contains(&format!("metrics={a2}")), "{got}");

    // Kept across a restart.
    let s = d.stop();
    let d = Served::on(s);
    assert!(get(a2, "/metrics").0.starts_with("HTTP/1.1 200"));
    d.ok(&["set", "global", "metrics=off"]);
    assert!(TcpStream::connect(a2).is_err());
    d.stop();
}
