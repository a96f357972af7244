//! Durable issuance throughput over gRPC: starts the real `pkicore serve
//! all --dev` (SQLite, WAL, synchronous=NORMAL), pre-mints enrolment
//! tokens, then times `IssueCertificate` (token check, CSR proof of
//! possession, ML-DSA-65 signature, atomic token consume + certificate
//! insert + audit row) from concurrent clients over TLS.
//!
//!   cargo bench -p pkicore --bench issuance
//!
//! Environment: PKICORE_BENCH_N (certificates, default 3000),
//! PKICORE_BENCH_CONCURRENCY (in-flight calls, default 64),
//! PKICORE_BENCH_CONNECTIONS (TLS connections, default 4),
//! PKICORE_BENCH_BINARY (the `pkicore` to measure, default the bench build;
//! `$CARGO_TARGET_DIR/release/pkicore` is the one the container ships).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_proto::cloud::certificate_service_client::CertificateServiceClient;
use wendy_proto::cloud::{CreateAssetEnrollmentTokenRequest, IssueCertificateRequest};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with `--bench` absent: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("issuance benchmark: run with `cargo bench -p pkicore --bench issuance`");
        return;
    }
    let n = env("PKICORE_BENCH_N", 3000);
    let concurrency = env("PKICORE_BENCH_CONCURRENCY", 64);
    let connections = env("PKICORE_BENCH_CONNECTIONS", 4).max(1);

    let dir = tempfile::tempdir().unwrap();
    // The bench-profile build by default; PKICORE_BENCH_BINARY measures
    // another, such as the shipped release build.
    let binary = std::env::var_os("PKICORE_BENCH_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_pkicore").into());
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "all", "--dev", "--listen", "127.0.0.1:0"])
        .env("PKICORE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut fp): (Option<String>, Option<Fingerprint>) = (None, None);
    while addr.is_none() || fp.is_none() {
        let line = lines.next().expect("pkicore exited").unwrap();
        if let Some(rest) = line.strip_prefix("wendy frontend listening on ") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(f) = line.strip_prefix("CA fingerprint: ") {
            fp = Some(f.parse().unwrap());
        }
    }
    let (addr, fp) = (addr.unwrap(), fp.unwrap());
    let mut clients = Vec::new();
    for _ in 0..connections {
        let ch = pkicore::client::connect_tls(&addr, fp, None).await.unwrap();
        clients.push(CertificateServiceClient::new(ch));
    }

    // Tokens and CSRs are prepared outside the timed section.
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = clients[i % connections].clone();
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let req = pkicore::client::with_api_key(
                CreateAssetEnrollmentTokenRequest { organization_id: 1, name: format!("bench-{i}"), ttl_seconds: 3600 },
                wendy_proto::contract::DEV_API_KEY,
            )
            .unwrap();
            c.create_asset_enrollment_token(req).await.unwrap().into_inner().enrollment_token
        }));
    }
    let mut tokens = Vec::with_capacity(n);
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    println!("minted {n} tokens in {:.2?}", started.elapsed());
    let csrs: Vec<String> = (0..16)
        .map(|_| wendy_identity::csr::build(&PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap(), "bench").unwrap())
        .collect();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let mut c = clients[i % connections].clone();
        let csr = csrs[i % csrs.len()].clone();
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            c.issue_certificate(IssueCertificateRequest { pem_csr: csr, enrollment_token: token }).await.is_ok()
        }));
    }
    let mut ok = 0usize;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ok, n, "every issuance must succeed");
    println!(
        "issued {n} ML-DSA-65 certificates (durable, SQLite WAL) in {elapsed:.2?} with {concurrency} in flight over {connections} TLS connections: {:.0} certificates/s on {} CPUs",
        n as f64 / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0)
    );
}
