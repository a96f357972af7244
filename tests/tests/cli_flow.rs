//! The host end-to-end flow driven only through `wendy` commands: real
//! `pkicore`, real `wendy-agent`, and a real `dbus-daemon` + `avahi-daemon`
//! in the test's network namespace. `wendy discover` (pure-Rust mDNS, run
//! inside the namespace) must see the agent's advertisement, with `tls`
//! false before provisioning and true after, and false again after unenroll.

#[path = "cli_common.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cli, Pki, DEV_KEY};
use wendy_tests::agent::AgentFixture;
use wendy_tests::avahi::AvahiLab;
use wendy_tests::netns::Netns;

/// The namespace's LAN address (see `Netns::with_lan`).
const LAN_IP: &str = "10.213.0.1";

/// Browses until a device with `tls == want_tls` shows; returns it.
fn discover_until(cli: &Cli, want_tls: bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = cli.run(&["discover", "--timeout", "2", "--json"]);
        r.expect_code(0);
        if let Some(d) = r.json().as_array().and_then(|a| a.iter().find(|d| d["tls"] == want_tls).cloned()) {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wendy discover never showed a device with tls={want_tls}; last run: {r:#?}"
        );
    }
}

#[test]
fn login_discover_provision_version_unenroll() {
    let test = "login_discover_provision_version_unenroll";
    let Some(pkicore) = common::optional_bin("pkicore", test) else { return };
    if common::optional_bin("wendy-agent", test).is_none() || !common::can_netns(test) {
        return;
    }
    wendy_tests::init();
    let t = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new().with_lan());
    let pki = Pki::start(&pkicore, &t.path().join("pki"), &format!("{LAN_IP}:50061"), Some(&ns));
    std::fs::create_dir_all(t.path().join("agent")).unwrap();
    let mut agent = AgentFixture::new(&t.path().join("agent"), ns.clone());
    let lab = AvahiLab::start(ns.clone(), &t.path().join("lab"), &agent.avahi_dir);
    agent.env.push(("DBUS_SYSTEM_BUS_ADDRESS".into(), lab.bus_address()));
    agent.start(&[]);
    let cli = Cli::new(&t.path().join("user")).in_netns(&ns);

    // 1. Log in.
    let login = cli.run(&[
        "auth",
        "login-local",
        "--cloud",
        &pki.addr,
        "--api-key",
        DEV_KEY,
        "--ca-fingerprint",
        &pki.fingerprint,
        "--json",
    ]);
    login.expect_code(0);
    let j = login.json();
    assert_eq!(j["role"], "Owner");
    assert_eq!(j["ca_fingerprint"], pki.fingerprint.as_str());
    assert_eq!(j["logged_in"], true);
    let status = cli.run(&["auth", "status"]);
    status.expect_code(0);
    assert!(status.stdout.contains(&pki.fingerprint) && !status.stdout.contains("PRIVATE KEY"), "{status:#?}");

    // 2. Discover: the real avahi advertisement, plaintext.
    let before = discover_until(&cli, false);
    assert_eq!(before["port"], agent.port);
    assert!(before["addresses"].as_array().unwrap().iter().any(|a| a == LAN_IP), "{before}");
    let text = cli.run(&["discover", "--timeout", "2"]);
    assert!(text.stdout.contains("NAME") && text.stdout.contains(LAN_IP), "{text:#?}");

    // 3. Version over plaintext, found by discovery (exactly one device).
    let v = cli.run(&["device", "version", "--json"]);
    v.expect_code(0);
    assert_eq!(v.json()["mode"], "plaintext");
    assert_eq!(v.json()["os_version"], "9.9.9-test");

    // 4. Provision (device found by discovery), then it answers over mTLS.
    let p = cli.run(&["device", "provision", "--cloud", &pki.addr, "--api-key", DEV_KEY, "--name", "lab-pi", "--json"]);
    p.expect_code(0);
    let pj = p.json();
    assert_eq!(pj["name"], "lab-pi");
    assert_eq!(pj["ca_fingerprint"], pki.fingerprint.as_str());
    assert!(pj["asset_id"].as_i64().unwrap() > 0, "{pj}");
    assert!(pj["address"].as_str().unwrap().ends_with(&format!(":{}", agent.port + 1)), "{pj}");

    // 5. Discover again: mTLS port, tls=true.
    let after = discover_until(&cli, true);
    assert_eq!(after["port"], agent.port + 1);

    // 6. Version and info over mTLS, by name and by discovery.
    let v = cli.run(&["device", "version", "--json"]);
    v.expect_code(0);
    assert_eq!(v.json()["mode"], "mtls");
    let i = cli.run(&["device", "info", "--device", &format!("{LAN_IP}:{}", agent.port), "--json"]);
    i.expect_code(0);
    let ij = i.json();
    assert_eq!(ij["provisioned"], true);
    assert_eq!(ij["asset_id"], pj["asset_id"]);
    let human = cli.run(&["device", "info"]);
    human.expect_code(0);
    assert!(human.stdout.contains("provisioned:   true") && human.stdout.contains("mTLS"), "{human:#?}");

    // 7. Unenroll: plaintext reopens and the advertisement loses tls.
    let u = cli.run(&["device", "unenroll", "--json"]);
    u.expect_code(0);
    assert_eq!(u.json()["plaintext_reopened"], true);
    let again = discover_until(&cli, false);
    assert_eq!(again["port"], agent.port);
    let v = cli.run(&["device", "version", "--json"]);
    v.expect_code(0);
    assert_eq!(v.json()["mode"], "plaintext");

    // 8. Log out.
    cli.run(&["auth", "logout"]).expect_code(0);
    assert!(!cli.config_dir().join("key.pem").exists());
    cli.run(&["auth", "status"]).expect_code(3);
    drop(lab);
    drop(pki);
}

#[test]
fn completions_are_generated() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    for shell in ["bash", "zsh", "fish"] {
        let r = cli.run(&["completions", shell]);
        r.expect_code(0);
        assert!(r.stdout.contains("login-local") && r.stdout.contains("unenroll"), "{shell}: {r:#?}");
    }
}
