# shellcheck shell=bash
# Facts every script shares. Source it; never copy these values elsewhere.

# Repository root, whatever directory the caller runs from.
WENDY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export WENDY_ROOT

# Caches live outside the clone so fresh clones (CI) stay warm.
WENDY_CACHE="${WENDY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wendyos}"
export WENDY_CACHE
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WENDY_CACHE/target}"

# Build outputs (images, cross-built binaries) land here, git-ignored.
WENDY_BUILD="${WENDY_BUILD:-$WENDY_ROOT/build}"
export WENDY_BUILD

# The OpenSSL 3.5 peer: a Debian trixie chroot with openssl in it.
WENDY_OPENSSL_ROOT="${WENDY_OPENSSL_ROOT:-$WENDY_CACHE/openssl35-root}"
export WENDY_OPENSSL_ROOT

export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The release build of every host binary (wendy, pkicore, wendy-agent). The
# fast tier, the QEMU tier and the demo all use this one command: a `-p`
# build unifies dependency features differently and recompiles them.
build_host_release() {
    log "release build of every binary (nothing to do when up to date)"
    (cd "$WENDY_ROOT" && cargo build --release --workspace --locked)
}

# Load a board config: board-configs/<board>.conf. Sets BOARD_* variables.
load_board() {
    local board="$1" file="$WENDY_ROOT/board-configs/$1.conf"
    [ -f "$file" ] || die "unknown board '$board' (no $file)"
    # shellcheck source=/dev/null
    . "$file"
    [ "${BOARD_NAME:-}" = "$board" ] || die "$file sets BOARD_NAME='${BOARD_NAME:-}', expected '$board'"
}
