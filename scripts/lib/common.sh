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

# The venv of the published-protocol client (tests/compat), made by scripts/setup.
WENDY_PYCLIENT_VENV="${WENDY_PYCLIENT_VENV:-$WENDY_CACHE/pyclient-venv}"
export WENDY_PYCLIENT_VENV

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

# A Python venv at $1 with the pinned requirements file $2, rebuilt when the
# file changes (its hash is kept in the venv).
make_venv() {
    local venv="$1" req="$2" stamp
    stamp="$(sha256sum "$req" | cut -d' ' -f1)"
    [ "$(cat "$venv/.wendy-requirements" 2>/dev/null)" = "$stamp" ] && return 0
    log "creating the Python venv $venv from ${req#"$WENDY_ROOT"/}"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$stamp" >"$venv/.wendy-requirements"
}
