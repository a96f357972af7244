//! The agent's configuration: every path, port and interval, read from the
//! environment once at start. The image's systemd unit sets the same
//! variables; tests override them.

use std::path::PathBuf;
use std::time::Duration;

use wendy_identity::key::KeyAlgorithm;
use wendy_proto::contract::{mtls_port, AGENT_PORT_ENV, DEFAULT_AGENT_PORT};
#[cfg(feature = "apps")]
use wendy_proto::contract::{DEFAULT_REGISTRY_PORT, REGISTRY_PORT_ENV};

use crate::Error;

/// Directory holding `provisioning.json` (0700).
pub const CONFIG_PATH_ENV: &str = "WENDY_CONFIG_PATH";
/// Default of [`CONFIG_PATH_ENV`].
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wendy-agent";
/// Directory avahi-daemon reads static service files from.
pub const AVAHI_SERVICES_DIR_ENV: &str = "WENDY_AVAHI_SERVICES_DIR";
/// Default of [`AVAHI_SERVICES_DIR_ENV`].
pub const DEFAULT_AVAHI_SERVICES_DIR: &str = "/etc/avahi/services";
/// The first-boot seed directory (the FAT `config` partition).
pub const CONFIG_PARTITION_DIR_ENV: &str = "WENDY_CONFIG_PARTITION_DIR";
/// Default of [`CONFIG_PARTITION_DIR_ENV`].
pub const DEFAULT_CONFIG_PARTITION_DIR: &str = "/boot/config";
/// Override of the OS version file (tests).
pub const OS_VERSION_FILE_ENV: &str = "WENDY_OS_VERSION_FILE";
/// Default OS version file.
pub const DEFAULT_OS_VERSION_FILE: &str = "/etc/wendy/version.txt";
/// Override of the device-type file (tests).
pub const DEVICE_TYPE_FILE_ENV: &str = "WENDY_DEVICE_TYPE_FILE";
/// Default device-type file.
pub const DEFAULT_DEVICE_TYPE_FILE: &str = "/etc/wendyos/device-type";
/// Seconds between CRL refreshes (default 300).
pub const CRL_REFRESH_ENV: &str = "WENDY_CRL_REFRESH_SECS";
/// Address to bind (default `0.0.0.0`).
pub const BIND_ADDRESS_ENV: &str = "WENDY_AGENT_BIND";
/// The enrolment CA bundle baked into the image (the last of the three
/// enrolment trust anchors, see [`crate::anchor`]).
pub const ENROLLMENT_CA_FILE_ENV: &str = "WENDY_ENROLLMENT_CA_FILE";
/// Default of [`ENROLLMENT_CA_FILE_ENV`].
pub const DEFAULT_ENROLLMENT_CA_FILE: &str = "/etc/wendy/enrollment-ca.pem";
/// Where OS update bundles are staged and the last install is recorded (on
/// the data partition, never in a root slot).
pub const UPDATE_DIR_ENV: &str = "WENDY_UPDATE_DIR";
/// Default of [`UPDATE_DIR_ENV`].
pub const DEFAULT_UPDATE_DIR: &str = "/data/update";
/// The device key algorithm (`ml-dsa-65`, the default, or `ecdsa-p256` as
/// published WendyOS agents use).
pub const DEVICE_KEY_ALGORITHM_ENV: &str = "WENDY_DEVICE_KEY_ALGORITHM";
/// Bytes of the data partition that OS update downloads, registry pushes
/// and agent uploads never take: the agent's state and the running apps need room.
pub const DATA_RESERVE_ENV: &str = "WENDY_DATA_RESERVE_BYTES";
/// Default of [`DATA_RESERVE_ENV`]: 64 MiB.
pub const DEFAULT_DATA_RESERVE: u64 = 64 * 1024 * 1024;

/// The file whose presence makes this a development image: shipped only by
/// the development overlay (`image/rootfs-dev`, `scripts/build-image
/// --variant dev`). Without it the image counts as production, and the
/// published `UpdateAgent` is refused ([`crate::agent_update`]). Tests point
/// this at a file of their own to say "development".
pub const DEVELOPMENT_MARKER_ENV: &str = "WENDY_DEVELOPMENT_MARKER";
/// Default of [`DEVELOPMENT_MARKER_ENV`].
pub const DEFAULT_DEVELOPMENT_MARKER: &str = "/etc/wendyos/development";

/// The directory under the state directory ([`Config::config_dir`], on the
/// data partition) that holds what the apps keep outside containerd: their
/// log files ([`Config::app_log_dir`]) and `persist` volumes
/// ([`Config::volumes_dir`]).
pub const APPS_SUBDIR: &str = "apps";

/// The agent's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address both listeners bind to.
    pub bind: std::net::IpAddr,
    /// Plaintext port; mTLS is [`Config::mtls_port`].
    pub port: u16,
    /// Directory of `provisioning.json`, `crl.pem`, the device id and name.
    pub config_dir: PathBuf,
    /// Where the Avahi service file is written.
    pub avahi_services_dir: PathBuf,
    /// The first-boot seed directory.
    pub config_partition_dir: PathBuf,
    /// `/etc/wendy/version.txt`.
    pub os_version_file: PathBuf,
    /// `/etc/wendyos/device-type`.
    pub device_type_file: PathBuf,
    /// Period of CRL refreshes.
    pub crl_refresh: Duration,
    /// `/etc/wendy/enrollment-ca.pem`.
    pub enrollment_ca_file: PathBuf,
    /// The algorithm of device keys made at enrolment and renewal.
    pub device_key_algorithm: KeyAlgorithm,
    /// OS update staging and records.
    pub update_dir: PathBuf,
    /// The development-image marker ([`DEVELOPMENT_MARKER_ENV`]).
    pub development_marker: PathBuf,
    /// Bytes of the data partition that uploads never take
    /// ([`DATA_RESERVE_ENV`]).
    pub data_reserve: u64,
    /// containerd's socket (`WENDY_CONTAINERD_SOCKET`, default
    /// `/run/containerd/containerd.sock`; both defined in
    /// [`crate::containers::containerd`]).
    #[cfg(feature = "apps")]
    pub containerd_socket: PathBuf,
    /// The registry's mTLS port ([`REGISTRY_PORT_ENV`], default
    /// [`DEFAULT_REGISTRY_PORT`]).
    #[cfg(feature = "apps")]
    pub registry_port: u16,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `lookup` (testable without touching
    /// the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let path = |k: &str, d: &str| PathBuf::from(lookup(k).filter(|v| !v.is_empty()).unwrap_or_else(|| d.into()));
        let port_of = |key: &str, default: u16| match lookup(key).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u16>() {
                Ok(p) if p != 0 && p != u16::MAX => Ok(p),
                _ => Err(Error::Config(format!("{key}={v:?}: expected a port between 1 and 65534"))),
            },
        };
        let port = port_of(AGENT_PORT_ENV, DEFAULT_AGENT_PORT)?;
        let crl_refresh = match lookup(CRL_REFRESH_ENV).filter(|v| !v.is_empty()) {
            None => Duration::from_secs(300),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(s) if s > 0 => Duration::from_secs(s),
                _ => {
                    return Err(Error::Config(format!(
                        "{CRL_REFRESH_ENV}={v:?}: expected a positive number of seconds"
                    )))
                }
            },
        };
        let bind = match lookup(BIND_ADDRESS_ENV).filter(|v| !v.is_empty()) {
            None => std::net::IpAddr::from([0, 0, 0, 0]),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("{BIND_ADDRESS_ENV}={v:?}: expected an IP address")))?,
        };
        let device_key_algorithm = match lookup(DEVICE_KEY_ALGORITHM_ENV).filter(|v| !v.is_empty()) {
            None => KeyAlgorithm::MlDsa65,
            Some(v) => match v.parse::<KeyAlgorithm>() {
                Ok(a @ (KeyAlgorithm::MlDsa65 | KeyAlgorithm::EcdsaP256)) => a,
                _ => {
                    return Err(Error::Config(format!(
                        "{DEVICE_KEY_ALGORITHM_ENV}={v:?}: expected ml-dsa-65 or ecdsa-p256"
                    )))
                }
            },
        };
        let data_reserve = match lookup(DATA_RESERVE_ENV).filter(|v| !v.is_empty()) {
            None => DEFAULT_DATA_RESERVE,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::Config(format!("{DATA_RESERVE_ENV}={v:?}: expected a number of bytes")))?,
        };
        Ok(Self {
            bind,
            port,
            config_dir: path(CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH),
            avahi_services_dir: path(AVAHI_SERVICES_DIR_ENV, DEFAULT_AVAHI_SERVICES_DIR),
            config_partition_dir: path(CONFIG_PARTITION_DIR_ENV, DEFAULT_CONFIG_PARTITION_DIR),
            os_version_file: path(OS_VERSION_FILE_ENV, DEFAULT_OS_VERSION_FILE),
            device_type_file: path(DEVICE_TYPE_FILE_ENV, DEFAULT_DEVICE_TYPE_FILE),
            crl_refresh,
            enrollment_ca_file: path(ENROLLMENT_CA_FILE_ENV, DEFAULT_ENROLLMENT_CA_FILE),
            device_key_algorithm,
            update_dir: path(UPDATE_DIR_ENV, DEFAULT_UPDATE_DIR),
            development_marker: path(DEVELOPMENT_MARKER_ENV, DEFAULT_DEVELOPMENT_MARKER),
            data_reserve,
            #[cfg(feature = "apps")]
            containerd_socket: path(
                crate::containers::containerd::SOCKET_ENV,
                crate::containers::containerd::DEFAULT_SOCKET,
            ),
            #[cfg(feature = "apps")]
            registry_port: port_of(REGISTRY_PORT_ENV, DEFAULT_REGISTRY_PORT)?,
        })
    }

    /// The mTLS port: plaintext port + 1.
    pub fn mtls_port(&self) -> u16 {
        mtls_port(self.port)
    }

    /// `provisioning.json`.
    pub fn provisioning_file(&self) -> PathBuf {
        self.config_dir.join(crate::state::PROVISIONING_FILE)
    }

    /// The on-disk copy of the latest CRLs.
    pub fn crl_file(&self) -> PathBuf {
        self.config_dir.join("crl.pem")
    }

    /// Whether this is a development image (the marker exists; anything
    /// else, an unreadable path included, counts as production).
    pub fn is_development_image(&self) -> bool {
        self.development_marker.is_file()
    }

    /// The apps' log files, `<app>.log` (see [`APPS_SUBDIR`]).
    pub fn app_log_dir(&self) -> PathBuf {
        self.config_dir.join(APPS_SUBDIR).join("logs")
    }

    /// The apps' `persist` volumes, one directory each (see [`APPS_SUBDIR`]).
    pub fn volumes_dir(&self) -> PathBuf {
        self.config_dir.join(APPS_SUBDIR).join("volumes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.port, DEFAULT_AGENT_PORT);
        assert_eq!(c.mtls_port(), DEFAULT_AGENT_PORT + 1);
        assert_eq!(c.config_dir, PathBuf::from(DEFAULT_CONFIG_PATH));
    }

    #[test]
    fn the_development_marker_is_where_the_dev_overlay_puts_it() {
        let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/rootfs-dev");
        let marker = overlay.join(DEFAULT_DEVELOPMENT_MARKER.trim_start_matches('/'));
        assert!(marker.is_file(), "{} is missing", marker.display());
    }

    #[test]
    fn bad_port_is_a_clear_error() {
        let e = Config::from_lookup(|k| (k == AGENT_PORT_ENV).then(|| "nope".into())).unwrap_err();
        assert!(e.to_string().contains(AGENT_PORT_ENV));
    }
}
