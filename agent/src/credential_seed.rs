//! First boot: importing an operator-provisioned credential (decision 0082).
//!
//! `pkicore credential provision --role ROLE --device ID --out <partition>/credential`
//! writes `key.age`, `cert.pem` and `chain.pem`; the operator adds to
//! `wendy.conf`:
//!
//! ```ini
//! [credential]
//! passphrase = four-words-from-pkicore
//! cloud_host = 192.168.1.10:7443
//! organization_id = 1
//! asset_id = 7
//! ```
//!
//! The key is decrypted, the identity checked (key matches certificate,
//! non-empty chain, serverAuth, `CN=sh/wendy/<org>/<asset>`) and stored as
//! `provisioning.json`. Then `credential/` becomes `credential.imported/`
//! and the passphrase line is removed from `wendy.conf`. On any failure the
//! files stay as they are and the device comes up unprovisioned. Neither the
//! passphrase nor the key is ever logged.

use std::io::Read;
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use crate::state::{self, Provisioning};

/// Directory in the config partition holding the credential files.
pub const SEED_DIR: &str = "credential";
/// The age file with the PKCS#8 private key PEM.
pub const KEY_FILE: &str = "key.age";
/// The device certificate, PEM.
pub const CERT_FILE: &str = "cert.pem";
/// The issuing CA chain, PEM.
pub const CHAIN_FILE: &str = "chain.pem";
/// The `wendy.conf` section with passphrase and cloud details.
pub const SECTION: &str = "credential";
/// The config-partition file carrying the `[credential]` section.
pub const CONF_FILE: &str = "wendy.conf";
/// Largest seed file read.
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Largest scrypt work factor accepted (pki-core uses 15; 2^18 is 256 MiB).
const MAX_WORK_FACTOR: u8 = 18;

/// Why a credential seed was not imported. Never carries secrets.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A required file or `wendy.conf` value is missing or invalid.
    #[error("{0}")]
    Incomplete(String),
    /// The age file could not be decrypted.
    #[error("{0}")]
    Decrypt(String),
    /// The decrypted key, certificate and chain are not a usable identity.
    #[error("the credential is not a usable device identity: {0}")]
    Identity(#[from] wendy_identity::Error),
    /// Reading or writing files failed.
    #[error(transparent)]
    Io(#[from] crate::Error),
}

/// What [`import`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No `credential/` directory in the config partition.
    Absent,
    /// Imported: `provisioning.json` written, seed marked imported.
    Imported {
        /// Organization id.
        org_id: i32,
        /// Asset id.
        asset_id: i32,
    },
    /// The device already has an identity; the seed was left in place.
    AlreadyProvisioned,
}

/// Whether `seed_dir` carries a credential seed.
pub fn present(seed_dir: &Path) -> bool {
    seed_dir.join(SEED_DIR).is_dir()
}

/// Imports the credential seed in `seed_dir` into `config_dir`.
pub fn import(seed_dir: &Path, config_dir: &Path) -> Result<Outcome, SeedError> {
    let dir = seed_dir.join(SEED_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SeedError::Incomplete(format!(
                "{} is not a directory (a link or a file); not followed",
                dir.display()
            )))
        }
        Err(_) => return Ok(Outcome::Absent),
    }
    if config_dir.join(state::PROVISIONING_FILE).exists() {
        return Ok(Outcome::AlreadyProvisioned);
    }
    let conf_path = seed_dir.join(CONF_FILE);
    let conf = Zeroizing::new(read_text(&conf_path).map_err(|_| {
        SeedError::Incomplete(format!("{} with a [{SECTION}] section is missing", conf_path.display()))
    })?);
    let value = |key: &str| {
        crate::firstboot::ini_value(&conf, SECTION, key)
            .map(Zeroizing::new)
            .ok_or_else(|| SeedError::Incomplete(format!("{CONF_FILE} [{SECTION}] has no {key}=")))
    };
    let id =
        |key: &str| -> Result<i32, SeedError> {
            value(key)?.parse::<i32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                SeedError::Incomplete(format!("{CONF_FILE} [{SECTION}] {key}= is not a positive integer"))
            })
        };
    let passphrase = value("passphrase")?;
    let cloud_host = value("cloud_host")?.to_string();
    let (org_id, asset_id) = (id("organization_id")?, id("asset_id")?);

    let age_file = Zeroizing::new(read_text(&dir.join(KEY_FILE))?);
    let cert_pem = read_text(&dir.join(CERT_FILE))?;
    let chain_pem = read_text(&dir.join(CHAIN_FILE))?;
    let key_pem = decrypt(age_file.as_bytes(), &passphrase)?;

    let p = Provisioning {
        enrolled: true,
        cloud_host,
        org_id,
        asset_id,
        key_pem: key_pem.to_string(),
        cert_pem,
        chain_pem,
    };
    let cn = wendy_identity::profile::device_common_name(org_id, asset_id);
    crate::enroll::check_identity(&p, Some(&cn))?;
    state::store(config_dir, &p)?;

    // The identity is durable; now mark the seed used. A failure here leaves
    // a provisioned device and a seed the next boot reports as redundant.
    let imported = imported_path(&dir);
    std::fs::rename(&dir, &imported).map_err(|e| crate::Error::io("rename", &dir, e))?;
    scrub_passphrase(&conf_path, &conf)?;
    state::sync_dir(seed_dir)?;
    Ok(Outcome::Imported { org_id, asset_id })
}

/// `<path>.imported`, or a timestamped variant if that exists already.
fn imported_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".imported");
    let to = path.with_file_name(name);
    if to.exists() {
        state::aside_path(path, "imported")
    } else {
        to
    }
}

/// Reads a seed file through [`crate::firstboot::read_seed`] (regular file,
/// not a link, at most [`MAX_FILE_BYTES`]; a hostile one is set aside).
fn read_text(path: &Path) -> Result<String, crate::Error> {
    let bytes = crate::firstboot::read_seed(path, MAX_FILE_BYTES)?
        .ok_or_else(|| crate::Error::io("read", path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    String::from_utf8(bytes).map_err(|_| {
        crate::Error::io("read", path, std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
    })
}

/// Decrypts an armored (or binary) age scrypt file to the key PEM.
pub fn decrypt(file: &[u8], passphrase: &str) -> Result<Zeroizing<String>, SeedError> {
    let bad = |e: &dyn std::fmt::Display| SeedError::Decrypt(format!("{KEY_FILE} is not a usable age file: {e}"));
    let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(file)).map_err(|e| bad(&e))?;
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_owned()));
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let mut reader = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(|e| match e {
        age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => SeedError::Decrypt(format!(
            "the passphrase in {CONF_FILE} [{SECTION}] does not open {KEY_FILE} (wrong passphrase, or a key.age from another provisioning)"
        )),
        other => bad(&other),
    })?;
    let mut out = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut out).map_err(|e| bad(&e))?;
    let text =
        std::str::from_utf8(&out).map_err(|_| SeedError::Decrypt(format!("{KEY_FILE} does not hold a PEM key")))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Rewrites `wendy.conf` without the `[credential] passphrase=` line
/// (atomically; no chmod, the partition may be FAT).
fn scrub_passphrase(conf_path: &Path, text: &str) -> Result<(), crate::Error> {
    let scrubbed = Zeroizing::new(without_passphrase(text));
    wendy_net::atomic_write::write(conf_path, scrubbed.as_bytes(), None).map_err(state::write_error)
}

/// `text` minus `passphrase=` lines of the `[credential]` section.
pub fn without_passphrase(text: &str) -> String {
    let mut in_section = false;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = s.trim().eq_ignore_ascii_case(SECTION);
        } else if in_section && t.split_once('=').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("passphrase")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn encrypt(plain: &[u8], pass: &str) -> Vec<u8> {
        let mut r = age::scrypt::Recipient::new(SecretString::from(pass.to_owned()));
        r.set_work_factor(10);
        let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).unwrap();
        let mut w = enc.wrap_output(armor).unwrap();
        w.write_all(plain).unwrap();
        w.finish().and_then(|a| a.finish()).unwrap();
        out
    }

    #[test]
    fn decrypts_and_refuses_a_wrong_passphrase_without_echoing_it() {
        let file = encrypt(b"-----BEGIN PRIVATE KEY-----\n", "alpha-bravo-charl-delta");
        assert_eq!(decrypt(&file, "alpha-bravo-charl-delta").unwrap().as_str(), "-----BEGIN PRIVATE KEY-----\n");
        let e = decrypt(&file, "wrong-wrong-wrong-wrong").unwrap_err().to_string();
        assert!(e.contains("does not open key.age"), "{e}");
        assert!(!e.contains("wrong-wrong"), "{e}");
        assert!(decrypt(b"garbage", "x").unwrap_err().to_string().contains("not a usable age file"));
    }

    #[test]
    fn scrubs_only_the_credential_passphrase() {
        let text = "[device]\nname=pi\npassphrase=keep\n[credential]\n passphrase = a-b-c-d\ncloud_host=h:1\n";
        assert_eq!(without_passphrase(text), "[device]\nname=pi\npassphrase=keep\n[credential]\ncloud_host=h:1\n");
    }

    #[test]
    fn incomplete_seed_is_left_in_place() {
        let seed = tempfile::tempdir().unwrap();
        let cfg = tempfile::tempdir().unwrap();
        assert_eq!(import(seed.path(), cfg.path()).unwrap(), Outcome::Absent);
        std::fs::create_dir(seed.path().join(SEED_DIR)).unwrap();
        std::fs::write(seed.path().join(CONF_FILE), "[credential]\npassphrase=a-b-c-d\n").unwrap();
        let e = import(seed.path(), cfg.path()).unwrap_err().to_string();
        assert!(e.contains("cloud_host"), "{e}");
        assert!(seed.path().join(SEED_DIR).is_dir());
        assert!(!cfg.path().join(state::PROVISIONING_FILE).exists());
    }
}
