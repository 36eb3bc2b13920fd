#!/bin/bash
# tests-e2e/deb.sh — the Debian package as an admin meets it: build it
# (scripts/build-deb.sh: cargo-deb, installed once per machine if missing),
# `dpkg -i` it, check what it installed (binary, `rtarget --help`, the man page,
# bash completions that load, the systemd unit), run the unit's ExecStart line
# with NOTIFY_SOCKET set (systemctl does not run here) and check READY=1 arrives
# once the portal accepts, that SIGHUP (ExecReload) answers READY=1 again and
# SIGTERM stops it cleanly; then `dpkg -r`.
# The ExecStart line runs with its system paths (/etc/rtarget, /var/lib/rtarget,
# /run/rtarget) moved into a temporary directory and `--listen` on a free port, so
# the machine's own configuration and port 3260 are never touched.
# DEB_NO_BUILD=1 packages the existing release binary instead of building it.
# Needs root (dpkg). Refuses to run when an rtarget package is already installed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need dpkg dpkg-deb python3 gzip
if ((EUID != 0)); then
    if in_ci; then echo "FAIL deb.sh: needs root (dpkg -i)"; exit 1; fi
    echo "SKIP deb.sh: needs root (dpkg -i)"; exit 0
fi
if dpkg-query -W -f='${Status}' rtarget 2>/dev/null | grep -q "install ok installed"; then
    echo "FAIL deb.sh: an rtarget package is installed already; not replacing it"; exit 1
fi

T0=$SECONDS
TMP=$(mktemp -d)
INSTALLED=0
# The package keeps /etc/rtarget and /var/lib/rtarget (they may hold an admin's
# targets); the test removes them only if it made them and they stayed empty.
MADE=()
for d in /etc/rtarget /var/lib/rtarget; do [[ -e $d ]] || MADE+=("$d"); done
cleanup() {
    ((INSTALLED)) && dpkg -r rtarget >/dev/null 2>&1 || true
    dpkg -P rtarget >/dev/null 2>&1 || true
    for d in "${MADE[@]}"; do rmdir "$d" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# DEB_NO_BUILD=1 (scripts/test.sh, after its release build): package that binary.
DEB=$(bash "$REPO/scripts/build-deb.sh" ${DEB_NO_BUILD:+--no-build} | tail -n 1)
[[ -f $DEB ]] || { echo "FAIL deb.sh: build-deb.sh printed no package path (got: $DEB)"; exit 1; }
log "deb.sh: built $DEB in $((SECONDS - T0))s"
[[ $(dpkg-deb -f "$DEB" Package) == rtarget ]] || { echo "FAIL deb.sh: $DEB is not an rtarget package"; exit 1; }

dpkg -i "$DEB" >&2
INSTALLED=1
fail() { echo "FAIL deb.sh: $*"; exit 1; }
[[ -x /usr/bin/rtarget ]] || fail "/usr/bin/rtarget missing"
[[ $(/usr/bin/rtarget --help) == *"Run the target daemon"* ]] || fail "rtarget --help"
[[ -d /etc/rtarget && -d /var/lib/rtarget ]] || fail "the config and state directories were not created"
MAN=/usr/share/man/man1/rtarget.1.gz
[[ -f $MAN ]] || fail "no man page"
if command -v man >/dev/null; then
    [[ $(man -P cat rtarget 2>/dev/null) == *MANAGEMENT* ]] || fail "man rtarget shows no MANAGEMENT section"
else
    [[ $(zcat "$MAN") == *".SH MANAGEMENT"* ]] || fail "the man page has no MANAGEMENT section"
fi
# shellcheck disable=SC2016
[[ $(bash -c 'source /usr/share/bash-completion/completions/rtarget && complete -p rtarget') == *_rtarget* ]] ||
    fail "the bash completions do not load"
UNIT=$(dpkg -L rtarget | grep '/rtarget\.service$' | head -n 1)
[[ -n $UNIT && -f $UNIT ]] || fail "no systemd unit installed"
grep -q '^Type=notify$' "$UNIT" || fail "the unit is not Type=notify"
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$UNIT" 2>&1 | grep -v -e 'Failed to .* bus' -e 'No such file or directory' || true)
    [[ -z $out ]] || fail "systemd-analyze verify: $out"
fi

# The unit's ExecStart, with the system paths moved into $TMP.
EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
EXEC=${EXEC//\/etc\/rtarget/$TMP\/etc}
EXEC=${EXEC//\/var\/lib\/rtarget/$TMP\/state}
EXEC=${EXEC//\/run\/rtarget/$TMP\/run}
mkdir -p "$TMP/etc" "$TMP/state" "$TMP/run"
PORT=$(free_port)
log "deb.sh: running ExecStart: $EXEC --listen 127.0.0.1:$PORT"
# shellcheck disable=SC2086  # ExecStart is split into words as systemd does (no quotes in it)
python3 - "$TMP/notify" "$PORT" $EXEC --listen "127.0.0.1:$PORT" <<'PY'
import os, signal, socket, subprocess, sys, time
path, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
log = open(os.path.join(os.path.dirname(path), "daemon.log"), "w")
d = subprocess.Popen(argv, env=dict(os.environ, NOTIFY_SOCKET=path), stderr=log)

def wait_for(line, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        if line in msg.splitlines():
            return msg
    d.kill()
    sys.exit(f"FAIL deb.sh: no {line} notification; log:\n" + open(log.name).read())

wait_for("READY=1")
try:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
except OSError as e:
    d.kill()
    sys.exit(f"FAIL deb.sh: READY=1 but port {port} does not accept: {e}")
d.send_signal(signal.SIGHUP)
wait_for("RELOADING=1")
msg = wait_for("READY=1")
if "STATUS=reloaded" not in msg:
    d.kill()
    sys.exit(f"FAIL deb.sh: the reload failed: {msg}")
d.send_signal(signal.SIGTERM)
wait_for("STOPPING=1")
rc = d.wait(timeout=30)
if rc != 0:
    sys.exit(f"FAIL deb.sh: the daemon exited with {rc}; log:\n" + open(log.name).read())
PY
if panics_in "$TMP/daemon.log"; then fail "the daemon panicked"; fi
[[ -s $TMP/etc/saveconfig.json ]] || fail "the demo config was not saved in the config directory"

dpkg -r rtarget >&2
INSTALLED=0
[[ ! -e /usr/bin/rtarget ]] || fail "dpkg -r left /usr/bin/rtarget"
echo "PASS deb.sh: built, installed, READY via NOTIFY_SOCKET, reloaded, stopped, removed in $((SECONDS - T0))s"
