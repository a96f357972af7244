//! `wendy os`: update the device's operating system, show its slots.
//!
//! `wendy os update BUNDLE|URL` either uploads a local bundle over the mTLS
//! connection (`wendyos.agent.v1.OsUpdateService/InstallBundle`) or hands
//! the device a URL to fetch itself (the published v2 `UpdateOS`). Upload
//! and install show progress bars (indicatif, on a terminal). Then, unless
//! `--no-reboot`, it reboots the device and waits for it to come back: the
//! device's own record of the install says whether the new slot was marked
//! good or rolled back, and a rollback is an error (exit 1).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use wendy_proto::agent_admin::install_bundle_request::{Header, RequestType};
use wendy_proto::agent_admin::last_install::Result as InstallResult;
use wendy_proto::agent_admin::os_update_service_client::OsUpdateServiceClient;
use wendy_proto::agent_admin::{GetUpdateStatusRequest, GetUpdateStatusResponse, InstallBundleRequest, RebootRequest};
use wendy_proto::agent_v2::update_os_response::ResponseType;
use wendy_proto::agent_v2::wendy_os_update_service_client::WendyOsUpdateServiceClient;
use wendy_proto::agent_v2::UpdateOsRequest;

use crate::config::Store;
use crate::device::{self, Connection, Target};
use crate::error::{sanitize, CliError};

/// Bytes per upload message (well under the gRPC message cap).
const CHUNK_BYTES: usize = 64 * 1024;

/// How often the device is asked whether it is back.
const POLL: Duration = Duration::from_secs(2);

/// What to update from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local bundle, uploaded.
    File(PathBuf),
    /// A URL the device downloads.
    Url(String),
}

impl Source {
    /// `http://` and `https://` are URLs; anything else is a file.
    pub fn parse(arg: &str) -> Self {
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Self::Url(arg.to_owned())
        } else {
            Self::File(PathBuf::from(arg))
        }
    }
}

/// Options of `wendy os update`.
#[derive(Debug)]
pub struct UpdateOptions {
    /// The bundle.
    pub source: Source,
    /// Install only; the new slot boots at the next reboot.
    pub no_reboot: bool,
    /// How long to wait for the device to come back.
    pub wait: Duration,
    /// Whether to draw progress bars.
    pub progress: bool,
}

/// The `os update` report.
#[derive(Debug, serde::Serialize)]
pub struct UpdateReport {
    /// The device's mTLS address.
    pub address: String,
    /// `installed` (not rebooted), `booted` or `rolled_back`.
    pub result: &'static str,
    /// The slot now running (boot name), once it is back.
    pub booted_slot: String,
    /// The slot the update wrote.
    pub slot: String,
    /// The bundle's version.
    pub version: String,
    /// The OS version the device reports now.
    pub os_version: String,
    /// The device's words.
    pub message: String,
    /// Seconds to get the bundle onto the device.
    pub stage_seconds: u32,
    /// Seconds RAUC took to install it.
    pub install_seconds: u32,
}

impl fmt::Display for UpdateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.result {
            "installed" => write!(
                f,
                "installed {} into slot {}; it boots at the next reboot (`wendy device reboot`)",
                or_dash(&self.version),
                or_dash(&self.slot)
            ),
            _ => write!(
                f,
                "updated: the device runs slot {} with OS version {} (bundle {}), marked good",
                or_dash(&self.booted_slot),
                or_dash(&self.os_version),
                or_dash(&self.version)
            ),
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// An mTLS connection, or a clear error for an unprovisioned device.
async fn connect(store: &Store, target: &Target) -> Result<Connection, CliError> {
    device::connect_provisioned(store, target, "OS updates, status and reboots").await
}

fn client(conn: &Connection) -> OsUpdateServiceClient<Channel> {
    wendy_proto::limited!(OsUpdateServiceClient::new(conn.channel.clone()))
}

async fn get_status(conn: &Connection) -> Result<GetUpdateStatusResponse, CliError> {
    client(conn).get_update_status(GetUpdateStatusRequest {}).await.map(tonic::Response::into_inner).map_err(|s| {
        CliError::from_status(format!("asking {} for its update status", conn.addr), &s, &device::hints(conn))
    })
}

/// A bar for one phase: bytes for uploads, percent otherwise.
fn bar(progress: bool, phase: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(100);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos:>3}% {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(phase.to_owned());
    pb
}

/// SHA-256 and size of `path`.
pub(crate) async fn digest(path: &Path) -> Result<(String, u64), CliError> {
    let mut file =
        tokio::fs::File::open(path).await.map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Streams `path` as the upload: header, then chunks.
fn upload_stream(
    path: PathBuf,
    size: u64,
    sha256: String,
) -> impl futures::Stream<Item = InstallBundleRequest> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<InstallBundleRequest>(8);
    tokio::spawn(async move {
        let header = RequestType::Header(Header { size, sha256 });
        if tx.send(InstallBundleRequest { request_type: Some(header) }).await.is_err() {
            return;
        }
        let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = RequestType::Chunk(buf[..n].to_vec());
                    if tx.send(InstallBundleRequest { request_type: Some(chunk) }).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One message of either response stream (the same shape in two packages).
enum Step {
    Progress(String, i32),
    Completed,
    Failed(String),
    Nothing,
}

impl Step {
    fn from_published(r: Option<ResponseType>) -> Self {
        match r {
            Some(ResponseType::Progress(p)) => Self::Progress(p.phase, p.percent),
            Some(ResponseType::Completed(_)) => Self::Completed,
            Some(ResponseType::Failed(f)) => Self::Failed(f.error_message),
            None => Self::Nothing,
        }
    }

    fn from_ours(r: Option<wendy_proto::agent_admin::install_bundle_response::ResponseType>) -> Self {
        use wendy_proto::agent_admin::install_bundle_response::ResponseType as Ours;
        match r {
            Some(Ours::Progress(p)) => Self::Progress(p.phase, p.percent),
            Some(Ours::Completed(_)) => Self::Completed,
            Some(Ours::Failed(f)) => Self::Failed(f.error_message),
            None => Self::Nothing,
        }
    }
}

/// `wendy os update`.
pub async fn update(store: &Store, target: &Target, opts: UpdateOptions) -> Result<UpdateReport, CliError> {
    let conn = connect(store, target).await?;
    let context = format!("updating the device at {}", conn.addr);
    let hints = device::hints(&conn);
    let status = |s: tonic::Status| CliError::from_status(&context, &s, &hints);
    let mut responses: futures::stream::BoxStream<'static, Result<Step, tonic::Status>> = match &opts.source {
        Source::Url(url) => wendy_proto::limited!(WendyOsUpdateServiceClient::new(conn.channel.clone()))
            .update_os(UpdateOsRequest { artifact_url: url.clone() })
            .await
            .map_err(status)?
            .into_inner()
            .map(|m| m.map(|m| Step::from_published(m.response_type)))
            .boxed(),
        Source::File(path) => {
            let (sha256, size) = digest(path).await?;
            if size == 0 {
                return Err(CliError::Usage(format!("{} is empty; it is not a RAUC bundle", path.display())));
            }
            client(&conn)
                .install_bundle(upload_stream(path.clone(), size, sha256))
                .await
                .map_err(status)?
                .into_inner()
                .map(|m| m.map(|m| Step::from_ours(m.response_type)))
                .boxed()
        }
    };
    let mut current: Option<(String, ProgressBar)> = None;
    let outcome = loop {
        let Some(message) = responses.next().await else {
            break Err("the device closed the stream without a result".to_owned());
        };
        match message.map_err(status)? {
            Step::Progress(phase, percent) => {
                if current.as_ref().is_none_or(|(p, _)| *p != phase) {
                    if let Some((_, pb)) = current.take() {
                        pb.finish();
                    }
                    current = Some((phase.clone(), bar(opts.progress, &sanitize(&phase))));
                }
                if let Some((_, pb)) = &current {
                    pb.set_position(u64::try_from(percent.clamp(0, 100)).unwrap_or(0));
                }
            }
            Step::Completed => break Ok(()),
            Step::Failed(m) => break Err(sanitize(&m)),
            Step::Nothing => {}
        }
    };
    if let Some((_, pb)) = current.take() {
        if outcome.is_ok() {
            pb.finish();
        } else {
            pb.abandon();
        }
    }
    if let Err(message) = outcome {
        return Err(CliError::Remote {
            context,
            message,
            hint: Some("the device keeps running its current slot; `wendy os status` shows it".into()),
        });
    }
    let installed = get_status(&conn).await?;
    let last = installed.last_install.clone().unwrap_or_default();
    let mut report = UpdateReport {
        address: conn.addr.to_string(),
        result: "installed",
        booted_slot: sanitize(&installed.booted_slot),
        slot: sanitize(&last.slot),
        version: sanitize(&last.version),
        os_version: String::new(),
        message: sanitize(&last.message),
        stage_seconds: last.stage_seconds,
        install_seconds: last.install_seconds,
    };
    if opts.no_reboot {
        return Ok(report);
    }
    reboot_conn(&conn).await?;
    if opts.progress {
        eprintln!(
            "rebooting the device into slot {}; waiting up to {}s for it",
            or_dash(&report.slot),
            opts.wait.as_secs()
        );
    }
    let back = wait_back(store, target, &installed.booted_slot, opts.wait).await?;
    let last = back.status.last_install.unwrap_or_default();
    report.booted_slot = sanitize(&back.status.booted_slot);
    report.os_version = back.os_version;
    report.message = sanitize(&last.message);
    if last.result() == InstallResult::RolledBack || back.status.booted_slot != report.slot {
        return Err(CliError::Remote {
            context: format!("updating the device at {}", report.address),
            message: format!(
                "the update was rolled back: the device runs slot {} again: {}",
                or_dash(&report.booted_slot),
                or_dash(&report.message)
            ),
            hint: Some(
                "`wendy os status` shows both slots; the device's journal (journalctl -u wendy-agent) says more".into(),
            ),
        });
    }
    report.result = "booted";
    Ok(report)
}

/// What the device said once back.
struct Back {
    status: GetUpdateStatusResponse,
    os_version: String,
}

/// Waits for the device to go down and come back with a judged install:
/// booted (marked good) or rolled back and running the old slot again.
async fn wait_back(store: &Store, target: &Target, before: &str, wait: Duration) -> Result<Back, CliError> {
    let deadline = Instant::now() + wait;
    let mut last_error = String::from("no answer yet");
    while Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let attempt = async {
            let conn = connect(store, target).await?;
            let status = get_status(&conn).await?;
            Ok::<_, CliError>((conn, status))
        };
        let (conn, status) = match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                last_error = e.to_string();
                continue;
            }
            Err(_) => {
                last_error = "no answer within 20s".into();
                continue;
            }
        };
        let Some(last) = status.last_install.as_ref() else { continue };
        // A device that cannot say which slot it runs (shutting down) has
        // not answered yet.
        if status.booted_slot.is_empty() {
            continue;
        }
        let judged = match last.result() {
            InstallResult::Booted => true,
            // Judged in the new slot, which then reboots into the old one:
            // done once the old slot runs again.
            InstallResult::RolledBack => status.booted_slot != last.slot || status.booted_slot == before,
            _ => false,
        };
        if judged {
            let os_version =
                device::get_version(&conn).await.map(|v| v.os_version.unwrap_or_default()).unwrap_or_default();
            return Ok(Back { status, os_version: sanitize(&os_version) });
        }
    }
    Err(CliError::Unreachable {
        what: "device",
        addr: target.base.to_string(),
        reason: format!("it did not come back with a judged update within {}s ({last_error})", wait.as_secs()),
        hint: Some("it may still be booting; `wendy os status` shows the result once it answers".into()),
    })
}

/// The `os status` report.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    /// The device's mTLS address.
    pub address: String,
    /// RAUC's compatible.
    pub compatible: String,
    /// The slot running now.
    pub booted_slot: String,
    /// The slot the boot loader tries first.
    pub primary_slot: String,
    /// idle, installing.
    pub operation: String,
    /// Every slot.
    pub slots: Vec<SlotReport>,
    /// The last install, if any.
    pub last_install: Option<LastInstallReport>,
}

/// One slot.
#[derive(Debug, serde::Serialize)]
pub struct SlotReport {
    /// rootfs.0, rootfs.1.
    pub name: String,
    /// A, B.
    pub bootname: String,
    /// booted, inactive.
    pub state: String,
    /// good, bad.
    pub boot_status: String,
    /// The bundle version in it.
    pub bundle_version: String,
    /// When it was written.
    pub installed: String,
}

/// The last install.
#[derive(Debug, serde::Serialize)]
pub struct LastInstallReport {
    /// installed, booted, rolled_back, failed.
    pub result: &'static str,
    /// Bundle version.
    pub version: String,
    /// Slot written.
    pub slot: String,
    /// The device's words.
    pub message: String,
    /// When (Unix seconds).
    pub recorded_unix: i64,
    /// Seconds to get the bundle onto the device.
    pub stage_seconds: u32,
    /// Seconds RAUC took to install it.
    pub install_seconds: u32,
}

fn result_name(r: InstallResult) -> &'static str {
    match r {
        InstallResult::Installed => "installed",
        InstallResult::Booted => "booted",
        InstallResult::RolledBack => "rolled_back",
        InstallResult::Failed => "failed",
        InstallResult::Unspecified => "unknown",
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device:     {}", self.address)?;
        writeln!(f, "compatible: {}", or_dash(&self.compatible))?;
        writeln!(f, "booted:     slot {}", or_dash(&self.booted_slot))?;
        writeln!(f, "operation:  {}", or_dash(&self.operation))?;
        writeln!(f, "slots:")?;
        for s in &self.slots {
            let primary = if s.name == self.primary_slot { " (boots next)" } else { "" };
            writeln!(
                f,
                "  {} {}  {:<8} {:<5} {}{}",
                s.bootname,
                s.name,
                or_dash(&s.state),
                or_dash(&s.boot_status),
                or_dash(&s.bundle_version),
                primary
            )?;
        }
        match &self.last_install {
            None => write!(f, "last update: none"),
            Some(l) => write!(
                f,
                "last update: {} {} (slot {}; staged in {} s, installed in {} s): {}",
                l.result,
                or_dash(&l.version),
                or_dash(&l.slot),
                l.stage_seconds,
                l.install_seconds,
                l.message
            ),
        }
    }
}

/// `wendy os status`.
pub async fn status(store: &Store, target: &Target) -> Result<StatusReport, CliError> {
    let conn = connect(store, target).await?;
    let s = get_status(&conn).await?;
    let c = |s: &str| sanitize(s);
    Ok(StatusReport {
        address: conn.addr.to_string(),
        compatible: c(&s.compatible),
        booted_slot: c(&s.booted_slot),
        primary_slot: c(&s.primary_slot),
        operation: c(&s.operation),
        slots: s
            .slots
            .iter()
            .map(|x| SlotReport {
                name: c(&x.name),
                bootname: c(&x.bootname),
                state: c(&x.state),
                boot_status: c(&x.boot_status),
                bundle_version: c(&x.bundle_version),
                installed: c(&x.installed_timestamp),
            })
            .collect(),
        last_install: s.last_install.as_ref().map(|l| LastInstallReport {
            result: result_name(l.result()),
            version: c(&l.version),
            slot: c(&l.slot),
            message: c(&l.message),
            recorded_unix: l.recorded_unix,
            stage_seconds: l.stage_seconds,
            install_seconds: l.install_seconds,
        }),
    })
}

async fn reboot_conn(conn: &Connection) -> Result<(), CliError> {
    client(conn)
        .reboot(RebootRequest {})
        .await
        .map(|_| ())
        .map_err(|s| CliError::from_status(format!("rebooting the device at {}", conn.addr), &s, &device::hints(conn)))
}

/// The `device reboot` report.
#[derive(Debug, serde::Serialize)]
pub struct RebootReport {
    /// The device's mTLS address.
    pub address: String,
}

impl fmt::Display for RebootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the device at {} is rebooting", self.address)
    }
}

/// `wendy device reboot`.
pub async fn reboot(store: &Store, target: &Target) -> Result<RebootReport, CliError> {
    let conn = connect(store, target).await?;
    reboot_conn(&conn).await?;
    Ok(RebootReport { address: conn.addr.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(Source::parse("http://h/b.raucb"), Source::Url("http://h/b.raucb".into()));
        assert_eq!(Source::parse("HTTPS://h/b.raucb"), Source::Url("HTTPS://h/b.raucb".into()));
        assert_eq!(Source::parse("build/b.raucb"), Source::File("build/b.raucb".into()));
    }
}
