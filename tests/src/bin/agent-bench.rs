//! Benchmarks of `wendy-agent` (not timed tests; run by hand, as root):
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p wendy-tests --bin agent-bench -- latency [runs]
//! cargo run --release -p wendy-tests --bin agent-bench -- handshake [seconds] [concurrency]
//! cargo run --release -p wendy-tests --bin agent-bench -- footprint
//! ```
//!
//! Each runs the release `wendy-agent` next to this binary, inside a private
//! network namespace, against the in-process fake pki-core.
//! - latency: `StartProvisioning` sent → first mTLS `GetAgentVersion` answered.
//! - handshake: full mTLS handshakes per second (no resumption, ML-DSA-65
//!   certificates, X25519MLKEM768) against the agent and against OpenSSL 3.5
//!   `s_server` (chroot `$WENDY_OPENSSL_ROOT`) with the same certificates and
//!   the same load client.
//! - footprint: stripped aarch64 size (`build/qemuarm64/wendy-agent` from
//!   `scripts/build-agent --board qemuarm64`) and idle RSS on this host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wendy_identity::profile::LeafProfile;
use wendy_identity::role::Role;
use wendy_proto::agent::*;
use wendy_tests::agent::{admin_client, agent_client, client_tls, provisioning_client, AgentFixture};
use wendy_tests::fake_pki::{FakePki, TestCa};
use wendy_tests::netns::Netns;

fn main() {
    wendy_tests::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match args.first().map(String::as_str) {
        Some("latency") => rt.block_on(latency(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50))),
        Some("handshake") => handshake(
            args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5),
            args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4),
        ),
        Some("footprint") => rt.block_on(footprint()),
        _ => eprintln!("usage: agent-bench latency [runs] | handshake [seconds] [concurrency] | footprint"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(runs: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let pki = FakePki::start(ns.bind("127.0.0.1:0".parse().unwrap()), time::Duration::days(1));
    let admin = pki.ca().user(Role::Admin);
    let ca = pki.ca().ca.certificate_pem();
    let mut agent = AgentFixture::new(tmp.path(), ns.clone());
    agent.env.push(("RUST_LOG".into(), std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())));
    tokio::task::block_in_place(|| agent.start(&[]));
    let mut samples = Vec::new();
    for i in 0..runs {
        let token = format!("bench-{i}");
        pki.add_token(&token);
        let plain = agent.plaintext().await.unwrap();
        let req = pki.provisioning_request(&token, 1 + i as i32);
        let start = Instant::now();
        provisioning_client(plain).start_provisioning(req).await.expect("StartProvisioning");
        let ch = agent.mtls(&admin.credentials, &ca).await.expect("mTLS");
        agent_client(ch.clone()).get_agent_version(GetAgentVersionRequest {}).await.expect("version");
        samples.push(start.elapsed());
        if let Err(e) = admin_client(ch).unprovision(wendy_proto::agent_admin::UnprovisionRequest {}).await {
            panic!("unprovision: {e:?}\nagent log:\n{}", agent.log_text());
        }
        while !tokio::task::block_in_place(|| ns.is_listening(agent.plaintext_addr())) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    samples.sort();
    println!(
        "provisioning latency (StartProvisioning -> mTLS GetAgentVersion), {runs} runs: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

/// A device identity minted by `ca`, written as the agent's provisioning.json
/// and as PEM files for OpenSSL.
fn device_files(ca: &TestCa, config_dir: &std::path::Path, pem_dir: &std::path::Path) {
    let key = wendy_identity::key::PrivateKey::generate(wendy_identity::key::KeyAlgorithm::MlDsa65).unwrap();
    let cert = ca
        .ca
        .issue(
            &LeafProfile::Device { organization_id: 1, asset_id: 1 },
            &key.public_key_der(),
            OffsetDateTime::now_utc(),
            time::Duration::days(1),
        )
        .unwrap();
    let json = serde_json::json!({
        "enrolled": true, "cloudHost": "127.0.0.1:1", "orgId": 1, "assetId": 1,
        "keyPem": key.to_pem().as_str(), "certPem": cert.pem, "chainPem": ca.ca.certificate_pem(),
    });
    std::fs::create_dir_all(config_dir).unwrap();
    std::fs::write(config_dir.join("provisioning.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    std::fs::create_dir_all(pem_dir).unwrap();
    std::fs::write(pem_dir.join("key.pem"), key.to_pem().as_bytes()).unwrap();
    std::fs::write(pem_dir.join("cert.pem"), &cert.pem).unwrap();
    std::fs::write(pem_dir.join("ca.pem"), ca.ca.certificate_pem()).unwrap();
}

/// Full handshakes/s from `concurrency` connections in a loop for `secs`.
fn load(ns: &Netns, addr: SocketAddr, config: Arc<rustls::ClientConfig>, secs: u64, concurrency: usize) -> (u64, u64) {
    ns.run_inside(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let connector = tokio_rustls::TlsConnector::from(config);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let connector = connector.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        let result = async {
                            let tcp = tokio::net::TcpStream::connect(addr).await?;
                            tcp.set_nodelay(true)?;
                            let name = rustls_pki_types::ServerName::try_from("wendy-device").unwrap();
                            let mut tls = connector.connect(name, tcp).await?;
                            // The server has checked our certificate once it
                            // answers our close_notify.
                            tls.shutdown().await?;
                            let mut sink = Vec::new();
                            let _ = tls.read_to_end(&mut sink).await;
                            Ok::<_, std::io::Error>(())
                        }
                        .await;
                        match result {
                            Ok(()) => ok += 1,
                            Err(_) => failed += 1,
                        }
                    }
                    (ok, failed)
                }));
            }
            let mut total = (0, 0);
            for t in tasks {
                let (o, f) = t.await.unwrap();
                total.0 += o;
                total.1 += f;
            }
            total
        })
    })
}

fn handshake(secs: u64, concurrency: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let ca = TestCa::new("WendyOS Bench CA");
    let client = ca.user(Role::Viewer);
    let openssl_root =
        PathBuf::from(std::env::var("WENDY_OPENSSL_ROOT").unwrap_or_else(|_| {
            format!("{}/.cache/wendyos/openssl35-root", std::env::var("HOME").unwrap_or_default())
        }));
    let pem_rel = format!("tmp/agent-bench-{}", std::process::id());
    let pem_dir = openssl_root.join(&pem_rel);
    let mut agent = AgentFixture::new(tmp.path(), ns.clone());
    device_files(&ca, &agent.config_dir, &pem_dir);
    agent.env.push(("RUST_LOG".into(), "error".into()));
    agent.start(&[]);
    let mut config = (*client_tls(&client.credentials, &ca.ca.certificate_pem())).clone();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols.clear();
    let config = Arc::new(config);

    let mut ossl = ns
        .command("chroot")
        .arg(&openssl_root)
        .args([
            "openssl",
            "s_server",
            "-accept",
            "127.0.0.1:47060",
            "-tls1_3",
            "-www",
            "-quiet",
            "-no_cache",
            "-num_tickets",
            "0",
        ])
        .args(["-cert", &format!("/{pem_rel}/cert.pem"), "-key", &format!("/{pem_rel}/key.pem")])
        .args(["-cert_chain", &format!("/{pem_rel}/ca.pem"), "-CAfile", &format!("/{pem_rel}/ca.pem"), "-Verify", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server (run scripts/setup for the OpenSSL 3.5 chroot)");
    let ossl_addr: SocketAddr = "127.0.0.1:47060".parse().unwrap();
    while !ns.is_listening(ossl_addr) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let version = ns.command("chroot").arg(&openssl_root).args(["openssl", "version"]).output().unwrap();

    let (a_ok, a_fail) = load(&ns, agent.mtls_addr(), config.clone(), secs, concurrency);
    let (o_ok, o_fail) = load(&ns, ossl_addr, config, secs, concurrency);
    let _ = ossl.kill();
    let _ = ossl.wait();
    let _ = std::fs::remove_dir_all(&pem_dir);
    let (a, o) = (a_ok as f64 / secs as f64, o_ok as f64 / secs as f64);
    println!(
        "full mTLS handshakes/s, {concurrency} connections, {secs} s each, ML-DSA-65 + X25519MLKEM768, no resumption:"
    );
    println!("  wendy-agent:            {a:8.1}/s ({a_fail} failed)");
    println!("  {} s_server: {o:8.1}/s ({o_fail} failed)", String::from_utf8_lossy(&version.stdout).trim());
    println!("  ratio agent/openssl:    {:.2}x", a / o.max(1e-9));
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn footprint() {
    let arm =
        PathBuf::from(std::env::var("WENDY_BUILD").unwrap_or_else(|_| "build".into())).join("qemuarm64/wendy-agent");
    match std::fs::metadata(&arm) {
        Ok(m) => println!(
            "aarch64 stripped size: {} bytes ({:.2} MiB) [{}]",
            m.len(),
            m.len() as f64 / 1048576.0,
            arm.display()
        ),
        Err(_) => println!("aarch64 binary {} missing: run scripts/build-agent --board qemuarm64", arm.display()),
    }
    let host = wendy_tests::bins::require("wendy-agent");
    println!("host release size: {} bytes", std::fs::metadata(&host).unwrap().len());
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let ca = TestCa::new("WendyOS Bench CA");
    for provisioned in [false, true] {
        let root = tmp.path().join(if provisioned { "p" } else { "u" });
        std::fs::create_dir_all(&root).unwrap();
        let mut agent = AgentFixture::new(&root, ns.clone());
        if provisioned {
            device_files(&ca, &agent.config_dir, &root.join("pem"));
        }
        tokio::task::block_in_place(|| agent.start(&[]));
        let pid = agent.pid().unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "idle RSS ({}): {} KiB",
            if provisioned { "provisioned, mTLS" } else { "unprovisioned, plaintext" },
            rss_kib(pid)
        );
    }
}
