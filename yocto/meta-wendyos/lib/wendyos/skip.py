"""Reasons to skip a recipe, for SKIP_RECIPE[<pn>] = "${@...}".

Each function returns "" when the recipe can be built, or the message
bitbake shows when someone asks for the skipped recipe. Checking at parse
time turns a failure hours into a build (an old rustc, a wic image without
partition sizes) into one clear line up front.
"""

from wendyos import partitions


def _version_tuple(version):
    parts = []
    for part in version.rstrip("%").split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def rust_too_old(d):
    """Non-empty when RUSTVERSION is below WENDY_AGENT_RUST_MIN."""
    configured = d.getVar("RUSTVERSION") or ""
    needed = d.getVar("WENDY_AGENT_RUST_MIN") or ""
    if not configured or not needed:
        return ""
    if _version_tuple(configured) >= _version_tuple(needed):
        return ""
    return ("needs Rust >= %s but RUSTVERSION is %s; build on oe-core wrynose "
            "or later (docs/decisions/0040-yocto-rust-toolchain.md)"
            % (needed, configured))


def partition_sizes_missing(d):
    """Non-empty unless every partition size variable is a positive integer."""
    bad = []
    for var in partitions.size_vars(d):
        value = d.getVar(var) or ""
        if not value.isdigit() or int(value) <= 0:
            bad.append("%s=%r" % (var, value))
    if not bad:
        return ""
    return ("partition sizes not set (%s): build with board-configs/kas/<board>.yml, "
            "which sets them from board-configs/<board>.conf" % ", ".join(bad))
