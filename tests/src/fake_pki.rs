//! An in-process stand-in for pki-core's `CertificateService` and
//! `CrlService`, for tests that exercise the agent rather than pki-core.
//! It has its own ML-DSA-65 CA, serves TLS with a server certificate for
//! [`wendy_identity::PKICORE_SERVER_NAME`] (chain includes the CA, so
//! clients pin the CA fingerprint), issues device certificates from CSRs for
//! single-use tokens, and publishes a CRL of what the test revokes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use wendy_identity::crl::RevokedEntry;
use wendy_identity::csr::VerifiedCsr;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::{CertificateAuthority, IssuedCertificate, LeafProfile};
use wendy_identity::role::Role;
use wendy_identity::tls::{Credentials, WendyClientVerifier};
use wendy_proto::cloud::certificate_service_server::{CertificateService, CertificateServiceServer};
use wendy_proto::cloud::*;
use wendy_proto::pkicore::crl_service_server::{CrlService, CrlServiceServer};
use wendy_proto::pkicore::{GetCrlRequest, GetCrlResponse};

/// A user credential minted by a test CA.
pub struct UserCert {
    /// Key + chain, ready for a TLS client.
    pub credentials: Credentials,
    /// Serial (hex), to revoke it.
    pub serial_hex: String,
    /// The private key, PEM (for a CLI config directory).
    pub key_pem: String,
    /// The certificate, PEM.
    pub cert_pem: String,
}

/// A certificate authority for tests, with helpers to mint credentials.
pub struct TestCa {
    /// The CA.
    pub ca: CertificateAuthority,
}

impl TestCa {
    /// A fresh ML-DSA-65 CA valid for a year.
    pub fn new(name: &str) -> Self {
        Self { ca: CertificateAuthority::create(name, KeyAlgorithm::MlDsa65, Duration::days(365)).expect("CA") }
    }

    /// Issues `profile` for a fresh key, valid from `start` for `validity`.
    pub fn mint(&self, profile: LeafProfile, start: OffsetDateTime, validity: Duration) -> UserCert {
        let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).expect("key");
        let issued = self.ca.issue(&profile, &key.public_key_der(), start, validity).expect("issue");
        let credentials =
            Credentials::from_pems(&key.to_pem(), &issued.pem, &self.ca.certificate_pem()).expect("credentials");
        UserCert { credentials, serial_hex: issued.serial_hex, key_pem: key.to_pem().to_string(), cert_pem: issued.pem }
    }

    /// A user certificate with `role`, valid now for a day.
    pub fn user(&self, role: Role) -> UserCert {
        self.mint(
            LeafProfile::User { organization_id: 1, user_id: format!("test-{}", role.name().to_lowercase()), role },
            OffsetDateTime::now_utc(),
            Duration::days(1),
        )
    }
}

#[derive(Default)]
struct State {
    tokens: HashSet<String>,
    revoked: Vec<RevokedEntry>,
    crl_number: u64,
    issued: u64,
    refreshed: u64,
}

/// The fake pki-core.
#[derive(Clone)]
pub struct FakePki {
    ca: Arc<TestCa>,
    state: Arc<Mutex<State>>,
    device_validity: Duration,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FakePki {
    /// Serves on `listener` (already bound, non-blocking; may belong to a
    /// network namespace) with device certificates valid for
    /// `device_validity`. Must be called inside a tokio runtime.
    pub fn start(listener: std::net::TcpListener, device_validity: Duration) -> Self {
        crate::init();
        let addr = listener.local_addr().expect("addr");
        let ca = Arc::new(TestCa::new("WendyOS Test CA"));
        let me = Self { ca, state: Arc::default(), device_validity, addr };
        let server_key = PrivateKey::generate(KeyAlgorithm::MlDsa65).expect("key");
        let server_cert = me
            .ca
            .ca
            .issue(
                &LeafProfile::Server { dns_names: vec![wendy_identity::PKICORE_SERVER_NAME.into()] },
                &server_key.public_key_der(),
                OffsetDateTime::now_utc(),
                Duration::days(30),
            )
            .expect("server cert");
        let creds = Credentials::from_pems(&server_key.to_pem(), &server_cert.pem, &me.ca.ca.certificate_pem())
            .expect("server creds");
        let bundle = wendy_identity::bundle::TrustBundle::from_pem(&me.ca.ca.certificate_pem()).expect("bundle");
        let verifier = Arc::new(WendyClientVerifier::new(bundle, false));
        let config = Arc::new(wendy_identity::tls::server_config(&creds, verifier).expect("tls config"));
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let incoming = incoming(listener, config);
        let svc = me.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(CertificateServiceServer::new(svc.clone()))
                .add_service(CrlServiceServer::new(svc))
                .serve_with_incoming(incoming)
                .await
                .ok();
        });
        me
    }

    /// The CA.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.ca.ca.fingerprint()
    }

    /// A `StartProvisioning` request enrolling against this pki-core (its
    /// address and pinned CA) with `token` as asset `asset_id`.
    pub fn provisioning_request(&self, token: &str, asset_id: i32) -> wendy_proto::agent::StartProvisioningRequest {
        wendy_proto::agent::StartProvisioningRequest {
            organization_id: 1,
            enrollment_token: token.to_owned(),
            cloud_host: self.addr.to_string(),
            asset_id,
            ca_fingerprint: self.fingerprint().to_string(),
            ..Default::default()
        }
    }

    /// Registers a single-use enrolment token.
    pub fn add_token(&self, token: &str) {
        self.state.lock().unwrap().tokens.insert(token.to_owned());
    }

    /// Revokes `serial_hex` in the next CRL.
    pub fn revoke(&self, serial_hex: &str) {
        let mut s = self.state.lock().unwrap();
        s.revoked.push(RevokedEntry { serial_hex: serial_hex.to_owned(), revoked_at: OffsetDateTime::now_utc() });
    }

    /// How many certificates were issued and refreshed.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.issued, s.refreshed)
    }

    fn issue_for(&self, pem_csr: &str) -> Result<Certificate, Status> {
        let csr = VerifiedCsr::from_pem(pem_csr).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cn = csr.requested_common_name.clone().unwrap_or_default();
        let ids: Vec<i32> = cn
            .strip_prefix(wendy_identity::DEVICE_CN_PREFIX)
            .map(|r| r.split('/').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        let [org, asset] = ids[..] else { return Err(Status::invalid_argument(format!("bad CN {cn:?}"))) };
        let issued: IssuedCertificate = self
            .ca
            .ca
            .issue(
                &LeafProfile::Device { organization_id: org, asset_id: asset },
                &csr.public_key_der,
                OffsetDateTime::now_utc(),
                self.device_validity,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Certificate {
            organization_id: org,
            asset_id: Some(asset),
            serial_number: issued.serial_hex.clone(),
            pem_certificate: issued.pem,
            pem_certificate_chain: self.ca.ca.certificate_pem(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl CertificateService for FakePki {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let req = request.into_inner();
        if !self.state.lock().unwrap().tokens.remove(&req.enrollment_token) {
            return Ok(Response::new(IssueCertificateResponse::refused(CertificateError {
                code: CertificateErrorCode::CertificateErrorInvalidEnrollmentToken as i32,
                message: "invalid or already used enrollment token".into(),
                details: Default::default(),
            })));
        }
        let cert = self.issue_for(&req.pem_csr)?;
        self.state.lock().unwrap().issued += 1;
        Ok(Response::new(IssueCertificateResponse { certificate: Some(cert), ..Default::default() }))
    }

    async fn refresh_certificate(
        &self,
        request: Request<RefreshCertificateRequest>,
    ) -> Result<Response<RefreshCertificateResponse>, Status> {
        let has_cert = request.extensions().get::<PeerCert>().is_some_and(|p| p.0.is_some());
        if !has_cert {
            return Err(Status::unauthenticated("RefreshCertificate needs a client certificate"));
        }
        let cert = self.issue_for(&request.into_inner().pem_csr)?;
        self.state.lock().unwrap().refreshed += 1;
        Ok(Response::new(RefreshCertificateResponse { certificate: Some(cert), ..Default::default() }))
    }

    async fn revoke_certificate(
        &self,
        _: Request<RevokeCertificateRequest>,
    ) -> Result<Response<RevokeCertificateResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_certificate(&self, _: Request<GetCertificateRequest>) -> Result<Response<Certificate>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_certificate_metadata(
        &self,
        _: Request<GetCertificateMetadataRequest>,
    ) -> Result<Response<GetCertificateMetadataResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type ListCertificatesStream = tokio_stream::Empty<Result<ListCertificatesResponse, Status>>;

    async fn list_certificates(
        &self,
        _: Request<ListCertificatesRequest>,
    ) -> Result<Response<Self::ListCertificatesStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_ca_bundle(&self, _: Request<GetCaBundleRequest>) -> Result<Response<GetCaBundleResponse>, Status> {
        Ok(Response::new(GetCaBundleResponse { pem_bundle: self.ca.ca.certificate_pem() }))
    }

    async fn create_asset_enrollment_token(
        &self,
        _: Request<CreateAssetEnrollmentTokenRequest>,
    ) -> Result<Response<CreateAssetEnrollmentTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_user_enrollment_token(
        &self,
        _: Request<CreateUserEnrollmentTokenRequest>,
    ) -> Result<Response<CreateUserEnrollmentTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl CrlService for FakePki {
    async fn get_crl(&self, request: Request<GetCrlRequest>) -> Result<Response<GetCrlResponse>, Status> {
        if request.extensions().get::<PeerCert>().is_none_or(|p| p.0.is_none()) {
            return Err(Status::unauthenticated("GetCrl needs a client certificate"));
        }
        let (revoked, number) = {
            let mut s = self.state.lock().unwrap();
            s.crl_number += 1;
            (s.revoked.clone(), s.crl_number)
        };
        let now = OffsetDateTime::now_utc();
        let pem = wendy_identity::crl::build(
            &self.ca.ca,
            &revoked,
            number,
            now - Duration::minutes(1),
            now + Duration::hours(1),
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(GetCrlResponse { pem_crls: vec![pem] }))
    }
}

/// The client certificate (DER) of a connection, if any.
#[derive(Clone, Debug)]
pub struct PeerCert(pub Option<Vec<u8>>);

/// A TLS connection carrying [`PeerCert`].
pub struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = PeerCert;
    fn connect_info(&self) -> PeerCert {
        PeerCert(self.0.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()))
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(TlsConn(s))).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
