"""bench/qd32-probe-sample.py DAEMON_PID LOAD_PID — used by qd32-probe.sh.

Samples which CPU each thread of the daemon and of the initiator is on every
50 ms until the initiator exits, then prints for each thread that used the CPU
(>= 0.2 s): its CPU time (ticks), its share of samples on CPU 0 / CPU 1, for
daemon threads the share of samples on the CPU the initiator was on, and the
deltas of its migrations, voluntary / involuntary context switches and affine
wake-ups (/proc/PID/task/TID/sched). Answers "do the connection thread and the
initiator share a CPU, or migrate, in the slow rounds?"
"""
import collections
import os
import sys
import time

dpid, lpid = int(sys.argv[1]), int(sys.argv[2])


def tasks(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def stat(pid, tid):
    try:
        s = open(f"/proc/{pid}/task/{tid}/stat").read()
    except FileNotFoundError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return s[s.index("(") + 1:s.rindex(")")], int(f[36]), int(f[11]) + int(f[12])


def sched(pid, tid):
    d = {}
    try:
        for line in open(f"/proc/{pid}/task/{tid}/sched"):
            if ":" in line:
                k, v = line.split(":", 1)
                d[k.strip()] = v.strip()
    except FileNotFoundError:
        pass
    keys = ("se.nr_migrations", "nr_voluntary_switches", "nr_involuntary_switches", "se.nr_wakeups_affine")
    return tuple(int(float(d.get(k, 0))) for k in keys)


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


start, end = {}, {}
cpus = collections.defaultdict(collections.Counter)
same = collections.Counter()
while alive(lpid):
    on = {s[1] for s in (stat(lpid, t) for t in tasks(lpid)) if s}
    for p in (dpid, lpid):
        for t in tasks(p):
            s = stat(p, t)
            if not s:
                continue
            start.setdefault((p, t), (s, sched(p, t)))
            end[(p, t)] = (s, sched(p, t))
            cpus[(p, t)][s[1]] += 1
            same[(p, t)] += p == dpid and s[1] in on
    time.sleep(0.05)
tck = os.sysconf("SC_CLK_TCK")
for k, (e_stat, e_sched) in end.items():
    s_stat, s_sched = start[k]
    ticks = e_stat[2] - s_stat[2]
    if ticks < tck // 5:
        continue
    d = [a - b for a, b in zip(e_sched, s_sched)]
    c = cpus[k]
    n = sum(c.values()) or 1
    who = "init" if k[0] == lpid else "daemon"
    print(f"  {who:6} {e_stat[0]:16} ticks={ticks:4} cpu0={c[0] / n:.2f} cpu1={c[1] / n:.2f} "
          f"with_init={same[k] / n:.2f} migr={d[0]} vol={d[1]} invol={d[2]} affine={d[3]}")
