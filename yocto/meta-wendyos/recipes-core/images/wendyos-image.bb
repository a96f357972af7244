SUMMARY = "WendyOS device image"
DESCRIPTION = "systemd, Avahi and wendy-agent on the A/B partition layout, \
               as a wic disk image with a block map for bmaptool."
HOMEPAGE = "https://example.invalid/wendyos"
LICENSE = "MIT"

inherit core-image

# The Yocto counterpart of image/packages.txt (the Debian manifest).
IMAGE_INSTALL = "\
    packagegroup-core-boot \
    ${CORE_IMAGE_EXTRA_INSTALL} \
    avahi-daemon \
    ca-certificates \
    dbus \
    dosfstools \
    e2fsprogs-e2fsck \
    e2fsprogs-mke2fs \
    e2fsprogs-resize2fs \
    iproute2 \
    iputils-ping \
    kmod \
    less \
    procps \
    shadow \
    wendy-agent \
    wendyos-release \
    wendyos-rootfs \
    zstd \
"
IMAGE_LINGUAS = ""

IMAGE_FSTYPES = "wic wic.bmap"
WKS_FILE = "wendyos-ab.wks.in"
# The partition lines, from the repository's image/partitions.conf.
WENDYOS_WKS_PARTITIONS = "${@wendyos.partitions.wks_lines(d)}"
# Kernel command line for boot loaders wic configures (uefi-grub); set from
# BOARD_KERNEL_CMDLINE by the kas file. Raspberry Pi boards use cmdline.txt.
WENDYOS_KERNEL_CMDLINE ??= ""

# The partition sizes exist only in board-configs/. Without them (a build
# not configured through the generated kas file) the image is skipped with
# a clear reason instead of failing late in wic.
SKIP_RECIPE[wendyos-image] = "${@wendyos.skip.partition_sizes_missing(d)}"
