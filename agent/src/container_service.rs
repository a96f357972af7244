//! The published container service, v1 and v2 (Cargo feature `apps`):
//! `wendy.agent.services.v1.WendyContainerService` and
//! `wendy.agent.services.v2.WendyContainerService`, over
//! [`crate::containers::runtime::Runtime`]. Served only over mTLS.
//!
//! | call | role | what it does |
//! |---|---|---|
//! | `CreateContainer`, `CreateContainerWithProgress` (v1) | Member | parses `app_config` (the published `wendy.json`), replaces an app of the same name (its image and volumes are kept), creates the app from `image_name` (already in containerd's store, pushed through the registry); it is not started |
//! | `StartContainer` | Member | starts the app, streams `Started`, then its output until it exits or the caller goes away |
//! | `AttachContainer` | Member | the first message names a running app; later messages' `stdin_data` go to its stdin; streams `Started`, then its output from now on, until it exits or the caller goes away (see below) |
//! | `StopContainer` | Member | `SIGTERM`, then `SIGKILL` after [`STOP_TIMEOUT`]; the app stays stopped |
//! | `DeleteContainer` | Member | stops and deletes the app; `delete_image`: its image unless another app uses it; `delete_volumes`: its `persist` volumes unless another app uses them |
//! | `ListContainers` | Viewer | every app: `app_name`, `app_version` (the `wendy.json` version), `running_state`, `failure_count` |
//! | `ListVolumes`, `RemoveVolume` | Viewer, Member | the `persist` volumes on the data partition; a volume an app uses is not removed |
//! | `ListContainerStats` | Viewer | memory from the app's cgroup, storage as the image's content size |
//!
//! And our own `wendyos.agent.v1.AppService` (decision 0086), on the same
//! port and over the same apps:
//!
//! | call | role | what it does |
//! |---|---|---|
//! | `ReadAppLogs` | Viewer | the app's output so far, one message per line, from its log file; with `follow`, then new output until the caller goes away; `NOT_FOUND` for an unknown app |
//! | `ListAppDetails` | Viewer | every app's restart policy (its label) and image |
//!
//! Requests map onto the runtime as follows.
//! - The app's name is `app_name` when given, else `wendy.json`'s container
//!   id (`appId`, or `appId_serviceName`). An empty `app_config` with an
//!   `app_name` is the config `{"appId": app_name}`.
//! - `cmd` (split at white space) followed by `user_args` replace the
//!   image's `Cmd` (and `run.args`) when either is given; `working_dir`
//!   replaces the image's `WorkingDir`.
//! - `restart_policy`: `DEFAULT` and absent mean `unless-stopped` (the
//!   published comment); `on-failure` with `on_failure_max_retries` N (0:
//!   without limit).
//! - Bad input is `INVALID_ARGUMENT` naming the field (`app_config:
//!   entitlements[2].type: unknown entitlement "foo"`, `app_name: ...`).
//!
//! **One operation per app at a time.** Every call that changes an app
//! holds that app's lock ([`AppLocks`]), and so does the restart
//! [`supervisor`]; a call that cannot get it within [`LOCK_WAIT`] is
//! `ABORTED`.
//!
//! **Output.** The runtime writes an app's stdout and stderr to one file
//! (containerd's shim, so the app never blocks on the agent), so both
//! arrive as `stdout_output`, one message per line (with its `\n`).
//! `StartContainer` streams from the file's length before the start, so
//! only this run's output is sent.
//!
//! **Input.** Every task gets a stdin fifo that the agent keeps open
//! ([`crate::containers::runtime::stdin`]), so attaching and leaving does
//! not close the app's stdin. A client that closes its side of
//! `AttachContainer` keeps receiving output until the app exits. An app
//! started before the agent last started has no stdin
//! (`FAILED_PRECONDITION` on its first `stdin_data`); its output still
//! streams. The first message must arrive within [`ATTACH_FIRST_MESSAGE`].
//!
//! **Stats.** `memory_bytes` is read from the app's cgroup (`/wendy/<app>`:
//! `memory.current` on cgroup v2, `memory.usage_in_bytes` on v1), which is
//! what containerd's `Tasks/Metrics` reports too; its answer is an `Any` of
//! the cgroups metrics types, which the `containerd-client` crate does not
//! carry. 0 for an app that is not running. `storage_bytes` is the image's
//! manifest, config and compressed layers, as published ("container image
//! content size only").
//!
//! **containerd.** The service is always registered on the mTLS port;
//! until the agent reaches containerd (see [`connect_loop`]) every call is
//! `UNAVAILABLE`, and `featureset` lacks `containers`.

pub mod supervisor;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use wendy_proto::agent as v1;
use wendy_proto::agent::wendy_container_service_server::WendyContainerService as V1Service;
use wendy_proto::agent_admin as ours;
use wendy_proto::agent_admin::app_service_server::AppService as OurService;
use wendy_proto::agent_shared as v1_shared;
use wendy_proto::agent_v2 as v2;
use wendy_proto::agent_v2::wendy_container_service_server::WendyContainerService as V2Service;

use crate::containers::app_config::{self, ConfigError, MAX_ARGS, MAX_PATH, MAX_STRING};
use crate::containers::containerd::{rfc3339, ContainerdError, ContainerdStore};
use crate::containers::is_safe_name;
use crate::containers::runtime::logs::{self, Follow};
use crate::containers::runtime::stdin::StdinError;
use crate::containers::runtime::{
    cgroup_path, AppState, AppStatus, NewApp, RestartPolicy, Runtime, RuntimeError, RuntimeOptions,
};
use crate::containers::sandbox::{self, SandboxError};

/// The `featureset` entry `GetAgentVersion` and `GetDeviceInfo` report
/// while containerd is reachable.
pub const FEATURE: &str = "containers";

/// How long `StopContainer` and `DeleteContainer` give an app after
/// `SIGTERM` before `SIGKILL`.
pub const STOP_TIMEOUT: Duration = crate::containers::runtime::DEFAULT_STOP_TIMEOUT;

/// How long a call waits for another operation on the same app.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// How long connecting to containerd, and its first answer, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`connect_loop`] tries again while containerd is unreachable.
pub const CONNECT_RETRY: Duration = Duration::from_secs(10);

/// Output messages buffered per `StartContainer` stream before the reader
/// waits for the client.
const OUTPUT_BUFFER: usize = 64;

/// After an app exits, how long the output stream waits for a line before
/// it ends (the shim may still be copying the last ones).
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// How long `AttachContainer` waits for its first message (the app's name).
pub const ATTACH_FIRST_MESSAGE: Duration = Duration::from_secs(30);

/// Longest `image_name` accepted.
const MAX_IMAGE_NAME: usize = 512;

/// Most per-app locks kept when none is in use.
const MAX_IDLE_LOCKS: usize = 256;

/// Most files counted in one volume's size.
const MAX_VOLUME_WALK: usize = 100_000;

/// The cgroup file system.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Why a container call failed; [`Status`] by variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppsError {
    /// A request field is malformed (`INVALID_ARGUMENT`).
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, as the proto names it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `app_config` is not a valid `wendy.json` (`INVALID_ARGUMENT`).
    #[error("app_config: {0}")]
    Config(#[from] ConfigError),
    /// No `persist` volume of that name (`NOT_FOUND`).
    #[error("no volume named {0:?}")]
    VolumeNotFound(String),
    /// The volume is used by apps (`FAILED_PRECONDITION`).
    #[error("volume {name:?} is used by {apps:?}; delete those apps first")]
    VolumeInUse {
        /// The volume.
        name: String,
        /// The apps that use it.
        apps: Vec<String>,
    },
    /// Another operation on the app did not finish in time (`ABORTED`).
    #[error("another operation on {0:?} is still in progress")]
    Busy(String),
    /// containerd is not reachable (`UNAVAILABLE`).
    #[error("containerd is not reachable: {0}")]
    Unavailable(String),
    /// A volume directory could not be read or removed (`INTERNAL`).
    #[error("volume {}: {source}", path.display())]
    VolumeIo {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused or failed (by its variant).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<AppsError> for Status {
    fn from(e: AppsError) -> Self {
        let message = e.to_string();
        match &e {
            AppsError::InvalidArgument { .. } | AppsError::Config(_) => Status::invalid_argument(message),
            AppsError::VolumeNotFound(_) => Status::not_found(message),
            AppsError::VolumeInUse { .. } => Status::failed_precondition(message),
            AppsError::Busy(_) => Status::aborted(message),
            AppsError::Unavailable(_) => Status::unavailable(message),
            AppsError::VolumeIo { .. } => {
                tracing::error!(error = %e, "container service");
                Status::internal("a volume directory could not be read or removed; see the agent's log")
            }
            AppsError::Runtime(r) => runtime_status(r),
        }
    }
}

/// The status for a runtime error: the caller's mistakes and the app's
/// state by name, internals only in the log.
fn runtime_status(e: &RuntimeError) -> Status {
    let message = e.to_string();
    match e {
        RuntimeError::BadName(_) => Status::invalid_argument(format!("app_name: {message}")),
        RuntimeError::NotFound(_) => Status::not_found(message),
        RuntimeError::ImageNotFound(_) => {
            Status::not_found(format!("{message}: push it to the device's registry first"))
        }
        RuntimeError::AlreadyExists(_) => Status::already_exists(message),
        RuntimeError::AlreadyRunning(_) | RuntimeError::NotRunning(_) => Status::failed_precondition(message),
        RuntimeError::Stdin { source: StdinError::Closed, .. } => Status::failed_precondition(message),
        RuntimeError::Image { .. } | RuntimeError::Content { .. } | RuntimeError::LayerMismatch { .. } => {
            Status::failed_precondition(message)
        }
        RuntimeError::Sandbox(SandboxError::NotAbsolute(_) | SandboxError::Oci(_)) => {
            tracing::error!(error = %e, "container service: building the sandbox");
            Status::internal("the app's sandbox could not be built; see the agent's log")
        }
        RuntimeError::Sandbox(_) => Status::invalid_argument(message),
        RuntimeError::StopTimeout { .. } => Status::deadline_exceeded(message),
        RuntimeError::Containerd(c)
            if matches!(c, ContainerdError::Connect { .. }) || c.code() == Some(Code::Unavailable) =>
        {
            tracing::warn!(error = %e, "container service: containerd unavailable");
            Status::unavailable("containerd is not answering; see the agent's log")
        }
        _ => {
            tracing::error!(error = %e, "container service");
            Status::internal("the container runtime failed; see the agent's log")
        }
    }
}

/// One async lock per app name: every operation that changes an app holds
/// it. Idle locks are dropped once more than [`MAX_IDLE_LOCKS`] exist, so
/// the map stays bounded by the apps in use (names are validated first).
#[derive(Debug, Default)]
pub struct AppLocks(StdMutex<HashMap<String, Arc<Mutex<()>>>>);

impl AppLocks {
    fn get(&self, key: &str) -> Arc<Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_IDLE_LOCKS && !map.contains_key(key) {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        map.entry(key.to_owned()).or_default().clone()
    }

    /// Waits up to [`LOCK_WAIT`] for the lock of `key`.
    pub async fn lock(&self, key: &str) -> Result<OwnedMutexGuard<()>, AppsError> {
        tokio::time::timeout(LOCK_WAIT, self.get(key).lock_owned()).await.map_err(|_| AppsError::Busy(key.to_owned()))
    }

    /// The lock of `key` if it is free now.
    pub fn try_lock(&self, key: &str) -> Option<OwnedMutexGuard<()>> {
        self.get(key).try_lock_owned().ok()
    }
}

/// What a `StartContainer` stream carries, before it is put in the v1 or
/// v2 message.
#[derive(Debug)]
enum Output {
    Started,
    Line(Bytes),
}

/// What an `AttachContainer` message carries, taken out of the v1 or v2
/// message.
#[derive(Debug)]
enum AttachIn {
    App(String),
    Stdin(Vec<u8>),
    Empty,
}

/// The apps on containerd: the runtime, the per-app locks, and where
/// volumes live.
#[derive(Debug)]
pub struct Apps {
    runtime: Runtime,
    locks: AppLocks,
    volumes_root: PathBuf,
}

/// A validated `CreateContainer`.
#[derive(Debug)]
pub struct CreateSpec {
    /// The app to create.
    pub app: NewApp,
}

impl Apps {
    /// Connects to containerd at `socket` (bounded by [`CONNECT_TIMEOUT`])
    /// and checks that it answers in the agent's namespace.
    pub async fn connect(socket: &Path, options: RuntimeOptions) -> Result<Arc<Self>, AppsError> {
        let unavailable = |e: String| AppsError::Unavailable(format!("{}: {e}", socket.display()));
        let store = tokio::time::timeout(CONNECT_TIMEOUT, ContainerdStore::connect(socket))
            .await
            .map_err(|_| unavailable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        let volumes_root = options.volumes_root.clone();
        let runtime = Runtime::new(&store, options)?;
        tokio::time::timeout(CONNECT_TIMEOUT, runtime.list())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Arc::new(Self { runtime, locks: AppLocks::default(), volumes_root }))
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The per-app locks.
    pub fn locks(&self) -> &AppLocks {
        &self.locks
    }

    /// Creates `spec.app`, replacing an app of the same name (its image
    /// and volumes are kept). The new app is marked stopped until started,
    /// so the supervisor leaves it alone.
    pub async fn create(&self, spec: CreateSpec) -> Result<(), AppsError> {
        let app = spec.app;
        let _guard = self.locks.lock(&app.name).await?;
        match self.runtime.state(&app.name).await {
            Ok(_) => {
                tracing::info!(app = %app.name, "replacing the existing app of that name");
                self.runtime.delete(&app.name, false).await?;
            }
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.runtime.create(&app).await?;
        self.runtime.stop(&app.name, STOP_TIMEOUT).await?;
        tracing::info!(app = %app.name, image = %app.image, restart = %app.restart.label(), "app created");
        Ok(())
    }

    /// Starts app `name` (with `restart` as its new policy, if given) and
    /// returns the stream of this run's output.
    async fn start(
        &self,
        name: String,
        restart: Option<RestartPolicy>,
    ) -> Result<mpsc::Receiver<Result<Output, Status>>, AppsError> {
        check_app_name(&name)?;
        let offset = {
            let _guard = self.locks.lock(&name).await?;
            if let Some(policy) = restart {
                self.runtime.set_restart(&name, policy).await?;
            }
            let offset = tokio::fs::metadata(self.runtime.log_path(&name)).await.map(|m| m.len()).unwrap_or(0);
            let pid = self.runtime.start(&name).await?;
            tracing::info!(app = %name, pid, "app started");
            offset
        };
        let (tx, rx) = mpsc::channel(OUTPUT_BUFFER);
        self.follow(tx, name, offset);
        Ok(rx)
    }

    /// Attaches to running app `name`: `Started`, then its output from
    /// now on; what `input` carries goes to its stdin. The stream ends when
    /// the app exits (after its last lines) or the receiver is dropped; a
    /// bad message or a stdin that cannot be written ends it with that
    /// error.
    async fn attach<S>(&self, name: String, mut input: S) -> Result<mpsc::Receiver<Result<Output, Status>>, AppsError>
    where
        S: Stream<Item = Result<AttachIn, Status>> + Send + Unpin + 'static,
    {
        check_app_name(&name)?;
        if !is_running(self.runtime.state(&name).await?) {
            return Err(RuntimeError::NotRunning(name).into());
        }
        let offset = tokio::fs::metadata(self.runtime.log_path(&name)).await.map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = mpsc::channel(OUTPUT_BUFFER);
        let mut output = self.follow(tx.clone(), name.clone(), offset);
        let runtime = self.runtime.clone();
        tracing::info!(app = %name, "client attached");
        tokio::spawn(async move {
            loop {
                let data = tokio::select! {
                    _ = &mut output => return,
                    msg = input.next() => match msg {
                        Some(Ok(AttachIn::Stdin(data))) => data,
                        Some(Ok(AttachIn::Empty)) => continue,
                        Some(Ok(AttachIn::App(_))) => {
                            let e = "app_name: only the first message names the app; later ones carry stdin_data";
                            let _ = tx.send(Err(Status::invalid_argument(e))).await;
                            return;
                        }
                        // The client sent everything, or went away: its
                        // output goes on until the app exits or the client
                        // drops the stream.
                        Some(Err(_)) | None => {
                            drop(tx);
                            let _ = output.await;
                            return;
                        }
                    },
                };
                tokio::select! {
                    _ = &mut output => return,
                    r = runtime.write_stdin(&name, &data) => if let Err(e) = r {
                        let _ = tx.send(Err(runtime_status(&e))).await;
                        return;
                    },
                }
            }
        });
        Ok(rx)
    }

    /// A task that sends `Started`, then app `name`'s output from `offset`
    /// until the app exits (and its last lines are read) or the receiver
    /// of `tx` is dropped.
    fn follow(
        &self,
        tx: mpsc::Sender<Result<Output, Status>>,
        name: String,
        offset: u64,
    ) -> tokio::task::JoinHandle<()> {
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            if tx.send(Ok(Output::Started)).await.is_err() {
                return;
            }
            let mut lines = Box::pin(logs::lines_from(runtime.log_path(&name), Follow::Yes, offset));
            let exited = runtime.wait(&name);
            tokio::pin!(exited);
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    status = &mut exited => {
                        if let Ok(status) = status {
                            tracing::info!(app = %name, code = status.code, "app exited");
                        }
                        break;
                    }
                    line = lines.next() => match line {
                        Some(Ok(line)) => {
                            if tx.send(Ok(Output::Line(line))).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(app = %name, error = %e, "reading the app's log");
                            let _ = tx.send(Err(Status::internal("the app's output could not be read"))).await;
                            return;
                        }
                        None => return,
                    },
                }
            }
            // The lines the shim copied before the exit was reported.
            while let Ok(Some(Ok(line))) = tokio::time::timeout(DRAIN_QUIET, lines.next()).await {
                if tx.send(Ok(Output::Line(line))).await.is_err() {
                    return;
                }
            }
        })
    }

    /// Stops app `name` on purpose.
    pub async fn stop(&self, name: &str) -> Result<(), AppsError> {
        check_app_name(name)?;
        let _guard = self.locks.lock(name).await?;
        let code = self.runtime.stop(name, STOP_TIMEOUT).await?;
        tracing::info!(app = name, ?code, "app stopped");
        Ok(())
    }

    /// Stops every running app on purpose, as an unprovisioned device runs
    /// none (design: "An unprovisioned device runs no registry and no
    /// apps"). They stay stopped until their owner starts them again; a
    /// failure is logged and the next app is stopped anyway.
    pub async fn stop_all(&self) {
        let apps = match self.runtime.list().await {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the apps to stop them");
                return;
            }
        };
        for app in apps.into_iter().filter(|a| is_running(a.state)) {
            if let Err(e) = self.stop(&app.name).await {
                tracing::warn!(app = %app.name, error = %e, "could not stop the app");
            }
        }
    }

    /// Deletes app `name`, with its image and volumes if asked (each only
    /// when no other app uses it).
    pub async fn delete(&self, name: &str, delete_image: bool, delete_volumes: bool) -> Result<(), AppsError> {
        check_app_name(name)?;
        let _guard = self.locks.lock(name).await?;
        let apps = self.runtime.list().await?;
        let volumes = apps.iter().find(|a| a.name == name).map(|a| a.volumes.clone()).unwrap_or_default();
        let image_deleted = self.runtime.delete(name, delete_image).await?;
        let mut removed = Vec::new();
        if delete_volumes {
            for volume in volumes {
                let users = users_of(&apps, &volume).into_iter().filter(|u| u != name).collect::<Vec<_>>();
                if !users.is_empty() {
                    tracing::info!(app = name, volume, ?users, "volume kept: other apps use it");
                    continue;
                }
                if self.remove_volume_dir(&volume).await? {
                    removed.push(volume);
                }
            }
        }
        tracing::info!(app = name, image_deleted, volumes_removed = ?removed, "app deleted");
        Ok(())
    }

    /// Every app, by name.
    pub async fn list(&self) -> Result<Vec<AppStatus>, AppsError> {
        Ok(self.runtime.list().await?)
    }

    /// App `name`'s output so far, one line (with its `\n`) per item, then
    /// with [`Follow::Yes`] new output until the receiver is dropped. Does
    /// not take the app's lock: it only reads the shim's file.
    pub async fn logs(&self, name: &str, follow: Follow) -> Result<mpsc::Receiver<Result<Bytes, Status>>, AppsError> {
        check_app_name(name)?;
        self.runtime.state(name).await?;
        // An app that never ran has no file: no output, not an error.
        let exists = tokio::fs::try_exists(self.runtime.log_path(name)).await.unwrap_or(false);
        let (tx, rx) = mpsc::channel(OUTPUT_BUFFER);
        if !exists && follow == Follow::No {
            return Ok(rx);
        }
        let mut lines = Box::pin(self.runtime.output(name, follow)?);
        let name = name.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    line = lines.next() => match line {
                        Some(Ok(line)) => {
                            if tx.send(Ok(Bytes::from(with_newline(line)))).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(app = %name, error = %e, "reading the app's log");
                            let _ = tx.send(Err(Status::internal("the app's output could not be read"))).await;
                            return;
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(rx)
    }

    /// The `persist` volumes on the data partition.
    pub async fn volumes(&self) -> Result<Vec<v1::VolumeInfo>, AppsError> {
        let apps = self.runtime.list().await?;
        let root = self.volumes_root.clone();
        let found = tokio::task::spawn_blocking(move || scan_volumes(&root))
            .await
            .map_err(|e| AppsError::Unavailable(format!("volume scan: {e}")))??;
        Ok(found
            .into_iter()
            .map(|(name, (path, size_bytes, created_at))| v1::VolumeInfo {
                used_by: users_of(&apps, &name),
                path: path.display().to_string(),
                size_bytes,
                created_at,
                name,
            })
            .collect())
    }

    /// Removes volume `name` unless an app uses it.
    pub async fn remove_volume(&self, name: &str) -> Result<(), AppsError> {
        if !is_safe_name(name) {
            return Err(AppsError::InvalidArgument { field: "name", reason: name_rule() });
        }
        let _guard = self.locks.lock(&format!("volume:{name}")).await?;
        let users = users_of(&self.runtime.list().await?, name);
        if !users.is_empty() {
            return Err(AppsError::VolumeInUse { name: name.to_owned(), apps: users });
        }
        if !self.remove_volume_dir(name).await? {
            return Err(AppsError::VolumeNotFound(name.to_owned()));
        }
        tracing::info!(volume = name, "volume removed");
        Ok(())
    }

    /// Removes the directory of volume `name` (a safe name); whether it
    /// existed.
    async fn remove_volume_dir(&self, name: &str) -> Result<bool, AppsError> {
        let path = sandbox::volume_dir(&self.volumes_root, name);
        match tokio::fs::symlink_metadata(&path).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(AppsError::VolumeIo { path, source }),
            Ok(m) if !m.is_dir() => return Ok(false),
            Ok(_) => {}
        }
        tokio::fs::remove_dir_all(&path).await.map_err(|source| AppsError::VolumeIo { path, source })?;
        Ok(true)
    }

    /// Memory and image size of every app.
    pub async fn stats(&self) -> Result<Vec<v1::ContainerStats>, AppsError> {
        let mut sizes: HashMap<String, i64> = HashMap::new();
        let mut stats = Vec::new();
        for app in self.runtime.list().await? {
            let memory_bytes =
                if is_running(app.state) { memory_bytes(Path::new(CGROUP_ROOT), &app.name).await } else { 0 };
            let storage_bytes = match sizes.get(&app.image) {
                Some(s) => *s,
                None => {
                    let s = match self.runtime.image_size(&app.image).await {
                        Ok(s) => i64::try_from(s).unwrap_or(i64::MAX),
                        Err(e) => {
                            tracing::debug!(app = %app.name, error = %e, "image size unknown");
                            0
                        }
                    };
                    sizes.insert(app.image.clone(), s);
                    s
                }
            };
            stats.push(v1::ContainerStats { app_name: app.name, memory_bytes, storage_bytes });
        }
        Ok(stats)
    }
}

/// The apps whose config names volume `name`.
fn users_of(apps: &[AppStatus], name: &str) -> Vec<String> {
    apps.iter().filter(|a| a.volumes.iter().any(|v| v == name)).map(|a| a.name.clone()).collect()
}

/// Every volume directory under `root` (safe names only): path, size
/// (bytes of regular files, at most [`MAX_VOLUME_WALK`] entries counted)
/// and modification time (RFC 3339).
fn scan_volumes(root: &Path) -> Result<BTreeMap<String, (PathBuf, i64, String)>, AppsError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(AppsError::VolumeIo { path: root.to_owned(), source }),
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().filter(|n| is_safe_name(n)).map(str::to_owned) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        let created_at = meta.modified().map(rfc3339).unwrap_or_default();
        let size = i64::try_from(dir_size(&entry.path())).unwrap_or(i64::MAX);
        out.insert(name, (entry.path(), size, created_at));
    }
    Ok(out)
}

/// Bytes of the regular files under `dir`, symbolic links not followed.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_VOLUME_WALK {
                return total;
            }
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// The current memory use of app `name`'s cgroup (`/wendy/<name>`), 0 when
/// it cannot be read.
async fn memory_bytes(cgroup_root: &Path, name: &str) -> i64 {
    let group = cgroup_path(name);
    let candidates = [
        cgroup_root.join(&group).join("memory.current"),
        cgroup_root.join("memory").join(&group).join("memory.usage_in_bytes"),
    ];
    for path in candidates {
        if let Ok(text) = tokio::fs::read_to_string(&path).await {
            if let Ok(v) = text.trim().parse::<u64>() {
                return i64::try_from(v).unwrap_or(i64::MAX);
            }
        }
    }
    0
}

/// The rule a name breaks, for messages.
fn name_rule() -> String {
    format!(
        "must be letters and digits joined by single '.', '_' or '-', at most {} bytes",
        crate::containers::MAX_NAME_LEN
    )
}

fn check_app_name(name: &str) -> Result<(), AppsError> {
    if name.is_empty() {
        return Err(AppsError::InvalidArgument { field: "app_name", reason: "required".into() });
    }
    if !is_safe_name(name) {
        return Err(AppsError::InvalidArgument { field: "app_name", reason: name_rule() });
    }
    Ok(())
}

/// The published v1 restart policy as the runtime's; `None` when absent.
pub fn restart_policy(p: Option<&v1_shared::RestartPolicy>) -> Result<Option<RestartPolicy>, AppsError> {
    use v1_shared::RestartPolicyMode as Mode;
    let Some(p) = p else { return Ok(None) };
    let mode = Mode::try_from(p.mode).map_err(|_| AppsError::InvalidArgument {
        field: "restart_policy.mode",
        reason: format!("unknown mode {}", p.mode),
    })?;
    Ok(Some(match mode {
        Mode::Default | Mode::UnlessStopped => RestartPolicy::UnlessStopped,
        Mode::No => RestartPolicy::No,
        Mode::OnFailure => RestartPolicy::OnFailure {
            max_retries: u32::try_from(p.on_failure_max_retries).map_err(|_| AppsError::InvalidArgument {
                field: "restart_policy.on_failure_max_retries",
                reason: format!("{} is negative", p.on_failure_max_retries),
            })?,
        },
    }))
}

/// Validates a `CreateContainer` request (see the module docs).
pub fn create_spec(req: v1::CreateContainerRequest) -> Result<CreateSpec, AppsError> {
    let invalid = |field: &'static str, reason: String| AppsError::InvalidArgument { field, reason };
    if req.image_name.is_empty() {
        return Err(invalid("image_name", "required".into()));
    }
    if req.image_name.len() > MAX_IMAGE_NAME || !req.image_name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "image_name",
            format!("must be at most {MAX_IMAGE_NAME} printable ASCII characters without spaces"),
        ));
    }
    if !req.app_name.is_empty() {
        check_app_name(&req.app_name)?;
    }
    let config = if req.app_config.is_empty() {
        if req.app_name.is_empty() {
            return Err(invalid("app_config", "required (a wendy.json), or give app_name".into()));
        }
        app_config::parse(serde_json::json!({ "appId": req.app_name }).to_string().as_bytes())?
    } else {
        app_config::parse(&req.app_config)?
    };
    let name = if req.app_name.is_empty() { config.container_id() } else { req.app_name.clone() };
    let mut args: Vec<String> = req.cmd.split_whitespace().map(str::to_owned).collect();
    args.extend(req.user_args);
    if args.len() > MAX_ARGS {
        return Err(invalid("user_args", format!("more than {MAX_ARGS} arguments")));
    }
    if let Some(bad) = args.iter().find(|a| a.len() > MAX_STRING || a.contains('\0')) {
        let reason = format!("an argument is longer than {MAX_STRING} bytes or contains NUL ({} bytes)", bad.len());
        return Err(invalid("user_args", reason));
    }
    let working_dir = match req.working_dir.as_str() {
        "" => None,
        dir if dir.starts_with('/') && dir.len() <= MAX_PATH && !dir.contains('\0') => Some(dir.to_owned()),
        _ => return Err(invalid("working_dir", format!("must be an absolute path of at most {MAX_PATH} bytes"))),
    };
    let restart = restart_policy(req.restart_policy.as_ref())?.unwrap_or(RestartPolicy::UnlessStopped);
    let mut app = NewApp::new(config, req.image_name);
    app.name = name;
    if !args.is_empty() {
        app.config.args = Some(args);
    }
    app.working_dir = working_dir;
    app.restart = restart;
    Ok(CreateSpec { app })
}

/// The service, v1 and v2, over the apps once containerd is reached.
#[derive(Clone, Debug)]
pub struct ContainerService {
    apps: Arc<ArcSwapOption<Apps>>,
}

/// What the service answers while containerd is unreachable.
const NO_CONTAINERD: &str =
    "containerd is not reachable on this device, so apps are unavailable; the agent keeps trying (see its log)";

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl ContainerService {
    /// The service over `apps`, which [`connect_loop`] fills.
    pub fn new(apps: Arc<ArcSwapOption<Apps>>) -> Self {
        Self { apps }
    }

    fn apps(&self) -> Result<Arc<Apps>, Status> {
        self.apps.load_full().ok_or_else(|| Status::unavailable(NO_CONTAINERD))
    }

    async fn create(&self, req: v1::CreateContainerRequest) -> Result<(), Status> {
        let apps = self.apps()?;
        let spec = create_spec(req)?;
        apps.create(spec).await?;
        Ok(())
    }

    async fn start<T, F>(&self, name: String, restart: Option<RestartPolicy>, wrap: F) -> Result<Boxed<T>, Status>
    where
        T: Send + 'static,
        F: Fn(Output) -> T + Send + 'static,
    {
        let apps = self.apps()?;
        let rx = apps.start(name, restart).await?;
        Ok(Box::pin(ReceiverStream::new(rx).map(move |r| r.map(&wrap))))
    }

    /// `AttachContainer`, v1 or v2: `parse` takes each message apart,
    /// `wrap` makes each output item the version's message.
    async fn attach<R, T, P, F>(&self, mut input: Streaming<R>, parse: P, wrap: F) -> Result<Boxed<T>, Status>
    where
        R: Send + 'static,
        T: Send + 'static,
        P: Fn(R) -> AttachIn + Send + 'static,
        F: Fn(Output) -> T + Send + 'static,
    {
        let apps = self.apps()?;
        let first = tokio::time::timeout(ATTACH_FIRST_MESSAGE, input.message()).await.map_err(|_| {
            Status::deadline_exceeded(format!("no first message (app_name) within {}s", ATTACH_FIRST_MESSAGE.as_secs()))
        })??;
        let name = match first.map(&parse) {
            Some(AttachIn::App(name)) => name,
            _ => return Err(Status::invalid_argument("app_name: the first message must name the app")),
        };
        let rx = apps.attach(name, Box::pin(input.map(move |r| r.map(&parse)))).await?;
        Ok(Box::pin(ReceiverStream::new(rx).map(move |r| r.map(&wrap))))
    }

    async fn list(&self) -> Result<Vec<AppStatus>, Status> {
        Ok(self.apps()?.list().await?)
    }
}

/// Whether the app's task counts as running for `running_state`.
fn is_running(state: AppState) -> bool {
    matches!(state, AppState::Running { .. } | AppState::Paused)
}

#[tonic::async_trait]
impl V1Service for ContainerService {
    async fn create_container(
        &self,
        request: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        self.create(request.into_inner()).await?;
        Ok(Response::new(v1::CreateContainerResponse {}))
    }

    type CreateContainerWithProgressStream = Boxed<v1::CreateContainerProgressResponse>;

    async fn create_container_with_progress(
        &self,
        request: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<Self::CreateContainerWithProgressStream>, Status> {
        use v1::create_container_progress::Phase;
        use v1::create_container_progress_response::ResponseType;
        let apps = self.apps()?;
        let spec = create_spec(request.into_inner())?;
        let progress = |phase: Phase| v1::CreateContainerProgressResponse {
            response_type: Some(ResponseType::Progress(v1::CreateContainerProgress {
                phase: phase as i32,
                ..Default::default()
            })),
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            // The runtime unpacks and creates in one step; layer-level
            // progress is not reported.
            if tx.send(Ok(progress(Phase::Unpacking))).await.is_err() {
                return;
            }
            let result = apps.create(spec).await;
            let last = match result {
                Ok(()) => {
                    let _ = tx.send(Ok(progress(Phase::Complete))).await;
                    Ok(v1::CreateContainerProgressResponse {
                        response_type: Some(ResponseType::Completed(v1::CreateContainerResponse {})),
                    })
                }
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type StartContainerStream = Boxed<v1::RunContainerLayersResponse>;

    async fn start_container(
        &self,
        request: Request<v1::StartContainerRequest>,
    ) -> Result<Response<Self::StartContainerStream>, Status> {
        use v1::run_container_layers_response::{ConsoleOutput, ResponseType, Started};
        let req = request.into_inner();
        let restart = restart_policy(req.restart_policy.as_ref())?;
        let stream = self
            .start(req.app_name, restart, |o| v1::RunContainerLayersResponse {
                response_type: Some(match o {
                    Output::Started => ResponseType::Started(Started {}),
                    Output::Line(line) => ResponseType::StdoutOutput(ConsoleOutput { data: with_newline(line) }),
                }),
            })
            .await?;
        Ok(Response::new(stream))
    }

    type AttachContainerStream = Boxed<v1::RunContainerLayersResponse>;

    async fn attach_container(
        &self,
        request: Request<Streaming<v1::AttachContainerRequest>>,
    ) -> Result<Response<Self::AttachContainerStream>, Status> {
        use v1::attach_container_request::RequestType as In;
        use v1::run_container_layers_response::{ConsoleOutput, ResponseType, Started};
        let parse = |m: v1::AttachContainerRequest| match m.request_type {
            Some(In::AppName(name)) => AttachIn::App(name),
            Some(In::StdinData(data)) => AttachIn::Stdin(data),
            None => AttachIn::Empty,
        };
        let stream = self
            .attach(request.into_inner(), parse, |o| v1::RunContainerLayersResponse {
                response_type: Some(match o {
                    Output::Started => ResponseType::Started(Started {}),
                    Output::Line(line) => ResponseType::StdoutOutput(ConsoleOutput { data: with_newline(line) }),
                }),
            })
            .await?;
        Ok(Response::new(stream))
    }

    async fn stop_container(
        &self,
        request: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        self.apps()?.stop(&request.into_inner().app_name).await?;
        Ok(Response::new(v1::StopContainerResponse {}))
    }

    async fn delete_container(
        &self,
        request: Request<v1::DeleteContainerRequest>,
    ) -> Result<Response<v1::DeleteContainerResponse>, Status> {
        let req = request.into_inner();
        self.apps()?.delete(&req.app_name, req.delete_image, req.delete_volumes).await?;
        Ok(Response::new(v1::DeleteContainerResponse {}))
    }

    type ListContainersStream = Boxed<v1::ListContainersResponse>;

    async fn list_containers(
        &self,
        _request: Request<v1::ListContainersRequest>,
    ) -> Result<Response<Self::ListContainersStream>, Status> {
        use v1_shared::AppRunningState as State;
        let items = self.list().await?.into_iter().map(|a| {
            let running_state = if is_running(a.state) { State::Running } else { State::Stopped };
            Ok(v1::ListContainersResponse {
                container: Some(v1_shared::AppContainer {
                    app_name: a.name,
                    app_version: a.version,
                    running_state: running_state as i32,
                    failure_count: a.failures,
                    mcp_port: 0,
                }),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(items.collect::<Vec<_>>()))))
    }

    async fn list_volumes(
        &self,
        _request: Request<v1::ListVolumesRequest>,
    ) -> Result<Response<v1::ListVolumesResponse>, Status> {
        Ok(Response::new(v1::ListVolumesResponse { volumes: self.apps()?.volumes().await? }))
    }

    async fn remove_volume(
        &self,
        request: Request<v1::RemoveVolumeRequest>,
    ) -> Result<Response<v1::RemoveVolumeResponse>, Status> {
        self.apps()?.remove_volume(&request.into_inner().name).await?;
        Ok(Response::new(v1::RemoveVolumeResponse {}))
    }

    async fn list_container_stats(
        &self,
        _request: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        Ok(Response::new(v1::ListContainerStatsResponse { stats: self.apps()?.stats().await? }))
    }
}

#[tonic::async_trait]
impl V2Service for ContainerService {
    type StartContainerStream = Boxed<v2::ContainerStreamResponse>;

    async fn start_container(
        &self,
        request: Request<v2::StartContainerRequest>,
    ) -> Result<Response<Self::StartContainerStream>, Status> {
        use v2::container_stream_response::{ConsoleOutput, ResponseType, Started};
        let stream = self
            .start(request.into_inner().app_name, None, |o| v2::ContainerStreamResponse {
                response_type: Some(match o {
                    Output::Started => ResponseType::Started(Started {}),
                    Output::Line(line) => ResponseType::StdoutOutput(ConsoleOutput { data: with_newline(line) }),
                }),
            })
            .await?;
        Ok(Response::new(stream))
    }

    type AttachContainerStream = Boxed<v2::ContainerStreamResponse>;

    async fn attach_container(
        &self,
        request: Request<Streaming<v2::AttachContainerRequest>>,
    ) -> Result<Response<Self::AttachContainerStream>, Status> {
        use v2::attach_container_request::RequestType as In;
        use v2::container_stream_response::{ConsoleOutput, ResponseType, Started};
        let parse = |m: v2::AttachContainerRequest| match m.request_type {
            Some(In::AppName(name)) => AttachIn::App(name),
            Some(In::StdinData(data)) => AttachIn::Stdin(data),
            None => AttachIn::Empty,
        };
        let stream = self
            .attach(request.into_inner(), parse, |o| v2::ContainerStreamResponse {
                response_type: Some(match o {
                    Output::Started => ResponseType::Started(Started {}),
                    Output::Line(line) => ResponseType::StdoutOutput(ConsoleOutput { data: with_newline(line) }),
                }),
            })
            .await?;
        Ok(Response::new(stream))
    }

    async fn stop_container(
        &self,
        request: Request<v2::StopContainerRequest>,
    ) -> Result<Response<v2::StopContainerResponse>, Status> {
        self.apps()?.stop(&request.into_inner().app_name).await?;
        Ok(Response::new(v2::StopContainerResponse {}))
    }

    async fn delete_container(
        &self,
        request: Request<v2::DeleteContainerRequest>,
    ) -> Result<Response<v2::DeleteContainerResponse>, Status> {
        let req = request.into_inner();
        self.apps()?.delete(&req.app_name, req.delete_image, req.delete_volumes).await?;
        Ok(Response::new(v2::DeleteContainerResponse {}))
    }

    type ListContainersStream = Boxed<v2::ListContainersResponse>;

    async fn list_containers(
        &self,
        _request: Request<v2::ListContainersRequest>,
    ) -> Result<Response<Self::ListContainersStream>, Status> {
        use v2::AppRunningState as State;
        let items = self.list().await?.into_iter().map(|a| {
            let running_state = if is_running(a.state) { State::Running } else { State::Stopped };
            Ok(v2::ListContainersResponse {
                container: Some(v2::AppContainer {
                    app_name: a.name,
                    app_version: a.version,
                    running_state: running_state as i32,
                    failure_count: a.failures,
                }),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(items.collect::<Vec<_>>()))))
    }

    async fn list_volumes(
        &self,
        _request: Request<v2::ListVolumesRequest>,
    ) -> Result<Response<v2::ListVolumesResponse>, Status> {
        let volumes = self.apps()?.volumes().await?;
        Ok(Response::new(v2::ListVolumesResponse {
            volumes: volumes
                .into_iter()
                .map(|v| v2::VolumeInfo {
                    name: v.name,
                    path: v.path,
                    size_bytes: v.size_bytes,
                    created_at: v.created_at,
                    used_by: v.used_by,
                })
                .collect(),
        }))
    }

    async fn remove_volume(
        &self,
        request: Request<v2::RemoveVolumeRequest>,
    ) -> Result<Response<v2::RemoveVolumeResponse>, Status> {
        self.apps()?.remove_volume(&request.into_inner().name).await?;
        Ok(Response::new(v2::RemoveVolumeResponse {}))
    }

    async fn list_container_stats(
        &self,
        _request: Request<v2::ListContainerStatsRequest>,
    ) -> Result<Response<v2::ListContainerStatsResponse>, Status> {
        let stats = self.apps()?.stats().await?;
        Ok(Response::new(v2::ListContainerStatsResponse {
            stats: stats
                .into_iter()
                .map(|s| v2::ContainerStats {
                    app_name: s.app_name,
                    memory_bytes: s.memory_bytes,
                    storage_bytes: s.storage_bytes,
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl OurService for ContainerService {
    type ReadAppLogsStream = Boxed<ours::ReadAppLogsResponse>;

    async fn read_app_logs(
        &self,
        request: Request<ours::ReadAppLogsRequest>,
    ) -> Result<Response<Self::ReadAppLogsStream>, Status> {
        let req = request.into_inner();
        let follow = if req.follow { Follow::Yes } else { Follow::No };
        let rx = self.apps()?.logs(&req.app_name, follow).await?;
        let stream = ReceiverStream::new(rx).map(|r| r.map(|data| ours::ReadAppLogsResponse { data: data.to_vec() }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_app_details(
        &self,
        _request: Request<ours::ListAppDetailsRequest>,
    ) -> Result<Response<ours::ListAppDetailsResponse>, Status> {
        let apps = self
            .list()
            .await?
            .into_iter()
            .map(|a| ours::AppDetails { restart_policy: a.restart.label(), image: a.image, app_name: a.name })
            .collect();
        Ok(Response::new(ours::ListAppDetailsResponse { apps }))
    }
}

/// `line` with its `\n` back.
fn with_newline(line: Bytes) -> Vec<u8> {
    let mut data = Vec::with_capacity(line.len() + 1);
    data.extend_from_slice(&line);
    data.push(b'\n');
    data
}

/// Connects to containerd at `socket` until it answers, puts the apps in
/// `slot`, then runs the restart [`supervisor`] (which starts the apps
/// whose policy says they should run). While containerd is unreachable it
/// logs one warning and tries again every [`CONNECT_RETRY`]. Runs until
/// aborted (unprovisioning, shutdown).
pub async fn connect_loop(slot: Arc<ArcSwapOption<Apps>>, socket: PathBuf, options: RuntimeOptions) {
    let mut warned = false;
    let apps = loop {
        match Apps::connect(&socket, options.clone()).await {
            Ok(apps) => break apps,
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        socket = %socket.display(),
                        error = %e,
                        retry = ?CONNECT_RETRY,
                        "containerd is unreachable: apps are not available and `containers` is not in featureset; \
                         everything else is served; trying again"
                    );
                    warned = true;
                }
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        }
    };
    tracing::info!(socket = %socket.display(), "containerd reached: apps are available");
    slot.store(Some(apps.clone()));
    supervisor::run(apps).await;
}

#[cfg(test)]
mod tests;
