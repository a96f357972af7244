SUMMARY = "WendyOS rootfs overlay from the repository's image/rootfs"
DESCRIPTION = "Installs image/rootfs, the overlay shared with the Debian \
               image builder (tmpfiles, mount units, presets, configuration), \
               minus the agent's own files, which wendy-agent installs."
HOMEPAGE = "https://example.invalid/wendyos"
SECTION = "base"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The one copy of these files is the repository's image/ directory, outside
# this layer; FILESEXTRAPATHS is how a recipe reaches it.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${WENDYOS_SRC_DIR}/image:"
SRC_URI = "file://rootfs"

S = "${UNPACKDIR}/rootfs"

INHIBIT_DEFAULT_DEPS = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"

# Paths (relative to image/rootfs) other recipes install, because their
# packages own them: wendy-agent its unit and share directory, base-files
# /etc/fstab and avahi-daemon its configuration (both through bbappends).
WENDYOS_ROOTFS_EXCLUDE = "\
    etc/avahi/avahi-daemon.conf \
    etc/fstab \
    usr/lib/systemd/system/wendy-agent.service \
    usr/share/wendy-agent \
"

do_install() {
    cp -R --no-preserve=ownership ${S}/. ${D}/
    for path in ${WENDYOS_ROOTFS_EXCLUDE}; do
        rm -rf "${D:?}/$path"
    done
    # Drop directories the exclusions left empty.
    find ${D} -mindepth 1 -depth -type d -empty -delete

    # Mount points of the overlay's fstab, and the agent's state directory
    # on the data partition (decision 0021): wic copies the rootfs's /data
    # into the data partition, so wendy-agent/ exists before the bind mount,
    # and update/ (staged OS updates, a ReadWritePaths= of the agent's unit)
    # before the agent starts.
    install -d -m 0755 ${D}/data ${D}/boot/config ${D}/boot/efi
    install -d -m 0700 ${D}/data/wendy-agent ${D}/data/update ${D}${sysconfdir}/wendy-agent
    # The agent's unit writes here (ReadWritePaths=) and starts before
    # systemd-tmpfiles-setup, so the directory ships in the image.
    install -d -m 0755 ${D}${sysconfdir}/avahi/services
}

# One package holding the whole overlay, wherever its files live.
PACKAGES = "${PN}"
FILES:${PN} += "/"
ALLOW_EMPTY:${PN} = "1"
