//! The CLI's state in `$XDG_CONFIG_HOME/wendy/` (default `~/.config/wendy/`):
//!
//! - `key.pem` (0600): the CLI's private key;
//! - `cert.pem`: its user certificate;
//! - `ca.pem`: the CA bundle devices are verified against;
//! - `config.json`: the pki-core address and its pinned CA fingerprint;
//! - `devices.json`: which devices are known to be provisioned.
//!
//! Every write is atomic (temp file, fsync, rename, fsync directory) and
//! the directory is 0700, so a crash never leaves a half-written file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use wendy_identity::tls::Credentials;
use wendy_identity::verify::CertificateInfo;

use crate::addr::HostPort;
use crate::error::CliError;

/// File names inside the config directory.
pub const KEY_FILE: &str = "key.pem";
/// The user certificate.
pub const CERT_FILE: &str = "cert.pem";
/// The CA bundle.
pub const CA_FILE: &str = "ca.pem";
/// The pki-core address and pin.
pub const CONFIG_FILE: &str = "config.json";
/// Known devices.
pub const DEVICES_FILE: &str = "devices.json";

/// Largest config file we read; anything bigger is corrupt.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// `config.json`: where pki-core is and which CA it must present.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// pki-core as the CLI reaches it.
    pub cloud_host: String,
    /// SHA-256 of pki-core's CA certificate, 64 lowercase hex digits.
    pub ca_fingerprint: String,
    /// Organisation the certificate was issued for.
    #[serde(default)]
    pub organization_id: i32,
}

/// What the CLI remembers about a device.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownDevice {
    /// Whether the device was last seen provisioned (mTLS on port + 1).
    pub provisioned: bool,
    /// Its name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its asset id, once provisioned by us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<i32>,
}

/// `devices.json`: known devices by base (plaintext) address.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Devices {
    /// Keyed by `host:port` of the plaintext (base) port.
    pub devices: BTreeMap<String, KnownDevice>,
}

impl Devices {
    /// Looks a device up by name.
    pub fn by_name(&self, name: &str) -> Option<(HostPort, &KnownDevice)> {
        self.devices
            .iter()
            .find(|(_, d)| d.name.as_deref() == Some(name))
            .and_then(|(k, d)| HostPort::parse(k, 0).ok().map(|a| (a, d)))
    }
}

/// The config directory and everything in it.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store at `$XDG_CONFIG_HOME/wendy` or `$HOME/.config/wendy`.
    pub fn from_env() -> Result<Self, CliError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(h) => PathBuf::from(h).join(".config"),
                None => {
                    return Err(CliError::Usage(
                        "neither XDG_CONFIG_HOME nor HOME is set; set one to say where to keep credentials".into(),
                    ))
                }
            },
        };
        Ok(Self::at(base.join("wendy")))
    }

    /// The store at `dir`.
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the directory (0700) if needed and tightens it if it exists.
    pub fn ensure_dir(&self) -> Result<(), CliError> {
        fs::create_dir_all(&self.dir).map_err(|e| CliError::io(format!("creating {}", self.dir.display()), e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| CliError::io(format!("setting permissions on {}", self.dir.display()), e))
    }

    /// Writes `name` atomically with `mode`.
    pub fn write(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), CliError> {
        self.ensure_dir()?;
        write_atomic(&self.dir, name, contents, mode)
    }

    /// Reads `name`; `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<String>, CliError> {
        let path = self.path(name);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CliError::io(format!("reading {}", path.display()), e)),
        };
        let mut s = String::new();
        use std::io::Read;
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut s)
            .map_err(|e| CliError::Config { path: path.clone(), reason: e.to_string() })?;
        if s.len() as u64 > MAX_FILE_BYTES {
            return Err(CliError::Config { path, reason: "larger than 1 MiB".into() });
        }
        Ok(Some(s))
    }

    /// Removes `name` if present; whether it was there.
    pub fn remove(&self, name: &str) -> Result<bool, CliError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CliError::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Reads `config.json`.
    pub fn config(&self) -> Result<Option<Config>, CliError> {
        self.read_json(CONFIG_FILE)
    }

    /// Writes `config.json`.
    pub fn save_config(&self, config: &Config) -> Result<(), CliError> {
        self.write_json(CONFIG_FILE, config)
    }

    /// Reads `devices.json` (empty if absent or corrupt: it is only a cache).
    pub fn devices(&self) -> Devices {
        self.read_json(DEVICES_FILE).ok().flatten().unwrap_or_default()
    }

    /// Records what we learned about the device at `addr`.
    pub fn remember_device(&self, addr: &HostPort, update: impl FnOnce(&mut KnownDevice)) -> Result<(), CliError> {
        let mut devices = self.devices();
        update(devices.devices.entry(addr.to_string()).or_default());
        self.write_json(DEVICES_FILE, &devices)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, CliError> {
        match self.read(name)? {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| CliError::Config { path: self.path(name), reason: e.to_string() }),
        }
    }

    fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), CliError> {
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| CliError::Config { path: self.path(name), reason: e.to_string() })?;
        bytes.push(b'\n');
        self.write(name, &bytes, 0o600)
    }

    /// Loads the stored login: config, credentials and certificate facts.
    /// Errors if nothing is stored; does not check expiry.
    pub fn login(&self) -> Result<Login, CliError> {
        let not_logged_in = || CliError::NotLoggedIn { dir: self.dir.clone() };
        let config = self.config()?.ok_or_else(not_logged_in)?;
        let key = zeroize::Zeroizing::new(self.read(KEY_FILE)?.ok_or_else(not_logged_in)?);
        let cert = self.read(CERT_FILE)?.ok_or_else(not_logged_in)?;
        let ca = self.read(CA_FILE)?.ok_or_else(not_logged_in)?;
        let info = CertificateInfo::from_pem(&cert)
            .map_err(|e| CliError::Config { path: self.path(CERT_FILE), reason: e.to_string() })?;
        let credentials = Credentials::from_pems(&key, &cert, &ca)
            .map_err(|e| CliError::Config { path: self.path(KEY_FILE), reason: e.to_string() })?;
        Ok(Login { config, info, credentials, ca_pem: ca })
    }

    /// Like [`Store::login`], and refuses an expired certificate.
    pub fn valid_login(&self) -> Result<Login, CliError> {
        let login = self.login()?;
        if login.is_expired() {
            return Err(CliError::CertificateExpired { not_after: rfc3339(login.info.not_after) });
        }
        Ok(login)
    }
}

/// A stored login.
#[derive(Debug)]
pub struct Login {
    /// `config.json`.
    pub config: Config,
    /// The user certificate's facts.
    pub info: CertificateInfo,
    /// Key and chain for mTLS.
    pub credentials: Credentials,
    /// The CA bundle, PEM.
    pub ca_pem: String,
}

impl Login {
    /// Whether the certificate has expired.
    pub fn is_expired(&self) -> bool {
        OffsetDateTime::now_utc() > self.info.not_after
    }
}

/// Formats a time as RFC 3339.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Writes `dir/name` atomically ([`wendy_net::atomic_write`]): a temp file
/// in the same directory with `mode`, fsync, rename over the target, fsync
/// the directory.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let target = dir.join(name);
    wendy_net::atomic_write::write(&target, contents, Some(mode))
        .map_err(|e| CliError::io(format!("writing {}", target.display()), e.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::at(t.path().join("wendy"));
        (t, s)
    }

    #[test]
    fn atomic_write_sets_modes() {
        let (_t, s) = store();
        s.write(KEY_FILE, b"secret", 0o600).unwrap();
        s.write(KEY_FILE, b"secret2", 0o600).unwrap();
        let meta = fs::metadata(s.path(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(s.read(KEY_FILE).unwrap().unwrap(), "secret2");
        let leftovers: Vec<_> = fs::read_dir(s.dir()).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind");
    }

    #[test]
    fn existing_dir_is_tightened() {
        let (_t, s) = store();
        fs::create_dir_all(s.dir()).unwrap();
        fs::set_permissions(s.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        s.write(CONFIG_FILE, b"{}", 0o600).unwrap();
        assert_eq!(fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn config_round_trips_and_missing_is_none() {
        let (_t, s) = store();
        assert!(s.config().unwrap().is_none());
        let c = Config { cloud_host: "127.0.0.1:1".into(), ca_fingerprint: "ab".repeat(32), organization_id: 3 };
        s.save_config(&c).unwrap();
        assert_eq!(s.config().unwrap().unwrap(), c);
    }

    #[test]
    fn corrupt_config_is_a_clear_error() {
        let (_t, s) = store();
        s.write(CONFIG_FILE, b"{not json", 0o600).unwrap();
        let e = s.config().unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn missing_login_says_what_to_do() {
        let (_t, s) = store();
        let e = s.login().unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::Auth);
        assert!(e.to_string().contains("wendy auth login-local"), "{e}");
    }

    #[test]
    fn devices_cache_tolerates_corruption() {
        let (_t, s) = store();
        s.write(DEVICES_FILE, b"garbage", 0o600).unwrap();
        assert!(s.devices().devices.is_empty());
        let a = HostPort::parse("10.0.0.2:50051", 1).unwrap();
        s.remember_device(&a, |d| {
            d.provisioned = true;
            d.name = Some("pi".into());
        })
        .unwrap();
        let (addr, d) = s.devices().by_name("pi").map(|(a, d)| (a, d.clone())).unwrap();
        assert_eq!(addr, a);
        assert!(d.provisioned);
    }
}
