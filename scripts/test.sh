#!/usr/bin/env bash
# Installs what the tests need, builds banger, and runs every test: unit
# tests, tests against real QEMU, and end-to-end tests that boot real guests.
#
# The guest kernel and image are built once per run into a shared cache
# (BANGER_TEST_CACHE, default target/test-cache) that every booting test uses.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install "${RUNTIME_PACKAGES[@]}" cpio
require_cargo

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/build.sh

export BANGER_BIN_DIR="$PWD/target/banger"
export BANGER_TEST_CACHE=${BANGER_TEST_CACHE:-$PWD/target/test-cache}
export BANGER_E2E=1
mkdir -p "$BANGER_TEST_CACHE"
# One test thread at a time boots guests: two cores run one TCG guest well
# and two poorly.
cargo test --workspace --locked --release -- --test-threads=1
