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

# The development code-signing CA (scripts/dev-codesign-ca): its key and
# certificate, generated once; development images trust it for RAUC bundles.
# Tests point it elsewhere for a CA the images do not trust.
WENDY_CODESIGN_DEV_DIR="${WENDY_CODESIGN_DEV_DIR:-$WENDY_CACHE/codesign-dev}"
export WENDY_CODESIGN_DEV_DIR

# The venv of the published-protocol client (tests/compat), made by scripts/setup.
WENDY_PYCLIENT_VENV="${WENDY_PYCLIENT_VENV:-$WENDY_CACHE/pyclient-venv}"
export WENDY_PYCLIENT_VENV

# The published WendyOS protocol (Proto/ of the wendyos-proto reference),
# which the conformance and published-client tests compare against. It is
# never copied into the repository: it sits beside the checkout
# (../shared/reference/wendyos-proto), and scripts/setup keeps a snapshot in
# the cache so that clones elsewhere (CI) find it too.
WENDY_PROTO_SNAPSHOT="$WENDY_CACHE/reference/wendyos-proto"
if [ -z "${WENDY_PROTO_REFERENCE:-}" ]; then
    if [ -d "$WENDY_ROOT/../shared/reference/wendyos-proto/Proto" ]; then
        WENDY_PROTO_REFERENCE="$(cd "$WENDY_ROOT/../shared/reference/wendyos-proto/Proto" && pwd)"
    else
        WENDY_PROTO_REFERENCE="$WENDY_PROTO_SNAPSHOT/Proto"
    fi
fi
export WENDY_PROTO_REFERENCE

export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A line for the test summary scripts/test prints at its end (the file
# $WENDY_TEST_SUMMARY, which it sets); logged as well.
summary() {
    log "$*"
    [ -z "${WENDY_TEST_SUMMARY:-}" ] || printf '%s\n' "$*" >>"$WENDY_TEST_SUMMARY"
}

# A Python venv with exactly the given pinned PyPI packages (tools the
# checks run: oelint-adv and kas, ruff). Reinstalled when the list changes.
#   ensure_venv <dir> <package==version>...
ensure_venv() {
    local venv="$1" stamp="$1/.installed"
    shift
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$*" ]; then
        return 0
    fi
    log "installing $* into $venv (PyPI)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$*" >"$stamp"
}

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
