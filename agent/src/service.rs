//! The gRPC services. They hold no state of their own: every call goes to
//! the [`Daemon`]. Authorisation happened before (see [`crate::authz`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wendy_proto::agent::wendy_agent_service_server::WendyAgentService;
use wendy_proto::agent::wendy_provisioning_service_server::WendyProvisioningService;
use wendy_proto::agent::{
    GetAgentVersionRequest, GetAgentVersionResponse, IsProvisionedRequest, IsProvisionedResponse,
    StartProvisioningRequest, StartProvisioningResponse, UnprovisionRequest, UnprovisionResponse,
};

use crate::daemon::Daemon;
use crate::tls::PeerInfo;

/// `wendy.agent.services.v1.WendyAgentService`.
#[derive(Clone, Debug)]
pub struct AgentService(Arc<Daemon>);

impl AgentService {
    /// The service over `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self(daemon)
    }
}

#[tonic::async_trait]
impl WendyAgentService for AgentService {
    async fn get_agent_version(
        &self,
        _request: Request<GetAgentVersionRequest>,
    ) -> Result<Response<GetAgentVersionResponse>, Status> {
        Ok(Response::new(self.0.version()))
    }
}

/// `wendy.agent.services.v1.WendyProvisioningService`.
#[derive(Clone, Debug)]
pub struct ProvisioningService(Arc<Daemon>);

impl ProvisioningService {
    /// The service over `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self(daemon)
    }
}

#[tonic::async_trait]
impl WendyProvisioningService for ProvisioningService {
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

    async fn unprovision(&self, request: Request<UnprovisionRequest>) -> Result<Response<UnprovisionResponse>, Status> {
        // Defence in depth: the role layer already required Admin, and only
        // the mTLS port has peers with certificates.
        let Some(peer) = request.extensions().get::<PeerInfo>() else {
            return Err(Status::permission_denied("Unprovision is served only over mTLS, to an Admin"));
        };
        tracing::info!(cn = ?peer.common_name, role = ?peer.role, "Unprovision requested");
        self.0.unprovision().await?;
        Ok(Response::new(UnprovisionResponse {}))
    }
}
