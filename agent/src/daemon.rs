//! The agent's lifecycle: unprovisioned (plaintext) ⇄ provisioned (mTLS).
//!
//! Transitions are serialized by one lock and ordered so that every
//! observable state is consistent:
//!
//! provisioning: enrol → store `provisioning.json` → bind mTLS → advertise
//! the mTLS port with `tls=true` → close plaintext (after this response).
//! A failure before the advertisement leaves the device unprovisioned with
//! plaintext still answering.
//!
//! unprovisioning: bind plaintext → remove the identity → advertise the
//! plaintext port → close mTLS (after this response).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use wendy_identity::bundle::TrustBundle;
use wendy_identity::tls::{Credentials, WendyClientVerifier};
use wendy_proto::agent::wendy_agent_service_server::WendyAgentServiceServer;
use wendy_proto::agent::wendy_provisioning_service_server::WendyProvisioningServiceServer;
use wendy_proto::agent::{IsProvisionedResponse, StartProvisioningRequest};
use wendy_proto::agent_admin::device_admin_service_server::DeviceAdminServiceServer;
use wendy_proto::agent_v2::wendy_agent_update_service_server::WendyAgentUpdateServiceServer as AgentUpdateServer;
use wendy_proto::agent_v2::wendy_device_info_service_server::WendyDeviceInfoServiceServer;
use wendy_proto::agent_v2::wendy_provisioning_service_server::WendyProvisioningServiceServer as ProvisioningV2Server;

use crate::agent_update::AgentUpdate;
use crate::avahi::{Advertisement, Advertiser};
use crate::config::Config;
use crate::device_admin::DeviceAdmin;
use crate::device_info::DeviceInfo;
use crate::provisioning::ProvisioningService;
use crate::state::{self, Loaded, Provisioning};
use crate::sysinfo::{DeviceFacts, Sources};
use crate::tls::SwappableCert;
use crate::{crash, enroll, firstboot, maintain, systemd, Error};

/// How long a closing server may take to finish in-flight calls.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after its port closes a server starts its graceful shutdown, so
/// the call that closed it (StartProvisioning, Unprovision) gets its answer
/// out first.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// The device identity while provisioned.
pub struct Identity {
    /// The stored identity (replaced on renewal).
    pub provisioning: RwLock<Provisioning>,
    /// The server certificate presented at each handshake.
    pub cert: Arc<SwappableCert>,
    /// The client-certificate verifier (CRLs are set on it).
    pub verifier: Arc<WendyClientVerifier>,
}

impl Identity {
    /// A snapshot of the stored identity.
    pub fn current(&self) -> Provisioning {
        self.provisioning.read().map(|p| p.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

struct RunningServer {
    shutdown: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
    accept: Option<JoinHandle<()>>,
    incoming: Option<crate::tls::IncomingGuard>,
}

impl RunningServer {
    /// Whether the server and its accept loop are still running.
    fn alive(&self) -> bool {
        !self.join.is_finished() && self.accept.as_ref().is_some_and(|a| !a.is_finished())
    }

    /// Closes the port now; after [`SHUTDOWN_GRACE`] the server shuts down
    /// gracefully, and in-flight calls get [`DRAIN_TIMEOUT`] to finish. The
    /// returned task ends when the server has (bounded by both).
    fn stop(mut self) -> JoinHandle<()> {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        let shutdown = self.shutdown.take();
        let incoming = self.incoming.take();
        let join = self.join;
        tokio::spawn(async move {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            if let Some(tx) = shutdown {
                let _ = tx.send(());
            }
            drop(incoming);
            let abort = join.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, join).await.is_err() {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "in-flight calls did not finish in time; cut off");
                abort.abort();
            }
        })
    }
}

enum Mode {
    Starting,
    Unprovisioned(RunningServer),
    Provisioned { server: RunningServer, tasks: Vec<JoinHandle<()>> },
}

/// The running agent.
pub struct Daemon {
    config: Config,
    advertiser: Advertiser,
    device_id: String,
    mode: Mutex<Mode>,
    identity: RwLock<Option<Arc<Identity>>>,
    #[cfg(feature = "rauc")]
    updater: Arc<crate::os_update::Updater>,
    agent_updater: Arc<crate::agent_update::AgentUpdater>,
    /// The apps on containerd, once reached (feature `apps`): filled by
    /// [`crate::container_service::connect_loop`] while provisioned.
    #[cfg(feature = "apps")]
    apps: Arc<arc_swap::ArcSwapOption<crate::container_service::Apps>>,
    me: Weak<Daemon>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Daemon {
    /// Prepares the config directory, imports the first-boot seed, loads the
    /// identity and binds the listener that fits it. Returns once listening.
    pub async fn start(config: Config) -> Result<Arc<Self>, Error> {
        state::ensure_dir(&config.config_dir)?;
        for stale in state::remove_stale_temps(&config.config_dir) {
            tracing::warn!(file = %stale.display(), "removed an interrupted write left by a crash (the previous file is intact)");
        }
        firstboot::import(&config.config_partition_dir, &config.config_dir);
        let device_id = firstboot::device_id(&config.config_dir)?;
        #[cfg(feature = "rauc")]
        let updater = {
            let policy = crate::os_update::UpdatePolicy::default();
            let installer = Arc::new(crate::os_update::RaucBundleInstaller::new(policy.install));
            Arc::new(crate::os_update::Updater::new(config.update_dir.clone(), policy, installer))
        };
        let agent_updater = Arc::new(crate::agent_update::AgentUpdater::new(&config));
        let daemon = Arc::new_cyclic(|me| Self {
            advertiser: Advertiser::start(&config.avahi_services_dir),
            config,
            device_id,
            mode: Mutex::new(Mode::Starting),
            identity: RwLock::new(None),
            #[cfg(feature = "rauc")]
            updater,
            agent_updater,
            #[cfg(feature = "apps")]
            apps: Arc::new(arc_swap::ArcSwapOption::empty()),
            me: me.clone(),
        });
        let mut mode = daemon.mode.lock().await;
        let stored = daemon.load_identity();
        *mode = match stored {
            Some((p, credentials)) => {
                let (server, tasks) = daemon.start_mtls(p, &credentials).await?;
                daemon.advertise(true);
                Mode::Provisioned { server, tasks }
            }
            None => {
                let server = daemon.start_plaintext().await?;
                daemon.advertise(false);
                Mode::Unprovisioned(server)
            }
        };
        drop(mode);
        Ok(daemon)
    }

    fn load_identity(&self) -> Option<(Provisioning, Credentials)> {
        let dir = &self.config.config_dir;
        match state::load(dir) {
            Ok(Loaded::Absent) => {
                tracing::info!(dir = %dir.display(), "no provisioning.json: starting unprovisioned");
                None
            }
            Ok(Loaded::SetAside { reason, kept_at }) => {
                tracing::error!(%reason, kept_at = %kept_at.display(), "provisioning.json is corrupt: kept it aside and starting unprovisioned");
                None
            }
            Ok(Loaded::Present(p)) => match enroll::check_identity(&p, None) {
                Ok(credentials) => Some((p, credentials)),
                Err(e) => {
                    let path = self.config.provisioning_file();
                    let kept = state::aside_path(&path, "invalid");
                    let moved = std::fs::rename(&path, &kept).is_ok();
                    tracing::error!(error = %e, kept_at = %kept.display(), moved, "provisioning.json holds no usable identity: starting unprovisioned");
                    None
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "could not read provisioning.json: starting unprovisioned");
                None
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The OS updater.
    #[cfg(feature = "rauc")]
    pub fn updater(&self) -> &Arc<crate::os_update::Updater> {
        &self.updater
    }

    /// The agent updater (`UpdateAgent`).
    pub fn agent_updater(&self) -> &Arc<crate::agent_update::AgentUpdater> {
        &self.agent_updater
    }

    /// The identity, while provisioned.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity.read().ok().and_then(|g| g.clone())
    }

    /// Where the device facts are read from.
    pub fn sources(&self) -> Sources {
        Sources::system(&self.config.os_version_file, &self.config.device_type_file)
    }

    /// What `GetAgentVersion` and `GetDeviceInfo` report.
    pub fn facts(&self) -> DeviceFacts {
        let public_key = self.identity().and_then(|i| {
            let p = i.current();
            wendy_identity::key::PrivateKey::from_pem(&p.key_pem).ok().map(|k| k.public_key_pem())
        });
        #[cfg_attr(not(feature = "apps"), allow(unused_mut))]
        let mut facts = DeviceFacts::read(&self.sources(), public_key);
        #[cfg(feature = "apps")]
        if self.apps.load().is_some() {
            facts.featureset.push(crate::container_service::FEATURE.to_owned());
        }
        facts
    }

    /// `IsProvisioned`.
    pub fn is_provisioned(&self) -> IsProvisionedResponse {
        use wendy_proto::agent::is_provisioned_response::Response;
        use wendy_proto::agent::{NotProvisionedResponse, ProvisionedResponse};
        let response = match self.identity() {
            Some(i) => {
                let p = i.current();
                Response::Provisioned(ProvisionedResponse {
                    cloud_host: p.cloud_host.clone(),
                    organization_id: p.org_id,
                    asset_id: p.asset_id,
                })
            }
            None => Response::NotProvisioned(NotProvisionedResponse {}),
        };
        IsProvisionedResponse { response: Some(response) }
    }

    /// `StartProvisioning`: see the module docs for the order of steps.
    pub async fn provision(&self, request: StartProvisioningRequest) -> Result<(), tonic::Status> {
        let mut mode = self
            .mode
            .try_lock()
            .map_err(|_| tonic::Status::aborted("provisioning or unprovisioning is already in progress"))?;
        if !matches!(*mode, Mode::Unprovisioned(_)) {
            return Err(tonic::Status::failed_precondition(
                "the device is already provisioned; an Admin must call Unprovision over mTLS first",
            ));
        }
        let req = enroll::validate(&request)?;
        tracing::info!(org = req.organization_id, asset = req.asset_id, cloud_host = %req.cloud_host, "provisioning");
        let p = async {
            let trust = enroll::trust(&req, &self.config)?;
            enroll::enroll(&req, &trust, self.config.device_key_algorithm).await
        }
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "provisioning failed"))?;
        let credentials = enroll::check_identity(&p, None)
            .map_err(|e| tonic::Status::failed_precondition(format!("pki-core returned an unusable identity: {e}")))?;
        state::store(&self.config.config_dir, &p).map_err(|e| {
            tracing::error!(error = %e, "could not store provisioning.json");
            tonic::Status::internal(format!("could not store provisioning.json: {e}; the device stays unprovisioned"))
        })?;
        if let Some(name) = &req.device_name {
            if let Err(e) = firstboot::store_name(&self.config.config_dir, name) {
                tracing::warn!(error = %e, "could not store the device name");
            }
        }
        let (server, tasks) = match self.start_mtls(p, &credentials).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "could not start mTLS; rolling back to unprovisioned");
                *self.identity.write().unwrap_or_else(|p| p.into_inner()) = None;
                if let Err(e) = state::remove(&self.config.config_dir) {
                    tracing::error!(error = %e, "could not remove provisioning.json after the failed mTLS start");
                }
                return Err(tonic::Status::unavailable(format!(
                    "could not start mTLS on port {}: {e}; the device stays unprovisioned",
                    self.config.mtls_port()
                )));
            }
        };
        crash::point("after-mtls-bind");
        self.advertise(true);
        crash::point("after-advertise");
        if let Mode::Unprovisioned(plaintext) = std::mem::replace(&mut *mode, Mode::Provisioned { server, tasks }) {
            drop(plaintext.stop());
        }
        tracing::info!(port = self.config.mtls_port(), "provisioned: serving mTLS only");
        systemd::notify_status("provisioned");
        Ok(())
    }

    /// `Unprovision`: see the module docs for the order of steps.
    pub async fn unprovision(&self) -> Result<(), tonic::Status> {
        let mut mode = self
            .mode
            .try_lock()
            .map_err(|_| tonic::Status::aborted("provisioning or unprovisioning is already in progress"))?;
        if !matches!(*mode, Mode::Provisioned { .. }) {
            return Err(tonic::Status::failed_precondition("the device is not provisioned"));
        }
        let plaintext = self.start_plaintext().await.map_err(|e| {
            tonic::Status::unavailable(format!(
                "could not reopen plaintext on port {}: {e}; still provisioned",
                self.config.port
            ))
        })?;
        if let Err(e) = state::remove(&self.config.config_dir) {
            drop(plaintext.stop());
            return Err(tonic::Status::internal(format!("could not remove the identity: {e}; still provisioned")));
        }
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.advertise(false);
        if let Mode::Provisioned { server, tasks } = std::mem::replace(&mut *mode, Mode::Unprovisioned(plaintext)) {
            // The supervisor (a provisioned-mode task) goes first, so it
            // cannot start again what is stopped below.
            tasks.iter().for_each(JoinHandle::abort);
            #[cfg(feature = "apps")]
            if let Some(apps) = self.apps.swap(None) {
                tokio::spawn(async move { apps.stop_all().await });
            }
            drop(server.stop());
        }
        tracing::info!(port = self.config.port, "unprovisioned: identity removed, plaintext reopened");
        systemd::notify_status("unprovisioned");
        Ok(())
    }

    /// Replaces the identity after a renewal, if `old` is still current.
    pub(crate) async fn renewed(&self, old: &Arc<Identity>, new: Provisioning) -> Result<(), Error> {
        let _mode = self.mode.lock().await;
        match self.identity() {
            Some(current) if Arc::ptr_eq(&current, old) => {}
            _ => return Ok(()),
        }
        let credentials = enroll::check_identity(&new, None)?;
        state::store(&self.config.config_dir, &new)?;
        old.cert.swap(&credentials)?;
        *old.provisioning.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    fn advertise(&self, tls: bool) {
        let name = firstboot::device_name(&self.config.config_dir);
        let ad = Advertisement {
            id: self.device_id.clone(),
            name: name.clone(),
            display_name: name,
            port: if tls { self.config.mtls_port() } else { self.config.port },
            tls,
        };
        if let Err(e) = self.advertiser.publish(ad) {
            tracing::warn!(error = %e, "could not write the Avahi service file; the device is not advertised");
        }
    }

    /// Withdraws the advertisement (shutdown).
    pub fn withdraw(&self) {
        self.advertiser.withdraw();
    }

    fn me(&self) -> Result<Arc<Daemon>, Error> {
        self.me.upgrade().ok_or(Error::Config("the agent is shutting down".into()))
    }

    async fn bind(&self, port: u16) -> Result<TcpListener, Error> {
        let addr = SocketAddr::new(self.config.bind, port);
        wendy_net::listener::bind(addr).map_err(|source| Error::Bind { addr, source })
    }

    async fn start_plaintext(&self) -> Result<RunningServer, Error> {
        let listener = self.bind(self.config.port).await?;
        let me = self.me()?;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let services = Services::new(&me, &health_reporter).await;
        let (tx, rx) = oneshot::channel::<()>();
        let router = services.published(server().add_service(health));
        let (incoming, accept, guard) = crate::tls::tcp_accept_loop(listener);
        let port = self.config.port;
        let join = tokio::spawn(async move {
            let _keep = health_reporter;
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, async { rx.await.unwrap_or(()) }).await {
                tracing::error!(error = %e, "plaintext server failed");
            }
            tracing::info!(port, "plaintext port closed");
        });
        tracing::info!(port, "plaintext gRPC listening (unprovisioned)");
        Ok(RunningServer { shutdown: Some(tx), join, accept: Some(accept), incoming: Some(guard) })
    }

    async fn start_mtls(
        &self,
        p: Provisioning,
        credentials: &Credentials,
    ) -> Result<(RunningServer, Vec<JoinHandle<()>>), Error> {
        let bundle = TrustBundle::from_pem(&p.chain_pem)?;
        // A peer can cause these (after a handshake slot and a signature):
        // each reason once per interval, the repeats counted.
        let budget = wendy_net::refusals::LogBudget::new(8, wendy_net::limits::REFUSAL_LOG_INTERVAL);
        let verifier = Arc::new(WendyClientVerifier::new(bundle, true).with_rejection_hook(Arc::new(move |e| {
            let (log, suppressed) = budget.allow(&e.to_string());
            if suppressed > 0 {
                tracing::warn!(suppressed, "client certificates refused without a log line in the last interval");
            }
            if log {
                tracing::warn!(reason = %e, "client certificate refused");
            }
        })));
        let cert = Arc::new(SwappableCert::new(credentials)?);
        let config = Arc::new(crate::tls::server_config(credentials, cert.clone(), verifier.clone())?);
        let identity = Arc::new(Identity { provisioning: RwLock::new(p), cert, verifier });
        maintain::apply_stored_crl(&identity, &self.config.crl_file());
        let listener = self.bind(self.config.mtls_port()).await?;
        let me = self.me()?;
        #[cfg(feature = "apps")]
        let registry_tls = config.clone();
        let (incoming, accept, guard) = crate::tls::accept_loop(listener, config);
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let services = Services::new(&me, &health_reporter).await;
        health_reporter.set_serving::<DeviceAdminServiceServer<DeviceAdmin>>().await;
        let (tx, rx) = oneshot::channel::<()>();
        #[cfg(feature = "rauc")]
        let os_update = crate::os_update::OsUpdate::new(me.updater.clone());
        health_reporter.set_serving::<AgentUpdateServer<AgentUpdate>>().await;
        let router = services
            .published(server().layer(crate::authz::RoleLayer).add_service(health))
            .add_service(wendy_proto::limited!(AgentUpdateServer::new(AgentUpdate::new(me.clone()))))
            .add_service(wendy_proto::limited!(DeviceAdminServiceServer::new(DeviceAdmin::new(me))));
        #[cfg(feature = "rauc")]
        let router = router
            .add_service(wendy_proto::limited!(
                wendy_proto::agent_v2::wendy_os_update_service_server::WendyOsUpdateServiceServer::new(
                    os_update.clone()
                )
            ))
            .add_service(wendy_proto::limited!(
                wendy_proto::agent_admin::os_update_service_server::OsUpdateServiceServer::new(os_update)
            ));
        // Apps: the container service is always registered (UNAVAILABLE
        // until containerd answers); only mTLS, never the plaintext port.
        #[cfg(feature = "apps")]
        let router = {
            use crate::container_service::ContainerService;
            use wendy_proto::agent::wendy_container_service_server::WendyContainerServiceServer as AppsV1;
            use wendy_proto::agent_v2::wendy_container_service_server::WendyContainerServiceServer as AppsV2;
            health_reporter.set_serving::<AppsV1<ContainerService>>().await;
            use wendy_proto::agent_admin::app_service_server::AppServiceServer as OurApps;
            health_reporter.set_serving::<AppsV2<ContainerService>>().await;
            health_reporter.set_serving::<OurApps<ContainerService>>().await;
            let apps = ContainerService::new(self.apps.clone());
            router
                .add_service(wendy_proto::limited!(AppsV1::new(apps.clone())))
                .add_service(wendy_proto::limited!(AppsV2::new(apps.clone())))
                .add_service(wendy_proto::limited!(OurApps::new(apps)))
        };
        let port = self.config.mtls_port();
        let join = tokio::spawn(async move {
            let _keep = health_reporter;
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, async { rx.await.unwrap_or(()) }).await {
                tracing::error!(error = %e, "mTLS server failed");
            }
            tracing::info!(port, "mTLS port closed");
        });
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = Some(identity.clone());
        #[cfg_attr(not(feature = "apps"), allow(unused_mut))]
        let mut tasks = vec![
            tokio::spawn(maintain::renewal_loop(self.me.clone(), identity.clone())),
            tokio::spawn(maintain::crl_loop(identity, self.config.crl_file(), self.config.crl_refresh)),
        ];
        #[cfg(feature = "apps")]
        tasks.push(tokio::spawn(crate::container_service::connect_loop(
            self.apps.clone(),
            self.config.containerd_socket.clone(),
            crate::containers::runtime::RuntimeOptions {
                log_dir: self.config.app_log_dir(),
                volumes_root: self.config.volumes_dir(),
            },
        )));
        #[cfg(feature = "apps")]
        if let Some(registry) = self.start_registry(&registry_tls).await {
            tasks.push(registry);
        }
        tracing::info!(port, "mTLS gRPC listening (provisioned)");
        Ok((RunningServer { shutdown: Some(tx), join, accept: Some(accept), incoming: Some(guard) }, tasks))
    }

    /// The OCI registry on its own port with the mTLS port's TLS
    /// ([`crate::registry::serve`]), as a task that closes the port when
    /// aborted. A port that cannot be bound is logged, and everything else
    /// is served.
    #[cfg(feature = "apps")]
    async fn start_registry(&self, tls: &rustls::ServerConfig) -> Option<JoinHandle<()>> {
        use crate::registry::serve::{serve, Backend};
        let port = self.config.registry_port;
        let listener = match self.bind(port).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(port, error = %e, "the OCI registry cannot listen: `wendy run` cannot push to this device");
                return None;
            }
        };
        let space = crate::registry::quota::DataPartition {
            dir: self.config.config_dir.clone(),
            reserve: self.config.data_reserve,
        };
        let backend = std::sync::Arc::new(Backend::new(self.apps.clone(), space, crate::registry::Limits::default()));
        let serving = serve(listener, tls, backend);
        tracing::info!(port, "OCI registry listening (mTLS)");
        Some(tokio::spawn(async move {
            let _serving = serving;
            std::future::pending::<()>().await
        }))
    }

    /// Stops the server (shutdown) and waits for its drain, at most
    /// [`SHUTDOWN_GRACE`] + [`DRAIN_TIMEOUT`].
    pub async fn stop(&self) {
        let mut mode = self.mode.lock().await;
        let drained = match std::mem::replace(&mut *mode, Mode::Starting) {
            Mode::Unprovisioned(s) => Some(s.stop()),
            Mode::Provisioned { server, tasks } => {
                tasks.iter().for_each(JoinHandle::abort);
                Some(server.stop())
            }
            Mode::Starting => None,
        };
        drop(mode);
        if let Some(drained) = drained {
            let _ = drained.await;
        }
    }

    /// Whether the current server and its accept loop are alive. While a
    /// transition holds the lock (bounded by pki-core's call timeouts) the
    /// answer is yes; after [`Daemon::stop`] it is no.
    pub fn is_serving(&self) -> bool {
        match self.mode.try_lock() {
            Ok(mode) => match &*mode {
                Mode::Unprovisioned(s) | Mode::Provisioned { server: s, .. } => s.alive(),
                Mode::Starting => false,
            },
            Err(_) => true,
        }
    }
}

/// A gRPC server with the device's connection limits (one place for both ports).
fn server() -> wendy_net::server::LimitedServer {
    wendy_net::server::builder(wendy_net::limits::ServerLimits::DEVICE)
}

/// The published services both ports serve (v1 and v2 side by side).
struct Services {
    info: DeviceInfo,
    provisioning: ProvisioningService,
}

impl Services {
    /// The services over `daemon`, each reported SERVING to `health`.
    async fn new(daemon: &Arc<Daemon>, health: &tonic_health::server::HealthReporter) -> Self {
        health.set_serving::<WendyAgentServiceServer<DeviceInfo>>().await;
        health.set_serving::<WendyDeviceInfoServiceServer<DeviceInfo>>().await;
        health.set_serving::<WendyProvisioningServiceServer<ProvisioningService>>().await;
        health.set_serving::<ProvisioningV2Server<ProvisioningService>>().await;
        Self { info: DeviceInfo::new(daemon.clone()), provisioning: ProvisioningService::new(daemon.clone()) }
    }

    /// Adds them to `router`, each with the message-size limits.
    fn published<L>(self, router: tonic::transport::server::Router<L>) -> tonic::transport::server::Router<L> {
        router
            .add_service(wendy_proto::limited!(WendyAgentServiceServer::new(self.info.clone())))
            .add_service(wendy_proto::limited!(WendyDeviceInfoServiceServer::new(self.info)))
            .add_service(wendy_proto::limited!(WendyProvisioningServiceServer::new(self.provisioning.clone())))
            .add_service(wendy_proto::limited!(ProvisioningV2Server::new(self.provisioning)))
    }
}
