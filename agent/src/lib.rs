//! `wendy-agent`: the WendyOS device daemon.
//!
//! While the device is unprovisioned the agent answers plaintext gRPC on
//! `WENDY_AGENT_PORT` (provisioning, version, health). `StartProvisioning`
//! enrols the device with pki-core; from then on every service runs over
//! post-quantum mTLS on port + 1 and each call is checked against the
//! caller's role (see [`authz`]).
//!
//! Modules, one concern each:
//! - [`config`]: paths, ports and intervals from the environment;
//! - [`state`]: `provisioning.json`, written atomically;
//! - [`enroll`]: validating `StartProvisioning`, key, CSR, `IssueCertificate`;
//! - [`cloud`]: gRPC channels to pki-core over pinned TLS;
//! - [`tls`]: the mTLS listener, hot-swappable server certificate;
//! - [`authz`]: the role → RPC table and the layer enforcing it;
//! - [`provisioning`]: the published provisioning service, v1 and v2;
//! - [`device_info`]: the published agent (v1) and device-info (v2) services;
//! - [`agent_update`]: the published `UpdateAgent` (v2 service; v1 from
//!   [`device_info`]): replaces the agent binary on development images;
//! - [`device_admin`]: our own `Unprovision` (package `wendyos.agent.v1`);
//! - [`anchor`]: the enrolment trust anchor for a stock `StartProvisioning`;
//! - [`daemon`]: the unprovisioned ⇄ provisioned lifecycle;
//! - [`maintain`]: certificate renewal and CRL refresh;
//! - [`avahi`]: the mDNS advertisement (service file + D-Bus confirmation);
//! - [`dbus`]: the zbus proxies for every D-Bus interface the agent calls;
//! - [`systemd`]: sd_notify, watchdog, journald logging;
//! - `rauc` (Cargo feature `rauc`): the health gate that marks the booted
//!   A/B slot good once the agent is healthy, or rolls it back;
//! - `os_update` (Cargo feature `rauc`): the published `UpdateOS` and our
//!   `OsUpdateService` (upload, status, reboot);
//! - `containers` (Cargo feature `apps`, in progress): the published
//!   `wendy.json` and the sandbox (OCI runtime spec) it maps to;
//! - `container_service` (Cargo feature `apps`): the published container
//!   service, v1 and v2, over the runtime, and the restart supervisor;
//! - `registry` (Cargo feature `apps`, in progress): the OCI distribution
//!   protocol of the on-device registry;
//! - [`firstboot`]: importing the config-partition seed;
//! - [`credential_seed`]: importing an operator-provisioned credential;
//! - [`sysinfo`]: what `GetAgentVersion` and `GetDeviceInfo` report;
//! - [`crash`]: test-only crash injection.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent_update;
pub mod anchor;
pub mod authz;
pub mod avahi;
pub mod busy;
pub mod cloud;
pub mod config;
#[cfg(feature = "apps")]
pub mod container_service;
#[cfg(feature = "apps")]
pub mod containers;
pub mod crash;
pub mod credential_seed;
pub mod daemon;
// zbus generates the types of signal arguments without docs.
#[allow(missing_docs)]
pub mod dbus;
pub mod device_admin;
pub mod device_info;
pub mod enroll;
mod error;
pub mod firstboot;
pub mod maintain;
#[cfg(feature = "rauc")]
pub mod os_update;
pub mod provisioning;
#[cfg(feature = "rauc")]
pub mod rauc;
#[cfg(feature = "apps")]
pub mod registry;
pub mod state;
pub mod sysinfo;
pub mod systemd;
pub mod tls;

pub use error::Error;

/// The agent's version, as `GetAgentVersion` and `--version` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// In a build with the test-only feature `test-unhealthy`, a marker that
/// `scripts/build-image` looks for in the binary: it refuses such an agent
/// in a production image.
#[cfg(feature = "test-unhealthy")]
#[used]
pub static TEST_ONLY_BUILD_MARKER: [u8; 34] = *b"WENDYOS-TEST-ONLY-BUILD-NEVER-SHIP";

/// The optional Cargo features compiled into this build, as `--version`
/// lists them.
pub const CARGO_FEATURES: &[&str] = &[
    #[cfg(feature = "rauc")]
    "rauc",
    #[cfg(feature = "apps")]
    "apps",
    #[cfg(feature = "test-unhealthy")]
    "test-unhealthy",
];
