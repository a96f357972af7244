//! Device state on disk: `provisioning.json` and the atomic-write helper
//! every file the agent owns goes through.
//!
//! A write is [`wendy_net::atomic_write`]: temp file in the same directory,
//! write, fsync, rename over the target, fsync the directory. A crash at any
//! point leaves either the old file or the new one, never a partial one. Temp
//! files left by a crash are removed (and logged) at start. Reads go through
//! [`wendy_net::safe_read`]: a FIFO, symlink, directory or oversized file is
//! set aside with a warning, never followed, blocked on or read whole.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wendy_net::safe_read::{Disposition, ReadError};
use zeroize::Zeroizing;

use crate::crash;
use crate::Error;

/// File name of the device identity inside the config directory.
pub const PROVISIONING_FILE: &str = "provisioning.json";
/// Suffix of temp files; anything `*.<TEMP_SUFFIX>` is an interrupted write.
pub const TEMP_SUFFIX: &str = wendy_net::atomic_write::TEMP_SUFFIX;
/// Mode of `provisioning.json`.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the config directory.
pub const DIR_MODE: u32 = 0o700;
/// Largest `provisioning.json` read; anything bigger is malformed.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The contents of `provisioning.json`. Field names are the WendyOS ones.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provisioning {
    /// Always `true` in a stored file.
    pub enrolled: bool,
    /// pki-core's address, `host:port`.
    pub cloud_host: String,
    /// Organization id.
    pub org_id: i32,
    /// Asset (device) id.
    pub asset_id: i32,
    /// The device's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The device certificate, PEM.
    pub cert_pem: String,
    /// The issuing CA chain, PEM. Empty means the device must re-provision.
    pub chain_pem: String,
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioning")
            .field("enrolled", &self.enrolled)
            .field("cloud_host", &self.cloud_host)
            .field("org_id", &self.org_id)
            .field("asset_id", &self.asset_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Provisioning {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_pem);
    }
}

impl Provisioning {
    /// Parses a file's bytes. Never panics on hostile input.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let p: Self = serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        if !p.enrolled {
            return Err(Error::Malformed("\"enrolled\" is false".into()));
        }
        Ok(p)
    }

    /// Serializes as pretty JSON (wiped when dropped).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        // Serializing plain strings and integers cannot fail.
        Zeroizing::new(serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No `provisioning.json`.
    Absent,
    /// A well-formed file.
    Present(Provisioning),
    /// The file was unreadable or malformed; it was moved to `kept_at`.
    SetAside {
        /// Why it was refused.
        reason: String,
        /// Where it now is.
        kept_at: PathBuf,
    },
}

/// Makes sure `dir` exists with mode 0700.
pub fn ensure_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(|e| Error::io("chmod", dir, e))
}

/// Removes temp files an interrupted write left in `dir`; returns them.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == TEMP_SUFFIX) && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Loads `provisioning.json` from `dir`. A malformed file is never deleted:
/// it is renamed to `provisioning.json.corrupt-<unix time>` and reported.
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    let path = dir.join(PROVISIONING_FILE);
    let bytes = match read_limited(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(ReadError::NotFound { .. }) => return Ok(Loaded::Absent),
        Err(e) if e.is_hostile() => {
            return match wendy_net::safe_read::set_aside(&e) {
                Disposition::SetAside(kept_at) => Ok(Loaded::SetAside { reason: e.to_string(), kept_at }),
                _ => Err(Error::io("set aside", &path, std::io::Error::other(e.to_string()))),
            }
        }
        Err(e) => return set_aside(&path, &format!("unreadable: {e}")),
    };
    match Provisioning::from_json(&bytes) {
        Ok(p) => Ok(Loaded::Present(p)),
        Err(e) => set_aside(&path, &e.to_string()),
    }
}

/// Reads a state file the agent owns: regular, not a link, at most
/// [`MAX_FILE_BYTES`] (checked on the descriptor).
pub fn read_limited(path: &Path) -> Result<Vec<u8>, ReadError> {
    wendy_net::safe_read::read(path, MAX_FILE_BYTES)
}

/// Renames `path` to `<path>.corrupt-<unix seconds>` and returns
/// [`Loaded::SetAside`].
pub fn set_aside(path: &Path, reason: &str) -> Result<Loaded, Error> {
    let kept_at = aside_path(path, "corrupt");
    fs::rename(path, &kept_at).map_err(|e| Error::io("set aside", path, e))?;
    sync_parent(path)?;
    Ok(Loaded::SetAside { reason: reason.to_owned(), kept_at })
}

/// `<path>.<what>-<unix seconds>`, unique within the directory.
pub fn aside_path(path: &Path, what: &str) -> PathBuf {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let mut n = 0;
    loop {
        let suffix = if n == 0 { format!("{what}-{secs}") } else { format!("{what}-{secs}-{n}") };
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".");
        name.push(suffix);
        let candidate = path.with_file_name(name);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Stores `p` as `provisioning.json` in `dir`, atomically, mode 0600, with
/// the provisioning crash points armed.
pub fn store(dir: &Path, p: &Provisioning) -> Result<(), Error> {
    ensure_dir(dir)?;
    write_atomic(&dir.join(PROVISIONING_FILE), &p.to_json(), FILE_MODE, true)
}

/// Removes `provisioning.json` and the CRL copy from `dir`, durably.
pub fn remove(dir: &Path) -> Result<(), Error> {
    for name in [PROVISIONING_FILE, "crl.pem"] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    sync_dir(dir)
}

/// Writes `bytes` to `path` atomically with `mode`: temp file, fsync,
/// rename, fsync the directory. With `crash_points`, the provisioning crash
/// points between the steps are armed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, crash_points: bool) -> Result<(), Error> {
    use wendy_net::atomic_write::Step;
    let mut step = |s: Step| {
        if crash_points {
            crash::point(match s {
                Step::MidTempWrite => "mid-temp-write",
                Step::AfterTempFsync => "after-temp-fsync",
                Step::AfterRename => "after-rename",
                _ => "after-dir-fsync",
            })
        }
    };
    wendy_net::atomic_write::write_with(path, bytes, Some(mode), &mut step).map_err(write_error)
}

pub(crate) fn write_error(e: wendy_net::atomic_write::WriteError) -> Error {
    Error::Io { op: e.op, path: e.path, source: e.source }
}

fn sync_parent(path: &Path) -> Result<(), Error> {
    wendy_net::atomic_write::sync_parent(path).map_err(write_error)
}

/// fsyncs a directory so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    wendy_net::atomic_write::sync_dir(dir).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provisioning {
        Provisioning {
            enrolled: true,
            cloud_host: "10.0.0.1:50051".into(),
            org_id: 1,
            asset_id: 2,
            key_pem: "k".into(),
            cert_pem: "c".into(),
            chain_pem: "ch".into(),
        }
    }

    #[test]
    fn field_names_are_the_wendyos_ones() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["assetId", "certPem", "chainPem", "cloudHost", "enrolled", "keyPem", "orgId"]);
    }

    #[test]
    fn store_load_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg");
        store(&cfg, &sample()).unwrap();
        let mode = fs::metadata(cfg.join(PROVISIONING_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o700);
        match load(&cfg).unwrap() {
            Loaded::Present(p) => assert!(p == sample()),
            other => panic!("{other:?}"),
        }
        remove(&cfg).unwrap();
        assert!(matches!(load(&cfg).unwrap(), Loaded::Absent));
    }

    #[test]
    fn corrupt_file_is_kept_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(PROVISIONING_FILE), b"{\"enrolled\": tr").unwrap();
        match load(dir.path()).unwrap() {
            Loaded::SetAside { kept_at, reason } => {
                assert!(reason.contains("malformed"), "{reason}");
                assert_eq!(fs::read(&kept_at).unwrap(), b"{\"enrolled\": tr");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(dir.path()).unwrap(), Loaded::Absent));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        for input in [&b""[..], b"null", b"[]", b"{\"enrolled\":false}", &[0xff; 64]] {
            assert!(Provisioning::from_json(input).is_err());
        }
    }

    #[test]
    fn hostile_files_are_set_aside_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PROVISIONING_FILE);
        std::os::unix::fs::symlink("/etc/shadow", &p).unwrap();
        match load(dir.path()).unwrap() {
            Loaded::SetAside { reason, kept_at } => {
                assert!(reason.contains("symbolic link"), "{reason}");
                assert!(kept_at.ends_with("provisioning.json.rejected"));
            }
            other => panic!("{other:?}"),
        }
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(load(dir.path()).unwrap(), Loaded::SetAside { .. }));
        fs::File::create(&p).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
        match load(dir.path()).unwrap() {
            Loaded::SetAside { reason, .. } => {
                assert!(reason.contains("1048576-byte limit"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(dir.path()).unwrap(), Loaded::Absent));
    }

    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(format!("provisioning.json.1.{TEMP_SUFFIX}"));
        fs::write(&tmp, b"{").unwrap();
        assert_eq!(remove_stale_temps(dir.path()), vec![tmp]);
    }
}
