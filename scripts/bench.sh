#!/usr/bin/env bash
# Benchmarks `banger vm run --rm -- true` against a plain QEMU invocation of
# the same kernel, initramfs and root file system; see docs/benchmarks.md.
# Extra arguments go to banger-bench (e.g. --runs 20).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
require_cargo
scripts/build.sh
cargo build --release --locked -p banger-bench
export BANGER_BIN_DIR="$PWD/target/banger"
exec target/release/banger-bench "$@"
