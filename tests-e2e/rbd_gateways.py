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
  - SIGSTOP A, a write through B takes the image over (group 2 optimized;
    the takeover time is printed) and blocklists A's exact address (with
    its nonce); a write queued at A while it was stopped is refused after
    SIGCONT (NOT READY 04/0A), and B's data stays;
  - A's later writes keep failing (fenced, then no ping-pong: B is alive);
  - SET TARGET PORT GROUPS through A (group 1 optimized) takes it back
    explicitly; then B's writes fail;
  - kill -9 A: B (which lost the lock) takes it once A's watch on the image
    header expired (the time is printed);
  - `rbd export` holds every acknowledged write and none of the refused.

usage: rbd_gateways.py WORKDIR CEPH_CONF
       rbd_gateways.py --late-write PORT   (rbd-failover.sh's check of a woken gateway)
"""
import json
import os
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from malformed import recv_pdu, scsi_cmd, sense_kcq  # noqa: E402
from rwsession import Daemon, RwSession, free_port  # noqa: E402

IQN = "iqn.2026-12.org.rtarget:gw"
WWN = "3a1f0c7e-5b2d-4e8f-9a6b-0c1d2e3f4a5b"
IMAGE = f"rbd/gw{os.getpid()}"
BS, REC = 512, 4096
RESULTS = []


def check(name, ok, why=""):
    RESULTS.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok or not why else f" ({why})"), flush=True)
    return ok


def group(name, gid, state):
    g = {"name": name, "tg_pt_gp_id": gid, "alua_access_state": state,
         "alua_access_status": 0, "alua_access_type": 3, "preferred": 0,
         "nonop_delay_msecs": 0, "trans_delay_msecs": 0, "implicit_trans_secs": 0,
         "alua_write_metadata": 0}
    for k in ("active_nonoptimized", "active_optimized", "offline", "standby",
              "transitioning", "unavailable"):
        g["alua_support_" + k] = 1
    return g


def gateway_config(path, me, ports, conf, image=None):
    """Gateway `me` (1 or 2) of two; `ports` = {1: port, 2: port}
    (also used by rbd-failover.sh)."""
    tpgs = []
    for tag in (1, 2):
        tpgs.append({
            "tag": tag, "enable": tag == me,
            "attributes": {"generate_node_acls": 1, "authentication": 0,
                           "demo_mode_write_protect": 0, "cache_dynamic_acls": 1},
            "parameters": {},
            "luns": [{"index": 0, "storage_object": "/backstores/user/gw0",
                      "alua_tg_pt_gp_name": f"gw{tag}"}],
            "portals": [{"ip_address": "127.0.0.1", "port": ports[tag]}],
            "node_acls": [],
        })
    cfg = {
        "fabric_modules": [],
        "storage_objects": [{
            "plugin": "user", "name": "gw0", "size": 64 << 20, "wwn": WWN,
            "config": f"rbd/{image or IMAGE};conf={conf};osd_op_timeout=10;alua_group={me}",
            "attributes": {},
            # Group 1 preferred until some gateway owns the image.
            "alua_tpgs": [group("gw1", 1, 0), group("gw2", 2, 1)],
        }],
        "targets": [{"fabric": "iscsi", "wwn": IQN, "tpgs": tpgs}],
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def run(s, cdb, edtl=0, data=b""):
    """One command past unit attentions: (status, data-in, (key, asc, ascq))."""
    for _ in range(10):
        st, got, sense = s.execute(cdb, 0, edtl, data)
        kcq = sense_kcq(sense) if st == 0x02 else None
        if kcq and kcq[0] == 6:
            continue
        return st, got, kcq
    raise RuntimeError("unit attentions without end")


def rtpg(s):
    st, d, kcq = run(s, bytes([0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]), 1024)
    if st != 0:
        raise RuntimeError(f"RTPG: status {st:#x} {kcq}")
    return d


def states(d):
    """{group id: access state} of an RTPG answer."""
    out, i = {}, 4
    while i + 8 <= len(d):
        gid = struct.unpack(">H", d[i + 2:i + 4])[0]
        out[gid] = d[i] & 0x0F
        i += 8 + 4 * d[i + 7]
    return out


def wcdb(lba, n=REC // BS):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)


def write(s, lba, data):
    st, _, kcq = run(s, wcdb(lba), data=data)
    return st, kcq


def record(seq):
    return (b"rtarget-gw seq=%08d " % seq).ljust(REC, b"\xa5")


def rtpg_alike(sa, sb, want, what):
    """Poll (10 s) until A and B answer RTPG with the same bytes and `want`."""
    deadline = time.monotonic() + 10
    while True:
        a, b = rtpg(sa), rtpg(sb)
        if a == b and states(a).get(1) == want[1] and states(a).get(2) == want[2]:
            return check(f"RTPG identical on A and B {what}: {states(a)}", True)
        if time.monotonic() > deadline:
            return check(f"RTPG identical on A and B {what}", False,
                         f"A {states(a)} {a.hex()} / B {states(b)} {b.hex()}")
        time.sleep(0.1)


def blocklist(conf):
    out = subprocess.run(["ceph", "-c", conf, "osd", "blocklist", "ls"],
                         capture_output=True, text=True, check=True)
    return [ln.split()[0] for ln in (out.stdout + out.stderr).splitlines() if "/" in ln]


def main(argv):
    work, conf = argv[1], argv[2]
    subprocess.run(["rbd", "-c", conf, "create", "--size", "64M", IMAGE], check=True)
    ports = {1: free_port(), 2: free_port()}
    gws = {}
    for me in (1, 2):
        d = os.path.join(work, f"gw{me}")
        os.makedirs(d, exist_ok=True)
        gateway_config(os.path.join(d, "saveconfig.json"), me, ports, conf)
        gws[me] = Daemon(d, ports[me]).start()
    a, b = gws[1], gws[2]
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

    # SIGSTOP A with a write queued in its socket; B takes over meanwhile.
    before = set(blocklist(conf))
    a.sigstop()
    late = record(2)
    itt = sa.itt
    sa.itt += 1
    sa.s.sendall(scsi_cmd(wcdb(8), 0, itt, sa.cmdsn, sa.expstatsn, edtl=REC, read=False,
                          write=True, data=late))
    sa.cmdsn += 1
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
    a.sigcont()
    while True:
        bhs, seg = recv_pdu(sa.s)
        if bhs[0] & 0x3F == 0x21:
            sa.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
            n = int.from_bytes(seg[:2], "big") if len(seg) >= 2 else 0
            st, kcq = bhs[3], sense_kcq(seg[2:2 + n]) if bhs[3] == 2 else None
            break
    check("the write queued at A while stopped is refused after SIGCONT (02/04/0A)",
          st == 0x02 and kcq == (2, 0x04, 0x0A), f"status {st:#x} {kcq}")
    rtpg_alike(sa, sb, {1: 1, 2: 0}, "after B took over (group 2 optimized)")
    st, kcq = write(sa, 16, record(4))
    check("A's later writes fail (fenced, and no ping-pong while B lives)",
          st == 0x02 and kcq == (2, 0x04, 0x0A), f"status {st:#x} {kcq}")
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
    check("B's writes now fail (02/04/0A)", st == 0x02 and kcq == (2, 0x04, 0x0A),
          f"status {st:#x} {kcq}")

    # The owner dies: B, which lost the lock, takes it once A's watch on the
    # image header expired (the OSDs' osd_client_watch_timeout).
    a.kill9()
    sa.close()
    t0 = time.monotonic()
    while True:
        st, kcq = write(sb, 48, record(8))
        if st == 0 or time.monotonic() - t0 > 90 or kcq != (2, 0x04, 0x0A):
            break
        time.sleep(0.2)
    took = time.monotonic() - t0
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
    b.stop()
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
    return 0 if st == 2 and kcq == (2, 4, 0x0A) and groups.get(1) == 1 and groups.get(2) == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--late-write"]:
        sys.exit(late_write(int(sys.argv[2])))
    sys.exit(main(sys.argv))
