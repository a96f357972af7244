"""RAUC facts from the repository's image/rauc templates.

image/rauc/system-*.conf.in is the one definition of the device's RAUC
configuration for both image builders; rauc-conf.bbappend renders the board's
template (WENDYOS_RAUC_SYSTEM_CONF) into /etc/rauc/system.conf. A bundle is
installed only where its compatible equals the device's, so the bundle recipe
takes its compatible from the same template instead of repeating it.
"""

import os


def template_path(d):
    name = d.getVar("WENDYOS_RAUC_SYSTEM_CONF")
    if not name:
        raise ValueError("WENDYOS_RAUC_SYSTEM_CONF is not set (conf/distro/include/wendyos-boot-*.inc)")
    return os.path.join(d.getVar("WENDYOS_SRC_DIR"), "image", "rauc", name)


def compatible(d):
    """[system] compatible= of the board's system.conf, @BOARD@ filled in."""
    import bb.parse

    path = template_path(d)
    # Re-parse the recipe whenever the template changes.
    bb.parse.mark_dependency(d, path)
    section = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            if section == "system" and sep and key.strip() == "compatible":
                value = value.strip().replace("@BOARD@", d.getVar("WENDYOS_BOARD"))
                if "@" in value:
                    raise ValueError("%s:%d: compatible has a placeholder other than @BOARD@" % (path, lineno))
                return value
    raise ValueError("%s has no [system] compatible=" % path)
