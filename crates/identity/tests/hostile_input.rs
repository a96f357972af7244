//! Hostile input gets an error, never a panic.

mod common;

use common::*;
use time::{Duration, OffsetDateTime};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::VerifiedCrl;
use wendy_identity::csr::VerifiedCsr;
use wendy_identity::verify::CertificateInfo;
use wendy_identity::Error;

#[test]
fn truncated_certificates_are_errors() {
    let ca = ca("Hostile CA");
    let der = ca.certificate().to_vec();
    for n in 0..der.len() {
        assert!(CertificateInfo::from_der(&der[..n]).is_err(), "truncated at {n}");
    }
}

#[test]
fn trailing_bytes_after_a_certificate_are_errors() {
    let ca = ca("Hostile CA");
    let mut der = ca.certificate().to_vec();
    der.push(0);
    assert!(matches!(CertificateInfo::from_der(&der), Err(Error::Certificate(_))));
}

#[test]
fn a_wrong_signature_oid_in_a_csr_is_an_error() {
    use wendy_identity::key::{KeyAlgorithm, PrivateKey};
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let mut der = pem::parse(wendy_identity::csr::build(&key, "x").unwrap()).unwrap().into_contents();
    // ML-DSA-65's OID ends in .18 (0x12); change it to .17 (ML-DSA-44) in the
    // outer signatureAlgorithm, which comes after the request info.
    let oid = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12];
    let pos = der.windows(oid.len()).rposition(|w| w == oid).unwrap();
    der[pos + oid.len() - 1] = 0x11;
    assert!(VerifiedCsr::from_der(&der).is_err());
}

#[test]
fn oversized_and_garbage_pem_are_errors() {
    let huge = "A".repeat(wendy_identity::pem::MAX_PEM_BYTES + 1);
    assert!(matches!(TrustBundle::from_pem(&huge), Err(Error::TooLarge { .. })));
    assert!(TrustBundle::from_pem("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").is_err());
    assert!(TrustBundle::from_pem("").is_err());
    assert!(TrustBundle::from_pem("-----BEGIN CERTIFICATE-----\nMIIB\n").is_err());
    assert!(VerifiedCsr::from_pem(&huge).is_err());
    let bundle = TrustBundle::from_pem(&ca("Hostile CA").certificate_pem()).unwrap();
    assert!(VerifiedCrl::from_pem("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", &bundle).is_err());
}

#[test]
fn a_leaf_cannot_be_trusted_as_a_ca() {
    let ca = ca("Hostile CA");
    let (_, leaf) = leaf_at(&ca, &device_profile(), OffsetDateTime::now_utc(), Duration::days(1));
    assert!(TrustBundle::from_pem(&leaf.pem).is_err());
}

#[test]
fn truncated_crls_are_errors() {
    let ca = ca("Hostile CA");
    let t = OffsetDateTime::now_utc();
    let pem = wendy_identity::crl::build(&ca, &[], 1, t, t + Duration::days(1)).unwrap();
    let der = pem::parse(&pem).unwrap().into_contents();
    let bundle = TrustBundle::from_pem(&ca.certificate_pem()).unwrap();
    for n in 0..der.len() {
        assert!(VerifiedCrl::from_der(&der[..n], &bundle).is_err());
    }
}
