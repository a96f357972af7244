//! Host end-to-end: an operator-provisioned credential (`pkicore credential
//! provision`) placed in the config partition is imported at first boot
//! (decision 0082). Real `pkicore` and `wendy-agent` in the test's own
//! network namespace. Needs root (`ip netns`) and the debug binaries built.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use wendy_proto::agent::{is_provisioned_response::Response as Prov, *};
use wendy_tests::agent::{agent_client, provisioning_client, AgentFixture};
use wendy_tests::netns::Netns;
use wendy_tests::pkicore::RealPki;

/// Runs `pkicore credential provision --device <asset>` against the admin
/// socket; returns the passphrase.
fn provision(data: &Path, asset: i32, out: &Path) -> String {
    let o = std::process::Command::new(wendy_tests::bins::require("pkicore"))
        .arg("--data-dir")
        .arg(data)
        .args(["credential", "provision", "--role", "Admin", "--org", "1", "--device", &asset.to_string(), "--out"])
        .arg(out)
        .output()
        .expect("run pkicore credential provision");
    assert!(o.status.success(), "pkicore credential provision: {}", String::from_utf8_lossy(&o.stderr));
    let pass = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert_eq!(pass.split('-').count(), 4, "passphrase shape");
    pass
}

fn write_conf(seed: &Path, pass: &str, pki: &RealPki, asset: i32) {
    let conf = format!(
        "[device]\nname=cred-pi\n\n[credential]\npassphrase = {pass}\ncloud_host = {}\norganization_id = 1\nasset_id = {asset}\n",
        pki.addr
    );
    std::fs::write(seed.join("wendy.conf"), conf).unwrap();
}

fn start(tmp: &Path) -> (Arc<Netns>, RealPki, AgentFixture) {
    wendy_tests::init();
    let ns = Arc::new(Netns::new());
    let pkicore = wendy_tests::bins::require("pkicore");
    let pki = RealPki::start(&pkicore, ns.clone(), &tmp.join("pki"), "127.0.0.1:7443".parse().unwrap());
    let agent = AgentFixture::new(tmp, ns.clone());
    (ns, pki, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_credential_is_imported_at_first_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let (ns, pki, mut agent) = start(tmp.path());
    let seed = agent.seed_dir.clone();
    let pass = provision(&tmp.path().join("pki"), 7, &seed.join("credential"));
    write_conf(&seed, &pass, &pki, 7);
    let cert_pem = std::fs::read_to_string(seed.join("credential/cert.pem")).unwrap();

    agent.start(&[]);

    // Provisioned on mTLS straight away; plaintext never opened.
    assert!(ns.is_listening(agent.mtls_addr()), "log:\n{}", agent.log_text());
    assert!(!ns.is_listening(agent.plaintext_addr()));
    let ca_pem = pki.ca_pem().await;
    let (viewer, _) = pki.user(1, "Viewer").await;
    let mtls = agent.mtls(&viewer, &ca_pem).await.expect("mTLS channel");
    let v = agent_client(mtls.clone()).get_agent_version(GetAgentVersionRequest {}).await.unwrap().into_inner();
    assert!(v.public_key.as_deref().is_some_and(|k| k.contains("PUBLIC KEY")), "{v:?}");
    match provisioning_client(mtls).is_provisioned(IsProvisionedRequest {}).await.unwrap().into_inner().response {
        Some(Prov::Provisioned(p)) => assert_eq!((p.organization_id, p.asset_id), (1, 7)),
        other => panic!("{other:?}"),
    }

    // provisioning.json: 0600, the provisioned certificate, cloud details.
    let file = agent.config_dir.join("provisioning.json");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["certPem"].as_str(), Some(cert_pem.as_str()));
    assert_eq!(json["cloudHost"], pki.addr.to_string());
    assert_eq!((json["orgId"].as_i64(), json["assetId"].as_i64()), (Some(1), Some(7)));
    assert!(json["keyPem"].as_str().is_some_and(|k| k.contains("BEGIN PRIVATE KEY")));

    // The seed is marked imported and the passphrase is gone from it.
    assert!(!seed.join("credential").exists());
    for f in ["key.age", "cert.pem", "chain.pem"] {
        assert!(seed.join("credential.imported").join(f).is_file(), "{f}");
    }
    assert!(!seed.join("wendy.conf").exists());
    let conf = std::fs::read_to_string(seed.join("wendy.conf.imported")).unwrap();
    assert!(!conf.contains(&pass) && !conf.contains("passphrase"), "{conf}");
    assert!(conf.contains("cloud_host"), "{conf}");
    let log = agent.log_text();
    assert!(log.contains("imported the operator-provisioned credential"), "{log}");
    assert!(!log.contains(&pass), "the passphrase must never be logged");

    // Restart: still provisioned, the seed is not looked at again.
    agent.stop();
    agent.start(&[]);
    let mtls = agent.mtls(&viewer, &ca_pem).await.expect("mTLS after restart");
    agent_client(mtls).get_agent_version(GetAgentVersionRequest {}).await.expect("GetAgentVersion after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credential_seed_stays_unprovisioned_and_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (ns, pki, mut agent) = start(tmp.path());
    let seed = agent.seed_dir.clone();
    let pass = provision(&tmp.path().join("pki"), 7, &seed.join("credential"));
    let other = tmp.path().join("other");
    provision(&tmp.path().join("pki"), 8, &other);

    let unprovisioned = |agent: &mut AgentFixture| {
        let ns = ns.clone();
        let log = agent.log_text();
        let plain = agent.plaintext_addr();
        async move {
            assert!(ns.is_listening(plain), "plaintext must listen; log:\n{log}");
            let ch = wendy_tests::agent::plaintext_channel(ns.clone(), plain).await.expect("plaintext channel");
            let p = provisioning_client(ch).is_provisioned(IsProvisionedRequest {}).await.unwrap().into_inner();
            assert!(matches!(p.response, Some(Prov::NotProvisioned(_))), "{p:?}");
        }
    };
    let kept = |seed: &Path| {
        for f in ["credential/key.age", "credential/cert.pem", "credential/chain.pem", "wendy.conf"] {
            assert!(seed.join(f).is_file(), "{f} must stay in place");
        }
        assert!(!seed.join("credential.imported").exists());
    };

    // Wrong passphrase.
    write_conf(&seed, "wrong-wrong-wrong-wrong", &pki, 7);
    agent.start(&[]);
    unprovisioned(&mut agent).await;
    assert!(!agent.config_dir.join("provisioning.json").exists());
    kept(&seed);
    assert!(std::fs::read_to_string(seed.join("wendy.conf")).unwrap().contains("wrong-wrong-wrong-wrong"));
    let log = agent.log_text();
    assert!(log.contains("does not open key.age"), "{log}");
    assert!(!log.contains("wrong-wrong"), "the passphrase must never be logged: {log}");
    agent.stop();

    // Right passphrase, but a certificate from another provisioning.
    write_conf(&seed, &pass, &pki, 7);
    std::fs::copy(other.join("cert.pem"), seed.join("credential/cert.pem")).unwrap();
    agent.start(&[]);
    unprovisioned(&mut agent).await;
    assert!(!agent.config_dir.join("provisioning.json").exists());
    kept(&seed);
    let log = agent.log_text();
    assert!(log.contains("not a usable device identity"), "{log}");
    assert!(!log.contains(&pass), "the passphrase must never be logged");
    agent.stop();

    // Fixed by the operator: imported at the next boot.
    let good = tmp.path().join("good");
    let pass = provision(&tmp.path().join("pki"), 9, &good);
    for f in ["key.age", "cert.pem", "chain.pem"] {
        std::fs::copy(good.join(f), seed.join("credential").join(f)).unwrap();
    }
    write_conf(&seed, &pass, &pki, 9);
    agent.start(&[]);
    assert!(ns.is_listening(agent.mtls_addr()), "log:\n{}", agent.log_text());
    assert!(seed.join("credential.imported").is_dir());
}
