SUMMARY = "WendyOS release identification"
DESCRIPTION = "/etc/wendy/version.txt (DISTRO_VERSION) and \
               /etc/wendyos/device-type (the board name), read by wendy-agent."
HOMEPAGE = "https://example.invalid/wendyos"
SECTION = "base"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Nothing to fetch: both files are generated from metadata.
SRC_URI = ""
S = "${UNPACKDIR}"

# device-type differs per board.
PACKAGE_ARCH = "${MACHINE_ARCH}"
INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${sysconfdir}/wendy ${D}${sysconfdir}/wendyos
    printf '%s\n' "${DISTRO_VERSION}" > ${D}${sysconfdir}/wendy/version.txt
    printf '%s\n' "${WENDYOS_BOARD}" > ${D}${sysconfdir}/wendyos/device-type
    chmod 0644 ${D}${sysconfdir}/wendy/version.txt ${D}${sysconfdir}/wendyos/device-type
}
