//! Host end-to-end: real `pkicore`, real `wendy-agent`, private
//! `dbus-daemon` + `avahi-daemon`, all in the test's own network namespace.
//! Needs root (`ip netns`) and `cargo build --workspace` first.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use wendy_proto::agent::{is_provisioned_response::Response as Prov, *};
use wendy_proto::contract::{DEFAULT_AGENT_PORT, MDNS_SERVICE_TYPE, TXT_ID, TXT_TLS};
use wendy_tests::agent::{admin_client, agent_client, provisioning_client, AgentFixture};
use wendy_tests::avahi::AvahiLab;
use wendy_tests::netns::Netns;
use wendy_tests::pkicore::RealPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_advertise_restart_unprovision() {
    wendy_tests::init();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new().with_lan());
    let pkicore = wendy_tests::bins::require("pkicore");
    let pki = RealPki::start(&pkicore, ns.clone(), &tmp.path().join("pki"), "127.0.0.1:7443".parse().unwrap());

    let mut agent = AgentFixture::new(tmp.path(), ns.clone());
    let mut lab = AvahiLab::start(ns.clone(), &tmp.path().join("lab"), &agent.avahi_dir);
    agent.env.push(("DBUS_SYSTEM_BUS_ADDRESS".into(), lab.bus_address()));
    agent.start(&[]);

    // Unprovisioned: advertised on 50051 without tls, plaintext answers.
    let seen =
        lab.wait_for(MDNS_SERVICE_TYPE, Duration::from_secs(20), |b| b.port == DEFAULT_AGENT_PORT).unwrap_or_else(
            || panic!("no _wendyos._udp on 50051; avahi log:\n{}\nagent log:\n{}", lab.avahi_log(), agent.log_text()),
        );
    assert_eq!(seen.txt(TXT_TLS), None, "{seen:?}");
    assert!(seen.txt(TXT_ID).is_some_and(|id| id.len() == 32), "{seen:?}");
    let plain = agent.plaintext().await.expect("plaintext channel");
    let v = agent_client(plain.clone()).get_agent_version(GetAgentVersionRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (v.os_version.as_deref(), v.device_type.as_deref(), v.public_key.as_deref()),
        (Some("9.9.9-test"), Some("qemu-test"), None)
    );
    assert_eq!(v.cpu_architecture, wendy_agent::sysinfo::go_arch(std::env::consts::ARCH));
    let p = provisioning_client(plain.clone()).is_provisioned(IsProvisionedRequest {}).await.unwrap().into_inner();
    assert!(matches!(p.response, Some(Prov::NotProvisioned(_))));

    // A bad fingerprint is refused clearly and changes nothing.
    let (token, asset_id) = pki.asset_token(1, "e2e-device").await;
    let mut req = StartProvisioningRequest {
        organization_id: 1,
        enrollment_token: token,
        cloud_host: pki.addr.to_string(),
        asset_id,
        ca_fingerprint: "00".repeat(32),
        allow_plaintext_enrollment: false,
        device_name: "e2e-pi".into(),
    };
    let err = provisioning_client(plain.clone()).start_provisioning(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not trusted"), "{err:?}");
    assert!(!agent.config_dir.join("provisioning.json").exists());

    // Provision for real.
    req.ca_fingerprint = pki.fingerprint.to_string();
    provisioning_client(plain).start_provisioning(req.clone()).await.expect("StartProvisioning");
    assert!(ns.is_listening(agent.mtls_addr()), "mTLS must listen once StartProvisioning returns");
    let seen = lab
        .wait_for(MDNS_SERVICE_TYPE, Duration::from_secs(20), |b| b.port == DEFAULT_AGENT_PORT + 1)
        .expect("advertisement moves to 50052");
    assert_eq!(seen.txt(TXT_TLS), Some("true"), "{seen:?}");
    assert_eq!(seen.name, "e2e-pi");
    for _ in 0..100 {
        if !ns.is_listening(agent.plaintext_addr()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!ns.is_listening(agent.plaintext_addr()), "plaintext must be closed once provisioned");

    // provisioning.json: 0600 in a 0700 directory, every field.
    let file = agent.config_dir.join("provisioning.json");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&agent.config_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["enrolled"], true);
    assert_eq!(json["cloudHost"], pki.addr.to_string());
    assert_eq!((json["orgId"].as_i64(), json["assetId"].as_i64()), (Some(1), Some(asset_id as i64)));
    for k in ["keyPem", "certPem", "chainPem"] {
        assert!(json[k].as_str().is_some_and(|s| s.contains("-----BEGIN")), "{k}");
    }

    // GetAgentVersion over mTLS with a Viewer certificate.
    let ca_pem = pki.ca_pem().await;
    let (viewer, _) = pki.user(1, "Viewer").await;
    let (admin, _) = pki.user(1, "Admin").await;
    let mtls = agent.mtls(&viewer, &ca_pem).await.expect("mTLS channel");
    let v = agent_client(mtls.clone()).get_agent_version(GetAgentVersionRequest {}).await.unwrap().into_inner();
    assert!(v.public_key.as_deref().is_some_and(|k| k.contains("PUBLIC KEY")), "{v:?}");

    // A second StartProvisioning is refused (Viewer: by role; Admin: already provisioned).
    let e = provisioning_client(mtls.clone()).start_provisioning(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let admin_ch = agent.mtls(&admin, &ca_pem).await.expect("mTLS channel");
    let e = provisioning_client(admin_ch).start_provisioning(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("already provisioned"), "{e:?}");

    // The agent confirmed the publication over D-Bus.
    assert!(agent.log_text().contains("avahi-daemon publishes the advertisement"), "{}", agent.log_text());

    // Restart: provisioned, mTLS only.
    agent.stop();
    agent.start(&[]);
    assert!(!ns.is_listening(agent.plaintext_addr()));
    let mtls = agent.mtls(&viewer, &ca_pem).await.expect("mTLS after restart");
    let p = provisioning_client(mtls).is_provisioned(IsProvisionedRequest {}).await.unwrap().into_inner();
    match p.response {
        Some(Prov::Provisioned(p)) => assert_eq!((p.organization_id, p.asset_id), (1, asset_id)),
        other => panic!("{other:?}"),
    }
    lab.wait_for(MDNS_SERVICE_TYPE, Duration::from_secs(20), |b| {
        b.port == DEFAULT_AGENT_PORT + 1 && b.txt(TXT_TLS) == Some("true")
    })
    .expect("advertised as mTLS after restart");

    // avahi-daemon goes away and comes back: the agent keeps serving and
    // confirms the advertisement again.
    lab.stop_avahi();
    let mtls = agent.mtls(&viewer, &ca_pem).await.expect("mTLS without avahi");
    agent_client(mtls).get_agent_version(GetAgentVersionRequest {}).await.expect("serving without avahi");
    lab.start_avahi();
    lab.wait_for(MDNS_SERVICE_TYPE, Duration::from_secs(20), |b| b.port == DEFAULT_AGENT_PORT + 1)
        .expect("advertised again after avahi restart");
    for _ in 0..100 {
        if agent.log_text().matches("avahi-daemon publishes the advertisement").count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.log_text().contains("avahi-daemon appeared on the bus"), "{}", agent.log_text());

    // Unprovision (Admin): plaintext back, advertisement reverted.
    let admin_ch = agent.mtls(&admin, &ca_pem).await.expect("mTLS channel");
    admin_client(admin_ch).unprovision(wendy_proto::agent_admin::UnprovisionRequest {}).await.expect("Unprovision");
    assert!(ns.is_listening(agent.plaintext_addr()));
    assert!(!file.exists());
    lab.wait_for(MDNS_SERVICE_TYPE, Duration::from_secs(20), |b| {
        b.port == DEFAULT_AGENT_PORT && b.txt(TXT_TLS).is_none()
    })
    .expect("advertisement back on 50051 without tls");
    assert!(agent.is_running());
}
