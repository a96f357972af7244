# WendyOS devices advertise one thing over mDNS: _wendyos._udp, from the
# service file wendy-agent renders into /etc/avahi/services once its port
# listens (docs/decisions/0001). In the wendyos distro avahi-daemon.conf is
# the image overlay's (image/rootfs/etc/avahi, shared with the Debian
# builder: no workstation or HINFO records), and /etc/avahi/services ships
# empty.
FILESEXTRAPATHS:prepend:wendyos := "${WENDYOS_SRC_DIR}/image/rootfs/etc/avahi:"
SRC_URI:append:wendyos = " file://avahi-daemon.conf"

do_install:append:wendyos() {
    install -m 0644 ${UNPACKDIR}/avahi-daemon.conf \
        ${D}${sysconfdir}/avahi/avahi-daemon.conf
    rm -f ${D}${sysconfdir}/avahi/services/*.service
}
