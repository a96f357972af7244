//! The WendyOS client-certificate semantics, one test per case.

mod common;

use common::*;
use rustls_pki_types::UnixTime;
use time::{Duration, OffsetDateTime};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::{self, RevokedEntry, VerifiedCrl};
use wendy_identity::profile::LeafProfile;
use wendy_identity::role::Role;
use wendy_identity::tls::Credentials;
use wendy_identity::verify::{Purpose, TrustStore, VerifyError};
use wendy_identity::Error;

fn now() -> UnixTime {
    UnixTime::now()
}

fn store(pems: &[String]) -> TrustStore {
    TrustStore::new(TrustBundle::from_pem(&pems.concat()).unwrap())
}

#[test]
fn rollover_two_same_dn_cas_accept_leaves_from_either() {
    let old = ca("WendyOS Device CA");
    let new = ca("WendyOS Device CA");
    let store = store(&[old.certificate_pem(), new.certificate_pem()]);
    for (issuer, other) in [(&old, &new), (&new, &old)] {
        let (_, leaf) = user(issuer, Role::Admin);
        let verified = store.verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap();
        assert_eq!(verified.ca, issuer.fingerprint());
        assert_ne!(verified.ca, other.fingerprint());
        assert_eq!(verified.info.role, Some(Role::Admin));
    }
}

#[test]
fn issuer_not_in_pool_gives_the_design_message() {
    let trusted = ca("WendyOS Device CA");
    let stranger = ca("Somebody Else CA");
    let (_, leaf) = user(&stranger, Role::Owner);
    let err = store(&[trusted.certificate_pem()]).verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap_err();
    assert_eq!(err, VerifyError::IssuerNotFound);
    assert_eq!(err.to_string(), "client certificate issuer not found in trusted CA pool");
}

#[test]
fn all_matching_cas_fail_gives_the_last_error() {
    let a = ca("WendyOS Device CA");
    let b = ca("WendyOS Device CA");
    let impostor = ca("WendyOS Device CA");
    let (_, leaf) = user(&impostor, Role::Owner);
    let err = store(&[a.certificate_pem(), b.certificate_pem()])
        .verify(&leaf.der, &[], Purpose::ClientAuth, now())
        .unwrap_err();
    assert_eq!(err, VerifyError::BadSignature { ca: b.fingerprint().to_string() }, "last CA tried is b");
}

#[test]
fn expired_leaf_is_refused() {
    let ca = ca("WendyOS Device CA");
    let (_, leaf) =
        leaf_at(&ca, &user_profile(Role::Admin), OffsetDateTime::now_utc() - Duration::days(10), Duration::days(1));
    let err = store(&[ca.certificate_pem()]).verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
    assert!(err.to_string().starts_with("certificate expired at"));
}

#[test]
fn not_yet_valid_leaf_is_refused() {
    let ca = ca("WendyOS Device CA");
    let (_, leaf) =
        leaf_at(&ca, &user_profile(Role::Admin), OffsetDateTime::now_utc() + Duration::days(10), Duration::days(30));
    let err = store(&[ca.certificate_pem()]).verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap_err();
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err}");
}

#[test]
fn missing_client_auth_eku_is_refused() {
    let ca = ca("WendyOS Device CA");
    let server = LeafProfile::Server { dns_names: vec!["pki-core.wendy.internal".into()] };
    let (_, leaf) = leaf_at(&ca, &server, OffsetDateTime::now_utc(), Duration::days(30));
    let err = store(&[ca.certificate_pem()]).verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap_err();
    assert_eq!(err, VerifyError::MissingClientAuth);
}

#[test]
fn revoked_leaf_is_refused_and_others_still_pass() {
    let ca = ca("WendyOS Device CA");
    let (_, revoked) = user(&ca, Role::Admin);
    let (_, fine) = user(&ca, Role::Admin);
    let t = OffsetDateTime::now_utc();
    let crl_pem = crl::build(
        &ca,
        &[RevokedEntry { serial_hex: revoked.serial_hex.clone(), revoked_at: t }],
        1,
        t - Duration::minutes(1),
        t + Duration::days(1),
    )
    .unwrap();
    let mut store = store(&[ca.certificate_pem()]);
    let crls = VerifiedCrl::from_pem(&crl_pem, store.bundle()).unwrap();
    assert!(crls[0].is_revoked(&revoked.serial_hex));
    store.set_crls(&crls).unwrap();
    let err = store.verify(&revoked.der, &[], Purpose::ClientAuth, now()).unwrap_err();
    assert!(matches!(err, VerifyError::Revoked { .. }), "{err}");
    store.verify(&fine.der, &[], Purpose::ClientAuth, now()).unwrap();
}

#[test]
fn crl_of_one_rollover_ca_does_not_break_the_other() {
    let old = ca("WendyOS Device CA");
    let new = ca("WendyOS Device CA");
    let (_, from_new) = user(&new, Role::Member);
    let t = OffsetDateTime::now_utc();
    let old_crl = crl::build(&old, &[], 1, t - Duration::minutes(1), t + Duration::days(1)).unwrap();
    let mut store = store(&[old.certificate_pem(), new.certificate_pem()]);
    let crls = VerifiedCrl::from_pem(&old_crl, store.bundle()).unwrap();
    assert_eq!(crls[0].issuer, old.fingerprint());
    store.set_crls(&crls).unwrap();
    store.verify(&from_new.der, &[], Purpose::ClientAuth, now()).unwrap();
}

#[test]
fn a_crl_from_an_untrusted_key_is_refused() {
    let real = ca("WendyOS Device CA");
    let forger = ca("WendyOS Device CA");
    let t = OffsetDateTime::now_utc();
    let forged = crl::build(&forger, &[], 1, t, t + Duration::days(1)).unwrap();
    let bundle = TrustBundle::from_pem(&real.certificate_pem()).unwrap();
    assert!(VerifiedCrl::from_pem(&forged, &bundle).is_err());
}

#[test]
fn empty_chain_refuses_to_build_tls_and_says_reprovision() {
    let ca = ca("WendyOS Device CA");
    let (key, leaf) = leaf_at(&ca, &device_profile(), OffsetDateTime::now_utc(), Duration::days(30));
    let err = Credentials::from_pems(&key.to_pem(), &leaf.pem, "").unwrap_err();
    assert!(matches!(err, Error::EmptyChain));
    assert!(err.to_string().contains("may need to be re-provisioned"), "{err}");
    Credentials::from_pems(&key.to_pem(), &leaf.pem, &ca.certificate_pem()).unwrap();
}

#[test]
fn device_leaves_have_both_ekus_and_the_design_cn() {
    let ca = ca("WendyOS Device CA");
    let (_, leaf) = leaf_at(&ca, &device_profile(), OffsetDateTime::now_utc(), Duration::days(30));
    let store = store(&[ca.certificate_pem()]);
    let v = store.verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap();
    store.verify(&leaf.der, &[], Purpose::ServerAuth, now()).unwrap();
    assert_eq!(v.info.common_name.as_deref(), Some("sh/wendy/1/42"));
    assert_eq!(v.info.role, None);
    assert!(leaf.not_before <= OffsetDateTime::now_utc() - Duration::minutes(4), "backdated for clock skew");
}

#[test]
fn ecdsa_leaf_under_ml_dsa_ca_is_accepted() {
    use wendy_identity::key::{KeyAlgorithm, PrivateKey};
    let ca = ca("WendyOS Device CA");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = ca
        .issue(&user_profile(Role::Viewer), &key.public_key_der(), OffsetDateTime::now_utc(), Duration::days(1))
        .unwrap();
    store(&[ca.certificate_pem()]).verify(&leaf.der, &[], Purpose::ClientAuth, now()).unwrap();
}

#[test]
fn code_signers_verify_only_for_code_signing_and_only_under_their_ca() {
    use wendy_identity::key::{KeyAlgorithm, PrivateKey};
    use wendy_identity::profile::{CaPurpose, CertificateAuthority};
    let at = OffsetDateTime::now_utc();
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let codesign = CertificateAuthority::create_for(
        CaPurpose::CodeSigning,
        "WendyOS code-signing CA",
        key,
        at,
        Duration::days(30),
    )
    .unwrap();
    let ca_info = wendy_identity::verify::CertificateInfo::from_der(codesign.certificate()).unwrap();
    assert!(ca_info.is_ca && !ca_info.code_signing && !ca_info.client_auth && !ca_info.server_auth);
    let device_ca = ca("WendyOS Device CA");
    let (_, signer) =
        leaf_at(&codesign, &LeafProfile::CodeSigning { common_name: "release signer".into() }, at, Duration::days(30));
    let info = wendy_identity::verify::CertificateInfo::from_der(&signer.der).unwrap();
    assert!(info.code_signing && !info.client_auth && !info.server_auth && !info.is_ca);
    assert_eq!(info.common_name.as_deref(), Some("release signer"));

    let codesign_store = store(&[codesign.certificate_pem()]);
    codesign_store.verify(&signer.der, &[], Purpose::CodeSigning, now()).unwrap();
    for purpose in [Purpose::ClientAuth, Purpose::ServerAuth] {
        assert!(codesign_store.verify(&signer.der, &[], purpose, now()).is_err(), "{purpose:?}");
    }
    assert_eq!(
        store(&[device_ca.certificate_pem()]).verify(&signer.der, &[], Purpose::CodeSigning, now()).unwrap_err(),
        VerifyError::IssuerNotFound
    );
    let (_, device) = leaf_at(&device_ca, &device_profile(), at, Duration::days(30));
    assert_eq!(
        store(&[device_ca.certificate_pem()]).verify(&device.der, &[], Purpose::CodeSigning, now()).unwrap_err(),
        VerifyError::MissingCodeSigning
    );
    let empty = LeafProfile::CodeSigning { common_name: " ".into() };
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    assert!(codesign.issue(&empty, &key.public_key_der(), at, Duration::days(1)).is_err());
}
