//! `wendyos.agent.v1.DeviceAdminService`: the agent's own calls, which the
//! published protocol does not have. Served only over mTLS; role Admin.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wendy_proto::agent_admin::device_admin_service_server::DeviceAdminService;
use wendy_proto::agent_admin::{UnprovisionRequest, UnprovisionResponse};

use crate::daemon::Daemon;
use crate::tls::PeerInfo;

/// The device administration service.
#[derive(Clone, Debug)]
pub struct DeviceAdmin(Arc<Daemon>);

impl DeviceAdmin {
    /// The service over `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self(daemon)
    }
}

#[tonic::async_trait]
impl DeviceAdminService for DeviceAdmin {
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
