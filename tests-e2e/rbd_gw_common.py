"""What tests-e2e/rbd_gateways.py and rbd_gateways_pr.py (and
rbd-failover.sh) share: two rtarget gateways on one RBD image (gateway A
serves iSCSI TPG 1 / ALUA group 1, gateway B TPG 2 / group 2, with the
same target, WWN and LUN, as ceph-iscsi sets LIO up: both TPGs on every
gateway, each enables its own; the cfgstring's alua_group=N says which
group the gateway is), their configs and start, the SCSI commands the
checks send, and the gateways' state as the cluster and the CLI show it.
"""
import json
import os
import signal
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from malformed import recv_pdu, scsi_cmd, sense_kcq  # noqa: E402
from rwsession import Daemon, api, free_port  # noqa: E402

IQN = "iqn.2026-12.org.rtarget:gw"
WWN = "3a1f0c7e-5b2d-4e8f-9a6b-0c1d2e3f4a5b"
BS, REC = 512, 4096
NOT_READY_TRANSITION = (2, 0x04, 0x0A)
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


def gateway_config(path, me, ports, conf, image):
    """Gateway `me` (1 or 2) of two on `image` (pool/name); `ports` = {1: port, 2: port}."""
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
            "config": f"rbd/{image};conf={conf};osd_op_timeout=10;alua_group={me}",
            "attributes": {},
            # Group 1 preferred until some gateway owns the image.
            "alua_tpgs": [group("gw1", 1, 0), group("gw2", 2, 1)],
        }],
        "targets": [{"fabric": "iscsi", "wwn": IQN, "tpgs": tpgs}],
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def start_gateways(work, conf, image):
    """Create `image` (64 MiB, exclusive-lock on by default) and start
    gateways A and B on it: (A, B, {1: port A, 2: port B})."""
    subprocess.run(["rbd", "-c", conf, "create", "--size", "64M", image], check=True)
    ports = {1: free_port(), 2: free_port()}
    while ports[2] == ports[1]:
        ports[2] = free_port()
    gws = {}
    for me in (1, 2):
        d = os.path.join(work, f"gw{me}")
        os.makedirs(d, exist_ok=True)
        gateway_config(os.path.join(d, "saveconfig.json"), me, ports, conf, image)
        gws[me] = Daemon(d, ports[me]).start()
    return gws[1], gws[2], ports


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


def queue_writes(s, writes):
    """Send WRITEs [(lba, data)] without waiting for their answers (the
    gateway is stopped); `answers` collects them later."""
    for lba, data in writes:
        itt = s.itt
        s.itt += 1
        s.s.sendall(scsi_cmd(wcdb(lba), 0, itt, s.cmdsn, s.expstatsn, edtl=REC, read=False,
                             write=True, data=data))
        s.cmdsn += 1


def answers(s, n):
    """The (status, sense key/asc/ascq) of the next `n` SCSI responses on `s`."""
    got = []
    while len(got) < n:
        bhs, seg = recv_pdu(s.s)
        if bhs[0] & 0x3F == 0x21:
            s.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
            k = int.from_bytes(seg[:2], "big") if len(seg) >= 2 else 0
            got.append((bhs[3], sense_kcq(seg[2:2 + k]) if bhs[3] == 2 else None))
    return got


def stopped(*daemons):
    """SIGSTOP `daemons` (with `with`): a Daemon through Daemon.sigstop,
    which returns once every thread of it stopped (commands queued next are
    not served before), a pid (a Ceph daemon) with kill; SIGCONT on leaving."""
    class Stopped:
        def __enter__(self):
            for d in daemons:
                if isinstance(d, int):
                    os.kill(d, signal.SIGSTOP)
                else:
                    d.sigstop()

        def __exit__(self, *exc):
            for d in daemons:
                if isinstance(d, int):
                    os.kill(d, signal.SIGCONT)
                else:
                    d.sigcont()
    return Stopped()


def wait_takeover(s, lba, data, limit=90):
    """Write through `s` until the gateway took the lock of a dead owner
    (its writes answer 02/04/0A until the owner's watch expired):
    (status, kcq, seconds)."""
    t0 = time.monotonic()
    while True:
        st, kcq = write(s, lba, data)
        if st == 0 or time.monotonic() - t0 > limit or kcq != NOT_READY_TRANSITION:
            return st, kcq, time.monotonic() - t0
        time.sleep(0.2)


def cluster_pids(conf):
    """The pids of ceph-up.sh's mon and osd (pid files next to `conf`)."""
    run_dir = os.path.join(os.path.dirname(os.path.abspath(conf)), "run")
    out = []
    for name in ("mon.a", "osd.0"):
        with open(os.path.join(run_dir, f"{name}.pid")) as f:
            out.append(int(f.read().strip()))
    return out


def blocklist(conf):
    out = subprocess.run(["ceph", "-c", conf, "osd", "blocklist", "ls"],
                         capture_output=True, text=True, check=True)
    return [ln.split()[0] for ln in (out.stdout + out.stderr).splitlines() if "/" in ln]


def service_map(conf):
    """{daemon name: {"metadata", "status"}} of service `rtarget` in the
    cluster's service map (`ceph service dump`, statuses from `ceph service
    status`); {} without a ceph-mgr."""
    def ceph(*args):
        out = subprocess.run(["ceph", "-c", conf, *args, "-f", "json"], capture_output=True,
                             text=True, timeout=30)
        try:
            return json.loads(out.stdout or "{}")
        except ValueError:
            return {}
    daemons = ceph("service", "dump").get("services", {}).get("rtarget", {}).get("daemons", {})
    status = ceph("service", "status").get("rtarget", {})
    return {name: {"metadata": d.get("metadata", {}),
                   "status": (status.get(name) or {}).get("status", {})}
            for name, d in daemons.items() if isinstance(d, dict)}


def gateway_state(daemon):
    """The `gateway` line `ls` shows under the storage object, through the
    daemon's API (the CLI's `ls` renders the same tree)."""
    tree = api(daemon.sock, {"op": "ls", "path": "/backstores/user:rbd/gw0"})
    for c in tree.get("tree", tree).get("children", []):
        if c.get("name") == "gateway":
            return c.get("summary", "")
    return ""


def sessions_gateways(daemon):
    """`sessions`' gateways, through the daemon's API."""
    return api(daemon.sock, {"op": "sessions"}).get("gateways", [])


def check_service_map(conf, image, gws, owner, what, timeout=60):
    """Poll until the service map lists a daemon per gateway in `gws`
    ({group: Daemon}) of `image` (metadata: image, alua_group) with
    `owner` as the only lock owner, and each gateway's `ls` and `sessions`
    say the same. Returns {group: its `sessions` entry}."""
    deadline = time.monotonic() + timeout
    while True:
        m = {n: d for n, d in service_map(conf).items() if d["metadata"].get("image") == image}
        byg = {int(d["metadata"].get("alua_group", 0)): (n, d) for n, d in m.items()}
        ok_map = all(g in byg and byg[g][1]["status"].get("lock_owner") ==
                     ("yes" if g == owner else "no") for g in gws)
        lines = {g: gateway_state(d) for g, d in gws.items()}
        ok_ls = all(f"gateway group {g}, lock owner {'yes' if g == owner else 'no'}" in ln
                    for g, ln in lines.items())
        sess = {g: sessions_gateways(d) for g, d in gws.items()}
        ok_sess = all(len(s) == 1 and s[0]["lock_owner"] == (g == owner)
                      for g, s in sess.items())
        if ok_map and ok_ls and ok_sess:
            check(f"service map, ls and sessions {what}: group {owner} owns "
                  f"({', '.join(sorted(m))}; {lines[owner]})", True)
            return {g: s[0] for g, s in sess.items()}
        if time.monotonic() > deadline:
            check(f"service map, ls and sessions {what}: group {owner} owns", False,
                  f"map {m}; ls {lines}; sessions {sess}")
            return {g: (s or [{}])[0] for g, s in sess.items()}
        time.sleep(0.5)
