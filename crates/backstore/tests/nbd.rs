//! NBD client backstore against `qemu-nbd` (structured replies, unix socket
//! and 127.0.0.1 TCP) and against a tiny in-test server that only speaks
//! simple replies. qemu-nbd tests are skipped with a message when it is
//! not installed.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstore::{Backstore, NbdAddr, NbdBackstore};
use common::{retry, wait_for_path, Reaped, Rng};

fn qemu_nbd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Option<Reaped> {
    match Command::new("qemu-nbd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => Some(Reaped(c)),
        Err(_) => {
            common::skip("qemu-nbd is not installed (NBD interoperability test)");
            None
        }
    }
}

fn connect_retry(addr: &NbdAddr, export: &str) -> NbdBackstore {
    retry(
        &format!("connect {addr:?}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || NbdBackstore::connect(addr.clone(), export),
    )
}

fn exercise(b: &NbdBackstore, mirror: &mut [u8]) {
    let size = mirror.len() as u64;
    assert_eq!(b.size(), size);
    let mut rng = Rng(42);
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..400 {
        let len = if i % 3 == 0 { 64 << 10 } else { 4 << 10 };
        let off = rng.next() % ((size - len) / 512) * 512;
        let r = &mut mirror[off as usize..(off + len) as usize];
        match i % 10 {
            0 => {
                b.write_zeroes(off, len).unwrap();
                r.fill(0);
            }
            1 if b.capabilities().discard => {
                b.discard(off, len).unwrap();
                r.fill(0);
            }
            _ => {
                for x in buf[..len as usize].iter_mut() {
                    *x = rng.next() as u8;
                }
                if i % 7 == 0 {
                    b.write_at_fua(&buf[..len as usize], off).unwrap();
                } else {
                    b.write_at(&buf[..len as usize], off).unwrap();
                }
                r.copy_from_slice(&buf[..len as usize]);
            }
        }
    }
    b.flush().unwrap();
    let mut all = vec![0u8; size as usize];
    b.read_at(&mut all, 0).unwrap();
    assert!(all == mirror, "read-back differs");
    assert!(b.read_at(&mut [0u8; 512], size).is_err());
}

#[test]
fn qemu_nbd_unix_socket_raw_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let size = 8usize << 20;
    std::fs::write(&img, vec![0u8; size]).unwrap();
    let sock = dir.path().join("nbd.sock");
    let Some(_srv) = qemu_nbd(&[
        "-f",
        "raw",
        "-k",
        sock.to_str().unwrap(),
        "-x",
        "disk0",
        "--discard=unmap",
        img.to_str().unwrap(),
    ]) else {
        return;
    };
    let addr = NbdAddr::Unix(sock.clone());
    let b = connect_retry(&addr, "disk0");
    assert!(b.structured_replies(), "qemu-nbd offers structured replies");
    let caps = b.capabilities();
    assert!(
        caps.write_zeroes && caps.write_cache && !caps.read_only,
        "{caps:?}"
    );
    let mut mirror = vec![0u8; size];
    exercise(&b, &mut mirror);
    // A sanity figure for one connection, one request in flight.
    let mut blk = vec![7u8; 4096];
    let t = Instant::now();
    for i in 0..5000u64 {
        let off = (i * 7919 % (size as u64 / 4096)) * 4096;
        b.read_at(&mut blk, off).unwrap();
    }
    println!(
        "nbd 4K reads over a unix socket: {:.0} IOPS",
        5000.0 / t.elapsed().as_secs_f64()
    );
    drop(b);
    assert!(
        std::fs::read(&img).unwrap() == mirror,
        "file differs from the mirror"
    );
}

#[test]
fn qemu_nbd_tcp_qcow2_with_holes_and_bad_export() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    if !common::require_tool("qemu-img") {
        return;
    }
    common::run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"],
    );
    // A port the kernel just handed out is very likely still free when
    // qemu-nbd binds it a moment later; a fixed one clashes with other tests.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port().to_string())
        .unwrap();
    let port = port.as_str();
    let Some(_srv) = qemu_nbd(&[
        "-f",
        "qcow2",
        "-b",
        "127.0.0.1",
        "-p",
        port,
        "-x",
        "q",
        "-t",
        "-e",
        "2",
        img.to_str().unwrap(),
    ]) else {
        return;
    };
    let addr = NbdAddr::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let b = connect_retry(&addr, "q");
    drop(b);
    // -e 2: qemu-nbd allows two clients and advertises multi-conn.
    let b = NbdBackstore::connect_multi(addr.clone(), "q", 2).unwrap();
    assert_eq!(b.connections(), 2, "qemu-nbd -e 2 advertises multi-conn");
    // A sparse qcow2 read comes back as hole chunks.
    let mut buf = vec![0xffu8; 1 << 20];
    b.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    // Block status (base:allocation): a hole, then data once written.
    let e = b.allocation_at(0).unwrap().expect("block status");
    assert!(!e.allocated && e.len == 16 << 20, "{e:?}");
    b.write_at(&[9u8; 65536], 1 << 20).unwrap();
    let e = b.allocation_at(1 << 20).unwrap().unwrap();
    assert!(e.allocated && e.len == 65536, "{e:?}");
    let e = b.allocation_at(4096).unwrap().unwrap();
    assert!(!e.allocated && e.len == (1 << 20) - 4096, "{e:?}");
    let mut mirror = vec![0u8; 16 << 20];
    mirror[1 << 20..(1 << 20) + 65536].fill(9);
    exercise(&b, &mut mirror);
    // Four threads over the two connections, disjoint 1 MiB slices.
    let b = std::sync::Arc::new(b);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    let off = u64::from(t) * (1 << 20) + i * 16384;
                    b.write_at(&[t + 1; 16384], off).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    b.flush().unwrap();
    let mut all = vec![0u8; 4 << 20];
    b.read_at(&mut all, 0).unwrap();
    for (i, x) in all.iter().enumerate() {
        assert_eq!(*x as usize, i / (1 << 20) + 1, "byte {i}");
    }
    // qemu-nbd -e 2 serves no third client while these two are open.
    drop(b);
    let e = NbdBackstore::connect(addr, "no-such-export")
        .err()
        .expect("connected");
    assert!(e.to_string().contains("no-such-export"), "{e}");
}

/// A minimal server: refuses structured replies, answers with simple replies
/// over an in-memory disk; checks the client's framing as it goes.
fn simple_server(l: UnixListener, size: u64) -> Vec<u8> {
    let (mut s, _) = l.accept().unwrap();
    let mut disk = vec![0u8; size as usize];
    s.write_all(b"NBDMAGICIHAVEOPT\x00\x03").unwrap();
    let mut b4 = [0u8; 4];
    s.read_exact(&mut b4).unwrap();
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..8], b"IHAVEOPT");
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).unwrap();
        let reply = |s: &mut std::os::unix::net::UnixStream, kind: u32, payload: &[u8]| {
            let mut r = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
            r.extend_from_slice(&opt.to_be_bytes());
            r.extend_from_slice(&kind.to_be_bytes());
            r.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            r.extend_from_slice(payload);
            s.write_all(&r).unwrap();
        };
        if opt == 8 {
            reply(&mut s, (1 << 31) | 1, b"");
            continue;
        }
        assert_eq!(opt, 7);
        let mut info = 0u16.to_be_bytes().to_vec();
        info.extend_from_slice(&size.to_be_bytes());
        info.extend_from_slice(&(1u16 | 4 | 8).to_be_bytes()); // flush + fua
        reply(&mut s, 3, &info);
        reply(&mut s, 1, b"");
        break;
    }
    loop {
        let mut h = [0u8; 28];
        if s.read_exact(&mut h).is_err() {
            return disk;
        }
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 0x2560_9513);
        let cmd = u16::from_be_bytes([h[6], h[7]]);
        let off = u64::from_be_bytes(h[16..24].try_into().unwrap()) as usize;
        let len = u32::from_be_bytes(h[24..28].try_into().unwrap()) as usize;
        let mut r = 0x6744_6698u32.to_be_bytes().to_vec();
        let err: u32 = if off + len > disk.len() { 22 } else { 0 };
        r.extend_from_slice(&err.to_be_bytes());
        r.extend_from_slice(&h[8..16]);
        match cmd {
            0 if err == 0 => r.extend_from_slice(&disk[off..off + len]),
            1 => s.read_exact(&mut disk[off..off + len]).unwrap(),
            2 => return disk,
            _ => {}
        }
        s.write_all(&r).unwrap();
    }
}

#[test]
fn simple_replies_server() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let size = 1u64 << 20;
    let srv = std::thread::spawn(move || simple_server(l, size));
    let b = NbdBackstore::connect(NbdAddr::Unix(sock.clone()), "").unwrap();
    assert!(!b.structured_replies());
    assert!(!b.capabilities().discard);
    assert!(b.allocation_at(0).unwrap().is_none());
    let mut mirror = vec![0u8; size as usize];
    exercise(&b, &mut mirror);
    drop(b);
    let disk = srv.join().unwrap();
    assert!(disk == mirror);
}

/// A restarted server is picked up: the request that met the dead one
/// fails, the next one reconnects and sees the data; with reconnecting off
/// the connection stays down.
#[test]
fn reconnects_to_a_restarted_server() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.path().join("nbd.sock");
    let args = qemu_nbd_args(&sock, &img);
    let Some(srv) = qemu_nbd(&args) else {
        return;
    };
    let addr = NbdAddr::Unix(sock.clone());
    let b = connect_retry(&addr, "d");
    let mut c = connect_retry(&addr, "d");
    c.set_reconnect(false);
    assert_eq!(b.health(), [("reconnects", 0)]);
    b.write_at(&[0x42; 4096], 8192).unwrap();
    b.flush().unwrap();
    drop(srv); // kill and reap
    let _ = std::fs::remove_file(&sock);
    let mut buf = [0u8; 4096];
    assert!(b.read_at(&mut buf, 8192).is_err(), "server is gone");
    assert!(b.is_broken());
    let Some(_srv) = qemu_nbd(&args) else {
        return;
    };
    wait_for_path(&sock, Duration::from_secs(10));
    b.read_at(&mut buf, 8192).unwrap();
    assert_eq!(buf, [0x42; 4096]);
    assert!(!b.is_broken());
    // Monitoring sees the reconnect (rtarget's metrics read it).
    assert_eq!(b.health(), [("reconnects", 1)]);
    assert!(c.read_at(&mut buf, 0).is_err());
    assert!(c.read_at(&mut buf, 0).is_err(), "reconnecting was off");
}

fn qemu_nbd_args(sock: &std::path::Path, img: &std::path::Path) -> Vec<String> {
    [
        "-f",
        "raw",
        "-t",
        "-e",
        "4",
        "-k",
        sock.to_str().unwrap(),
        "-x",
        "d",
        img.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Kill the server (SIGKILL, reaped) and start a new one on the same socket.
fn restart(srv: Reaped, sock: &std::path::Path, args: &[String]) -> Option<Reaped> {
    drop(srv);
    let _ = std::fs::remove_file(sock);
    let srv = qemu_nbd(args)?;
    wait_for_path(sock, Duration::from_secs(10));
    // The socket file exists from bind(); connections are refused until
    // listen(): wait until one is accepted, so the client's reconnect
    // meets a listening server (a loaded machine widens that window).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "qemu-nbd never listened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(srv)
}

/// The server died with acknowledged writes it had not flushed: the client
/// reconnects for reads and writes, but every later flush and FUA write
/// fails, so the initiator's SYNCHRONIZE CACHE reports the possible loss.
/// A restart with everything flushed is not reported.
#[test]
fn server_lost_with_unflushed_writes_fails_every_later_flush() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.path().join("nbd.sock");
    let args = qemu_nbd_args(&sock, &img);
    let Some(srv) = qemu_nbd(&args) else {
        return;
    };
    let b = connect_retry(&NbdAddr::Unix(sock.clone()), "d");
    assert!(b.capabilities().write_cache, "qemu-nbd advertises flush");
    b.write_at(&[1; 4096], 0).unwrap();
    b.flush().unwrap();
    let Some(srv) = restart(srv, &sock, &args) else {
        return;
    };
    b.flush()
        .expect("nothing was unflushed: the flush reconnects and succeeds");
    b.write_at(&[2; 4096], 4096).unwrap();
    b.write_at_fua(&[3; 4096], 8192).unwrap();
    assert!(!b.lost_writes());
    let Some(_srv) = restart(srv, &sock, &args) else {
        return;
    };
    let mut buf = [0u8; 4096];
    assert!(b.read_at(&mut buf, 0).is_err(), "met the dead connection");
    b.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [1; 4096], "reads go on after the reconnect");
    assert!(b.lost_writes());
    for _ in 0..3 {
        let e = b
            .flush()
            .expect_err("a flush vouched for writes the server may have lost");
        assert!(e.to_string().contains("not yet flushed"), "{e}");
    }
    assert!(b.write_at_fua(&[4; 4096], 0).is_err());
    // A new client (the object re-opened) starts clean.
    drop(b);
    let b = connect_retry(&NbdAddr::Unix(sock.clone()), "d");
    b.flush().unwrap();
}

/// A listener that accepts (or lets the kernel accept) and never answers:
/// connecting fails with TimedOut at the I/O timeout instead of hanging.
#[test]
fn silent_server_times_out() {
    let t = backstore::NbdTimeouts {
        connect: Some(Duration::from_millis(500)),
        io: Some(Duration::from_millis(300)),
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mute.sock");
    let _unix = UnixListener::bind(&sock).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let accepted = tcp.try_clone().unwrap();
    let holder = std::thread::spawn(move || accepted.accept().map(|(s, _)| s));
    for addr in [
        NbdAddr::Unix(sock.clone()),
        NbdAddr::Tcp(tcp.local_addr().unwrap()),
    ] {
        let start = Instant::now();
        let e = NbdBackstore::connect_with(addr.clone(), "x", 1, t)
            .err()
            .expect("connected to a server that never spoke");
        let took = start.elapsed();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{addr:?}: {e}");
        assert!(took < Duration::from_secs(3), "{addr:?}: {took:?}");
        println!("{addr:?}: failed after {took:?}: {e}");
    }
    drop(holder.join().unwrap());
}

/// A stopped server (SIGSTOP) holds a request: it fails with TimedOut
/// within the I/O timeout, dropping the client (shutdown) does not hang,
/// and once the server runs again a new request reconnects.
#[test]
fn stopped_server_times_out_and_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.path().join("nbd.sock");
    let args = qemu_nbd_args(&sock, &img);
    let Some(srv) = qemu_nbd(&args) else {
        return;
    };
    let t = backstore::NbdTimeouts {
        connect: Some(Duration::from_secs(1)),
        io: Some(Duration::from_millis(500)),
    };
    let addr = NbdAddr::Unix(sock.clone());
    let b = retry(
        "connect",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || NbdBackstore::connect_with(addr.clone(), "d", 1, t),
    );
    b.write_at(&[7; 4096], 0).unwrap();
    b.flush().unwrap();
    let pid = srv.0.id() as i32;
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let e = b.read_at(&mut buf, 0).unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Still stopped: the reconnect attempt is bounded too.
    let start = Instant::now();
    assert!(b.read_at(&mut buf, 0).is_err());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    println!("read from a stopped server failed after {took:?}: {e}");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    b.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [7; 4096]);
    b.flush().unwrap();
    // Shutdown while the server is stopped: dropping the client returns.
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let start = Instant::now();
    drop(b);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    drop(srv);
}
