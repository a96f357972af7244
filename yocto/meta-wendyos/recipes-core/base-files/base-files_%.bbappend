# In the wendyos distro /etc/fstab is the image overlay's
# (image/rootfs/etc/fstab, shared with the Debian builder; decision 0021):
# data, the /etc/wendy-agent bind mount, config and the ESP, all by GPT name.
# base-files fetches file://fstab, so the overlay's directory goes first.
FILESEXTRAPATHS:prepend:wendyos := "${WENDYOS_SRC_DIR}/image/rootfs/etc:"
