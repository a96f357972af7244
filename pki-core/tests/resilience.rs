//! pki-core under a hostile or crashing world, with the real binary: wrong
//! API keys from one source are counted in aggregate (never one log line per
//! call, never the key) and throttled, and an `IssueCertificate` whose reply
//! was lost to a `kill -9` gets its certificate on retry.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wendy_proto::cloud::{CreateAssetEnrollmentTokenRequest, IssueCertificateRequest};

const WRONG_KEY: &str = "wrong-key-do-not-log-3f9c1e";

/// 2,000 calls with a wrong API key from one address: after the free
/// failures the address is refused outright (RESOURCE_EXHAUSTED, before any
/// key check) with growing penalties, and the log has one aggregate line per
/// report interval, without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_keys_are_logged_in_aggregate_and_throttled() {
    let mut server = Server::start_logged(&[]);
    let mut anon = server.client(None).await;

    // `dropped`: a throttled call whose stream the client saw reset (a
    // transport error instead of RESOURCE_EXHAUSTED). The throttle reads
    // the request body before it answers (it answered at once, racing the
    // client still sending, and 0-1 calls in 2,000 saw a reset); none may.
    let (mut unauthenticated, mut throttled, mut dropped) = (0, 0, 0);
    let started = Instant::now();
    for _ in 0..2000 {
        let req = pkicore::client::with_api_key(
            CreateAssetEnrollmentTokenRequest { organization_id: 1, name: "x".into(), ttl_seconds: 0 },
            WRONG_KEY,
        )
        .unwrap();
        match anon.create_asset_enrollment_token(req).await {
            Err(s) if s.code() == tonic::Code::Unauthenticated => unauthenticated += 1,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => throttled += 1,
            Err(s) if s.code() == tonic::Code::Unknown && s.message() == "transport error" => dropped += 1,
            other => panic!("a wrong API key got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "2000 wrong-key calls in {elapsed:?}: {unauthenticated} checked and refused, {throttled} throttled, {dropped} reset"
    );
    assert!(
        unauthenticated > pkicore::auth::throttle::FREE_FAILURES as usize && unauthenticated < 40,
        "{unauthenticated} calls reached the key check"
    );
    assert_eq!(unauthenticated + throttled + dropped, 2000);
    assert_eq!(dropped, 0, "{dropped} throttled calls ended in a transport error");

    // One report interval later the counts are in the log, in aggregate.
    tokio::time::sleep(wendy_net::limits::REFUSAL_LOG_INTERVAL + Duration::from_secs(2)).await;
    server.kill();
    let log = server.log_text();
    assert!(!log.contains(WRONG_KEY), "the log carries the API key:\n{log}");
    let reports: Vec<&str> = log.lines().filter(|l| l.contains("API-key calls refused")).collect();
    assert!(!reports.is_empty() && reports.len() <= 3, "expected one or two aggregate lines, got:\n{log}");
    assert!(log.lines().count() < 40, "the log grew with the calls ({} lines):\n{log}", log.lines().count());
    println!("log: {} lines; reports: {reports:#?}", log.lines().count());
}

/// The certificate is committed before the reply leaves. pki-core is killed
/// with SIGKILL after issuing (the device never saw the reply); after a
/// restart, the same token with the same CSR returns the same certificate,
/// and the token still cannot serve another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_retried_after_kill_9_gets_its_certificate() {
    let server = Server::start(&[]);
    let mut anon = server.client(None).await;
    let (token, asset_id) = asset_token(&mut anon, 0).await;
    let (_key, csr) = key_and_csr();
    let req = || IssueCertificateRequest { pem_csr: csr.clone(), enrollment_token: token.clone() };
    let first = anon.issue_certificate(req()).await.unwrap().into_inner();
    let first = first.certificate.unwrap_or_else(|| panic!("no certificate: {:?}", first.error));
    drop(anon);

    let server = server.crash_and_restart(&[]);
    let mut anon = server.client(None).await;
    let again = anon.issue_certificate(req()).await.unwrap().into_inner();
    let again = again.certificate.unwrap_or_else(|| panic!("the retry after kill -9 got {:?}", again.error));
    assert_eq!((again.id, &again.serial_number), (first.id, &first.serial_number));
    assert_eq!(again.asset_id, Some(asset_id));

    let (_other, other_csr) = key_and_csr();
    let replay = IssueCertificateRequest { pem_csr: other_csr, enrollment_token: token.clone() };
    let refused = anon.issue_certificate(replay).await.unwrap().into_inner();
    let e = refused.error.unwrap_or_else(|| panic!("a second key on a used token got {:?}", refused.certificate));
    assert_eq!(reason(&e), "token_already_used");
}
