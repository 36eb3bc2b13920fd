#!/usr/bin/env python3
"""Crash durability: kill -9 the daemon at random moments under writers, restart
it, and check that every write it acknowledged as durable reads back.

usage: crash.py BACKEND KILLS WORKDIR [SEED]      BACKEND: fileio | block | qcow2 | ramdisk

One LU (64 MiB, write-back cache: a plain WRITE is only durable after a GOOD
SYNCHRONIZE CACHE). Four writer sessions, each on its own LBA range, write 4 KiB
blocks stamped (kill round, writer, sequence, LBA) to random LBAs: a third with
FUA (durable when GOOD comes back), the rest plain, with a SYNCHRONIZE CACHE
every few writes (a GOOD one makes every write that completed before it
durable). After a random 50-600 ms the daemon gets SIGKILL; for qcow2,
`qemu-img check` must then find no corruption (leaked clusters are allowed: a
kill between allocating a cluster and pointing to it leaks it, as in QEMU).
The daemon restarts and every block is read: a block logged durable must hold
its durable stamp or a stamp written after it (never an older one, never a
torn one, unless a write to it was in flight). block: the LU is a loop device over a file.
ramdisk is the negative control: it keeps nothing across a restart, so the check
must report lost blocks there (scripts/reliability.sh requires it to fail).

Prints one line per kill and a summary line
  crash BACKEND: kills=N acked=A checked=C lost=L qemu-img-corrupt=Q
and exits 1 when anything was lost, corrupt or torn, or the daemon panicked.
"""
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rwsession import Daemon, RwSession, free_port, mkconfig  # noqa: E402

IQN = "iqn.2026-11.org.rtarget:crash"
SIZE = 64 << 20
BS = 512
BLOCK = 4096  # bytes per write
WRITERS = 4


def stamp(rnd, writer, seq, lba):
    head = struct.pack(">4sIIIQ", b"RTCR", rnd, writer, seq, lba)
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


def parse(buf):
    if buf == b"\0" * BLOCK:
        return None
    magic, rnd, writer, seq, lba = struct.unpack(">4sIIIQ", buf[:24])
    if magic != b"RTCR" or buf != stamp(rnd, writer, seq, lba):
        return "torn"
    return (rnd, writer, seq, lba)


class Ledger:
    """Per 4 KiB slot: the stamp known durable, and stamps written since (any of
    which may be what the medium holds)."""

    def __init__(self):
        self.durable = {}
        self.since = {}
        self.lock = threading.Lock()
        self.acked = 0

    def written(self, slot, st):
        with self.lock:
            self.since.setdefault(slot, []).append(st)

    def make_durable(self, slot, st):
        """`st` (round, writer, seq, slot) was acknowledged durable. One writer
        owns a slot, so (round, seq) orders its stamps."""
        with self.lock:
            self.acked += 1
            cur = self.durable.get(slot)
            if cur is not None and (cur[0], cur[2]) > (st[0], st[2]):
                return  # a newer write to the slot was made durable first (FUA)
            self.durable[slot] = st
            # Stamps written before this one can no longer be what is read.
            self.since[slot] = [s for s in self.since.get(slot, [])
                                if (s[0], s[2]) > (st[0], st[2])]


def writer(host, port, wid, rnd, rng, ledger, stop, slots):
    try:
        s = RwSession(host, port, IQN)
        s.ready()
    except Exception:  # noqa: BLE001  killed before login: fine
        return
    pending, seq = [], 0
    try:
        while not stop.is_set():
            slot = rng.choice(slots)
            seq += 1
            st = (rnd, wid, seq, slot)
            fua = rng.random() < 1 / 3
            ledger.written(slot, st)
            s.write(slot * (BLOCK // BS), stamp(*st), BS, fua=fua)
            if fua:
                ledger.make_durable(slot, st)
            else:
                pending.append((slot, st))
            if len(pending) >= rng.randint(1, 8):
                done = pending
                pending = []
                s.sync()
                for slot, st in done:
                    ledger.make_durable(slot, st)
    except Exception:  # noqa: BLE001  the kill ends every session
        pass
    finally:
        s.close()


def qemu_check(img):
    r = subprocess.run(["qemu-img", "check", "-f", "qcow2", img], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def main(argv):
    # A time limit's SIGTERM unwinds like an error: the finally blocks stop the
    # daemon and detach the loop device / unmount the tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) not in (4, 5):
        sys.exit(__doc__)
    backend, kills, work = argv[1], int(argv[2]), argv[3]
    seed = int(argv[4]) if len(argv) == 5 else random.randrange(1 << 32)
    print(f"crash {backend}: seed {seed} (crash.py {backend} {kills} DIR {seed} replays it)")
    rng = random.Random(seed)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    port = free_port()
    loop = None
    img = os.path.join(work, "disk0." + ("qcow2" if backend == "qcow2" else "img"))
    if backend == "fileio":
        spec = f"fileio:disk0:{img}:64M"
    elif backend == "qcow2":
        spec = f"qcow:disk0:{img}:64M"
    elif backend == "ramdisk":  # negative control: loses everything, so the check must fail
        spec = "ramdisk:disk0::64M"
    elif backend == "block":
        with open(img, "wb") as f:
            f.truncate(SIZE)
        loop = subprocess.run(["losetup", "--show", "-f", img], check=True,
                              capture_output=True, text=True).stdout.strip()
        spec = f"block:disk0:{loop}:"
    else:
        sys.exit(f"unknown backend {backend}")
    mkconfig(os.path.join(work, "saveconfig.json"), port, IQN, spec)
    d = Daemon(work, port)
    ledger = Ledger()
    nslots = SIZE // BLOCK
    ranges = [list(range(w * nslots // WRITERS, (w + 1) * nslots // WRITERS))[:256]
              for w in range(WRITERS)]
    checked = lost = torn = corrupt = leaky = 0
    failures = []
    try:
        d.start()
        for rnd in range(1, kills + 1):
            stop = threading.Event()
            threads = [threading.Thread(target=writer, args=(
                "127.0.0.1", port, w, rnd, random.Random(rng.random()), ledger, stop, ranges[w]))
                for w in range(WRITERS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 0.6))
            d.kill9()
            stop.set()
            for t in threads:
                t.join()
            if backend == "qcow2":
                rc, text = qemu_check(img)
                if rc == 3:
                    leaky += 1
                elif rc != 0:
                    corrupt += 1
                    failures.append(f"round {rnd}: qemu-img check exit {rc}: {text.strip()}")
            d.start()
            s = RwSession("127.0.0.1", port, IQN)
            s.ready()
            n_round = n_lost = 0
            for slot in sorted(set(ledger.durable) | set(ledger.since)):
                got = parse(s.read(slot * (BLOCK // BS), BLOCK // BS, BS))
                want = ledger.durable.get(slot)
                later = ledger.since.get(slot, [])
                if got == "torn":
                    # Only a write still in flight can be torn (a 4 KiB write
                    # is not atomic in SCSI); what it overwrote is gone with it.
                    torn += 1
                    if later == []:
                        failures.append(f"round {rnd}: slot {slot} torn, no write in flight")
                    ledger.durable.pop(slot, None)
                    ledger.since[slot] = []
                    continue
                if got != want and got not in later:
                    if want is not None:
                        n_lost += 1
                        failures.append(f"round {rnd}: slot {slot} reads {got}, durable {want}")
                    elif got is not None:
                        failures.append(f"round {rnd}: slot {slot} reads {got}, never written")
                if want is not None:
                    n_round += 1
                # What reads back now is on the medium for good (the daemon
                # wrote it before it died), whatever the ledger thought.
                if got not in (None, "torn"):
                    ledger.durable[slot] = got
                    ledger.since[slot] = []
            s.logout()
            checked += n_round
            lost += n_lost
            print(f"  kill {rnd}: {ledger.acked} acknowledged so far, {n_round} durable blocks checked, {n_lost} lost")
        panics = d.panics()
    finally:
        d.stop()
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
    print(f"crash {backend}: kills={kills} acked={ledger.acked} checked={checked} lost={lost} "
          f"torn={torn} qemu-img-corrupt={corrupt} qemu-img-leaks={leaky} panics={panics}")
    for f in failures[:20]:
        print("FAIL " + f)
    return 1 if failures or panics else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
