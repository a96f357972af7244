//! The update pipeline with a fake installer and a raw HTTP server on
//! loopback (RAUC itself is exercised by the QEMU tier).

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Records what it was asked to install; fails if told to.
#[derive(Debug, Default)]
struct FakeInstaller {
    seen: Mutex<Vec<Vec<u8>>>,
    fail: Option<String>,
}

impl BundleInstaller for FakeInstaller {
    fn install<'a>(
        &'a self,
        bundle: &'a Path,
        progress: mpsc::Sender<Event>,
    ) -> BoxFuture<'a, Result<Installed, String>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(std::fs::read(bundle).unwrap());
            let _ = progress.send(Event::Progress { phase: phase::INSTALLING, percent: 50 }).await;
            match &self.fail {
                Some(m) => Err(m.clone()),
                None => Ok(Installed { slot: "B".into(), version: "2.0.0".into() }),
            }
        })
    }
}

fn updater(dir: &Path, installer: Arc<FakeInstaller>) -> Arc<Updater> {
    let policy = UpdatePolicy {
        reserve: 0,
        fetch: FetchPolicy {
            connect: Duration::from_secs(2),
            response: Duration::from_millis(500),
            stall: Duration::from_millis(500),
        },
        upload_stall: Duration::from_millis(500),
        install: Duration::from_secs(5),
    };
    Arc::new(Updater::new(dir.to_owned(), policy, installer))
}

async fn collect(mut events: Events) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(e) = events.recv().await {
        all.push(e);
    }
    all
}

/// Serves one raw HTTP response per connection; `None` accepts and stalls.
async fn http_server(response: Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match response {
                    Some(r) => {
                        let _ = s.write_all(&r).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    format!("http://{addr}/wendyos-qemuarm64-2.0.0.raucb")
}

fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

fn failed(events: &[Event]) -> &str {
    match events.last() {
        Some(Event::Failed(m)) => m,
        other => panic!("expected a failure, got {other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn a_url_is_downloaded_installed_and_recorded() {
    let t = tempfile::tempdir().unwrap();
    let installer = Arc::new(FakeInstaller::default());
    let u = updater(t.path(), installer.clone());
    let body = vec![7u8; 100_000];
    let url = http_server(Some(ok_response(&body))).await;
    let events = collect(u.from_url(&url).unwrap()).await;
    assert_eq!(events.last(), Some(&Event::Completed), "{events:?}");
    assert!(events.contains(&Event::Progress { phase: phase::DOWNLOADING, percent: 100 }), "{events:?}");
    assert_eq!(installer.seen.lock().unwrap().as_slice(), &[body]);
    let r = record::load(t.path()).unwrap();
    assert_eq!((r.outcome, r.slot.as_str(), r.version.as_str()), (Outcome::Installed, "B", "2.0.0"));
    // Nothing but the record is left in the staging directory.
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [record::FILE]);
}

#[tokio::test]
async fn a_404_a_stall_and_a_short_body_fail_with_their_reason() {
    let t = tempfile::tempdir().unwrap();
    let installer = Arc::new(FakeInstaller::default());
    let u = updater(t.path(), installer.clone());

    let url = http_server(Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec())).await;
    let events = collect(u.from_url(&url).unwrap()).await;
    assert!(failed(&events).contains("HTTP 404"), "{events:?}");

    let url = http_server(None).await;
    let events = collect(u.from_url(&url).unwrap()).await;
    assert!(failed(&events).contains("took longer than"), "{events:?}");

    let mut short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n".to_vec();
    short.extend_from_slice(b"abc");
    let url = http_server(Some(short)).await;
    let events = collect(u.from_url(&url).unwrap()).await;
    assert!(failed(&events).contains("download failed"), "{events:?}");

    assert!(installer.seen.lock().unwrap().is_empty(), "nothing reached the installer");
    assert_eq!(record::load(t.path()).unwrap().outcome, Outcome::Failed);
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [record::FILE], "no partial bundle is left");
}

#[tokio::test]
async fn bad_urls_are_refused_before_anything_starts() {
    let t = tempfile::tempdir().unwrap();
    let u = updater(t.path(), Arc::new(FakeInstaller::default()));
    let e = u.from_url("ftp://host/wendyos.raucb").unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("scheme"), "{e:?}");
}

#[tokio::test]
async fn a_second_update_is_refused_while_one_runs() {
    let t = tempfile::tempdir().unwrap();
    let u = updater(t.path(), Arc::new(FakeInstaller::default()));
    let stalled = http_server(None).await;
    let first = u.from_url(&stalled).unwrap();
    let e = u.from_url(&stalled).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("already running"), "{e:?}");
    let events = collect(first).await;
    assert!(matches!(events.last(), Some(Event::Failed(_))));
    // Once it ended, the next one may start.
    let url = http_server(Some(ok_response(b"bundle"))).await;
    assert_eq!(collect(u.from_url(&url).unwrap()).await.last(), Some(&Event::Completed));
}

fn upload(messages: Vec<RequestType>) -> impl Stream<Item = Result<InstallBundleRequest, Status>> + Send + Unpin {
    futures::stream::iter(messages.into_iter().map(|m| Ok(InstallBundleRequest { request_type: Some(m) })))
}

fn header(bundle: &[u8]) -> RequestType {
    RequestType::Header(wendy_proto::agent_admin::install_bundle_request::Header {
        size: bundle.len() as u64,
        sha256: hex::encode(Sha256::digest(bundle)),
    })
}

#[tokio::test]
async fn an_upload_is_checked_against_its_header() {
    let t = tempfile::tempdir().unwrap();
    let installer = Arc::new(FakeInstaller::default());
    let u = updater(t.path(), installer.clone());
    let bundle = b"a signed bundle".to_vec();

    let ok = upload(vec![
        header(&bundle),
        RequestType::Chunk(bundle[..5].to_vec()),
        RequestType::Chunk(bundle[5..].to_vec()),
    ]);
    assert_eq!(collect(u.from_upload(ok).unwrap()).await.last(), Some(&Event::Completed));
    assert_eq!(installer.seen.lock().unwrap().len(), 1);

    let mut flipped = bundle.clone();
    flipped[3] ^= 1;
    let events = collect(u.from_upload(upload(vec![header(&bundle), RequestType::Chunk(flipped)])).unwrap()).await;
    assert!(failed(&events).contains("SHA-256 mismatch"), "{events:?}");

    let events =
        collect(u.from_upload(upload(vec![header(&bundle), RequestType::Chunk(bundle[..4].to_vec())])).unwrap()).await;
    assert!(failed(&events).contains("ended after 4"), "{events:?}");

    let events = collect(u.from_upload(upload(vec![RequestType::Chunk(bundle.clone())])).unwrap()).await;
    assert!(failed(&events).contains("first message must be the header"), "{events:?}");

    let too_big = RequestType::Header(wendy_proto::agent_admin::install_bundle_request::Header {
        size: u64::MAX / 2,
        sha256: "0".repeat(64),
    });
    let events = collect(u.from_upload(upload(vec![too_big])).unwrap()).await;
    assert!(failed(&events).contains("not enough space"), "{events:?}");

    assert_eq!(installer.seen.lock().unwrap().len(), 1, "no refused upload reached the installer");
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [record::FILE]);
}

#[tokio::test]
async fn an_installer_refusal_is_reported_and_recorded() {
    let t = tempfile::tempdir().unwrap();
    let installer = Arc::new(FakeInstaller {
        fail: Some("RAUC refused the bundle: signature invalid".into()),
        ..Default::default()
    });
    let u = updater(t.path(), installer);
    let bundle = b"bundle".to_vec();
    let events = collect(u.from_upload(upload(vec![header(&bundle), RequestType::Chunk(bundle)])).unwrap()).await;
    assert!(failed(&events).contains("signature invalid"));
    let r = record::load(t.path()).unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.message.contains("signature invalid"));
}

#[test]
fn rollback_and_success_are_recorded_at_boot() {
    let t = tempfile::tempdir().unwrap();
    record::store(t.path(), &Record::new(Outcome::Installed, "2.0.0", "B", "installed"));
    assert!(record::is_trial_boot(t.path(), "B"));
    assert!(!record::is_trial_boot(t.path(), "A"));
    // Booted the new slot: nothing to note at boot; marked good later.
    assert_eq!(record::note_boot(t.path(), "B"), None);
    record::note_good(t.path(), "B");
    assert_eq!(record::load(t.path()).unwrap().outcome, Outcome::Booted);
    // Installed B, but A booted: a rollback.
    record::store(t.path(), &Record::new(Outcome::Installed, "3.0.0", "B", "installed"));
    let r = record::note_boot(t.path(), "A").unwrap();
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert!(r.message.contains("booted slot A"), "{}", r.message);
    assert_eq!(record::load(t.path()).unwrap().outcome, Outcome::RolledBack);
    // A garbage record is ignored, not fatal.
    std::fs::write(record::path(t.path()), b"{nope").unwrap();
    assert_eq!(record::load(t.path()), None);
}

#[test]
fn percentages() {
    assert_eq!(percent_of(50, Some(200)), Some(25));
    assert_eq!(percent_of(50, None), None);
    assert_eq!(percent_of(50, Some(0)), None);
    assert_eq!(percent_of(u64::MAX, Some(1)), Some(100));
}
