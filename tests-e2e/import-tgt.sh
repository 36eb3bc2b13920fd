#!/bin/bash
# tests-e2e/import-tgt.sh — `rtarget import-tgt` against tgt itself: one
# targets.conf (two open targets with file backing stores, one with an explicit
# LUN number and write-cache off, one target limited to an initiator name,
# tgt-only options) is loaded into a real tgtd with tgt-admin and converted with
# `rtarget import-tgt`; libiscsi's iscsi-ls must then see the same targets, LUN
# numbers and sizes on both (tgt's LUN 0 controller aside), as the allowed
# initiator and, but for the ACL'd target, as another one, and data written through tgt reads back
# through rtarget. The release binary (RTARGET_BIN) is used.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
need tgtd tgtadm tgt-admin iscsi-ls qemu-io python3
W=$(mktemp -d)
cleanup() { stop_rtarget >/dev/null 2>&1; stop_tgt; rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL import-tgt.sh: $*"; exit 1; }

truncate -s 16M "$W/a.img"; truncate -s 8M "$W/b.img"; truncate -s 4M "$W/c.img"
ALLOWED=iqn.2026-11.org.example:allowed
cat >"$W/targets.conf" <<CONF
default-driver iscsi
<target iqn.2026-11.org.example:open>
    <backing-store $W/a.img>
    </backing-store>
    <backing-store $W/b.img>
        lun 4
        write-cache off
    </backing-store>
    vendor_id ACME
</target>
<target iqn.2026-11.org.example:acl>
    backing-store $W/c.img
    initiator-name $ALLOWED
</target>
CONF

TPORT=$(free_port)
start_tgt "$W/tgt" "$TPORT" || fail "tgtd did not start"
tgt-admin -C "$TGT_CTL" -c "$W/targets.conf" -e >"$W/tgt-admin.log" 2>&1 || { cat "$W/tgt-admin.log"; fail "tgt-admin -e"; }

RPORT=$(free_port)
"$RTARGET_BIN" import-tgt "$W/targets.conf" -o "$W/saveconfig.json" --portal "127.0.0.1:$RPORT" 2>"$W/import.err" ||
    { cat "$W/import.err"; fail "import-tgt"; }
grep -q "not carried over: vendor_id ACME" "$W/import.err" || { cat "$W/import.err"; fail "vendor_id not listed"; }
grep -q "acl: only the initiator-name(s) may log in" "$W/import.err" || { cat "$W/import.err"; fail "the ACL note is missing"; }
start_rtarget "$W/rt" "$RPORT" "$W/saveconfig.json" || fail "rtarget did not start on the imported config"

# "TARGET LUN SIZE" lines that INITIATOR sees at PORT (tgt's controller LUN 0 left out).
view() {
    timeout 30 iscsi-ls -s -i "$2" "iscsi://127.0.0.1:$1" 2>&1 | python3 -c '
import re, sys
target = None
for line in sys.stdin:
    m = re.match(r"Target:(\S+)", line)
    if m:
        target = m.group(1)
    m = re.search(r"Lun:(\d+)\s+Type:(\S+)\s+\(Size:(\S+)\)", line)
    if m and m.group(2) == "DIRECT_ACCESS":
        print(target, m.group(1), m.group(3))
' | sort
}
# tgt-admin binds ALL next to an initiator-name without initiator-address, so
# under tgt any initiator gets in; the import keeps the name as an ACL (it says
# so): another initiator sees the acl target on tgt only.
for who in "$ALLOWED" iqn.2026-11.org.example:other; do
    tgt_view=$(view "$TPORT" "$who") rt_view=$(view "$RPORT" "$who")
    [[ -n $tgt_view ]] || fail "iscsi-ls sees nothing on tgt as $who"
    [[ $who == "$ALLOWED" ]] || tgt_view=$(grep -v "^iqn.2026-11.org.example:acl " <<<"$tgt_view")
    [[ $tgt_view == "$rt_view" ]] || fail "as $who: tgt sees
$tgt_view
rtarget sees
$rt_view"
    log "as $who: $(echo "$tgt_view" | tr '\n' ';')"
done

# Same files: a pattern written through tgt reads back through rtarget.
qemu-io -f raw -c "write -P 0x5c 0 1M" "iscsi://127.0.0.1:$TPORT/iqn.2026-11.org.example:open/4" >/dev/null ||
    fail "write through tgt"
out=$(qemu-io -f raw -c "read -P 0x5c 0 1M" "iscsi://127.0.0.1:$RPORT/iqn.2026-11.org.example:open/4")
[[ $out != *"Pattern verification failed"* && $out == *"read 1048576/1048576"* ]] || fail "read through rtarget: $out"
stop_rtarget || fail "rtarget did not stop cleanly"
if panics_in "$W/rt/rtarget.log"; then fail "rtarget panicked"; fi
echo "PASS import-tgt.sh: tgt and the imported rtarget configuration show the same targets, LUNs and data"
