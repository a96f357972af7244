//! `wendy` refuses clearly, with the documented exit codes (cli/README.md):
//! wrong API key, wrong CA fingerprint, unreachable device, missing or
//! expired CLI certificate, a Viewer unenrolling. Real `pkicore` and real
//! `wendy-agent`; parts whose binaries are not built skip with a message.

#[path = "cli_common.rs"]
mod common;

use std::sync::Arc;

use common::{Cli, Pki, DEV_KEY};
use time::{Duration, OffsetDateTime};
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::{CertificateAuthority, LeafProfile};
use wendy_identity::role::Role;
use wendy_tests::agent::AgentFixture;
use wendy_tests::netns::Netns;

const USAGE: i32 = 2;
const AUTH: i32 = 3;
const UNREACHABLE: i32 = 4;
const DENIED: i32 = 5;
const TRUST: i32 = 6;

#[test]
fn usage_errors_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    cli.run(&["device", "version", "--device", "host:notaport"]).expect_code(USAGE).expect_stderr(&["invalid address"]);
    cli.run(&["auth", "login-local", "--cloud", "h:1", "--api-key", "k", "--ca-fingerprint", "zz"]).expect_code(USAGE);
    cli.run(&["no-such-command"]).expect_code(USAGE);
    cli.run(&["--help"]).expect_code(0);
}

#[test]
fn missing_certificate_says_log_in() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    cli.run(&["auth", "status"]).expect_code(AUTH).expect_stderr(&["no CLI certificate", "wendy auth login-local"]);
    cli.run(&["auth", "status", "--json"]).expect_code(AUTH);
    cli.run(&["auth", "refresh"]).expect_code(AUTH).expect_stderr(&["wendy auth login-local"]);
    cli.run(&[
        "device",
        "provision",
        "--cloud",
        "127.0.0.1:1",
        "--api-key",
        "k",
        "--name",
        "x",
        "--device",
        "127.0.0.1:1",
    ])
    .expect_code(AUTH)
    .expect_stderr(&["wendy auth login-local"]);
}

#[test]
fn unreachable_device_exits_4() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    // A port that was just free: nothing listens on it or on port + 1.
    let port = common::free_port_pair();
    let dev = format!("127.0.0.1:{port}");
    for cmd in ["version", "info", "unenroll"] {
        cli.run(&["device", cmd, "--device", &dev])
            .expect_code(UNREACHABLE)
            .expect_stderr(&["cannot reach device", &dev]);
    }
    cli.run(&["auth", "login-local", "--cloud", &dev, "--api-key", "k"])
        .expect_code(UNREACHABLE)
        .expect_stderr(&["cannot reach pki-core"]);
}

/// Writes a complete login whose certificate expired yesterday.
fn write_expired_login(cli: &Cli) {
    let ca = CertificateAuthority::create_with_key(
        "Expired-test CA",
        PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap(),
        OffsetDateTime::now_utc() - Duration::days(10),
        Duration::days(100),
    )
    .unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let profile = LeafProfile::User { organization_id: 1, user_id: "old".into(), role: Role::Owner };
    let cert = ca
        .issue(&profile, &key.public_key_der(), OffsetDateTime::now_utc() - Duration::days(3), Duration::days(1))
        .unwrap();
    let dir = cli.config_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key.pem"), key.to_pem().as_bytes()).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert.pem).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).unwrap();
    let config = serde_json::json!({
        "cloud_host": "127.0.0.1:1",
        "ca_fingerprint": ca.fingerprint().to_string(),
        "organization_id": 1
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn expired_certificate_says_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    write_expired_login(&cli);
    let status = cli.run(&["auth", "status", "--json"]);
    status.expect_code(AUTH);
    assert_eq!(status.json()["expired"], true);
    cli.run(&["auth", "refresh"]).expect_code(AUTH).expect_stderr(&["expired", "wendy auth login-local"]);
    cli.run(&[
        "device",
        "provision",
        "--cloud",
        "127.0.0.1:1",
        "--api-key",
        "k",
        "--name",
        "x",
        "--device",
        "127.0.0.1:1",
    ])
    .expect_code(AUTH)
    .expect_stderr(&["expired"]);
}

#[test]
fn pki_core_trust_and_api_key_refusals() {
    let Some(pkicore) = common::optional_bin("pkicore", "pki_core_trust_and_api_key_refusals") else { return };
    let t = tempfile::tempdir().unwrap();
    let port = common::free_port_pair();
    let pki = Pki::start(&pkicore, &t.path().join("pki"), &format!("127.0.0.1:{port}"), None);
    let cli = Cli::new(&t.path().join("user"));

    // No terminal, no --ca-fingerprint: refuse, and say where to look.
    cli.run(&["auth", "login-local", "--cloud", &pki.addr, "--api-key", DEV_KEY]).expect_code(TRUST).expect_stderr(&[
        "--ca-fingerprint",
        "pkicore ca list",
        "CA fingerprint:",
    ]);

    // A wrong fingerprint: refuse before sending the API key; store nothing.
    let wrong = "ab".repeat(32);
    cli.run(&["auth", "login-local", "--cloud", &pki.addr, "--api-key", DEV_KEY, "--ca-fingerprint", &wrong])
        .expect_code(TRUST)
        .expect_stderr(&["refusing to talk", &pki.fingerprint, &wrong]);
    assert!(!cli.config_dir().join("key.pem").exists(), "nothing may be stored after a refusal");
    assert!(!cli.config_dir().join("config.json").exists());

    // The right fingerprint and a wrong API key: exit 3, key never echoed.
    let r = cli.run(&[
        "auth",
        "login-local",
        "--cloud",
        &pki.addr,
        "--api-key",
        "not-the-key-123",
        "--ca-fingerprint",
        &pki.fingerprint,
    ]);
    r.expect_code(AUTH).expect_stderr(&["API key"]);
    assert!(!r.stderr.contains("not-the-key-123") && !r.stdout.contains("not-the-key-123"));

    // Then a good login, and a pin that no longer matches is refused.
    cli.run(&["auth", "login-local", "--cloud", &pki.addr, "--api-key", DEV_KEY, "--ca-fingerprint", &pki.fingerprint])
        .expect_code(0);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cli.config_dir().join("config.json")).unwrap()).unwrap();
    config["ca_fingerprint"] = serde_json::Value::String(wrong.clone());
    std::fs::write(cli.config_dir().join("config.json"), config.to_string()).unwrap();
    cli.run(&["auth", "refresh"]).expect_code(TRUST).expect_stderr(&["pinned fingerprint", &pki.fingerprint]);
    cli.run(&["auth", "login-local", "--cloud", &pki.addr, "--api-key", DEV_KEY]).expect_code(TRUST);
}

#[test]
fn viewer_cannot_unenroll_and_provisioned_devices_need_a_login() {
    let test = "viewer_cannot_unenroll_and_provisioned_devices_need_a_login";
    let Some(pkicore) = common::optional_bin("pkicore", test) else { return };
    if common::optional_bin("wendy-agent", test).is_none() || !common::can_netns(test) {
        return;
    }
    wendy_tests::init();
    let t = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let pki = Pki::start(&pkicore, &t.path().join("pki"), "127.0.0.1:50061", Some(&ns));
    std::fs::create_dir_all(t.path().join("agent")).unwrap();
    let mut agent = AgentFixture::new(&t.path().join("agent"), ns.clone());
    agent.start(&[]);
    let dev = format!("127.0.0.1:{}", agent.port);

    let owner = Cli::new(&t.path().join("owner")).in_netns(&ns);
    let viewer = Cli::new(&t.path().join("viewer")).in_netns(&ns);
    let nobody = Cli::new(&t.path().join("nobody")).in_netns(&ns);
    let expired = Cli::new(&t.path().join("expired")).in_netns(&ns);
    write_expired_login(&expired);
    for (cli, role) in [(&owner, "Owner"), (&viewer, "Viewer")] {
        cli.run(&[
            "auth",
            "login-local",
            "--cloud",
            &pki.addr,
            "--api-key",
            DEV_KEY,
            "--ca-fingerprint",
            &pki.fingerprint,
            "--role",
            role,
        ])
        .expect_code(0);
    }
    owner
        .run(&[
            "device",
            "provision",
            "--cloud",
            &pki.addr,
            "--api-key",
            DEV_KEY,
            "--name",
            "refusals",
            "--device",
            &dev,
        ])
        .expect_code(0);

    // Viewer: may read, may not unenroll.
    let v = viewer.run(&["device", "version", "--device", &dev, "--json"]);
    v.expect_code(0);
    assert_eq!(v.json()["mode"], "mtls");
    viewer.run(&["device", "unenroll", "--device", &dev]).expect_code(DENIED).expect_stderr(&[
        "permission denied",
        "Viewer",
        "--role Admin",
    ]);

    // No certificate, or an expired one: the device only talks mTLS.
    nobody
        .run(&["device", "version", "--device", &dev])
        .expect_code(AUTH)
        .expect_stderr(&["provisioned", "wendy auth login-local"]);
    expired.run(&["device", "version", "--device", &dev]).expect_code(AUTH).expect_stderr(&["expired"]);

    // Provisioning twice is refused; the device keeps serving the owner.
    owner
        .run(&["device", "provision", "--cloud", &pki.addr, "--api-key", DEV_KEY, "--name", "again", "--device", &dev])
        .expect_code(1)
        .expect_stderr(&["already provisioned", "wendy device unenroll"]);
    owner.run(&["device", "unenroll", "--device", &dev]).expect_code(0);
    drop(pki);
}
