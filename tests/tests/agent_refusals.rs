//! Refusals over mTLS, each clear, with the agent serving throughout:
//! a Viewer calling Unprovision or any OS update call, a certificate from
//! another CA, a revoked
//! certificate (after the CRL refresh), an expired certificate, and one
//! without clientAuth. Also: renewal swaps the server certificate without
//! dropping a live connection. Uses the in-process fake pki-core (its CA key
//! mints the odd certificates).

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use wendy_identity::profile::LeafProfile;
use wendy_identity::role::Role;
use wendy_proto::agent::*;
use wendy_proto::agent_admin::UnprovisionRequest;
use wendy_tests::agent::{admin_client, agent_client, chain, provisioning_client, AgentFixture};
use wendy_tests::fake_pki::{FakePki, TestCa};
use wendy_tests::netns::Netns;

async fn version_over_mtls(
    agent: &AgentFixture,
    creds: &wendy_identity::tls::Credentials,
    ca: &str,
) -> Result<(), String> {
    let ch = agent.mtls(creds, ca).await.map_err(|e| chain(&e))?;
    agent_client(ch).get_agent_version(GetAgentVersionRequest {}).await.map(|_| ()).map_err(|e| chain(&e))
}

async fn wait_log(agent: &AgentFixture, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log_text().contains(needle) {
        assert!(Instant::now() < deadline, "agent log lacks {needle:?}:\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_the_agent_keeps_serving() {
    wendy_tests::init();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let pki = FakePki::start(ns.bind("127.0.0.1:0".parse().unwrap()), time::Duration::seconds(12));
    pki.add_token("tok-1");
    let mut agent = AgentFixture::new(tmp.path(), ns.clone());
    agent.start(&[("WENDY_CRL_REFRESH_SECS", "1")]);
    let plain = agent.plaintext().await.unwrap();
    provisioning_client(plain)
        .start_provisioning(pki.provisioning_request("tok-1", 7))
        .await
        .expect("StartProvisioning");
    let ca = pki.ca().ca.certificate_pem();
    let admin = pki.ca().user(Role::Admin);
    let viewer = pki.ca().user(Role::Viewer);

    // Viewer calling Unprovision: PERMISSION_DENIED before anything happens.
    let ch = agent.mtls(&viewer.credentials, &ca).await.unwrap();
    let e = admin_client(ch.clone()).unprovision(UnprovisionRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("requires role Admin") && e.message().contains("role Viewer"), "{e:?}");
    assert!(agent.config_dir.join("provisioning.json").exists());
    agent_client(ch.clone()).get_agent_version(GetAgentVersionRequest {}).await.expect("viewer may read");

    // OS updates are Admin's: every update call of a Viewer is refused
    // before the service sees it.
    let os_update = || wendy_proto::agent_admin::os_update_service_client::OsUpdateServiceClient::new(ch.clone());
    let url = "http://127.0.0.1:9/wendyos-qemuarm64-2.0.0.raucb".to_owned();
    let denied = [
        agent_client(ch.clone()).update_os(UpdateOsRequest { artifact_url: url.clone() }).await.map(|_| ()),
        wendy_proto::agent_v2::wendy_os_update_service_client::WendyOsUpdateServiceClient::new(ch.clone())
            .update_os(wendy_proto::agent_v2::UpdateOsRequest { artifact_url: url.clone() })
            .await
            .map(|_| ()),
        os_update().install_bundle(tokio_stream::empty()).await.map(|_| ()),
        os_update().get_update_status(wendy_proto::agent_admin::GetUpdateStatusRequest {}).await.map(|_| ()),
        os_update().reboot(wendy_proto::agent_admin::RebootRequest {}).await.map(|_| ()),
    ];
    for r in denied {
        let e = r.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("requires role Admin"), "{e:?}");
    }
    // An Admin reaches the updater, which checks the URL before anything.
    let admin_ch = agent.mtls(&admin.credentials, &ca).await.unwrap();
    let e = agent_client(admin_ch)
        .update_os(UpdateOsRequest { artifact_url: "ftp://example.invalid/b.raucb".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("scheme"), "{e:?}");

    // A certificate from another CA: with another subject DN, and with the
    // same DN as ours (rollover semantics: tried, signature fails).
    let other = TestCa::new("Some Other CA").user(Role::Owner);
    let e = version_over_mtls(&agent, &other.credentials, &ca).await.unwrap_err();
    eprintln!("other CA: {e}");
    wait_log(&agent, "client certificate issuer not found in trusted CA pool").await;
    let impostor = TestCa::new("WendyOS Test CA").user(Role::Owner);
    let e = version_over_mtls(&agent, &impostor.credentials, &ca).await.unwrap_err();
    eprintln!("same-DN impostor CA: {e}");
    wait_log(&agent, "certificate signature does not verify under trusted CA").await;

    // An expired certificate.
    let expired = pki.ca().mint(
        LeafProfile::User { organization_id: 1, user_id: "old".into(), role: Role::Owner },
        OffsetDateTime::now_utc() - time::Duration::days(3),
        time::Duration::days(1),
    );
    let e = version_over_mtls(&agent, &expired.credentials, &ca).await.unwrap_err();
    eprintln!("expired: {e}");
    wait_log(&agent, "expired").await;

    // A certificate without clientAuth (a server certificate).
    let server_only = pki.ca().mint(
        LeafProfile::Server { dns_names: vec!["not-a-client.example".into()] },
        OffsetDateTime::now_utc(),
        time::Duration::days(1),
    );
    let e = version_over_mtls(&agent, &server_only.credentials, &ca).await.unwrap_err();
    eprintln!("no clientAuth: {e}");
    wait_log(&agent, "clientAuth").await;

    // Revocation: works, is revoked, refused at the next handshake after the CRL refresh.
    let doomed = pki.ca().user(Role::Admin);
    version_over_mtls(&agent, &doomed.credentials, &ca).await.expect("before revocation");
    pki.revoke(&doomed.serial_hex);
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match version_over_mtls(&agent, &doomed.credentials, &ca).await {
            Err(e) => break e,
            Ok(()) => assert!(Instant::now() < deadline, "revoked certificate still accepted"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("revoked: {e}");
    wait_log(&agent, "revoked").await;
    assert!(std::fs::read_to_string(agent.config_dir.join("crl.pem")).unwrap().contains("X509 CRL"));

    // Renewal (12 s certificates renew after ~8 s): the live connection
    // keeps working, new handshakes get the new certificate.
    let cert_before = std::fs::read_to_string(agent.config_dir.join("provisioning.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pki.counts().1 == 0 {
        assert!(Instant::now() < deadline, "no renewal; log:\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_log(&agent, "certificate renewed").await;
    assert_ne!(std::fs::read_to_string(agent.config_dir.join("provisioning.json")).unwrap(), cert_before);
    agent_client(ch).get_agent_version(GetAgentVersionRequest {}).await.expect("live connection survives renewal");

    // Still serving the legitimate admin.
    version_over_mtls(&agent, &admin.credentials, &ca).await.expect("admin still served");
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_corrupt_state_leave_the_device_unprovisioned() {
    wendy_tests::init();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let pki = FakePki::start(ns.bind("127.0.0.1:0".parse().unwrap()), time::Duration::days(1));
    let mut agent = AgentFixture::new(tmp.path(), ns.clone());
    std::fs::create_dir_all(&agent.config_dir).unwrap();
    std::fs::write(agent.config_dir.join("provisioning.json"), b"{\"enrolled\": true, \"keyPem\": \"trunc").unwrap();
    agent.start(&[]);
    let kept: Vec<_> = std::fs::read_dir(&agent.config_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("provisioning.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "corrupt file kept aside; log:\n{}", agent.log_text());
    assert!(agent.log_text().contains("provisioning.json is corrupt"));

    let mut prov = provisioning_client(agent.plaintext().await.unwrap());
    let base = pki.provisioning_request("unknown-token", 1);
    // Invalid field, wrong token, unreachable pki-core: each a clear status.
    let e = prov.start_provisioning(StartProvisioningRequest { organization_id: 0, ..base.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = prov.start_provisioning(base.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("enrollment token"), "{e:?}");
    let forwarded = wendy_proto::refusal::from_status(&e).expect("pki-core's CertificateError is forwarded");
    assert_eq!(
        wendy_proto::refusal::code(&forwarded),
        wendy_proto::cloud::CertificateErrorCode::CertificateErrorInvalidEnrollmentToken
    );
    // A stock request (no ca_fingerprint) on a device with no anchor is
    // refused, naming the three ways to give one.
    let e = prov
        .start_provisioning(StartProvisioningRequest { ca_fingerprint: String::new(), ..base.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    for way in ["ca_fingerprint", "[enrollment] ca_fingerprint", "enrollment-ca.pem"] {
        assert!(e.message().contains(way), "{way} missing from {e:?}");
    }
    // An anchor that pki-core does not chain to.
    let other = "ab".repeat(32);
    let e = prov
        .start_provisioning(StartProvisioningRequest { ca_fingerprint: other.clone(), ..base.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not trusted") && e.message().contains(&other), "{e:?}");
    let e = prov
        .start_provisioning(StartProvisioningRequest { cloud_host: "127.0.0.1:1".into(), ..base.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    // Oversized message refused.
    let e = prov
        .start_provisioning(StartProvisioningRequest { enrollment_token: "x".repeat(300 * 1024), ..base.clone() })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal),
        "{e:?}"
    );
    let p = prov.is_provisioned(IsProvisionedRequest {}).await.expect("still answering").into_inner();
    assert!(matches!(p.response, Some(is_provisioned_response::Response::NotProvisioned(_))));
    // Unprovision is never served on plaintext.
    let e = admin_client(agent.plaintext().await.unwrap()).unprovision(UnprovisionRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    // Nor is an OS update: the published v1 UpdateOS shares a service with
    // GetAgentVersion, which plaintext serves, so the call itself refuses.
    let e = agent_client(agent.plaintext().await.unwrap())
        .update_os(UpdateOsRequest { artifact_url: "http://127.0.0.1:9/b.raucb".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("only over mTLS"), "{e:?}");
    assert!(!agent.config_dir.join("provisioning.json").exists());
}
