#!/usr/bin/env bash
# Builds banger's binaries into target/banger/: banger, bangerd, the root
# helper banger-root, and banger-agent linked statically (it runs as /init in
# guests without a libc).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
require_cargo

profile=${BANGER_PROFILE:-release}
cargo build --profile "$profile" --locked -p banger -p bangerd -p banger-root
# An explicit --target keeps the static flag away from build scripts and
# proc macros, which must stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile "$profile" --locked -p banger-agent --target x86_64-unknown-linux-gnu

dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
out=target/banger
mkdir -p "$out"
install -m 0755 "target/$dir/banger" "target/$dir/bangerd" "target/$dir/banger-root" "$out/"
install -m 0755 "target/x86_64-unknown-linux-gnu/$dir/banger-agent" "$out/"
echo "» built banger, bangerd, banger-root and banger-agent in $out" >&2
