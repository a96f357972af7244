//! First boot: importing the seed from the config partition.
//!
//! - `provisioning.json`: imported if the device has no identity yet and the
//!   file is a usable identity;
//! - `credential/` plus `wendy.conf [credential]`: an operator-provisioned
//!   credential (see [`crate::credential_seed`]);
//! - `wendy.conf` (INI, `[device] name=`): the device name. While a
//!   credential seed is pending (not imported), `wendy.conf` stays in place
//!   because it carries the passphrase.
//!
//! Each imported file is renamed to `<name>.imported` so it is used once and
//! never lost. A seed that fails to import is left in place and logged.
//!
//! Anyone holding the SD card can write the partition, so every file is read
//! with [`wendy_net::safe_read`]: a FIFO, symlink, directory or file over its
//! limit is never opened blocking, followed or read whole; it is set aside
//! as `<name>.rejected` (left in place on a read-only medium) with a warning
//! naming it and the limit.

use std::path::Path;

use crate::credential_seed;
use crate::state::{self, Provisioning};
use crate::Error;

/// File in the config directory holding the device name.
pub const NAME_FILE: &str = "device-name";
/// File in the config directory holding the stable device id.
pub const ID_FILE: &str = "device-id";
/// Largest `wendy.conf` read (an INI file of a few lines).
pub const MAX_CONF_BYTES: u64 = 64 * 1024;
/// Largest `device-name` or `device-id` read.
const MAX_SMALL_FILE_BYTES: u64 = 4 * 1024;

/// Reads a seed or state file with [`wendy_net::safe_read`]. `Ok(None)`: no
/// such file. A hostile file is set aside with a warning and reported as an
/// error.
pub(crate) fn read_seed(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    match wendy_net::safe_read::read(path, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(wendy_net::safe_read::ReadError::NotFound { .. }) => Ok(None),
        Err(e) => {
            if e.is_hostile() {
                wendy_net::safe_read::set_aside(&e);
            }
            Err(Error::io("read", path, std::io::Error::other(e.to_string())))
        }
    }
}

/// Imports whatever seed is present in `seed_dir` into `config_dir`.
pub fn import(seed_dir: &Path, config_dir: &Path) {
    if !seed_dir.is_dir() {
        return;
    }
    let seed = seed_dir.join(state::PROVISIONING_FILE);
    match read_seed(&seed, state::MAX_FILE_BYTES) {
        Ok(None) => {}
        Ok(Some(bytes)) => match import_identity(&seed, &zeroize::Zeroizing::new(bytes), config_dir) {
            Ok(true) => {
                tracing::info!(from = %seed.display(), "imported provisioning.json from the config partition")
            }
            Ok(false) => {
                tracing::warn!(from = %seed.display(), "config partition carries provisioning.json but the device is already provisioned; left in place")
            }
            Err(e) => {
                tracing::error!(from = %seed.display(), error = %e, "could not import provisioning.json from the config partition; left in place")
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "could not import provisioning.json from the config partition")
        }
    }
    let credential_pending = match credential_seed::import(seed_dir, config_dir) {
        Ok(credential_seed::Outcome::Absent) => false,
        Ok(credential_seed::Outcome::Imported { org_id, asset_id }) => {
            tracing::info!(org_id, asset_id, "imported the operator-provisioned credential from the config partition");
            false
        }
        Ok(credential_seed::Outcome::AlreadyProvisioned) => {
            tracing::warn!(
                "config partition carries a credential but the device is already provisioned; left in place"
            );
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "could not import the operator-provisioned credential from the config partition; files left in place, starting unprovisioned");
            true
        }
    };
    let conf = seed_dir.join(credential_seed::CONF_FILE);
    let text = match read_seed(&conf, MAX_CONF_BYTES) {
        Ok(bytes) => bytes.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Err(e) => {
            tracing::error!(error = %e, "could not import wendy.conf");
            None
        }
    };
    if let Some(text) = text {
        let imported = (|| -> Result<(), Error> {
            if let Some(name) = ini_value(&text, "device", "name") {
                store_name(config_dir, &name)?;
                tracing::info!(name, "device name from wendy.conf");
            }
            if let Some(fp) = crate::anchor::import_from_conf(&text, config_dir)? {
                tracing::info!(ca_fingerprint = %fp, "enrolment trust anchor from wendy.conf");
            }
            if credential_pending {
                return Ok(());
            }
            mark_imported(&conf)
        })();
        if let Err(e) = imported {
            tracing::error!(error = %e, "could not import wendy.conf");
        }
    }
}

fn import_identity(seed: &Path, bytes: &[u8], config_dir: &Path) -> Result<bool, Error> {
    if config_dir.join(state::PROVISIONING_FILE).exists() {
        return Ok(false);
    }
    let p = Provisioning::from_json(bytes)?;
    crate::enroll::check_identity(&p, None)?;
    state::store(config_dir, &p)?;
    mark_imported(seed)?;
    Ok(true)
}

fn mark_imported(path: &Path) -> Result<(), Error> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".imported");
    let to = path.with_file_name(name);
    std::fs::rename(path, &to).map_err(|e| Error::io("rename", path, e))
}

/// `key` in `[section]` of an INI text, cleaned for use as a name: control
/// characters dropped, at most 63 characters.
pub fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    ini_raw(text, section, key).map(|v| v.chars().filter(|c| !c.is_control()).take(63).collect())
}

/// `key` in `[section]` of an INI text (`;`/`#` comments, trimmed values,
/// surrounding quotes removed), if present and not empty.
pub fn ini_raw<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = s.trim().eq_ignore_ascii_case(section);
            continue;
        }
        if in_section {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim().eq_ignore_ascii_case(key) {
                    let v = v.trim().trim_matches('"');
                    return (!v.is_empty()).then_some(v);
                }
            }
        }
    }
    None
}

/// Persists the device name.
pub fn store_name(config_dir: &Path, name: &str) -> Result<(), Error> {
    state::ensure_dir(config_dir)?;
    state::write_atomic(&config_dir.join(NAME_FILE), name.as_bytes(), 0o600, false)
}

/// The device name: stored, else the host name, else `wendyos`.
pub fn device_name(config_dir: &Path) -> String {
    let stored = read_seed(&config_dir.join(NAME_FILE), MAX_SMALL_FILE_BYTES)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    stored
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wendyos".into())
}

/// The stable device id, made (random, 16 bytes hex) on first use.
pub fn device_id(config_dir: &Path) -> Result<String, Error> {
    let path = config_dir.join(ID_FILE);
    if let Ok(Some(bytes)) = read_seed(&path, MAX_SMALL_FILE_BYTES) {
        let s = String::from_utf8_lossy(&bytes);
        let s = s.trim();
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s.to_owned());
        }
    }
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    state::ensure_dir(config_dir)?;
    state::write_atomic(&path, id.as_bytes(), 0o600, false)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_name() {
        let text = "# c\n[wifi]\nname=no\n[device]\n name = \"Kitchen Pi\" \n";
        assert_eq!(ini_value(text, "device", "name").as_deref(), Some("Kitchen Pi"));
        assert_eq!(ini_value("[device]\n", "device", "name"), None);
    }

    #[test]
    fn wendy_conf_is_imported_once() {
        let seed = tempfile::tempdir().unwrap();
        let cfg = tempfile::tempdir().unwrap();
        std::fs::write(seed.path().join("wendy.conf"), "[device]\nname=pi-1\n").unwrap();
        import(seed.path(), cfg.path());
        assert_eq!(device_name(cfg.path()), "pi-1");
        assert!(seed.path().join("wendy.conf.imported").exists());
        assert!(!seed.path().join("wendy.conf").exists());
    }

    #[test]
    fn hostile_seed_files_are_set_aside_and_never_block() {
        let seed = tempfile::tempdir().unwrap();
        let cfg = tempfile::tempdir().unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&seed.path().join("provisioning.json"), mode).unwrap();
        std::fs::File::create(seed.path().join("wendy.conf")).unwrap().set_len(3 << 30).unwrap();
        let start = std::time::Instant::now();
        import(seed.path(), cfg.path());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(seed.path().join("provisioning.json.rejected").exists());
        assert!(seed.path().join("wendy.conf.rejected").exists());
        assert!(!seed.path().join("wendy.conf.imported").exists());
        std::os::unix::fs::symlink("/etc/shadow", seed.path().join("provisioning.json")).unwrap();
        std::fs::create_dir(seed.path().join("wendy.conf")).unwrap();
        import(seed.path(), cfg.path());
        assert!(seed.path().join("provisioning.json.rejected-1").symlink_metadata().unwrap().file_type().is_symlink());
        assert!(seed.path().join("wendy.conf.rejected-1").is_dir());
        assert!(!cfg.path().join("provisioning.json").exists());
    }

    #[test]
    fn bad_seed_identity_is_left_in_place() {
        let seed = tempfile::tempdir().unwrap();
        let cfg = tempfile::tempdir().unwrap();
        std::fs::write(seed.path().join("provisioning.json"), "{}").unwrap();
        import(seed.path(), cfg.path());
        assert!(seed.path().join("provisioning.json").exists());
        assert!(!cfg.path().join("provisioning.json").exists());
    }
}
