//! `wendy apps`: the apps on a provisioned device (issue 14).
//!
//! - `list`: the published v2 `ListContainers` (name, version, state,
//!   failure count), with each app's restart policy from our own
//!   `wendyos.agent.v1.AppService/ListAppDetails` (decision 0086); an
//!   agent without that call shows `-` (JSON `null`).
//! - `logs APP [--follow]`: our `ReadAppLogs`, because the published
//!   service returns output only from `StartContainer`, which starts the
//!   app (decision 0086). Prints the app's output so far and exits; with
//!   `--follow`, new output until Ctrl-C.
//! - `attach APP`: v2 `AttachContainer`: this terminal's stdin goes to
//!   the running app's stdin, its output from now on comes back, until
//!   the app exits or Ctrl-C (which detaches; the app keeps running).
//!   The end of our stdin is not passed on: the app's stdin stays open
//!   for the next attach.
//! - `stop APP`: v2 `StopContainer`; the app stays stopped.
//! - `rm APP [--keep-image] [--volumes]`: v2 `DeleteContainer`, with its
//!   image (unless another app uses it) unless `--keep-image`, and with its
//!   `persist` volumes when `--volumes`.
//!
//! All of them talk mTLS only ([`device::connect_provisioned`]). Listing
//! and logs need role Viewer; attach, stop and rm Member.
//!
//! `wendy apps list --json` prints one object, stable for scripts:
//!
//! ```json
//! {"address": "192.0.2.7:50052",
//!  "apps": [{"name": "hello", "version": "1.0.0", "state": "running",
//!            "restart_policy": "unless-stopped", "failure_count": 0}]}
//! ```
//!
//! - `address`: the device's mTLS address;
//! - `apps`: sorted by name; `name` is the app name (`appId` or
//!   `wendy run --name`), `version` its `wendy.json` version (may be
//!   empty), `state` `running`, `stopped` or `unknown`, `restart_policy`
//!   `no`, `unless-stopped`, `on-failure:N` (N retries, 0 without limit)
//!   or `null` when the agent does not say, `failure_count` the restarts
//!   after a failed exit.
//!
//! `stop --json` prints `{"address", "app", "result": "stopped"}`; `rm
//! --json` prints `{"address", "app", "result": "removed", "delete_image",
//! "delete_volumes"}` (what was asked: an image another app uses is kept).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;
use wendy_proto::agent_admin::app_service_client::AppServiceClient;
use wendy_proto::agent_admin::{ListAppDetailsRequest, ReadAppLogsRequest};
use wendy_proto::agent_v2::wendy_container_service_client::WendyContainerServiceClient;
use wendy_proto::agent_v2::{
    attach_container_request::RequestType as AttachType, container_stream_response::ResponseType as OutputType,
    AppRunningState, AttachContainerRequest, DeleteContainerRequest, ListContainersRequest, StopContainerRequest,
};

use crate::config::Store;
use crate::device::{self, Connection, Target};
use crate::error::{sanitize, CliError};

/// What `connect_provisioned` names when the device is not provisioned.
const SERVED: &str = "apps";

/// Bytes of our stdin sent per `AttachContainer` message at most.
const STDIN_CHUNK: usize = 32 * 1024;

/// The hint for an app the device does not have.
const LIST_HINT: &str = "`wendy apps list` shows the apps on the device";

async fn connect(store: &Store, target: &Target) -> Result<Connection, CliError> {
    device::connect_provisioned(store, target, SERVED).await
}

fn published(conn: &Connection) -> WendyContainerServiceClient<Channel> {
    wendy_proto::limited!(WendyContainerServiceClient::new(conn.channel.clone()))
}

fn ours(conn: &Connection) -> AppServiceClient<Channel> {
    wendy_proto::limited!(AppServiceClient::new(conn.channel.clone()))
}

/// Maps a failed apps call: an unknown app names itself and points at
/// `wendy apps list`; a device without containerd (UNAVAILABLE naming it)
/// or an agent that does not serve the call (UNIMPLEMENTED) "does not run
/// apps"; everything else (permission denied with the role message
/// included) as [`CliError::from_status`] maps it.
pub(crate) fn status_error(context: String, app: Option<&str>, status: &tonic::Status, conn: &Connection) -> CliError {
    let message = sanitize(status.message());
    match status.code() {
        tonic::Code::NotFound if app.is_some() => CliError::Remote {
            context,
            message: if message.is_empty() { format!("no app named {:?}", app.unwrap_or_default()) } else { message },
            hint: Some(LIST_HINT.into()),
        },
        tonic::Code::Unavailable if status.message().contains("containerd") => CliError::Remote {
            context,
            message: format!("this device does not run apps (no containerd): {message}"),
            hint: Some("`wendy device version --json` lists `containers` in `featureset` once it does".into()),
        },
        tonic::Code::Unimplemented => CliError::Remote {
            context,
            message: format!("this device does not run apps (its agent does not serve this call): {message}"),
            hint: Some("an agent built with apps lists `containers` in `wendy device version --json`".into()),
        },
        _ => CliError::from_status(context, status, &device::hints(conn)),
    }
}

/// One app in `wendy apps list`.
#[derive(Debug, serde::Serialize)]
pub struct AppReport {
    /// The app's name.
    pub name: String,
    /// Its `wendy.json` version.
    pub version: String,
    /// `running`, `stopped`, `unknown`.
    pub state: &'static str,
    /// `no`, `unless-stopped`, `on-failure:N`; `None` if the agent does
    /// not say.
    pub restart_policy: Option<String>,
    /// Restarts after a failed exit.
    pub failure_count: u32,
}

/// `wendy apps list`.
#[derive(Debug, serde::Serialize)]
pub struct ListReport {
    /// The device's mTLS address.
    pub address: String,
    /// Every app, by name.
    pub apps: Vec<AppReport>,
}

impl fmt::Display for ListReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.apps.is_empty() {
            return write!(f, "no apps on the device at {}", self.address);
        }
        let rows: Vec<[String; 5]> = self
            .apps
            .iter()
            .map(|a| {
                [
                    a.name.clone(),
                    or_dash(&a.version).to_owned(),
                    a.state.to_owned(),
                    a.restart_policy.clone().unwrap_or_else(|| "-".into()),
                    a.failure_count.to_string(),
                ]
            })
            .collect();
        let header = ["NAME", "VERSION", "STATE", "RESTART", "FAILURES"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 5]| -> fmt::Result {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            write!(f, "{}", out.trim_end())
        };
        line(f, header)?;
        for row in &rows {
            writeln!(f)?;
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4]])?;
        }
        Ok(())
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn state_name(state: i32) -> &'static str {
    match AppRunningState::try_from(state) {
        Ok(AppRunningState::Running) => "running",
        Ok(AppRunningState::Stopped) => "stopped",
        _ => "unknown",
    }
}

/// `wendy apps list`.
pub async fn list(store: &Store, target: &Target) -> Result<ListReport, CliError> {
    let conn = connect(store, target).await?;
    let context = || format!("listing the apps on the device at {}", conn.addr);
    let mut stream = published(&conn)
        .list_containers(ListContainersRequest {})
        .await
        .map_err(|s| status_error(context(), None, &s, &conn))?
        .into_inner();
    let mut apps = Vec::new();
    while let Some(item) = stream.next().await {
        let item = item.map_err(|s| status_error(context(), None, &s, &conn))?;
        if let Some(c) = item.container {
            apps.push(AppReport {
                name: sanitize(&c.app_name),
                version: sanitize(&c.app_version),
                state: state_name(c.running_state),
                restart_policy: None,
                failure_count: c.failure_count,
            });
        }
    }
    // Restart policies come from our own call; an agent without it (or a
    // refusal) leaves them unknown rather than failing the list.
    match ours(&conn).list_app_details(ListAppDetailsRequest {}).await {
        Ok(details) => {
            let policies: BTreeMap<String, String> = details
                .into_inner()
                .apps
                .into_iter()
                .map(|d| (sanitize(&d.app_name), sanitize(&d.restart_policy)))
                .collect();
            for app in &mut apps {
                app.restart_policy = policies.get(&app.name).filter(|p| !p.is_empty()).cloned();
            }
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {}
        Err(s) => return Err(status_error(context(), None, &s, &conn)),
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ListReport { address: conn.addr.to_string(), apps })
}

/// `wendy apps logs`: writes app `app`'s output to stdout as it arrives
/// (the app's own bytes, unfiltered); with `follow`, until Ctrl-C.
pub async fn logs(store: &Store, target: &Target, app: &str, follow: bool) -> Result<(), CliError> {
    let conn = connect(store, target).await?;
    let context = || format!("reading the output of app {app:?} on the device at {}", conn.addr);
    let mut stream = ours(&conn)
        .read_app_logs(ReadAppLogsRequest { app_name: app.to_owned(), follow })
        .await
        .map_err(|s| status_error(context(), Some(app), &s, &conn))?
        .into_inner();
    let mut ctrl_c = interrupt()?;
    let mut out = std::io::stdout().lock();
    loop {
        let item = tokio::select! {
            _ = ctrl_c.recv() => break,
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        let chunk = item.map_err(|s| status_error(context(), Some(app), &s, &conn))?;
        if !write_out(&mut out, &chunk.data, follow)? {
            return Ok(());
        }
    }
    finish_out(&mut out)
}

/// Ctrl-C, registered now: `tokio::signal::ctrl_c()` registers only when
/// first polled, and a select whose other branch is ready never polls it,
/// so a Ctrl-C right after the first output would kill the CLI instead.
pub(crate) fn interrupt() -> Result<tokio::signal::unix::Signal, CliError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::io("listening for Ctrl-C", e))
}

/// Writes `data` to `out` (flushed with `flush`); `false` when the reader
/// went away (`wendy apps logs x | head` is not an error).
fn write_out(out: &mut impl Write, data: &[u8], flush: bool) -> Result<bool, CliError> {
    match out.write_all(data).and_then(|()| if flush { out.flush() } else { Ok(()) }) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        r => r.map(|()| true).map_err(|e| CliError::io("writing output", e)),
    }
}

/// The last flush of `out`; a reader that went away is not an error.
fn finish_out(out: &mut impl Write) -> Result<(), CliError> {
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| CliError::io("writing output", e)),
    }
}

/// `wendy apps attach`: our stdin to the app's, its output to our stdout,
/// until it exits or Ctrl-C (the app keeps running).
pub async fn attach(store: &Store, target: &Target, app: &str) -> Result<(), CliError> {
    let conn = connect(store, target).await?;
    let context = || format!("attaching to app {app:?} on the device at {}", conn.addr);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = AttachContainerRequest { request_type: Some(AttachType::AppName(app.to_owned())) };
    tx.try_send(first).map_err(|_| CliError::io("attaching", std::io::Error::other("request queue full")))?;
    forward_stdin(tx);
    let mut stream = published(&conn)
        .attach_container(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| status_error(context(), Some(app), &s, &conn))?
        .into_inner();
    let mut ctrl_c = interrupt()?;
    let mut out = std::io::stdout().lock();
    loop {
        let item = tokio::select! {
            _ = ctrl_c.recv() => break,
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        let msg = item.map_err(|s| status_error(context(), Some(app), &s, &conn))?;
        let data = match msg.response_type {
            Some(OutputType::StdoutOutput(o) | OutputType::StderrOutput(o)) => o.data,
            Some(OutputType::Started(_)) | None => continue,
        };
        if !write_out(&mut out, &data, true)? {
            return Ok(());
        }
    }
    finish_out(&mut out)
}

/// Reads our stdin on a thread of its own (a blocking read cannot be
/// cancelled, and would hold up the runtime's shutdown) and sends it in
/// `AttachContainer` messages until it ends or the call is over.
fn forward_stdin(tx: tokio::sync::mpsc::Sender<AttachContainerRequest>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let msg = AttachContainerRequest { request_type: Some(AttachType::StdinData(buf[..n].to_vec())) };
            if tx.blocking_send(msg).is_err() {
                return;
            }
        }
    });
}

/// The report of `stop` and `rm`.
#[derive(Debug, serde::Serialize)]
pub struct ChangeReport {
    /// The device's mTLS address.
    pub address: String,
    /// The app.
    pub app: String,
    /// `stopped` or `removed`.
    pub result: &'static str,
    /// `rm`: whether its image was to be deleted too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_image: Option<bool>,
    /// `rm`: whether its volumes were to be deleted too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_volumes: Option<bool>,
}

impl fmt::Display for ChangeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "app {:?} {} on the device at {}", self.app, self.result, self.address)?;
        let mut with = Vec::new();
        if self.delete_image == Some(true) {
            with.push("its image (unless another app uses it)");
        }
        if self.delete_volumes == Some(true) {
            with.push("its volumes (unless another app uses them)");
        }
        if !with.is_empty() {
            write!(f, ", with {}", with.join(" and "))?;
        }
        Ok(())
    }
}

/// A spinner on stderr while a change runs (hidden off a terminal and
/// with `--json`); `wendy run` uses it too.
pub(crate) fn spinner(show: bool, message: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// `wendy apps stop`.
pub async fn stop(store: &Store, target: &Target, app: &str, progress: bool) -> Result<ChangeReport, CliError> {
    let conn = connect(store, target).await?;
    let pb = spinner(progress, format!("stopping {app}"));
    let result = published(&conn).stop_container(StopContainerRequest { app_name: app.to_owned() }).await;
    pb.finish_and_clear();
    result.map_err(|s| {
        status_error(format!("stopping app {app:?} on the device at {}", conn.addr), Some(app), &s, &conn)
    })?;
    Ok(ChangeReport {
        address: conn.addr.to_string(),
        app: app.to_owned(),
        result: "stopped",
        delete_image: None,
        delete_volumes: None,
    })
}

/// Options of `wendy apps rm`.
#[derive(Clone, Copy, Debug)]
pub struct RemoveOptions {
    /// Keep the image.
    pub keep_image: bool,
    /// Delete the app's `persist` volumes.
    pub volumes: bool,
    /// Whether to draw a spinner.
    pub progress: bool,
}

/// `wendy apps rm`.
pub async fn remove(store: &Store, target: &Target, app: &str, opts: RemoveOptions) -> Result<ChangeReport, CliError> {
    let conn = connect(store, target).await?;
    let pb = spinner(opts.progress, format!("removing {app}"));
    let req = DeleteContainerRequest {
        app_name: app.to_owned(),
        delete_image: !opts.keep_image,
        delete_volumes: opts.volumes,
    };
    let result = published(&conn).delete_container(req).await;
    pb.finish_and_clear();
    result.map_err(|s| {
        status_error(format!("removing app {app:?} from the device at {}", conn.addr), Some(app), &s, &conn)
    })?;
    Ok(ChangeReport {
        address: conn.addr.to_string(),
        app: app.to_owned(),
        result: "removed",
        delete_image: Some(!opts.keep_image),
        delete_volumes: Some(opts.volumes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, version: &str, policy: Option<&str>) -> AppReport {
        AppReport {
            name: name.into(),
            version: version.into(),
            state: "running",
            restart_policy: policy.map(str::to_owned),
            failure_count: 2,
        }
    }

    #[test]
    fn table_aligns_and_marks_unknowns() {
        let r = ListReport {
            address: "h:1".into(),
            apps: vec![app("hello", "1.0.0", Some("unless-stopped")), app("a-much-longer-name", "", None)],
        };
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME                VERSION  STATE    RESTART"), "{text}");
        assert!(lines[1].starts_with("hello               1.0.0    running  unless-stopped  2"), "{text}");
        assert!(lines[2].starts_with("a-much-longer-name  -        running  -"), "{text}");
        let empty = ListReport { address: "h:1".into(), apps: vec![] };
        assert_eq!(empty.to_string(), "no apps on the device at h:1");
    }

    #[test]
    fn json_fields_are_stable() {
        let r = ListReport { address: "h:1".into(), apps: vec![app("hello", "1.0.0", None)] };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"address": "h:1", "apps": [{"name": "hello", "version": "1.0.0", "state": "running",
                "restart_policy": null, "failure_count": 2}]})
        );
        let c = ChangeReport {
            address: "h:1".into(),
            app: "x".into(),
            result: "stopped",
            delete_image: None,
            delete_volumes: None,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"address": "h:1", "app": "x", "result": "stopped"})
        );
    }

    #[tokio::test]
    async fn refusals_say_what_to_do() {
        use crate::error::Exit;
        let conn = Connection {
            channel: tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            mode: device::Mode::Mtls,
            addr: crate::addr::HostPort::parse("127.0.0.1:1", 1).unwrap(),
            login: None,
        };
        let e = status_error("x".into(), Some("nosuch"), &tonic::Status::not_found("no app named \"nosuch\""), &conn);
        assert_eq!(e.exit(), Exit::Generic);
        assert!(e.to_string().contains("\"nosuch\"") && e.to_string().ends_with(LIST_HINT), "{e}");
        let e = status_error("x".into(), Some("nosuch"), &tonic::Status::not_found(""), &conn);
        assert!(e.to_string().contains("no app named \"nosuch\""), "{e}");
        let s = tonic::Status::unavailable("containerd is not reachable on this device, so apps are unavailable");
        let e = status_error("x".into(), None, &s, &conn);
        assert_eq!(e.exit(), Exit::Generic);
        assert!(e.to_string().contains("this device does not run apps (no containerd)"), "{e}");
        let e = status_error("x".into(), None, &tonic::Status::unimplemented("unknown service"), &conn);
        assert!(e.to_string().contains("this device does not run apps"), "{e}");
        let e = status_error("x".into(), Some("a"), &tonic::Status::permission_denied("requires role Member"), &conn);
        assert_eq!(e.exit(), Exit::PermissionDenied);
        assert!(e.to_string().contains("your certificate's role is"), "{e}");
        // A dropped connection is not "no containerd".
        let e = status_error("x".into(), None, &tonic::Status::unavailable("transport error"), &conn);
        assert!(!e.to_string().contains("does not run apps"), "{e}");
    }

    #[test]
    fn states() {
        assert_eq!(state_name(AppRunningState::Running as i32), "running");
        assert_eq!(state_name(AppRunningState::Stopped as i32), "stopped");
        assert_eq!(state_name(99), "unknown");
    }
}
