# Shared helpers for banger's scripts; sourced, not run.

# Runs a command as root: directly when already root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not installed" >&2
        return 1
    fi
}

# Installs Debian packages that are missing; no-op when all are present.
apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$package")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "» installing ${missing[*]}" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Packages banger needs at run time: QEMU, mmdebstrap for images, e2fsprogs
# for ext4 files, apt for `kernel pull`, nftables and iproute2 for networking.
RUNTIME_PACKAGES=(qemu-system-x86 mmdebstrap e2fsprogs apt ca-certificates nftables iproute2)

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install the Rust toolchain with rustup (https://rustup.rs)" >&2
        return 1
    fi
}
