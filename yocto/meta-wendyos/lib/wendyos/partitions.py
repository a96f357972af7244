"""The disk layout, from the repository's image/partitions.conf.

image/partitions.conf is the one definition of the GPT layout for both image
builders: labels, file systems, types and order, and which board-config key
holds each size. This module turns it into wic `part` lines for
files/wic/wendyos-ab.wks.in; the sizes themselves reach bitbake as
WENDYOS_PART_*_MIB (scripts/gen-kas writes them into the kas local.conf from
the BOARD_PART_*_MIB keys named in the file).
"""

import os

# GPT partition types by the names image/partitions.conf uses.
GPT_TYPES = {
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "msdata": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
}
# "root": the Discoverable Partitions root type of the target architecture.
ROOT_TYPES = {
    "aarch64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    "arm": "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
    "x86_64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
}


def conf_path(d):
    return os.path.join(d.getVar("WENDYOS_SRC_DIR"), "image", "partitions.conf")


def read(d):
    """[(label, fs, type, size_key, content)] in disk order."""
    import bb.parse

    path = conf_path(d)
    # Re-parse the image recipe whenever the layout changes.
    bb.parse.mark_dependency(d, path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 5:
                raise ValueError("%s:%d: expected 'label fs type size content'" % (path, lineno))
            rows.append(tuple(fields))
    return rows


def size_var(size_key):
    """BOARD_PART_DATA_MIB (board-configs) -> WENDYOS_PART_DATA_MIB (bitbake)."""
    if not size_key.startswith("BOARD_"):
        raise ValueError("partition size key %s does not start with BOARD_" % size_key)
    return "WENDYOS_" + size_key[len("BOARD_"):]


def size_vars(d):
    return [size_var(row[3]) for row in read(d)]


def _gpt_type(d, name):
    if name == "root":
        arch = d.getVar("TARGET_ARCH")
        if arch not in ROOT_TYPES:
            raise ValueError("no Discoverable Partitions root type known for %s" % arch)
        return ROOT_TYPES[arch]
    if name not in GPT_TYPES:
        raise ValueError("image/partitions.conf: unknown partition type %s" % name)
    return GPT_TYPES[name]


def wks_lines(d):
    """The wic `part` lines for every partition, in disk order."""
    lines = []
    for label, fs, gpt_type, size_key, content in read(d):
        if content == "boot":
            # Boot loader/firmware: per boot method (wendyos-boot-*.inc).
            source = d.getVar("WENDYOS_WKS_BOOT_ARGS")
        elif content == "rootfs":
            # /data goes to the data partition; /data stays as a mount point.
            source = "/ --source rootfs --use-uuid --exclude-path data/"
        elif content == "data":
            # The rootfs's /data (wendy-agent/ made at build time, see
            # wendyos-rootfs), with owners from the image's pseudo database.
            source = "--source rootfs --change-directory=data"
        elif content in ("config", "empty"):
            source = ""  # an empty file system of the given type
        else:
            raise ValueError("image/partitions.conf: unknown content %s" % content)
        # FAT labels as the Debian builder writes them (upper case, no '-').
        fs_label = label.upper().replace("-", "_") if fs == "vfat" else label
        lines.append(
            "part %s --fstype=%s --label %s --part-name %s --part-type %s "
            "--align 1024 --fixed-size ${%s}M"
            % (source, fs, fs_label, label, _gpt_type(d, gpt_type), size_var(size_key))
        )
    return "\n".join(" ".join(line.split()) for line in lines)
