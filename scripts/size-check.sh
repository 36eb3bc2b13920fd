#!/bin/bash
# scripts/size-check.sh — issue 11's size rule: every .rs module of the workspace under 800
# lines, and no function over 120 lines in the non-test code of the fabric and management
# crates (iscsi, vhost, manage, rtarget; integration tests under tests/ are scenarios and
# examples/ are benchmark drivers: both exempt).  Large files are hard to review and large functions hide state machines; this
# keeps both from creeping back.  A heuristic, not a parser: a function starts at a line
# whose first token (after visibility/qualifiers) is `fn`, and ends where the brace depth
# returns to where it started (braces inside strings and char literals are counted too,
# which is close enough for this code).  Prints each offender; exit 1 if any.
# usage: scripts/size-check.sh [CRATE_DIR...]   (both rules on these directories only)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
MAX_FILE=${MAX_FILE:-800} MAX_FN=${MAX_FN:-120}
FILE_DIRS=("$@") FN_DIRS=("$@")
((${#FILE_DIRS[@]})) || { FILE_DIRS=(crates); FN_DIRS=(crates/iscsi crates/vhost crates/manage crates/rtarget); }
# Known offenders, reported but not failing (none today; a file listed here needs a note
# saying why and when it is split).
KNOWN=" "
bad=0
while IFS= read -r f; do
    n=$(wc -l <"$f")
    if ((n > MAX_FILE)) && [[ $KNOWN == *" $f "* ]]; then
        echo "file $f: $n lines (max $MAX_FILE; known, not failing)"
    elif ((n > MAX_FILE)); then echo "file $f: $n lines (max $MAX_FILE)"; bad=1; fi
done < <(find "${FILE_DIRS[@]}" -name '*.rs' -not -path '*/target/*' | sort)
while IFS= read -r f; do
    [[ $f == */tests/* || $f == */examples/* ]] && continue
    out=$(awk -v max="$MAX_FN" -v file="$f" '
        function count(s,   t, o, c) { t = s; o = gsub(/\{/, "", t); t = s; c = gsub(/\}/, "", t); return o - c }
        {
            line = $0
            sub(/\/\/.*$/, "", line)          # line comments
            if (!infn && line ~ /^[ \t]*((pub(\([a-z:_ ]+\))?|const|async|unsafe|extern "C"|default)[ \t]+)*fn[ \t]+[A-Za-z_]/) {
                name = line; sub(/^.*fn[ \t]+/, "", name); sub(/[^A-Za-z0-9_].*$/, "", name)
                infn = 1; start = NR; depth = 0; opened = 0
            }
            if (infn) {
                d = count(line); depth += d
                if (line ~ /\{/) opened = 1
                if (!opened && line ~ /;[ \t]*$/) { infn = 0; next }   # declaration without body
                if (opened && depth <= 0) {
                    len = NR - start + 1
                    if (len > max) printf "fn   %s:%d %s: %d lines (max %d)\n", file, start, name, len, max
                    infn = 0
                }
            }
        }' "$f")
    if [[ -n $out ]]; then echo "$out"; bad=1; fi
done < <(find "${FN_DIRS[@]}" -name '*.rs' -not -path '*/target/*' | sort)
((bad)) && { echo "size-check: offenders above (split the module or the function)"; exit 1; }
echo "size-check: ok"
