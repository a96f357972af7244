//! Every D-Bus interface the agent calls, as zbus proxies, in one place.
//!
//! Only the few avahi-daemon methods the agent needs are declared. The
//! `org.freedesktop.DBus` proxy (for `NameOwnerChanged`) is zbus's own
//! [`zbus::fdo::DBusProxy`].
#![allow(missing_docs)]

/// The well-known bus name of avahi-daemon.
pub const AVAHI_BUS_NAME: &str = "org.freedesktop.Avahi";

/// `AVAHI_IF_UNSPEC` / `AVAHI_PROTO_UNSPEC`.
pub const UNSPEC: i32 = -1;

/// `AVAHI_SERVER_RUNNING`: the host name is established and services are
/// being announced.
pub const SERVER_RUNNING: i32 = 2;

/// What `ResolveService` returns.
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
