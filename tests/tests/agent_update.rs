//! The published `UpdateAgent` (v1 and v2) against the real agent on
//! loopback with the in-process fake pki-core: refused over plaintext, to a
//! Viewer, on a production image (pointing at `wendy os update`) and with a
//! wrong SHA-256 (nothing installed); on a development image a copy of the
//! agent itself is installed, the agent leaves with the restart status, and
//! the next start runs the replacement (`/proc/<pid>/exe`). Needs root
//! (`ip netns`) and `cargo build --workspace` first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wendy_agent::agent_update::replacement::{self, Paths};
use wendy_agent::agent_update::RESTART_EXIT_CODE;
use wendy_identity::role::Role;
use wendy_proto::agent::GetAgentVersionRequest;
use wendy_proto::agent_v2::update_agent_request::control_command::{Command, Update};
use wendy_proto::agent_v2::update_agent_request::{Chunk, ControlCommand, RequestType};
use wendy_proto::agent_v2::wendy_agent_update_service_client::WendyAgentUpdateServiceClient;
use wendy_proto::agent_v2::{update_agent_response, UpdateAgentRequest};
use wendy_tests::agent::{agent_client, provisioning_client, AgentFixture};
use wendy_tests::fake_pki::FakePki;
use wendy_tests::netns::Netns;

/// The v2 upload of `binary` with `sha256` in `control.update`.
fn v2_upload(binary: &[u8], sha256: &str) -> Vec<UpdateAgentRequest> {
    let mut m: Vec<_> = binary
        .chunks(64 * 1024)
        .map(|c| UpdateAgentRequest { request_type: Some(RequestType::Chunk(Chunk { data: c.to_vec() })) })
        .collect();
    let control = ControlCommand { command: Some(Command::Update(Update { sha256: sha256.into() })) };
    m.push(UpdateAgentRequest { request_type: Some(RequestType::Control(control)) });
    m
}

/// The same as v1 messages.
fn v1_upload(binary: &[u8], sha256: &str) -> Vec<wendy_proto::agent::UpdateAgentRequest> {
    use wendy_proto::agent::update_agent_request as v1;
    let control = v1::ControlCommand {
        command: Some(v1::control_command::Command::Update(v1::control_command::Update { sha256: sha256.into() })),
    };
    vec![
        wendy_proto::agent::UpdateAgentRequest {
            request_type: Some(v1::RequestType::Chunk(v1::Chunk { data: binary.to_vec() })),
        },
        wendy_proto::agent::UpdateAgentRequest { request_type: Some(v1::RequestType::Control(control)) },
    ]
}

/// Sends a v2 upload; `Ok` is `Updated{}`.
async fn update_v2(ch: tonic::transport::Channel, upload: Vec<UpdateAgentRequest>) -> Result<(), tonic::Status> {
    let mut client = wendy_proto::limited!(WendyAgentUpdateServiceClient::new(ch));
    let mut responses = client.update_agent(futures::stream::iter(upload)).await?.into_inner();
    match responses.message().await? {
        Some(r) if matches!(r.response_type, Some(update_agent_response::ResponseType::Updated(_))) => Ok(()),
        other => panic!("expected Updated, got {other:?}"),
    }
}

/// Sends a v1 upload; `Ok` is `Updated{}`.
async fn update_v1(
    ch: tonic::transport::Channel,
    upload: Vec<wendy_proto::agent::UpdateAgentRequest>,
) -> Result<(), tonic::Status> {
    let mut responses = agent_client(ch).update_agent(futures::stream::iter(upload)).await?.into_inner();
    responses.message().await?.map(|_| ()).ok_or_else(|| tonic::Status::unknown("no answer"))
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn nothing_installed(paths: &Paths) {
    assert!(!paths.binary().exists(), "{} exists", paths.binary().display());
    assert!(!paths.staging().exists(), "{} exists", paths.staging().display());
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn wait_file(path: &Path, content: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(path).ok().as_deref() != Some(content) {
        assert!(Instant::now() < deadline, "{} never held {content:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_agent_is_for_admins_on_development_images() {
    wendy_tests::init();
    let tmp = tempfile::tempdir().unwrap();
    let ns = Arc::new(Netns::new());
    let pki = FakePki::start(ns.bind("127.0.0.1:0".parse().unwrap()), time::Duration::hours(1));
    pki.add_token("tok-1");
    let marker = tmp.path().join("development");
    let mut agent = AgentFixture::new(tmp.path(), ns.clone());
    agent.env.push((wendy_agent::config::DEVELOPMENT_MARKER_ENV.into(), marker.display().to_string()));
    let paths = Paths::new(&agent.config_dir);
    let stock = wendy_tests::bins::require("wendy-agent");
    let binary = std::fs::read(&stock).unwrap();
    let good = sha(&binary);

    // Production (no marker), unprovisioned: the plaintext port refuses.
    agent.start(&[]);
    let e = update_v1(agent.plaintext().await.unwrap(), v1_upload(b"x", &sha(b"x"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("only over mTLS"), "{e:?}");
    provisioning_client(agent.plaintext().await.unwrap())
        .start_provisioning(pki.provisioning_request("tok-1", 7))
        .await
        .expect("StartProvisioning");
    let ca = pki.ca().ca.certificate_pem();
    let admin = pki.ca().user(Role::Admin);
    let viewer = pki.ca().user(Role::Viewer);

    // A Viewer: refused by the role layer, v1 and v2.
    let ch = agent.mtls(&viewer.credentials, &ca).await.unwrap();
    for e in [
        update_v2(ch.clone(), v2_upload(b"x", &sha(b"x"))).await.unwrap_err(),
        update_v1(ch.clone(), v1_upload(b"x", &sha(b"x"))).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("requires role Admin"), "{e:?}");
    }

    // An Admin on a production image: refused, pointing at OS updates.
    let ch = agent.mtls(&admin.credentials, &ca).await.unwrap();
    for e in [
        update_v2(ch.clone(), v2_upload(&binary, &good)).await.unwrap_err(),
        update_v1(ch.clone(), v1_upload(b"x", &sha(b"x"))).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("production image") && e.message().contains("wendy os update"), "{e:?}");
    }
    nothing_installed(&paths);

    // A development image: a wrong SHA-256 is refused, nothing installed.
    agent.stop();
    std::fs::write(&marker, "").unwrap();
    agent.start(&[]);
    let ch = agent.mtls(&admin.credentials, &ca).await.unwrap();
    let e = update_v2(ch.clone(), v2_upload(&binary, &sha(b"something else"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("control.update.sha256"), "{e:?}");
    nothing_installed(&paths);
    // Not an agent for this device: refused by the `--version` check.
    let e = update_v1(ch.clone(), v1_upload(b"\x7fELF garbage", &sha(b"\x7fELF garbage"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("does not run on this device"), "{e:?}");
    nothing_installed(&paths);
    agent_client(ch.clone()).get_agent_version(GetAgentVersionRequest {}).await.expect("still serving");

    // A copy of the agent itself: installed, answered, and the agent leaves
    // with the status its unit restarts it for.
    update_v2(ch, v2_upload(&binary, &good)).await.expect("Updated");
    let status = agent.wait_exit(Duration::from_secs(20)).expect("the agent leaves after Updated");
    assert_eq!(status.code(), Some(i32::from(RESTART_EXIT_CODE)), "{status:?}\n{}", agent.log_text());
    assert_eq!(std::fs::read(paths.binary()).unwrap(), binary);
    assert_eq!(std::fs::read_to_string(paths.os_version()).unwrap(), "9.9.9-test\n");

    // What systemd does next: the stock binary starts and execs the
    // replacement, which resets the start counter once READY.
    agent.start(&[]);
    let pid = agent.pid().unwrap();
    assert_eq!(exe_of(pid), paths.binary(), "{}", agent.log_text());
    assert!(agent.log_text().contains("running the replacement agent installed by UpdateAgent"));
    wait_file(&paths.attempts(), "0\n");
    let ch = agent.mtls(&admin.credentials, &ca).await.unwrap();
    agent_client(ch).get_agent_version(GetAgentVersionRequest {}).await.expect("the replacement serves");
    agent.stop();

    // Three starts that never became READY: the stock agent runs, and says
    // why, naming the replacement.
    std::fs::write(paths.attempts(), format!("{}\n", replacement::MAX_ATTEMPTS)).unwrap();
    agent.start(&[]);
    assert_eq!(exe_of(agent.pid().unwrap()), stock.canonicalize().unwrap());
    let log = agent.log_text();
    assert!(log.contains("did not become ready") && log.contains(&paths.binary().display().to_string()), "{log}");
    agent.stop();

    // An OS update since the install: the stock agent of the new OS runs.
    std::fs::write(paths.attempts(), "0\n").unwrap();
    std::fs::write(tmp.path().join("version.txt"), "10.0.0-test\n").unwrap();
    agent.start(&[]);
    assert_eq!(exe_of(agent.pid().unwrap()), stock.canonicalize().unwrap());
    assert!(agent.log_text().contains("installed on another OS version"));
}
