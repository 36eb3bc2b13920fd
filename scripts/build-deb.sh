#!/bin/bash
# scripts/build-deb.sh — build the Debian package target/debian/rtarget_*.deb with
# cargo-deb (metadata in crates/rtarget/Cargo.toml): the release binary, the
# systemd unit (crates/rtarget/debian/rtarget.service), the man page and the
# shell completions, generated here from the binary (`rtarget man`,
# `rtarget completions SHELL`).
#
# usage: scripts/build-deb.sh [--no-build]
#   --no-build   package the existing target/release/rtarget (scripts/test.sh
#                builds it in its build step)
# Installs cargo-deb (`cargo install cargo-deb --locked`, a few minutes, once per
# machine: it stays in ~/.cargo/bin) when it is missing. Prints the .deb's path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
[[ -d $HOME/.cargo/bin && :$PATH: != *:$HOME/.cargo/bin:* ]] && PATH=$HOME/.cargo/bin:$PATH

BUILD=1
[[ ${1:-} == --no-build ]] && BUILD=0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb (once per machine)" >&2
    cargo install cargo-deb --locked >&2
fi
((BUILD)) && cargo build --release -p rtarget >&2
BIN=target/release/rtarget
[[ -x $BIN ]] || { echo "build-deb: no $BIN (run without --no-build)" >&2; exit 1; }

# The generated assets live next to the binary (the paths Cargo.toml names).
ASSETS=target/release/deb-assets
rm -rf "$ASSETS" && mkdir -p "$ASSETS"
"$BIN" man | gzip -9n > "$ASSETS/rtarget.1.gz"
"$BIN" completions bash > "$ASSETS/rtarget.bash"
"$BIN" completions zsh > "$ASSETS/_rtarget"
"$BIN" completions fish > "$ASSETS/rtarget.fish"

# cargo deb prints the package's path on stdout.
# Debug info (the release profile keeps it, for backtraces) goes to a separate,
# compressed file under /usr/lib/debug: the binary itself is stripped.
cargo deb -p rtarget --no-build --separate-debug-symbols --compress-debug-symbols=zlib
