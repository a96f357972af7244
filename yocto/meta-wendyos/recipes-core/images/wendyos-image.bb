SUMMARY = "WendyOS device image"
DESCRIPTION = "systemd, Avahi and wendy-agent on the A/B partition layout, \
               as a wic disk image with a block map for bmaptool."
HOMEPAGE = "https://example.invalid/wendyos"
LICENSE = "MIT"

inherit core-image

# The Yocto counterpart of image/packages.txt (the Debian manifest).
# Debian's e2fsprogs is split here: e2label (e2fsprogs-tune2fs) is what
# RAUC's post-install handler labels a written slot with. containerd and
# runc are meta-virtualization's (the recipes behind virtual/containerd and
# virtual/runc); their configuration is image/rootfs's (wendyos-rootfs).
IMAGE_INSTALL = "\
    packagegroup-core-boot \
    ${CORE_IMAGE_EXTRA_INSTALL} \
    avahi-daemon \
    ca-certificates \
    containerd \
    dbus \
    dosfstools \
    e2fsprogs-e2fsck \
    e2fsprogs-mke2fs \
    e2fsprogs-resize2fs \
    e2fsprogs-tune2fs \
    iproute2 \
    iputils-ping \
    kmod \
    less \
    procps \
    rauc \
    runc \
    shadow \
    wendy-agent \
    wendyos-release \
    wendyos-rootfs \
    zstd \
"
IMAGE_LINGUAS = ""

# RAUC (rauc-service comes with it): wendy-agent installs bundles and marks
# the booted slot good through its D-Bus API once the agent is healthy
# (docs/decisions/0026). meta-rauc's rauc-mark-good would mark every boot
# good as soon as it starts, before anything is known to work, which would
# defeat the rollback: it stays out.
BAD_RECOMMENDATIONS += "rauc-mark-good"

# The disk image, and the root file system alone for update bundles
# (wendyos-bundle). 4 KiB-aligned: RAUC's adaptive updates
# (block-hash-index) hash the slot image in 4 KiB blocks.
IMAGE_FSTYPES = "wic wic.bmap ext4"
IMAGE_ROOTFS_ALIGNMENT = "4"
WKS_FILE = "wendyos-ab.wks.in"
# The partition lines, from the repository's image/partitions.conf.
WENDYOS_WKS_PARTITIONS = "${@wendyos.partitions.wks_lines(d)}"
# The bootloader line's arguments beyond the partition table, per boot
# method (conf/distro/include/wendyos-boot-*.inc).
WENDYOS_WKS_BOOTLOADER_ARGS ??= ""

# The kernel lives in the root slot (docs/decisions/0020): the boot loader
# loads /boot/vmlinuz from the slot it picked (GRUB also /boot/initrd.img),
# so an update replaces kernel and modules together.
IMAGE_INSTALL += "kernel-image"
ROOTFS_POSTPROCESS_COMMAND += "wendyos_slot_boot_files"
wendyos_slot_boot_files() {
    [ -e ${IMAGE_ROOTFS}/boot/${KERNEL_IMAGETYPE} ] ||
        bbfatal "no /boot/${KERNEL_IMAGETYPE} in the root file system: the boot loader loads the kernel from the slot"
    ln -sfn ${KERNEL_IMAGETYPE} ${IMAGE_ROOTFS}/boot/vmlinuz
    if [ "${WENDYOS_BOOT_METHOD}" = uefi-grub ]; then
        # image/boot/grub.cfg.in loads /boot/initrd.img, which the Debian
        # image's initramfs-tools make. This image has no initramfs yet (the
        # kernel mounts root= itself and systemd mounts the rest): an empty
        # cpio archive, which the kernel unpacks and, finding no /init in
        # it, goes on to mount root= as without one.
        cpio --quiet -o -H newc </dev/null >${IMAGE_ROOTFS}/boot/initrd.img
    fi
}

# The partition sizes exist only in board-configs/. Without them (a build
# not configured through the generated kas file) the image is skipped with
# a clear reason instead of failing late in wic.
SKIP_RECIPE[wendyos-image] = "${@wendyos.skip.partition_sizes_missing(d)}"

# A development build (poky's own switch for it, decision 0024: `empty-root-
# password` in EXTRA_IMAGE_FEATURES) carries the development marker of
# image/rootfs-dev, the one fact by which the agent accepts UpdateAgent
# (docs/decisions/0104). Without it the image is production.
ROOTFS_POSTPROCESS_COMMAND += "${@bb.utils.contains('IMAGE_FEATURES', 'empty-root-password', 'wendyos_development_marker', '', d)}"
wendyos_development_marker() {
    install -D -m 0644 ${WENDYOS_SRC_DIR}/image/rootfs-dev/etc/wendyos/development \
        ${IMAGE_ROOTFS}${sysconfdir}/wendyos/development
}
