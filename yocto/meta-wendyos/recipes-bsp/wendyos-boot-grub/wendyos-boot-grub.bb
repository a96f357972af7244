SUMMARY = "GRUB script and initial slot state of WendyOS uefi-grub boards"
DESCRIPTION = "The repository's image/boot/grub.cfg.in rendered for the \
               board (the A/B boot script the Debian builder installs too) \
               and the initial grubenv with RAUC's grub backend state, \
               deployed for the ESP that wic writes."
HOMEPAGE = "https://example.invalid/wendyos"
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The one copy of the template is the repository's image/ directory, outside
# this layer; FILESEXTRAPATHS is how a recipe reaches it.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${WENDYOS_SRC_DIR}/image/boot:"
SRC_URI = "file://grub.cfg.in"

S = "${UNPACKDIR}"
B = "${WORKDIR}/build"

inherit deploy nopackages

# grub.cfg names the board and carries its kernel arguments.
PACKAGE_ARCH = "${MACHINE_ARCH}"
INHIBIT_DEFAULT_DEPS = "1"

# Only uefi-grub boards boot with GRUB (conf/distro/include).
SKIP_RECIPE[wendyos-boot-grub] = "${@'' if d.getVar('WENDYOS_BOOT_METHOD') == 'uefi-grub' else 'GRUB boots only WENDYOS_BOOT_METHOD uefi-grub boards, not %s' % d.getVar('WENDYOS_BOOT_METHOD')}"

do_configure[noexec] = "1"

# The substitutions scripts/build-image makes: @BOARD@, and
# @KERNEL_CMDLINE@ (board-configs BOARD_KERNEL_CMDLINE) escaped for sed.
# The initial grubenv is decision 0026's fresh image: slot A good and
# first, slot B empty; an environment block is 1024 bytes, padded with '#'.
do_compile() {
    cmdline="$(printf '%s' "${WENDYOS_KERNEL_CMDLINE}" | sed 's/[&|\\]/\\&/g')"
    sed -e "s/@BOARD@/${WENDYOS_BOARD}/g" -e "s|@KERNEL_CMDLINE@|$cmdline|g" \
        ${S}/grub.cfg.in >${B}/grub.cfg
    if grep -n '@[A-Z_]*@' ${B}/grub.cfg; then
        bbfatal "image/boot/grub.cfg.in has a placeholder this recipe does not fill in (above)"
    fi
    {
        printf '# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n'
        head -c 1024 /dev/zero | tr '\0' '#'
    } | head -c 1024 >${B}/grubenv
}

do_deploy() {
    install -m 0644 ${B}/grub.cfg ${DEPLOYDIR}/wendyos-grub.cfg
    install -m 0644 ${B}/grubenv ${DEPLOYDIR}/wendyos-grubenv
}
addtask deploy after do_compile before do_build
