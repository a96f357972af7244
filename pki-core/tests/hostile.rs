//! Acceptance 2: one token raced by 100 callers gives one certificate;
//! expired, replayed and unknown tokens, wrong API keys, malformed and
//! bad-signature CSRs and oversized requests are refused with the right
//! published code (in the response body for `IssueCertificate`), and the
//! server keeps serving.

mod common;

use common::*;
use wendy_proto::cloud::*;

fn issue_req(csr: &str, token: &str) -> IssueCertificateRequest {
    IssueCertificateRequest { pem_csr: csr.to_owned(), enrollment_token: token.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_parallel_calls_with_one_token_give_one_certificate() {
    let server = Server::start(&[]);
    let mut anon = server.client(None).await;
    let (token, _) = asset_token(&mut anon, 0).await;
    // Half the callers send one key, half another: the first key to win
    // gets the certificate, every retry with that key gets the same one
    // back (a lost reply must not burn the token), the other key is refused.
    let csrs = [key_and_csr().1, key_and_csr().1];
    let channel = server.channel(None).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut c = client(channel.clone());
        let req = issue_req(&csrs[i % 2], &token);
        tasks.push(tokio::spawn(async move { (i % 2, c.issue_certificate(req).await) }));
    }
    let mut serials = std::collections::BTreeSet::new();
    let mut winners = std::collections::BTreeSet::new();
    for t in tasks {
        let (which, r) = t.await.unwrap();
        match r.unwrap().into_inner().into_result() {
            Ok(c) => {
                serials.insert(c.serial_number);
                winners.insert(which);
            }
            Err(e) => {
                assert_eq!(e.code, CertificateErrorCode::CertificateErrorInvalidEnrollmentToken as i32, "{e:?}");
                assert_eq!(reason(&e), "token_already_used");
            }
        }
    }
    assert_eq!((serials.len(), winners.len()), (1, 1), "one certificate, for one key");
    let listed = server.admin(&["cert", "list"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_right_code() {
    let server = Server::start(&[]);
    let mut anon = server.client(None).await;
    let (_, csr) = key_and_csr();

    // Unknown and empty tokens.
    let e = refused(anon.issue_certificate(issue_req(&csr, "wet_nope")).await);
    assert_eq!(
        (e.code, reason(&e)),
        (CertificateErrorCode::CertificateErrorInvalidEnrollmentToken as i32, "token_invalid")
    );
    let e = refused(anon.issue_certificate(issue_req(&csr, "")).await);
    assert_eq!(reason(&e), "token_invalid");

    // Malformed CSR, then a CSR whose signature does not verify: refused,
    // and the token is not consumed.
    let (token, _) = asset_token(&mut anon, 0).await;
    let e = refused(
        anon.issue_certificate(issue_req(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            &token,
        ))
        .await,
    );
    assert_eq!(e.code, CertificateErrorCode::CertificateErrorInvalidCsr as i32);
    let e = refused(anon.issue_certificate(issue_req("garbage", &token)).await);
    assert_eq!(e.code, CertificateErrorCode::CertificateErrorInvalidCsr as i32);
    let mut der = pem::parse(&csr).unwrap().into_contents();
    let n = der.len() - 20;
    der[n] ^= 0x01;
    let bad_sig = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let e = refused(anon.issue_certificate(issue_req(&bad_sig, &token)).await);
    assert_eq!(e.code, CertificateErrorCode::CertificateErrorInvalidCsr as i32);
    assert!(e.message.contains("proof of possession"), "{}", e.message);

    // The token still works once; a retry with the same key gets the same
    // certificate; a replay with another key is refused.
    let first = issued(anon.issue_certificate(issue_req(&csr, &token)).await);
    assert!(first.id > 0 && first.asset_id.is_some() && first.user_id.is_none(), "{first:?}");
    let again = issued(anon.issue_certificate(issue_req(&csr, &token)).await);
    assert_eq!(again.serial_number, first.serial_number);
    let (_, other_csr) = key_and_csr();
    let e = refused(anon.issue_certificate(issue_req(&other_csr, &token)).await);
    assert_eq!(reason(&e), "token_already_used");

    // Expired token.
    let (short, _) = asset_token(&mut anon, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = refused(anon.issue_certificate(issue_req(&csr, &short)).await);
    assert_eq!(
        (e.code, reason(&e)),
        (CertificateErrorCode::CertificateErrorInvalidEnrollmentToken as i32, "token_expired")
    );

    // Wrong and missing API keys.
    let req = CreateAssetEnrollmentTokenRequest { organization_id: 1, name: "x".into(), ttl_seconds: 0 };
    let e = anon
        .create_asset_enrollment_token(pkicore::client::with_api_key(req.clone(), "not-the-key").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(error_code(&e), CertificateErrorCode::CertificateErrorUnauthorized);
    let e = anon.create_asset_enrollment_token(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // Roles: a Viewer key can mint neither device tokens nor tokens for a
    // higher role; its own role is fine. A revoked key is refused.
    let viewer = server.admin(&["apikey", "create", "--name", "v", "--role", "Viewer"]).trim().to_owned();
    let e = anon
        .create_asset_enrollment_token(pkicore::client::with_api_key(req.clone(), &viewer).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let user_req =
        |role: &str| CreateUserEnrollmentTokenRequest { ttl_seconds: 0, organization_id: 1, role: role.into() };
    let e = anon
        .create_user_enrollment_token(pkicore::client::with_api_key(user_req("Owner"), &viewer).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let t = anon
        .create_user_enrollment_token(pkicore::client::with_api_key(user_req(""), &viewer).unwrap())
        .await
        .unwrap()
        .into_inner();
    assert!(!t.jti.is_empty() && !t.user_id.is_empty(), "{t:?}");
    let user_cert = issued(anon.issue_certificate(issue_req(&csr, &t.enrollment_token)).await);
    assert_eq!(user_cert.user_id.as_deref(), Some(t.user_id.as_str()));
    let info = wendy_identity::verify::CertificateInfo::from_pem(&user_cert.pem_certificate).unwrap();
    assert_eq!(info.role, Some(wendy_identity::role::Role::Viewer));
    assert!(info.client_auth && !info.server_auth);
    let keys = server.admin(&["apikey", "list"]);
    let viewer_id = keys.lines().find(|l| l.contains(" v ")).unwrap().split_whitespace().next().unwrap().to_owned();
    server.admin(&["apikey", "revoke", &viewer_id]);
    let e = anon
        .create_user_enrollment_token(pkicore::client::with_api_key(user_req(""), &viewer).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // Oversized request.
    let huge = "A".repeat(wendy_proto::MAX_MESSAGE_BYTES + 1024);
    let e = anon.issue_certificate(issue_req(&huge, "x")).await.unwrap_err();
    assert!(matches!(e.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "oversized request: {e:?}");

    // Revoking an unknown certificate.
    let e = anon
        .revoke_certificate(
            pkicore::client::with_api_key(
                RevokeCertificateRequest { certificate_id: 4242, reason: "keyCompromise".into() },
                wendy_proto::contract::DEV_API_KEY,
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(reason(&pkicore::error::certificate_error(&e).unwrap()), "certificate_not_found");

    // Still serving, on the same and on new connections.
    assert!(anon.get_ca_bundle(GetCaBundleRequest {}).await.is_ok());
    let mut again = server.client(None).await;
    let (token, _) = asset_token(&mut again, 0).await;
    issued(again.issue_certificate(issue_req(&csr, &token)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinning_another_ca_is_refused() {
    let server = Server::start(&[]);
    let wrong = wendy_identity::fingerprint::Fingerprint::of_der(b"not the CA");
    assert!(pkicore::client::connect_tls(&server.addr, wrong, None).await.is_err());
}
