SUMMARY = "WendyOS update bundle"
DESCRIPTION = "A RAUC bundle (verity format) with wendyos-image's root \
               file system, kernel included, for the slot class rootfs. \
               Signed here by a throwaway key that no device trusts: \
               scripts/sign-bundle replaces that signature with the fleet's \
               ML-DSA-65 code signer's (yocto/README.md)."
HOMEPAGE = "https://example.invalid/wendyos"
SECTION = "base"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

inherit bundle

# After the inherit, which sets DEPENDS: openssl makes the throwaway signer
# (below).
DEPENDS += "openssl-native"

# Nothing to fetch: the slot image comes from wendyos-image's deploy
# directory (the bundle class's RAUC_SLOT_rootfs).
SRC_URI = ""

# Installed only where it equals the device's compatible: the one in the
# board's image/rauc template (wendyos-<board>), read from there.
RAUC_BUNDLE_COMPATIBLE = "${@wendyos.rauc.compatible(d)}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_FORMAT = "verity"

# One image for either root slot (rootfs.0 = rootfs-a, rootfs.1 = rootfs-b),
# the ext4 file system of wendyos-image. Adaptive updates: a device that has
# the old slot's blocks writes only the changed ones (as scripts/build-bundle).
RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "wendyos-image"
RAUC_SLOT_rootfs[fstype] = "ext4"
RAUC_SLOT_rootfs[adaptive] = "block-hash-index"

# RAUC cannot sign with ML-DSA (`rauc bundle` calls CMS_sign without a
# digest), and the fleet's code-signing key never belongs in a build. So
# the bundle class signs with a throwaway ECDSA key made for this one task
# in the work directory and deleted after it; scripts/sign-bundle then puts
# the ML-DSA-65 signature in its place (docs/decisions/0026).
WENDYOS_THROWAWAY_SIGNER_DIR = "${WORKDIR}/throwaway-signer"
RAUC_KEY_FILE = "${WENDYOS_THROWAWAY_SIGNER_DIR}/key.pem"
RAUC_CERT_FILE = "${WENDYOS_THROWAWAY_SIGNER_DIR}/cert.pem"

wendyos_throwaway_signer() {
    rm -rf ${WENDYOS_THROWAWAY_SIGNER_DIR}
    install -d -m 0700 ${WENDYOS_THROWAWAY_SIGNER_DIR}
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=WendyOS throwaway bundle signer" \
        -addext extendedKeyUsage=codeSigning \
        -keyout ${RAUC_KEY_FILE} -out ${RAUC_CERT_FILE}
}
wendyos_throwaway_signer_delete() {
    rm -rf ${WENDYOS_THROWAWAY_SIGNER_DIR}
}
do_bundle[prefuncs] += "wendyos_throwaway_signer"
do_bundle[postfuncs] += "wendyos_throwaway_signer_delete"
