//! Certificate signing requests: building them on the device, and verifying
//! their proof of possession in pki-core.

use rcgen::{CertificateParams, DistinguishedName, DnType};
use x509_parser::prelude::FromDer;

use crate::key::{KeyAlgorithm, PrivateKey};
use crate::Error;

/// The largest CSR accepted, in DER bytes. An ML-DSA-87 CSR is under 8 KiB.
pub const MAX_CSR_DER_BYTES: usize = 16 * 1024;

/// Builds a PEM CSR for `key` with the subject common name `common_name`.
pub fn build(key: &PrivateKey, common_name: &str) -> Result<String, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(key).map_err(|e| Error::build("CSR", e))?;
    csr.pem().map_err(|e| Error::build("CSR", e))
}

/// A CSR whose signature verified under its own public key.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// The requested public key, as a DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// The subject common name the requester asked for, if any. Issuers set
    /// the subject themselves; this is informational.
    pub requested_common_name: Option<String>,
}

impl VerifiedCsr {
    /// Parses a PEM CSR and verifies its proof of possession.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        crate::pem::check_size(pem.as_bytes())?;
        let block = ::pem::parse(pem.trim()).map_err(|e| Error::Csr(format!("not PEM: {e}")))?;
        if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(Error::Csr(format!("expected a CERTIFICATE REQUEST PEM block, got {:?}", block.tag())));
        }
        Self::from_der(block.contents())
    }

    /// Parses a DER CSR and verifies its proof of possession.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_CSR_DER_BYTES {
            return Err(Error::TooLarge { actual: der.len(), limit: MAX_CSR_DER_BYTES });
        }
        let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map_err(|e| Error::Csr(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::Csr(format!("{} trailing bytes after the CSR", rest.len())));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let algorithm = spki_algorithm(spki)?;
        let sig_oid = csr.signature_algorithm.algorithm.to_id_string();
        if sig_oid != signature_oid(algorithm) {
            return Err(Error::Csr(format!("signature algorithm {sig_oid} does not match the {algorithm} public key")));
        }
        crate::verify::verify_raw_signature(
            Some(algorithm),
            &spki.subject_public_key.data,
            info.raw,
            &csr.signature_value.data,
        )
        .map_err(|()| Error::CsrSignature)?;
        let requested_common_name =
            info.subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        Ok(Self { public_key_der: spki.raw.to_vec(), algorithm, requested_common_name })
    }
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ML_DSA_44: &str = "2.16.840.1.101.3.4.3.17";
const OID_ML_DSA_65: &str = "2.16.840.1.101.3.4.3.18";
const OID_ML_DSA_87: &str = "2.16.840.1.101.3.4.3.19";

fn signature_oid(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::MlDsa44 => OID_ML_DSA_44,
        KeyAlgorithm::MlDsa65 => OID_ML_DSA_65,
        KeyAlgorithm::MlDsa87 => OID_ML_DSA_87,
        KeyAlgorithm::EcdsaP256 => OID_ECDSA_SHA256,
    }
}

/// The algorithm of a SubjectPublicKeyInfo, refusing anything we don't issue for.
pub(crate) fn spki_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyAlgorithm, Error> {
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        OID_ML_DSA_44 => Ok(KeyAlgorithm::MlDsa44),
        OID_ML_DSA_65 => Ok(KeyAlgorithm::MlDsa65),
        OID_ML_DSA_87 => Ok(KeyAlgorithm::MlDsa87),
        OID_EC_PUBLIC_KEY => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            if curve.as_deref() == Some(OID_P256) {
                Ok(KeyAlgorithm::EcdsaP256)
            } else {
                Err(Error::UnsupportedAlgorithm(format!("EC curve {}", curve.unwrap_or_default())))
            }
        }
        other => Err(Error::UnsupportedAlgorithm(format!("public key algorithm {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_csrs_verify_for_every_algorithm() {
        for alg in KeyAlgorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let pem = build(&key, "sh/wendy/1/2").unwrap();
            let csr = VerifiedCsr::from_pem(&pem).unwrap();
            assert_eq!(csr.algorithm, alg);
            assert_eq!(csr.public_key_der, key.public_key_der());
            assert_eq!(csr.requested_common_name.as_deref(), Some("sh/wendy/1/2"));
        }
    }

    #[test]
    fn a_flipped_signature_bit_fails_proof_of_possession() {
        let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
        let pem = build(&key, "x").unwrap();
        let mut der = ::pem::parse(&pem).unwrap().into_contents();
        let last = der.len() - 10;
        der[last] ^= 0x01;
        assert!(matches!(VerifiedCsr::from_der(&der), Err(Error::CsrSignature)));
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let der = ::pem::parse(build(&key, "x").unwrap()).unwrap().into_contents();
        for n in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert!(VerifiedCsr::from_der(&der[..n]).is_err());
        }
        let mut trailing = der.clone();
        trailing.extend_from_slice(&[0, 0]);
        assert!(VerifiedCsr::from_der(&trailing).is_err());
        assert!(VerifiedCsr::from_pem("garbage").is_err());
    }
}
