//! Certificate revocation lists: built by pki-core, checked by every
//! verifier. A CRL counts only if its signature verifies under the CA it is
//! attributed to.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::bundle::TrustBundle;
use crate::fingerprint::Fingerprint;
use crate::profile::CertificateAuthority;
use crate::Error;

/// The largest CRL accepted, in DER bytes.
pub const MAX_CRL_DER_BYTES: usize = 512 * 1024;

/// One revoked certificate, as pki-core records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial number as hex (as [`crate::profile::IssuedCertificate::serial_hex`]).
    pub serial_hex: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// Builds a CRL signed by `ca`, as PEM.
pub fn build(
    ca: &CertificateAuthority,
    revoked: &[RevokedEntry],
    crl_number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<String, Error> {
    let revoked_certs = revoked
        .iter()
        .map(|r| {
            let serial = hex::decode(&r.serial_hex).map_err(|_| Error::build("CRL", "serial is not hex"))?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: r.revoked_at,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.issuer()?).map_err(|e| Error::build("CRL", e))?;
    crl.pem().map_err(|e| Error::build("CRL", e))
}

/// A CRL whose signature verified under a CA in a bundle.
#[derive(Clone, Debug)]
pub struct VerifiedCrl {
    /// The fingerprint of the CA that signed it.
    pub issuer: Fingerprint,
    /// Revoked serial numbers, as lowercase hex with leading zero bytes removed.
    pub revoked_serials: Vec<String>,
    /// The CRL number, if present.
    pub crl_number: Option<Vec<u8>>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate, if present.
    pub next_update: Option<OffsetDateTime>,
    /// The DER, for keeping a copy on disk.
    pub der: Vec<u8>,
}

impl VerifiedCrl {
    /// Parses a DER CRL and verifies it against the bundle CA(s) whose
    /// subject matches its issuer.
    pub fn from_der(der: &[u8], bundle: &TrustBundle) -> Result<Self, Error> {
        if der.len() > MAX_CRL_DER_BYTES {
            return Err(Error::TooLarge { actual: der.len(), limit: MAX_CRL_DER_BYTES });
        }
        let (rest, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|e| Error::Crl(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::Crl(format!("{} trailing bytes after the CRL", rest.len())));
        }
        let issuer_der = crl.tbs_cert_list.issuer.as_raw();
        let mut candidates = bundle.cas_with_subject(issuer_der).peekable();
        if candidates.peek().is_none() {
            return Err(Error::Crl("no trusted CA matches the CRL issuer".into()));
        }
        let sig_oid = crl.signature_algorithm.algorithm.to_id_string();
        let signer = candidates.find(|ca| {
            crate::verify::signature_oid_matches(ca.info.key_algorithm, &sig_oid)
                && crate::verify::verify_raw_signature(
                    ca.info.key_algorithm,
                    &ca.info.public_key_bits,
                    crl.tbs_cert_list.as_ref(),
                    &crl.signature_value.data,
                )
                .is_ok()
        });
        let Some(signer) = signer else {
            return Err(Error::Crl("the CRL signature does not verify under any CA with its issuer name".into()));
        };
        let revoked_serials = crl.iter_revoked_certificates().map(|r| normalize_serial_hex(r.raw_serial())).collect();
        Ok(Self {
            issuer: signer.fingerprint,
            revoked_serials,
            crl_number: crl.crl_number().map(|n| n.to_bytes_be()),
            this_update: crl.last_update().to_datetime(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            der: der.to_vec(),
        })
    }

    /// Parses every CRL in a PEM document (see [`Self::from_der`]).
    pub fn from_pem(pem: &str, bundle: &TrustBundle) -> Result<Vec<Self>, Error> {
        crate::pem::crls(pem)?.iter().map(|d| Self::from_der(d, bundle)).collect()
    }

    /// Whether `serial_hex` is listed.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        let wanted = normalize_serial_hex(&hex::decode(serial_hex).unwrap_or_default());
        self.revoked_serials.contains(&wanted)
    }

    /// The CRL as PEM.
    pub fn to_pem(&self) -> String {
        crate::pem::encode("X509 CRL", &self.der)
    }
}

/// Lowercase hex of a serial with leading zero bytes removed.
pub fn normalize_serial_hex(bytes: &[u8]) -> String {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first.min(bytes.len())..])
}
