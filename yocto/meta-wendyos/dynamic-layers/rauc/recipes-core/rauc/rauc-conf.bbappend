# WendyOS's RAUC configuration (docs/decisions/0026, 0027):
#   /etc/rauc/system.conf   the repository's image/rauc template of the
#                           board's boot method (WENDYOS_RAUC_SYSTEM_CONF,
#                           conf/distro/include), with @BOARD@ replaced as
#                           scripts/build-image does: compatible
#                           wendyos-<board>, slots rootfs-a/rootfs-b
#   /etc/rauc/keyring.pem   the fleet's code-signing CA, WENDYOS_CODESIGN_CA
# In /etc/rauc, where the template's keyring path and the Debian image put
# them, rather than meta-rauc's /usr/lib/rauc (its wrynose default; RAUC
# reads /etc/rauc/system.conf first). The template replaces meta-rauc's
# example system.conf and keyring entirely.

FILESEXTRAPATHS:prepend:wendyos := "${WENDYOS_SRC_DIR}/image/rauc:"
SRC_URI:wendyos = "file://${WENDYOS_RAUC_SYSTEM_CONF}"

# compatible= names the board.
PACKAGE_ARCH:wendyos = "${MACHINE_ARCH}"

do_install:wendyos() {
    if [ -z "${WENDYOS_CODESIGN_CA}" ]; then
        bbfatal "WENDYOS_CODESIGN_CA is not set: name the fleet's code-signing CA (PEM, pki-core's 'pkicore codesign ca') for RAUC's keyring, e.g. WENDYOS_CODESIGN_CA = \"/abs/path/codesign-ca.pem\" in conf/site.conf; for a development build, the CA scripts/dev-codesign-ca prints (yocto/README.md)"
    fi
    grep -q -- '-----BEGIN CERTIFICATE-----' "${WENDYOS_CODESIGN_CA}" ||
        bbfatal "WENDYOS_CODESIGN_CA=${WENDYOS_CODESIGN_CA} is not a PEM file with a certificate in it"

    install -d ${D}${sysconfdir}/rauc
    sed "s/@BOARD@/${WENDYOS_BOARD}/g" ${UNPACKDIR}/${WENDYOS_RAUC_SYSTEM_CONF} >${D}${sysconfdir}/rauc/system.conf
    chmod 0644 ${D}${sysconfdir}/rauc/system.conf
    if grep -n '@[A-Z_]*@' ${D}${sysconfdir}/rauc/system.conf; then
        bbfatal "image/rauc/${WENDYOS_RAUC_SYSTEM_CONF} has a placeholder this recipe does not fill in (above)"
    fi
    install -m 0644 "${WENDYOS_CODESIGN_CA}" ${D}${sysconfdir}/rauc/keyring.pem
}
# A changed CA file re-runs do_install.
do_install[file-checksums] += "${@'%s:True' % d.getVar('WENDYOS_CODESIGN_CA') if d.getVar('WENDYOS_CODESIGN_CA') else ''}"
do_install[vardeps] += "WENDYOS_CODESIGN_CA WENDYOS_BOARD"

FILES:${PN}:append:wendyos = " ${sysconfdir}/rauc"
