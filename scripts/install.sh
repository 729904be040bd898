#!/usr/bin/env bash
# Installs what banger needs on a Debian 12 host, builds it, and installs the
# binaries into PREFIX/bin (default /usr/local).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install "${RUNTIME_PACKAGES[@]}"
scripts/build.sh
prefix=${PREFIX:-/usr/local}
as_root install -d "$prefix/bin"
as_root install -m 0755 target/banger/banger target/banger/bangerd target/banger/banger-root \
    target/banger/banger-agent "$prefix/bin/"
echo "» installed banger, bangerd, banger-root and banger-agent into $prefix/bin" >&2
