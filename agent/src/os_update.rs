//! OS updates: the published `UpdateOS` (v1 `WendyAgentService`, v2
//! `WendyOSUpdateService`) and our own `wendyos.agent.v1.OsUpdateService`
//! (`InstallBundle`, `GetUpdateStatus`, `Reboot`). Served only over mTLS;
//! role Admin ([`crate::authz`]).
//!
//! An update, from a URL or an upload:
//! 1. One at a time: a second one is refused while the first runs
//!    (`FAILED_PRECONDITION`).
//! 2. The bundle is staged on the data partition ([`stage`]): free space is
//!    checked first, a reserve is kept, nothing partial stays behind.
//!    Downloads have deadlines ([`fetch`]); uploads carry their size and
//!    SHA-256, both checked.
//! 3. RAUC installs it into the other slot over D-Bus (`InstallBundle`).
//!    RAUC checks the signature against the code-signing keyring, the
//!    `compatible` and the bundle's integrity before it writes the slot;
//!    its `Progress` property is streamed as `Progress{installing, %}`.
//! 4. The result is recorded ([`record`]) and streamed: `Completed
//!    {reboot_required: true}` or `Failed{error_message}`. The reboot is
//!    the caller's (`Reboot`), so it can update several devices and reboot
//!    them when it chooses.
//!
//! After the reboot, [`crate::rauc`]'s health gate marks the new slot good
//! (record `booted`), or marks it bad and reboots into the old one (record
//! `rolled_back`), which `GetUpdateStatus` reports.

pub mod fetch;
pub mod record;
pub mod stage;

use crate::busy::{Busy, OneAtATime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Future, Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use wendy_proto::agent_admin::get_update_status_response::Slot;
use wendy_proto::agent_admin::install_bundle_request::RequestType;
use wendy_proto::agent_admin::os_update_service_server::OsUpdateService;
use wendy_proto::agent_admin::{
    GetUpdateStatusRequest, GetUpdateStatusResponse, InstallBundleRequest, InstallBundleResponse, RebootRequest,
    RebootResponse,
};
use wendy_proto::agent_v2::wendy_os_update_service_server::WendyOsUpdateService;
use wendy_proto::agent_v2::{UpdateOsRequest, UpdateOsResponse};

use crate::dbus::{RaucInstallerProxy, SystemdManagerProxy};
use fetch::{ArtifactUrl, FetchPolicy};
use record::{Outcome, Record};
use stage::{Staged, Staging};

/// Phase names in `Progress.phase`.
pub mod phase {
    /// The agent downloads `artifact_url`.
    pub const DOWNLOADING: &str = "downloading";
    /// The client uploads the bundle.
    pub const UPLOADING: &str = "uploading";
    /// RAUC checks and installs the bundle.
    pub const INSTALLING: &str = "installing";
}

/// The systemd target a clean reboot starts.
const REBOOT_TARGET: &str = "reboot.target";

/// How long after answering `Reboot` the reboot starts.
const REBOOT_DELAY: Duration = Duration::from_millis(500);

/// Limits of an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// Bytes of the data partition a bundle may never take: the agent's
    /// state and the apps need room after the download.
    pub reserve: u64,
    /// Download deadlines.
    pub fetch: FetchPolicy,
    /// The longest pause between two upload messages.
    pub upload_stall: Duration,
    /// RAUC's whole install.
    pub install: Duration,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            reserve: crate::config::DEFAULT_DATA_RESERVE,
            fetch: FetchPolicy::default(),
            upload_stall: Duration::from_secs(60),
            install: Duration::from_secs(30 * 60),
        }
    }
}

/// One step of an update, as both response shapes carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Progress in a phase ([`phase`]).
    Progress {
        /// The phase.
        phase: &'static str,
        /// 0-100.
        percent: i32,
    },
    /// Installed; the new slot boots at the next reboot.
    Completed,
    /// The update failed; the running slot is unchanged.
    Failed(String),
}

/// The same mapping for each package's copy of the response: v1, v2 and
/// ours have the same fields under their own generated types.
macro_rules! event_to_response {
    ($event:expr, $($module:ident)::+, $response:ident) => {{
        use $($module)::+ as m;
        let response_type = match $event {
            Event::Progress { phase, percent } => {
                m::ResponseType::Progress(m::Progress { phase: (*phase).to_owned(), percent: *percent })
            }
            Event::Completed => m::ResponseType::Completed(m::Completed { reboot_required: true }),
            Event::Failed(message) => m::ResponseType::Failed(m::Failed { error_message: message.clone() }),
        };
        $response { response_type: Some(response_type) }
    }};
}

impl Event {
    /// The published v2 response.
    pub fn to_v2(&self) -> UpdateOsResponse {
        event_to_response!(self, wendy_proto::agent_v2::update_os_response, UpdateOsResponse)
    }

    /// Our `InstallBundle` response (the same fields).
    pub fn to_ours(&self) -> InstallBundleResponse {
        event_to_response!(self, wendy_proto::agent_admin::install_bundle_response, InstallBundleResponse)
    }

    /// The published v1 response (the same fields).
    pub fn to_v1(&self) -> wendy_proto::agent::UpdateOsResponse {
        use wendy_proto::agent::UpdateOsResponse as V1Response;
        event_to_response!(self, wendy_proto::agent::update_os_response, V1Response)
    }
}

/// What RAUC reports after an install: the slot written and the bundle's
/// version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Boot name of the slot written (`A`, `B`).
    pub slot: String,
    /// The bundle's version.
    pub version: String,
}

/// A boxed future, for [`BundleInstaller`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Installs a staged bundle: RAUC over D-Bus in the daemon
/// ([`RaucBundleInstaller`]), a fake in tests.
pub trait BundleInstaller: Send + Sync + std::fmt::Debug {
    /// Installs `bundle`, sending [`Event::Progress`] to `progress` (best
    /// effort); the error is the message for the caller.
    fn install<'a>(
        &'a self,
        bundle: &'a Path,
        progress: mpsc::Sender<Event>,
    ) -> BoxFuture<'a, Result<Installed, String>>;
}

/// [`BundleInstaller`] over `de.pengutronix.rauc.Installer` on the system bus.
#[derive(Clone, Debug)]
pub struct RaucBundleInstaller {
    deadline: Duration,
}

impl RaucBundleInstaller {
    /// An installer whose installs fail after `deadline`.
    pub fn new(deadline: Duration) -> Self {
        Self { deadline }
    }

    async fn run(&self, bundle: &Path, progress: mpsc::Sender<Event>) -> Result<Installed, String> {
        let source = bundle.to_str().ok_or_else(|| format!("bundle path {} is not UTF-8", bundle.display()))?;
        let conn = zbus::Connection::system().await.map_err(|e| format!("cannot reach the system D-Bus: {e}"))?;
        let rauc = RaucInstallerProxy::new(&conn).await.map_err(|e| format!("cannot reach RAUC: {e}"))?;
        let mut completed =
            rauc.receive_completed().await.map_err(|e| format!("cannot subscribe to RAUC's Completed signal: {e}"))?;
        let mut changes = rauc.receive_progress_changed().await;
        rauc.install_bundle(source, HashMap::new()).await.map_err(|e| format!("RAUC refused to install: {e}"))?;
        let wait = async {
            loop {
                tokio::select! {
                    signal = completed.next() => {
                        let Some(signal) = signal else { return Err("RAUC left the bus during the install".to_owned()) };
                        return signal.args().map(|a| a.result).map_err(|e| format!("RAUC's Completed signal: {e}"));
                    }
                    Some(change) = changes.next() => {
                        if let Ok((percent, _message, _depth)) = change.get().await {
                            let _ = progress.try_send(Event::Progress { phase: phase::INSTALLING, percent: percent.clamp(0, 100) });
                        }
                    }
                }
            }
        };
        let result = tokio::time::timeout(self.deadline, wait)
            .await
            .map_err(|_| format!("RAUC did not finish the install within {:?}", self.deadline))??;
        if result != 0 {
            // Read uncached: the cached proxy may not have seen RAUC's
            // PropertiesChanged for LastError yet when Completed arrives.
            let error = match RaucInstallerProxy::builder(&conn)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
            {
                Ok(fresh) => fresh.last_error().await.unwrap_or_default(),
                Err(_) => rauc.last_error().await.unwrap_or_default(),
            };
            return Err(if error.is_empty() {
                format!("RAUC could not install the bundle (result {result})")
            } else {
                format!("RAUC refused the bundle: {error}")
            });
        }
        let primary = rauc.get_primary().await.unwrap_or_default();
        let slots = rauc.get_slot_status().await.unwrap_or_default();
        let written = slots.iter().find(|(name, _)| *name == primary).map(|(_, props)| slot_of(&primary, props));
        Ok(written.map_or_else(Installed::default, |s| Installed { slot: s.bootname, version: s.bundle_version }))
    }
}

impl BundleInstaller for RaucBundleInstaller {
    fn install<'a>(
        &'a self,
        bundle: &'a Path,
        progress: mpsc::Sender<Event>,
    ) -> BoxFuture<'a, Result<Installed, String>> {
        Box::pin(self.run(bundle, progress))
    }
}

/// A string property of a RAUC slot, or empty.
fn prop(props: &HashMap<String, zbus::zvariant::OwnedValue>, key: &str) -> String {
    match props.get(key).map(|v| &**v) {
        Some(zbus::zvariant::Value::Str(s)) => s.as_str().to_owned(),
        _ => String::new(),
    }
}

/// The wire form of one slot of `GetSlotStatus`.
fn slot_of(name: &str, props: &HashMap<String, zbus::zvariant::OwnedValue>) -> Slot {
    Slot {
        name: name.to_owned(),
        bootname: prop(props, "bootname"),
        state: prop(props, "state"),
        boot_status: prop(props, "boot-status"),
        bundle_version: prop(props, "bundle.version"),
        installed_timestamp: prop(props, "installed.timestamp"),
    }
}

/// The updates of this device: one at a time, staged in one directory.
#[derive(Debug)]
pub struct Updater {
    dir: PathBuf,
    policy: UpdatePolicy,
    installer: Arc<dyn BundleInstaller>,
    busy: OneAtATime,
}

/// The stream of one update's events.
pub type Events = mpsc::Receiver<Event>;

impl Updater {
    /// Updates staged in `dir` (on the data partition); leftovers of an
    /// interrupted update there are removed.
    pub fn new(dir: PathBuf, policy: UpdatePolicy, installer: Arc<dyn BundleInstaller>) -> Self {
        stage::clean(&dir);
        Self { dir, policy, installer, busy: OneAtATime::default() }
    }

    /// The staging and record directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn begin(&self) -> Result<Busy, Status> {
        self.busy.begin().ok_or_else(|| {
            Status::failed_precondition("an OS update is already running on this device; wait for it to finish")
        })
    }

    /// Starts an update from `url`: refused at once if the URL is unusable
    /// or another update runs; otherwise the events follow.
    pub fn from_url(self: &Arc<Self>, url: &str) -> Result<Events, Status> {
        let url = ArtifactUrl::parse(url).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let busy = self.begin()?;
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let _busy = busy;
            tracing::info!(url = %url, "OS update: downloading the bundle");
            let _ = tx.send(Event::Progress { phase: phase::DOWNLOADING, percent: 0 }).await;
            let started = Instant::now();
            let staged = me.download(&url, &tx).await.map_err(|e| format!("download failed: {e}"));
            me.install_staged(staged, started, &tx).await;
        });
        Ok(rx)
    }

    async fn download(&self, url: &ArtifactUrl, tx: &mpsc::Sender<Event>) -> Result<Staged, fetch::FetchError> {
        let mut staging = Staging::create(&self.dir, self.policy.reserve).await?;
        let mut last = 0;
        let mut report = |received: u64, total: Option<u64>| {
            if let Some(percent) = percent_of(received, total).filter(|p| *p > last) {
                last = percent;
                let _ = tx.try_send(Event::Progress { phase: phase::DOWNLOADING, percent });
            }
        };
        fetch::download(url, &mut staging, &self.policy.fetch, &mut report).await?;
        Ok(staging.finish().await?)
    }

    /// Starts an update from an upload stream: refused at once if another
    /// update runs; the header and chunks are read as the events follow.
    pub fn from_upload<S>(self: &Arc<Self>, upload: S) -> Result<Events, Status>
    where
        S: Stream<Item = Result<InstallBundleRequest, Status>> + Send + Unpin + 'static,
    {
        let busy = self.begin()?;
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let _busy = busy;
            let started = Instant::now();
            let staged = me.receive(upload, &tx).await.map_err(|e| format!("upload failed: {e}"));
            me.install_staged(staged, started, &tx).await;
        });
        Ok(rx)
    }

    async fn receive<S>(&self, mut upload: S, tx: &mpsc::Sender<Event>) -> Result<Staged, String>
    where
        S: Stream<Item = Result<InstallBundleRequest, Status>> + Send + Unpin,
    {
        let stall = self.policy.upload_stall;
        let header = match next_message(&mut upload, stall).await? {
            Some(RequestType::Header(h)) => h,
            Some(RequestType::Chunk(_)) | None => return Err("the first message must be the header".into()),
        };
        let expected_sha = header.sha256.trim().to_ascii_lowercase();
        if expected_sha.len() != 64 || !expected_sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("header.sha256 must be 64 hex digits (SHA-256 of the bundle)".into());
        }
        if header.size == 0 {
            return Err("header.size must be the bundle's size in bytes, not 0".into());
        }
        let mut staging = Staging::create(&self.dir, self.policy.reserve).await.map_err(|e| e.to_string())?;
        staging.expect_size(header.size).map_err(|e| e.to_string())?;
        tracing::info!(size = header.size, "OS update: receiving the bundle");
        let _ = tx.send(Event::Progress { phase: phase::UPLOADING, percent: 0 }).await;
        let mut last = 0;
        loop {
            match next_message(&mut upload, stall).await? {
                Some(RequestType::Chunk(data)) => {
                    staging.write(&data).await.map_err(|e| e.to_string())?;
                    if let Some(percent) = percent_of(staging.written(), Some(header.size)).filter(|p| *p > last) {
                        last = percent;
                        let _ = tx.try_send(Event::Progress { phase: phase::UPLOADING, percent });
                    }
                }
                Some(RequestType::Header(_)) => return Err("a second header arrived".into()),
                None => break,
            }
        }
        let staged = staging.finish().await.map_err(|e| e.to_string())?;
        if staged.sha256 != expected_sha {
            return Err(format!(
                "SHA-256 mismatch: the header says {expected_sha}, the {} bytes received hash to {}",
                staged.size, staged.sha256
            ));
        }
        Ok(staged)
    }

    async fn install_staged(&self, staged: Result<Staged, String>, started: Instant, tx: &mpsc::Sender<Event>) {
        let stage_seconds = secs(started.elapsed());
        let installing = Instant::now();
        let result = match staged {
            Ok(staged) => {
                tracing::info!(size = staged.size, sha256 = %staged.sha256, stage_seconds, "OS update: RAUC installs the bundle");
                let _ = tx.send(Event::Progress { phase: phase::INSTALLING, percent: 0 }).await;
                self.installer.install(&staged.path, tx.clone()).await
            }
            Err(e) => Err(e),
        };
        let install_seconds = secs(installing.elapsed());
        let mut record = match &result {
            Ok(installed) => Record::new(
                Outcome::Installed,
                &installed.version,
                &installed.slot,
                "installed; boots at the next reboot",
            ),
            Err(message) => {
                tracing::warn!(error = %message, "OS update failed; the running slot is unchanged");
                Record::new(Outcome::Failed, "", "", message)
            }
        };
        record.stage_seconds = stage_seconds;
        record.install_seconds = install_seconds;
        record::store(&self.dir, &record);
        let _ = tx.send(result.map_or_else(Event::Failed, |_| Event::Completed)).await;
    }
}

/// The next upload message, within `stall`.
async fn next_message<S>(upload: &mut S, stall: Duration) -> Result<Option<RequestType>, String>
where
    S: Stream<Item = Result<InstallBundleRequest, Status>> + Unpin,
{
    match tokio::time::timeout(stall, upload.next()).await {
        Err(_) => Err(format!("nothing arrived for {stall:?}")),
        Ok(None) => Ok(None),
        Ok(Some(Err(status))) => Err(format!("the stream failed: {}", status.message())),
        // A message without a oneof is skipped like an empty chunk.
        Ok(Some(Ok(m))) => Ok(Some(m.request_type.unwrap_or(RequestType::Chunk(Vec::new())))),
    }
}

/// Whole seconds, saturating.
fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// `received` of `total` in whole percent, if the total is known.
fn percent_of(received: u64, total: Option<u64>) -> Option<i32> {
    let total = total.filter(|t| *t > 0)?;
    i32::try_from((received.saturating_mul(100) / total).min(100)).ok()
}

/// The update status: RAUC's view, plus the last install's record.
pub async fn status(dir: &Path) -> Result<GetUpdateStatusResponse, Status> {
    let unavailable = |e: zbus::Error| Status::unavailable(format!("cannot ask RAUC: {e}"));
    let conn = zbus::Connection::system().await.map_err(unavailable)?;
    let rauc = RaucInstallerProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(unavailable)?;
    let slots = rauc.get_slot_status().await.map_err(unavailable)?;
    let mut slots: Vec<Slot> = slots.iter().map(|(name, props)| slot_of(name, props)).collect();
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(GetUpdateStatusResponse {
        compatible: rauc.compatible().await.unwrap_or_default(),
        booted_slot: booted_slot(&rauc).await,
        primary_slot: rauc.get_primary().await.unwrap_or_default(),
        operation: rauc.operation().await.unwrap_or_default(),
        slots,
        last_install: record::load(dir).map(|r| r.to_wire()),
    })
}

/// The booted slot's boot name: RAUC's `BootSlot`, else the kernel command
/// line's `rauc.slot=` (RAUC's own source). RAUC stops early in a shutdown
/// while the agent still answers, and an empty slot would read to a client
/// as "running some other slot".
async fn booted_slot(rauc: &RaucInstallerProxy<'_>) -> String {
    match rauc.boot_slot().await {
        Ok(slot) if !slot.is_empty() => slot,
        _ => crate::rauc::read_booted_slot(Path::new(crate::rauc::CMDLINE))
            .ok()
            .flatten()
            .map(|b| b.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// Starts a clean reboot (systemd's `reboot.target`) after
/// [`REBOOT_DELAY`], so the caller's answer gets out first.
pub fn reboot_soon(why: &'static str) {
    tokio::spawn(async move {
        tokio::time::sleep(REBOOT_DELAY).await;
        if let Err(e) = reboot_now(why).await {
            tracing::error!(error = %e, "could not start the reboot");
        }
    });
}

/// Starts `reboot.target` through systemd over D-Bus.
pub async fn reboot_now(why: &str) -> zbus::Result<()> {
    tracing::warn!(why, "rebooting");
    let conn = zbus::Connection::system().await?;
    SystemdManagerProxy::new(&conn).await?.start_unit(REBOOT_TARGET, "replace-irreversibly").await?;
    Ok(())
}

/// The response stream of an update, in the v2 shape.
pub type V2Stream = Pin<Box<dyn Stream<Item = Result<UpdateOsResponse, Status>> + Send>>;

/// The response stream of an update, in the v1 shape.
pub type V1Stream = Pin<Box<dyn Stream<Item = Result<wendy_proto::agent::UpdateOsResponse, Status>> + Send>>;

/// `events` as a v2 response stream.
pub fn v2_stream(events: Events) -> V2Stream {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(events).map(|e| Ok(e.to_v2())))
}

/// The response stream of an upload.
pub type InstallStream = Pin<Box<dyn Stream<Item = Result<InstallBundleResponse, Status>> + Send>>;

/// `events` as an `InstallBundle` response stream.
pub fn install_stream(events: Events) -> InstallStream {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(events).map(|e| Ok(e.to_ours())))
}

/// `events` as a v1 response stream.
pub fn v1_stream(events: Events) -> V1Stream {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(events).map(|e| Ok(e.to_v1())))
}

/// The v2 published service and our own, over one [`Updater`].
#[derive(Clone, Debug)]
pub struct OsUpdate(Arc<Updater>);

impl OsUpdate {
    /// The services over `updater`.
    pub fn new(updater: Arc<Updater>) -> Self {
        Self(updater)
    }
}

#[tonic::async_trait]
impl WendyOsUpdateService for OsUpdate {
    type UpdateOSStream = V2Stream;

    async fn update_os(&self, request: Request<UpdateOsRequest>) -> Result<Response<Self::UpdateOSStream>, Status> {
        log_caller(&request, "UpdateOS");
        let events = self.0.from_url(&request.into_inner().artifact_url)?;
        Ok(Response::new(v2_stream(events)))
    }
}

#[tonic::async_trait]
impl OsUpdateService for OsUpdate {
    type InstallBundleStream = InstallStream;

    async fn install_bundle(
        &self,
        request: Request<tonic::Streaming<InstallBundleRequest>>,
    ) -> Result<Response<Self::InstallBundleStream>, Status> {
        log_caller(&request, "InstallBundle");
        let events = self.0.from_upload(request.into_inner())?;
        Ok(Response::new(install_stream(events)))
    }

    async fn get_update_status(
        &self,
        _request: Request<GetUpdateStatusRequest>,
    ) -> Result<Response<GetUpdateStatusResponse>, Status> {
        Ok(Response::new(status(self.0.dir()).await?))
    }

    async fn reboot(&self, request: Request<RebootRequest>) -> Result<Response<RebootResponse>, Status> {
        log_caller(&request, "Reboot");
        reboot_soon("Reboot requested");
        Ok(Response::new(RebootResponse {}))
    }
}

/// Logs who asked for `what`.
pub fn log_caller<T>(request: &Request<T>, what: &str) {
    let peer = request.extensions().get::<crate::tls::PeerInfo>();
    tracing::info!(
        call = what,
        cn = ?peer.and_then(|p| p.common_name.as_deref()),
        role = ?peer.and_then(|p| p.role),
        "OS update call"
    );
}

#[cfg(test)]
mod tests;
