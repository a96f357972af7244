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

type CertificateStream = Pin<Box<dyn Stream<Item = Result<ListCertificatesResponse, Status>> + Send + 'static>>;

/// Page size of `ListCertificates` when the request gives no limit.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
/// Largest page `ListCertificates` returns.
pub const MAX_LIST_LIMIT: i64 = 1000;

/// Runs engine work whose refusal belongs in the response body (the
/// published `IssueCertificate`/`RefreshCertificate` shape).
async fn in_body<F>(f: F) -> Result<Certificate, CertificateError>
where
    F: FnOnce() -> Result<Certificate, Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_certificate_error()),
        Err(e) => Err(Error::Internal(format!("worker failed: {e}")).to_certificate_error()),
    }
}

#[tonic::async_trait]
impl CertificateService for Frontend {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let response = match in_body(move || engine.issue(&req.enrollment_token, &req.pem_csr)).await {
            Ok(cert) => IssueCertificateResponse {
                organization_id: cert.organization_id,
                asset_id: cert.asset_id,
                user_id: cert.user_id.clone(),
                certificate: Some(cert),
                ..Default::default()
            },
            Err(error) => IssueCertificateResponse::refused(error),
        };
        Ok(Response::new(response))
    }

    async fn refresh_certificate(
        &self,
        request: Request<RefreshCertificateRequest>,
    ) -> Result<Response<RefreshCertificateResponse>, Status> {
        let chain = peer_chain(&request);
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let response = match in_body(move || engine.refresh(chain.as_deref().map(Vec::as_slice), &req.pem_csr)).await {
            Ok(cert) => RefreshCertificateResponse { certificate: Some(cert), ..Default::default() },
            Err(error) => RefreshCertificateResponse::refused(error),
        };
        Ok(Response::new(response))
    }

    async fn revoke_certificate(
        &self,
        request: Request<RevokeCertificateRequest>,
    ) -> Result<Response<RevokeCertificateResponse>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        blocking(move || engine.revoke(&principal, req.certificate_id, &req.reason)).await?;
        Ok(Response::new(RevokeCertificateResponse { success: true }))
    }

    async fn get_certificate(&self, request: Request<GetCertificateRequest>) -> Result<Response<Certificate>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let cert = blocking(move || engine.get_certificate(&principal, req.certificate_id)).await?;
        Ok(Response::new(cert))
    }

    type ListCertificatesStream = CertificateStream;

    async fn list_certificates(
        &self,
        request: Request<ListCertificatesRequest>,
    ) -> Result<Response<Self::ListCertificatesStream>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let offset = i64::from(req.offset.unwrap_or(0));
        let limit = req.limit.map_or(DEFAULT_LIST_LIMIT, i64::from);
        if offset < 0 || !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::InvalidArgument(format!(
                "offset must not be negative and limit must be between 1 and {MAX_LIST_LIMIT}"
            ))
            .into());
        }
        let filter = CertFilter { organization_id: req.organization_id, asset_id: req.asset_id, offset, limit };
        let (certs, total) = blocking(move || engine.list_certificates(&principal, &filter)).await?;
        let total = i32::try_from(total).unwrap_or(i32::MAX);
        let items = certs.into_iter().map(move |c| Ok(ListCertificatesResponse { certificate: Some(c), total }));
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn get_ca_bundle(
        &self,
        _request: Request<GetCaBundleRequest>,
    ) -> Result<Response<GetCaBundleResponse>, Status> {
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
            engine.create_asset_token(&principal, req.organization_id, &req.name, i64::from(req.ttl_seconds))
        })
        .await?;
        Ok(Response::new(CreateAssetEnrollmentTokenResponse {
            enrollment_token: minted.token.to_string(),
            jti: minted.jti,
            expires_at: Some(prost_types::Timestamp { seconds: minted.expires_at, nanos: 0 }),
            organization_id: minted.organization_id,
            asset_id: minted.asset_id,
        }))
    }

    async fn create_user_enrollment_token(
        &self,
        request: Request<CreateUserEnrollmentTokenRequest>,
    ) -> Result<Response<CreateUserEnrollmentTokenResponse>, Status> {
        let principal = self.principal(&request)?;
        let engine = Arc::clone(&self.engine);
        let req = request.into_inner();
        let minted = blocking(move || {
            engine.create_user_token(&principal, req.organization_id, i64::from(req.ttl_seconds), &req.role)
        })
        .await?;
        Ok(Response::new(CreateUserEnrollmentTokenResponse {
            enrollment_token: minted.token.to_string(),
            jti: minted.jti,
            expires_at: Some(prost_types::Timestamp { seconds: minted.expires_at, nanos: 0 }),
            user_id: minted.user_id,
        }))
    }

    async fn get_certificate_metadata(
        &self,
        request: Request<GetCertificateMetadataRequest>,
    ) -> Result<Response<GetCertificateMetadataResponse>, Status> {
        let chain = peer_chain(&request);
        let engine = Arc::clone(&self.engine);
        let record = blocking(move || engine.certificate_metadata(chain.as_deref().map(Vec::as_slice))).await?;
        let (asset_id, user_id) = crate::engine::owner(&record);
        Ok(Response::new(GetCertificateMetadataResponse { organization_id: record.organization_id, asset_id, user_id }))
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
