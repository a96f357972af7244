//! CA key material on disk: one PKCS#8 PEM per CA under `<data>/ca/`,
//! directory 0700, key files 0400, written atomically. The certificate and
//! metadata live in the [`crate::store`].

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::{CaPurpose, CertificateAuthority};

use crate::store::CaRecord;
use crate::Error;

/// Default CA validity: ten years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::days(3652);

/// Default CA common name.
pub const DEFAULT_CA_COMMON_NAME: &str = "WendyOS pki-core CA";

/// Common name of the code-signing CA created on first start (decision
/// 0069). It differs from the device CA's, so no verifier ever tries one
/// CA for the other's certificates.
pub const DEFAULT_CODESIGN_CA_COMMON_NAME: &str = "WendyOS pki-core code-signing CA";

/// A CA loaded with its key.
#[derive(Debug)]
pub struct LoadedCa {
    /// Its stored record.
    pub record: CaRecord,
    /// The CA itself.
    pub ca: CertificateAuthority,
}

fn key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ca")
}

fn key_path(data_dir: &Path, id: &str) -> PathBuf {
    key_dir(data_dir).join(format!("{id}.key"))
}

/// Creates a CA of `purpose` (fresh key) and writes its key file. The
/// caller stores the returned record.
pub fn create(
    data_dir: &Path,
    purpose: CaPurpose,
    common_name: &str,
    algorithm: KeyAlgorithm,
    validity: Duration,
    issuing: bool,
) -> Result<LoadedCa, Error> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let key = PrivateKey::generate(algorithm)?;
    let ca = CertificateAuthority::create_for(purpose, common_name, key, now - Duration::minutes(5), validity)?;
    let fingerprint = ca.fingerprint().to_string();
    let id = fingerprint[..16].to_owned();
    write_key(data_dir, &id, &ca.key().to_pem())?;
    let info = wendy_identity::verify::CertificateInfo::from_der(ca.certificate())?;
    let record = CaRecord {
        id,
        common_name: common_name.to_owned(),
        fingerprint,
        key_algorithm: algorithm.name().to_owned(),
        certificate_pem: ca.certificate_pem(),
        not_before: info.not_before.unix_timestamp(),
        not_after: info.not_after.unix_timestamp(),
        issuing,
        created_at: now.unix_timestamp(),
        purpose,
    };
    Ok(LoadedCa { record, ca })
}

/// Loads a stored CA with its key file.
pub fn load(data_dir: &Path, record: &CaRecord) -> Result<LoadedCa, Error> {
    let path = key_path(data_dir, &record.id);
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path)
            .map_err(|e| Error::Internal(format!("reading CA key {}: {e}", path.display())))?,
    );
    let ca = CertificateAuthority::from_pem(&record.certificate_pem, &key_pem)?;
    Ok(LoadedCa { record: record.clone(), ca })
}

fn write_key(data_dir: &Path, id: &str, pem: &str) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Internal(format!("writing CA key: {e}"));
    let dir = key_dir(data_dir);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let path = key_path(data_dir, id);
    wendy_net::atomic_write::write(&path, pem.as_bytes(), Some(0o400)).map_err(|e| io(e.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_0400_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = create(dir.path(), CaPurpose::Device, "t", KeyAlgorithm::EcdsaP256, Duration::days(1), true).unwrap();
        let mode = std::fs::metadata(key_path(dir.path(), &ca.record.id)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let again = load(dir.path(), &ca.record).unwrap();
        assert_eq!(again.ca.fingerprint(), ca.ca.fingerprint());
    }
}
