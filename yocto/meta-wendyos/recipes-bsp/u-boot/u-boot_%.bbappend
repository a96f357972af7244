# RAUC's uboot backend reads and writes U-Boot's environment with
# libubootenv's fw_printenv/fw_setenv, which find it through
# /etc/fw_env.config (package u-boot-env). meta-raspberrypi's file names
# /boot/uboot.env; in the wendyos distro the boot partition is mounted at
# /boot/efi (image/rootfs/etc/fstab), so the path moves there. Offset and
# size stay meta-raspberrypi's, which match U-Boot's Raspberry Pi
# configuration (docs/decisions/0027).
#
# A postfunc of do_install, because meta-raspberrypi installs the file in
# its own do_install append, which may run after one of this layer's.
WENDYOS_FW_ENV_POSTFUNC:wendyos:rpi = "wendyos_fw_env_config"
do_install[postfuncs] += "${@d.getVar('WENDYOS_FW_ENV_POSTFUNC') or ''}"

# Runs only where the line above names it (wendyos distro, rpi machines).
# nooelint: oelint.vars.noncoreoverride
wendyos_fw_env_config() {
    sed -i 's|^/boot/uboot\.env[[:space:]]|/boot/efi/uboot.env |' ${D}${sysconfdir}/fw_env.config
    grep -q '^/boot/efi/uboot\.env ' ${D}${sysconfdir}/fw_env.config ||
        bbfatal "${D}${sysconfdir}/fw_env.config does not name /boot/uboot.env (meta-raspberrypi's) to move to /boot/efi"
}
