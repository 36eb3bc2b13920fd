//! Landed writes across a daemon restart: a fileio LU whose file is on
//! tmpfs takes a large WRITE's data straight into the file's pages (the
//! file is mapped when the LU opens, `backstore::file::landing`); the
//! daemon stops, starts again on its saved configuration (the LU opens and
//! maps the file anew), and a new session reads the same bytes back.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::initiator::{self as client, Client};
use common::{free_port, Served};

const IQN: &str = "iqn.2026-11.org.example:landed";
const MIB: usize = 1 << 20;

/// The value of the sample `series` in the daemon's metrics scrape.
fn sample(addr: SocketAddr, series: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{resp}"))
        .parse()
        .unwrap()
}

fn logged_in(d: &Served) -> Client {
    let mut c = Client::connect(d.addr());
    // libiscsi's shape: 256 KiB bursts, the data after each header lands.
    c.login(Some(IQN), client::LIBISCSI);
    c.clear_ua();
    c
}

#[test]
fn landed_data_on_tmpfs_is_read_back_after_a_restart() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let file = shm.path().join("landed.img");
    let d = Served::start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    d.ok(&["set", "global", &format!("metrics={metrics}")]);
    d.ok(&[
        "/backstores/fileio",
        "create",
        "l0",
        file.to_str().unwrap(),
        "16M",
    ]);
    d.demo_target(IQN, &["/backstores/fileio/l0"]);

    let mut c = logged_in(&d);
    let data = client::pattern(2 * MIB, 0x4d);
    let lba = 4096u32;
    let blocks = (data.len() / 512) as u16;
    let before = sample(metrics, "rtarget_iscsi_landed_bytes_total");
    let r = c.write_cmd(&client::write10(lba, blocks), &data);
    assert_eq!(r.status, 0, "WRITE");
    let landed = sample(metrics, "rtarget_iscsi_landed_bytes_total") - before;
    assert!(
        landed >= 256 * 1024,
        "only {landed} bytes landed: the write did not take the landed way"
    );
    c.logout();

    let s = d.stop();
    // The data is in the file itself, not only in the daemon's mapping.
    let on_file = std::fs::read(&file).unwrap();
    let at = lba as usize * 512;
    assert!(on_file[at..at + data.len()] == data[..], "the file's bytes");
    let d = Served::on(s);
    let mut c = logged_in(&d);
    let (st, back, _) = c.read_cmd(&client::read10(lba, blocks), data.len() as u32);
    assert_eq!(st, 0, "READ after the restart");
    assert!(back == data, "the landed data after a restart");
    c.logout();
    d.stop();
}
