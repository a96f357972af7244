//! The registry's transport on the device: HTTPS with client certificates
//! on [`Config::registry_port`](crate::config::Config::registry_port)
//! (`WENDY_REGISTRY_PORT`, default 5000), only while provisioned.
//!
//! - TLS is the mTLS port's: the device's own certificate (swapped on
//!   renewal), client certificates verified against our CA and the CRL.
//!   ALPN offers `h2` and `http/1.1`: OCI clients speak either.
//! - Connections come through the shared capped accept loop
//!   ([`wendy_net::listener`]) with [`Limits::registry`]: its own cap of
//!   [`REGISTRY_MAX_CONNECTIONS`], per-peer and handshake caps and the
//!   handshake deadline. HTTP/1.1 has no preface to wait for, so the first
//!   request is bounded by hyper's header read timeout instead
//!   ([`HEADER_READ_TIMEOUT`]).
//! - Each request carries the connection's [`PeerInfo`]; [`RoleCheck`]
//!   maps it onto the registry's roles (Viewer pulls, Member pushes).
//! - The store is containerd's content store, over the apps' connection:
//!   until the agent has reached containerd every request is answered 503
//!   (code `UNKNOWN`) and nothing is written anywhere.
//!
//! [`REGISTRY_MAX_CONNECTIONS`]: wendy_net::limits::REGISTRY_MAX_CONNECTIONS
//! [`Limits::registry`]: wendy_net::limits::Limits::registry

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use wendy_identity::role::Role;
use wendy_net::listener::IncomingGuard;

use super::errors::{ErrorCode, RegistryError};
use super::handler::ResponseBody;
use super::names::RepoName;
use super::quota::DataPartition;
use super::{Access, Action, Authorize, Limits, Registry};
use crate::container_service::Apps;
use crate::containers::containerd::ContainerdStore;
use crate::tls::PeerInfo;

/// The longest a client may take to send a request's headers (bounds a
/// connection that never sends a request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How often idle upload sessions are dropped.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(60);

/// The registry of the device: containerd's content store, the data
/// partition's space, the certificate's role.
pub type DeviceRegistry = Registry<ContainerdStore, DataPartition, RoleCheck>;

/// Viewer may pull, Member (and higher) may push; a certificate without a
/// role may do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleCheck;

impl RoleCheck {
    /// The least role for `action`.
    pub fn required(action: Action) -> Role {
        match action {
            Action::Pull => Role::Viewer,
            Action::Push => Role::Member,
        }
    }
}

impl Authorize for RoleCheck {
    fn check(&self, request: &http::request::Parts, _: Option<&RepoName>, action: Action) -> Access {
        let Some(peer) = request.extensions.get::<PeerInfo>() else { return Access::Unauthenticated };
        match peer.role {
            Some(role) if role >= Self::required(action) => Access::Granted,
            _ => Access::Forbidden,
        }
    }
}

/// The registry over whichever containerd connection the apps hold now: one
/// [`DeviceRegistry`] per connection, so upload sessions live as long as it.
pub struct Backend {
    apps: Arc<ArcSwapOption<Apps>>,
    space: DataPartition,
    limits: Limits,
    current: Mutex<Option<(Arc<Apps>, Arc<DeviceRegistry>)>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("space", &self.space).field("limits", &self.limits).finish()
    }
}

impl Backend {
    /// A backend over the apps' slot (filled once containerd answers).
    pub fn new(apps: Arc<ArcSwapOption<Apps>>, space: DataPartition, limits: Limits) -> Self {
        Self { apps, space, limits, current: Mutex::new(None) }
    }

    /// The registry for the current containerd connection, if there is one.
    pub fn registry(&self) -> Option<Arc<DeviceRegistry>> {
        let apps = self.apps.load_full()?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((held, registry)) = current.as_ref() {
            if Arc::ptr_eq(held, &apps) {
                return Some(registry.clone());
            }
        }
        let store = apps.runtime().store().clone();
        let registry = Arc::new(Registry::new(store, self.space.clone(), RoleCheck, self.limits.clone()));
        *current = Some((apps, registry.clone()));
        Some(registry)
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, mut request: Request<hyper::body::Incoming>, peer: PeerInfo) -> Response<ResponseBody> {
        request.extensions_mut().insert(peer);
        match self.registry() {
            Some(registry) => registry.handle(request).await,
            None => unavailable(),
        }
    }
}

/// 503 with the spec's `UNKNOWN` code: containerd is not reached.
fn unavailable() -> Response<ResponseBody> {
    let e = RegistryError::new(ErrorCode::Unknown, "containerd is not reachable yet: apps are not available")
        .with_status(StatusCode::SERVICE_UNAVAILABLE);
    super::handler::error_response(e)
}

/// The running listener: abort [`Serving::stop`] to close the port.
#[derive(Debug)]
pub struct Serving {
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
    expire: JoinHandle<()>,
}

impl Serving {
    /// Closes the port and ends every connection.
    pub fn stop(&self) {
        self.accept.abort();
        self.serve.abort();
        self.expire.abort();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `backend` on `listener` with TLS `config` (the mTLS port's; ALPN
/// is set here).
pub fn serve(listener: TcpListener, config: &rustls::ServerConfig, backend: Arc<Backend>) -> Serving {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let accepting =
        wendy_net::listener::tls(listener, acceptor, wendy_net::limits::Limits::registry(), "agent-registry");
    let guard: IncomingGuard = accepting.guard;
    let mut incoming = accepting.incoming;
    let conns = backend.clone();
    let serve = tokio::spawn(async move {
        let _guard = guard;
        while let Some(conn) = incoming.next().await {
            let Ok(conn) = conn else { continue };
            let peer = crate::tls::peer_info(&conn);
            let backend = conns.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let backend = backend.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, std::convert::Infallible>(backend.handle(req, peer).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
                if let Err(e) = builder.serve_connection(TokioIo::new(conn), service).await {
                    tracing::debug!(error = %e, "registry connection ended");
                }
            });
        }
    });
    let expire = tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRE_INTERVAL);
        loop {
            tick.tick().await;
            if let Some(registry) = backend.registry() {
                registry.expire_sessions().await;
            }
        }
    });
    Serving { accept: accepting.task, serve, expire }
}
