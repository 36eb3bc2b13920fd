#!/usr/bin/env python3
"""Connection chaos and many sessions against one rtarget daemon.

usage: chaos.py chaos SESSIONS ROUNDS WORKDIR [SEED]
       chaos.py sessions COUNT WORKDIR

chaos: SESSIONS sessions each write a stamped 4 KiB block and read it back
ROUNDS times (verified I/O, each on its own blocks), while chaos threads
keep opening connections (twelve at a time) that: close at once; send half a login and half-close;
reset (RST) mid-login; drip a login one byte per 100 ms; send random garbage
(before login, and after a full login); log in and vanish without a logout.
The daemon must live, every session must finish with every block verified,
there must be no panic, and its RSS must stay under baseline + 256 MiB.
Prints "chaos: ..." with the counts, RSS (baseline/peak/end) and open fds.

sessions: COUNT sessions logged in at once (8 threads logging in), each answers
TEST UNIT READY; prints login latency p50/p99/max and the daemon's RSS with
all of them logged in. Exit status 1 on any failure.
"""
import os
import random
import resource
import signal
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from malformed import keys, pad  # noqa: E402
from rwsession import (Daemon, RwSession, free_port, mkconfig, percentile,  # noqa: E402
                       rss_kib)

IQN = "iqn.2026-11.org.rtarget:chaos"
BS = 512


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def setup(work):
    os.makedirs(work, exist_ok=True)
    port = free_port()
    mkconfig(os.path.join(work, "saveconfig.json"), port, IQN,
             f"fileio:disk0:{os.path.join(work, 'disk0.img')}:256M")
    return Daemon(work, port).start()


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def login_bytes(initiator="iqn.2026-11.org.rtarget:chaos-monkey"):
    data = keys({"InitiatorName": initiator, "TargetName": IQN, "SessionType": "Normal"})
    bhs = struct.pack(">BBBB B3s 6sH I HH I I 16x", 0x43, 0x87, 0, 0, 0,
                      len(data).to_bytes(3, "big"), bytes([0x80, 0, 0, 0, 0x77, 0x77]),
                      0, 0, 1, 0, 1, 0)
    return bhs + pad(data)


def drain(s, limit=5.0):
    """Read until the target closes (or `limit` seconds pass)."""
    s.settimeout(limit)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def chaos_one(mode, port, rng):
    if mode == "garbage-after-login":
        sess = RwSession("127.0.0.1", port, IQN)
        try:
            sess.s.sendall(rng.randbytes(rng.randint(48, 16384)))
        except OSError:
            pass
        drain(sess.s)
        sess.close()
        return
    if mode == "vanish":
        sess = RwSession("127.0.0.1", port, IQN)
        sess.close()
        return
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if mode == "open-close":
            pass
        elif mode == "half-close":
            s.sendall(login_bytes()[:30])
            s.shutdown(socket.SHUT_WR)
            drain(s)
        elif mode == "reset":
            s.sendall(login_bytes()[:rng.randint(1, 60)])
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif mode == "slow-drip":
            for b in login_bytes()[:rng.randint(10, 40)]:
                s.sendall(bytes([b]))
                time.sleep(0.1)
        elif mode == "garbage":
            s.sendall(rng.randbytes(rng.randint(1, 65536)))
            drain(s)
    except OSError:
        pass  # the target may close first: an allowed answer
    finally:
        s.close()


MODES = ["open-close", "half-close", "reset", "slow-drip", "garbage", "garbage-after-login",
         "vanish"]


def chaos(argv):
    sessions, rounds, work = int(argv[0]), int(argv[1]), argv[2]
    seed = int(argv[3]) if len(argv) > 3 else random.randrange(1 << 32)
    print(f"chaos: seed {seed}")
    raise_nofile()
    d = setup(work)
    base = rss_kib(d.pid)
    base_fds = fds(d.pid)
    peak = [base]
    done = threading.Event()
    counts = {m: 0 for m in MODES}
    errors, verified = [], [0]
    lock = threading.Lock()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(d.pid))
            time.sleep(0.1)

    def monkey(i):
        rng = random.Random(seed * 31 + i)
        while not done.is_set():
            mode = rng.choice(MODES)
            try:
                chaos_one(mode, d.port, rng)
            except Exception as e:  # noqa: BLE001
                if mode in ("vanish", "garbage-after-login"):
                    # A login must still work while the chaos goes on.
                    with lock:
                        errors.append(f"chaos {mode}: {e}")
            with lock:
                counts[mode] += 1

    def worker(w):
        try:
            s = RwSession("127.0.0.1", d.port, IQN, timeout=30)
            s.ready()
            for r in range(rounds):
                lba = (w * 64 + r % 64) * 8
                block = struct.pack(">IIQ", w, r, lba) * 256
                s.write(lba, block, BS, fua=(r % 4 == 0))
                if s.read(lba, 8, BS) != block:
                    raise RuntimeError(f"round {r}: LBA {lba} read back wrong")
                with lock:
                    verified[0] += 1
            s.logout()
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"session {w}: {e}")

    t0 = time.monotonic()
    side = [threading.Thread(target=sampler)] + [threading.Thread(target=monkey, args=(i,))
                                                 for i in range(12)]
    for t in side:
        t.start()
    workers = [threading.Thread(target=worker, args=(w,)) for w in range(sessions)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    for t in side:
        t.join()
    elapsed = time.monotonic() - t0
    # Let the target notice the chaos connections closed, then look again.
    time.sleep(2)
    end, end_fds = rss_kib(d.pid), fds(d.pid)
    alive = d.alive()
    panics = d.panics()
    d.stop()
    total = sum(counts.values())
    print(f"chaos: {sessions} sessions x {rounds} verified writes+reads: {verified[0]} verified, "
          f"{len(errors)} errors; {total} chaos connections in {elapsed:.1f}s ({counts}); "
          f"daemon alive={alive} panics={panics}; RSS baseline {base // 1024} MiB, "
          f"peak {peak[0] // 1024} MiB, end {end // 1024} MiB; fds {base_fds} -> {end_fds}")
    for e in errors[:10]:
        print("FAIL " + e)
    ok = (not errors and alive and not panics and verified[0] == sessions * rounds
          and peak[0] < base + 256 * 1024)
    return 0 if ok else 1


def many(argv):
    count, work = int(argv[0]), argv[1]
    hard = raise_nofile()
    if hard < count + 200:
        print(f"sessions: RLIMIT_NOFILE {hard} is under {count + 200}")
        return 1
    d = setup(work)
    base = rss_kib(d.pid)
    sess, lat, errors = [], [], []
    lock = threading.Lock()

    def opener(n):
        for _ in range(n):
            try:
                s = RwSession("127.0.0.1", d.port, IQN, timeout=30)
                with lock:
                    sess.append(s)
                    lat.append(s.login_seconds)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(str(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=opener, args=(count // 8 + (i < count % 8),))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    rss = rss_kib(d.pid)
    nfds = fds(d.pid)
    bad = 0
    for s in sess:
        try:
            s.ready()
        except Exception:  # noqa: BLE001
            bad += 1
    for s in sess:
        s.logout()
    alive = d.alive()
    panics = d.panics()
    d.stop()
    print(f"sessions: {len(sess)} of {count} logged in at once in {elapsed:.1f}s; login latency "
          f"p50 {percentile(lat, 50) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms, "
          f"max {max(lat, default=0) * 1000:.1f} ms; RSS {base // 1024} MiB idle, "
          f"{rss // 1024} MiB with all logged in ({(rss - base) / max(len(sess), 1):.0f} KiB "
          f"per session); daemon fds {nfds}; TUR failures {bad}; alive={alive} panics={panics}")
    for e in errors[:10]:
        print("FAIL " + e)
    return 0 if not errors and not bad and alive and not panics and len(sess) == count else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(sys.argv) < 2 or sys.argv[1] not in ("chaos", "sessions"):
        sys.exit(__doc__)
    sys.exit((chaos if sys.argv[1] == "chaos" else many)(sys.argv[2:]))
