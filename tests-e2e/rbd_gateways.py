#!/usr/bin/env python3
"""Two rtarget gateways on one RBD image (tests-e2e/rbd.sh runs it on its
cluster): gateway A serves iSCSI TPG 1 / ALUA group 1, gateway B TPG 2 /
group 2, with the same target, WWN and LUN (as ceph-iscsi sets LIO up:
both TPGs on every gateway, each enables its own; the cfgstring's
alua_group=N says which group the gateway is).

Checks, in order (each prints PASS/FAIL; exit status 1 on any FAIL):
  - REPORT TARGET PORT GROUPS answers the same bytes through A and B
    before any write (configured states) and after each takeover;
  - a write through A makes group 1 active/optimized on both;
  - with the cluster stopped (SIGSTOP mon and osd), RTPG through A and B
    answers within 2 s from the last owner seen (not after osd_op_timeout);
  - SIGSTOP A, a write through B takes the image over (group 2 optimized;
    the takeover time is printed) and blocklists A's exact address (with
    its nonce); a write queued at A while it was stopped is refused after
    SIGCONT (NOT READY 04/0A), and B's data stays;
  - A's later writes keep failing (fenced, then no ping-pong: B is alive);
  - SET TARGET PORT GROUPS through A (group 1 optimized) takes it back
    explicitly; then B's writes fail;
  - kill -9 A: B (which lost the lock) takes it once A's watch on the image
    header expired (the time is printed);
  - the cluster's service map (`ceph service dump` / `service status`,
    through rados_service_register), `ls` and `sessions` of each gateway
    name the lock owner after A took the lock and after B took over; B
    reports the peer it blocklisted, A that it was fenced (needs a ceph-mgr);
  - `rbd export` holds every acknowledged write and none of the refused;
  - B stopped (SIGTERM): its watch on the image's shared PR object goes
    within 2 s, its service map entry within 10 s (librados' MMgrClose when
    the registered connection shuts down; the times are printed), not
    when the OSDs / the mgr time it out. A (killed) stays listed until the
    mgr's mgr_service_beacon_grace (60 s): printed, not checked.

usage: rbd_gateways.py WORKDIR CEPH_CONF
       rbd_gateways.py --late-write PORT   (rbd-failover.sh's check of a woken gateway)
"""
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rbd_gw_common import (BS, IQN, NOT_READY_TRANSITION, REC, RESULTS,  # noqa: E402
                           answers, blocklist, check, check_service_map, cluster_pids,
                           queue_writes, record,
                           rtpg, rtpg_alike, run, service_map, start_gateways, states,
                           stopped,
                           wait_takeover, write)
from rwsession import RwSession  # noqa: E402

IMAGE = f"rbd/gw{os.getpid()}"


def pr_watchers(conf, image):
    """The watchers of `image`'s shared PR object (rtarget_pr.<image id>)."""
    info = json.loads(subprocess.run(["rbd", "-c", conf, "info", image, "--format", "json"],
                                     capture_output=True, check=True, text=True).stdout)
    pool = image.split("/")[0]
    out = subprocess.run(["rados", "-c", conf, "-p", pool, "listwatchers",
                          f"rtarget_pr.{info['id']}"], capture_output=True, text=True)
    return out.stdout.count("watcher=")


def poll(f, limit):
    """Seconds until f() held (polled every 0.1 s), or None after `limit`."""
    t0 = time.monotonic()
    while not f():
        if time.monotonic() - t0 > limit:
            return None
        time.sleep(0.1)
    return round(time.monotonic() - t0, 2)


def stop_lets_go(conf, b):
    """Stop B (the last live gateway; A was killed) and see it leave the
    PR object's watchers and the service map at once."""
    # A's watch (killed) expires on the OSD's clock first: then only B's is left.
    poll(lambda: pr_watchers(conf, IMAGE) <= 1, 30)
    before = pr_watchers(conf, IMAGE)
    def listed(group):
        return [n for n, d in service_map(conf).items()
                if d["metadata"].get("image") == IMAGE
                and d["metadata"].get("alua_group") == str(group)]
    was = bool(listed(2))
    b.stop()
    watch = poll(lambda: pr_watchers(conf, IMAGE) == 0, 2)
    check(f"B stopped: its shared PR watch is gone ({before} watcher(s) before, "
          f"none after {watch} s)", before == 1 and watch is not None)
    entry = poll(lambda: not listed(2), 10)
    check(f"B stopped: its service map entry (listed before: {was}) is gone after {entry} s",
          was and entry is not None, f"{listed(2)}")
    print(f"stop of B: its PR watch gone after {watch} s, its service map entry after "
          f"{entry} s; A (kill -9) still listed: {bool(listed(1))}", flush=True)


def main(argv):
    work, conf = argv[1], argv[2]
    a, b, ports = start_gateways(work, conf, IMAGE)
    sa = RwSession("127.0.0.1", ports[1], IQN, timeout=30)
    sb = RwSession("127.0.0.1", ports[2], IQN, timeout=30)
    sa.ready()
    sb.ready()
    expect = {}  # lba -> data every acknowledged write left there

    rtpg_alike(sa, sb, {1: 0, 2: 1}, "before any write (configured: group 1 preferred)")
    st, kcq = write(sa, 0, record(1))
    check("write through A", st == 0, f"status {st:#x} {kcq}")
    expect[0] = record(1)
    rtpg_alike(sa, sb, {1: 0, 2: 1}, "after A took the lock (group 1 optimized)")
    check_service_map(conf, IMAGE, {1: a, 2: b}, 1, "after A took the lock")

    # The cluster unreachable (mon and osd stopped): RTPG answers at once
    # from the last owner seen, not after osd_op_timeout (10 s here).
    want = rtpg(sa)
    with stopped(*cluster_pids(conf)):
        for s, who in ((sa, "A"), (sb, "B"), (sa, "A again")):
            t0 = time.monotonic()
            d = rtpg(s)
            took = time.monotonic() - t0
            check(f"cluster stopped: RTPG through {who} answers in {took:.2f} s, "
                  f"from the last owner seen {states(d)}", took < 2 and d == want,
                  f"{states(d)} vs {states(want)}")

    # SIGSTOP A with a write queued in its socket; B takes over meanwhile.
    before = set(blocklist(conf))
    with stopped(a):
        queue_writes(sa, [(8, record(2))])
        t0 = time.monotonic()
        st, kcq = write(sb, 8, record(3))
        took = time.monotonic() - t0
        check(f"write through B while A is stopped: B takes the image over in {took:.2f} s",
              st == 0, f"status {st:#x} {kcq}")
        print(f"takeover (break + blocklist + acquire + record): {took:.2f} s", flush=True)
        expect[8] = record(3)
        added = [x for x in blocklist(conf) if x not in before]
        check("exactly one address blocklisted, with its nonce (not a whole IP)",
              len(added) == 1 and "/" in added[0] and not added[0].endswith("/0"), f"{added}")
    (st, kcq), = answers(sa, 1)
    check("the write queued at A while stopped is refused after SIGCONT (02/04/0A)",
          st == 0x02 and kcq == NOT_READY_TRANSITION, f"status {st:#x} {kcq}")
    rtpg_alike(sa, sb, {1: 1, 2: 0}, "after B took over (group 2 optimized)")
    gw = check_service_map(conf, IMAGE, {1: a, 2: b}, 2, "after B took over")
    peers = gw.get(2, {}).get("blocklisted", [])
    check(f"B reports the peer it blocklisted {peers}, A that it was fenced "
          f"({gw.get(1, {}).get('fenced')})",
          len(added) == 1 and any(added[0] in p or p in added[0] for p in peers)
          and gw.get(2, {}).get("failovers") == 1 and gw.get(1, {}).get("fenced", 0) >= 1,
          f"{gw}")
    st, kcq = write(sa, 16, record(4))
    check("A's later writes fail (fenced, and no ping-pong while B lives)",
          st == 0x02 and kcq == NOT_READY_TRANSITION, f"status {st:#x} {kcq}")
    rtpg_alike(sa, sb, {1: 1, 2: 0}, "after A's refused write (still group 2)")
    st, _ = write(sb, 24, record(5))
    check("B keeps writing", st == 0)
    expect[24] = record(5)

    # Explicit ALUA: SET TARGET PORT GROUPS through A asks for group 1.
    stpg = bytes([0xA4, 0x0A, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0])
    st, _, kcq = run(sa, stpg, data=bytes([0, 0, 0, 0, 0, 0, 0, 1]))
    check("SET TARGET PORT GROUPS (group 1 optimized) through A", st == 0, f"{st:#x} {kcq}")
    rtpg_alike(sa, sb, {1: 0, 2: 1}, "after STPG (group 1 optimized)")
    st, kcq = write(sa, 16, record(6))
    check("A writes again", st == 0, f"status {st:#x} {kcq}")
    expect[16] = record(6)
    st, kcq = write(sb, 40, record(7))
    check("B's writes now fail (02/04/0A)", st == 0x02 and kcq == NOT_READY_TRANSITION,
          f"status {st:#x} {kcq}")

    # The owner dies: B, which lost the lock, takes it once A's watch on the
    # image header expired (the OSDs' osd_client_watch_timeout).
    a.kill9()
    sa.close()
    st, kcq, took = wait_takeover(sb, 48, record(8))
    check(f"kill -9 A: B takes over once A's watch expired, after {took:.1f} s", st == 0,
          f"status {st:#x} {kcq}")
    print(f"failover after kill -9 of the owner (at a gateway that had lost the lock): "
          f"{took:.1f} s", flush=True)
    expect[48] = record(8)
    d = rtpg(sb)
    check(f"RTPG through B: group 2 optimized {states(d)}", states(d).get(2) == 0)

    sb.logout()
    img = subprocess.run(["rbd", "-c", conf, "export", "--no-progress", IMAGE, "-"],
                         capture_output=True, check=True).stdout
    bad = [lba for lba, data in expect.items() if img[lba * BS:lba * BS + REC] != data]
    zero = [lba for lba in (40,) if img[lba * BS:lba * BS + REC] != bytes(REC)]
    check("rbd export: every acknowledged write there (B's over A's late one), no refused one",
          not bad and not zero, f"wrong at {bad}, refused write landed at {zero}")
    stop_lets_go(conf, b)
    panics = sum(g.panics() for g in (a, b))
    check("no panic in the gateways' logs", panics == 0, f"{panics}")
    return 0 if all(RESULTS) else 1


def late_write(port):
    """rbd-failover.sh: a write through a gateway that was fenced while
    stopped is refused (02/04/0A), and it does not claim group 1 any more."""
    s = RwSession("127.0.0.1", port, IQN, timeout=30)
    s.ready()
    st, kcq = write(s, 4096, b"late".ljust(REC, b"\0"))
    groups = states(rtpg(s))
    print(f"late write: status {st:#x} {kcq}; RTPG through A: {groups}")
    ok = st == 2 and kcq == NOT_READY_TRANSITION and groups.get(1) == 1 and groups.get(2) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--late-write"]:
        sys.exit(late_write(int(sys.argv[2])))
    sys.exit(main(sys.argv))
