//! InitiatorName checks at login: malformed names (newline, escape
//! sequences, 8 KiB) are refused with Initiator error before they reach a
//! log line, the session list or the APTPL file; a name declared again in a
//! later login PDU must keep its value.

mod common;

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use common::*;

/// Everything this test binary logged.
fn log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        log().lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server whose log (every level) is captured in [`log`].
fn logged_server() -> (std::sync::Arc<iscsi::IscsiServer>, std::net::SocketAddr) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
    server(&[])
}

fn first_pdu_status(addr: std::net::SocketAddr, name: &str) -> (u8, u8) {
    let mut c = Client::connect(addr);
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", name),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    );
    let st = (r.status_class, r.status_detail);
    if st != (0, 0) {
        assert!(c.closed(), "connection closes after a failed login");
    }
    st
}

#[test]
fn malformed_initiator_names_are_refused() {
    let (srv, addr) = logged_server();
    let long = format!("iqn.2026-11.org.example:{}", "a".repeat(8192 - 30));
    let cases = [
        "iqn.2026-11.org.example:a\nFAKE login succeeded initiator=admin",
        "iqn.2026-11.org.example:\u{1b}[31mred\u{1b}[0m",
        "iqn.2026-11.org.example:a\rb",
        "iqn.2026-11.org.example:evil\u{202e}gpj.exe",
        long.as_str(),
        "not-an-iscsi-name",
    ];
    for name in cases {
        assert_eq!(first_pdu_status(addr, name), (2, 0), "{name:?}");
    }
    assert!(srv.sessions().is_empty());
    // Well-formed names still log in, the longest one included.
    let longest = format!("iqn.2026-11.org.example:{}", "b".repeat(223 - 24));
    for name in [INITIATOR, longest.as_str()] {
        let mut c = Client::connect(addr);
        c.initiator = name.into();
        c.login(Some(IQN), &[]);
        c.logout();
    }
    srv.shutdown();
    let text = log().lock().unwrap().clone();
    let text = String::from_utf8_lossy(&text);
    assert!(!text.contains('\u{1b}'), "raw ESC in the log:\n{text}");
    assert!(!text.contains('\r'), "raw CR in the log:\n{text}");
    assert!(!text.contains('\u{202e}'), "raw RLO in the log:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("FAKE")),
        "a forged log line:\n{text}"
    );
    assert!(!text.contains(&"a".repeat(1024)), "8 KiB name in the log");
}

#[test]
fn initiator_name_repeated_with_another_value_is_refused() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let (r, _) = c.login_named(
        0,
        1,
        &[("SessionType", "Normal"), ("AuthMethod", "CHAP,None")],
    );
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    let (r, _) = c.login_pdu(
        1,
        3,
        true,
        &[
            ("InitiatorName", "iqn.2026-11.org.rtarget:someone-else"),
            ("SessionType", "Normal"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 0));
    assert!(c.closed());
    // The same value again is fine (what libiscsi does).
    let mut c = Client::connect(addr);
    let first = [
        ("InitiatorName", INITIATOR),
        ("TargetName", IQN),
        ("SessionType", "Normal"),
    ];
    let mut sec = first.to_vec();
    sec.push(("AuthMethod", "CHAP,None"));
    let (r, _) = c.login_pdu(0, 1, true, &sec);
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    let (r, _) = c.login_pdu(1, 3, true, &first);
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.transit && r.tsih != 0);
    // A discovery session cannot become a normal one halfway.
    let mut c = Client::connect(addr);
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    let (r, _) = c.login_pdu(1, 3, true, &[("SessionType", "Normal")]);
    assert_eq!((r.status_class, r.status_detail), (2, 0));
    srv.shutdown();
}
