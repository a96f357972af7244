//! The real `pkicore serve all --dev`, run inside a test namespace, and the
//! calls tests make to it (API key for tokens; pinned TLS).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::tls::{Credentials, PinnedCaServerVerifier};
use wendy_proto::cloud::certificate_service_client::CertificateServiceClient;
use wendy_proto::cloud::*;
use wendy_proto::contract::{AUTHORIZATION_HEADER, DEV_API_KEY};

use crate::netns::Netns;

/// A running pkicore.
pub struct RealPki {
    child: Child,
    /// Where it listens (inside the namespace).
    pub addr: SocketAddr,
    /// Its CA fingerprint, as printed.
    pub fingerprint: Fingerprint,
    ns: Arc<Netns>,
}

impl RealPki {
    /// Starts `pkicore serve all --dev` on `addr` inside `ns`, data in `data`.
    pub fn start(pkicore: &Path, ns: Arc<Netns>, data: &Path, addr: SocketAddr) -> Self {
        let log = std::fs::File::create(data.with_extension("log")).expect("log");
        let mut child = ns
            .command(pkicore)
            .args(["serve", "all", "--dev", "--data-dir"])
            .arg(data)
            .args(["--listen", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn pkicore");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(fp) = line.strip_prefix("CA fingerprint: ") {
                    let _ = tx.send(fp.trim().to_owned());
                }
            }
        });
        let fp = rx.recv_timeout(Duration::from_secs(60)).expect("pkicore printed no `CA fingerprint:` line");
        let me = Self { child, addr, fingerprint: fp.parse().expect("fingerprint"), ns };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !me.ns.is_listening(addr) {
            assert!(std::time::Instant::now() < deadline, "pkicore does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// A pinned TLS channel to it, presenting `client` if given.
    pub async fn channel(&self, client: Option<&Credentials>) -> Channel {
        let verifier =
            Arc::new(PinnedCaServerVerifier::new(self.fingerprint, Some(wendy_identity::PKICORE_SERVER_NAME)));
        let tls = tokio_rustls::TlsConnector::from(Arc::new(
            wendy_identity::tls::client_config(verifier, client).expect("client config"),
        ));
        let (ns, addr) = (self.ns.clone(), self.addr);
        Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let (ns, tls) = (ns.clone(), tls.clone());
                async move {
                    let tcp = ns.connect(addr).await?;
                    let s = tls
                        .connect(ServerName::try_from(wendy_identity::PKICORE_SERVER_NAME).expect("name"), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .expect("connect to pkicore")
    }

    fn with_key<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(AUTHORIZATION_HEADER, format!("Bearer {DEV_API_KEY}").parse().expect("header"));
        r
    }

    /// A one-time asset enrolment token: `(token, asset_id)`.
    pub async fn asset_token(&self, org: i32, name: &str) -> (String, i32) {
        let r = CertificateServiceClient::new(self.channel(None).await)
            .create_asset_enrollment_token(Self::with_key(CreateAssetEnrollmentTokenRequest {
                organization_id: org,
                name: name.into(),
                ttl_seconds: 600,
            }))
            .await
            .expect("CreateAssetEnrollmentToken")
            .into_inner();
        (r.enrollment_token, r.asset_id)
    }

    /// A user certificate with `role` (`Owner`, `Admin`, `Member`, `Viewer`):
    /// `(credentials, certificate id)`.
    pub async fn user(&self, org: i32, role: &str) -> (Credentials, i32) {
        let mut client = CertificateServiceClient::new(self.channel(None).await);
        let token = client
            .create_user_enrollment_token(Self::with_key(CreateUserEnrollmentTokenRequest {
                ttl_seconds: 600,
                organization_id: org,
                role: role.into(),
            }))
            .await
            .expect("CreateUserEnrollmentToken")
            .into_inner()
            .enrollment_token;
        let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).expect("key");
        let csr = wendy_identity::csr::build(&key, "user").expect("csr");
        let cert = client
            .issue_certificate(IssueCertificateRequest { pem_csr: csr, enrollment_token: token })
            .await
            .expect("IssueCertificate (user)")
            .into_inner()
            .into_result()
            .expect("certificate");
        let creds = Credentials::from_pems(&key.to_pem(), &cert.pem_certificate, &cert.pem_certificate_chain)
            .expect("user credentials");
        (creds, cert.id)
    }

    /// The CA bundle (to check the device's server certificate).
    pub async fn ca_pem(&self) -> String {
        CertificateServiceClient::new(self.channel(None).await)
            .get_ca_bundle(GetCaBundleRequest {})
            .await
            .expect("GetCaBundle")
            .into_inner()
            .pem_bundle
    }
}

impl Drop for RealPki {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
