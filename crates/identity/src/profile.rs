//! Certificate profiles and the CA that issues them.
//!
//! | profile | basic constraints | key usage | extended key usage | subject |
//! |---|---|---|---|---|
//! | CA | CA, path length 0 | keyCertSign, cRLSign, digitalSignature | none | `CN=<name>, O=WendyOS` |
//! | code-signing CA | CA, path length 0 | keyCertSign, cRLSign | none | `CN=<name>, O=WendyOS` |
//! | device | not a CA | digitalSignature | serverAuth, clientAuth | `CN=sh/wendy/<org>/<asset>` |
//! | user | not a CA | digitalSignature | clientAuth | `CN=sh/wendy/<org>/user/<id>, OU=wendy-role=<Role>` |
//! | server | not a CA | digitalSignature | serverAuth | `CN=<first DNS name>`, DNS SANs |
//! | code signer | not a CA | digitalSignature | codeSigning | `CN=<name>` |
//!
//! Every leaf's NotBefore is backdated by [`CLOCK_SKEW_ALLOWANCE`].

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::fingerprint::Fingerprint;
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::role::Role;
use crate::{Error, DEVICE_CN_PREFIX};

/// How far each leaf's NotBefore is backdated, for devices with skewed clocks.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);

/// The organization every WendyOS CA names in its subject.
pub const CA_ORGANIZATION: &str = "WendyOS";

/// What a leaf certificate is for, and who it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafProfile {
    /// A device: serverAuth + clientAuth, `CN=sh/wendy/<org>/<asset>`.
    Device {
        /// Organization id.
        organization_id: i32,
        /// Asset (device) id.
        asset_id: i32,
    },
    /// A CLI user: clientAuth and a role.
    User {
        /// Organization id.
        organization_id: i32,
        /// An identifier for the user (free text, no `/`).
        user_id: String,
        /// The role the certificate grants.
        role: Role,
    },
    /// A TLS server (pki-core's frontend): serverAuth, DNS SANs.
    Server {
        /// DNS names; the first is also the CN.
        dns_names: Vec<String>,
    },
    /// A code signer (OS update bundles): codeSigning only, never a TLS
    /// purpose. Issued only by a [`CaPurpose::CodeSigning`] CA.
    CodeSigning {
        /// The subject common name (non-empty).
        common_name: String,
    },
}

/// What a CA is for. Each purpose is a CA line of its own, with its own
/// keys: a code-signing CA never issues TLS certificates, and the device
/// CA never issues code signers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaPurpose {
    /// Devices, users and the frontend's TLS server (the enrolment CA).
    Device,
    /// Code signers for OS update bundles (RAUC's keyring).
    CodeSigning,
}

impl CaPurpose {
    /// The name used in storage, APIs and the CLI: `device` or `codesign`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::CodeSigning => "codesign",
        }
    }
}

impl std::fmt::Display for CaPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CaPurpose {
    type Err = Error;

    /// `device` or `codesign` (also `code-signing`, `codesigning`), any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "device" => Ok(Self::Device),
            "codesign" | "codesigning" => Ok(Self::CodeSigning),
            other => Err(Error::Certificate(format!("unknown CA purpose {other:?}: expected device or codesign"))),
        }
    }
}

impl LeafProfile {
    /// The subject common name this profile gives.
    pub fn common_name(&self) -> String {
        match self {
            Self::Device { organization_id, asset_id } => device_common_name(*organization_id, *asset_id),
            Self::User { organization_id, user_id, .. } => {
                format!("{DEVICE_CN_PREFIX}{organization_id}/user/{user_id}")
            }
            Self::Server { dns_names } => dns_names.first().cloned().unwrap_or_default(),
            Self::CodeSigning { common_name } => common_name.clone(),
        }
    }
}

/// `sh/wendy/<org>/<asset>`: the CN of a device certificate.
pub fn device_common_name(organization_id: i32, asset_id: i32) -> String {
    format!("{DEVICE_CN_PREFIX}{organization_id}/{asset_id}")
}

/// A freshly issued certificate.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// DER encoding.
    pub der: CertificateDer<'static>,
    /// PEM encoding.
    pub pem: String,
    /// Serial number as lowercase hex (no leading zeros stripped).
    pub serial_hex: String,
    /// Start of validity (already backdated).
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// A certificate authority: its certificate and its signing key.
pub struct CertificateAuthority {
    certificate: CertificateDer<'static>,
    key: PrivateKey,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a self-signed CA with a fresh key.
    pub fn create(common_name: &str, algorithm: KeyAlgorithm, validity: Duration) -> Result<Self, Error> {
        Self::create_with_key(common_name, PrivateKey::generate(algorithm)?, OffsetDateTime::now_utc(), validity)
    }

    /// Creates a self-signed CA for `key`, valid from `not_before` for
    /// `validity`. Rotation calls this with the old CA's common name, so the
    /// new CA has the same subject DN.
    pub fn create_with_key(
        common_name: &str,
        key: PrivateKey,
        not_before: OffsetDateTime,
        validity: Duration,
    ) -> Result<Self, Error> {
        Self::create_for(CaPurpose::Device, common_name, key, not_before, validity)
    }

    /// [`CertificateAuthority::create_with_key`] for a CA of `purpose`. A
    /// code-signing CA's key usage is only keyCertSign and cRLSign: it signs
    /// certificates and CRLs, never a bundle itself.
    pub fn create_for(
        purpose: CaPurpose,
        common_name: &str,
        key: PrivateKey,
        not_before: OffsetDateTime,
        validity: Duration,
    ) -> Result<Self, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_subject(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = match purpose {
            CaPurpose::Device => {
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature]
            }
            CaPurpose::CodeSigning => vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        };
        params.not_before = not_before;
        params.not_after = not_before + validity;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key).map_err(|e| Error::build("CA certificate", e))?;
        Ok(Self { certificate: cert.der().clone(), key })
    }

    /// Loads a CA from its certificate and key PEMs, checking that they match.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let certificate = crate::pem::certificates(certificate_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Certificate("no CA certificate".into()))?;
        let key = PrivateKey::from_pem(key_pem)?;
        let info = crate::verify::CertificateInfo::from_der(&certificate)?;
        if info.public_key_der != key.public_key_der() {
            return Err(Error::Key("the CA key does not match the CA certificate".into()));
        }
        if !info.is_ca {
            return Err(Error::Certificate("not a CA certificate".into()));
        }
        Ok(Self { certificate, key })
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The CA certificate (PEM).
    pub fn certificate_pem(&self) -> String {
        crate::pem::encode("CERTIFICATE", &self.certificate)
    }

    /// The CA's signing key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// SHA-256 of the CA certificate's DER.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.certificate)
    }

    pub(crate) fn issuer(&self) -> Result<Issuer<'static, &PrivateKey>, Error> {
        Issuer::from_ca_cert_der(&self.certificate, &self.key).map_err(|e| Error::build("issuer", e))
    }

    /// Issues a leaf for `public_key_der` (a DER SubjectPublicKeyInfo, for
    /// example from a verified CSR), valid from `now - CLOCK_SKEW_ALLOWANCE`
    /// for `validity`, but never beyond the CA's own expiry.
    pub fn issue(
        &self,
        profile: &LeafProfile,
        public_key_der: &[u8],
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<IssuedCertificate, Error> {
        let public_key = crate::key::PublicKey::from_spki_der(public_key_der)?;
        let ca_info = crate::verify::CertificateInfo::from_der(&self.certificate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, profile.common_name());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match profile {
            LeafProfile::Device { .. } => {
                params.extended_key_usages =
                    vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            }
            LeafProfile::User { role, user_id, .. } => {
                if user_id.is_empty() || user_id.contains('/') {
                    return Err(Error::build("user certificate", "user id must be non-empty and contain no '/'"));
                }
                dn.push(DnType::OrganizationalUnitName, role.subject_ou());
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            LeafProfile::Server { dns_names } => {
                if dns_names.is_empty() {
                    return Err(Error::build("server certificate", "at least one DNS name is required"));
                }
                params.subject_alt_names = CertificateParams::new(dns_names.clone())
                    .map_err(|e| Error::build("server certificate", e))?
                    .subject_alt_names;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            LeafProfile::CodeSigning { common_name } => {
                if common_name.trim().is_empty() {
                    return Err(Error::build("code-signing certificate", "the common name must not be empty"));
                }
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
            }
        }
        params.distinguished_name = dn;
        let not_before = now - CLOCK_SKEW_ALLOWANCE;
        let not_after = std::cmp::min(now + validity, ca_info.not_after);
        if not_after <= now {
            return Err(Error::build("certificate", "the CA has expired"));
        }
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.as_ref());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&public_key, &self.issuer()?).map_err(|e| Error::build("certificate", e))?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            der: cert.der().clone(),
            serial_hex,
            not_before: truncate_to_seconds(not_before),
            not_after: truncate_to_seconds(not_after),
        })
    }
}

fn ca_subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    dn
}

fn truncate_to_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::build("serial number", "the RNG failed"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}
