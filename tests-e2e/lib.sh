# shellcheck shell=bash
# tests-e2e/lib.sh — shared helpers for the end-to-end, conformance, guest and
# benchmark scripts: repository paths, free ports, and starting/stopping one
# rtarget daemon or one tgtd (Debian's userspace target, our reference) on
# 127.0.0.1.  Only processes started here are ever stopped, by PID.
# Source it; it does not change shell options.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$E2E_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$E2E_DIR/.." && pwd))
# shellcheck disable=SC2034  # used by the scripts that source this file
# Shared tools (guest builder, cuscore.py) live next to the repository checkout.
TOOLS=${RTARGET_TOOLS:-$REPO/../shared/tools}
RTARGET_BIN=${RTARGET_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/rtarget}
# Guests (shared/tools/guest/run-guest.sh) boot with no_timer_check: on a loaded
# host the TCG-emulated IO-APIC timer check can panic the kernel at boot.
export KAPPEND=${KAPPEND:-no_timer_check}
# shellcheck disable=SC2034
DEMO_IQN=iqn.2026-11.org.rtarget:demo

log() { printf '%s\n' "$*" >&2; }

# in_ci: true when CI is set and not "", 0, false or no (.ci/run sets CI=true).
in_ci() { case ${CI:-} in '' | 0 | false | no) return 1 ;; *) return 0 ;; esac; }

# need TOOL...: the one way a script gives up for want of a tool.  Returns when
# every TOOL is on PATH; otherwise prints which are missing and EXITS the script:
# status 0 after a "SKIP" line locally, status 1 after a "FAIL" line when in_ci
# (there scripts/install-deps.sh installed everything, so a missing tool is a
# broken machine, and a script that ran nothing must not pass).
need() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    ((${#missing[@]} == 0)) && return 0
    if in_ci; then
        echo "FAIL $(basename "$0"): ${missing[*]} not installed (CI=true: a missing tool is a failure)"
        exit 1
    fi
    echo "SKIP $(basename "$0"): ${missing[*]} not installed"
    exit 0
}

# panics_in LOG...: print the daemon log lines that report a Rust panic, each with
# the line after it (the message); status 0 when there are some.  A panic in a
# connection or pool thread does not stop the daemon, so it must be looked for.
panics_in() {
    local out
    out=$(grep -h -A1 -E 'panicked at|^rtarget: [0-9]+ panic' "$@" 2>/dev/null | grep -v '^--$' | head -n 20)
    [[ -n $out ]] && printf '%s\n' "$out"
}

# rt_panics [SOCKET]: the running daemon's panic count (API "ping"; default
# RT_SOCK), or "?" when the API does not answer.
rt_panics() {
    python3 - "${1:-$RT_SOCK}" <<'EOF' 2>/dev/null || echo "?"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b'{"op":"ping"}\n')
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
print(json.loads(buf)["panics"])
EOF
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on (13300-13999,
# the range reserved for hand-started test servers on the dev machines;
# PORT_RANGE=LO-HI narrows it, so runs side by side never pick the same port).
free_port() {
    PORT_RANGE=${PORT_RANGE:-13300-13999} python3 - <<'EOF'
import os, random, socket
lo, hi = map(int, os.environ["PORT_RANGE"].split("-"))
ports = list(range(lo, hi + 1)); random.shuffle(ports)
for p in ports:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
EOF
}

# ceph_up DIR LOG [CONF]: a throw-away single-node Ceph in DIR ($TOOLS/ceph/
# ceph-up.sh, its output in LOG) on two distinct free monitor ports (MON_PORT and
# MON_PORT_V1 when set). ceph.conf gets CONF ('[osd]\nkey = value') after the
# monitor's setting that lets it start on a nearly full disk (its default refuses
# under 5 % free). Other ceph-up.sh knobs (WITH_MGR=1) pass through the environment.
ceph_up() {
    local dir=$1 log=$2 extra=${3:-} mp mp1
    mp=${MON_PORT:-$(free_port)} mp1=${MON_PORT_V1:-$(free_port)}
    while [[ $mp1 == "$mp" ]]; do mp1=$(free_port); done
    MON_PORT=$mp MON_PORT_V1=$mp1 SKIP_SMOKE=1 \
        EXTRA_CONF="[mon]\nmon_data_avail_crit = -1${extra:+\n$extra}" \
        bash "$TOOLS/ceph/ceph-up.sh" "$dir" >"$log" 2>&1
}

# wait_port PORT [SECONDS]: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
    local i
    for ((i = 0; i < ${2:-10} * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# mkconfig OUT PORT IQN LUNSPEC...: write an rtslib-fb saveconfig.json with one
# iSCSI target (tpg 1, open ACLs) whose LUNs are the LUNSPECs, in order:
#   fileio:NAME:PATH:SIZE[:attr=val,...]   ramdisk:NAME::SIZE[:attr=val,...]
# Sizes take K/M/G suffixes.  Attributes go into the storage object's
# "attributes" (e.g. block_size=4096,emulate_tpu=1); "ro=1" sets the TPG's
# demo_mode_write_protect instead.
mkconfig() {
    python3 "$E2E_DIR/mkconfig.py" "$@"
}

# start_rtarget DIR PORT [CONFIG]: start the daemon with state dir DIR on
# 127.0.0.1:PORT (config DIR/saveconfig.json unless CONFIG is given; missing =
# demo target), its API on DIR/api.sock (never the system-wide socket).  Sets
# RT_PID, RT_LOG and RT_SOCK; waits for "rtarget: listening on".  The log of an
# earlier start in DIR is appended to DIR/rtarget.log.old (panics_in reads both).
start_rtarget() {
    local dir=$1 port=$2 cfg=${3:-$1/saveconfig.json} i
    [[ -x $RTARGET_BIN ]] || { log "no rtarget binary at $RTARGET_BIN (cargo build --release -p rtarget)"; return 1; }
    mkdir -p "$dir"; RT_LOG=$dir/rtarget.log RT_SOCK=$dir/api.sock
    if [[ -s $RT_LOG ]]; then cat "$RT_LOG" >>"$dir/rtarget.log.old"; fi
    "$RTARGET_BIN" serve --listen "127.0.0.1:$port" --config "$cfg" --state-dir "$dir" \
        --socket "$RT_SOCK" >"$RT_LOG" 2>&1 &
    RT_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -q "rtarget: listening on" "$RT_LOG" 2>/dev/null && return 0
        kill -0 "$RT_PID" 2>/dev/null || { log "rtarget exited at start:"; tail -20 "$RT_LOG" >&2; RT_PID=; return 1; }
        sleep 0.1
    done
    log "rtarget did not report listening within 10 s:"; tail -20 "$RT_LOG" >&2
    return 1
}

# stop_rtarget [SECONDS]: SIGTERM, wait up to SECONDS (default 5), then SIGKILL.
# Returns the daemon's exit status (137 when it had to be killed).
stop_rtarget() {
    local pid=${RT_PID:-} i rc=0
    [[ -n $pid ]] || return 0
    RT_PID=
    kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return $?; }
    for ((i = 0; i < ${1:-5} * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
        sleep 0.1
    done
    log "rtarget pid $pid ignored SIGTERM for ${1:-5} s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

# --- tgt -------------------------------------------------------------------
# tgtd gets its own control port (derived from the iSCSI port) so that a tgtd
# already running on the host (control port 0) is never touched.
# start_tgt DIR PORT: start tgtd on 127.0.0.1:PORT; sets TGT_PID TGT_CTL TGT_LOG.
start_tgt() {
    local dir=$1 port=$2 i
    mkdir -p "$dir"; TGT_LOG=$dir/tgtd.log TGT_CTL=$((port - 13000 + 100))
    tgtd -f -C "$TGT_CTL" --iscsi portal="127.0.0.1:$port" >"$TGT_LOG" 2>&1 &
    TGT_PID=$!
    for ((i = 0; i < 100; i++)); do
        tgtadm -C "$TGT_CTL" --op show --mode sys >/dev/null 2>&1 && return 0
        kill -0 "$TGT_PID" 2>/dev/null || { log "tgtd exited:"; cat "$TGT_LOG" >&2; TGT_PID=; return 1; }
        sleep 0.1
    done
    log "tgtd control port $TGT_CTL not answering"; return 1
}

# tgt_target TID IQN: create a target open to all initiators.
tgt_target() {
    tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode target --tid "$1" -T "$2" &&
        tgtadm -C "$TGT_CTL" --lld iscsi --op bind --mode target --tid "$1" -I ALL
}

# tgt_lun TID LUN PATH [BSTYPE]: add a LUN (tgt's LUN 0 is its controller LU,
# so data LUNs start at 1).
tgt_lun() {
    tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode logicalunit --tid "$1" --lun "$2" \
        -b "$3" ${4:+--bstype "$4"}
}

# stop_tgt: tgtd ignores SIGTERM while it has targets: delete them, then the system.
stop_tgt() {
    local pid=${TGT_PID:-} tid i
    [[ -n $pid ]] || return 0
    TGT_PID=
    for tid in $(tgtadm -C "$TGT_CTL" --lld iscsi --op show --mode target 2>/dev/null |
                 sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
        tgtadm -C "$TGT_CTL" --lld iscsi --op delete --mode target --tid "$tid" --force >/dev/null 2>&1
    done
    tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1 || kill "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    return 0
}

# set_tpg_attributes SAVECONFIG K=V[,K=V...]: set integer TPG attributes (e.g.
# busy_poll_us=50) on every TPG of a saveconfig.json (bench.sh, ab.sh).
set_tpg_attributes() {
    python3 - "$1" "$2" <<'PY'
import json, sys
path, attrs = sys.argv[1], dict(kv.split("=", 1) for kv in sys.argv[2].split(","))
cfg = json.load(open(path))
for t in cfg["targets"]:
    for tpg in t["tpgs"]:
        tpg.setdefault("attributes", {}).update({k: int(v) for k, v in attrs.items()})
json.dump(cfg, open(path, "w"), indent=2)
PY
}
