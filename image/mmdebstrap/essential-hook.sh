#!/bin/sh
# mmdebstrap --essential-hook for the WendyOS base rootfs: runs on the build
# host after the Essential packages are unpacked and before the packages of
# image/packages.txt are installed. $1 is the rootfs directory.
# Environment: WENDY_BOOT_METHOD, WENDY_INITRAMFS_MODULES, WENDY_INITRAMFS_POLICY
# (from the board config).
# Changing this file changes the base-rootfs cache key.
set -eu
root="$1"

# initramfs-tools: zstd is much faster than gzip under qemu-user emulation
# and every trixie kernel decompresses it. MODULES= is the board's policy:
# "most" for hardware, "list" (only the modules below) for fixed virtual
# hardware, where it cuts the initramfs from ~36 MB to a few and the build
# and the boot with it (scripts/build-image checks the value).
mkdir -p "$root/etc/initramfs-tools/conf.d"
cat >"$root/etc/initramfs-tools/conf.d/wendyos.conf" <<CONF
COMPRESS=zstd
MODULES=$WENDY_INITRAMFS_POLICY
CONF

# Modules the initramfs must carry to find the root disk, whatever
# MODULES=most finds by itself; with MODULES=list the only ones
# (customize-hook.sh checks they are in).
mkdir -p "$root/usr/share/initramfs-tools/modules.d"
# shellcheck disable=SC2086 # split on purpose: one module a line
printf '%s\n' $WENDY_INITRAMFS_MODULES >"$root/usr/share/initramfs-tools/modules.d/wendyos.conf"

# WendyOS's initramfs hook and boot script (image/mmdebstrap/initramfs/):
# e2fsck in the initramfs, no udev on MODULES=list boards, and the
# x-initrd.mount entries of /etc/fstab mounted before systemd starts.
src="$(dirname "$0")/initramfs"
install -D -m 0755 "$src/hooks/wendyos" "$root/etc/initramfs-tools/hooks/wendyos"
install -D -m 0755 "$src/scripts/local-bottom/wendyos-mounts" \
    "$root/etc/initramfs-tools/scripts/local-bottom/wendyos-mounts"

# The initramfs would be built once by the kernel's postinst and again by
# the trigger of every later package that ships a hook; under emulation each
# run costs minutes. Divert update-initramfs to a no-op while packages are
# installed; customize-hook.sh restores it and builds the initramfs once.
chroot "$root" dpkg-divert --quiet --local --rename \
    --divert /usr/sbin/update-initramfs.wendyos --add /usr/sbin/update-initramfs
mkdir -p "$root/usr/sbin"
cat >"$root/usr/sbin/update-initramfs" <<'STUB'
#!/bin/sh
echo "update-initramfs: deferred by the WendyOS image build" >&2
exit 0
STUB
chmod 0755 "$root/usr/sbin/update-initramfs"

# raspi-firmware installs the firmware and kernel into /boot/firmware.
if [ "$WENDY_BOOT_METHOD" = rpi-firmware ]; then
    mkdir -p "$root/boot/firmware"
fi
