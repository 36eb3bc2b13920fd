#!/usr/bin/env bash
# scripts/fuzz.sh: build and run the cargo-fuzz targets in fuzz/ (see fuzz/README.md).
#
# usage: scripts/fuzz.sh [--smoke | --runs N | --cmin | SECONDS] [TARGET...]
#   SECONDS   each target for SECONDS (default 30); new inputs go to fuzz/corpus/<target>
#   --runs N  each target for N executions (the campaign in fuzz/RESULTS.md: 10000000)
#   --smoke   each target for FUZZ_SMOKE_SECS (default 10) over the committed corpus;
#             the corpus is only read (new inputs go to a temporary directory) — CI's step
#   --cmin    minimize each committed corpus in place (cargo fuzz cmin)
# One fuzzer at a time (a single process each), targets in `cargo fuzz list` order or
# as named. Exits non-zero as soon as a target crashes; the input is kept under
# fuzz/artifacts/. Each run ends with libFuzzer's "Done N runs in S second(s)" line.
#
# The build is optimized with debug assertions and overflow checks on (-O -a) and, by
# default, without AddressSanitizer (FUZZ_SANITIZER=none): the fuzzed code is safe Rust,
# where ASan finds nothing the bounds checks do not, and it runs 10-100x slower here.
# FUZZ_SANITIZER=address builds with it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=time secs=30 runs=0
case ${1:-} in
    --smoke) mode=smoke secs=${FUZZ_SMOKE_SECS:-10}; shift ;;
    --runs) mode=runs runs=$2; shift 2 ;;
    --cmin) mode=cmin; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) secs=$1; shift ;;
esac
[[ -d $HOME/.cargo/bin && :$PATH: != *:$HOME/.cargo/bin:* ]] && PATH=$HOME/.cargo/bin:$PATH
# Idempotent: a fresh machine pays one `cargo install` (about 2-3 minutes).
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$root/fuzz"
# RUSTC_BOOTSTRAP lets the stable toolchain take cargo-fuzz's -Z flags.
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}
san=${FUZZ_SANITIZER:-none}
build=(-O -a -s "$san")
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)

if [[ $mode == cmin ]]; then
    for t in "${targets[@]}"; do
        cargo fuzz cmin "${build[@]}" "$t" 2>&1 | tail -n 1
        echo "cmin: $t $(find "corpus/$t" -type f | wc -l) files, $(du -sk "corpus/$t" | cut -f1) KiB"
    done
    exit 0
fi

cargo fuzz build "${build[@]}"
bin=$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release
mkdir -p artifacts
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    args=(-timeout=10 -print_final_stats=1 "-artifact_prefix=artifacts/$t-")
    case $mode in
        smoke) dirs=("$scratch/$t" "corpus/$t"); mkdir -p "$scratch/$t"; args+=(-max_total_time="$secs") ;;
        runs) dirs=("corpus/$t"); args+=(-runs="$runs") ;;
        time) dirs=("corpus/$t"); args+=(-max_total_time="$secs") ;;
    esac
    echo "fuzz: $t ($mode)"
    rc=0
    "$bin/$t" "${dirs[@]}" "${args[@]}" >"$scratch/$t.log" 2>&1 || rc=$?
    if ((rc)); then
        tail -n 40 "$scratch/$t.log"
        echo "fuzz: $t FAILED (exit $rc); the input is under fuzz/artifacts/" >&2
        exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$scratch/$t.log" || tail -n 2 "$scratch/$t.log"
done
