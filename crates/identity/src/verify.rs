//! Certificate inspection and the WendyOS verification semantics.
//!
//! A certificate is checked against every trusted CA whose subject matches
//! its issuer (CA rollover keeps several). The first CA under which it
//! validates wins; if all fail, the error is the last one; if none matches,
//! the error is [`VerifyError::IssuerNotFound`].

use std::collections::HashMap;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyUsage, OwnedCertRevocationList};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::{TrustBundle, TrustedCa};
use crate::crl::VerifiedCrl;
use crate::fingerprint::Fingerprint;
use crate::key::KeyAlgorithm;
use crate::role::Role;
use crate::Error;

/// The largest certificate accepted, in DER bytes.
pub const MAX_CERT_DER_BYTES: usize = 32 * 1024;

/// The fields of a certificate that WendyOS looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject as a readable string (RFC 4514-ish).
    pub subject: String,
    /// Raw DER of the subject name.
    pub subject_der: Vec<u8>,
    /// Raw DER of the issuer name.
    pub issuer_der: Vec<u8>,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// The role in the subject OU, if any and valid.
    pub role: Option<Role>,
    /// Serial number: lowercase hex, leading zero bytes removed.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether basic constraints say CA.
    pub is_ca: bool,
    /// Whether the EKU extension lists clientAuth.
    pub client_auth: bool,
    /// Whether the EKU extension lists serverAuth.
    pub server_auth: bool,
    /// Whether the EKU extension lists codeSigning.
    pub code_signing: bool,
    /// The SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
    /// The subjectPublicKey bits (what signature verification takes).
    pub public_key_bits: Vec<u8>,
    /// The key's algorithm, if it is one we support.
    pub key_algorithm: Option<KeyAlgorithm>,
}

impl CertificateInfo {
    /// Parses a DER certificate. Trailing bytes, oversize input and
    /// malformed DER are errors, never panics.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_CERT_DER_BYTES {
            return Err(Error::TooLarge { actual: der.len(), limit: MAX_CERT_DER_BYTES });
        }
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::Certificate(format!("{} trailing bytes after the certificate", rest.len())));
        }
        let tbs = &cert.tbs_certificate;
        let common_name = tbs.subject.iter_common_name().next().and_then(|c| c.as_str().ok()).map(str::to_owned);
        let role = tbs
            .subject
            .iter_organizational_unit()
            .filter_map(|ou| ou.as_str().ok())
            .find_map(Role::from_subject_ou)
            .and_then(Result::ok);
        let (client_auth, server_auth, code_signing) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (eku.value.client_auth, eku.value.server_auth, eku.value.code_signing),
            Ok(None) => (false, false, false),
            Err(e) => return Err(Error::Certificate(format!("extended key usage: {e}"))),
        };
        let is_ca = match cert.basic_constraints() {
            Ok(Some(bc)) => bc.value.ca,
            Ok(None) => false,
            Err(e) => return Err(Error::Certificate(format!("basic constraints: {e}"))),
        };
        Ok(Self {
            subject: tbs.subject.to_string(),
            subject_der: tbs.subject.as_raw().to_vec(),
            issuer_der: tbs.issuer.as_raw().to_vec(),
            common_name,
            role,
            serial_hex: crate::crl::normalize_serial_hex(tbs.raw_serial()),
            not_before: tbs.validity.not_before.to_datetime(),
            not_after: tbs.validity.not_after.to_datetime(),
            is_ca,
            client_auth,
            server_auth,
            code_signing,
            public_key_der: tbs.subject_pki.raw.to_vec(),
            public_key_bits: tbs.subject_pki.subject_public_key.data.to_vec(),
            key_algorithm: crate::csr::spki_algorithm(&tbs.subject_pki).ok(),
        })
    }

    /// Parses the first certificate of a PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let certs = crate::pem::certificates(pem)?;
        Self::from_der(&certs[0])
    }
}

/// Why a certificate was refused. Each case has its own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No trusted CA has the certificate's issuer as its subject.
    #[error("client certificate issuer not found in trusted CA pool")]
    IssuerNotFound,
    /// The certificate has expired.
    #[error("certificate expired at {not_after} (now {now})")]
    Expired {
        /// notAfter.
        not_after: String,
        /// The time of the check.
        now: String,
    },
    /// The certificate is not valid yet.
    #[error("certificate is not valid until {not_before} (now {now})")]
    NotYetValid {
        /// notBefore.
        not_before: String,
        /// The time of the check.
        now: String,
    },
    /// The certificate lacks the clientAuth extended key usage.
    #[error("certificate lacks the clientAuth extended key usage")]
    MissingClientAuth,
    /// The certificate lacks the serverAuth extended key usage.
    #[error("certificate lacks the serverAuth extended key usage")]
    MissingServerAuth,
    /// The certificate lacks the codeSigning extended key usage.
    #[error("certificate lacks the codeSigning extended key usage")]
    MissingCodeSigning,
    /// The certificate is listed in its CA's CRL.
    #[error("certificate {serial} has been revoked")]
    Revoked {
        /// Serial, hex.
        serial: String,
    },
    /// The signature does not verify under a CA with the right name.
    #[error("certificate signature does not verify under trusted CA {ca}")]
    BadSignature {
        /// The CA tried.
        ca: String,
    },
    /// The server certificate does not name the expected host.
    #[error("server certificate is not valid for {0}")]
    WrongName(String),
    /// The certificate names another subject than the one expected (a
    /// device known to be another asset).
    #[error("the certificate names {found:?}, not the expected {expected:?}")]
    UnexpectedSubject {
        /// The common name it has.
        found: String,
        /// The common name expected.
        expected: String,
    },
    /// No certificate in the presented chain has the pinned fingerprint.
    #[error("no certificate in the server's chain matches the pinned CA fingerprint {0}")]
    PinMismatch(String),
    /// The certificate is malformed or otherwise invalid.
    #[error("invalid certificate: {0}")]
    Invalid(String),
}

/// A certificate that verified, with what the verifier learned.
#[derive(Clone, Debug)]
pub struct VerifiedCertificate {
    /// The leaf's fields.
    pub info: CertificateInfo,
    /// The CA it chains to.
    pub ca: Fingerprint,
}

/// Which extended key usage a verification requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A TLS client (clientAuth).
    ClientAuth,
    /// A TLS server (serverAuth).
    ServerAuth,
    /// A code signer (codeSigning).
    CodeSigning,
}

/// The DER value of the codeSigning key purpose, 1.3.6.1.5.5.7.3.3.
const OID_KP_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// A bundle plus the CRLs that verified under its CAs.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    bundle: TrustBundle,
    crls: HashMap<Fingerprint, Vec<OwnedCertRevocationList>>,
}

impl TrustStore {
    /// A store with no CRLs.
    pub fn new(bundle: TrustBundle) -> Self {
        Self { bundle, crls: HashMap::new() }
    }

    /// The trusted CAs.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Replaces the CRLs. Each must have been verified against this bundle.
    pub fn set_crls(&mut self, crls: &[VerifiedCrl]) -> Result<(), Error> {
        let mut map: HashMap<Fingerprint, Vec<OwnedCertRevocationList>> = HashMap::new();
        for crl in crls {
            let owned = OwnedCertRevocationList::from_der(&crl.der).map_err(|e| Error::Crl(format!("{e:?}")))?;
            map.entry(crl.issuer).or_default().push(owned);
        }
        self.crls = map;
        Ok(())
    }

    /// Verifies `end_entity` (with optional `intermediates`) for `purpose` at
    /// `now`, with the WendyOS rollover semantics.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> Result<VerifiedCertificate, VerifyError> {
        let info = CertificateInfo::from_der(end_entity).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        let cert = EndEntityCert::try_from(end_entity).map_err(|e| VerifyError::Invalid(format!("{e:?}")))?;
        let mut last_error = None;
        let mut verified_by = None;
        for ca in self.bundle.cas_with_subject(&info.issuer_der) {
            match self.verify_under(&cert, &info, ca, intermediates, purpose, now) {
                Ok(()) => {
                    verified_by = Some(ca.fingerprint);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(ca) = verified_by {
            return Ok(VerifiedCertificate { info, ca });
        }
        Err(last_error.unwrap_or(VerifyError::IssuerNotFound))
    }

    fn verify_under(
        &self,
        cert: &EndEntityCert<'_>,
        info: &CertificateInfo,
        ca: &TrustedCa,
        intermediates: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> Result<(), VerifyError> {
        let anchor = webpki::anchor_from_trusted_cert(&ca.certificate)
            .map_err(|e| VerifyError::Invalid(format!("trusted CA: {e:?}")))?;
        let crls: Vec<webpki::CertRevocationList<'_>> = self
            .crls
            .get(&ca.fingerprint)
            .map(|v| v.iter().cloned().map(webpki::CertRevocationList::from).collect())
            .unwrap_or_default();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::EndEntity)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .build()
        });
        let usage = match purpose {
            Purpose::ClientAuth => KeyUsage::client_auth(),
            Purpose::ServerAuth => KeyUsage::server_auth(),
            Purpose::CodeSigning => KeyUsage::required(OID_KP_CODE_SIGNING),
        };
        let anchors = [anchor];
        let result = verify_for(cert, &anchors, intermediates, now, usage, revocation);
        result.map_err(|e| map_webpki_error(e, info, ca, purpose, now))
    }
}

fn verify_for(
    cert: &EndEntityCert<'_>,
    anchors: &[rustls_pki_types::TrustAnchor<'_>],
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: impl ExtendedKeyUsageValidator,
    revocation: Option<webpki::RevocationOptions<'_>>,
) -> Result<(), webpki::Error> {
    cert.verify_for_usage(SUPPORTED_ALGORITHMS, anchors, intermediates, now, usage, revocation, None).map(|_| ())
}

fn map_webpki_error(
    e: webpki::Error,
    info: &CertificateInfo,
    ca: &TrustedCa,
    purpose: Purpose,
    now: UnixTime,
) -> VerifyError {
    let now_dt = OffsetDateTime::from_unix_timestamp(now.as_secs() as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    #[allow(deprecated)]
    match e {
        webpki::Error::CertExpired { .. } => {
            VerifyError::Expired { not_after: info.not_after.to_string(), now: now_dt.to_string() }
        }
        webpki::Error::CertNotValidYet { .. } => {
            VerifyError::NotYetValid { not_before: info.not_before.to_string(), now: now_dt.to_string() }
        }
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => match purpose {
            Purpose::ClientAuth => VerifyError::MissingClientAuth,
            Purpose::ServerAuth => VerifyError::MissingServerAuth,
            Purpose::CodeSigning => VerifyError::MissingCodeSigning,
        },
        webpki::Error::CertRevoked => VerifyError::Revoked { serial: info.serial_hex.clone() },
        webpki::Error::UnknownIssuer
        | webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            VerifyError::BadSignature { ca: ca.fingerprint.to_string() }
        }
        other => VerifyError::Invalid(format!("{other:?}")),
    }
}

/// The signature algorithms every WendyOS verifier accepts.
pub static SUPPORTED_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ML_DSA_44,
    webpki::aws_lc_rs::ML_DSA_65,
    webpki::aws_lc_rs::ML_DSA_87,
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
];

/// Verifies `signature` over `message` under the raw public key bits.
pub(crate) fn verify_raw_signature(
    algorithm: Option<KeyAlgorithm>,
    public_key_bits: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), ()> {
    use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};
    let alg: &'static dyn VerificationAlgorithm = match algorithm.ok_or(())? {
        KeyAlgorithm::MlDsa44 => &aws_lc_rs::signature::ML_DSA_44,
        KeyAlgorithm::MlDsa65 => &aws_lc_rs::signature::ML_DSA_65,
        KeyAlgorithm::MlDsa87 => &aws_lc_rs::signature::ML_DSA_87,
        KeyAlgorithm::EcdsaP256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
    };
    UnparsedPublicKey::new(alg, public_key_bits).verify(message, signature).map_err(|_| ())
}

/// Whether the signature algorithm OID fits a key of this algorithm.
pub(crate) fn signature_oid_matches(algorithm: Option<KeyAlgorithm>, oid: &str) -> bool {
    let expected = match algorithm {
        Some(KeyAlgorithm::MlDsa44) => "2.16.840.1.101.3.4.3.17",
        Some(KeyAlgorithm::MlDsa65) => "2.16.840.1.101.3.4.3.18",
        Some(KeyAlgorithm::MlDsa87) => "2.16.840.1.101.3.4.3.19",
        Some(KeyAlgorithm::EcdsaP256) => "1.2.840.10045.4.3.2",
        None => return false,
    };
    oid == expected
}
