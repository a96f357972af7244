//! Every ML-DSA signature this library makes (certificates, CSRs, CRLs) must
//! verify under the independent RustCrypto `ml-dsa` implementation.

mod common;

use ::time::{Duration, OffsetDateTime};
use common::*;
use ml_dsa::{EncodedVerifyingKey, MlDsa44, MlDsa65, MlDsa87, MlDsaParams, Signature, VerifyingKey};
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::CertificateAuthority;
use wendy_identity::{crl, csr};
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate, X509CertificationRequest};

fn verify_with<P: MlDsaParams>(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(encoded) = EncodedVerifyingKey::<P>::try_from(public_key) else { return false };
    let vk = VerifyingKey::<P>::decode(&encoded);
    let Ok(sig) = Signature::<P>::try_from(signature) else { return false };
    vk.verify_with_context(message, &[], &sig)
}

fn rustcrypto_verify(alg: KeyAlgorithm, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match alg {
        KeyAlgorithm::MlDsa44 => verify_with::<MlDsa44>(public_key, message, signature),
        KeyAlgorithm::MlDsa65 => verify_with::<MlDsa65>(public_key, message, signature),
        KeyAlgorithm::MlDsa87 => verify_with::<MlDsa87>(public_key, message, signature),
        KeyAlgorithm::EcdsaP256 => unreachable!(),
    }
}

#[test]
fn certificates_csrs_and_crls_verify_under_rustcrypto_ml_dsa() {
    for alg in [KeyAlgorithm::MlDsa44, KeyAlgorithm::MlDsa65, KeyAlgorithm::MlDsa87] {
        let ca_key = PrivateKey::generate(alg).unwrap();
        let ca =
            CertificateAuthority::create_with_key("X-Check CA", ca_key, OffsetDateTime::now_utc(), TEN_YEARS).unwrap();
        let ca_cert = X509Certificate::from_der(ca.certificate()).unwrap().1;
        let ca_pk = ca_cert.public_key().subject_public_key.data.to_vec();

        // Self-signed CA certificate.
        assert!(
            rustcrypto_verify(alg, &ca_pk, ca_cert.tbs_certificate.as_ref(), &ca_cert.signature_value.data),
            "{alg} CA"
        );

        // A leaf signed by the CA.
        let leaf_key = PrivateKey::generate(alg).unwrap();
        let leaf = ca
            .issue(&device_profile(), &leaf_key.public_key_der(), OffsetDateTime::now_utc(), Duration::days(1))
            .unwrap();
        let leaf_cert = X509Certificate::from_der(&leaf.der).unwrap().1;
        assert!(
            rustcrypto_verify(alg, &ca_pk, leaf_cert.tbs_certificate.as_ref(), &leaf_cert.signature_value.data),
            "{alg} leaf"
        );

        // A CSR, signed by the leaf key.
        let csr_pem = csr::build(&leaf_key, "sh/wendy/1/42").unwrap();
        let csr_der = ::pem::parse(&csr_pem).unwrap().into_contents();
        let req = X509CertificationRequest::from_der(&csr_der).unwrap().1;
        let leaf_pk = req.certification_request_info.subject_pki.subject_public_key.data.to_vec();
        assert!(
            rustcrypto_verify(alg, &leaf_pk, req.certification_request_info.raw, &req.signature_value.data),
            "{alg} CSR"
        );

        // A CRL signed by the CA.
        let t = OffsetDateTime::now_utc();
        let crl_pem = crl::build(&ca, &[], 7, t, t + Duration::days(1)).unwrap();
        let crl_der = ::pem::parse(&crl_pem).unwrap().into_contents();
        let list = CertificateRevocationList::from_der(&crl_der).unwrap().1;
        assert!(rustcrypto_verify(alg, &ca_pk, list.tbs_cert_list.as_ref(), &list.signature_value.data), "{alg} CRL");

        // And a tampered message must fail, so the check has teeth.
        let mut tampered = leaf_cert.tbs_certificate.as_ref().to_vec();
        tampered[10] ^= 1;
        assert!(!rustcrypto_verify(alg, &ca_pk, &tampered, &leaf_cert.signature_value.data));
    }
}
