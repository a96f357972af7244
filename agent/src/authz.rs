//! Authorisation: which role each RPC needs, enforced before the call runs.
//!
//! Every request on the mTLS port passes through [`RoleLayer`]. It reads the
//! [`PeerInfo`] of the connection (the verified client certificate) and
//! compares its role with [`required_role`]. A refusal is answered with
//! `PERMISSION_DENIED` without the service ever seeing the request.
//!
//! | RPC | least role |
//! |---|---|
//! | v1 `WendyAgentService/GetAgentVersion`, `/ListHardwareCapabilities` | Viewer |
//! | v2 `WendyDeviceInfoService/GetDeviceInfo`, `/ListHardwareCapabilities` | Viewer |
//! | v1 and v2 `WendyProvisioningService/IsProvisioned` | Viewer |
//! | `grpc.health.v1.Health/Check`, `/Watch` | Viewer |
//! | v1 and v2 `WendyProvisioningService/StartProvisioning` | Admin (always refused: already provisioned) |
//! | `wendyos.agent.v1.DeviceAdminService/Unprovision` | Admin |
//! | v1 `WendyAgentService/UpdateOS`, v2 `WendyOSUpdateService/UpdateOS` | Admin |
//! | `wendyos.agent.v1.OsUpdateService/InstallBundle`, `/GetUpdateStatus`, `/Reboot` | Admin |
//! | v1 `WendyAgentService/UpdateAgent`, v2 `WendyAgentUpdateService/UpdateAgent` | Admin |
//! | v1 and v2 `WendyContainerService/ListContainers`, `/ListVolumes`, `/ListContainerStats` | Viewer |
//! | `wendyos.agent.v1.AppService/ReadAppLogs`, `/ListAppDetails` | Viewer |
//! | v1 `WendyContainerService/CreateContainer`, `/CreateContainerWithProgress` | Member |
//! | v1 and v2 `WendyContainerService/StartContainer`, `/AttachContainer`, `/StopContainer`, `/DeleteContainer`, `/RemoveVolume` | Member |
//! | anything else | refused (`UNIMPLEMENTED`) |
//!
//! v1 and v2 of a published service have the same rows.
//!
//! Roles are ordered Viewer < Member < Admin < Owner; a higher role may do
//! everything a lower one may. A certificate without a role (for example
//! another device's) may call nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use wendy_identity::role::Role;

use crate::tls::PeerInfo;

/// The table above: the least role allowed to call `path`
/// (`/package.Service/Method`), or `None` if nobody may.
pub fn required_role(path: &str) -> Option<Role> {
    use wendy_proto::agent::wendy_agent_service_server::SERVICE_NAME as AGENT;
    use wendy_proto::agent::wendy_container_service_server::SERVICE_NAME as APPS;
    use wendy_proto::agent::wendy_provisioning_service_server::SERVICE_NAME as PROV;
    use wendy_proto::agent_admin::app_service_server::SERVICE_NAME as OUR_APPS;
    use wendy_proto::agent_admin::device_admin_service_server::SERVICE_NAME as ADMIN;
    use wendy_proto::agent_admin::os_update_service_server::SERVICE_NAME as OS_UPDATE;
    use wendy_proto::agent_v2::wendy_agent_update_service_server::SERVICE_NAME as AGENT_UPDATE_V2;
    use wendy_proto::agent_v2::wendy_container_service_server::SERVICE_NAME as APPS_V2;
    use wendy_proto::agent_v2::wendy_device_info_service_server::SERVICE_NAME as INFO_V2;
    use wendy_proto::agent_v2::wendy_os_update_service_server::SERVICE_NAME as OS_UPDATE_V2;
    use wendy_proto::agent_v2::wendy_provisioning_service_server::SERVICE_NAME as PROV_V2;
    const HEALTH: &str = "grpc.health.v1.Health";
    let (service, method) = path.strip_prefix('/')?.rsplit_once('/')?;
    let is = |names: &[&str]| names.contains(&service);
    match method {
        "GetAgentVersion" if is(&[AGENT]) => Some(Role::Viewer),
        "ListHardwareCapabilities" if is(&[AGENT, INFO_V2]) => Some(Role::Viewer),
        "GetDeviceInfo" if is(&[INFO_V2]) => Some(Role::Viewer),
        "IsProvisioned" if is(&[PROV, PROV_V2]) => Some(Role::Viewer),
        "Check" | "Watch" if is(&[HEALTH]) => Some(Role::Viewer),
        "StartProvisioning" if is(&[PROV, PROV_V2]) => Some(Role::Admin),
        "Unprovision" if is(&[ADMIN]) => Some(Role::Admin),
        "UpdateOS" if is(&[AGENT, OS_UPDATE_V2]) => Some(Role::Admin),
        "InstallBundle" | "GetUpdateStatus" | "Reboot" if is(&[OS_UPDATE]) => Some(Role::Admin),
        "UpdateAgent" if is(&[AGENT, AGENT_UPDATE_V2]) => Some(Role::Admin),
        "ListContainers" | "ListVolumes" | "ListContainerStats" if is(&[APPS, APPS_V2]) => Some(Role::Viewer),
        "ReadAppLogs" | "ListAppDetails" if is(&[OUR_APPS]) => Some(Role::Viewer),
        "CreateContainer" | "CreateContainerWithProgress" if is(&[APPS]) => Some(Role::Member),
        "StartContainer" | "AttachContainer" | "StopContainer" | "DeleteContainer" | "RemoveVolume"
            if is(&[APPS, APPS_V2]) =>
        {
            Some(Role::Member)
        }
        _ => None,
    }
}

/// Checks `peer` against the role `path` needs.
pub fn check(path: &str, peer: Option<&PeerInfo>) -> Result<(), tonic::Status> {
    let Some(required) = required_role(path) else {
        return Err(tonic::Status::unimplemented(format!("{path} is not served on this port")));
    };
    let Some(peer) = peer else {
        return Err(tonic::Status::unauthenticated("no verified client certificate on this connection"));
    };
    let who = peer.common_name.as_deref().unwrap_or("<no CN>");
    match peer.role {
        Some(role) if role.allows(required) => Ok(()),
        Some(role) => Err(tonic::Status::permission_denied(format!(
            "{path} requires role {} or higher; the client certificate {who:?} has role {}",
            required.name(),
            role.name()
        ))),
        None => Err(tonic::Status::permission_denied(format!(
            "{path} requires role {}; the client certificate {who:?} carries no WendyOS role",
            required.name()
        ))),
    }
}

/// The tower layer that applies [`check`] to every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleLayer;

impl<S> tower::Layer<S> for RoleLayer {
    type Service = RoleCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RoleCheck { inner }
    }
}

/// The service [`RoleLayer`] makes.
#[derive(Clone, Debug)]
pub struct RoleCheck<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for RoleCheck<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        match check(&path, req.extensions().get::<PeerInfo>()) {
            Ok(()) => {
                let fut = self.inner.call(req);
                Box::pin(fut)
            }
            Err(status) => {
                let peer = req.extensions().get::<PeerInfo>();
                tracing::warn!(
                    path,
                    peer = ?peer.and_then(|p| p.addr),
                    cn = ?peer.and_then(|p| p.common_name.clone()),
                    reason = status.message(),
                    "call refused"
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(role: Option<Role>) -> PeerInfo {
        PeerInfo { addr: None, common_name: Some("u".into()), role, serial: None }
    }

    #[test]
    fn table_is_enforced() {
        let unprov = "/wendyos.agent.v1.DeviceAdminService/Unprovision";
        let version = "/wendy.agent.services.v1.WendyAgentService/GetAgentVersion";
        for viewer in [
            version,
            "/wendy.agent.services.v2.WendyDeviceInfoService/GetDeviceInfo",
            "/wendy.agent.services.v2.WendyDeviceInfoService/ListHardwareCapabilities",
            "/wendy.agent.services.v1.WendyAgentService/ListHardwareCapabilities",
            "/wendy.agent.services.v1.WendyProvisioningService/IsProvisioned",
            "/wendy.agent.services.v2.WendyProvisioningService/IsProvisioned",
            "/grpc.health.v1.Health/Check",
            "/wendyos.agent.v1.AppService/ReadAppLogs",
            "/wendyos.agent.v1.AppService/ListAppDetails",
        ] {
            assert_eq!(required_role(viewer), Some(Role::Viewer), "{viewer}");
        }
        for admin in [
            unprov,
            "/wendy.agent.services.v2.WendyProvisioningService/StartProvisioning",
            "/wendy.agent.services.v1.WendyAgentService/UpdateOS",
            "/wendy.agent.services.v2.WendyOSUpdateService/UpdateOS",
            "/wendyos.agent.v1.OsUpdateService/InstallBundle",
            "/wendyos.agent.v1.OsUpdateService/GetUpdateStatus",
            "/wendyos.agent.v1.OsUpdateService/Reboot",
            "/wendy.agent.services.v1.WendyAgentService/UpdateAgent",
            "/wendy.agent.services.v2.WendyAgentUpdateService/UpdateAgent",
        ] {
            assert_eq!(required_role(admin), Some(Role::Admin), "{admin}");
        }
        for viewer in ["ListContainers", "ListVolumes", "ListContainerStats"] {
            for v in ["v1", "v2"] {
                let path = format!("/wendy.agent.services.{v}.WendyContainerService/{viewer}");
                assert_eq!(required_role(&path), Some(Role::Viewer), "{path}");
            }
        }
        for member in ["StartContainer", "AttachContainer", "StopContainer", "DeleteContainer", "RemoveVolume"] {
            for v in ["v1", "v2"] {
                let path = format!("/wendy.agent.services.{v}.WendyContainerService/{member}");
                assert_eq!(required_role(&path), Some(Role::Member), "{path}");
            }
        }
        for member in ["CreateContainer", "CreateContainerWithProgress"] {
            let path = format!("/wendy.agent.services.v1.WendyContainerService/{member}");
            assert_eq!(required_role(&path), Some(Role::Member), "{path}");
            // v2 has no create; unpublished names stay refused.
            assert_eq!(required_role(&path.replace("v1", "v2")), None);
        }
        for unserved in ["RunContainer", "WriteLayer", "ListLayers", "StreamMCP"] {
            assert_eq!(required_role(&format!("/wendy.agent.services.v1.WendyContainerService/{unserved}")), None);
        }
        let create = "/wendy.agent.services.v1.WendyContainerService/CreateContainer";
        assert_eq!(check(create, Some(&peer(Some(Role::Viewer)))).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert!(check(create, Some(&peer(Some(Role::Member)))).is_ok());
        assert_eq!(required_role("/wendy.agent.services.v1.WendyProvisioningService/Unprovision"), None);
        assert_eq!(required_role("/wendy.agent.services.v2.WendyOSUpdateService/UpdateAgent"), None);
        assert_eq!(required_role("/wendy.agent.services.v2.WendyAgentUpdateService/UpdateOS"), None);
        let update_agent = "/wendy.agent.services.v2.WendyAgentUpdateService/UpdateAgent";
        assert_eq!(
            check(update_agent, Some(&peer(Some(Role::Member)))).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(check(update_agent, Some(&peer(Some(Role::Admin)))).is_ok());
        assert_eq!(required_role("/wendy.agent.services.v2.WendyOSUpdateService/Reboot"), None);
        // Our app calls live only in our package.
        assert_eq!(required_role("/wendy.agent.services.v2.WendyContainerService/ReadAppLogs"), None);
        assert_eq!(required_role("/wendyos.agent.v1.AppService/StopContainer"), None);
        assert!(check(version, Some(&peer(Some(Role::Viewer)))).is_ok());
        let e = check(unprov, Some(&peer(Some(Role::Viewer)))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("requires role Admin"), "{}", e.message());
        assert!(check(unprov, Some(&peer(Some(Role::Admin)))).is_ok());
        assert!(check(unprov, Some(&peer(Some(Role::Owner)))).is_ok());
        assert_eq!(check(version, Some(&peer(None))).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(check(version, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(check("/x.Y/Z", Some(&peer(Some(Role::Owner)))).unwrap_err().code(), tonic::Code::Unimplemented);
        assert_eq!(check("garbage", Some(&peer(Some(Role::Owner)))).unwrap_err().code(), tonic::Code::Unimplemented);
    }
}
