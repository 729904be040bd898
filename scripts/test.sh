#!/usr/bin/env bash
# Installs what the tests need, builds banger, and runs every test: unit
# tests, tests against real QEMU, and end-to-end tests that boot real guests.
#
# The guest kernel and image are built once per run into a shared cache
# (BANGER_TEST_CACHE, default target/test-cache) that every booting test uses.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install "${RUNTIME_PACKAGES[@]}" cpio unzip
require_cargo
# The Firecracker tests run the real binary; this fetches the checked v1.12.1.
scripts/install-firecracker.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/build.sh

export BANGER_BIN_DIR="$PWD/target/banger"
export BANGER_TEST_CACHE=${BANGER_TEST_CACHE:-$PWD/target/test-cache}
export BANGER_E2E=1
mkdir -p "$BANGER_TEST_CACHE"

# Debian's cloud kernel packages for the tests that read a real kernel.
export BANGER_TEST_KERNEL_DIR=${BANGER_TEST_KERNEL_DIR:-$PWD/target/test-kernel}
if ! ls "$BANGER_TEST_KERNEL_DIR"/linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1; then
    mkdir -p "$BANGER_TEST_KERNEL_DIR"
    meta=$(cd "$BANGER_TEST_KERNEL_DIR" && apt-get download linux-image-cloud-amd64 >/dev/null 2>&1 && ls linux-image-cloud-amd64_*.deb)
    kernel=$(dpkg-deb -f "$BANGER_TEST_KERNEL_DIR/$meta" Depends | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p')
    (cd "$BANGER_TEST_KERNEL_DIR" && apt-get download "$kernel" >/dev/null 2>&1)
fi
# One test thread at a time boots guests: two cores run one TCG guest well
# and two poorly.
log=$(mktemp)
# Tests that find a prerequisite missing return early and count as passed;
# banger-test-support appends one line per such skip to this file.
export BANGER_TEST_SKIP_LOG=$(mktemp)
trap 'rm -f "$log" "$BANGER_TEST_SKIP_LOG"' EXIT
set +e
cargo test --workspace --locked --release -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

if [ -s "$BANGER_TEST_SKIP_LOG" ]; then
    echo "skipped at run time:"
    sed 's/^/  /' "$BANGER_TEST_SKIP_LOG"
fi

# cargo prints one result line per test binary; add them up so the run ends
# with a single total. A test that skipped at run time moves from passed to
# skipped; a skipped check inside a test that ran does not.
runtime_skips=$(sed -n 's/^skipped test \([^ ]*\): .*/\1/p' "$BANGER_TEST_SKIP_LOG" | sort -u | wc -l)
awk -v runtime_skips="$runtime_skips" \
    '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "total: %d passed, %d failed, %d skipped\n", passed - runtime_skips, failed, ignored + runtime_skips }' "$log"
exit "$status"
