//! A device as published WendyOS agents make it: an ECDSA P-256 device key,
//! enrolled by a stock `StartProvisioning` (fields 1-4 only) whose trust in
//! pki-core comes from `wendy.conf [enrollment] ca_fingerprint` on the
//! config partition. Real pkicore, real wendy-agent, real `wendy`: the
//! device serves mTLS to our CLI, and role checks are unchanged.

#[path = "cli_common.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cli, DEV_KEY};
use wendy_identity::key::KeyAlgorithm;
use wendy_identity::verify::CertificateInfo;
use wendy_proto::agent::StartProvisioningRequest;
use wendy_tests::agent::{plaintext_channel, provisioning_client, AgentFixture};
use wendy_tests::netns::Netns;
use wendy_tests::pkicore::RealPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_device_enrols_with_a_stock_request_and_serves_mtls_to_the_cli() {
    let test = "p256_device_enrols_with_a_stock_request_and_serves_mtls_to_the_cli";
    let Some(pkicore) = common::optional_bin("pkicore", test) else { return };
    if common::optional_bin("wendy-agent", test).is_none() || !common::can_netns(test) {
        return;
    }
    wendy_tests::init();
    let t = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let pki = RealPki::start(&pkicore, ns.clone(), &t.path().join("pki"), "127.0.0.1:50071".parse().unwrap());
    let (cloud, fingerprint) = (pki.addr.to_string(), pki.fingerprint.to_string());
    std::fs::create_dir_all(t.path().join("agent")).unwrap();
    let mut agent = AgentFixture::new(&t.path().join("agent"), ns.clone());
    std::fs::write(
        agent.seed_dir.join("wendy.conf"),
        format!("[device]\nname=p256-pi\n\n[enrollment]\nca_fingerprint = {fingerprint}\n"),
    )
    .unwrap();
    agent.start(&[("WENDY_DEVICE_KEY_ALGORITHM", "ecdsa-p256")]);
    assert!(agent.seed_dir.join("wendy.conf.imported").exists(), "{}", agent.log_text());

    // The CLI logs in, then mints a device token the way a dashboard would.
    let cli = Cli::new(&t.path().join("user")).in_netns(&ns);
    cli.run(&["auth", "login-local", "--cloud", &cloud, "--api-key", DEV_KEY, "--ca-fingerprint", &fingerprint])
        .expect_code(0);
    let (token, asset_id) = pki.asset_token(1, "p256").await;

    // A stock request: the published fields 1-4 and nothing else.
    let plain = plaintext_channel(ns.clone(), agent.plaintext_addr()).await.unwrap();
    provisioning_client(plain)
        .start_provisioning(StartProvisioningRequest {
            organization_id: 1,
            enrollment_token: token,
            cloud_host: cloud.clone(),
            asset_id,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("stock StartProvisioning: {e:?}\n{}", agent.log_text()));
    assert!(agent.log_text().contains("wendy.conf [enrollment] ca_fingerprint"), "{}", agent.log_text());

    // The device identity is P-256 under pki-core's ML-DSA CA.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.config_dir.join("provisioning.json")).unwrap()).unwrap();
    let info = CertificateInfo::from_pem(state["certPem"].as_str().unwrap()).unwrap();
    assert_eq!(info.key_algorithm, Some(KeyAlgorithm::EcdsaP256));
    assert_eq!(info.common_name, Some(format!("sh/wendy/1/{}", asset_id)));

    // Our CLI reaches it over mTLS.
    let device = agent.plaintext_addr().to_string();
    let mut v = cli.run(&["device", "version", "--device", &device, "--json"]);
    for _ in 0..50 {
        if v.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        v = cli.run(&["device", "version", "--device", &device, "--json"]);
    }
    v.expect_code(0);
    assert_eq!(v.json()["mode"], "mtls");
    let info = cli.run(&["device", "info", "--device", &device, "--json"]);
    info.expect_code(0);
    assert_eq!(info.json()["asset_id"], asset_id);

    // The CLI knows which asset this address is: a device presenting
    // another asset's certificate (here: a record that says otherwise) is
    // refused, even though it chains to our CA.
    let devices = cli.config_dir().join("devices.json");
    let record =
        serde_json::json!({ "devices": { device.clone(): { "provisioned": true, "asset_id": asset_id + 1000 } } });
    std::fs::write(&devices, record.to_string()).unwrap();
    cli.run(&["device", "version", "--device", &device]).expect_code(6).expect_stderr(&["not the expected"]);
    let record = serde_json::json!({ "devices": { device.clone(): { "provisioned": true, "asset_id": asset_id } } });
    std::fs::write(&devices, record.to_string()).unwrap();
    cli.run(&["device", "version", "--device", &device]).expect_code(0);
    assert!(agent.is_running());
}
