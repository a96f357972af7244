//! Shared helpers for pki-core's host tests: start the real `pkicore`
//! binary on a free loopback port with a temporary data directory, run its
//! admin subcommands, and talk to it over TLS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tonic::transport::Channel;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::tls::Credentials;
use wendy_proto::cloud::certificate_service_client::CertificateServiceClient;
use wendy_proto::cloud::{
    Certificate, CertificateError, CertificateErrorCode, CreateAssetEnrollmentTokenRequest, IssueCertificateResponse,
};
use wendy_proto::contract::DEV_API_KEY;

/// The `pkicore` binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pkicore"))
}

/// A running `pkicore serve all --dev`.
pub struct Server {
    child: Child,
    /// Frontend address (`127.0.0.1:port`).
    pub addr: String,
    /// The CA fingerprint it printed.
    pub fingerprint: Fingerprint,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts `pkicore serve all --dev` with `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Starts it logging at `info` into `<data dir>/../pkicore.log`
    /// ([`Server::log_text`]) instead of the test's stderr.
    pub fn start_logged(extra: &[&str]) -> Server {
        Self::spawn(tempfile::tempdir().unwrap(), extra, true)
    }

    /// What a [`Server::start_logged`] server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pkicore.log")).unwrap_or_default()
    }

    /// Kills it with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server with SIGKILL (no shutdown, no flush) and starts a
    /// new one on the same data directory (on a new port).
    pub fn crash_and_restart(mut self, extra: &[&str]) -> Server {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        Self::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::spawn(dir, extra, false)
    }

    fn spawn(dir: tempfile::TempDir, extra: &[&str], logged: bool) -> Server {
        let data = dir.path().join("data");
        let (level, stderr) = if logged {
            ("info", Stdio::from(std::fs::File::create(dir.path().join("pkicore.log")).unwrap()))
        } else {
            ("warn", Stdio::inherit())
        };
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "all", "--dev", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("PKICORE_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn pkicore");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut fingerprint) = (None, None);
        while addr.is_none() || fingerprint.is_none() {
            let line = rx.recv_timeout(Duration::from_secs(60)).expect("pkicore did not start in time");
            if let Some(rest) = line.strip_prefix("wendy frontend listening on ") {
                addr = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(fp) = line.strip_prefix("CA fingerprint: ") {
                assert_eq!(fp.len(), 64, "fingerprint line must carry 64 hex digits");
                fingerprint = Some(fp.parse().unwrap());
            }
        }
        Server { child, addr: addr.unwrap(), fingerprint: fingerprint.unwrap(), dir }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs an admin subcommand against this server; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(binary()).arg("--data-dir").arg(self.data_dir()).args(args).output().unwrap();
        assert!(out.status.success(), "pkicore {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A TLS channel pinning the CA, optionally presenting credentials.
    pub async fn channel(&self, credentials: Option<&Credentials>) -> Channel {
        pkicore::client::connect_tls(&self.addr, self.fingerprint, credentials).await.unwrap()
    }

    /// A certificate service client over TLS.
    pub async fn client(&self, credentials: Option<&Credentials>) -> CertificateServiceClient<Channel> {
        client(self.channel(credentials).await)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client with the contract's message limits.
pub fn client(channel: Channel) -> CertificateServiceClient<Channel> {
    CertificateServiceClient::new(channel)
        .max_decoding_message_size(wendy_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(4 * wendy_proto::MAX_MESSAGE_BYTES)
}

/// Mints a device token with the dev key; returns (token, asset id).
pub async fn asset_token(client: &mut CertificateServiceClient<Channel>, ttl: i32) -> (String, i32) {
    let req = pkicore::client::with_api_key(
        CreateAssetEnrollmentTokenRequest { organization_id: 1, name: "test".into(), ttl_seconds: ttl },
        DEV_API_KEY,
    )
    .unwrap();
    let r = client.create_asset_enrollment_token(req).await.unwrap().into_inner();
    (r.enrollment_token, r.asset_id)
}

/// A fresh ML-DSA-65 key and a CSR for it.
pub fn key_and_csr() -> (PrivateKey, String) {
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let csr = wendy_identity::csr::build(&key, "ignored").unwrap();
    (key, csr)
}

/// The `CertificateError` code a pki-core status carries.
pub fn error_code(status: &tonic::Status) -> CertificateErrorCode {
    let e = pkicore::error::certificate_error(status)
        .unwrap_or_else(|| panic!("no CertificateError metadata in {status:?}"));
    CertificateErrorCode::try_from(e.code).unwrap()
}

/// The precise reason (`details["reason"]`) behind a published code.
pub fn reason(e: &CertificateError) -> &str {
    e.details.get(wendy_proto::refusal::REASON_DETAIL).map(String::as_str).unwrap_or_default()
}

/// The certificate of a successful `IssueCertificate`.
pub fn issued(r: Result<tonic::Response<IssueCertificateResponse>, tonic::Status>) -> Certificate {
    r.expect("IssueCertificate status").into_inner().into_result().expect("IssueCertificate refused")
}

/// The refusal an `IssueCertificate` body carries (gRPC status OK, as published).
pub fn refused(r: Result<tonic::Response<IssueCertificateResponse>, tonic::Status>) -> CertificateError {
    r.expect("IssueCertificate refusals travel in the body, with status OK").into_inner().into_result().unwrap_err()
}

/// Whether `path` (a file) contains `needle`.
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).map(|b| b.windows(needle.len()).any(|w| w == needle)).unwrap_or(false)
}
