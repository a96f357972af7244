//! What the device is: `wendy.agent.services.v1.WendyAgentService`
//! (`GetAgentVersion`, `ListHardwareCapabilities`; its other published
//! methods answer UNIMPLEMENTED) and `wendy.agent.services.v2.WendyDeviceInfoService`.
//! Both read the same facts ([`crate::sysinfo`]). Role: Viewer.
//!
//! v1's `UpdateOS` is here too, because the published v1 service has it;
//! it hands over to the OS updater (`crate::os_update`, feature `rauc`),
//! only over mTLS, role Admin. So is v1's `UpdateAgent`, which hands over
//! to [`crate::agent_update`] (development images only).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wendy_proto::agent::list_hardware_capabilities_response::HardwareCapability;
use wendy_proto::agent::wendy_agent_service_server::WendyAgentService;
use wendy_proto::agent::{
    GetAgentVersionRequest, GetAgentVersionResponse, ListHardwareCapabilitiesRequest, ListHardwareCapabilitiesResponse,
};
use wendy_proto::agent_v2 as v2;
use wendy_proto::agent_v2::wendy_device_info_service_server::WendyDeviceInfoService;

use crate::daemon::Daemon;

/// Longest category filter accepted.
const MAX_FILTER: usize = 64;

/// Both device-information services, over the daemon.
#[derive(Clone, Debug)]
pub struct DeviceInfo(Arc<Daemon>);

impl DeviceInfo {
    /// The services over `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self(daemon)
    }

    /// The capabilities (v1 shape), after checking the filter.
    fn capabilities(&self, filter: Option<String>) -> Result<Vec<HardwareCapability>, Status> {
        let filter = filter.map(|f| f.trim().to_owned()).filter(|f| !f.is_empty());
        if filter.as_ref().is_some_and(|f| f.len() > MAX_FILTER || !f.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(Status::invalid_argument(format!(
                "category_filter must be at most {MAX_FILTER} printable ASCII characters"
            )));
        }
        Ok(crate::sysinfo::capabilities(&self.0.sources(), filter.as_deref()))
    }
}

#[tonic::async_trait]
impl WendyAgentService for DeviceInfo {
    async fn get_agent_version(
        &self,
        _request: Request<GetAgentVersionRequest>,
    ) -> Result<Response<GetAgentVersionResponse>, Status> {
        Ok(Response::new(self.0.facts().v1()))
    }

    async fn list_hardware_capabilities(
        &self,
        request: Request<ListHardwareCapabilitiesRequest>,
    ) -> Result<Response<ListHardwareCapabilitiesResponse>, Status> {
        let capabilities = self.capabilities(request.into_inner().category_filter)?;
        Ok(Response::new(ListHardwareCapabilitiesResponse { capabilities }))
    }

    type UpdateOSStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<wendy_proto::agent::UpdateOsResponse, Status>> + Send + 'static>,
    >;

    async fn update_os(
        &self,
        request: Request<wendy_proto::agent::UpdateOsRequest>,
    ) -> Result<Response<Self::UpdateOSStream>, Status> {
        // The plaintext port has no peers with certificates, and no role
        // layer: an unprovisioned device is never updated over it.
        if request.extensions().get::<crate::tls::PeerInfo>().is_none() {
            return Err(Status::permission_denied(
                "UpdateOS is served only over mTLS, to an Admin: provision the device first",
            ));
        }
        #[cfg(feature = "rauc")]
        {
            crate::os_update::log_caller(&request, "UpdateOS (v1)");
            let events = self.0.updater().from_url(&request.into_inner().artifact_url)?;
            Ok(Response::new(crate::os_update::v1_stream(events)))
        }
        #[cfg(not(feature = "rauc"))]
        {
            Err(Status::unimplemented("this agent is built without OS updates (Cargo feature rauc)"))
        }
    }

    type UpdateAgentStream = crate::agent_update::ResponseStream<wendy_proto::agent::UpdateAgentResponse>;

    async fn update_agent(
        &self,
        request: Request<tonic::Streaming<wendy_proto::agent::UpdateAgentRequest>>,
    ) -> Result<Response<Self::UpdateAgentStream>, Status> {
        use wendy_proto::agent::update_agent_response::{ResponseType, Updated};
        crate::agent_update::serve(self.0.agent_updater(), request, "UpdateAgent (v1)", || {
            wendy_proto::agent::UpdateAgentResponse { response_type: Some(ResponseType::Updated(Updated {})) }
        })
    }
}

#[tonic::async_trait]
impl WendyDeviceInfoService for DeviceInfo {
    async fn get_device_info(
        &self,
        _request: Request<v2::GetDeviceInfoRequest>,
    ) -> Result<Response<v2::GetDeviceInfoResponse>, Status> {
        Ok(Response::new(self.0.facts().v2()))
    }

    async fn list_hardware_capabilities(
        &self,
        request: Request<v2::ListHardwareCapabilitiesRequest>,
    ) -> Result<Response<v2::ListHardwareCapabilitiesResponse>, Status> {
        let capabilities = self
            .capabilities(request.into_inner().category_filter)?
            .into_iter()
            .map(|c| v2::list_hardware_capabilities_response::HardwareCapability {
                category: c.category,
                device_path: c.device_path,
                description: c.description,
                properties: c.properties,
            })
            .collect();
        Ok(Response::new(v2::ListHardwareCapabilitiesResponse { capabilities }))
    }
}
