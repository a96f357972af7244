//! ProvisioningService: `wendy.agent.services.v1.WendyProvisioningService` and its
//! v2 twin, served side by side with the same behaviour (the work is the
//! [`Daemon`]'s). On the plaintext port anyone may call them; on the mTLS
//! port `IsProvisioned` needs Viewer and `StartProvisioning` is refused
//! (already provisioned).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wendy_proto::agent::wendy_provisioning_service_server::WendyProvisioningService as V1;
use wendy_proto::agent::{
    is_provisioned_response, IsProvisionedRequest, IsProvisionedResponse, StartProvisioningRequest,
    StartProvisioningResponse,
};
use wendy_proto::agent_v2 as v2;
use wendy_proto::agent_v2::wendy_provisioning_service_server::WendyProvisioningService as V2;

use crate::daemon::Daemon;

/// Both versions of the provisioning service.
#[derive(Clone, Debug)]
pub struct ProvisioningService(Arc<Daemon>);

impl ProvisioningService {
    /// The services over `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self(daemon)
    }
}

#[tonic::async_trait]
impl V1 for ProvisioningService {
    async fn start_provisioning(
        &self,
        request: Request<StartProvisioningRequest>,
    ) -> Result<Response<StartProvisioningResponse>, Status> {
        self.0.provision(request.into_inner()).await?;
        Ok(Response::new(StartProvisioningResponse {}))
    }

    async fn is_provisioned(
        &self,
        _request: Request<IsProvisionedRequest>,
    ) -> Result<Response<IsProvisionedResponse>, Status> {
        Ok(Response::new(self.0.is_provisioned()))
    }
}

/// The v1 request a v2 request means (the two are field-for-field equal).
fn from_v2(r: v2::StartProvisioningRequest) -> StartProvisioningRequest {
    StartProvisioningRequest {
        organization_id: r.organization_id,
        enrollment_token: r.enrollment_token,
        cloud_host: r.cloud_host,
        asset_id: r.asset_id,
        ca_fingerprint: r.ca_fingerprint,
        allow_plaintext_enrollment: r.allow_plaintext_enrollment,
        device_name: r.device_name,
    }
}

/// The v2 answer to `IsProvisioned`.
fn to_v2(r: IsProvisionedResponse) -> v2::IsProvisionedResponse {
    use v2::is_provisioned_response::ResponseType;
    let response_type = r.response.map(|r| match r {
        is_provisioned_response::Response::NotProvisioned(_) => {
            ResponseType::NotProvisioned(v2::NotProvisionedResponse {})
        }
        is_provisioned_response::Response::Provisioned(p) => ResponseType::Provisioned(v2::ProvisionedResponse {
            cloud_host: p.cloud_host,
            organization_id: p.organization_id,
            asset_id: p.asset_id,
        }),
    });
    v2::IsProvisionedResponse { response_type }
}

#[tonic::async_trait]
impl V2 for ProvisioningService {
    async fn start_provisioning(
        &self,
        request: Request<v2::StartProvisioningRequest>,
    ) -> Result<Response<v2::StartProvisioningResponse>, Status> {
        self.0.provision(from_v2(request.into_inner())).await?;
        Ok(Response::new(v2::StartProvisioningResponse {}))
    }

    async fn is_provisioned(
        &self,
        _request: Request<v2::IsProvisionedRequest>,
    ) -> Result<Response<v2::IsProvisionedResponse>, Status> {
        Ok(Response::new(to_v2(self.0.is_provisioned())))
    }
}
