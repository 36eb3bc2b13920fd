#!/usr/bin/env python3
"""Lock-driven gateways (alua_group, exclusive-lock image) with persistent
reservations shared through the image's RADOS object, together
(tests-e2e/rbd.sh runs it on its cluster, after rbd_gateways.py).

Initiator 1 registers its key on both paths (as mpathpersist does) and
reserves Write Exclusive - Registrants Only through A, which takes the
lock with its write. Then, each printing PASS/FAIL (exit status 1 on any):
  - initiator 2 registers through A and writes; A stops with more writes of
    it queued; initiator 1 PREEMPTs it through B; A, woken, admits none of
    them (it reloads a copy older than the lease before deciding);
  - initiator 2 (unregistered) through B: READ KEYS / READ RESERVATION show
    initiator 1's; its WRITE gets RESERVATION CONFLICT and moves no lock;
  - SIGSTOP A; initiator 1 writes through B: B takes the lock over (the
    time is printed), and the reservation holds at B;
  - initiator 2 registers through B while A is stopped, and may write there;
  - SIGCONT A: its write is refused (fenced, 02/04/0A), it reconnects, and
    still enforces the reservation (initiator 2's A path is not registered);
  - kill -9 B (the owner): A, which lost the lock, takes it back once B's
    watch expired (the time is printed); the reservation holds there still.
Without the shared state each gateway keeps its own reservations and B
lets initiator 2 write.

usage: rbd_gateways_pr.py WORKDIR CEPH_CONF
"""
import os
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rbd_gw_common import (IQN, NOT_READY_TRANSITION, RESULTS, answers,  # noqa: E402
                           check, queue_writes, record, rtpg, rtpg_alike, run,
                           start_gateways, states, stopped, wait_takeover, write)
from rwsession import RwSession  # noqa: E402

IMAGE = f"rbd/gwpr{os.getpid()}"
I1 = "iqn.2026-12.org.rtarget:host1"
I2 = "iqn.2026-12.org.rtarget:host2"
KEY1, KEY2 = 0x1111AAAA, 0x2222BBBB
WE_RO = 5  # Write Exclusive - Registrants Only
CONFLICT = 0x18


def prout(s, action, key, sa_key, rtype=0):
    params = struct.pack(">QQ4xB3x", key, sa_key, 0)
    cdb = bytes([0x5F, action, rtype, 0, 0, 0, 0, 0, len(params), 0])
    st, _, kcq = run(s, cdb, data=params)
    return st, kcq


def keys(s):
    st, d, kcq = run(s, bytes([0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]), 4096)
    if st != 0:
        return f"READ KEYS: status {st:#x} {kcq}"
    n = struct.unpack(">I", d[4:8])[0] // 8
    return sorted(struct.unpack(">Q", d[8 + 8 * i:16 + 8 * i])[0] for i in range(n))


def holder(s):
    """(key, type) of READ RESERVATION, or None."""
    st, d, kcq = run(s, bytes([0x5E, 1, 0, 0, 0, 0, 0, 0x10, 0, 0]), 4096)
    if st != 0 or struct.unpack(">I", d[4:8])[0] < 16:
        return None
    return struct.unpack(">Q", d[8:16])[0], d[21] & 0x0F


def enforced(s, want_keys, where):
    """READ KEYS / READ RESERVATION through `s`, and its (unregistered) WRITE conflicts."""
    got = keys(s)
    check(f"{where}: READ KEYS {[hex(k) for k in want_keys]}", got == sorted(want_keys),
          f"{got}")
    h = holder(s)
    check(f"{where}: READ RESERVATION: {KEY1:#x} holds Write Exclusive - Registrants Only",
          h == (KEY1, WE_RO), f"{h}")
    st, kcq = write(s, 64, record(99))
    check(f"{where}: WRITE from unregistered initiator 2 -> RESERVATION CONFLICT",
          st == CONFLICT, f"status {st:#x} {kcq}")


def stale_window(a, i1b, i2a):
    """Initiator 2 registers through A (the owner) and writes; A stops with
    more of its writes queued; initiator 1 PREEMPTs it through B (GOOD once
    the announcement gave up on A); A, woken, must not admit the queued
    writes from its copy of before the PREEMPT (it reloads first: the lease)."""
    st, kcq = prout(i2a, 0, 0, KEY2)
    check("initiator 2 REGISTERs through A", st == 0, f"status {st:#x} {kcq}")
    st, kcq = write(i2a, 8, record(10))
    check("initiator 2, registered, writes through A", st == 0, f"status {st:#x} {kcq}")
    with stopped(a):
        queue_writes(i2a, [(72 + 8 * k, record(11 + k)) for k in range(4)])
        t0 = time.monotonic()
        st, kcq = prout(i1b, 4, KEY1, KEY2, WE_RO)
        check(f"A stopped: initiator 1 PREEMPTs initiator 2 through B "
              f"({time.monotonic() - t0:.1f} s)", st == 0, f"status {st:#x} {kcq}")
    got = [st for st, _ in answers(i2a, 4)]
    check(f"A, woken: none of initiator 2's queued writes is admitted {[hex(x) for x in got]}",
          0 not in got and CONFLICT in got)


def session(port, initiator):
    s = RwSession("127.0.0.1", port, IQN, initiator=initiator, timeout=30)
    s.ready()
    return s


def main(argv):
    work, conf = argv[1], argv[2]
    a, b, ports = start_gateways(work, conf, IMAGE)
    info = subprocess.run(["rbd", "-c", conf, "info", IMAGE], capture_output=True,
                          text=True, check=True).stdout
    check("the image has the exclusive-lock feature", "exclusive-lock" in info, info)
    i1a, i1b, i2b = session(ports[1], I1), session(ports[2], I1), session(ports[2], I2)
    i2a = session(ports[1], I2)

    st, kcq = prout(i1a, 0, 0, KEY1)
    check("initiator 1 REGISTERs through A", st == 0, f"status {st:#x} {kcq}")
    st, kcq = prout(i1b, 0, 0, KEY1)
    check("initiator 1 REGISTERs through B (its second path)", st == 0, f"status {st:#x} {kcq}")
    st, kcq = prout(i1a, 1, KEY1, 0, WE_RO)
    check("initiator 1 RESERVEs (Write Exclusive - Registrants Only) through A", st == 0,
          f"status {st:#x} {kcq}")
    st, kcq = write(i1a, 0, record(1))
    check("initiator 1 writes through A (A takes the lock)", st == 0, f"status {st:#x} {kcq}")
    rtpg_alike(i1a, i1b, {1: 0, 2: 1}, "(group 1 optimized)")
    stale_window(a, i1b, i2a)
    enforced(i2b, [KEY1, KEY1], "B before the takeover")
    d = rtpg(i2b)
    check(f"the conflicting WRITE moved no lock: {states(d)}", states(d).get(1) == 0)

    with stopped(a):
        t0 = time.monotonic()
        st, kcq = write(i1b, 8, record(2))
        took = time.monotonic() - t0
        check(f"SIGSTOP A: initiator 1 writes through B, which takes over in {took:.2f} s",
              st == 0, f"status {st:#x} {kcq}")
        print(f"takeover with shared PR (A stopped): {took:.2f} s", flush=True)
        d = rtpg(i1b)
        check(f"RTPG through B after the takeover: group 2 optimized {states(d)}",
              states(d).get(2) == 0)
        enforced(i2b, [KEY1, KEY1], "B after the takeover")
        t0 = time.monotonic()
        st, kcq = prout(i2b, 0, 0, KEY2)
        check(f"initiator 2 REGISTERs through B while A is stopped "
              f"({time.monotonic() - t0:.1f} s)", st == 0, f"status {st:#x} {kcq}")
        st, kcq = write(i2b, 16, record(3))
        check("initiator 2, registered, writes through B", st == 0, f"status {st:#x} {kcq}")

    st, kcq = write(i1a, 24, record(4))
    check("SIGCONT A: initiator 1's write through A is refused (fenced, 02/04/0A)",
          st == 0x02 and kcq == NOT_READY_TRANSITION, f"status {st:#x} {kcq}")
    enforced(i2a, [KEY1, KEY1, KEY2], "A fenced and reconnected")

    b.kill9()
    for s in (i1b, i2b):
        s.close()
    st, kcq, took = wait_takeover(i1a, 32, record(5))
    check(f"kill -9 B: A takes the lock back once B's watch expired, after {took:.1f} s",
          st == 0, f"status {st:#x} {kcq}")
    print(f"failover with shared PR after kill -9 of the owner: {took:.1f} s", flush=True)
    enforced(i2a, [KEY1, KEY1, KEY2], "A after B died")

    for s in (i1a, i2a):
        s.logout()
    a.stop()
    panics = sum(g.panics() for g in (a, b))
    check("no panic in the gateways' logs", panics == 0, f"{panics}")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
