#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: run every cargo-fuzz target for SECONDS (default 30).
# Exits non-zero as soon as one target finds a crash (the input is kept under
# fuzz/artifacts/).
set -euo pipefail
secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}
for t in $(cargo fuzz list); do
    echo "fuzz: $t for ${secs}s"
    cargo fuzz run -O "$t" -- -max_total_time="$secs" 2>&1 | tail -n 2
done
