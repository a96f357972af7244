//! The PKI engine: tokens, issuance, renewal, revocation, CRLs, CA rotation
//! and operator-provisioned credentials. Transport-agnostic and
//! synchronous; the gRPC layers call it from blocking tasks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rustls_pki_types::{CertificateDer, UnixTime};
use time::{Duration, OffsetDateTime};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::{RevokedEntry, VerifiedCrl};
use wendy_identity::csr::VerifiedCsr;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::{CaPurpose, LeafProfile};
use wendy_identity::role::Role;
use wendy_identity::tls::{Credentials, WendyClientVerifier};
use wendy_identity::verify::{CertificateInfo, Purpose, VerifyError};
use wendy_proto::cloud::{Certificate, CertificateStatus};

use crate::auth::Principal;
use crate::ca::{self, LoadedCa};
use crate::store::{
    ApiKeyRecord, AssetClaim, AuditEntry, CaRecord, CertFilter, CertRecord, CertStatus, ConsumeOutcome, NewToken,
    Store, TokenKind,
};
use crate::{secret, Error};

/// Default enrolment token lifetime, in seconds.
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = 600;

/// Longest enrolment token lifetime accepted, in seconds (one week).
pub const MAX_TOKEN_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Default validity of device and user certificates.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::days(90);

/// How long each CRL is valid (its nextUpdate); CRLs are re-signed well
/// before, see [`CRL_REFRESH_INTERVAL`].
pub const CRL_VALIDITY: Duration = Duration::hours(24);

/// How often CRLs are re-signed even without revocations.
pub const CRL_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Validity of the frontend's TLS server certificate.
pub const SERVER_CERT_VALIDITY: Duration = Duration::days(365);

/// Default validity of a code-signing certificate, in days.
pub const DEFAULT_CODESIGN_VALIDITY_DAYS: i64 = 365;

/// Longest validity of a code-signing certificate, in days (five years).
/// RAUC checks the signer's validity when a bundle is installed, so this
/// bounds how long a signed bundle stays installable, and how long a leaked
/// signing key is useful without revocation.
pub const MAX_CODESIGN_VALIDITY_DAYS: i64 = 1825;

/// Longest common name of a code-signing certificate, in characters.
pub const MAX_CODESIGN_COMMON_NAME: usize = 64;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where CA keys live.
    pub data_dir: PathBuf,
    /// Validity of device and user certificates.
    pub leaf_validity: Duration,
    /// Common name of a CA created on first start.
    pub ca_common_name: String,
    /// The CA that issues (config `frontend.wendy.device_ca_id`); the
    /// newest issuing CA if unset.
    pub issuing_ca_id: Option<String>,
    /// API keys from configuration: (SHA-256 hex, principal).
    pub static_api_keys: Vec<(String, Principal)>,
}

impl EngineConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            leaf_validity: DEFAULT_LEAF_VALIDITY,
            ca_common_name: ca::DEFAULT_CA_COMMON_NAME.into(),
            issuing_ca_id: None,
            static_api_keys: Vec::new(),
        }
    }
}

/// The loaded CAs of one purpose.
#[derive(Debug)]
struct Line {
    issuing: Arc<LoadedCa>,
    /// Every unexpired CA of the purpose, issuing first.
    active: Vec<Arc<LoadedCa>>,
    bundle: TrustBundle,
    bundle_pem: String,
}

/// The CAs currently loaded: the device line (enrolment, TLS) and the
/// code-signing line, which never meet (decision 0069).
#[derive(Debug)]
struct CaSet {
    device: Line,
    /// `None` once every code-signing CA has expired: rotate it.
    codesign: Option<Line>,
}

/// A CRL as served.
#[derive(Clone, Debug)]
pub struct CrlEntry {
    /// The signing CA's id.
    pub ca_id: String,
    /// The signing CA's purpose.
    pub purpose: CaPurpose,
    /// PEM.
    pub pem: String,
}

/// A freshly issued code-signing certificate.
#[derive(Debug)]
pub struct CodeSigner {
    /// The stored record (its `number` is the certificate id).
    pub record: CertRecord,
    /// The subject common name it was given.
    pub common_name: String,
    /// The code-signing CAs (PEM), issuing first.
    pub chain_pem: String,
}

/// A freshly minted enrolment token (the secret is shown once).
#[derive(Debug)]
pub struct MintedToken {
    /// The token secret.
    pub token: zeroize::Zeroizing<String>,
    /// Token id for auditing (the published `jti`): the first 16 hex digits
    /// of the token's SHA-256, as the audit log names it.
    pub jti: String,
    /// Organization id.
    pub organization_id: i32,
    /// Asset id assigned (asset tokens).
    pub asset_id: i32,
    /// User id assigned (user tokens).
    pub user_id: String,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
}

/// An operator-provisioned credential (returned once).
#[derive(Debug)]
pub struct ProvisionedCredential {
    /// The certificate.
    pub certificate: Certificate,
    /// The age file holding the PKCS#8 PEM key.
    pub age_file: String,
    /// The four-word passphrase.
    pub passphrase: zeroize::Zeroizing<String>,
    /// The public key (SPKI) PEM, as stored in the certificate.
    pub public_key_pem: String,
}

/// The PKI engine.
pub struct Engine {
    config: EngineConfig,
    store: Arc<dyn Store>,
    cas: RwLock<Arc<CaSet>>,
    crls: RwLock<Arc<Vec<CrlEntry>>>,
    crl_lock: Mutex<()>,
    verifier: Arc<WendyClientVerifier>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn lock_err<T>(_: T) -> Error {
    Error::Internal("engine lock poisoned".into())
}

impl Engine {
    /// Opens the engine: loads every CA, creating an ML-DSA-65 ten-year
    /// device CA if there is none, and likewise a code-signing CA (also in
    /// data directories made before code-signing CAs existed), and signs
    /// fresh CRLs.
    pub fn open(config: EngineConfig, store: Arc<dyn Store>) -> Result<Self, Error> {
        let mut records = store.list_cas()?;
        if !records.iter().any(|r| r.purpose == CaPurpose::Device) {
            let created = ca::create(
                &config.data_dir,
                CaPurpose::Device,
                &config.ca_common_name,
                KeyAlgorithm::MlDsa65,
                ca::DEFAULT_CA_VALIDITY,
                true,
            )?;
            store.insert_ca(&created.record)?;
            tracing::info!(ca = %created.record.id, "created a new ML-DSA-65 CA");
            records = store.list_cas()?;
        }
        if !records.iter().any(|r| r.purpose == CaPurpose::CodeSigning) {
            // insert_ca writes the audit row ("created codesign CA ...").
            let created = ca::create(
                &config.data_dir,
                CaPurpose::CodeSigning,
                ca::DEFAULT_CODESIGN_CA_COMMON_NAME,
                KeyAlgorithm::MlDsa65,
                ca::DEFAULT_CA_VALIDITY,
                true,
            )?;
            store.insert_ca(&created.record)?;
            tracing::info!(ca = %created.record.id, "created a new ML-DSA-65 code-signing CA");
            records = store.list_cas()?;
        }
        if let Some(id) = &config.issuing_ca_id {
            let found = records.iter().find(|r| &r.id == id || &r.fingerprint == id);
            let Some(found) = found else {
                return Err(Error::NotFound(format!("device_ca_id {id} is not a known CA")));
            };
            if found.purpose != CaPurpose::Device {
                return Err(Error::InvalidArgument(format!(
                    "device_ca_id {id} is a {} CA, not a device CA",
                    found.purpose
                )));
            }
            if !found.issuing {
                store.set_issuing_ca(&found.id.clone(), now().unix_timestamp())?;
                records = store.list_cas()?;
            }
        }
        let set = load_set(&config, &records)?;
        let verifier = Arc::new(WendyClientVerifier::new(set.device.bundle.clone(), false));
        let engine = Self {
            config,
            store,
            cas: RwLock::new(Arc::new(set)),
            crls: RwLock::new(Arc::new(Vec::new())),
            crl_lock: Mutex::new(()),
            verifier,
        };
        engine.refresh_crls()?;
        Ok(engine)
    }

    /// The client-certificate verifier the TLS frontend uses; it follows CA
    /// rotations and CRL updates live.
    pub fn verifier(&self) -> Arc<WendyClientVerifier> {
        Arc::clone(&self.verifier)
    }

    fn set(&self) -> Result<Arc<CaSet>, Error> {
        self.cas.read().map(|g| Arc::clone(&g)).map_err(lock_err)
    }

    /// The issuing (device) CA's record.
    pub fn issuing_ca(&self) -> Result<CaRecord, Error> {
        Ok(self.set()?.device.issuing.record.clone())
    }

    /// Every active device CA as one PEM bundle, issuing CA first.
    pub fn bundle_pem(&self) -> Result<String, Error> {
        Ok(self.set()?.device.bundle_pem.clone())
    }

    /// Every active code-signing CA as one PEM bundle, issuing CA first:
    /// what devices trust for update bundles (`/etc/rauc/keyring.pem`).
    pub fn codesign_bundle_pem(&self) -> Result<String, Error> {
        Ok(self.set()?.codesign.as_ref().ok_or_else(no_codesign_ca)?.bundle_pem.clone())
    }

    /// The issuing code-signing CA's record.
    pub fn issuing_codesign_ca(&self) -> Result<CaRecord, Error> {
        Ok(self.set()?.codesign.as_ref().ok_or_else(no_codesign_ca)?.issuing.record.clone())
    }

    /// The TLS identity of the frontend: a server certificate from the
    /// issuing CA naming [`wendy_identity::PKICORE_SERVER_NAME`] and
    /// `extra_names`, chained with that CA so clients can pin it.
    pub fn server_credentials(&self, extra_names: &[String]) -> Result<Credentials, Error> {
        let set = self.set()?;
        let key = PrivateKey::generate(KeyAlgorithm::MlDsa65)?;
        let mut dns_names = vec![wendy_identity::PKICORE_SERVER_NAME.to_owned()];
        dns_names.extend(extra_names.iter().filter(|n| !n.is_empty()).cloned());
        dns_names.dedup();
        let issued = set.device.issuing.ca.issue(
            &LeafProfile::Server { dns_names: dns_names.clone() },
            &key.public_key_der(),
            now(),
            SERVER_CERT_VALIDITY,
        )?;
        self.store.audit(&AuditEntry {
            at: now().unix_timestamp(),
            event: "issue".into(),
            actor: "local".into(),
            subject: issued.serial_hex.clone(),
            detail: format!("frontend server certificate for {dns_names:?}"),
        })?;
        Ok(Credentials { chain: vec![issued.der, set.device.issuing.ca.certificate().clone()], key })
    }

    // ---- authentication -------------------------------------------------

    /// Authenticates an API key secret.
    pub fn authenticate(&self, secret_key: Option<&str>) -> Result<Principal, Error> {
        let Some(secret_key) = secret_key else {
            return Err(Error::Unauthenticated("missing `authorization: Bearer <api key>`".into()));
        };
        let hash = secret::hash(secret_key);
        if let Some((_, p)) = self.config.static_api_keys.iter().find(|(h, _)| *h == hash) {
            return Ok(p.clone());
        }
        match self.store.find_api_key(&hash)? {
            Some(k) => Ok(Principal { id: k.id, role: k.role }),
            None => Err(Error::Unauthenticated("unknown or revoked API key".into())),
        }
    }

    /// Stores an API key given as a secret (for example the dev key), if it
    /// is not stored yet.
    pub fn ensure_api_key(&self, name: &str, role: Role, secret_key: &str) -> Result<(), Error> {
        let hash = secret::hash(secret_key);
        if self.store.find_api_key(&hash)?.is_none() {
            self.store.insert_api_key(&ApiKeyRecord {
                id: secret::random_id(),
                name: name.into(),
                role,
                hash,
                created_at: now().unix_timestamp(),
                revoked: false,
            })?;
        }
        Ok(())
    }

    /// Creates an API key; returns its record and its secret (shown once).
    pub fn create_api_key(&self, name: &str, role: Role) -> Result<(ApiKeyRecord, zeroize::Zeroizing<String>), Error> {
        let secret_key = secret::generate(secret::API_KEY_PREFIX);
        let record = ApiKeyRecord {
            id: secret::random_id(),
            name: name.into(),
            role,
            hash: secret::hash(&secret_key),
            created_at: now().unix_timestamp(),
            revoked: false,
        };
        self.store.insert_api_key(&record)?;
        Ok((record, secret_key))
    }

    /// Every API key (hashes never leave the engine).
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, Error> {
        Ok(self.store.list_api_keys()?)
    }

    /// Revokes an API key.
    pub fn revoke_api_key(&self, id: &str) -> Result<(), Error> {
        if self.store.revoke_api_key(id, now().unix_timestamp())? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no active API key {id}")))
        }
    }

    // ---- tokens -----------------------------------------------------------

    fn token_expiry(ttl_seconds: i64) -> Result<i64, Error> {
        let ttl = match ttl_seconds {
            0 => DEFAULT_TOKEN_TTL_SECONDS,
            t if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&t) => {
                return Err(Error::InvalidArgument(format!(
                    "ttl_seconds must be between 1 and {MAX_TOKEN_TTL_SECONDS} (0 means {DEFAULT_TOKEN_TTL_SECONDS})"
                )))
            }
            t => t,
        };
        Ok(now().unix_timestamp() + ttl)
    }

    fn check_org(organization_id: i32) -> Result<(), Error> {
        if organization_id < 0 {
            return Err(Error::InvalidArgument("organization_id must not be negative".into()));
        }
        Ok(())
    }

    /// Mints a device enrolment token; needs Admin. Assigns the next asset
    /// id of the organization.
    pub fn create_asset_token(
        &self,
        principal: &Principal,
        organization_id: i32,
        name: &str,
        ttl_seconds: i64,
    ) -> Result<MintedToken, Error> {
        principal.require(Role::Admin)?;
        Self::check_org(organization_id)?;
        let expires_at = Self::token_expiry(ttl_seconds)?;
        let token = secret::generate(secret::TOKEN_PREFIX);
        let hash = secret::hash(&token);
        let minted = self.store.insert_token(&NewToken {
            hash: hash.clone(),
            kind: TokenKind::Asset,
            organization_id,
            name: name.chars().take(128).collect(),
            role: None,
            created_by: principal.id.clone(),
            created_at: now().unix_timestamp(),
            expires_at,
        })?;
        Ok(MintedToken {
            token,
            jti: jti(&hash),
            organization_id,
            asset_id: minted.asset_id,
            user_id: minted.user_id,
            expires_at,
        })
    }

    /// Mints a user enrolment token. The role defaults to, and may never
    /// exceed, the caller's.
    pub fn create_user_token(
        &self,
        principal: &Principal,
        organization_id: i32,
        ttl_seconds: i64,
        role: &str,
    ) -> Result<MintedToken, Error> {
        Self::check_org(organization_id)?;
        let role = if role.trim().is_empty() {
            principal.role
        } else {
            role.parse::<Role>().map_err(|e| Error::InvalidArgument(e.to_string()))?
        };
        if !principal.role.allows(role) {
            return Err(Error::PermissionDenied(format!(
                "a {} API key cannot mint a token for role {role}",
                principal.role
            )));
        }
        let expires_at = Self::token_expiry(ttl_seconds)?;
        let token = secret::generate(secret::TOKEN_PREFIX);
        let hash = secret::hash(&token);
        let minted = self.store.insert_token(&NewToken {
            hash: hash.clone(),
            kind: TokenKind::User,
            organization_id,
            name: String::new(),
            role: Some(role),
            created_by: principal.id.clone(),
            created_at: now().unix_timestamp(),
            expires_at,
        })?;
        Ok(MintedToken { token, jti: jti(&hash), organization_id, asset_id: 0, user_id: minted.user_id, expires_at })
    }

    // ---- issuance ---------------------------------------------------------

    fn sign(&self, profile: &LeafProfile, public_key_der: &[u8], at: OffsetDateTime) -> Result<CertRecord, Error> {
        let set = self.set()?;
        let issued = set.device.issuing.ca.issue(profile, public_key_der, at, self.config.leaf_validity)?;
        let id = wendy_identity::crl::normalize_serial_hex(
            &hex::decode(&issued.serial_hex).map_err(|_| Error::Internal("serial is not hex".into()))?,
        );
        let (kind, organization_id, asset_id, user_id, role) = match profile {
            LeafProfile::Device { organization_id, asset_id } => {
                ("device", *organization_id, *asset_id, String::new(), None)
            }
            LeafProfile::User { organization_id, user_id, role } => {
                ("user", *organization_id, 0, user_id.clone(), Some(*role))
            }
            LeafProfile::Server { .. } => ("server", 0, 0, String::new(), None),
            LeafProfile::CodeSigning { .. } => {
                return Err(Error::Internal("code signers come from the code-signing CA, not sign()".into()))
            }
        };
        let t = at.unix_timestamp();
        Ok(CertRecord {
            id,
            ca_id: set.device.issuing.record.id.clone(),
            kind: kind.into(),
            organization_id,
            asset_id,
            user_id,
            role,
            certificate_pem: issued.pem,
            not_before: issued.not_before.unix_timestamp(),
            not_after: issued.not_after.unix_timestamp(),
            status: CertStatus::Active,
            revoked_at: None,
            revocation_reason: 0,
            created_at: t,
            updated_at: t,
            number: 0,
        })
    }

    /// The wire form of a stored certificate, with the bundle of its CA
    /// line as chain.
    pub fn to_proto(&self, c: &CertRecord) -> Result<Certificate, Error> {
        let status = match c.status {
            CertStatus::Revoked => CertificateStatus::Revoked,
            CertStatus::Active if c.not_after <= now().unix_timestamp() => CertificateStatus::Expired,
            CertStatus::Active => CertificateStatus::Active,
        };
        let (asset_id, user_id) = owner(c);
        Ok(Certificate {
            id: c.number,
            organization_id: c.organization_id,
            asset_id,
            user_id,
            serial_number: c.id.to_ascii_uppercase(),
            pem_certificate: c.certificate_pem.clone(),
            pem_certificate_chain: if c.kind == CODESIGN_KIND {
                self.set()?.codesign.as_ref().map(|l| l.bundle_pem.clone()).unwrap_or_default()
            } else {
                self.bundle_pem()?
            },
            not_before: ts(c.not_before),
            not_after: ts(c.not_after),
            status: status as i32,
            revoked_at: c.revoked_at.and_then(ts),
            revocation_reason: if c.status == CertStatus::Revoked {
                crate::revocation::name(c.revocation_reason).to_owned()
            } else {
                String::new()
            },
            created_at: ts(c.created_at),
            updated_at: ts(c.updated_at),
        })
    }

    fn verify_csr(csr_pem: &str) -> Result<VerifiedCsr, Error> {
        VerifiedCsr::from_pem(csr_pem).map_err(|e| Error::InvalidCsr(e.to_string()))
    }

    /// `IssueCertificate`: checks the token, verifies the CSR's proof of
    /// possession, signs, then consumes the token and stores the
    /// certificate in one transaction. Only one caller per token wins.
    ///
    /// A retry with a spent token and the same public key (the reply to the
    /// first call was lost) gets the certificate already issued for it.
    pub fn issue(&self, token: &str, csr_pem: &str) -> Result<Certificate, Error> {
        let token = token.trim();
        if token.is_empty() || token.len() > 256 {
            return Err(Error::InvalidToken);
        }
        let hash = secret::hash(token);
        let at = now();
        let record = self.store.find_token(&hash)?.ok_or(Error::InvalidToken)?;
        if record.used_at.is_some() {
            return self.reissued(&hash, &Self::verify_csr(csr_pem)?);
        }
        if record.expires_at <= at.unix_timestamp() {
            return Err(Error::TokenExpired);
        }
        let csr = Self::verify_csr(csr_pem)?;
        let profile = match record.kind {
            TokenKind::Asset => {
                LeafProfile::Device { organization_id: record.organization_id, asset_id: record.asset_id }
            }
            TokenKind::User => LeafProfile::User {
                organization_id: record.organization_id,
                user_id: record.user_id.clone(),
                role: record.role.unwrap_or(Role::Viewer),
            },
        };
        let mut cert = self.sign(&profile, &csr.public_key_der, at)?;
        match self.store.consume_token_and_insert(&hash, at.unix_timestamp(), &cert)? {
            ConsumeOutcome::Issued { number } => {
                cert.number = number;
                self.to_proto(&cert)
            }
            ConsumeOutcome::Unavailable => match self.store.find_token(&hash)? {
                Some(r) if r.used_at.is_none() => Err(Error::TokenExpired),
                _ => self.reissued(&hash, &csr),
            },
        }
    }

    /// The certificate a spent token was issued for the same public key as
    /// `csr`'s, or [`Error::TokenAlreadyUsed`].
    fn reissued(&self, hash: &str, csr: &VerifiedCsr) -> Result<Certificate, Error> {
        let Some(cert) = self.store.token_certificate(hash)? else {
            return Err(Error::TokenAlreadyUsed);
        };
        let der = wendy_identity::pem::certificates(&cert.certificate_pem)?;
        let same_key = der
            .first()
            .map(|d| CertificateInfo::from_der(d).map(|i| i.public_key_der == csr.public_key_der))
            .transpose()?
            .unwrap_or(false);
        if !same_key || cert.status == CertStatus::Revoked {
            return Err(Error::TokenAlreadyUsed);
        }
        tracing::info!(serial = %cert.id, "enrolment retried with the same key: returning the certificate already issued");
        self.to_proto(&cert)
    }

    /// Checks a client certificate chain presented over mTLS: it must
    /// verify (clientAuth, unexpired, not in the CRL) and be one we issued
    /// and have not revoked.
    pub fn authenticate_peer(&self, chain: Option<&[CertificateDer<'static>]>) -> Result<CertRecord, Error> {
        let Some((leaf, rest)) = chain.and_then(|c| c.split_first()) else {
            return Err(Error::Unauthenticated("this call needs a client certificate (mTLS)".into()));
        };
        let store = self.verifier.store();
        match store.verify(leaf, rest, Purpose::ClientAuth, UnixTime::now()) {
            Ok(_) => {}
            Err(VerifyError::Revoked { .. }) => return Err(Error::CertificateRevoked),
            Err(VerifyError::Expired { .. }) => return Err(Error::CertificateExpired),
            Err(e) => return Err(Error::Unauthenticated(e.to_string())),
        }
        let info = CertificateInfo::from_der(leaf)?;
        let record = self.store.get_certificate(&info.serial_hex)?.ok_or(Error::CertificateNotFound)?;
        if record.status == CertStatus::Revoked {
            return Err(Error::CertificateRevoked);
        }
        if record.not_after <= now().unix_timestamp() {
            return Err(Error::CertificateExpired);
        }
        Ok(record)
    }

    /// `RefreshCertificate`: same identity as the caller's current
    /// certificate, possibly a new key.
    pub fn refresh(&self, chain: Option<&[CertificateDer<'static>]>, csr_pem: &str) -> Result<Certificate, Error> {
        let current = self.authenticate_peer(chain)?;
        let csr = Self::verify_csr(csr_pem)?;
        let profile = match current.kind.as_str() {
            "device" => LeafProfile::Device { organization_id: current.organization_id, asset_id: current.asset_id },
            "user" => LeafProfile::User {
                organization_id: current.organization_id,
                user_id: current.user_id.clone(),
                role: current.role.unwrap_or(Role::Viewer),
            },
            _ => return Err(Error::PermissionDenied("only device and user certificates can be refreshed".into())),
        };
        let at = now();
        let mut cert = self.sign(&profile, &csr.public_key_der, at)?;
        cert.number = self.store.insert_certificate(
            &cert,
            &AuditEntry {
                at: at.unix_timestamp(),
                event: "refresh".into(),
                actor: format!("certificate {}", current.id),
                subject: cert.id.clone(),
                detail: format!(
                    "{} org {} asset {} user {:?}",
                    cert.kind, cert.organization_id, cert.asset_id, cert.user_id
                ),
            },
        )?;
        self.to_proto(&cert)
    }

    /// `RevokeCertificate`: needs Admin; the CRL of the issuing CA is
    /// re-signed at once.
    /// The serial of certificate record `number`.
    fn serial_of(&self, number: i32) -> Result<String, Error> {
        if number <= 0 {
            return Err(Error::InvalidArgument(format!("certificate_id must be positive, got {number}")));
        }
        self.store.certificate_serial(number)?.ok_or(Error::CertificateNotFound)
    }

    /// `RevokeCertificate`: needs Admin; the CRL of the issuing CA is
    /// re-signed at once. `reason` is an RFC 5280 reason name.
    pub fn revoke(&self, principal: &Principal, number: i32, reason: &str) -> Result<Certificate, Error> {
        principal.require(Role::Admin)?;
        let serial = self.serial_of(number)?;
        let code = crate::revocation::code(reason);
        let cert = self
            .store
            .revoke_certificate(&serial, code, now().unix_timestamp(), &principal.id)?
            .ok_or(Error::CertificateNotFound)?;
        self.refresh_crls()?;
        self.to_proto(&cert)
    }

    /// `GetCertificate`: needs a valid API key.
    pub fn get_certificate(&self, principal: &Principal, number: i32) -> Result<Certificate, Error> {
        principal.require(Role::Viewer)?;
        let serial = self.serial_of(number)?;
        let cert = self.store.get_certificate(&serial)?.ok_or(Error::CertificateNotFound)?;
        self.to_proto(&cert)
    }

    /// `ListCertificates`: needs a valid API key. One page, and the number
    /// of certificates matching in all.
    pub fn list_certificates(
        &self,
        principal: &Principal,
        filter: &CertFilter,
    ) -> Result<(Vec<Certificate>, i64), Error> {
        principal.require(Role::Viewer)?;
        let (certs, total) = self.store.list_certificates(filter)?;
        Ok((certs.iter().map(|c| self.to_proto(c)).collect::<Result<_, _>>()?, total))
    }

    /// `GetCertificateMetadata`: who the caller's client certificate names.
    pub fn certificate_metadata(&self, chain: Option<&[CertificateDer<'static>]>) -> Result<CertRecord, Error> {
        self.authenticate_peer(chain)
    }

    // ---- CRLs -------------------------------------------------------------

    /// Re-signs the CRL of every active CA and hands them to the verifier.
    pub fn refresh_crls(&self) -> Result<(), Error> {
        let _guard = self.crl_lock.lock().map_err(lock_err)?;
        let set = self.set()?;
        let at = now();
        let mut entries = Vec::new();
        let mut verified = Vec::new();
        let lines = [(CaPurpose::Device, Some(&set.device)), (CaPurpose::CodeSigning, set.codesign.as_ref())];
        for (purpose, line) in lines {
            let Some(line) = line else { continue };
            for ca in &line.active {
                let crl = self.sign_crl(ca, at)?;
                let checked = VerifiedCrl::from_pem(&crl, &line.bundle)?;
                // Only device CRLs concern the TLS verifier.
                if purpose == CaPurpose::Device {
                    verified.extend(checked);
                }
                entries.push(CrlEntry { ca_id: ca.record.id.clone(), purpose, pem: crl });
            }
        }
        self.verifier.set_crls(&verified)?;
        *self.crls.write().map_err(lock_err)? = Arc::new(entries);
        Ok(())
    }

    /// A fresh CRL of `ca`, PEM.
    fn sign_crl(&self, ca: &LoadedCa, at: OffsetDateTime) -> Result<String, Error> {
        let revoked = self
            .store
            .revoked_by_ca(&ca.record.id)?
            .into_iter()
            .map(|(serial_hex, t)| RevokedEntry {
                serial_hex,
                revoked_at: OffsetDateTime::from_unix_timestamp(t).unwrap_or(at),
            })
            .collect::<Vec<_>>();
        let number = self.store.next_crl_number(&ca.record.id)?;
        Ok(wendy_identity::crl::build(&ca.ca, &revoked, number, at - Duration::minutes(5), at + CRL_VALIDITY)?)
    }

    /// The current CRLs: of one CA of either purpose (by id or
    /// fingerprint), or, with an empty `ca_id`, of every active device CA.
    /// Code-signing CRLs are left out of the latter: devices verify each CRL
    /// of that answer against their device CA bundle.
    pub fn crls(&self, ca_id: &str) -> Result<Vec<String>, Error> {
        let set = self.set()?;
        let crls = self.crls.read().map_err(lock_err)?.clone();
        let wanted = ca_id.trim();
        let known = |c: &CrlEntry| {
            set.device
                .active
                .iter()
                .chain(set.codesign.iter().flat_map(|l| l.active.iter()))
                .any(|a| a.record.id == c.ca_id && a.record.fingerprint == wanted)
        };
        let out: Vec<String> = crls
            .iter()
            .filter(|c| if wanted.is_empty() { c.purpose == CaPurpose::Device } else { c.ca_id == wanted || known(c) })
            .map(|c| c.pem.clone())
            .collect();
        if out.is_empty() && !wanted.is_empty() {
            return Err(Error::NotFound(format!("no active CA {wanted}")));
        }
        Ok(out)
    }

    // ---- CAs --------------------------------------------------------------

    fn reload_cas(&self) -> Result<(), Error> {
        let set = load_set(&self.config, &self.store.list_cas()?)?;
        self.verifier.set_bundle(set.device.bundle.clone())?;
        *self.cas.write().map_err(lock_err)? = Arc::new(set);
        self.refresh_crls()
    }

    /// Every stored CA.
    pub fn list_cas(&self) -> Result<Vec<CaRecord>, Error> {
        Ok(self.store.list_cas()?)
    }

    /// Creates an additional CA of `purpose`. It joins its purpose's
    /// bundle; it issues only if `issuing` (or if no CA of its purpose
    /// issues).
    pub fn create_ca(
        &self,
        purpose: CaPurpose,
        common_name: &str,
        algorithm: &str,
        validity_days: i64,
        issuing: bool,
    ) -> Result<CaRecord, Error> {
        let algorithm = if algorithm.trim().is_empty() {
            KeyAlgorithm::MlDsa65
        } else {
            algorithm.parse().map_err(|e: wendy_identity::Error| Error::InvalidArgument(e.to_string()))?
        };
        let validity = match validity_days {
            0 => ca::DEFAULT_CA_VALIDITY,
            d if (1..=36_500).contains(&d) => Duration::days(d),
            _ => return Err(Error::InvalidArgument("validity_days must be between 1 and 36500".into())),
        };
        let default_cn = match purpose {
            CaPurpose::Device => self.config.ca_common_name.as_str(),
            CaPurpose::CodeSigning => ca::DEFAULT_CODESIGN_CA_COMMON_NAME,
        };
        let cn = if common_name.trim().is_empty() { default_cn } else { common_name.trim() };
        let created = ca::create(&self.config.data_dir, purpose, cn, algorithm, validity, issuing)?;
        self.store.insert_ca(&created.record)?;
        self.reload_cas()?;
        Ok(created.record)
    }

    /// Rotates a CA (if `ca_id` is empty, the issuing one of `purpose`): a
    /// new key and certificate with the same subject DN, algorithm and
    /// purpose that becomes the issuing CA of that purpose. The old CA stays
    /// in its bundle until it expires.
    pub fn rotate_ca(&self, ca_id: &str, purpose: CaPurpose) -> Result<CaRecord, Error> {
        let old = if ca_id.trim().is_empty() { self.newest_issuing(purpose)? } else { self.find_ca(ca_id)? };
        let algorithm: KeyAlgorithm =
            old.key_algorithm.parse().map_err(|e: wendy_identity::Error| Error::Internal(e.to_string()))?;
        let created =
            ca::create(&self.config.data_dir, old.purpose, &old.common_name, algorithm, ca::DEFAULT_CA_VALIDITY, true)?;
        self.store.insert_ca(&created.record)?;
        self.store.audit(&AuditEntry {
            at: now().unix_timestamp(),
            event: "ca".into(),
            actor: "local".into(),
            subject: created.record.id.clone(),
            detail: format!("rotated {} CA from CA {}", old.purpose, old.id),
        })?;
        self.reload_cas()?;
        Ok(created.record)
    }

    /// The issuing CA of `purpose` as stored (expired or not), else the
    /// newest CA of that purpose.
    fn newest_issuing(&self, purpose: CaPurpose) -> Result<CaRecord, Error> {
        let records = self.store.list_cas()?;
        records
            .iter()
            .rev()
            .find(|r| r.purpose == purpose && r.issuing)
            .or_else(|| records.iter().rev().find(|r| r.purpose == purpose))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no {purpose} CA")))
    }

    // ---- code signing (decision 0069) ---------------------------------------

    /// The CRLs of the active code-signing CAs, issuing CA's first.
    pub fn codesign_crls(&self) -> Result<Vec<String>, Error> {
        let crls = self.crls.read().map_err(lock_err)?.clone();
        Ok(crls.iter().filter(|c| c.purpose == CaPurpose::CodeSigning).map(|c| c.pem.clone()).collect())
    }

    /// Issues a code-signing certificate from the issuing code-signing CA
    /// for a PKCS#10 CSR: EKU codeSigning only, keyUsage digitalSignature,
    /// not a CA, subject `CN=<the CSR's CN, sanitised>`. Needs Admin. The
    /// key must be ML-DSA-65; `validity_days` 0 means
    /// [`DEFAULT_CODESIGN_VALIDITY_DAYS`], at most
    /// [`MAX_CODESIGN_VALIDITY_DAYS`] (and never beyond the CA's expiry).
    pub fn issue_code_signing(
        &self,
        principal: &Principal,
        csr_pem: &str,
        validity_days: i64,
    ) -> Result<CodeSigner, Error> {
        principal.require(Role::Admin)?;
        let days = match validity_days {
            0 => DEFAULT_CODESIGN_VALIDITY_DAYS,
            d if (1..=MAX_CODESIGN_VALIDITY_DAYS).contains(&d) => d,
            d => {
                return Err(Error::InvalidArgument(format!(
                    "validity_days {d} is out of range: a code-signing certificate is valid for 1 to \
                     {MAX_CODESIGN_VALIDITY_DAYS} days (0 means {DEFAULT_CODESIGN_VALIDITY_DAYS})"
                )))
            }
        };
        let csr = Self::verify_csr(csr_pem)?;
        if csr.algorithm != KeyAlgorithm::MlDsa65 {
            return Err(Error::InvalidCsr(format!(
                "code-signing keys must be ML-DSA-65 (update bundles are signed with ML-DSA-65); this CSR's key \
                 is {}",
                csr.algorithm
            )));
        }
        let common_name = codesign_common_name(csr.requested_common_name.as_deref());
        let set = self.set()?;
        let line = set.codesign.as_ref().ok_or_else(no_codesign_ca)?;
        let at = now();
        let issued = line.issuing.ca.issue(
            &LeafProfile::CodeSigning { common_name: common_name.clone() },
            &csr.public_key_der,
            at,
            Duration::days(days),
        )?;
        let id = wendy_identity::crl::normalize_serial_hex(
            &hex::decode(&issued.serial_hex).map_err(|_| Error::Internal("serial is not hex".into()))?,
        );
        let t = at.unix_timestamp();
        let mut record = CertRecord {
            id,
            ca_id: line.issuing.record.id.clone(),
            kind: CODESIGN_KIND.into(),
            organization_id: 0,
            asset_id: 0,
            user_id: String::new(),
            role: None,
            certificate_pem: issued.pem,
            not_before: issued.not_before.unix_timestamp(),
            not_after: issued.not_after.unix_timestamp(),
            status: CertStatus::Active,
            revoked_at: None,
            revocation_reason: 0,
            created_at: t,
            updated_at: t,
            number: 0,
        };
        record.number = self.store.insert_certificate(
            &record,
            &AuditEntry {
                at: t,
                event: "codesign".into(),
                actor: principal.id.clone(),
                subject: record.id.clone(),
                detail: format!(
                    "code-signing certificate CN={common_name:?} for {days} days (until {}) from code-signing CA {}",
                    issued.not_after, record.ca_id
                ),
            },
        )?;
        Ok(CodeSigner { record, common_name, chain_pem: line.bundle_pem.clone() })
    }

    /// One CA by id or fingerprint.
    pub fn find_ca(&self, ca_id: &str) -> Result<CaRecord, Error> {
        let wanted = ca_id.trim().to_ascii_lowercase().replace(':', "");
        self.store
            .list_cas()?
            .into_iter()
            .find(|c| c.id == wanted || c.fingerprint == wanted)
            .ok_or_else(|| Error::NotFound(format!("no CA {wanted}")))
    }

    // ---- operator-provisioned credentials ----------------------------------

    /// Mints a key pair server-side and issues a certificate for it: a
    /// device certificate if `asset_id > 0`, else a user certificate with
    /// `role`. Returns the key once in an age file; stores only the
    /// certificate (which holds the public key).
    pub fn provision_credential(
        &self,
        principal: &Principal,
        role: &str,
        organization_id: i32,
        asset_id: i32,
        name: &str,
        replace: bool,
    ) -> Result<ProvisionedCredential, Error> {
        principal.require(Role::Admin)?;
        Self::check_org(organization_id)?;
        let profile = if asset_id > 0 {
            LeafProfile::Device { organization_id, asset_id }
        } else {
            let role: Role = role.parse().map_err(|e: wendy_identity::Error| Error::InvalidArgument(e.to_string()))?;
            if !principal.role.allows(role) {
                return Err(Error::PermissionDenied(format!("cannot provision role {role}")));
            }
            let user_id: String =
                name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c)).take(64).collect();
            let user_id = if user_id.is_empty() { format!("operator-{}", secret::random_id()) } else { user_id };
            LeafProfile::User { organization_id, user_id, role }
        };
        let key = PrivateKey::generate(KeyAlgorithm::MlDsa65)?;
        let at = now();
        let mut cert = self.sign(&profile, &key.public_key_der(), at)?;
        let passphrase = crate::credential::generate_passphrase();
        let age_file = crate::credential::encrypt(key.to_pem().as_bytes(), &passphrase)?;
        let audit = AuditEntry {
            at: at.unix_timestamp(),
            event: "credential".into(),
            actor: principal.id.clone(),
            subject: cert.id.clone(),
            detail: format!(
                "operator-provisioned {} org {} asset {} user {:?} role {}",
                cert.kind,
                cert.organization_id,
                cert.asset_id,
                cert.user_id,
                cert.role.map(|r| r.name()).unwrap_or("-")
            ),
        };
        if asset_id > 0 {
            match self.store.insert_device_credential(&cert, &audit, at.unix_timestamp(), replace)? {
                AssetClaim::Stored { number, replaced } => {
                    cert.number = number;
                    if !replaced.is_empty() {
                        tracing::info!(
                            asset_id,
                            ?replaced,
                            "operator-provisioned credential superseded the asset's certificates"
                        );
                        self.refresh_crls()?;
                    }
                }
                AssetClaim::InUse { certificates, pending_tokens } => {
                    return Err(Error::AssetInUse(format!(
                        "asset {asset_id} of organization {organization_id} already has {} active certificate(s) \
                         and {pending_tokens} unused enrolment token(s); ask to replace them (pkicore credential \
                         provision --replace) to revoke them",
                        certificates.len()
                    )));
                }
            }
        } else {
            cert.number = self.store.insert_certificate(&cert, &audit)?;
        }
        Ok(ProvisionedCredential {
            certificate: self.to_proto(&cert)?,
            age_file,
            passphrase,
            public_key_pem: key.public_key_pem(),
        })
    }
}

/// The published `jti` of the token with SHA-256 `hash`.
fn jti(hash: &str) -> String {
    hash.chars().take(16).collect()
}

/// `(asset_id, user_id)` as the published optional fields: set only for
/// the kind of certificate that has one.
pub fn owner(c: &CertRecord) -> (Option<i32>, Option<String>) {
    match c.kind.as_str() {
        "device" => (Some(c.asset_id), None),
        "user" => (None, Some(c.user_id.clone())),
        _ => (None, None),
    }
}

/// The `CertRecord::kind` of code-signing certificates.
pub const CODESIGN_KIND: &str = "codesign";

fn no_codesign_ca() -> Error {
    Error::NotFound("no unexpired code-signing CA: rotate it (pkicore ca rotate --purpose codesign)".into())
}

/// The subject CN of a code signer: the CSR's CN with only ASCII letters,
/// digits, `-_.@` and single spaces (for any run of whitespace) kept, at most [`MAX_CODESIGN_COMMON_NAME`]
/// characters; `code-signer-<random id>` if nothing is left.
pub fn codesign_common_name(requested: Option<&str>) -> String {
    let kept: String = requested
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || " -_.@".contains(*c))
        .take(MAX_CODESIGN_COMMON_NAME)
        .collect();
    let kept = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    if kept.is_empty() {
        format!("code-signer-{}", secret::random_id())
    } else {
        kept
    }
}

fn load_set(config: &EngineConfig, records: &[CaRecord]) -> Result<CaSet, Error> {
    let device = load_line(config, records, CaPurpose::Device)?
        .ok_or_else(|| Error::Internal("no unexpired CA: create or rotate one".into()))?;
    let codesign = load_line(config, records, CaPurpose::CodeSigning)?;
    if codesign.is_none() {
        tracing::warn!("every code-signing CA has expired: rotate it (pkicore ca rotate --purpose codesign)");
    }
    Ok(CaSet { device, codesign })
}

/// The unexpired CAs of `purpose`, if any.
fn load_line(config: &EngineConfig, records: &[CaRecord], purpose: CaPurpose) -> Result<Option<Line>, Error> {
    let at = now().unix_timestamp();
    let mine = || records.iter().rev().filter(|r| r.purpose == purpose && r.not_after > at);
    let Some(issuing_record) = mine().find(|r| r.issuing).or_else(|| mine().next()) else {
        return Ok(None);
    };
    let issuing = Arc::new(ca::load(&config.data_dir, issuing_record)?);
    let mut active = vec![Arc::clone(&issuing)];
    for r in mine().filter(|r| r.id != issuing_record.id) {
        active.push(Arc::new(ca::load(&config.data_dir, r)?));
    }
    let mut bundle = TrustBundle::default();
    for ca in &active {
        bundle.add(ca.ca.certificate().clone())?;
    }
    let bundle_pem = bundle.to_pem();
    Ok(Some(Line { issuing, active, bundle, bundle_pem }))
}

#[cfg(test)]
#[path = "engine_codesign_tests.rs"]
mod codesign_tests;
