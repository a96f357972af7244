//! Every D-Bus interface the agent calls, as zbus proxies, in one place.
//!
//! - avahi-daemon (`org.freedesktop.Avahi.Server`): only the few methods
//!   the advertisement needs (see [`crate::avahi`]).
//! - RAUC (`de.pengutronix.rauc.Installer`, feature `rauc`): marking the
//!   booted slot and reading RAUC's state (see [`crate::rauc`]). Signatures
//!   follow RAUC's introspection data (`src/de.pengutronix.rauc.Installer.xml`
//!   in RAUC's sources). Installing bundles too (see [`crate::os_update`]).
//! - systemd (`org.freedesktop.systemd1.Manager`, feature `rauc`): the
//!   clean reboot after an update.
//!
//! The `org.freedesktop.DBus` proxy (for `NameOwnerChanged`) is zbus's own
//! [`zbus::fdo::DBusProxy`].

/// The well-known bus name of avahi-daemon.
pub const AVAHI_BUS_NAME: &str = "org.freedesktop.Avahi";

/// `AVAHI_IF_UNSPEC` / `AVAHI_PROTO_UNSPEC`.
pub const UNSPEC: i32 = -1;

/// `AVAHI_SERVER_RUNNING`: the host name is established and services are
/// being announced.
pub const SERVER_RUNNING: i32 = 2;

/// What `ResolveService` returns: interface, protocol, name, type, domain,
/// host, address protocol, address, port, TXT records, flags.
pub type Resolved = (i32, i32, String, String, String, String, i32, String, u16, Vec<Vec<u8>>, u32);

/// `org.freedesktop.Avahi.Server` at `/`.
#[zbus::proxy(
    interface = "org.freedesktop.Avahi.Server",
    default_service = "org.freedesktop.Avahi",
    default_path = "/"
)]
pub trait AvahiServer {
    /// avahi-daemon's version, e.g. `avahi 0.8`.
    fn get_version_string(&self) -> zbus::Result<String>;

    /// The server state (`AvahiServerState`).
    fn get_state(&self) -> zbus::Result<i32>;

    /// The host name avahi-daemon announces.
    fn get_host_name(&self) -> zbus::Result<String>;

    /// Resolves one service instance.
    #[allow(clippy::too_many_arguments)]
    fn resolve_service(
        &self,
        interface: i32,
        protocol: i32,
        name: &str,
        service_type: &str,
        domain: &str,
        aprotocol: i32,
        flags: u32,
    ) -> zbus::Result<Resolved>;
}

/// The well-known bus name of the RAUC service (D-Bus activated).
#[cfg(feature = "rauc")]
pub const RAUC_BUS_NAME: &str = "de.pengutronix.rauc";

/// The RAUC service's object path.
#[cfg(feature = "rauc")]
pub const RAUC_OBJECT_PATH: &str = "/";

/// One slot's status as `GetSlotStatus` reports it: the slot name (e.g.
/// `rootfs.0`) and a dictionary of its properties (`bootname`, `state`,
/// `boot_status`, ...).
#[cfg(feature = "rauc")]
pub type RaucSlotStatus = (String, std::collections::HashMap<String, zbus::zvariant::OwnedValue>);

/// `de.pengutronix.rauc.Installer` at `/` on the system bus.
#[cfg(feature = "rauc")]
#[zbus::proxy(interface = "de.pengutronix.rauc.Installer", default_service = "de.pengutronix.rauc", default_path = "/")]
pub trait RaucInstaller {
    /// `Mark(s state, s slot_identifier) -> (s slot_name, s message)`.
    ///
    /// `state` is `good`, `bad` or `active`; `slot_identifier` is `booted`,
    /// `other` or a slot name such as `rootfs.1`. Returns the slot that was
    /// marked and RAUC's description of what it did.
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;

    /// `GetPrimary() -> s`: the slot the boot loader will try first.
    fn get_primary(&self) -> zbus::Result<String>;

    /// `GetSlotStatus() -> a(sa{sv})`: every slot's status.
    fn get_slot_status(&self) -> zbus::Result<Vec<RaucSlotStatus>>;

    /// `Compatible`: the system's compatible string (`wendyos-<board>`).
    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;

    /// `Variant`: the system's variant, empty if none is configured.
    #[zbus(property)]
    fn variant(&self) -> zbus::Result<String>;

    /// `Operation`: what RAUC is doing now (`idle`, `installing`).
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;

    /// `LastError`: the message of the last error RAUC met.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;

    /// `BootSlot`: the boot name of the slot the system booted from.
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;

    /// `InstallBundle(s source, a{sv} args)`: starts installing the bundle
    /// at `source` (a path) into the other slot; the result arrives as the
    /// [`Completed`](RaucInstallerProxy::receive_completed) signal.
    fn install_bundle(
        &self,
        source: &str,
        args: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<()>;

    /// `Completed(i result)`: an installation ended; 0 is success, the
    /// message of a failure is in `LastError`.
    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;

    /// `Progress (isi)`: percentage, message, nesting depth of the step.
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;
}

/// `org.freedesktop.systemd1.Manager` at `/org/freedesktop/systemd1`: only
/// starting a unit (a clean reboot is `reboot.target`, as `systemctl
/// reboot` starts it when logind is not asked).
#[cfg(feature = "rauc")]
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait SystemdManager {
    /// `StartUnit(s name, s mode) -> o job`.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
}
