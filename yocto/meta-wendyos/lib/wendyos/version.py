"""The WendyOS version: one definition, the Cargo workspace version.

`[workspace.package] version` in the repository's Cargo.toml is the version
of the agent, the CLI and the OS image. The distro (DISTRO_VERSION) and the
wendy-agent recipe (PV) read it from there instead of repeating it.
"""

import functools
import os
import re


@functools.lru_cache(maxsize=None)
def _read_workspace_version(cargo_toml):
    section = None
    with open(cargo_toml, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            header = re.fullmatch(r"\[([^\[\]]+)\]", line)
            if header:
                section = header.group(1).strip()
                continue
            if section == "workspace.package":
                m = re.fullmatch(r'version\s*=\s*"([^"]+)"', line)
                if m:
                    return m.group(1)
    raise ValueError("%s has no [workspace.package] version" % cargo_toml)


def workspace_version(d):
    """Version from ${WENDYOS_SRC_DIR}/Cargo.toml ([workspace.package])."""
    cargo_toml = os.path.join(d.getVar("WENDYOS_SRC_DIR"), "Cargo.toml")
    return _read_workspace_version(cargo_toml)
