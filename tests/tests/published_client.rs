//! Wire compatibility with the published WendyOS protocol: a Python grpcio
//! client whose stubs are generated at test time from the published
//! definitions (`../shared/reference/wendyos-proto/Proto`, never copied into
//! the repository; `tests/compat/published_client.py`) drives the real
//! `pkicore` and the real `wendy-agent`, each in the test's own namespace.
//!
//! grpcio (BoringSSL) cannot do ML-DSA TLS, so TLS is a socat hop from the
//! OpenSSL 3.5 chroot ([`wendy_tests::tlshop`]): the client speaks h2c to
//! socat, socat speaks TLS 1.3 to the server and verifies it against the CA
//! (pki-core by its server name `pki-core.wendy.internal`; the device by its
//! exact subject CN `sh/wendy/<org>/<asset>`, no SNI, decision 0004).
//!
//! Every step is run and reported (PASS/FAIL with the reason) before the test
//! fails, so one run shows the whole compatibility picture. Needs root,
//! `cargo build --workspace --bins`, and `scripts/setup` (socat, the venv).

#[path = "cli_common.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wendy_tests::agent::{provisioning_client, AgentFixture};
use wendy_tests::netns::Netns;
use wendy_tests::pkicore::RealPki;
use wendy_tests::pyclient::{PyClient, PyRun};
use wendy_tests::tlshop::{self, ClientCert, PeerName, TlsHop};

const PKI_ADDR: &str = "127.0.0.1:7443";
const ORG: i32 = 1;
const INVALID_TOKEN: &str = "CERTIFICATE_ERROR_INVALID_ENROLLMENT_TOKEN";
/// Wall-clock bound of one `wendy` run.
const CLI_TIMEOUT_SECS: u32 = 60;

/// Whether everything this test needs is here; prints why not (or fails
/// under `WENDY_TEST_STRICT=1`).
fn prerequisites(test: &str, bins: &[&str]) -> bool {
    for b in bins {
        if common::optional_bin(b, test).is_none() {
            return false;
        }
    }
    if !common::can_netns(test) {
        return false;
    }
    if let Some(why) = PyClient::unavailable() {
        wendy_tests::skip(test, &why);
        return false;
    }
    if let Err(why) = tlshop::socat_root() {
        wendy_tests::skip(test, &why);
        return false;
    }
    true
}

/// Each step's outcome; fails the test at the end if any step failed.
struct Report {
    test: &'static str,
    lines: Vec<String>,
    failed: usize,
}

impl Report {
    fn new(test: &'static str) -> Self {
        Self { test, lines: Vec::new(), failed: 0 }
    }

    fn record(&mut self, step: &str, outcome: Result<(), String>) -> bool {
        let line = match &outcome {
            Ok(()) => format!("PASS {step}"),
            Err(why) => {
                self.failed += 1;
                format!("FAIL {step}: {why}")
            }
        };
        eprintln!("[{}] {line}", self.test);
        self.lines.push(line);
        outcome.is_ok()
    }

    /// Records a client run: it must succeed and `check` must accept its
    /// JSON. Returns the JSON whenever the run succeeded (even if a check
    /// failed), so later steps can go on with what is usable.
    fn step(&mut self, step: &str, run: &PyRun, check: impl FnOnce(&Value, &mut Checks)) -> Option<Value> {
        match run.ok() {
            Ok(j) => {
                let mut checks = Checks(Vec::new());
                check(&j, &mut checks);
                let outcome = match checks.0.is_empty() {
                    true => Ok(()),
                    false => Err(format!("{}; response: {}", checks.0.join("; "), compact(&j))),
                };
                self.record(step, outcome);
                Some(j)
            }
            Err(why) => {
                self.record(step, Err(why));
                None
            }
        }
    }

    /// A remark that is neither a pass nor a failure.
    fn note(&mut self, what: &str) {
        eprintln!("[{}] NOTE {what}", self.test);
        self.lines.push(format!("NOTE {what}"));
    }

    /// Records a step that could not run because an earlier one failed.
    fn not_run(&mut self, step: &str, because: &str) {
        self.record(step, Err(format!("not run: {because}")));
    }

    fn finish(self) {
        let summary = self.lines.join("\n");
        assert!(self.failed == 0, "{}: {} step(s) failed:\n{summary}", self.test, self.failed);
        eprintln!("{}: all {} steps passed", self.test, self.lines.len());
    }
}

/// The failed checks of one step (all are evaluated, none stops the others).
struct Checks(Vec<String>);

impl Checks {
    fn that(&mut self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.0.push(what());
        }
    }

    /// No field of the response was unknown to the published types.
    fn drift(&mut self, j: &Value) {
        if let Err(e) = no_drift(j) {
            self.0.push(e);
        }
    }
}

fn compact(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 600 {
        s.truncate(600);
        s.push_str("...");
    }
    s
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// No field of the response was unknown to the published types.
fn no_drift(j: &Value) -> Result<(), String> {
    let unknown = j["_unknown_fields"].as_array().cloned().unwrap_or_default();
    ensure(unknown.is_empty(), || format!("fields the published types do not know (number(wire type)): {unknown:?}"))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// A running pki-core and its CA bundle (fetched over our own pinned TLS).
fn start_pki(rt: &tokio::runtime::Runtime, ns: &Arc<Netns>, dir: &Path) -> (RealPki, String) {
    let pki =
        RealPki::start(&wendy_tests::bins::require("pkicore"), ns.clone(), &dir.join("pki"), PKI_ADDR.parse().unwrap());
    let ca = bounded(rt, "GetCaBundle (pinned)", pki.ca_pem());
    (pki, ca)
}

/// Runs `fut` on `rt`, at most 30 s.
fn bounded<T>(rt: &tokio::runtime::Runtime, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), fut).await })
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The published client, through a hop to pki-core.
#[test]
fn pkicore_via_published_client() {
    let test = "pkicore_via_published_client";
    if !prerequisites(test, &["pkicore"]) {
        return;
    }
    wendy_tests::init();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let (pki, ca_pem) = start_pki(&rt, &ns, tmp.path());
    let py = PyClient::new(ns.clone());
    let hop = TlsHop::start(
        &ns,
        pki.addr,
        &ca_pem,
        &PeerName::Host(wendy_identity::PKICORE_SERVER_NAME.into()),
        None,
        &tmp.path().join("hop-pki.log"),
    );
    let mut r = Report::new(test);

    // The hop itself: OpenSSL 3.5 reaches pki-core over ML-DSA TLS and the
    // bundle matches what our own pinned client got.
    let run = py.run(hop.listen, &["pki-ca-bundle"]);
    r.step("GetCaBundle through the OpenSSL hop", &run, |j, c| {
        c.drift(j);
        c.that(j["pem_bundle"].as_str().map(str::trim) == Some(ca_pem.trim()), || {
            "pem_bundle differs from our pinned GetCaBundle".into()
        });
    });
    if run.code != 0 {
        eprintln!("socat log:\n{}", hop.log_text());
    }
    // ... and it has teeth: a wrong server name is refused by the hop.
    let bad_hop = TlsHop::start(
        &ns,
        pki.addr,
        &ca_pem,
        &PeerName::Host("evil.example".into()),
        None,
        &tmp.path().join("hop-bad.log"),
    );
    let bad = py.run(bad_hop.listen, &["--timeout", "5", "pki-ca-bundle"]);
    r.record(
        "the hop refuses pki-core under a wrong server name",
        ensure(bad.code == 3 && bad_hop.log_text().contains("does not match"), || {
            format!("{}; socat log: {}", bad.describe(), bad_hop.log_text())
        }),
    );
    drop(bad_hop);

    // CreateAssetEnrollmentToken with the API key.
    let run = py.run(
        hop.listen,
        &["--api-key", common::DEV_KEY, "pki-token", "--org", &ORG.to_string(), "--name", "published-asset"],
    );
    let token = r.step("CreateAssetEnrollmentToken (API key)", &run, |j, c| {
        c.drift(j);
        c.that(j["enrollment_token"].as_str().is_some_and(|t| !t.is_empty()), || "no enrollment_token".into());
        c.that(int(&j["asset_id"]) > 0, || "asset_id (field 5) is not positive".into());
        c.that(int(&j["organization_id"]) == i64::from(ORG), || format!("organization_id (field 4) is not {ORG}"));
        c.that(j["expires_at"].is_string(), || "no expires_at".into());
        c.that(j["jti"].as_str().is_some_and(|t| !t.is_empty()), || "no jti (field 2)".into());
    });
    let token_str = token.as_ref().and_then(|j| j["enrollment_token"].as_str().map(str::to_owned));
    let asset_id = token.as_ref().map(|j| int(&j["asset_id"])).unwrap_or(0);

    let Some(token_str) = token_str else {
        for s in [
            "IssueCertificate",
            "GetCertificate",
            "ListCertificates",
            "RevokeCertificate",
            "IssueCertificate with a used token",
        ] {
            r.not_run(s, "no enrollment token");
        }
        return r.finish();
    };

    // IssueCertificate with an ECDSA P-256 CSR made by Python cryptography.
    let run = py.run(hop.listen, &["pki-issue", "--token", &token_str, "--cn", "published-client"]);
    let issued = r.step("IssueCertificate (ECDSA P-256 CSR)", &run, |j, c| {
        c.drift(j);
        c.that(j["has_error"] == false, || "IssueCertificateResponse.error is set".into());
        c.that(j["has_certificate"] == true, || "no certificate".into());
        let cert = &j["certificate"];
        c.that(int(&cert["id"]) != 0, || "certificate.id (int32) is 0".into());
        c.that(int(&cert["organization_id"]) == i64::from(ORG), || format!("certificate.organization_id is not {ORG}"));
        c.that(asset_id == 0 || int(&cert["asset_id"]) == asset_id, || {
            format!("certificate.asset_id is not {asset_id}")
        });
        c.that(cert["status"] == "CERTIFICATE_STATUS_ACTIVE", || "certificate.status is not ACTIVE".into());
        c.that(cert["pem_certificate"].as_str().is_some_and(|p| p.contains("BEGIN CERTIFICATE")), || {
            "no pem_certificate".into()
        });
        c.that(j["certificate_key_matches_csr"] == true, || {
            "the certificate does not certify the CSR's P-256 key".into()
        });
        c.that(int(&j["organization_id"]) == i64::from(ORG), || {
            format!("response organization_id (field 4) is not {ORG}")
        });
        c.that(asset_id == 0 || int(&j["asset_id"]) == asset_id, || {
            format!("response asset_id (field 5) is not {asset_id}")
        });
    });
    let cert_id = issued.as_ref().map(|j| int(&j["certificate"]["id"])).unwrap_or(0);
    let serial =
        issued.as_ref().and_then(|j| j["certificate"]["serial_number"].as_str().map(str::to_owned)).unwrap_or_default();

    if cert_id == 0 {
        for s in ["GetCertificate", "ListCertificates", "RevokeCertificate"] {
            r.not_run(s, "no certificate.id from IssueCertificate");
        }
    } else {
        let id = cert_id.to_string();
        let run = py.run(hop.listen, &["--api-key", common::DEV_KEY, "pki-get", "--id", &id]);
        r.step("GetCertificate", &run, |j, c| {
            c.drift(j);
            c.that(int(&j["id"]) == cert_id, || format!("id is not {cert_id}"));
            c.that(j["serial_number"].as_str() == Some(serial.as_str()), || format!("serial_number is not {serial:?}"));
            c.that(j["status"] == "CERTIFICATE_STATUS_ACTIVE", || "status is not ACTIVE".into());
        });
        let run = py.run(hop.listen, &["--api-key", common::DEV_KEY, "pki-list", "--asset-id", &asset_id.to_string()]);
        r.step("ListCertificates (server stream)", &run, |j, c| {
            let items = j["responses"].as_array().cloned().unwrap_or_default();
            for item in &items {
                c.drift(item);
            }
            c.that(items.iter().any(|i| int(&i["certificate"]["id"]) == cert_id), || {
                format!("certificate {cert_id} not listed")
            });
            c.that(items.iter().all(|i| int(&i["total"]) >= 1), || "total is not at least 1".into());
        });
        let run = py.run(
            hop.listen,
            &["--api-key", common::DEV_KEY, "pki-revoke", "--id", &id, "--reason", "wire compatibility test"],
        );
        r.step("RevokeCertificate", &run, |j, c| {
            c.drift(j);
            c.that(j["success"] == true, || "success is not true".into());
        });
        let run = py.run(hop.listen, &["--api-key", common::DEV_KEY, "pki-get", "--id", &id]);
        r.step("GetCertificate after revocation", &run, |j, c| {
            c.drift(j);
            c.that(j["status"] == "CERTIFICATE_STATUS_REVOKED", || "status is not REVOKED".into());
            c.that(j["revoked_at"].is_string(), || "no revoked_at".into());
        });
    }

    // Named refusal (c): a used or unknown token comes back in the body.
    let used_step = "IssueCertificate with a used token -> error body INVALID_ENROLLMENT_TOKEN";
    let mut refusals = vec![(
        "IssueCertificate with an unknown token -> error body INVALID_ENROLLMENT_TOKEN",
        format!("wet_{}", "0".repeat(64)),
    )];
    if issued.as_ref().is_some_and(|j| j["has_certificate"] == true) {
        refusals.insert(0, (used_step, token_str.clone()));
    } else {
        r.not_run(used_step, "the token was not used by a successful IssueCertificate");
    }
    for (step, tok) in refusals {
        let run = py.run(hop.listen, &["pki-issue", "--token", &tok]);
        if let Some((code, details)) = run.grpc_error() {
            let trailer =
                run.json()["grpc_error"]["trailer_certificate_error"]["code"].as_str().unwrap_or("none").to_owned();
            r.record(step, Err(format!("answered as gRPC status {code} ({details}), error trailer code {trailer}, not in IssueCertificateResponse.error")));
            continue;
        }
        r.step(step, &run, |j, c| {
            c.drift(j);
            c.that(j["has_certificate"] == false, || "a certificate was issued".into());
            c.that(j["error"]["code"] == INVALID_TOKEN, || format!("error.code is not {INVALID_TOKEN}"));
        });
    }
    drop(hop);
    drop(pki);
    r.finish();
}

/// `wendy auth login-local` in `ns`, bounded: `(chain PEM, key PEM, CA PEM)`.
fn login(ns: &Netns, dir: &Path, pki: &RealPki) -> Result<ClientCert, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "timeout", &CLI_TIMEOUT_SECS.to_string()])
        .arg(common::wendy_bin())
        .args(["auth", "login-local", "--cloud", &pki.addr.to_string(), "--api-key", common::DEV_KEY])
        .args(["--ca-fingerprint", &pki.fingerprint.to_string(), "--json"])
        .env("XDG_CONFIG_HOME", dir)
        .env_remove("WENDY_API_KEY")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("wendy auth login-local: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let read = |n: &str| std::fs::read_to_string(dir.join("wendy").join(n)).map_err(|e| format!("{n}: {e}"));
    let (key, cert, ca) = (read("key.pem")?, read("cert.pem")?, read("ca.pem")?);
    Ok(ClientCert { chain_pem: format!("{}\n{}", cert.trim_end(), ca), key_pem: key })
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// An agent fixture under `dir` (created).
fn agent_in(dir: &Path, ns: &Arc<Netns>) -> AgentFixture {
    std::fs::create_dir_all(dir).expect("mkdir");
    AgentFixture::new(dir, ns.clone())
}

fn write_anchor(agent: &AgentFixture, fingerprint: &str) {
    std::fs::write(agent.seed_dir.join("wendy.conf"), format!("[enrollment]\nca_fingerprint = {fingerprint}\n"))
        .expect("write wendy.conf");
}

/// The published client provisions an unprovisioned agent with a STOCK
/// StartProvisioning, its trust anchor for pki-core from the config
/// partition's `wendy.conf`, then talks to it over mTLS through the hop.
#[test]
fn agent_via_published_client() {
    let test = "agent_via_published_client";
    if !prerequisites(test, &["pkicore", "wendy-agent", "wendy"]) {
        return;
    }
    wendy_tests::init();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let (pki, _) = start_pki(&rt, &ns, tmp.path());
    let py = PyClient::new(ns.clone());
    let mut agent = agent_in(&tmp.path().join("agent"), &ns);
    write_anchor(&agent, &pki.fingerprint.to_string());
    agent.start(&[]);
    let plain = agent.plaintext_addr();
    let mut r = Report::new(test);

    for v in ["v1", "v2"] {
        let run = py.run(plain, &["agent-is-provisioned", "--version", v]);
        r.step(&format!("IsProvisioned {v} (plaintext, unprovisioned)"), &run, |j, c| {
            c.drift(j);
            c.that(j["which"] == "not_provisioned", || "not `not_provisioned`".into());
        });
    }
    let run = py.run(plain, &["agent-version"]);
    r.step("GetAgentVersion v1 (plaintext, unprovisioned)", &run, |j, c| {
        c.drift(j);
        c.that(j["os_version"] == "9.9.9-test" && j["device_type"] == "qemu-test", || "os_version/device_type".into());
    });

    let (token, asset_id) =
        bounded(&rt, "CreateAssetEnrollmentToken (fixture)", pki.asset_token(ORG, "published-device"));
    let run = py.run(
        plain,
        &[
            "agent-provision",
            "--version",
            "v1",
            "--org",
            &ORG.to_string(),
            "--token",
            &token,
            "--cloud-host",
            &pki.addr.to_string(),
            "--asset-id",
            &asset_id.to_string(),
        ],
    );
    let stock = r
        .step("StartProvisioning v1, stock fields 1-4, anchor from wendy.conf [enrollment]", &run, |j, c| c.drift(j))
        .is_some();
    let after = [
        "mTLS listens on port + 1 and plaintext is closed",
        "GetAgentVersion v1 over mTLS (hop)",
        "GetDeviceInfo v2 over mTLS (hop)",
        "IsProvisioned v1 over mTLS (hop)",
        "IsProvisioned v2 over mTLS (hop)",
        "ListHardwareCapabilities v1 over mTLS (hop)",
        "ListHardwareCapabilities v2 over mTLS (hop)",
        "GetCertificateMetadata with the user certificate (pki-core hop with client certificate)",
    ];
    // So that the mTLS steps still run (and the hop to the device is
    // checked) when the stock request is refused: provision with our own
    // request, which carries the anchor in field 100. Not a compat step.
    let asset_id = if stock {
        asset_id
    } else {
        eprintln!("agent log:\n{}", agent.log_text());
        let (token, asset_id) =
            bounded(&rt, "CreateAssetEnrollmentToken (fixture)", pki.asset_token(ORG, "fallback-device"));
        let req = wendy_proto::agent::StartProvisioningRequest {
            organization_id: ORG,
            enrollment_token: token,
            cloud_host: pki.addr.to_string(),
            asset_id,
            ca_fingerprint: pki.fingerprint.to_string(),
            ..Default::default()
        };
        let done = bounded(&rt, "StartProvisioning (own client)", async {
            let ch = agent.plaintext().await.map_err(|e| e.to_string())?;
            provisioning_client(ch).start_provisioning(req).await.map_err(|e| e.to_string())
        });
        if let Err(e) = done {
            for s in after {
                r.not_run(s, &format!("StartProvisioning failed, and so did the fallback with field 100: {e}"));
            }
            return r.finish();
        }
        r.note("provisioned instead with our own client and field 100 `ca_fingerprint`, to run the mTLS steps");
        asset_id
    };
    let mtls = wait_until(Duration::from_secs(10), || ns.is_listening(agent.mtls_addr()));
    let closed = wait_until(Duration::from_secs(10), || !ns.is_listening(plain));
    r.record(after[0], ensure(mtls && closed, || format!("mTLS listening: {mtls}, plaintext closed: {closed}")));

    let client = match login(&ns, &tmp.path().join("user"), &pki) {
        Ok(c) => c,
        Err(e) => {
            for s in &after[1..] {
                r.not_run(s, &e);
            }
            return r.finish();
        }
    };
    let ca_pem = std::fs::read_to_string(tmp.path().join("user/wendy/ca.pem")).expect("ca.pem");
    let cn = wendy_identity::profile::device_common_name(ORG, asset_id);
    let hop = TlsHop::start(
        &ns,
        agent.mtls_addr(),
        &ca_pem,
        &PeerName::CommonName(cn),
        Some(&client),
        &tmp.path().join("hop-agent.log"),
    );
    let via = hop.listen;
    let version = |j: &Value, c: &mut Checks| {
        c.drift(j);
        c.that(j["os_version"] == "9.9.9-test", || "os_version is not 9.9.9-test".into());
        c.that(j["device_type"] == "qemu-test", || "device_type is not qemu-test".into());
        c.that(j["version"].as_str().is_some_and(|v| !v.is_empty()), || "no version".into());
        c.that(j["public_key"].as_str().is_some_and(|k| k.contains("PUBLIC KEY")), || "no public_key".into());
    };
    let run = py.run(via, &["agent-version"]);
    if r.step(after[1], &run, version).is_none() {
        eprintln!("socat log:\n{}", hop.log_text());
    }
    r.record(
        "the hop verified the device against the CA and its exact CN",
        ensure(hop.log_text().contains("trusting certificate, commonName matches"), || {
            format!("socat log: {}", hop.log_text())
        }),
    );
    let wrong_cn = wendy_identity::profile::device_common_name(ORG, asset_id + 1000);
    let bad_hop = TlsHop::start(
        &ns,
        agent.mtls_addr(),
        &ca_pem,
        &PeerName::CommonName(wrong_cn),
        Some(&client),
        &tmp.path().join("hop-bad.log"),
    );
    let bad = py.run(bad_hop.listen, &["--timeout", "5", "agent-version"]);
    r.record(
        "the hop refuses the device under another CN",
        ensure(bad.code == 3 && bad_hop.log_text().contains("does not match"), || {
            format!("{}; socat log: {}", bad.describe(), bad_hop.log_text())
        }),
    );
    drop(bad_hop);
    let run = py.run(via, &["device-info"]);
    r.step(after[2], &run, version);
    for (step, v) in [(after[3], "v1"), (after[4], "v2")] {
        let run = py.run(via, &["agent-is-provisioned", "--version", v]);
        r.step(step, &run, |j, c| {
            c.drift(j);
            let p = &j["provisioned"];
            c.that(j["which"] == "provisioned", || "not `provisioned`".into());
            c.that(int(&p["organization_id"]) == i64::from(ORG) && int(&p["asset_id"]) == i64::from(asset_id), || {
                "organization_id/asset_id".into()
            });
            c.that(p["cloud_host"] == pki.addr.to_string(), || "cloud_host".into());
        });
    }
    for (step, v) in [(after[5], "v1"), (after[6], "v2")] {
        let run = py.run(via, &["agent-hardware", "--version", v]);
        r.step(step, &run, |j, c| {
            c.drift(j);
            c.that(j["capabilities"].is_array(), || "no capabilities list".into());
        });
    }
    drop(hop);

    // pki-core knows the caller from the client certificate the hop presents.
    let pki_hop = TlsHop::start(
        &ns,
        pki.addr,
        &ca_pem,
        &PeerName::Host(wendy_identity::PKICORE_SERVER_NAME.into()),
        Some(&client),
        &tmp.path().join("hop-pki-mtls.log"),
    );
    let run = py.run(pki_hop.listen, &["pki-metadata"]);
    r.step(after[7], &run, |j, c| {
        c.drift(j);
        c.that(int(&j["organization_id"]) == i64::from(ORG), || format!("organization_id is not {ORG}"));
        c.that(j["has_user_id"] == true && j["user_id"].as_str().is_some_and(|u| !u.is_empty()), || {
            "no user_id".into()
        });
        c.that(j["has_asset_id"] == false, || "asset_id is set for a user certificate".into());
    });
    r.finish();
}

/// Named refusals of a stock StartProvisioning, through the published client.
#[test]
fn agent_refusals_via_published_client() {
    let test = "agent_refusals_via_published_client";
    if !prerequisites(test, &["pkicore", "wendy-agent"]) {
        return;
    }
    wendy_tests::init();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let (pki, _) = start_pki(&rt, &ns, tmp.path());
    let py = PyClient::new(ns.clone());
    let mut r = Report::new(test);
    let token = |name: &str| bounded(&rt, "CreateAssetEnrollmentToken (fixture)", pki.asset_token(ORG, name));
    let provision = |addr: SocketAddr, version: &str, token: &str, asset_id: i32| {
        py.run(
            addr,
            &[
                "agent-provision",
                "--version",
                version,
                "--org",
                &ORG.to_string(),
                "--token",
                token,
                "--cloud-host",
                &pki.addr.to_string(),
                "--asset-id",
                &asset_id.to_string(),
            ],
        )
    };
    let still_unprovisioned = |agent: &AgentFixture| -> Result<(), String> {
        ensure(!agent.config_dir.join("provisioning.json").exists(), || "provisioning.json was written".into())?;
        let j = py.run(agent.plaintext_addr(), &["agent-is-provisioned"]).ok()?;
        ensure(j["which"] == "not_provisioned", || format!("IsProvisioned says {}", j["which"]))
    };

    // (a) No trust anchor at all: no field 100, no wendy.conf, no
    // /etc/wendy/enrollment-ca.pem. The refusal names all three.
    assert!(
        !Path::new("/etc/wendy/enrollment-ca.pem").exists(),
        "this host has /etc/wendy/enrollment-ca.pem; refusal (a) cannot be tested"
    );
    let mut bare = agent_in(&tmp.path().join("bare"), &ns);
    bare.start(&[]);
    for v in ["v1", "v2"] {
        let (tok, asset) = token(&format!("no-anchor-{v}"));
        let run = provision(bare.plaintext_addr(), v, &tok, asset);
        let outcome = match run.grpc_error() {
            None => Err(format!("not refused: {}", run.describe())),
            Some((code, details)) => ensure(
                details.contains("ca_fingerprint") && details.contains("wendy.conf") && details.contains("[enrollment]") && details.contains("/etc/wendy/enrollment-ca.pem"),
                || format!("{code}: {details:?} does not name all of field `ca_fingerprint`, `[enrollment] ca_fingerprint` in wendy.conf, /etc/wendy/enrollment-ca.pem"),
            ),
        }
        .and_then(|()| still_unprovisioned(&bare));
        if let (Ok(()), Some((code, details))) = (&outcome, run.grpc_error()) {
            r.note(&format!("(a) {v} refusal: {code}: {details}"));
        }
        r.record(
            &format!("(a) StartProvisioning {v} without any trust anchor is refused, naming all three ways"),
            outcome,
        );
    }

    // (b) An anchor in wendy.conf that is not pki-core's CA: refused at the
    // TLS handshake, not for a missing anchor.
    let mut wrong = agent_in(&tmp.path().join("wrong"), &ns);
    wrong.port = 50061;
    write_anchor(&wrong, &"0123456789abcdef".repeat(4));
    wrong.start(&[]);
    let (tok, asset) = token("wrong-anchor");
    let run = provision(wrong.plaintext_addr(), "v1", &tok, asset);
    let outcome = match run.grpc_error() {
        None => Err(format!("not refused: {}", run.describe())),
        Some((code, details)) => ensure(
            !details.contains("is empty") && !details.contains("enrollment-ca.pem") && code != "INVALID_ARGUMENT",
            || format!("refused for another reason than the mismatching anchor: {code}: {details}"),
        ),
    }
    .and_then(|()| still_unprovisioned(&wrong));
    if let (Ok(()), Some((code, details))) = (&outcome, run.grpc_error()) {
        r.note(&format!("(b) refusal: {code}: {details}"));
    }
    r.record("(b) StartProvisioning v1 with a wendy.conf anchor that does not match pki-core is refused", outcome);
    if r.failed > 0 {
        eprintln!("bare agent log:\n{}\nwrong-anchor agent log:\n{}", bare.log_text(), wrong.log_text());
    }
    r.finish();
}
