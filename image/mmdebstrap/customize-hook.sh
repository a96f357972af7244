#!/bin/sh
# mmdebstrap --customize-hook for the WendyOS base rootfs: runs on the build
# host after every package is installed. $1 is the rootfs directory.
# Environment (derived from the board config by scripts/build-image):
#   WENDY_BOOT_METHOD, WENDY_GRUB_FORMAT, WENDY_EFI_BOOT_FILE, WENDY_INITRAMFS_MODULES,
#   WENDY_BUILD_PACKAGES (image/packages.txt lines with use=build)
# Changing this file changes the base-rootfs cache key.
#
# Only things that depend on packages belong here; the WendyOS configuration
# is the image/rootfs overlay, applied by scripts/build-image on every
# (warm) build.
set -eu
root="$1"

case "$WENDY_BOOT_METHOD" in
uefi-grub)
    # A self-contained GRUB EFI binary: every module it needs is built in,
    # and it reads grub.cfg from /EFI/BOOT on the partition it was loaded
    # from. GRUB is not installed in the rootfs: the host's apt (with the
    # chroot's configuration) downloads the target's GRUB packages, they are
    # unpacked into a scratch directory, and their grub-mkimage runs there
    # under emulation.
    scratch="/tmp/wendyos-grub"
    rm -rf "$root$scratch"
    mkdir -p "$root$scratch/debs" "$root$scratch/x" "$root/usr/lib/wendyos/boot"
    # shellcheck disable=SC2086
    (cd "$root$scratch/debs" && APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" \
        apt-get -q -o APT::Sandbox::User=root download $WENDY_BUILD_PACKAGES)
    for deb in "$root$scratch"/debs/*.deb; do dpkg-deb --extract "$deb" "$root$scratch/x"; done
    libdir="$(dirname "$(find "$root$scratch/x" -name 'libdevmapper.so*' | head -n 1)")"
    modules="part_gpt fat ext2 normal linux configfile search search_label
             search_fs_uuid search_fs_file test echo ls cat loadenv gzio
             minicmd reboot halt sleep"
    case "$WENDY_GRUB_FORMAT" in
        x86_64-efi) modules="$modules serial terminal efi_gop all_video" ;;
    esac
    # shellcheck disable=SC2086
    chroot "$root" env LD_LIBRARY_PATH="${libdir#"$root"}" "$scratch/x/usr/bin/grub-mkimage" \
        --directory="$scratch/x/usr/lib/grub/$WENDY_GRUB_FORMAT" \
        --format="$WENDY_GRUB_FORMAT" \
        --output="/usr/lib/wendyos/boot/$WENDY_EFI_BOOT_FILE" \
        --prefix=/EFI/BOOT $modules
    rm -rf "$root$scratch"
    ;;
esac

# Build the initramfs once, now that every package with an initramfs hook is
# installed (see essential-hook.sh).
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$root" update-initramfs -c -k all
# The root disk's driver must be in it (a silent miss means "Gave up waiting
# for root file system device" on the board).
for initrd in "$root"/boot/initrd.img-*; do
    kver="${initrd##*/initrd.img-}"
    listing="$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver")"
    for m in $WENDY_INITRAMFS_MODULES; do
        where="$(chroot "$root" modinfo -k "$kver" -F filename "$m" 2>/dev/null | head -n 1)" || where=""
        case "$where" in
            "(builtin)") continue ;;
            "") echo "customize-hook: kernel $kver has no module $m" >&2; exit 1 ;;
        esac
        if ! printf '%s\n' "$listing" | grep -q "/${where##*/}\$"; then
            echo "customize-hook: module $m ($where) is not in initrd.img-$kver" >&2
            exit 1
        fi
    done
done

# Work systemd would otherwise do on the device's first boot, slowly (its
# ConditionNeedsUpdate= units; scripts/build-image marks /etc and /var as
# up to date after adding the overlay).
chroot "$root" journalctl --update-catalog

# Keep the image small: no stock Avahi services (ssh, sftp), no logs or
# caches from the build.
rm -f "$root"/etc/avahi/services/*.service
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/apt/*
rm -f "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log "$root"/var/cache/debconf/*-old
