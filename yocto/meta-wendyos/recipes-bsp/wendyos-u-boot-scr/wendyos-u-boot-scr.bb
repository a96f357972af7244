SUMMARY = "WendyOS A/B boot script for U-Boot on Raspberry Pi boards"
DESCRIPTION = "boot.scr from the repository's image/boot/u-boot-rpi.cmd.in: \
               picks the root slot from RAUC's uboot backend state and boots \
               the kernel in it. Replaces meta-raspberrypi's rpi-u-boot-scr \
               (PREFERRED_PROVIDER_u-boot-default-script)."
HOMEPAGE = "https://example.invalid/wendyos"
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The one copy of the template is the repository's image/ directory, outside
# this layer; FILESEXTRAPATHS is how a recipe reaches it.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${WENDYOS_SRC_DIR}/image/boot:"

DEPENDS = "u-boot-mkimage-native"
PROVIDES += "u-boot-default-script"

SRC_URI = "file://u-boot-rpi.cmd.in"

S = "${UNPACKDIR}"
B = "${WORKDIR}/build"

COMPATIBLE_MACHINE = "^rpi$"
INHIBIT_DEFAULT_DEPS = "1"
# The script names the board.
PACKAGE_ARCH = "${MACHINE_ARCH}"

inherit deploy kernel-arch nopackages

do_configure[noexec] = "1"

# KERNEL_BOOTCMD: meta-raspberrypi's choice for the machine's kernel image
# with U-Boot (booti, or bootm for a uImage).
do_compile() {
    sed -e "s/@BOARD@/${WENDYOS_BOARD}/g" -e "s/@KERNEL_BOOTCMD@/${KERNEL_BOOTCMD}/g" \
        ${S}/u-boot-rpi.cmd.in >${B}/boot.cmd
    if grep -n '@[A-Z_]*@' ${B}/boot.cmd; then
        bbfatal "image/boot/u-boot-rpi.cmd.in has a placeholder this recipe does not fill in (above)"
    fi
    mkimage -A ${UBOOT_ARCH} -T script -C none -n "WendyOS A/B boot" -d ${B}/boot.cmd ${B}/boot.scr
}

do_deploy() {
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build
