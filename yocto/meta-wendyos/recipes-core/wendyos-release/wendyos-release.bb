SUMMARY = "WendyOS release identification"
DESCRIPTION = "/etc/wendy/version.txt (DISTRO_VERSION), \
               /etc/wendyos/device-type (the board name) and, when \
               WENDYOS_ENROLLMENT_CA names one, the enrolment CA bundle \
               /etc/wendy/enrollment-ca.pem, read by wendy-agent."
HOMEPAGE = "https://example.invalid/wendyos"
SECTION = "base"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Nothing to fetch: the files are generated from metadata, or copied from
# the operator's WENDYOS_ENROLLMENT_CA (tracked by checksum below).
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
    if [ -n "${WENDYOS_ENROLLMENT_CA}" ]; then
        grep -q -- '-----BEGIN CERTIFICATE-----' "${WENDYOS_ENROLLMENT_CA}" ||
            bbfatal "WENDYOS_ENROLLMENT_CA=${WENDYOS_ENROLLMENT_CA} is not a PEM file with a certificate in it"
        install -m 0644 "${WENDYOS_ENROLLMENT_CA}" ${D}${sysconfdir}/wendy/enrollment-ca.pem
    fi
}
# A changed CA file re-runs do_install.
do_install[file-checksums] += "${@'%s:True' % d.getVar('WENDYOS_ENROLLMENT_CA') if d.getVar('WENDYOS_ENROLLMENT_CA') else ''}"
do_install[vardeps] += "WENDYOS_ENROLLMENT_CA"
