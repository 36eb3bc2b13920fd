#!/usr/bin/env python3
"""bench/report.py: the tables and the SVG chart of bench/bench.sh.

usage: report.py table RAW PEER [PEER...]  Markdown table of a raw file (columns
                                           per peer, ratios rtarget/peer)
       report.py lat RAW                   QD1 latency percentiles (bench/iscsi-load.c lat,
                                           qd1lat.py; SPDK's columns when it was measured)
       report.py svg OUT TITLE RAW[:PEER]... one chart, a group of bars per row
       report.py gen RAW                   bench/iscsi-load.c's own CPU per I/O ("RUN TARGET US")

A raw file has one line per run: "CONFIG WORKLOAD TARGET ROUND IOPS CPU_US_PER_IO"
(IOPS and CPU are "ERR" when the run failed). TARGET is "rtarget" or the peer
("tgt", "qsd", "spdk"). Medians over the rounds; ratios are rtarget against the
peer.
"""
import statistics
import sys

PEER_NAMES = {"tgt": "tgt", "qsd": "q-s-d", "spdk": "SPDK"}


def size(wl):
    for prefix, n in (("1m", 1 << 20), ("64k", 65536)):
        if wl.startswith(prefix):
            return n
    return 4096


def load(path):
    """{(cfg, wl): {target: ([iops...], [cpu...], errors)}} in file order."""
    data = {}
    for line in open(path):
        parts = line.split()
        if len(parts) < 5:
            continue
        cfg, wl, t, _r, iops = parts[:5]
        cpu = parts[5] if len(parts) > 5 else "ERR"
        per = data.setdefault((cfg, wl), {}).setdefault(t, ([], [], [0]))
        if iops == "ERR":
            per[2][0] += 1
            continue
        per[0].append(float(iops))
        if cpu != "ERR":
            per[1].append(float(cpu))
    return data


def medians(per, t):
    iops, cpu, errs = per.get(t, ([], [], [0]))
    return (statistics.median(iops) if iops else None,
            statistics.median(cpu) if cpu else None, errs[0])


def rows(path, peer):
    """(cfg, wl, peer_iops, peer_cpu, rt_iops, rt_cpu, errors) per workload."""
    out = []
    for (cfg, wl), per in load(path).items():
        pi, pc, pe = medians(per, peer)
        ri, rc, re = medians(per, "rtarget")
        out.append((cfg, wl, pi, pc, ri, rc, pe + re))
    return out


def fmt_cpu(c):
    return "-" if c is None else (f"{c:.1f}" if c >= 10 else f"{c:.2f}")


def table(path, peer, *more):
    """The first peer's and rtarget's IOPS, MB/s, CPU and the ratios; each
    further peer (SPDK) adds its IOPS, CPU and ratios ("-" on rows it was
    not measured on)."""
    name = PEER_NAMES.get(peer, peer)
    head = (f"| LUN | workload | {name} IOPS | {name} MB/s | {name} CPU µs/IO "
            f"| rtarget IOPS | rtarget MB/s | rtarget CPU µs/IO | rtarget/{name} IOPS "
            f"| rtarget/{name} CPU |")
    for m in more:
        n = PEER_NAMES.get(m, m)
        head += f" {n} IOPS | {n} CPU µs/IO | rtarget/{n} IOPS | rtarget/{n} CPU |"
    print(head)
    print("|-----|----------|" + "---:|" * (8 + 4 * len(more)))
    data = load(path)
    for cfg, wl, pi, pc, ri, rc, errs in rows(path, peer):
        cells = []
        for i, c in ((pi, pc), (ri, rc)):
            cells += [f"{i:.0f}" if i else "error",
                      f"{i * size(wl) / 1e6:.0f}" if i else "-", fmt_cpu(c)]
        cells += ratios(pi, pc, ri, rc)
        for m in more:
            per = data[(cfg, wl)]
            if m not in per:
                cells += ["-"] * 4
                continue
            mi, mc, me = medians(per, m)
            errs += me
            cells += [f"{mi:.0f}" if mi else "error", fmt_cpu(mc)] + ratios(mi, mc, ri, rc)
        note = f" ({errs} err)" if errs else ""
        print(f"| {cfg} | {wl}{note} | " + " | ".join(cells) + " |")


def ratios(pi, pc, ri, rc):
    return [f"{ri / pi:.2f}x" if pi and ri else "-",
            f"{rc / pc:.2f}x" if pc and rc else "-"]


def lat(path):
    """QD1 latency lines "CONFIG PROBE TARGET ROUND P50 P99 MEAN COUNT" (PROBE: c for
    bench/iscsi-load.c lat (formerly qd1lat.c), py for bench/qd1lat.py; lines without it are py): medians."""
    data = {}
    for line in open(path):
        f = line.split()
        if len(f) == 7:
            f.insert(1, "py")
        cfg, probe, t, _r, p50, p99, mean, _n = f
        data.setdefault((cfg, probe), {}).setdefault(t, []).append((float(p50), float(p99), float(mean)))
    spdk = any("spdk" in per for per in data.values())
    head = "| LUN | probe | tgt p50 µs | tgt p99 µs | rtarget p50 µs | rtarget p99 µs | rtarget/tgt p50 | rtarget/tgt p99 |"
    if spdk:
        head += " SPDK p50 µs | SPDK p99 µs | rtarget/SPDK p50 | rtarget/SPDK p99 |"
    print(head)
    print("|-----|-------|" + "---:|" * (10 if spdk else 6))
    names = {"c": "iscsi-load lat", "py": "qd1lat.py"}
    for (cfg, probe), per in data.items():
        m = {t: [statistics.median(x[k] for x in per.get(t, [(0, 0, 0)])) for k in (0, 1)]
             for t in ("tgt", "rtarget", "spdk")}
        r = lambda p, k: f"{m['rtarget'][k] / m[p][k]:.2f}x" if m[p][k] else "-"
        line = (f"| {cfg} | {names.get(probe, probe)} | {m['tgt'][0]:.1f} | {m['tgt'][1]:.1f} "
                f"| {m['rtarget'][0]:.1f} | {m['rtarget'][1]:.1f} | {r('tgt', 0)} | {r('tgt', 1)} |")
        if spdk:
            line += (f" {m['spdk'][0]:.1f} | {m['spdk'][1]:.1f} | {r('spdk', 0)} | {r('spdk', 1)} |"
                     if "spdk" in per else " - | - | - | - |")
        print(line)


def gen(path):
    """The load generator's own CPU µs per I/O, median per run kind and target: it must
    stay far below the targets' so the rows measure the targets."""
    data = {}
    for line in open(path):
        run, t, us = line.split()
        data.setdefault(run, {}).setdefault(t, []).append(float(us))
    print("| iscsi-load run | CPU µs/IO vs tgt | CPU µs/IO vs rtarget |")
    print("|----------------|---:|---:|")
    for run, per in data.items():
        m = {t: f"{statistics.median(per[t]):.2f}" if t in per else "-" for t in ("tgt", "rtarget")}
        print(f"| {run} | {m['tgt']} | {m['rtarget']} |")


def svg(out, title, sources):
    """Two bars per row: IOPS ratio and CPU-efficiency ratio (peer CPU/IO over
    rtarget's), both "higher is better", against a line at 1x."""
    bars = []
    for src in sources:
        path, _, peer = src.partition(":")
        for cfg, wl, pi, pc, ri, rc, _ in rows(path, peer or "tgt"):
            if pi is None and pc is None and peer == "spdk":
                continue    # SPDK serves only some configs
            label = f"{cfg} {wl} vs {PEER_NAMES.get(peer or 'tgt', peer)}"
            bars.append((label, ri / pi if pi and ri else 0, pc / rc if pc and rc else 0))
    top = max([4.0] + [max(b[1], b[2]) for b in bars])
    left, width, bar_h, row_h, head = 250, 420, 9, 26, 46
    scale = width / top
    height = head + row_h * len(bars) + 30
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" '
         f'height="{height}" font-family="sans-serif" font-size="11">',
         f'<rect width="100%" height="100%" fill="white"/>',
         f'<text x="8" y="16" font-size="13" font-weight="bold">{esc(title)}</text>',
         f'<rect x="8" y="26" width="10" height="8" fill="#3572b0"/>'
         f'<text x="22" y="34">IOPS rtarget / peer</text>',
         f'<rect x="160" y="26" width="10" height="8" fill="#e08a1e"/>'
         f'<text x="174" y="34">CPU per I/O: peer / rtarget (times less CPU)</text>']
    for x in range(0, int(top) + 1):
        gx = left + x * scale
        o.append(f'<line x1="{gx:.1f}" y1="{head - 4}" x2="{gx:.1f}" '
                 f'y2="{height - 24}" stroke="{"#000" if x == 1 else "#ddd"}"/>'
                 f'<text x="{gx:.1f}" y="{height - 10}" text-anchor="middle">{x}x</text>')
    for n, (label, r_iops, r_cpu) in enumerate(bars):
        y = head + n * row_h
        o.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{esc(label)}</text>')
        for k, (v, color) in enumerate(((r_iops, "#3572b0"), (r_cpu, "#e08a1e"))):
            by = y + 2 + k * (bar_h + 1)
            o.append(f'<rect x="{left}" y="{by}" width="{v * scale:.1f}" height="{bar_h}" '
                     f'fill="{color}"/><text x="{left + v * scale + 3:.1f}" y="{by + 8}" '
                     f'font-size="9">{v:.2f}</text>')
    o.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "table":
        table(sys.argv[2], *sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "lat":
        lat(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "svg":
        svg(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
