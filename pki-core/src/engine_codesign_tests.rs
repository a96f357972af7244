//! Unit tests of the code-signing CA line (decision 0069).

use std::sync::Arc;

use rustls_pki_types::UnixTime;
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::VerifiedCrl;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::CaPurpose;
use wendy_identity::role::Role;
use wendy_identity::verify::{CertificateInfo, Purpose, TrustStore, VerifyError};

use super::*;
use crate::store::sqlite::SqliteStore;

struct Fixture {
    dir: tempfile::TempDir,
    engine: Engine,
}

fn open_in(dir: tempfile::TempDir) -> Fixture {
    let store = Arc::new(SqliteStore::open(&dir.path().join("db"), false).unwrap());
    let engine = Engine::open(EngineConfig::new(dir.path().to_path_buf()), store).unwrap();
    Fixture { dir, engine }
}

fn fixture() -> Fixture {
    open_in(tempfile::tempdir().unwrap())
}

fn csr(algorithm: KeyAlgorithm, cn: &str) -> String {
    wendy_identity::csr::build(&PrivateKey::generate(algorithm).unwrap(), cn).unwrap()
}

fn der(pem: &str) -> rustls_pki_types::CertificateDer<'static> {
    wendy_identity::pem::certificates(pem).unwrap().remove(0)
}

fn store_of(pem: &str) -> TrustStore {
    TrustStore::new(TrustBundle::from_pem(pem).unwrap())
}

#[test]
fn a_new_data_directory_gets_a_code_signing_ca_apart_from_the_device_ca() {
    let f = fixture();
    let cas = f.engine.list_cas().unwrap();
    assert_eq!(
        cas.iter().map(|c| (c.purpose, c.issuing)).collect::<Vec<_>>(),
        [(CaPurpose::Device, true), (CaPurpose::CodeSigning, true)]
    );
    let codesign = &cas[1];
    assert_eq!(codesign.key_algorithm, "ml-dsa-65");
    assert_ne!(cas[0].common_name, codesign.common_name, "the two lines must not share a subject");
    let info = CertificateInfo::from_pem(&codesign.certificate_pem).unwrap();
    assert!(info.is_ca && !info.code_signing && !info.client_auth && !info.server_auth);
    // The device bundle (GetCaBundle, the TLS verifier) does not contain it.
    assert!(!f.engine.bundle_pem().unwrap().contains(codesign.certificate_pem.trim()));
    assert_eq!(f.engine.codesign_bundle_pem().unwrap().trim(), codesign.certificate_pem.trim());
    // The key file is 0400 like every CA key.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(f.dir.path().join("ca").join(format!("{}.key", codesign.id))).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
}

#[test]
fn an_old_data_directory_gets_its_code_signing_ca_on_first_start_with_an_audit_row() {
    let f = fixture();
    let device_id = f.engine.issuing_ca().unwrap().id;
    let dir = f.dir;
    drop(f.engine);
    // As before code-signing CAs: only the device CA.
    let conn = rusqlite::Connection::open(dir.path().join("db")).unwrap();
    conn.execute("DELETE FROM cas WHERE purpose = 'codesign'", []).unwrap();
    conn.execute("DELETE FROM audit_log", []).unwrap();
    drop(conn);
    let f = open_in(dir);
    let cas = f.engine.list_cas().unwrap();
    assert_eq!(cas.len(), 2);
    assert_eq!(cas[0].id, device_id, "the device CA is untouched");
    assert!(cas[0].issuing);
    assert_eq!(cas[1].purpose, CaPurpose::CodeSigning);
    let store = SqliteStore::open(&f.dir.path().join("db"), false).unwrap();
    let log = store.audit_log(10).unwrap();
    assert!(log
        .iter()
        .any(|e| e.event == "ca" && e.subject == cas[1].id && e.detail.starts_with("created codesign CA")));
    // A third start creates nothing more.
    let dir = f.dir;
    drop(f.engine);
    assert_eq!(open_in(dir).engine.list_cas().unwrap().len(), 2);
}

#[test]
fn code_signers_have_code_signing_only_and_verify_only_under_the_code_signing_ca() {
    let f = fixture();
    let signer =
        f.engine.issue_code_signing(&Principal::local(), &csr(KeyAlgorithm::MlDsa65, "Release signer 1"), 30).unwrap();
    assert_eq!(signer.common_name, "Release signer 1");
    assert_eq!(signer.record.kind, CODESIGN_KIND);
    assert!(signer.record.number > 0);
    let leaf = der(&signer.record.certificate_pem);
    let info = CertificateInfo::from_der(&leaf).unwrap();
    assert!(info.code_signing && !info.client_auth && !info.server_auth && !info.is_ca);
    assert_eq!(info.common_name.as_deref(), Some("Release signer 1"));
    assert!(signer.record.not_after - signer.record.not_before <= 30 * 86400 + 300);

    let codesign = store_of(&f.engine.codesign_bundle_pem().unwrap());
    codesign.verify(&leaf, &[], Purpose::CodeSigning, UnixTime::now()).unwrap();
    let device = store_of(&f.engine.bundle_pem().unwrap());
    assert_eq!(
        device.verify(&leaf, &[], Purpose::CodeSigning, UnixTime::now()).unwrap_err(),
        VerifyError::IssuerNotFound
    );
    // Nor is it a TLS client of the frontend.
    assert!(matches!(f.engine.authenticate_peer(Some(&[leaf])), Err(Error::Unauthenticated(_))));

    // A device certificate is no code signer.
    let token = f.engine.create_asset_token(&Principal::local(), 1, "d", 0).unwrap();
    let device_cert = f.engine.issue(&token.token, &csr(KeyAlgorithm::MlDsa65, "x")).unwrap();
    let device_leaf = der(&device_cert.pem_certificate);
    assert_eq!(
        codesign.verify(&device_leaf, &[], Purpose::CodeSigning, UnixTime::now()).unwrap_err(),
        VerifyError::IssuerNotFound
    );
    assert_eq!(
        device.verify(&device_leaf, &[], Purpose::CodeSigning, UnixTime::now()).unwrap_err(),
        VerifyError::MissingCodeSigning
    );

    // The published view of it carries the code-signing chain.
    let listed = f.engine.get_certificate(&Principal::local(), signer.record.number).unwrap();
    assert_eq!(listed.pem_certificate_chain, f.engine.codesign_bundle_pem().unwrap());
    let log = f.engine.store.audit_log(20).unwrap();
    assert!(log.iter().any(|e| e.event == "codesign" && e.subject == signer.record.id && e.actor == "local"));
}

#[test]
fn refusals_say_what_is_wrong() {
    let f = fixture();
    let good = csr(KeyAlgorithm::MlDsa65, "s");
    let issue = |p: &Principal, csr: &str, days: i64| f.engine.issue_code_signing(p, csr, days).unwrap_err();

    for days in [-1, MAX_CODESIGN_VALIDITY_DAYS + 1, 3650] {
        let e = issue(&Principal::local(), &good, days);
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains("1 to 1825 days"), "{e}");
    }
    let e = issue(&Principal::local(), &csr(KeyAlgorithm::EcdsaP256, "s"), 0);
    assert!(matches!(e, Error::InvalidCsr(_)) && e.to_string().contains("must be ML-DSA-65"), "{e}");
    let e =
        issue(&Principal::local(), "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", 0);
    assert!(matches!(e, Error::InvalidCsr(_)), "{e}");
    // A CSR whose signature does not match: flip a byte in its signature.
    let block = pem::parse(&good).unwrap();
    let mut bytes = block.contents().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
    let e = issue(&Principal::local(), &tampered, 0);
    assert!(matches!(e, Error::InvalidCsr(_)), "{e}");
    for role in [Role::Member, Role::Viewer] {
        let e = issue(&Principal { id: "k".into(), role }, &good, 0);
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    }
    f.engine.issue_code_signing(&Principal { id: "k".into(), role: Role::Admin }, &good, 0).unwrap();
}

#[test]
fn common_names_are_sanitised() {
    assert_eq!(codesign_common_name(Some("WendyOS  release\tsigner")), "WendyOS release signer");
    assert_eq!(codesign_common_name(Some("a/b,c=d\u{e9}<x>")), "abcdx");
    assert_eq!(codesign_common_name(Some(&"x".repeat(500))).len(), MAX_CODESIGN_COMMON_NAME);
    assert!(codesign_common_name(None).starts_with("code-signer-"));
    assert!(codesign_common_name(Some("/// ")).starts_with("code-signer-"));
}

#[test]
fn rotation_revocation_and_crls_follow_each_line() {
    let f = fixture();
    let device_before = f.engine.issuing_ca().unwrap();
    let old = f.engine.issuing_codesign_ca().unwrap();
    let signer = f.engine.issue_code_signing(&Principal::local(), &csr(KeyAlgorithm::MlDsa65, "s"), 0).unwrap();

    let rotated = f.engine.rotate_ca("", CaPurpose::CodeSigning).unwrap();
    assert_eq!(rotated.purpose, CaPurpose::CodeSigning);
    assert_eq!(rotated.common_name, old.common_name);
    assert_eq!(f.engine.issuing_codesign_ca().unwrap().id, rotated.id);
    assert_eq!(f.engine.issuing_ca().unwrap().id, device_before.id, "the device line did not move");
    let keyring = TrustBundle::from_pem(&f.engine.codesign_bundle_pem().unwrap()).unwrap();
    assert_eq!(keyring.cas().len(), 2, "the old code-signing CA stays trusted until it expires");
    assert_eq!(TrustBundle::from_pem(&f.engine.bundle_pem().unwrap()).unwrap().cas().len(), 1);
    let newer = f.engine.issue_code_signing(&Principal::local(), &csr(KeyAlgorithm::MlDsa65, "s"), 0).unwrap();
    assert_eq!(newer.record.ca_id, rotated.id);

    // Revoking the old signer lists it in the old code-signing CA's CRL.
    f.engine.revoke(&Principal::local(), signer.record.number, "keyCompromise").unwrap();
    let crls = f.engine.codesign_crls().unwrap();
    assert_eq!(crls.len(), 2);
    let verified: Vec<VerifiedCrl> = crls.iter().flat_map(|p| VerifiedCrl::from_pem(p, &keyring).unwrap()).collect();
    assert!(verified.iter().any(|c| c.is_revoked(&signer.record.id)));
    // By id it is served too; the all-CAs answer (devices) stays device-only.
    assert_eq!(f.engine.crls(&old.id).unwrap().len(), 1);
    let device_bundle = TrustBundle::from_pem(&f.engine.bundle_pem().unwrap()).unwrap();
    for pem in f.engine.crls("").unwrap() {
        VerifiedCrl::from_pem(&pem, &device_bundle).unwrap();
    }
    assert_eq!(f.engine.crls("").unwrap().len(), 1);

    // Rotating the device CA by default leaves the code-signing line alone.
    let device_after = f.engine.rotate_ca("", CaPurpose::Device).unwrap();
    assert_eq!(device_after.purpose, CaPurpose::Device);
    assert_eq!(f.engine.issuing_codesign_ca().unwrap().id, rotated.id);
    // A code-signing CA is refused as the frontend's device CA.
    let dir = f.dir;
    drop(f.engine);
    let store = Arc::new(SqliteStore::open(&dir.path().join("db"), false).unwrap());
    let mut config = EngineConfig::new(dir.path().to_path_buf());
    config.issuing_ca_id = Some(rotated.id.clone());
    let e = Engine::open(config, store).unwrap_err();
    assert!(e.to_string().contains("not a device CA"), "{e}");
}
