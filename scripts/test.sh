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
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --release -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# cargo prints one result line per test binary; add them up so the run ends
# with a single total.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "total: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
