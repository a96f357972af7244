//! Acceptance 1: token, enrolment, mTLS refresh, revocation (CRL and
//! refused refresh), CA rotation against the real `pkicore` binary.

mod common;

use common::*;
use rustls_pki_types::UnixTime;
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::VerifiedCrl;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::tls::Credentials;
use wendy_identity::verify::{CertificateInfo, Purpose, TrustStore};
use wendy_proto::cloud::*;
use wendy_proto::contract::DEV_API_KEY;
use wendy_proto::pkicore::crl_service_client::CrlServiceClient;
use wendy_proto::pkicore::GetCrlRequest;

async fn crls(server: &Server, creds: &Credentials) -> Vec<String> {
    let mut crl = CrlServiceClient::new(server.channel(Some(creds)).await);
    crl.get_crl(GetCrlRequest { ca_id: String::new() }).await.unwrap().into_inner().pem_crls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_refresh_revoke_rotate() {
    let server = Server::start(&[]);
    let mut anon = server.client(None).await;

    // Enrol a device.
    let (token, asset_id) = asset_token(&mut anon, 0).await;
    assert!(asset_id >= 1);
    let (key, csr) = key_and_csr();
    let cert = issued(anon.issue_certificate(IssueCertificateRequest { pem_csr: csr, enrollment_token: token }).await);
    let info = CertificateInfo::from_pem(&cert.pem_certificate).unwrap();
    assert_eq!(info.common_name.as_deref(), Some(format!("sh/wendy/1/{asset_id}").as_str()));
    assert!(info.client_auth && info.server_auth);
    assert!(info.not_before.unix_timestamp() <= time::OffsetDateTime::now_utc().unix_timestamp() - 290);
    assert_eq!(cert.asset_id, Some(asset_id));
    assert_eq!(cert.organization_id, 1);
    assert!(cert.id > 0);
    assert_eq!(cert.serial_number, info.serial_hex.to_ascii_uppercase());
    let got = anon
        .get_certificate(
            pkicore::client::with_api_key(GetCertificateRequest { certificate_id: cert.id }, DEV_API_KEY).unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.serial_number, cert.serial_number);
    let bundle = TrustBundle::from_pem(&cert.pem_certificate_chain).unwrap();
    assert_eq!(bundle.cas().len(), 1);
    assert_eq!(bundle.cas()[0].fingerprint, server.fingerprint);

    // The frontend refuses refresh without a client certificate.
    let (_, csr) = key_and_csr();
    let err = anon.refresh_certificate(RefreshCertificateRequest { pem_csr: csr }).await.unwrap().into_inner();
    let err = err.into_result().unwrap_err();
    assert_eq!(
        (err.code, reason(&err)),
        (CertificateErrorCode::CertificateErrorUnauthorized as i32, "unauthenticated")
    );

    // Refresh over mTLS with a new key: same identity.
    let creds = Credentials::from_pems(&key.to_pem(), &cert.pem_certificate, &cert.pem_certificate_chain).unwrap();
    let mut mtls = server.client(Some(&creds)).await;
    let meta = mtls.get_certificate_metadata(GetCertificateMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!((meta.organization_id, meta.asset_id, meta.user_id), (1, Some(asset_id), None));
    let e = anon.get_certificate_metadata(GetCertificateMetadataRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let (key2, csr2) = key_and_csr();
    let refreshed = mtls
        .refresh_certificate(RefreshCertificateRequest { pem_csr: csr2 })
        .await
        .unwrap()
        .into_inner()
        .into_result()
        .unwrap();
    let info2 = CertificateInfo::from_pem(&refreshed.pem_certificate).unwrap();
    assert_eq!(info2.common_name, info.common_name);
    assert_eq!(info2.public_key_der, key2.public_key_der());
    assert_ne!(info2.serial_hex, info.serial_hex);

    // Revoke the refreshed certificate.
    let creds2 =
        Credentials::from_pems(&key2.to_pem(), &refreshed.pem_certificate, &refreshed.pem_certificate_chain).unwrap();
    let mut mtls2 = server.client(Some(&creds2)).await;
    let done = anon
        .revoke_certificate(
            pkicore::client::with_api_key(
                RevokeCertificateRequest { certificate_id: refreshed.id, reason: "keyCompromise".into() },
                DEV_API_KEY,
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(done.success);
    let revoked = anon
        .get_certificate(
            pkicore::client::with_api_key(GetCertificateRequest { certificate_id: refreshed.id }, DEV_API_KEY).unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, CertificateStatus::Revoked as i32);
    assert_eq!(revoked.revocation_reason, "keyCompromise");
    // Listed in pages, with the total.
    let mut list = anon
        .list_certificates(
            pkicore::client::with_api_key(
                ListCertificatesRequest { asset_id, offset: Some(1), limit: Some(1), organization_id: 0 },
                DEV_API_KEY,
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    let page = list.message().await.unwrap().unwrap();
    assert_eq!((page.total, page.certificate.map(|c| c.id)), (2, Some(refreshed.id)));
    assert!(list.message().await.unwrap().is_none());

    // It is in the next CRL, signed by the issuing CA, fetched over mTLS.
    let pems = crls(&server, &creds).await;
    let verified: Vec<VerifiedCrl> = pems.iter().flat_map(|p| VerifiedCrl::from_pem(p, &bundle).unwrap()).collect();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].issuer, server.fingerprint);
    assert!(verified[0].is_revoked(&info2.serial_hex));
    assert!(!verified[0].is_revoked(&info.serial_hex));
    // Anonymous clients get no CRL.
    let mut anon_crl = CrlServiceClient::new(server.channel(None).await);
    assert!(anon_crl.get_crl(GetCrlRequest { ca_id: String::new() }).await.is_err());

    // Refresh with the revoked certificate is refused: on the connection
    // opened before the revocation...
    let (_, csr3) = key_and_csr();
    let err = mtls2.refresh_certificate(RefreshCertificateRequest { pem_csr: csr3 }).await.unwrap().into_inner();
    assert_eq!(err.into_result().unwrap_err().code, CertificateErrorCode::CertificateErrorCertificateRevoked as i32);
    // ...and at the next handshake.
    let fresh = pkicore::client::connect_tls(&server.addr, server.fingerprint, Some(&creds2)).await;
    if let Ok(channel) = fresh {
        let (_, csr4) = key_and_csr();
        let r = client(channel).refresh_certificate(RefreshCertificateRequest { pem_csr: csr4 }).await;
        assert!(r.map(|r| r.into_inner().into_result().is_err()).unwrap_or(true));
    }
    // The server keeps serving.
    assert!(anon.get_ca_bundle(GetCaBundleRequest {}).await.is_ok());

    // Rotate the CA through the admin CLI.
    let out = server.admin(&["ca", "rotate"]);
    let new_fp: Fingerprint = out
        .lines()
        .find_map(|l| l.strip_prefix("CA fingerprint: "))
        .expect("rotate prints the new fingerprint")
        .parse()
        .unwrap();
    assert_ne!(new_fp, server.fingerprint);
    let listed = server.admin(&["ca", "list"]);
    assert_eq!(listed.lines().filter(|l| l.contains(" device ")).count(), 2, "{listed}");
    assert_eq!(
        listed.lines().filter(|l| l.contains(" codesign ")).count(),
        1,
        "the code-signing CA did not move: {listed}"
    );

    // GetCaBundle has both CAs, with the same subject.
    let bundle_pem = anon.get_ca_bundle(GetCaBundleRequest {}).await.unwrap().into_inner().pem_bundle;
    let bundle = TrustBundle::from_pem(&bundle_pem).unwrap();
    assert_eq!(bundle.cas().len(), 2);
    assert_eq!(bundle.cas()[0].info.subject_der, bundle.cas()[1].info.subject_der);
    let store = TrustStore::new(bundle.clone());

    // The old leaf still verifies, under the old CA.
    let old_der = wendy_identity::pem::certificates(&cert.pem_certificate).unwrap().remove(0);
    let v = store.verify(&old_der, &[], Purpose::ClientAuth, UnixTime::now()).unwrap();
    assert_eq!(v.ca, server.fingerprint);

    // New leaves come from the new CA.
    let (token, _) = asset_token(&mut anon, 0).await;
    let (_, csr) = key_and_csr();
    let newer = issued(anon.issue_certificate(IssueCertificateRequest { pem_csr: csr, enrollment_token: token }).await);
    let new_der = wendy_identity::pem::certificates(&newer.pem_certificate).unwrap().remove(0);
    let v = store.verify(&new_der, &[], Purpose::ClientAuth, UnixTime::now()).unwrap();
    assert_eq!(v.ca, new_fp);
    assert_eq!(TrustBundle::from_pem(&newer.pem_certificate_chain).unwrap().cas().len(), 2);

    // The old (unrevoked) device can still refresh after the rotation.
    let (_, csr) = key_and_csr();
    let mut mtls = server.client(Some(&creds)).await;
    let again = mtls.refresh_certificate(RefreshCertificateRequest { pem_csr: csr }).await.unwrap();
    let der = wendy_identity::pem::certificates(&again.into_inner().into_result().unwrap().pem_certificate)
        .unwrap()
        .remove(0);
    assert_eq!(store.verify(&der, &[], Purpose::ClientAuth, UnixTime::now()).unwrap().ca, new_fp);

    // Both CAs publish a CRL; the revoked serial stays listed.
    let pems = crls(&server, &creds).await;
    assert_eq!(pems.len(), 2);
    let verified: Vec<VerifiedCrl> = pems.iter().flat_map(|p| VerifiedCrl::from_pem(p, &bundle).unwrap()).collect();
    assert!(verified.iter().any(|c| c.issuer == server.fingerprint && c.is_revoked(&info2.serial_hex)));
    assert!(verified.iter().any(|c| c.issuer == new_fp));

    // The audit log recorded issuance, revocation, tokens and the rotation.
    let db = server.data_dir().join(pkicore::DATABASE_NAME);
    let conn = rusqlite::Connection::open(&db).unwrap();
    for event in ["issue", "refresh", "revoke", "token", "ca"] {
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM audit_log WHERE event = ?1", [event], |r| r.get(0)).unwrap();
        assert!(n > 0, "no {event} in the audit log");
    }
}
