//! `wendy run [DIR] [--image REF]`: build (or take) an app's image, push it
//! to the device's registry, create and start the app, and stream its
//! output (issue 14; decision 0103).
//!
//! 1. The app: `DIR/wendy.json` (the published format, sent unchanged as
//!    `app_config`; the device validates it) names it by `appId` unless
//!    `--name`; without `wendy.json`, `--name` is required and the device
//!    makes the config `{"appId": NAME}`.
//! 2. The image: `--image REF` (a containers-transport reference) as is;
//!    else `DIR/Containerfile` or `DIR/Dockerfile`, built with `podman
//!    build --platform` for the device's architecture (its
//!    `GetAgentVersion.cpu_architecture`). `skopeo copy` puts it into an OCI
//!    layout in a temporary directory ([`crate::image`]).
//! 3. The push ([`crate::push`]) to the registry on the device's host at
//!    [`registry_port`], repository `wendy/<app name>` (lower case), tag
//!    the app's version or `latest` ([`tag_for`]).
//! 4. The published v1 `CreateContainerWithProgress` (v2 has no create)
//!    with image `wendy/<app>:<tag>` (the name containerd stores the pushed
//!    manifest under), `app_config` and the restart policy (`--restart`,
//!    default `unless-stopped`); an app of that name is replaced by the
//!    device. Then the published v2 `StartContainer`.
//! 5. Its output goes to stdout until the app exits or Ctrl-C, which stops
//!    it (v2 `StopContainer`); `--detach` returns once it started.
//!
//! `--json` implies `--detach` and prints one object:
//!
//! ```json
//! {"address": "192.0.2.7:50052", "app": "hello", "image": "wendy/hello:1.0.0",
//!  "digest": "sha256:...", "pushed_bytes": 1234, "skipped_blobs": 0,
//!  "push_seconds": 0.2, "seconds": 1.5}
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use futures::StreamExt;
use tonic::transport::Channel;
use wendy_proto::agent::create_container_progress_response::ResponseType as CreateProgress;
use wendy_proto::agent::wendy_container_service_client::WendyContainerServiceClient as V1Client;
use wendy_proto::agent::CreateContainerRequest;
use wendy_proto::agent_shared::{RestartPolicy, RestartPolicyMode};
use wendy_proto::agent_v2::container_stream_response::ResponseType as Output;
use wendy_proto::agent_v2::wendy_container_service_client::WendyContainerServiceClient as V2Client;
use wendy_proto::agent_v2::{StartContainerRequest, StopContainerRequest};
use wendy_proto::contract::{DEFAULT_REGISTRY_PORT, REGISTRY_PORT_ENV};

use crate::apps::status_error;
use crate::config::Store;
use crate::device::{self, Connection, Target};
use crate::error::CliError;
use crate::{image, oci_layout, push};

/// The app config's file in the app's directory.
pub const APP_CONFIG_FILE: &str = "wendy.json";

/// The most of `wendy.json` the CLI reads; the device applies its own
/// (smaller) limit and every other rule.
const MAX_APP_CONFIG_READ: u64 = 1024 * 1024;

/// The longest tag the distribution spec allows.
const MAX_TAG: usize = 128;

/// `--restart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// `no`.
    No,
    /// `unless-stopped` (the default).
    UnlessStopped,
    /// `on-failure[:N]`: N retries, 0 (or none given) without limit.
    OnFailure(u32),
}

impl FromStr for Restart {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "no" => Ok(Self::No),
            "unless-stopped" => Ok(Self::UnlessStopped),
            "on-failure" => Ok(Self::OnFailure(0)),
            _ => match s.strip_prefix("on-failure:") {
                Some(n) => n.parse().map(Self::OnFailure).map_err(|_| format!("{n:?} is not a number of retries")),
                None => Err("expected no, unless-stopped or on-failure[:N]".into()),
            },
        }
    }
}

impl Restart {
    /// The published restart policy.
    pub fn to_proto(self) -> RestartPolicy {
        let (mode, n) = match self {
            Self::No => (RestartPolicyMode::No, 0),
            Self::UnlessStopped => (RestartPolicyMode::UnlessStopped, 0),
            Self::OnFailure(n) => (RestartPolicyMode::OnFailure, i32::try_from(n).unwrap_or(i32::MAX)),
        };
        RestartPolicy { mode: mode as i32, on_failure_max_retries: n }
    }
}

/// Options of `wendy run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The app's directory.
    pub dir: PathBuf,
    /// `--image`.
    pub image: Option<String>,
    /// `--name`.
    pub name: Option<String>,
    /// `--restart`.
    pub restart: Restart,
    /// `--detach` (or `--json`).
    pub detach: bool,
    /// `--json`: no progress, tools quiet.
    pub json: bool,
}

/// The app as `wendy.json` and the flags give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// Its name on the device.
    pub name: String,
    /// Its version (may be empty).
    pub version: String,
    /// `wendy.json` as read, if there is one.
    pub config: Option<Vec<u8>>,
}

/// Reads `dir/wendy.json` (if present) and names the app.
pub fn app(dir: &Path, name: Option<&str>) -> Result<App, CliError> {
    let path = dir.join(APP_CONFIG_FILE);
    let config = match wendy_net::safe_read::read(&path, MAX_APP_CONFIG_READ) {
        Ok(bytes) => Some(bytes),
        Err(wendy_net::safe_read::ReadError::NotFound { .. }) => None,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let (app_id, version) = match &config {
        Some(bytes) => {
            let bad = |reason: String| CliError::Usage(format!("{}: {reason}", path.display()));
            let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
            let field = |k: &str| match v.get(k) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("{k}: expected a string"))),
            };
            if !v.is_object() {
                return Err(bad("expected a JSON object".into()));
            }
            (field("appId")?, field("version")?.unwrap_or_default())
        }
        None => (None, String::new()),
    };
    let name = match (name, app_id) {
        (Some(n), _) => n.to_owned(),
        (None, Some(id)) => id,
        (None, None) if config.is_some() => {
            return Err(CliError::Usage(format!("{}: appId: required (or pass --name)", path.display())))
        }
        (None, None) => {
            return Err(CliError::Usage(format!(
                "no {APP_CONFIG_FILE} in {}: pass --name NAME (the app's name on the device)",
                dir.display()
            )))
        }
    };
    repository(&name)?;
    Ok(App { name, version, config })
}

/// The registry repository of app `name`: `wendy/<name>` in lower case.
/// Names are ASCII letters, digits and single `.`, `_`, `-` between them
/// (the device's rule), which then fit the distribution spec's grammar.
pub fn repository(name: &str) -> Result<String, CliError> {
    let mut previous_was_separator = true;
    let ok = !name.is_empty()
        && name.bytes().all(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {
                previous_was_separator = false;
                true
            }
            b'.' | b'_' | b'-' if !previous_was_separator => {
                previous_was_separator = true;
                true
            }
            _ => false,
        })
        && !previous_was_separator;
    if !ok {
        return Err(CliError::Usage(format!(
            "app name {:?}: use letters, digits and single '.', '_' or '-' between them",
            crate::error::sanitize(name)
        )));
    }
    Ok(format!("wendy/{}", name.to_ascii_lowercase()))
}

/// The image tag for app `version`: `latest` when empty; otherwise the
/// version with every character the spec's tag grammar lacks
/// (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) replaced by `_`.
pub fn tag_for(version: &str) -> String {
    if version.is_empty() {
        return "latest".into();
    }
    version
        .chars()
        .take(MAX_TAG)
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c,
            '.' | '-' if i > 0 => c,
            _ => '_',
        })
        .collect()
}

/// The registry's port: [`DEFAULT_REGISTRY_PORT`], or
/// `WENDY_REGISTRY_PORT` (for a device behind a port forward, and tests).
pub fn registry_port() -> Result<u16, CliError> {
    match std::env::var(REGISTRY_PORT_ENV) {
        Err(_) => Ok(DEFAULT_REGISTRY_PORT),
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| CliError::Usage(format!("{REGISTRY_PORT_ENV}={v:?} is not a port number"))),
    }
}

/// The `wendy run` report (`--json`, `--detach`).
#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    /// The device's mTLS address.
    pub address: String,
    /// The app's name.
    pub app: String,
    /// The image reference on the device.
    pub image: String,
    /// The image manifest's digest.
    pub digest: String,
    /// Bytes sent to the registry.
    pub pushed_bytes: u64,
    /// Blobs the registry had already.
    pub skipped_blobs: usize,
    /// Seconds the push took.
    pub push_seconds: f64,
    /// Seconds from the start of the command until the app started.
    pub seconds: f64,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "app {:?} started on the device at {} (image {}, {}; pushed {} bytes in {:.1}s)",
            self.app,
            self.address,
            self.image,
            short(&self.digest),
            self.pushed_bytes,
            self.push_seconds
        )
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn v1(conn: &Connection) -> V1Client<Channel> {
    wendy_proto::limited!(V1Client::new(conn.channel.clone()))
}

fn v2(conn: &Connection) -> V2Client<Channel> {
    wendy_proto::limited!(V2Client::new(conn.channel.clone()))
}

/// The refusal when `dir` has no build file and there is no `--image`.
fn no_build_file(dir: &Path) -> CliError {
    CliError::Usage(format!(
        "no {} in {}: add one, or pass --image REF (oci-archive:PATH, docker-archive:PATH, containers-storage:NAME)",
        image::BUILD_FILES.join(" or "),
        dir.display()
    ))
}

/// Checks, before anything is dialled, that there is an image to run.
fn check_source(opts: &RunOptions) -> Result<(), CliError> {
    match &opts.image {
        Some(r) => image::check_reference(r),
        None => image::find_build_file(&opts.dir).map(|_| ()).ok_or_else(|| no_build_file(&opts.dir)),
    }
}

/// The image as an OCI layout in `layout`, tagged `tag`.
async fn prepare_image(opts: &RunOptions, app: &App, platform: &str, layout: &Path, tag: &str) -> Result<(), CliError> {
    let quiet = opts.json;
    let reference = match &opts.image {
        Some(r) => r.clone(),
        None => {
            let file = image::find_build_file(&opts.dir).ok_or_else(|| no_build_file(&opts.dir))?;
            let local = format!("localhost/{}:{tag}", repository(&app.name)?);
            image::build(&opts.dir, &file, platform, &local, quiet).await?
        }
    };
    image::to_oci_layout(&reference, layout, tag, quiet).await
}

/// `wendy run`. Returns the report to print when detached; otherwise
/// streams the app's output and returns `None` when it exits or is
/// stopped with Ctrl-C.
pub async fn run(store: &Store, target: &Target, opts: RunOptions) -> Result<Option<RunReport>, CliError> {
    let start = Instant::now();
    let show = !opts.json;
    let app = app(&opts.dir, opts.name.as_deref())?;
    check_source(&opts)?;
    let repo = repository(&app.name)?;
    let tag = tag_for(&app.version);
    let port = registry_port()?;

    let conn = device::connect_provisioned(store, target, "apps").await?;
    let version = device::get_version(&conn).await?;
    let platform = image::platform_for(&version.cpu_architecture)?;

    let work = tempfile::tempdir().map_err(|e| CliError::io("creating a temporary directory", e))?;
    let layout = work.path().join("layout");
    prepare_image(&opts, &app, platform, &layout, &tag).await?;
    let plan = oci_layout::plan(&layout, &tag).map_err(|e| CliError::Usage(e.to_string()))?;
    if !plan.platforms.is_empty() && !plan.platforms.iter().any(|p| image::platform_matches(platform, p)) {
        return Err(CliError::Usage(format!(
            "the image is for {}, but the device is {platform}; build it with --platform {platform}",
            plan.platforms.join(", ")
        )));
    }

    let registry = target.base.with_port(port);
    let (config, _login) = device::mtls_config(store, &target.base)?;
    let mut client = push::RegistryClient::new(registry.clone(), config);
    let pushed = push::push(&mut client, &repo, &tag, &plan, show)
        .await
        .map_err(|e| e.into_cli(&registry, &device::hints(&conn)))?;
    drop(work);
    if show {
        eprintln!(
            "pushed {repo}:{tag} ({}) to {registry}: {} bytes in {:.1}s, {} blob(s) already there",
            short(&pushed.digest),
            pushed.pushed_bytes,
            pushed.seconds,
            pushed.skipped_blobs
        );
    }

    let image_name = format!("{repo}:{tag}");
    create(&conn, &app, &image_name, opts.restart, show).await?;
    let mut output = start_app(&conn, &app.name).await?;
    let report = RunReport {
        address: conn.addr.to_string(),
        app: app.name.clone(),
        image: image_name,
        digest: pushed.digest,
        pushed_bytes: pushed.pushed_bytes,
        skipped_blobs: pushed.skipped_blobs,
        push_seconds: pushed.seconds,
        seconds: start.elapsed().as_secs_f64(),
    };
    if opts.detach || opts.json {
        return Ok(Some(report));
    }
    eprintln!("{report}; its output follows (Ctrl-C stops it)");
    follow(&conn, &app.name, &mut output).await?;
    Ok(None)
}

/// Creates the app (replacing one of the same name) and waits until the
/// device has unpacked it.
async fn create(conn: &Connection, app: &App, image_name: &str, restart: Restart, show: bool) -> Result<(), CliError> {
    let context = || format!("creating app {:?} on the device at {}", app.name, conn.addr);
    let req = CreateContainerRequest {
        image_name: image_name.to_owned(),
        app_name: app.name.clone(),
        app_config: app.config.clone().unwrap_or_default(),
        restart_policy: Some(restart.to_proto()),
        ..Default::default()
    };
    let pb = crate::apps::spinner(show, format!("creating {}", app.name));
    let result = async {
        let mut stream = v1(conn).create_container_with_progress(req).await?.into_inner();
        while let Some(msg) = stream.next().await {
            if let Some(CreateProgress::Completed(_)) = msg?.response_type {
                return Ok(true);
            }
        }
        Ok::<_, tonic::Status>(false)
    }
    .await;
    pb.finish_and_clear();
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(CliError::Remote {
            context: context(),
            message: "the device ended the call without saying the app was created".into(),
            hint: None,
        }),
        Err(s) => Err(status_error(context(), None, &s, conn)),
    }
}

type OutputStream = tonic::Streaming<wendy_proto::agent_v2::ContainerStreamResponse>;

/// Starts the app and waits for `Started`.
async fn start_app(conn: &Connection, name: &str) -> Result<OutputStream, CliError> {
    let context = || format!("starting app {name:?} on the device at {}", conn.addr);
    let mut stream = v2(conn)
        .start_container(StartContainerRequest { app_name: name.to_owned() })
        .await
        .map_err(|s| status_error(context(), Some(name), &s, conn))?
        .into_inner();
    match stream.next().await {
        Some(Ok(msg)) if matches!(msg.response_type, Some(Output::Started(_))) => Ok(stream),
        Some(Err(s)) => Err(status_error(context(), Some(name), &s, conn)),
        _ => Err(CliError::Remote {
            context: context(),
            message: "the device did not say the app started".into(),
            hint: None,
        }),
    }
}

/// Writes the app's output to stdout until it exits or Ctrl-C, which
/// stops it.
async fn follow(conn: &Connection, name: &str, stream: &mut OutputStream) -> Result<(), CliError> {
    // Registered before the first line is printed, so a Ctrl-C right after
    // it stops the app rather than killing the CLI.
    let mut ctrl_c = crate::apps::interrupt()?;
    let mut out = std::io::stdout().lock();
    loop {
        let item = tokio::select! {
            _ = ctrl_c.recv() => {
                drop(out);
                return stop(conn, name).await;
            }
            item = stream.next() => item,
        };
        let data = match item {
            None => break,
            Some(Err(s)) => {
                return Err(status_error(
                    format!("following the output of app {name:?} on the device at {}", conn.addr),
                    Some(name),
                    &s,
                    conn,
                ))
            }
            Some(Ok(msg)) => match msg.response_type {
                Some(Output::StdoutOutput(o)) | Some(Output::StderrOutput(o)) => o.data,
                _ => continue,
            },
        };
        match out.write_all(&data).and_then(|()| out.flush()) {
            // `wendy run | head` is not an error; the app keeps running.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.map_err(|e| CliError::io("writing output", e))?,
        }
    }
    drop(out);
    eprintln!("app {name:?} exited");
    Ok(())
}

/// Stops the app after Ctrl-C.
async fn stop(conn: &Connection, name: &str) -> Result<(), CliError> {
    eprintln!("stopping app {name:?}");
    v2(conn).stop_container(StopContainerRequest { app_name: name.to_owned() }).await.map_err(|s| {
        status_error(format!("stopping app {name:?} on the device at {}", conn.addr), Some(name), &s, conn)
    })?;
    eprintln!("app {name:?} stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_flag() {
        assert_eq!("no".parse::<Restart>().unwrap(), Restart::No);
        assert_eq!("unless-stopped".parse::<Restart>().unwrap(), Restart::UnlessStopped);
        assert_eq!("on-failure".parse::<Restart>().unwrap(), Restart::OnFailure(0));
        assert_eq!("on-failure:3".parse::<Restart>().unwrap(), Restart::OnFailure(3));
        assert!("on-failure:x".parse::<Restart>().is_err());
        assert!("always".parse::<Restart>().is_err());
        let p = Restart::OnFailure(3).to_proto();
        assert_eq!((p.mode, p.on_failure_max_retries), (RestartPolicyMode::OnFailure as i32, 3));
        assert_eq!(Restart::No.to_proto().mode, RestartPolicyMode::No as i32);
    }

    #[test]
    fn tags() {
        assert_eq!(tag_for(""), "latest");
        assert_eq!(tag_for("1.0.0"), "1.0.0");
        assert_eq!(tag_for("1.0.0+build.5"), "1.0.0_build.5");
        assert_eq!(tag_for(".hidden"), "_hidden");
        assert_eq!(tag_for(&"v".repeat(300)).len(), MAX_TAG);
    }

    #[test]
    fn repositories() {
        assert_eq!(repository("Hello-App").unwrap(), "wendy/hello-app");
        for bad in ["", "a..b", "-a", "a-", "a/b", "a b", "ä"] {
            assert_eq!(repository(bad).unwrap_err().exit(), crate::error::Exit::Usage, "{bad:?}");
        }
    }

    #[test]
    fn app_from_config_and_flags() {
        let t = tempfile::tempdir().unwrap();
        let e = app(t.path(), None).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        assert_eq!(app(t.path(), Some("x")).unwrap(), App { name: "x".into(), version: String::new(), config: None });

        let json = r#"{"appId": "hello", "version": "1.2.3", "entitlements": []}"#;
        std::fs::write(t.path().join(APP_CONFIG_FILE), json).unwrap();
        let a = app(t.path(), None).unwrap();
        assert_eq!((a.name.as_str(), a.version.as_str()), ("hello", "1.2.3"));
        assert_eq!(a.config.as_deref(), Some(json.as_bytes()), "sent unchanged");
        assert_eq!(app(t.path(), Some("other")).unwrap().name, "other");

        for (bad, words) in [
            (r#"{"version": "1"}"#, "appId: required"),
            (r#"{"appId": 7}"#, "appId: expected a string"),
            ("[1]", "JSON object"),
            ("{", "EOF"),
            (r#"{"appId": "a/b"}"#, "app name"),
        ] {
            std::fs::write(t.path().join(APP_CONFIG_FILE), bad).unwrap();
            let e = app(t.path(), None).unwrap_err();
            assert!(e.to_string().contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn registry_port_default() {
        // The variable is not set in unit tests.
        if std::env::var_os(REGISTRY_PORT_ENV).is_none() {
            assert_eq!(registry_port().unwrap(), DEFAULT_REGISTRY_PORT);
        }
    }
}
