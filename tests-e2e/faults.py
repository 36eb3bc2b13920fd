#!/usr/bin/env python3
"""Backstore faults: a full file system and an NBD server that fails on purpose,
while another LU keeps serving. Needs root (tmpfs mount).

usage: faults.py ROUNDS WORKDIR

One daemon, three LUs:
  LUN 0  thin fileio (emulate_tpu=1), 64 MiB, on an 8 MiB tmpfs that also holds
         a 2 MiB filler file
  LUN 1  ramdisk (the bystander: verified I/O between every fault)
  LUN 2  user:nbd to nbdfail.py (an NBD server that answers EIO to every read
         touching LBA 2048 and every write touching LBA 4096)
Each round: write stamped 4 KiB blocks to LUN 0 until the file system is full
(the answer must be CHECK CONDITION 07/27/07, SPACE ALLOCATION FAILED WRITE
PROTECT), retry a few writes there (same answer), check LUN 1, read and write
the failing sectors of LUN 2 (MEDIUM ERROR, sense key 03) and good sectors next
to them (GOOD, verified), delete the filler file and write to LUN 0 again (GOOD:
no restart needed), then UNMAP LUN 0 so the next round fills it again. Every
block acknowledged on LUN 0 must read back. The filler is recreated each round.

Prints "faults: injected=N (enospc=E eio=I) restarts=0 lost=L bystander-ok=B"
and exits 1 on any wrong answer, loss, panic or daemon death.
"""
import os
import signal
import struct
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rwsession import CheckCondition, Daemon, RwSession, free_port, mkconfig  # noqa: E402

IQN = "iqn.2026-11.org.rtarget:faults"
BS = 512
BLK = 4096


def stamp(rnd, n):
    return struct.pack(">4sII", b"RTFT", rnd, n) * (BLK // 12) + b"\0" * (BLK % 12)


def expect_cc(fn, what, key, asc=None, ascq=None):
    try:
        fn()
    except CheckCondition as e:
        k = e.kcq
        if k is None or k[0] != key or (asc is not None and (k[1], k[2]) != (asc, ascq)):
            raise RuntimeError(f"{what}: sense {k}, want key {key:#x}"
                               + (f" {asc:#04x}/{ascq:#04x}" if asc is not None else ""))
        return
    raise RuntimeError(f"{what}: GOOD, want CHECK CONDITION")


def unmap(s, lun, lba, blocks):
    desc = struct.pack(">QI4x", lba, blocks)
    params = struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc
    s.checked("UNMAP", bytes([0x42, 0, 0, 0, 0, 0, 0]) + struct.pack(">H", len(params)) + b"\0",
              lun, data=params)


def main(argv):
    # A time limit's SIGTERM unwinds like an error: the finally blocks stop the
    # daemon and detach the loop device / unmount the tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) != 3:
        sys.exit(__doc__)
    rounds, work = int(argv[1]), os.path.abspath(argv[2])
    os.makedirs(work, exist_ok=True)
    small = os.path.join(work, "small")
    os.makedirs(small, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", small], check=True)
    nbd = d = None
    enospc = eio = lost = bystander = 0
    failures = []
    try:
        img = os.path.join(work, "nbd.img")
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        sock = os.path.join(work, "nbd.sock")
        # The work directory is reused: a socket file left by an earlier run
        # would pass the wait below before this server listens.
        if os.path.exists(sock):
            os.unlink(sock)
        nbd = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "nbdfail.py"), sock, img, str(2048 * BS), str(4096 * BS)],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nbdfail.log"), "wb"))
        for _ in range(200):
            # Listening, not only bound: connect once.
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(sock)
                break
            except OSError:
                time.sleep(0.05)
        port = free_port()
        mkconfig(os.path.join(work, "saveconfig.json"), port, IQN,
                 f"fileio:thin0:{small}/thin0.img:64M:emulate_tpu=1",
                 "ramdisk:ram0::16M", f"nbd:nbd0:{sock}::export=disk0")
        d = Daemon(work, port).start()
        pid0 = d.pid
        s = RwSession("127.0.0.1", port, IQN)
        for lun in (0, 1, 2):
            s.ready(lun)
        for rnd in range(1, rounds + 1):
            filler = os.path.join(small, "filler")
            with open(filler, "wb") as f:
                f.write(b"\xff" * (2 << 20))
            acked = []
            n = 0
            while True:
                try:
                    s.write(n * 8, stamp(rnd, n), BS, lun=0)
                    acked.append(n)
                    n += 1
                except CheckCondition as e:
                    if e.kcq != (0x07, 0x27, 0x07):
                        raise RuntimeError(f"round {rnd}: full file system answered {e.kcq}, "
                                           "want 07/27/07") from e
                    enospc += 1
                    break
                if n * 8 * BS >= 64 << 20:
                    raise RuntimeError("64 MiB written to an 8 MiB tmpfs without an error")
            for i in range(5):
                expect_cc(lambda: s.write((n + i) * 8, stamp(rnd, n + i), BS, lun=0),
                          f"round {rnd}: write on the full LU", 0x07, 0x27, 0x07)
                enospc += 1
            # The bystander LU serves meanwhile.
            blk = stamp(rnd, 999)
            s.write(rnd * 8, blk, BS, lun=1, fua=True)
            if s.read(rnd * 8, 8, BS, lun=1) != blk:
                raise RuntimeError(f"round {rnd}: LUN 1 read back wrong")
            bystander += 1
            # The failing NBD export: MEDIUM ERROR on the bad sectors only.
            for i in range(3):
                expect_cc(lambda: s.read(2048, 8, BS, lun=2), f"round {rnd}: read of a bad sector",
                          0x03)
                expect_cc(lambda: s.write(4096, stamp(rnd, 7), BS, lun=2),
                          f"round {rnd}: write of a bad sector", 0x03)
                eio += 2
            good = stamp(rnd, 8)
            s.write(6000, good, BS, lun=2, fua=True)
            if s.read(6000, 8, BS, lun=2) != good:
                raise RuntimeError(f"round {rnd}: good NBD sector read back wrong")
            # Space back: the thin LU writes again, no restart.
            os.unlink(filler)
            s.write(n * 8, stamp(rnd, n), BS, lun=0)
            acked.append(n)
            s.sync(0)
            for i in acked:
                if s.read(i * 8, 8, BS, lun=0) != stamp(rnd, i):
                    lost += 1
                    failures.append(f"round {rnd}: acknowledged block {i} of LUN 0 lost")
            unmap(s, 0, 0, (n + 1) * 8)
            s.sync(0)
        s.logout()
        panics = d.panics()
        restarts = 0 if d.alive() and d.pid == pid0 else 1
    except Exception as e:  # noqa: BLE001
        failures.append(str(e))
        panics = d.panics() if d else 0
        restarts = 0 if d and d.alive() else 1
    finally:
        if d:
            d.stop()
        if nbd:
            nbd.terminate()
            nbd.wait()
        subprocess.run(["umount", small], check=False)
    print(f"faults: injected={enospc + eio} (enospc={enospc} eio={eio}) over {rounds} rounds; "
          f"restarts needed={restarts}; acknowledged blocks lost={lost}; bystander LU ok "
          f"{bystander}/{rounds}; panics={panics}")
    for f in failures[:10]:
        print("FAIL " + f)
    return 1 if failures or panics or restarts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
