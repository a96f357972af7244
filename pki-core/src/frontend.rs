//! The wendy frontend: `wendycloud.v1.CertificateService` and
//! `pkicore.v1.CrlService` over the [`crate::engine::Engine`].
//!
//! On the TLS frontend, token and administration calls need an API key
//! (`authorization: Bearer <key>`); `RefreshCertificate` and `GetCrl` need
//! a valid client certificate. The same service is also served on the
//! local admin socket, where the caller is the local operator (Owner).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};
use wendy_proto::cloud::certificate_service_server::CertificateService;
use wendy_proto::cloud::*;
use wendy_proto::pkicore::crl_service_server::CrlService;
use wendy_proto::pkicore::{GetCrlRequest, GetCrlResponse};

use crate::auth::{self, Principal};
use crate::engine::Engine;
use crate::net::PeerInfo;
use crate::store::CertFilter;
use crate::Error;

/// Runs blocking engine work off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Error::Internal(format!("worker failed: {e}")).into()),
    }
}

/// Where a service instance is reachable, which decides how callers are
/// authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// The network frontend: API keys and client certificates.
    Network,
    /// The local admin socket: the caller is the local operator.
    Local,
}

/// The certificate service.
#[derive(Clone, Debug)]
pub struct Frontend {
    engine: Arc<Engine>,
    exposure: Exposure,
}

impl Frontend {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>, exposure: Exposure) -> Self {
        Self { engine, exposure }
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        if self.exposure == Exposure::Local {
            return Ok(Principal::local());
        }
        let secret_key = auth::bearer(request.metadata())?;
        Ok(self.engine.authenticate(secret_key.as_deref())?)
    }
}

fn peer_chain<T>(request: &Request<T>) -> Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>> {
    request.extensions().get::<PeerInfo>().and_then(|p| p.certificates.clone())
}

type CertificateStream = Pin<Box<dyn Stream<Item = Result<Certificate, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CertificateService for Frontend {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let cert = blocking(move || engine.issue(&req.enrollment_token, &req.pem_csr)).await?;
        Ok(Response::new(IssueCertificateResponse { certificate: Some(cert) }))
    }

    async fn refresh_certificate(
        &self,
        request: Request<RefreshCertificateRequest>,
    ) -> Result<Response<RefreshCertificateResponse>, Status> {
        let chain = peer_chain(&request);
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let cert = blocking(move || engine.refresh(chain.as_deref().map(Vec::as_slice), &req.pem_csr)).await?;
        Ok(Response::new(RefreshCertificateResponse { certificate: Some(cert) }))
    }

    async fn revoke_certificate(
        &self,
        request: Request<RevokeCertificateRequest>,
    ) -> Result<Response<RevokeCertificateResponse>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let cert = blocking(move || engine.revoke(&principal, &req.certificate_id, req.reason)).await?;
        Ok(Response::new(RevokeCertificateResponse { certificate: Some(cert) }))
    }

    async fn get_certificate(
        &self,
        request: Request<GetCertificateRequest>,
    ) -> Result<Response<GetCertificateResponse>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let cert = blocking(move || engine.get_certificate(&principal, &req.certificate_id)).await?;
        Ok(Response::new(GetCertificateResponse { certificate: Some(cert) }))
    }

    type ListCertificatesStream = CertificateStream;

    async fn list_certificates(
        &self,
        request: Request<ListCertificatesRequest>,
    ) -> Result<Response<Self::ListCertificatesStream>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let filter = CertFilter { organization_id: req.organization_id, asset_id: req.asset_id };
        let certs = blocking(move || engine.list_certificates(&principal, &filter)).await?;
        Ok(Response::new(Box::pin(futures::stream::iter(certs.into_iter().map(Ok)))))
    }

    async fn get_ca_bundle(&self, _request: Request<GetCaBundleRequest>) -> Result<Response<GetCaBundleResponse>, Status> {
        let pem_bundle = self.engine.bundle_pem()?;
        Ok(Response::new(GetCaBundleResponse { pem_bundle }))
    }

    async fn create_asset_enrollment_token(
        &self,
        request: Request<CreateAssetEnrollmentTokenRequest>,
    ) -> Result<Response<CreateAssetEnrollmentTokenResponse>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let minted = blocking(move || {
            engine.create_asset_token(&principal, req.organization_id, &req.name, req.ttl_seconds)
        })
        .await?;
        Ok(Response::new(CreateAssetEnrollmentTokenResponse {
            enrollment_token: minted.token.to_string(),
            asset_id: minted.asset_id,
            expires_at: Some(prost_types::Timestamp { seconds: minted.expires_at, nanos: 0 }),
        }))
    }

    async fn create_user_enrollment_token(
        &self,
        request: Request<CreateUserEnrollmentTokenRequest>,
    ) -> Result<Response<CreateUserEnrollmentTokenResponse>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let minted =
            blocking(move || engine.create_user_token(&principal, req.organization_id, req.ttl_seconds, &req.role))
                .await?;
        Ok(Response::new(CreateUserEnrollmentTokenResponse {
            enrollment_token: minted.token.to_string(),
            expires_at: Some(prost_types::Timestamp { seconds: minted.expires_at, nanos: 0 }),
        }))
    }
}

/// The CRL service: to mTLS clients on the frontend, to anyone local.
#[derive(Clone, Debug)]
pub struct Crls {
    engine: Arc<Engine>,
    exposure: Exposure,
}

impl Crls {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>, exposure: Exposure) -> Self {
        Self { engine, exposure }
    }
}

#[tonic::async_trait]
impl CrlService for Crls {
    async fn get_crl(&self, request: Request<GetCrlRequest>) -> Result<Response<GetCrlResponse>, Status> {
        let chain = peer_chain(&request);
        let engine = Arc::clone(&self.engine);
        let exposure = self.exposure;
        let ca_id = request.into_inner().ca_id;
        let pem_crls = blocking(move || {
            if exposure == Exposure::Network {
                engine.authenticate_peer(chain.as_deref().map(Vec::as_slice))?;
            }
            engine.crls(&ca_id)
        })
        .await?;
        Ok(Response::new(GetCrlResponse { pem_crls }))
    }
}
