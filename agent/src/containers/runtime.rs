//! The app runtime: an image already in containerd's store (namespace
//! [`NAMESPACE`], put there by the registry) becomes a running, sandboxed
//! app, through containerd's own services over the agent's one connection
//! ([`ContainerdStore::channel`]). Nothing here shells out.
//!
//! | step | containerd calls |
//! |------|------------------|
//! | [`Runtime::unpack`] | `Images/Get`, `Content/Read` of the index (the entry for [`image::host_platform`]), manifest and config; per layer, unless its chain id is already a snapshot: `Snapshots/Prepare` (`overlayfs`, parent = the previous chain id), `Diff/Apply`, `Snapshots/Commit` as the chain id; `Content/Update` of the config's `containerd.io/gc.ref.snapshot.overlayfs` label, so the image roots its snapshots. All under one lease |
//! | [`Runtime::create`] | the unpack, then `Snapshots/Prepare` of the app's root (key = app name, parent = the image's chain id) and `Containers/Create` (id = app name, runtime [`RUNC_RUNTIME`], the OCI spec from [`sandbox::build_spec`], labels [`LABEL_IMAGE`], [`LABEL_RESTART`], [`LABEL_STOPPED`]), under the same lease |
//! | [`Runtime::start`] | `Snapshots/Mounts`, `Tasks/Create` (stdout and stderr: the app's log file; stdin: its fifo, [`stdin`]), `Tasks/Start` |
//! | [`Runtime::wait`], [`Runtime::kill`] | `Tasks/Wait`, `Tasks/Kill` |
//! | [`Runtime::stop`] | `Tasks/Kill` `SIGTERM`, `Tasks/Wait` up to a timeout, then `SIGKILL` to every process, `Tasks/Delete` |
//! | [`Runtime::delete`] | the stop's kill, `Tasks/Delete`, `Containers/Delete`, `Snapshots/Remove`, optionally `Images/Delete` (synchronous collection) when no other app uses the image |
//! | [`Runtime::list`] | `Containers/List`, `Tasks/Get` per app |
//!
//! **Output goes to files, written by containerd's shim.** A task's stdout
//! and stderr are `file://<log dir>/<app>.log`
//! ([`logs::file_uri`]); containerd's runc shim opens the file in append
//! mode and copies the app's pipes into it. The alternative, fifos drained
//! by the agent, ties the app to the agent: while the agent is down
//! (restart, update, crash) nobody drains them, the pipe buffer fills and
//! the app blocks in `write`, and what it wrote is lost with the fifo. With
//! a file the shim keeps writing whatever the agent does, the output
//! survives an agent restart, and [`logs::lines`] reads it back from any
//! offset. The cost: stdout and stderr share one file (the runtime gives
//! both the same URI, so they cannot be told apart afterwards), and the
//! file grows until the app is deleted or the caller truncates it (no
//! rotation yet). And with both streams in one file, containerd 1.6's runc
//! shim can lose a stderr line written just before the app's stdout ends:
//! its stdout copier closes the file the stderr copier still writes to
//! (seen in the host tests, about one run in four).
//!
//! **Leases and collection.** Snapshots being unpacked and the app's root
//! before its container exists are held by a lease that expires by itself
//! ([`UNPACK_LEASE`]) should the agent die mid-way, and is deleted when the
//! step ends. After that the image roots its committed layers (through the
//! config's label) and the container roots its root snapshot. Deleting an
//! image frees its snapshots only once nothing else holds its config. The
//! registry holds each pushed blob under an upload lease
//! ([`super::containerd::DEFAULT_UPLOAD_LEASE`]) only until a manifest that
//! references it is stored and its image exists; then the lease is
//! released and the image alone roots the blob. So [`Runtime::delete`]
//! with its image (`Images/Delete` with `sync`) frees the image's content
//! and unpacked layers before it returns, unless another image or a
//! container still uses them. A blob that no manifest references keeps its
//! lease, and is collected once that expires.
//!
//! **Concurrency.** The caller runs one operation per app at a time (the
//! container service serialises them); operations on different apps may
//! run concurrently, and two unpacks of the same layer are harmless.
//!
//! **Restart policy.** The runtime only records it ([`RestartPolicy`] in
//! [`LABEL_RESTART`]) and whether the app was stopped on purpose
//! ([`LABEL_STOPPED`], set by [`Runtime::stop`], cleared by
//! [`Runtime::start`]); the supervisor that acts on it reads both back
//! from [`Runtime::list`].

pub mod image;
pub mod logs;
pub mod stdin;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    ApplyRequest, Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteImageRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest,
    GetContainerRequest, GetImageRequest, GetRequest as GetTaskRequest, Info as ContentInfo, KillRequest,
    ListContainersRequest, StartRequest, UpdateContainerRequest, UpdateRequest as UpdateContentRequest, WaitRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use containerd_client::types::Mount;
use futures::{Stream, TryStreamExt};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use self::image::{Desc, Document, ImageError, Platform};
use self::logs::Follow;
use self::stdin::{Pipes, StdinError};
use super::app_config::{AppConfig, Entitlement};
use super::containerd::{expiry, ContainerdError, ContainerdStore, LEASE_HEADER, NAMESPACE, NAMESPACE_HEADER};
use super::sandbox::{self, DevFs, SandboxError, SandboxOptions};
use super::{is_safe_name, HostDevices};
use crate::registry::digest::Digest;
use crate::registry::manifests::MAX_MANIFEST_BYTES;
use crate::registry::store::{ContentStore, StoreError};

/// The snapshotter of every app and image layer.
pub const SNAPSHOTTER: &str = "overlayfs";

/// The runtime (shim) every app runs under.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// The `Any` type URL containerd registers for an OCI runtime spec (its
/// value is the spec's JSON).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Container label: the image reference the app was created from.
pub const LABEL_IMAGE: &str = "sh.wendy.image";

/// Container label: the app's [`RestartPolicy`] ([`RestartPolicy::label`]).
pub const LABEL_RESTART: &str = "sh.wendy.restart";

/// Container label: `true` once the app was stopped on purpose (a
/// supervisor must not restart it), `false` after a start.
pub const LABEL_STOPPED: &str = "sh.wendy.stopped";

/// Container label: the app's `wendy.json` `version` (may be empty).
pub const LABEL_VERSION: &str = "sh.wendy.version";

/// Container label: the app's `persist` volume names, comma-separated.
pub const LABEL_VOLUMES: &str = "sh.wendy.volumes";

/// Container label: how many times a supervisor restarted the app after a
/// failed exit (decimal; missing means 0).
pub const LABEL_FAILURES: &str = "sh.wendy.failures";

/// The content label by which an image's config roots its unpacked
/// snapshot chain (containerd's collector follows it).
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.overlayfs";

/// How long a lease held while unpacking or creating lives at most (it is
/// deleted when the step ends; the expiry only covers a crash).
pub const UNPACK_LEASE: Duration = Duration::from_secs(60 * 60);

/// How long [`Runtime::stop`] waits after `SIGTERM` unless told otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an app has to exit after `SIGKILL` before the runtime reports
/// [`RuntimeError::StopTimeout`].
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The lease label that sets its expiry (RFC 3339, UTC).
const GC_EXPIRE: &str = "containerd.io/gc.expire";

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Not a safe name ([`is_safe_name`]).
    #[error("{0:?} is not a valid app name")]
    BadName(String),
    /// No app (container) of that name.
    #[error("no app named {0:?}")]
    NotFound(String),
    /// An app of that name exists.
    #[error("an app named {0:?} already exists")]
    AlreadyExists(String),
    /// The app's task is running (or paused, or created).
    #[error("app {0:?} is already running")]
    AlreadyRunning(String),
    /// The app has no task.
    #[error("app {0:?} is not running")]
    NotRunning(String),
    /// The app's stdin cannot be written.
    #[error("app {app:?}: {source}")]
    Stdin {
        /// The app.
        app: String,
        /// Why.
        #[source]
        source: StdinError,
    },
    /// The image reference is not in containerd's store.
    #[error("image {0:?} is not on this device")]
    ImageNotFound(String),
    /// The image cannot be run.
    #[error("image {image}: {source}")]
    Image {
        /// The image reference.
        image: String,
        /// Why.
        #[source]
        source: ImageError,
    },
    /// Content the image references is missing or does not match its
    /// digest.
    #[error("image {image}: content {digest}: {reason}")]
    Content {
        /// The image reference.
        image: String,
        /// The content's digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer unpacked to something other than the config's `diff_id`.
    #[error("image {image}: layer {index} unpacked as {applied}, the config says {expected}")]
    LayerMismatch {
        /// The image reference.
        image: String,
        /// The layer's index, base 0.
        index: usize,
        /// The config's `diff_id`.
        expected: String,
        /// What containerd applied.
        applied: String,
    },
    /// The app did not exit after `SIGKILL`.
    #[error("app {app:?} did not exit within {waited:?} of SIGKILL")]
    StopTimeout {
        /// The app.
        app: String,
        /// How long the runtime waited after `SIGKILL`.
        waited: Duration,
    },
    /// A file or directory of the runtime's.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What the path is.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory option that is not absolute.
    #[error("{0}: not an absolute path")]
    NotAbsolute(&'static str),
    /// The sandbox refused the app.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The OCI spec could not be encoded.
    #[error("encoding the runtime spec: {0}")]
    Spec(#[source] serde_json::Error),
    /// containerd refused or failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

impl RuntimeError {
    /// containerd's status code, if containerd answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Containerd(e) => e.code(),
            _ => None,
        }
    }
}

/// `call`'s failure as a [`RuntimeError`].
fn failed(call: &'static str) -> impl FnOnce(Status) -> RuntimeError {
    move |status| RuntimeError::Containerd(ContainerdError::Call { call, status })
}

/// containerd answered something unusable.
fn protocol(call: &'static str, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Containerd(ContainerdError::Protocol { call, detail: detail.into() })
}

/// `Ok(None)` for `NotFound`.
fn not_found_is_none<T>(r: Result<T, RuntimeError>) -> Result<Option<T>, RuntimeError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(Code::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the app does when its process ends (recorded in [`LABEL_RESTART`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restarted.
    #[default]
    No,
    /// Restarted whatever its exit, unless stopped on purpose.
    UnlessStopped,
    /// Restarted after a non-zero exit, at most `max_retries` times in a
    /// row (0: without limit).
    OnFailure {
        /// The retry limit.
        max_retries: u32,
    },
}

impl RestartPolicy {
    /// The label value: `no`, `unless-stopped`, `on-failure:<n>`.
    pub fn label(&self) -> String {
        match self {
            Self::No => "no".to_owned(),
            Self::UnlessStopped => "unless-stopped".to_owned(),
            Self::OnFailure { max_retries } => format!("on-failure:{max_retries}"),
        }
    }

    /// Parses [`label`](Self::label)'s output.
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "no" => Some(Self::No),
            "unless-stopped" => Some(Self::UnlessStopped),
            _ => {
                let n = label.strip_prefix("on-failure:")?;
                Some(Self::OnFailure { max_retries: n.parse().ok()? })
            }
        }
    }
}

/// An app to create.
#[derive(Clone, Debug)]
pub struct NewApp {
    /// The app's name: its container id, snapshot key and log file name.
    pub name: String,
    /// The image reference in containerd's store, e.g. `hello:v1`.
    pub image: String,
    /// The validated `wendy.json`.
    pub config: AppConfig,
    /// What happens when it exits.
    pub restart: RestartPolicy,
    /// Whether its root filesystem is writable (read-only by default).
    pub writable_rootfs: bool,
    /// The process's working directory instead of the image's
    /// `WorkingDir` (absolute; the caller validates it).
    pub working_dir: Option<String>,
}

impl NewApp {
    /// An app named by its config ([`AppConfig::container_id`]), with
    /// [`RestartPolicy::No`] and a read-only root.
    pub fn new(config: AppConfig, image: impl Into<String>) -> Self {
        Self {
            name: config.container_id(),
            image: image.into(),
            config,
            restart: RestartPolicy::No,
            writable_rootfs: false,
            working_dir: None,
        }
    }
}

/// The state of an app's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppState {
    /// No task: never started, or stopped.
    Stopped,
    /// A task created but not started.
    Created,
    /// Running, with the pid of its first process (in the host's pid
    /// namespace).
    Running {
        /// The pid.
        pid: u32,
    },
    /// Paused (or pausing).
    Paused,
    /// Its process ended with `code` and the task was not deleted yet.
    Exited {
        /// The exit status (128 + signal for a signal).
        code: u32,
    },
    /// containerd reports a state it does not know.
    Unknown,
}

/// An app as [`Runtime::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// The image reference ([`LABEL_IMAGE`]).
    pub image: String,
    /// Its task's state.
    pub state: AppState,
    /// Its restart policy; [`RestartPolicy::No`] when the label is missing
    /// or unreadable.
    pub restart: RestartPolicy,
    /// Whether it was stopped on purpose ([`LABEL_STOPPED`]).
    pub stopped_on_purpose: bool,
    /// Its `wendy.json` version ([`LABEL_VERSION`]).
    pub version: String,
    /// Its `persist` volumes ([`LABEL_VOLUMES`]).
    pub volumes: Vec<String>,
    /// Restarts after a failed exit ([`LABEL_FAILURES`]; 0 when missing
    /// or unreadable).
    pub failures: u32,
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit status (128 + signal for a signal).
    pub code: u32,
    /// When, if containerd says.
    pub exited_at: Option<SystemTime>,
}

/// An image unpacked into snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// The chain id of the whole layer stack: the snapshot an app's root
    /// is prepared from (`None` for an image without layers).
    pub chain_id: Option<Digest>,
    /// The manifest used (the host's platform's, for an index).
    pub manifest: Digest,
    /// What the image's config gives the process.
    pub config: super::ImageConfig,
}

/// Where the runtime keeps what is not in containerd.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The directory of the apps' log files, `<log_dir>/<app>.log`
    /// (absolute; created when needed). On a device, on the data
    /// partition.
    pub log_dir: PathBuf,
    /// The directory of `persist` volumes (absolute; see
    /// [`sandbox::volume_dir`]).
    pub volumes_root: PathBuf,
}

/// The app runtime over containerd. Clones share the connection.
#[derive(Clone)]
pub struct Runtime {
    store: ContainerdStore,
    channel: Channel,
    namespace: AsciiMetadataValue,
    options: RuntimeOptions,
    devices: Arc<dyn HostDevices + Send + Sync>,
    platform: Platform,
    stdin: Pipes,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("options", &self.options).field("platform", &self.platform).finish()
    }
}

impl Runtime {
    /// The content store over the same connection (the registry writes
    /// into it).
    pub fn store(&self) -> &ContainerdStore {
        &self.store
    }

    /// A runtime over `store`'s connection, with the host's `/dev`
    /// ([`DevFs`]) and platform.
    pub fn new(store: &ContainerdStore, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        if !options.log_dir.is_absolute() {
            return Err(RuntimeError::NotAbsolute("log directory"));
        }
        if !options.volumes_root.is_absolute() {
            return Err(RuntimeError::NotAbsolute("volumes root"));
        }
        Ok(Self {
            store: store.clone(),
            channel: store.channel(),
            namespace: MetadataValue::from_static(NAMESPACE),
            options,
            devices: Arc::new(DevFs::default()),
            platform: image::host_platform(),
            stdin: Pipes::default(),
        })
    }

    /// Uses `devices` as the host's device nodes (tests pass a fixed list).
    pub fn with_devices(mut self, devices: Arc<dyn HostDevices + Send + Sync>) -> Self {
        self.devices = devices;
        self
    }

    /// The log file of app `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.options.log_dir.join(format!("{name}.log"))
    }

    /// The stdin fifo of app `name` ([`stdin`]).
    pub fn stdin_path(&self, name: &str) -> PathBuf {
        stdin::path(&self.options.log_dir, name)
    }

    /// Writes `data` to the stdin of app `name`, started by this runtime
    /// ([`stdin`]); waits while the app is not reading.
    pub async fn write_stdin(&self, name: &str, data: &[u8]) -> Result<(), RuntimeError> {
        check_name(name)?;
        let stdin_err = |source| RuntimeError::Stdin { app: name.to_owned(), source };
        self.stdin.write(name, &self.stdin_path(name), data).await.map_err(stdin_err)
    }

    /// The lines of app `name`'s output ([`logs::lines`]): what it wrote
    /// so far, then, with [`Follow::Yes`], what it writes next.
    pub fn output(
        &self,
        name: &str,
        follow: Follow,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, RuntimeError> {
        check_name(name)?;
        Ok(logs::lines(self.log_path(name), follow))
    }

    // ----- requests -----

    /// `msg` in the runtime's namespace.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(NAMESPACE_HEADER, self.namespace.clone());
        req
    }

    /// `msg` in the namespace, under `lease`.
    fn leased<T>(&self, msg: T, lease: &str) -> Result<tonic::Request<T>, RuntimeError> {
        let mut req = self.request(msg);
        let value =
            lease.parse::<AsciiMetadataValue>().map_err(|_| protocol("Leases/Create", "lease id is not ASCII"))?;
        req.metadata_mut().insert(LEASE_HEADER, value);
        Ok(req)
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    // ----- leases -----

    async fn create_lease(&self) -> Result<String, RuntimeError> {
        const CALL: &str = "Leases/Create";
        let labels = HashMap::from([(GC_EXPIRE.to_owned(), expiry(UNPACK_LEASE))]);
        let req = self.request(CreateLeaseRequest { id: String::new(), labels });
        let lease = LeasesClient::new(self.channel.clone()).create(req).await.map_err(failed(CALL))?.into_inner();
        match lease.lease {
            Some(l) if !l.id.is_empty() => Ok(l.id),
            _ => Err(protocol(CALL, "no lease id")),
        }
    }

    /// Deletes `lease`, logging a failure (it expires by itself).
    async fn release_lease(&self, lease: &str) {
        let req = self.request(DeleteLeaseRequest { id: lease.to_owned(), sync: false });
        if let Err(status) = LeasesClient::new(self.channel.clone()).delete(req).await {
            tracing::warn!(lease, error = %status.message(), "containerd: deleting a lease");
        }
    }

    /// Runs `step` under a fresh lease, deleted afterwards.
    async fn with_lease<T, F>(&self, step: impl FnOnce(String) -> F) -> Result<T, RuntimeError>
    where
        F: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let lease = self.create_lease().await?;
        let result = step(lease.clone()).await;
        self.release_lease(&lease).await;
        result
    }

    // ----- unpack -----

    /// Unpacks image `image_ref` into `overlayfs` snapshots, one per layer
    /// named by its chain id; layers already unpacked are skipped.
    pub async fn unpack(&self, image_ref: &str) -> Result<Unpacked, RuntimeError> {
        self.with_lease(|lease| async move { self.unpack_leased(image_ref, &lease).await }).await
    }

    async fn unpack_leased(&self, image_ref: &str, lease: &str) -> Result<Unpacked, RuntimeError> {
        let image_err = |source| RuntimeError::Image { image: image_ref.to_owned(), source };
        let (manifest_desc, config, layers) = self.manifest(image_ref).await?;
        let config_bytes = self.read_json(image_ref, &config, image::MAX_CONFIG_BYTES).await?;
        let parsed = image::parse_config(&config_bytes, &self.platform).map_err(image_err)?;
        if parsed.diff_ids.len() != layers.len() {
            let source = ImageError::LayerCount { layers: layers.len(), diff_ids: parsed.diff_ids.len() };
            return Err(image_err(source));
        }
        let chain = image::chain_ids(&parsed.diff_ids);
        let mut parent = None;
        for (index, ((desc, diff_id), chain_id)) in layers.iter().zip(&parsed.diff_ids).zip(&chain).enumerate() {
            let layer = Layer { index, desc, diff_id, parent, chain_id };
            self.apply_layer(image_ref, lease, &layer).await?;
            parent = Some(chain_id);
        }
        if let Some(top) = chain.last() {
            self.root_snapshot(&config.digest, top).await?;
        }
        let manifest = Digest::parse(&manifest_desc.digest)
            .map_err(|e| protocol("Images/Get", format!("manifest digest: {e}")))?;
        Ok(Unpacked { chain_id: chain.last().cloned(), manifest, config: parsed.image })
    }

    /// The image's manifest for this platform: its target, or the index
    /// entry for [`image::host_platform`].
    /// Image `image_ref`'s manifest for this platform: its descriptor, its
    /// config and its layers.
    async fn manifest(&self, image_ref: &str) -> Result<(Desc, Desc, Vec<Desc>), RuntimeError> {
        let image_err = |source| RuntimeError::Image { image: image_ref.to_owned(), source };
        let manifest_desc = self.resolve_manifest(image_ref).await?;
        let manifest = self.read_json(image_ref, &manifest_desc, MAX_MANIFEST_BYTES).await?;
        match image::parse_document(&manifest_desc.media_type, &manifest).map_err(image_err)? {
            Document::Manifest { config, layers } => Ok((manifest_desc, config, layers)),
            Document::Index(_) => {
                Err(image_err(ImageError::Malformed { what: "index", reason: "an index inside an index".into() }))
            }
        }
    }

    async fn resolve_manifest(&self, image_ref: &str) -> Result<Desc, RuntimeError> {
        let req = self.request(GetImageRequest { name: image_ref.to_owned() });
        let r = ImagesClient::new(self.channel.clone()).get(req).await.map_err(failed("Images/Get"));
        let target = not_found_is_none(r)?
            .and_then(|resp| resp.into_inner().image)
            .and_then(|i| i.target)
            .ok_or_else(|| RuntimeError::ImageNotFound(image_ref.to_owned()))?;
        let target = image::from_containerd(&target);
        let image_err = |source| RuntimeError::Image { image: image_ref.to_owned(), source };
        image::check_desc("image target", &target).map_err(image_err)?;
        let bytes = self.read_json(image_ref, &target, MAX_MANIFEST_BYTES).await?;
        match image::parse_document(&target.media_type, &bytes).map_err(image_err)? {
            Document::Manifest { .. } => Ok(target),
            Document::Index(entries) => image::select_platform(&entries, &self.platform)
                .cloned()
                .ok_or_else(|| image_err(ImageError::NoPlatform(self.platform.to_string()))),
        }
    }

    /// Reads content `desc` whole (at most `max` bytes) and checks its
    /// digest and size.
    async fn read_json(&self, image_ref: &str, desc: &Desc, max: usize) -> Result<Vec<u8>, RuntimeError> {
        let content_err = |reason: String| RuntimeError::Content {
            image: image_ref.to_owned(),
            digest: desc.digest.chars().take(80).collect(),
            reason,
        };
        let digest = Digest::parse(&desc.digest).map_err(|e| content_err(e.to_string()))?;
        if usize::try_from(desc.size).map_or(true, |s| s > max) {
            return Err(content_err(format!("{} bytes, more than {max}", desc.size)));
        }
        let store_err = |e: StoreError| content_err(e.to_string());
        let (_, mut stream) =
            self.store.reader(&digest).await.map_err(store_err)?.ok_or_else(|| content_err("missing".into()))?;
        let mut bytes = Vec::new();
        while let Some(piece) = stream.try_next().await.map_err(store_err)? {
            if bytes.len() + piece.len() > max {
                return Err(content_err(format!("more than {max} bytes")));
            }
            bytes.extend_from_slice(&piece);
        }
        if Digest::of(&bytes) != digest || bytes.len() as u64 != desc.size.unsigned_abs() {
            return Err(content_err("does not match its digest and size".into()));
        }
        Ok(bytes)
    }

    /// Whether snapshot `key` exists.
    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let req = self.request(StatSnapshotRequest { snapshotter: SNAPSHOTTER.to_owned(), key: key.to_owned() });
        let r = self.snapshots().stat(req).await.map_err(failed("Snapshots/Stat"));
        Ok(not_found_is_none(r)?.is_some())
    }

    /// Unpacks `layer` as its chain id's snapshot, unless that exists.
    async fn apply_layer(&self, image_ref: &str, lease: &str, layer: &Layer<'_>) -> Result<(), RuntimeError> {
        let Layer { index, desc, diff_id, parent, chain_id } = *layer;
        if self.snapshot_exists(chain_id.as_str()).await? {
            return Ok(());
        }
        let key = format!("wendy-extract-{:016x}-{chain_id}", rand::random::<u64>());
        let parent = parent.map(Digest::to_string).unwrap_or_default();
        let mounts = self.prepare(lease, &key, &parent).await?;
        let result = async {
            let applied = self.apply(desc, mounts).await?;
            if applied != diff_id.as_str() {
                return Err(RuntimeError::LayerMismatch {
                    image: image_ref.to_owned(),
                    index,
                    expected: diff_id.to_string(),
                    applied: applied.chars().take(80).collect(),
                });
            }
            self.commit(lease, chain_id.as_str(), &key).await
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            // Another unpack of the same layer got there first.
            Err(e) if e.code() == Some(Code::AlreadyExists) => {
                self.remove_snapshot(&key).await;
                Ok(())
            }
            Err(e) => {
                self.remove_snapshot(&key).await;
                Err(e)
            }
        }
    }

    /// `Snapshots/Prepare` of active snapshot `key` on `parent` (empty:
    /// none), under `lease`; its mounts.
    async fn prepare(&self, lease: &str, key: &str, parent: &str) -> Result<Vec<Mount>, RuntimeError> {
        let msg = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: key.to_owned(),
            parent: parent.to_owned(),
            labels: HashMap::new(),
        };
        let req = self.leased(msg, lease)?;
        Ok(self.snapshots().prepare(req).await.map_err(failed("Snapshots/Prepare"))?.into_inner().mounts)
    }

    /// `Diff/Apply` of `layer` onto `mounts`; the applied (uncompressed)
    /// digest.
    async fn apply(&self, layer: &Desc, mounts: Vec<Mount>) -> Result<String, RuntimeError> {
        const CALL: &str = "Diff/Apply";
        let msg = ApplyRequest { diff: Some(layer.to_containerd()), mounts, payloads: HashMap::new(), sync_fs: false };
        let req = self.request(msg);
        let resp = DiffClient::new(self.channel.clone()).apply(req).await.map_err(failed(CALL))?.into_inner();
        resp.applied.map(|d| d.digest).ok_or_else(|| protocol(CALL, "no applied descriptor"))
    }

    async fn commit(&self, lease: &str, name: &str, key: &str) -> Result<(), RuntimeError> {
        let msg = CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
            labels: HashMap::new(),
        };
        let req = self.leased(msg, lease)?;
        self.snapshots().commit(req).await.map_err(failed("Snapshots/Commit"))?;
        Ok(())
    }

    /// `Snapshots/Remove` of `key`; `Ok(false)` if it did not exist.
    async fn try_remove_snapshot(&self, key: &str) -> Result<bool, RuntimeError> {
        let req = self.request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.to_owned(), key: key.to_owned() });
        let r = self.snapshots().remove(req).await.map_err(failed("Snapshots/Remove"));
        Ok(not_found_is_none(r)?.is_some())
    }

    /// [`try_remove_snapshot`](Self::try_remove_snapshot), logging a
    /// failure (the lease or the collector cleans up).
    async fn remove_snapshot(&self, key: &str) {
        if let Err(e) = self.try_remove_snapshot(key).await {
            tracing::warn!(key, error = %e, "containerd: removing a snapshot");
        }
    }

    /// Labels the image config `config_digest` with its top snapshot, so
    /// the image roots the unpacked chain.
    async fn root_snapshot(&self, config_digest: &str, top: &Digest) -> Result<(), RuntimeError> {
        let labels = HashMap::from([(GC_REF_SNAPSHOT.to_owned(), top.to_string())]);
        let info = ContentInfo { digest: config_digest.to_owned(), labels, ..Default::default() };
        let mask = prost_types::FieldMask { paths: vec![format!("labels.{GC_REF_SNAPSHOT}")] };
        let req = self.request(UpdateContentRequest { info: Some(info), update_mask: Some(mask) });
        ContentClient::new(self.channel.clone()).update(req).await.map_err(failed("Content/Update"))?;
        Ok(())
    }

    // ----- create -----

    /// Creates app `app`: unpacks its image, builds its sandbox, prepares
    /// its root snapshot and creates its container. It is not started.
    pub async fn create(&self, app: &NewApp) -> Result<(), RuntimeError> {
        check_name(&app.name)?;
        if self.get_container(&app.name).await?.is_some() {
            return Err(RuntimeError::AlreadyExists(app.name.clone()));
        }
        self.with_lease(|lease| async move { self.create_leased(app, &lease).await }).await
    }

    async fn create_leased(&self, app: &NewApp, lease: &str) -> Result<(), RuntimeError> {
        let unpacked = self.unpack_leased(&app.image, lease).await?;
        let spec = self.spec(app, &unpacked)?;
        self.create_volumes(&app.config).await?;
        let parent = unpacked.chain_id.as_ref().map(Digest::to_string).unwrap_or_default();
        if let Err(e) = self.prepare(lease, &app.name, &parent).await {
            if e.code() != Some(Code::AlreadyExists) {
                return Err(e);
            }
            // A root left by an interrupted delete, unless a concurrent
            // create of the same app made it (the caller runs one
            // operation per app at a time; this only narrows the race).
            if self.get_container(&app.name).await?.is_some() {
                return Err(RuntimeError::AlreadyExists(app.name.clone()));
            }
            self.try_remove_snapshot(&app.name).await?;
            self.prepare(lease, &app.name, &parent).await?;
        }
        let container = Container {
            id: app.name.clone(),
            labels: HashMap::from([
                (LABEL_IMAGE.to_owned(), app.image.clone()),
                (LABEL_RESTART.to_owned(), app.restart.label()),
                (LABEL_STOPPED.to_owned(), "false".to_owned()),
                (LABEL_VERSION.to_owned(), app.config.version.clone()),
                (LABEL_VOLUMES.to_owned(), volume_names(&app.config).join(",")),
            ]),
            image: app.image.clone(),
            runtime: Some(ContainerRuntime { name: RUNC_RUNTIME.to_owned(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.to_owned(), value: spec }),
            snapshotter: SNAPSHOTTER.to_owned(),
            snapshot_key: app.name.clone(),
            ..Default::default()
        };
        let req = self.leased(CreateContainerRequest { container: Some(container) }, lease)?;
        if let Err(status) = self.containers().create(req).await {
            self.remove_snapshot(&app.name).await;
            return Err(match status.code() {
                Code::AlreadyExists => RuntimeError::AlreadyExists(app.name.clone()),
                _ => failed("Containers/Create")(status),
            });
        }
        Ok(())
    }

    /// The app's OCI runtime spec, as JSON: the sandbox's, with its cgroup
    /// under `/wendy/<app>`.
    fn spec(&self, app: &NewApp, unpacked: &Unpacked) -> Result<Vec<u8>, RuntimeError> {
        let options = SandboxOptions {
            rootfs: PathBuf::from("rootfs"),
            volumes_root: self.options.volumes_root.clone(),
            writable_rootfs: app.writable_rootfs,
        };
        let mut spec = sandbox::build_spec(&app.config, &unpacked.config, self.devices.as_ref(), &options)?;
        if let Some(linux) = spec.linux_mut().as_mut() {
            linux.set_cgroups_path(Some(Path::new("/").join(cgroup_path(&app.name))));
        }
        if let (Some(dir), Some(process)) = (&app.working_dir, spec.process_mut().as_mut()) {
            process.set_cwd(PathBuf::from(dir));
        }
        serde_json::to_vec(&spec).map_err(RuntimeError::Spec)
    }

    /// Creates the directories of the app's `persist` volumes.
    async fn create_volumes(&self, config: &AppConfig) -> Result<(), RuntimeError> {
        for e in &config.entitlements {
            if let Entitlement::Persist { name, .. } = e {
                let dir = sandbox::volume_dir(&self.options.volumes_root, name);
                tokio::fs::create_dir_all(&dir).await.map_err(|source| RuntimeError::Io {
                    what: "persist volume",
                    path: dir,
                    source,
                })?;
            }
        }
        Ok(())
    }

    // ----- tasks -----

    /// The container `name`, or `None`.
    async fn get_container(&self, name: &str) -> Result<Option<Container>, RuntimeError> {
        let req = self.request(GetContainerRequest { id: name.to_owned() });
        let r = self.containers().get(req).await.map_err(failed("Containers/Get"));
        Ok(not_found_is_none(r)?.and_then(|resp| resp.into_inner().container))
    }

    async fn require_container(&self, name: &str) -> Result<Container, RuntimeError> {
        check_name(name)?;
        self.get_container(name).await?.ok_or_else(|| RuntimeError::NotFound(name.to_owned()))
    }

    /// The app's task state, or `None` without a task.
    async fn task(&self, name: &str) -> Result<Option<AppState>, RuntimeError> {
        let req = self.request(GetTaskRequest { container_id: name.to_owned(), exec_id: String::new() });
        let r = self.tasks().get(req).await.map_err(failed("Tasks/Get"));
        let Some(process) = not_found_is_none(r)?.and_then(|resp| resp.into_inner().process) else {
            return Ok(None);
        };
        Ok(Some(match TaskStatus::try_from(process.status) {
            Ok(TaskStatus::Created) => AppState::Created,
            Ok(TaskStatus::Running) => AppState::Running { pid: process.pid },
            Ok(TaskStatus::Paused | TaskStatus::Pausing) => AppState::Paused,
            Ok(TaskStatus::Stopped) => AppState::Exited { code: process.exit_status },
            _ => AppState::Unknown,
        }))
    }

    /// The state of app `name`.
    pub async fn state(&self, name: &str) -> Result<AppState, RuntimeError> {
        self.require_container(name).await?;
        Ok(self.task(name).await?.unwrap_or(AppState::Stopped))
    }

    /// Starts app `name`: a new task over its root snapshot, its output
    /// appended to [`log_path`](Self::log_path). A task left from an
    /// earlier run that has exited is deleted first. Returns the pid.
    pub async fn start(&self, name: &str) -> Result<u32, RuntimeError> {
        let container = self.require_container(name).await?;
        match self.task(name).await? {
            None => {}
            Some(AppState::Exited { .. }) => self.delete_task(name).await.map(drop)?,
            Some(AppState::Created) => self.kill_and_delete(name).await?,
            Some(_) => return Err(RuntimeError::AlreadyRunning(name.to_owned())),
        }
        let uri = self.log_uri(name).await?;
        let req = self.request(MountsRequest { snapshotter: SNAPSHOTTER.to_owned(), key: container.snapshot_key });
        let rootfs = self.snapshots().mounts(req).await.map_err(failed("Snapshots/Mounts"))?.into_inner().mounts;
        let stdin_path = self.stdin_path(name);
        let stdin = stdin_path.to_str().ok_or(RuntimeError::NotAbsolute("log directory (UTF-8)"))?.to_owned();
        self.stdin.prepare(name, &stdin_path).map_err(|source| RuntimeError::Stdin { app: name.to_owned(), source })?;
        let msg = CreateTaskRequest {
            container_id: name.to_owned(),
            rootfs,
            stdin,
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        if let Err(status) = self.tasks().create(self.request(msg)).await {
            self.stdin.close(name);
            return Err(failed("Tasks/Create")(status));
        }
        let req = self.request(StartRequest { container_id: name.to_owned(), exec_id: String::new() });
        let pid = match self.tasks().start(req).await {
            Ok(resp) => resp.into_inner().pid,
            Err(status) => {
                self.stdin.close(name);
                if let Err(e) = self.delete_task(name).await {
                    tracing::warn!(app = name, error = %e, "containerd: deleting a task that did not start");
                }
                return Err(failed("Tasks/Start")(status));
            }
        };
        self.set_label(name, LABEL_STOPPED, "false").await?;
        Ok(pid)
    }

    /// The log file's URI, its directory created.
    async fn log_uri(&self, name: &str) -> Result<String, RuntimeError> {
        let dir = &self.options.log_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|source| RuntimeError::Io {
            what: "log directory",
            path: dir.clone(),
            source,
        })?;
        let path = self.log_path(name);
        logs::file_uri(&path).ok_or(RuntimeError::NotAbsolute("log directory"))
    }

    /// Waits for app `name`'s task to exit.
    pub async fn wait(&self, name: &str) -> Result<ExitStatus, RuntimeError> {
        check_name(name)?;
        let req = self.request(WaitRequest { container_id: name.to_owned(), exec_id: String::new() });
        match self.tasks().wait(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let exited_at = resp.exited_at.and_then(|t| SystemTime::try_from(t).ok());
                Ok(ExitStatus { code: resp.exit_status, exited_at })
            }
            Err(s) if s.code() == Code::NotFound => Err(RuntimeError::NotRunning(name.to_owned())),
            Err(s) => Err(failed("Tasks/Wait")(s)),
        }
    }

    /// Sends `signal` to app `name`'s first process, or with `all` to
    /// every process of the app.
    pub async fn kill(&self, name: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        check_name(name)?;
        let signal = u32::try_from(signal).map_err(|_| protocol("Tasks/Kill", format!("signal {signal}")))?;
        let msg = KillRequest { container_id: name.to_owned(), exec_id: String::new(), signal, all };
        match self.tasks().kill(self.request(msg)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Err(RuntimeError::NotRunning(name.to_owned())),
            Err(s) => Err(failed("Tasks/Kill")(s)),
        }
    }

    /// Stops app `name` on purpose: `SIGTERM`, then after `timeout`
    /// `SIGKILL` to all its processes; deletes the task. Returns its exit
    /// status, or `None` if it had no task. Marks it [`LABEL_STOPPED`].
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<Option<u32>, RuntimeError> {
        self.require_container(name).await?;
        self.set_label(name, LABEL_STOPPED, "true").await?;
        let Some(state) = self.task(name).await? else {
            return Ok(None);
        };
        match state {
            AppState::Exited { .. } => {}
            AppState::Created => self.kill_quietly(name, libc::SIGKILL, true).await?,
            _ => self.terminate(name, timeout).await?,
        }
        self.stdin.close(name);
        self.delete_task(name).await.map(Some)
    }

    /// `SIGTERM`, wait up to `timeout`, then `SIGKILL` to all and wait up
    /// to [`KILL_TIMEOUT`].
    async fn terminate(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.kill_quietly(name, libc::SIGTERM, false).await?;
        if self.wait_for(name, timeout).await? {
            return Ok(());
        }
        tracing::info!(app = name, ?timeout, "app did not exit after SIGTERM; sending SIGKILL");
        self.kill_and_wait(name).await
    }

    async fn kill_and_wait(&self, name: &str) -> Result<(), RuntimeError> {
        self.kill_quietly(name, libc::SIGKILL, true).await?;
        if self.wait_for(name, KILL_TIMEOUT).await? {
            return Ok(());
        }
        Err(RuntimeError::StopTimeout { app: name.to_owned(), waited: KILL_TIMEOUT })
    }

    /// [`kill`](Self::kill), where a process that is already gone is fine.
    async fn kill_quietly(&self, name: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        match self.kill(name, signal, all).await {
            Ok(()) | Err(RuntimeError::NotRunning(_)) => Ok(()),
            Err(e) if matches!(e.code(), Some(Code::FailedPrecondition | Code::NotFound)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the task exited within `timeout` (or had already).
    async fn wait_for(&self, name: &str, timeout: Duration) -> Result<bool, RuntimeError> {
        match tokio::time::timeout(timeout, self.wait(name)).await {
            Ok(Ok(_)) | Ok(Err(RuntimeError::NotRunning(_))) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Kills every process of the task, waits, deletes it.
    async fn kill_and_delete(&self, name: &str) -> Result<(), RuntimeError> {
        self.kill_and_wait(name).await?;
        self.delete_task(name).await.map(drop)
    }

    /// `Tasks/Delete`; the exit status (0 if it was already gone).
    async fn delete_task(&self, name: &str) -> Result<u32, RuntimeError> {
        let req = self.request(DeleteTaskRequest { container_id: name.to_owned() });
        match self.tasks().delete(req).await {
            Ok(resp) => Ok(resp.into_inner().exit_status),
            Err(s) if s.code() == Code::NotFound => Ok(0),
            Err(s) => Err(failed("Tasks/Delete")(s)),
        }
    }

    /// Records `policy` as app `name`'s restart policy.
    pub async fn set_restart(&self, name: &str, policy: RestartPolicy) -> Result<(), RuntimeError> {
        self.require_container(name).await?;
        self.set_label(name, LABEL_RESTART, &policy.label()).await
    }

    /// Records `count` as app `name`'s restarts after failure
    /// ([`LABEL_FAILURES`]).
    pub async fn set_failures(&self, name: &str, count: u32) -> Result<(), RuntimeError> {
        self.require_container(name).await?;
        self.set_label(name, LABEL_FAILURES, &count.to_string()).await
    }

    /// The bytes image `image_ref` takes in the content store for this
    /// platform: its manifest, config and layers (compressed), as the
    /// manifest records them. Unpacked snapshots are not counted.
    pub async fn image_size(&self, image_ref: &str) -> Result<u64, RuntimeError> {
        let (manifest_desc, config, layers) = self.manifest(image_ref).await?;
        let sizes = std::iter::once(&manifest_desc).chain(std::iter::once(&config)).chain(&layers);
        Ok(sizes.map(|d| d.size.unsigned_abs()).fold(0u64, u64::saturating_add))
    }

    /// Sets container label `key` of app `name`.
    async fn set_label(&self, name: &str, key: &str, value: &str) -> Result<(), RuntimeError> {
        let container = Container {
            id: name.to_owned(),
            labels: HashMap::from([(key.to_owned(), value.to_owned())]),
            ..Default::default()
        };
        let mask = prost_types::FieldMask { paths: vec![format!("labels.{key}")] };
        let req = self.request(UpdateContainerRequest { container: Some(container), update_mask: Some(mask) });
        self.containers().update(req).await.map_err(failed("Containers/Update"))?;
        Ok(())
    }

    // ----- delete and list -----

    /// Deletes app `name`: kills and deletes its task, deletes its
    /// container, its root snapshot and its log file; with `delete_image`
    /// also its image when no other app uses it (then containerd collects
    /// the image's content and snapshots before answering). `persist`
    /// volumes are kept. Returns whether the image was deleted.
    pub async fn delete(&self, name: &str, delete_image: bool) -> Result<bool, RuntimeError> {
        let container = self.require_container(name).await?;
        if let Some(state) = self.task(name).await? {
            if !matches!(state, AppState::Exited { .. }) {
                self.kill_and_wait(name).await?;
            }
            self.delete_task(name).await?;
        }
        let req = self.request(DeleteContainerRequest { id: name.to_owned() });
        let r = self.containers().delete(req).await.map_err(failed("Containers/Delete"));
        not_found_is_none(r)?;
        self.try_remove_snapshot(&container.snapshot_key).await?;
        self.remove_log(name).await?;
        let stdin_err = |source| RuntimeError::Stdin { app: name.to_owned(), source };
        self.stdin.remove(name, &self.stdin_path(name)).await.map_err(stdin_err)?;
        if delete_image && !container.image.is_empty() {
            return self.delete_unused_image(&container.image).await;
        }
        Ok(false)
    }

    async fn remove_log(&self, name: &str) -> Result<(), RuntimeError> {
        let path = self.log_path(name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Io { what: "log file", path, source }),
        }
    }

    /// Deletes image `image_ref` unless a container still uses it.
    async fn delete_unused_image(&self, image_ref: &str) -> Result<bool, RuntimeError> {
        if self.list_containers().await?.iter().any(|c| c.image == image_ref) {
            return Ok(false);
        }
        let req = self.request(DeleteImageRequest { name: image_ref.to_owned(), sync: true, target: None });
        let r = ImagesClient::new(self.channel.clone()).delete(req).await.map_err(failed("Images/Delete"));
        Ok(not_found_is_none(r)?.is_some())
    }

    async fn list_containers(&self) -> Result<Vec<Container>, RuntimeError> {
        let req = self.request(ListContainersRequest { filters: Vec::new() });
        Ok(self.containers().list(req).await.map_err(failed("Containers/List"))?.into_inner().containers)
    }

    /// Every app in the namespace with its state, by name.
    pub async fn list(&self) -> Result<Vec<AppStatus>, RuntimeError> {
        let mut apps = Vec::new();
        for c in self.list_containers().await? {
            let state = self.task(&c.id).await?.unwrap_or(AppState::Stopped);
            let label = |k: &str| c.labels.get(k).map(String::as_str).unwrap_or_default();
            apps.push(AppStatus {
                image: c.image.clone(),
                state,
                restart: RestartPolicy::from_label(label(LABEL_RESTART)).unwrap_or_default(),
                stopped_on_purpose: label(LABEL_STOPPED) == "true",
                version: label(LABEL_VERSION).to_owned(),
                volumes: label(LABEL_VOLUMES).split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect(),
                failures: label(LABEL_FAILURES).parse().unwrap_or(0),
                name: c.id,
            });
        }
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps)
    }
}

/// One layer of an image being unpacked.
#[derive(Clone, Copy)]
struct Layer<'a> {
    /// Its position, base 0.
    index: usize,
    /// Its blob.
    desc: &'a Desc,
    /// The config's digest of its uncompressed tar.
    diff_id: &'a Digest,
    /// The chain id of the layers below it.
    parent: Option<&'a Digest>,
    /// Its own chain id: the snapshot's name.
    chain_id: &'a Digest,
}

/// The names of `config`'s `persist` volumes, in order.
pub fn volume_names(config: &AppConfig) -> Vec<String> {
    config
        .entitlements
        .iter()
        .filter_map(|e| match e {
            Entitlement::Persist { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// `Err(BadName)` unless `name` is a safe name.
fn check_name(name: &str) -> Result<(), RuntimeError> {
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(RuntimeError::BadName(name.chars().take(80).collect()))
    }
}

/// App `name`'s cgroup, relative to the cgroup hierarchy's root
/// (`wendy/<name>`): where runc puts it and where its memory is read.
pub fn cgroup_path(name: &str) -> PathBuf {
    Path::new(NAMESPACE).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_labels_round_trip() {
        for p in [RestartPolicy::No, RestartPolicy::UnlessStopped, RestartPolicy::OnFailure { max_retries: 3 }] {
            assert_eq!(RestartPolicy::from_label(&p.label()), Some(p));
        }
        for bad in ["", "always", "on-failure:", "on-failure:-1", "on-failure:x"] {
            assert_eq!(RestartPolicy::from_label(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_times() {
        assert!(check_name("com.example.app").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "x".repeat(200).as_str()] {
            assert!(matches!(check_name(bad), Err(RuntimeError::BadName(_))), "{bad}");
        }
    }
}
