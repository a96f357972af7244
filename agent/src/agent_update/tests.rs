use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::replacement::{choose, Choice, Installed, Paths, MAX_ATTEMPTS};
use super::upload::{self, UploadError};
use super::*;
use crate::config::{self, Config};
use std::sync::atomic::{AtomicBool, Ordering};

/// A config under `root`; a development image when `development`.
fn config(root: &Path, development: bool) -> Config {
    let marker = root.join("development");
    if development {
        std::fs::write(&marker, "").unwrap();
    }
    std::fs::write(root.join("version.txt"), "1.0.0\n").unwrap();
    let root = root.to_owned();
    Config::from_lookup(move |k| match k {
        config::CONFIG_PATH_ENV => Some(root.join("state").display().to_string()),
        config::DEVELOPMENT_MARKER_ENV => Some(marker.display().to_string()),
        config::OS_VERSION_FILE_ENV => Some(root.join("version.txt").display().to_string()),
        config::DATA_RESERVE_ENV => Some("0".into()),
        _ => None,
    })
    .unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The messages of an upload of `chunks` ending with `control.update`.
fn messages(chunks: &[&[u8]], sha256: &str) -> Vec<Result<Message, Status>> {
    let mut m: Vec<_> = chunks.iter().map(|c| Ok(Message::Chunk(c.to_vec()))).collect();
    m.push(Ok(Message::Update { sha256: sha256.into() }));
    m
}

fn limits() -> Limits {
    Limits { max_bytes: 1024, stall: Duration::from_secs(5), version_check: Duration::from_secs(5), reserve: 0 }
}

async fn receive(staging: &Path, msgs: Vec<Result<Message, Status>>, limits: &Limits) -> Result<(), UploadError> {
    upload::receive(futures::stream::iter(msgs), staging, limits).await.map(|s| s.keep())
}

#[tokio::test]
async fn digest_mismatch_size_cap_and_protocol_errors_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("d").join(replacement::STAGING);
    let l = limits();
    let e = receive(&staging, messages(&[b"abc", b"def"], &sha(b"abcdeX")), &l).await.unwrap_err();
    assert!(matches!(e, UploadError::Mismatch { size: 6, .. }), "{e}");
    assert!(e.to_string().contains(upload::SHA256_FIELD), "{e}");
    assert!(!staging.exists());

    let big = vec![0u8; 1025];
    let e = receive(&staging, messages(&[&big], &sha(&big)), &l).await.unwrap_err();
    assert!(matches!(e, UploadError::TooLarge { max: 1024 }), "{e}");
    assert!(!staging.exists());

    let e = receive(&staging, vec![Ok(Message::Chunk(b"abc".to_vec()))], &l).await.unwrap_err();
    assert!(matches!(e, UploadError::MissingControl), "{e}");
    assert!(e.to_string().contains(upload::SHA256_FIELD), "{e}");
    assert!(!staging.exists());

    let e = receive(&staging, messages(&[b"abc"], "not-hex"), &l).await.unwrap_err();
    assert!(matches!(e, UploadError::BadDigest { .. }), "{e}");
    assert!(e.to_string().contains(upload::SHA256_FIELD), "{e}");
    assert!(!staging.exists());

    let e = receive(&staging, messages(&[], &sha(b"")), &l).await.unwrap_err();
    assert!(matches!(e, UploadError::NoBytes), "{e}");
    let e = receive(&staging, vec![Ok(Message::Empty)], &l).await.unwrap_err();
    assert!(matches!(e, UploadError::EmptyMessage), "{e}");
    let e = receive(&staging, vec![Err(Status::cancelled("gone"))], &l).await.unwrap_err();
    assert_eq!(Status::from(AgentUpdateError::from(e)).code(), tonic::Code::Cancelled);
    assert!(!staging.exists());

    // Upper-case hex and surrounding blanks are the same digest.
    receive(&staging, messages(&[b"abc"], &format!(" {} ", sha(b"abc").to_uppercase())), &l).await.unwrap();
    assert_eq!(std::fs::read(&staging).unwrap(), b"abc");
}

#[tokio::test]
async fn errors_map_to_status_codes() {
    let code = |e: AgentUpdateError| Status::from(e).code();
    assert_eq!(code(AgentUpdateError::Production), tonic::Code::FailedPrecondition);
    assert_eq!(code(AgentUpdateError::Busy), tonic::Code::FailedPrecondition);
    assert_eq!(code(UploadError::MissingControl.into()), tonic::Code::InvalidArgument);
    assert_eq!(code(UploadError::TooLarge { max: 1 }.into()), tonic::Code::InvalidArgument);
    assert_eq!(
        code(UploadError::NoSpace { needed: 1, reserve: 1, available: 1 }.into()),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(code(AgentUpdateError::NotRunnable("x".into())), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_production_image_refuses_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let updater = Arc::new(AgentUpdater::new(&config(tmp.path(), false)));
    let read = Arc::new(AtomicBool::new(false));
    let flag = read.clone();
    let upload = futures::stream::poll_fn(move |_| {
        flag.store(true, Ordering::SeqCst);
        std::task::Poll::Ready(None::<Result<Message, Status>>)
    });
    let e = updater.start(upload).unwrap_err();
    let status = Status::from(e);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("wendy os update") && status.message().contains("RAUC"), "{status:?}");
    assert!(!read.load(Ordering::SeqCst));
}

/// A stand-in agent: a script printing `wendy-agent <v>` for `--version`.
fn script(body: &str) -> Vec<u8> {
    format!("#!/bin/sh\n{body}\n").into_bytes()
}

async fn outcome(updater: &Arc<AgentUpdater>, binary: &[u8], sha256: &str) -> Result<(), Status> {
    let msgs = messages(&[binary], sha256);
    let mut rx = updater.start(futures::stream::iter(msgs)).map_err(Status::from)?;
    rx.recv().await.expect("an outcome")
}

#[tokio::test]
async fn a_development_image_installs_a_binary_that_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), true);
    let updater = Arc::new(AgentUpdater::new(&cfg).with_limits(limits()));
    let paths = updater.paths().clone();

    // Does not run (exits 1): refused, nothing installed or left behind.
    let bad = script("exit 1");
    let e = outcome(&updater, &bad, &sha(&bad)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("does not run on this device"), "{e:?}");
    // Runs but is not an agent.
    let other = script("echo hello");
    let e = outcome(&updater, &other, &sha(&other)).await.unwrap_err();
    assert!(e.message().contains("wendy-agent <version>"), "{e:?}");
    assert!(!paths.binary().exists() && !paths.staging().exists());

    let good = script("echo 'wendy-agent 9.9.9'");
    outcome(&updater, &good, &sha(&good)).await.unwrap();
    assert_eq!(std::fs::read(paths.binary()).unwrap(), good);
    assert_eq!(std::fs::metadata(paths.binary()).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_to_string(paths.attempts()).unwrap(), "0\n");
    assert_eq!(std::fs::read_to_string(paths.os_version()).unwrap(), "1.0.0\n");
    assert!(!paths.staging().exists());
    assert_eq!(choose(&Installed::read(&paths), true, Some("1.0.0")), Choice::Run { attempt: 1 });
    // The agent leaves after answering, and takes no second update.
    tokio::time::timeout(Duration::from_secs(5), updater.restart_requested()).await.unwrap();
    let e = outcome(&updater, &good, &sha(&good)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
}

#[test]
fn the_stock_agent_runs_the_replacement_only_within_the_rules() {
    let ok = Installed { binary: true, attempts: Some(0), os_version: Some("1.0.0".into()) };
    assert_eq!(choose(&ok, true, Some("1.0.0")), Choice::Run { attempt: 1 });
    assert_eq!(choose(&Installed { binary: false, ..ok.clone() }, true, Some("1.0.0")), Choice::NotInstalled);
    assert_eq!(choose(&ok, false, Some("1.0.0")), Choice::Production);
    let after = |n| Installed { attempts: Some(n), ..ok.clone() };
    assert_eq!(choose(&after(MAX_ATTEMPTS - 1), true, Some("1.0.0")), Choice::Run { attempt: MAX_ATTEMPTS });
    assert_eq!(choose(&after(MAX_ATTEMPTS), true, Some("1.0.0")), Choice::Exhausted);
    assert_eq!(choose(&Installed { attempts: None, ..ok.clone() }, true, Some("1.0.0")), Choice::Exhausted);
    assert!(matches!(choose(&ok, true, Some("2.0.0")), Choice::OsChanged { .. }));
    assert!(matches!(choose(&ok, true, None), Choice::OsChanged { .. }));
    assert!(matches!(
        choose(&Installed { os_version: None, ..ok.clone() }, true, Some("1.0.0")),
        Choice::OsChanged { .. }
    ));
    // Installed where the OS had no version file: runs while there is none.
    let unversioned = Installed { os_version: Some(String::new()), ..ok };
    assert_eq!(choose(&unversioned, true, None), Choice::Run { attempt: 1 });
}

#[test]
fn counter_files_are_read_as_the_rules_need() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = Paths::new(tmp.path());
    std::fs::create_dir_all(paths.dir()).unwrap();
    assert_eq!(Installed::read(&paths), Installed { binary: false, attempts: Some(0), os_version: None });
    std::fs::write(paths.binary(), "x").unwrap();
    std::fs::write(paths.attempts(), "2\n").unwrap();
    std::fs::write(paths.os_version(), "1.0.0\n").unwrap();
    let read = Installed::read(&paths);
    assert_eq!(read, Installed { binary: true, attempts: Some(2), os_version: Some("1.0.0".into()) });
    std::fs::write(paths.attempts(), "garbage").unwrap();
    assert_eq!(Installed::read(&paths).attempts, None);
}

#[test]
fn the_unit_restarts_the_agent_for_its_exit_code() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    let unit = std::fs::read_to_string(dir.join("../image/rootfs/usr/lib/systemd/system/wendy-agent.service")).unwrap();
    for key in ["SuccessExitStatus=", "RestartForceExitStatus="] {
        let values: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix(key)).collect();
        assert_eq!(values, [RESTART_EXIT_CODE.to_string()], "{key}");
    }
}
