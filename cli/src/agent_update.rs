//! `wendy device update-agent BINARY`: replaces the agent of a development
//! image with the published v2 `UpdateAgent` (chunks, then `control.update`
//! with the binary's SHA-256), over mTLS (Admin). The agent answers
//! `Updated{}` and restarts; the command waits for it to answer again and
//! reports the version it runs. A production image refuses, pointing at
//! `wendy os update`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;
use wendy_proto::agent_v2::update_agent_request::control_command::{Command, Update};
use wendy_proto::agent_v2::update_agent_request::{Chunk, ControlCommand, RequestType};
use wendy_proto::agent_v2::update_agent_response::ResponseType;
use wendy_proto::agent_v2::wendy_agent_update_service_client::WendyAgentUpdateServiceClient;
use wendy_proto::agent_v2::UpdateAgentRequest;

use crate::config::Store;
use crate::device::{self, Target};
use crate::error::{sanitize, CliError};

/// Bytes per upload message (well under the gRPC message cap).
const CHUNK_BYTES: usize = 64 * 1024;
/// How long the restarted agent may take to answer.
const RESTART_WAIT: Duration = Duration::from_secs(90);
/// Between attempts to reach the restarted agent.
const POLL: Duration = Duration::from_secs(2);

/// The `device update-agent` report.
#[derive(Debug, serde::Serialize)]
pub struct UpdateAgentReport {
    /// The device's mTLS address.
    pub address: String,
    /// SHA-256 of the binary sent.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The agent version the device reports after the restart.
    pub version: String,
}

impl fmt::Display for UpdateAgentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "updated: the device at {} runs wendy-agent {} ({} bytes sent)",
            self.address, self.version, self.size
        )
    }
}

/// Streams `path` as chunks, then `control.update` with `sha256`;
/// `progress` counts the bytes.
fn upload_stream(
    path: PathBuf,
    sha256: String,
    progress: ProgressBar,
) -> impl futures::Stream<Item = UpdateAgentRequest> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<UpdateAgentRequest>(8);
    tokio::spawn(async move {
        let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match file.read(&mut buf).await {
                Err(_) => return,
                Ok(0) => break,
                Ok(n) => {
                    let chunk = RequestType::Chunk(Chunk { data: buf[..n].to_vec() });
                    if tx.send(UpdateAgentRequest { request_type: Some(chunk) }).await.is_err() {
                        return;
                    }
                    progress.inc(n as u64);
                }
            }
        }
        progress.finish_and_clear();
        let control = ControlCommand { command: Some(Command::Update(Update { sha256 })) };
        let _ = tx.send(UpdateAgentRequest { request_type: Some(RequestType::Control(control)) }).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn bar(progress: bool, size: u64) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(size);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message("uploading");
    pb
}

/// `wendy device update-agent`.
pub async fn update(
    store: &Store,
    target: &Target,
    binary: &Path,
    progress: bool,
) -> Result<UpdateAgentReport, CliError> {
    let (sha256, size) = crate::os::digest(binary).await?;
    if size == 0 {
        return Err(CliError::Usage(format!("{} is empty; it is not a wendy-agent binary", binary.display())));
    }
    let conn = device::connect_provisioned(store, target, "agent updates").await?;
    let address = conn.addr.to_string();
    let context = format!("updating the agent at {address}");
    let hints = device::hints(&conn);
    let status = |s: tonic::Status| CliError::from_status(&context, &s, &hints);
    let pb = bar(progress, size);
    let mut responses = wendy_proto::limited!(WendyAgentUpdateServiceClient::new(conn.channel.clone()))
        .update_agent(upload_stream(binary.to_owned(), sha256.clone(), pb.clone()))
        .await
        .map_err(status)?
        .into_inner();
    let answer = responses.next().await;
    pb.finish_and_clear();
    match answer {
        Some(Ok(r)) if matches!(r.response_type, Some(ResponseType::Updated(_))) => {}
        Some(Ok(_)) | None => {
            return Err(CliError::Remote {
                context,
                message: "the device closed the stream without `Updated`".into(),
                hint: None,
            })
        }
        Some(Err(s)) => return Err(status(s)),
    }
    drop(responses);
    drop(conn);
    if progress {
        eprintln!("installed; waiting for the agent to restart");
    }
    let version = wait_back(store, target).await?;
    Ok(UpdateAgentReport { address, sha256, size, version })
}

/// Waits for the restarted agent to answer, and returns its version.
async fn wait_back(store: &Store, target: &Target) -> Result<String, CliError> {
    let deadline = Instant::now() + RESTART_WAIT;
    let mut last_error = String::from("no answer yet");
    while Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let attempt = async {
            let conn = device::connect_provisioned(store, target, "agent updates").await?;
            device::get_version(&conn).await
        };
        match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Ok(v)) => return Ok(sanitize(&v.version)),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "no answer within 20s".into(),
        }
    }
    Err(CliError::Unreachable {
        what: "device",
        addr: target.base.to_string(),
        reason: format!("the agent did not answer within {}s of its restart ({last_error})", RESTART_WAIT.as_secs()),
        hint: Some(
            "after three failed starts the device runs its stock agent again; `wendy device version` shows which runs"
                .into(),
        ),
    })
}
