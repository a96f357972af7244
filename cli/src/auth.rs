//! `wendy auth`: log in against a local pki-core, show, renew and remove
//! the CLI's user certificate.

use std::fmt;

use time::OffsetDateTime;
use wendy_identity::csr;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::role::Role;
use wendy_identity::tls::Credentials;
use wendy_identity::verify::CertificateInfo;
use wendy_proto::cloud::{
    CreateUserEnrollmentTokenRequest, GetCaBundleRequest, IssueCertificateRequest, RefreshCertificateRequest,
};
use wendy_proto::contract::DEFAULT_PKICORE_PORT;

use crate::addr::HostPort;
use crate::cloud::{self, CloudClient, Expected};
use crate::config::{self, Config, Store, CA_FILE, CERT_FILE, CONFIG_FILE, KEY_FILE};
use crate::error::{CliError, Hints};

/// Lifetime of the user enrolment token minted during login.
const USER_TOKEN_TTL_SECONDS: i32 = 300;

/// Options of `wendy auth login-local`.
#[derive(Debug)]
pub struct LoginOptions {
    /// pki-core as this machine reaches it.
    pub cloud: String,
    /// API key (never printed).
    pub api_key: String,
    /// Expected CA fingerprint.
    pub ca_fingerprint: Option<Fingerprint>,
    /// Requested role; empty means the API key's own.
    pub role: Option<Role>,
    /// Organisation.
    pub organization_id: i32,
}

/// What `login-local` and `auth status` report.
#[derive(Debug, serde::Serialize)]
pub struct AuthStatus {
    /// Whether a usable certificate is stored.
    pub logged_in: bool,
    /// Whether the stored certificate has expired.
    pub expired: bool,
    /// pki-core address.
    pub cloud_host: String,
    /// Pinned CA fingerprint.
    pub ca_fingerprint: String,
    /// Certificate subject common name.
    pub common_name: Option<String>,
    /// Role in the certificate.
    pub role: Option<String>,
    /// Organisation.
    pub organization_id: i32,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Serial, hex.
    pub serial: String,
    /// The config directory.
    pub config_dir: String,
}

impl AuthStatus {
    fn new(store: &Store, config: &Config, info: &CertificateInfo) -> Self {
        let expired = OffsetDateTime::now_utc() > info.not_after;
        Self {
            logged_in: !expired,
            expired,
            cloud_host: config.cloud_host.clone(),
            ca_fingerprint: config.ca_fingerprint.clone(),
            common_name: info.common_name.clone(),
            role: info.role.map(|r| r.name().to_owned()),
            organization_id: config.organization_id,
            not_after: config::rfc3339(info.not_after),
            serial: info.serial_hex.clone(),
            config_dir: store.dir().display().to_string(),
        }
    }
}

impl fmt::Display for AuthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pki-core:        {}", self.cloud_host)?;
        writeln!(f, "CA fingerprint:  {}", self.ca_fingerprint)?;
        writeln!(f, "user:            {}", self.common_name.as_deref().unwrap_or("-"))?;
        writeln!(f, "role:            {}", self.role.as_deref().unwrap_or("-"))?;
        writeln!(f, "organization:    {}", self.organization_id)?;
        let state = if self.expired { " (EXPIRED: run `wendy auth login-local`)" } else { "" };
        writeln!(f, "valid until:     {}{state}", self.not_after)?;
        write!(f, "credentials in:  {}", self.config_dir)
    }
}

fn status_hints() -> Hints {
    cloud::api_key_hints()
}

/// A fresh key and a CSR for it.
fn new_key_and_csr() -> Result<(PrivateKey, String), CliError> {
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).map_err(|e| CliError::identity("generating a key", e))?;
    let cn = user_common_name();
    let csr = csr::build(&key, &cn).map_err(|e| CliError::identity("building the CSR", e))?;
    Ok((key, csr))
}

/// The CN we ask for: `$USER`, or `wendy-cli`. pki-core decides the real one.
fn user_common_name() -> String {
    let user: String = std::env::var("USER")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
        .take(64)
        .collect();
    if user.is_empty() {
        "wendy-cli".into()
    } else {
        user
    }
}

/// Checks an issued certificate against our key, then stores key, cert,
/// bundle and config, config last (it marks the login complete).
fn store_login(
    store: &Store,
    key: &PrivateKey,
    cert_pem: &str,
    chain_pem: &str,
    bundle_pem: &str,
    config: &Config,
) -> Result<CertificateInfo, CliError> {
    let key_pem = key.to_pem();
    let ca_pem = if bundle_pem.trim().is_empty() { chain_pem } else { bundle_pem };
    Credentials::from_pems(&key_pem, cert_pem, ca_pem)
        .map_err(|e| CliError::identity("pki-core returned an unusable certificate", e))?;
    let info = CertificateInfo::from_pem(cert_pem)
        .map_err(|e| CliError::identity("pki-core returned an unusable certificate", e))?;
    store.write(KEY_FILE, key_pem.as_bytes(), 0o600)?;
    store.write(CERT_FILE, cert_pem.as_bytes(), 0o644)?;
    store.write(CA_FILE, ca_pem.as_bytes(), 0o644)?;
    store.save_config(config)?;
    Ok(info)
}

async fn ca_bundle(client: &mut CloudClient) -> Result<String, CliError> {
    client
        .get_ca_bundle(GetCaBundleRequest {})
        .await
        .map(|r| r.into_inner().pem_bundle)
        .map_err(|s| CliError::from_status("fetching the CA bundle", &s, &status_hints()))
}

/// `wendy auth login-local`.
pub async fn login_local(store: &Store, opts: LoginOptions) -> Result<AuthStatus, CliError> {
    let addr = HostPort::parse(&opts.cloud, DEFAULT_PKICORE_PORT).map_err(|e| CliError::Usage(e.to_string()))?;
    // A pin from an earlier login to the same address counts, like known_hosts.
    let expected = match (opts.ca_fingerprint, store.config().ok().flatten()) {
        (Some(fp), _) => Expected::Flag(fp),
        (None, Some(c)) if c.cloud_host == addr.to_string() => match c.ca_fingerprint.parse() {
            Ok(fp) => Expected::Pinned(fp),
            Err(_) => Expected::Ask,
        },
        (None, _) => Expected::Ask,
    };
    let pin = cloud::decide_trust(&addr, expected).await?;
    let mut client = cloud::connect(&addr, pin, None).await?;
    let hints = cloud::api_key_hints();

    let req = CreateUserEnrollmentTokenRequest {
        ttl_seconds: USER_TOKEN_TTL_SECONDS,
        organization_id: opts.organization_id,
        role: opts.role.map(|r| r.name().to_owned()).unwrap_or_default(),
    };
    let token = client
        .create_user_enrollment_token(cloud::with_api_key(req, &opts.api_key)?)
        .await
        .map_err(|s| CliError::from_status("pki-core refused to mint a user enrolment token", &s, &hints))?
        .into_inner()
        .enrollment_token;

    let (key, csr_pem) = new_key_and_csr()?;
    let cert = client
        .issue_certificate(IssueCertificateRequest { pem_csr: csr_pem, enrollment_token: token })
        .await
        .map_err(|s| CliError::from_status("pki-core refused to issue the user certificate", &s, &hints))?
        .into_inner()
        .into_result()
        .map_err(|e| CliError::from_refusal("pki-core refused to issue the user certificate", &e, &hints))?;
    let bundle = ca_bundle(&mut client).await?;
    let config =
        Config { cloud_host: addr.to_string(), ca_fingerprint: pin.to_string(), organization_id: opts.organization_id };
    let info = store_login(store, &key, &cert.pem_certificate, &cert.pem_certificate_chain, &bundle, &config)?;
    if let Some(wanted) = opts.role {
        if info.role != Some(wanted) {
            eprintln!(
                "warning: asked for role {wanted}, the certificate carries {}",
                info.role.map(|r| r.name()).unwrap_or("no role")
            );
        }
    }
    Ok(AuthStatus::new(store, &config, &info))
}

/// `wendy auth status`: errors if not logged in or expired, after printing.
pub fn status(store: &Store) -> Result<AuthStatus, CliError> {
    let login = store.login()?;
    Ok(AuthStatus::new(store, &login.config, &login.info))
}

/// `wendy auth refresh`: a new key and certificate over mTLS with the
/// current one.
pub async fn refresh(store: &Store) -> Result<AuthStatus, CliError> {
    let login = store.valid_login()?;
    let addr = HostPort::parse(&login.config.cloud_host, DEFAULT_PKICORE_PORT)
        .map_err(|e| CliError::Config { path: store.path(CONFIG_FILE), reason: e.to_string() })?;
    let pin: Fingerprint = login.config.ca_fingerprint.parse().map_err(|e: wendy_identity::Error| {
        CliError::Config { path: store.path(CONFIG_FILE), reason: e.to_string() }
    })?;
    let mut client = cloud::connect(&addr, pin, Some(&login.credentials)).await?;
    let (key, csr_pem) = new_key_and_csr()?;
    let hints =
        Hints { auth: Some("run `wendy auth login-local` to get a new certificate".into()), ..Default::default() };
    let cert = client
        .refresh_certificate(RefreshCertificateRequest { pem_csr: csr_pem })
        .await
        .map_err(|s| CliError::from_status("pki-core refused to refresh the certificate", &s, &hints))?
        .into_inner()
        .into_result()
        .map_err(|e| CliError::from_refusal("pki-core refused to refresh the certificate", &e, &hints))?;
    let bundle = ca_bundle(&mut client).await.unwrap_or_else(|_| login.ca_pem.clone());
    let info = store_login(store, &key, &cert.pem_certificate, &cert.pem_certificate_chain, &bundle, &login.config)?;
    Ok(AuthStatus::new(store, &login.config, &info))
}

/// What `logout` removed.
#[derive(Debug, serde::Serialize)]
pub struct LogoutReport {
    /// Files removed.
    pub removed: Vec<String>,
    /// The directory.
    pub config_dir: String,
}

impl fmt::Display for LogoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            write!(f, "not logged in; nothing to remove in {}", self.config_dir)
        } else {
            write!(f, "logged out: removed {} from {}", self.removed.join(", "), self.config_dir)
        }
    }
}

/// `wendy auth logout`: removes the credentials and the pin; the device
/// cache stays (it holds no secrets).
pub fn logout(store: &Store) -> Result<LogoutReport, CliError> {
    let mut removed = Vec::new();
    // Config first: without it, a half-removed login is never used.
    for name in [CONFIG_FILE, KEY_FILE, CERT_FILE, CA_FILE] {
        if store.remove(name)? {
            removed.push(name.to_owned());
        }
    }
    Ok(LogoutReport { removed, config_dir: store.dir().display().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wendy_identity::profile::{CertificateAuthority, LeafProfile};

    fn ca() -> CertificateAuthority {
        CertificateAuthority::create_with_key(
            "CLI test CA",
            PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap(),
            OffsetDateTime::now_utc() - time::Duration::days(2),
            time::Duration::days(30),
        )
        .unwrap()
    }

    fn issue(ca: &CertificateAuthority, key: &PrivateKey, not_before: OffsetDateTime, days: i64) -> String {
        let p = LeafProfile::User { organization_id: 1, user_id: "alice".into(), role: Role::Viewer };
        ca.issue(&p, &key.public_key_der(), not_before, time::Duration::days(days)).unwrap().pem
    }

    fn cfg() -> Config {
        Config { cloud_host: "127.0.0.1:50051".into(), ca_fingerprint: "00".repeat(32), organization_id: 1 }
    }

    #[test]
    fn stored_login_round_trips_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let store = Store::at(t.path().join("wendy"));
        let ca = ca();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = issue(&ca, &key, OffsetDateTime::now_utc() - time::Duration::hours(1), 1);
        store_login(&store, &key, &cert, &ca.certificate_pem(), "", &cfg()).unwrap();
        let mode = std::fs::metadata(store.path(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let s = status(&store).unwrap();
        assert!(s.logged_in);
        assert_eq!(s.role.as_deref(), Some("Viewer"));
        assert!(!s.to_string().contains("PRIVATE KEY"));
        assert!(store.valid_login().is_ok());
        let out = logout(&store).unwrap();
        assert_eq!(out.removed.len(), 4);
        assert!(store.login().is_err());
    }

    #[test]
    fn expired_certificate_is_refused_with_advice() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::at(t.path().join("wendy"));
        let ca = ca();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = issue(&ca, &key, OffsetDateTime::now_utc() - time::Duration::days(2), 1);
        store_login(&store, &key, &cert, &ca.certificate_pem(), "", &cfg()).unwrap();
        assert!(status(&store).unwrap().expired);
        let e = store.valid_login().unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::Auth);
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn mismatched_key_is_not_stored() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::at(t.path().join("wendy"));
        let ca = ca();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = issue(&ca, &other, OffsetDateTime::now_utc(), 1);
        assert!(store_login(&store, &key, &cert, &ca.certificate_pem(), "", &cfg()).is_err());
        assert!(store.read(KEY_FILE).unwrap().is_none());
    }
}
