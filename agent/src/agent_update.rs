//! Agent updates on development images: the published `UpdateAgent` (v1
//! `WendyAgentService`, served from [`crate::device_info`], and v2
//! `WendyAgentUpdateService`, served here). Only over mTLS, role Admin
//! ([`crate::authz`]); decision 0104.
//!
//! - A production image (no development marker,
//!   [`crate::config::DEVELOPMENT_MARKER_ENV`]) refuses it with
//!   FAILED_PRECONDITION before reading the stream: its agent changes only
//!   with the OS (`wendy os update`, a signed RAUC bundle).
//! - A development image receives the chunks into a staging file in the
//!   agent's state directory on the data partition ([`upload`]), bounded by
//!   [`Limits::max_bytes`] and the data reserve, checks
//!   `control.update.sha256`, runs `<candidate> --version`
//!   ([`Limits::version_check`]) so a binary for another architecture or a
//!   corrupt one is refused, and installs it as the replacement
//!   ([`replacement`]) with the OS version it was installed on and a zeroed
//!   boot-attempt counter. One update at a time.
//! - It answers `Updated{}` and leaves with [`RESTART_EXIT_CODE`]; systemd
//!   starts the stock `/usr/bin/wendy-agent` again (the unit's
//!   `RestartForceExitStatus=`), which execs the replacement
//!   ([`replacement::exec_if_installed`]).

pub mod replacement;
pub mod upload;

use crate::busy::{Busy, OneAtATime};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};
use wendy_proto::agent_v2::update_agent_request::control_command::Command as V2Command;
use wendy_proto::agent_v2::update_agent_request::RequestType as V2Type;
use wendy_proto::agent_v2::wendy_agent_update_service_server::WendyAgentUpdateService;
use wendy_proto::agent_v2::{UpdateAgentRequest, UpdateAgentResponse};

use crate::config::Config;
use crate::daemon::Daemon;
use replacement::Paths;
use upload::{Staged, UploadError};

/// The exit status with which the agent leaves after installing a
/// replacement; the unit restarts it for this status (`SuccessExitStatus=`
/// and `RestartForceExitStatus=` in `wendy-agent.service`). 75 is
/// `EX_TEMPFAIL`: "try again".
pub const RESTART_EXIT_CODE: u8 = 75;

/// How long after `Updated{}` is sent the agent starts to leave, so the
/// answer reaches the caller first.
const RESTART_DELAY: Duration = Duration::from_millis(500);

/// Limits of one agent update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest binary accepted.
    pub max_bytes: u64,
    /// The longest pause between two messages of the upload.
    pub stall: Duration,
    /// How long `<candidate> --version` may take.
    pub version_check: Duration,
    /// Bytes of the data partition the upload never takes.
    pub reserve: u64,
}

impl Limits {
    /// The limits for `config`: 256 MiB, one minute of silence, five
    /// seconds for `--version`, the configured data reserve.
    pub fn new(config: &Config) -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            stall: Duration::from_secs(60),
            version_check: Duration::from_secs(5),
            reserve: config.data_reserve,
        }
    }
}

/// Why an agent update was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentUpdateError {
    /// A production image: the agent changes only with the OS.
    #[error(
        "this is a production image: its agent is replaced only by OS updates; send a signed RAUC bundle with \
         `wendy os update` (UpdateAgent is for development images)"
    )]
    Production,
    /// Another update runs, or the agent is restarting after one.
    #[error("an agent update is already running on this device, or the agent is restarting after one")]
    Busy,
    /// The upload broke the protocol or its limits.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The binary does not run here (`--version` failed).
    #[error(
        "the uploaded binary does not run on this device ({0}): is it a wendy-agent built for this device's \
         architecture?"
    )]
    NotRunnable(String),
    /// Installing it failed; the running agent and any earlier replacement
    /// are unchanged.
    #[error("installing the uploaded agent in {}: {source}", dir.display())]
    Install {
        /// The replacement directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: replacement::InstallError,
    },
}

impl From<AgentUpdateError> for Status {
    fn from(e: AgentUpdateError) -> Self {
        let message = e.to_string();
        match e {
            AgentUpdateError::Production | AgentUpdateError::Busy => Status::failed_precondition(message),
            AgentUpdateError::Upload(u) => match u {
                UploadError::Stream(status) => status,
                UploadError::Stalled(_) => Status::deadline_exceeded(message),
                UploadError::NoSpace { .. } => Status::failed_precondition(message),
                UploadError::Io { .. } => Status::internal(message),
                _ => Status::invalid_argument(message),
            },
            AgentUpdateError::NotRunnable(_) => Status::invalid_argument(message),
            AgentUpdateError::Install { .. } => Status::internal(message),
        }
    }
}

/// One message of either version's upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The next bytes of the binary.
    Chunk(Vec<u8>),
    /// `control.update`: the SHA-256 (hex) of the whole binary; install it.
    Update {
        /// As sent.
        sha256: String,
    },
    /// A message with neither field set.
    Empty,
}

impl From<UpdateAgentRequest> for Message {
    fn from(m: UpdateAgentRequest) -> Self {
        match m.request_type {
            Some(V2Type::Chunk(c)) => Self::Chunk(c.data),
            Some(V2Type::Control(c)) => match c.command {
                Some(V2Command::Update(u)) => Self::Update { sha256: u.sha256 },
                None => Self::Empty,
            },
            None => Self::Empty,
        }
    }
}

impl From<wendy_proto::agent::UpdateAgentRequest> for Message {
    fn from(m: wendy_proto::agent::UpdateAgentRequest) -> Self {
        use wendy_proto::agent::update_agent_request::control_command::Command;
        use wendy_proto::agent::update_agent_request::RequestType;
        match m.request_type {
            Some(RequestType::Chunk(c)) => Self::Chunk(c.data),
            Some(RequestType::Control(c)) => match c.command {
                Some(Command::Update(u)) => Self::Update { sha256: u.sha256 },
                None => Self::Empty,
            },
            None => Self::Empty,
        }
    }
}

/// The outcome of one update, as the response streams carry it: `Ok` is
/// `Updated{}`.
pub type Outcome = mpsc::Receiver<Result<(), Status>>;

/// The agent updates of this device: one at a time, into one directory.
#[derive(Debug)]
pub struct AgentUpdater {
    paths: Paths,
    development: bool,
    os_version_file: PathBuf,
    limits: Limits,
    busy: OneAtATime,
    restart: watch::Sender<bool>,
}

impl AgentUpdater {
    /// The updater for `config`; a staging file a crash left behind is
    /// removed.
    pub fn new(config: &Config) -> Self {
        let paths = Paths::new(&config.config_dir);
        upload::clean(&paths.staging());
        Self {
            paths,
            development: config.is_development_image(),
            os_version_file: config.os_version_file.clone(),
            limits: Limits::new(config),
            busy: OneAtATime::default(),
            restart: watch::channel(false).0,
        }
    }

    /// The same with other limits (tests).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where the replacement lives.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Resolves once an update was installed and the agent should leave
    /// with [`RESTART_EXIT_CODE`].
    pub async fn restart_requested(&self) {
        let mut rx = self.restart.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    fn begin(&self) -> Result<Busy, AgentUpdateError> {
        if !self.development {
            return Err(AgentUpdateError::Production);
        }
        if *self.restart.borrow() {
            return Err(AgentUpdateError::Busy);
        }
        self.busy.begin().ok_or(AgentUpdateError::Busy)
    }

    /// Starts an update from `upload`: refused at once on a production
    /// image or while another runs (nothing of the stream is read);
    /// otherwise the outcome follows on the returned channel.
    pub fn start<S>(self: &Arc<Self>, upload: S) -> Result<Outcome, AgentUpdateError>
    where
        S: Stream<Item = Result<Message, Status>> + Send + Unpin + 'static,
    {
        let busy = self.begin()?;
        let (tx, rx) = mpsc::channel(1);
        let me = self.clone();
        tokio::spawn(async move {
            match me.update(upload).await {
                Ok(version) => {
                    tracing::info!(path = %me.paths.binary().display(), %version, "agent update installed; restarting into it");
                    // Busy until the process leaves: no second update may
                    // replace the binary the restart is about to run.
                    std::mem::forget(busy);
                    let _ = tx.send(Ok(())).await;
                    drop(tx);
                    tokio::time::sleep(RESTART_DELAY).await;
                    me.restart.send_replace(true);
                }
                Err(e) => {
                    drop(busy);
                    tracing::warn!(error = %e, "agent update refused; nothing was installed");
                    let _ = tx.send(Err(e.into())).await;
                }
            }
        });
        Ok(rx)
    }

    /// Receives, checks and installs; returns the new agent's `--version`.
    async fn update<S>(&self, upload: S) -> Result<String, AgentUpdateError>
    where
        S: Stream<Item = Result<Message, Status>> + Send + Unpin,
    {
        let staged = upload::receive(upload, &self.paths.staging(), &self.limits).await?;
        tracing::info!(size = staged.size, sha256 = %staged.sha256, "agent update received; checking that it runs");
        let version = check_runs(&staged, self.limits.version_check).await?;
        let os_version = crate::sysinfo::first_line(&self.os_version_file);
        replacement::install(&self.paths, staged, os_version.as_deref())
            .map_err(|source| AgentUpdateError::Install { dir: self.paths.dir().to_owned(), source })?;
        Ok(version)
    }
}

/// Runs `<candidate> --version` with an empty environment: it must exit 0
/// within `timeout` and print `wendy-agent <version>` first.
async fn check_runs(staged: &Staged, timeout: Duration) -> Result<String, AgentUpdateError> {
    let not_runnable = |why: String| AgentUpdateError::NotRunnable(why);
    let mut attempt = 0;
    let output = loop {
        let mut cmd = tokio::process::Command::new(&staged.path);
        cmd.arg("--version")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => return Err(not_runnable(format!("`--version` did not finish within {timeout:?}"))),
            // ETXTBSY: another thread's fork may still hold the staging
            // file open for a moment (it was closed before the exec).
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => return Err(not_runnable(format!("it cannot be executed: {e}"))),
            Ok(Ok(output)) => break output,
        }
    };
    if !output.status.success() {
        return Err(not_runnable(format!("`--version` exited with {}", output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().next() {
        Some(line) if line.starts_with("wendy-agent ") => Ok(line.to_owned()),
        _ => Err(not_runnable("`--version` did not print `wendy-agent <version>`".into())),
    }
}

/// Refuses a call that came over the plaintext port (no certificate, no
/// role layer): an unprovisioned device is never updated over it.
pub fn refuse_plaintext<T>(request: &Request<T>) -> Result<(), Status> {
    if request.extensions().get::<crate::tls::PeerInfo>().is_none() {
        return Err(Status::permission_denied(
            "UpdateAgent is served only over mTLS, to an Admin: provision the device first",
        ));
    }
    Ok(())
}

/// Logs who asked for an update.
fn log_caller<T>(request: &Request<T>, rpc: &str) {
    let peer = request.extensions().get::<crate::tls::PeerInfo>();
    tracing::info!(rpc, cn = ?peer.and_then(|p| p.common_name.clone()), "agent update requested");
}

/// A response stream of either version.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves an `UpdateAgent` call of either version: `to_message` reads the
/// version's request, `updated` makes its `Updated{}` response.
pub fn serve<Req, Resp>(
    updater: &Arc<AgentUpdater>,
    request: Request<tonic::Streaming<Req>>,
    rpc: &str,
    updated: fn() -> Resp,
) -> Result<Response<ResponseStream<Resp>>, Status>
where
    Req: Into<Message> + Send + 'static,
    Resp: Send + 'static,
{
    refuse_plaintext(&request)?;
    log_caller(&request, rpc);
    let upload = request.into_inner().map(|m| m.map(Into::into));
    let outcome = updater.start(upload)?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(outcome).map(move |r| r.map(|()| updated()));
    Ok(Response::new(Box::pin(stream)))
}

/// The published v2 `WendyAgentUpdateService`, over the daemon.
#[derive(Clone, Debug)]
pub struct AgentUpdate(Arc<Daemon>);

impl AgentUpdate {
    /// The service over `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self(daemon)
    }
}

#[tonic::async_trait]
impl WendyAgentUpdateService for AgentUpdate {
    type UpdateAgentStream = ResponseStream<UpdateAgentResponse>;

    async fn update_agent(
        &self,
        request: Request<tonic::Streaming<UpdateAgentRequest>>,
    ) -> Result<Response<Self::UpdateAgentStream>, Status> {
        serve(self.0.agent_updater(), request, "UpdateAgent (v2)", || UpdateAgentResponse {
            response_type: Some(wendy_proto::agent_v2::update_agent_response::ResponseType::Updated(
                wendy_proto::agent_v2::update_agent_response::Updated {},
            )),
        })
    }
}

#[cfg(test)]
mod tests;
