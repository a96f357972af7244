//! Issue 14: the published container service (v1 and v2) on a real agent,
//! over mTLS, against a real containerd and runc.
//!
//! The shared setup ([`wendy_tests::apps::AppsLab`]) starts its own
//! containerd, puts a busybox image into its store (no pull), provisions an
//! agent on loopback in its own network namespace against the in-process
//! fake pki-core, and points the agent at the containerd
//! (`WENDY_CONTAINERD_SOCKET`). Then:
//! 1. `GetAgentVersion.featureset` gains `containers` once the agent has
//!    reached containerd;
//! 2. a Viewer may `ListContainers` but its `CreateContainer` is
//!    PERMISSION_DENIED;
//! 3. a malformed `app_config` is INVALID_ARGUMENT naming the field
//!    (missing `appId`, an unknown entitlement), as is a bad `app_name`;
//! 4. a Member creates and starts an app that prints a line: `Started`,
//!    then the line, arrive in the `StartContainer` stream, which ends when
//!    the app exits; `ListContainers` (v1 and v2) shows it with its
//!    `wendy.json` version, stopped. `AttachContainer`: an app reading
//!    its stdin gets what a v1 attach sends and answers in that stream;
//!    after that client went away, a v2 attach reaches the same stdin
//!    (still open); attaching to a stopped app is FAILED_PRECONDITION, a
//!    first message without `app_name` is INVALID_ARGUMENT, a Viewer is
//!    PERMISSION_DENIED;
//! 5. restart policy: an `on-failure:5` app and an `unless-stopped` app,
//!    killed with SIGKILL (`ctr tasks kill`), come back running with
//!    `failure_count` 1; a `no` app (started through v2, whose stream
//!    carries its first line) stays exited;
//! 6. volumes and stats: an app made with `CreateContainerWithProgress`
//!    (its stream ends with `completed`) writes to a `persist` volume; it is listed with its user and
//!    size, is not removed while used (FAILED_PRECONDITION; a Viewer is
//!    PERMISSION_DENIED), and goes with `delete_volumes`; every app has
//!    stats with its image's size;
//! 7. agent restart: with the agent down, the `unless-stopped` app's task
//!    is killed and deleted (as a reboot leaves it); the restarted agent
//!    starts it again;
//! 8. `StopContainer` leaves an app stopped (the supervisor does not
//!    restart it); `DeleteContainer` (with `delete_image` on the last)
//!    leaves no app and no container in containerd.
//!
//! Needs root (network namespace, containerd, runc) and the tools the
//! containerd fixture names; prints `SKIP` and passes without them (fails
//! under `WENDY_TEST_STRICT=1`).

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::Code;
use wendy_identity::role::Role;
use wendy_proto::agent::attach_container_request::RequestType as AttachType;
use wendy_proto::agent::wendy_container_service_client::WendyContainerServiceClient;
use wendy_proto::agent::{
    create_container_progress_response::ResponseType as ProgressType, run_container_layers_response::ResponseType,
    AttachContainerRequest, CreateContainerRequest, DeleteContainerRequest, ListContainerStatsRequest,
    ListContainersRequest, ListVolumesRequest, RemoveVolumeRequest, StartContainerRequest, StopContainerRequest,
};
use wendy_proto::agent_admin::UnprovisionRequest;
use wendy_proto::agent_shared::{AppContainer, AppRunningState, RestartPolicy, RestartPolicyMode};
use wendy_proto::agent_v2::wendy_container_service_client::WendyContainerServiceClient as V2Client;
use wendy_tests::agent::{admin_client, AgentFixture};
use wendy_tests::apps::{AppsLab, IMAGE, STEP};

const TEST: &str = "apps_service";

fn client(ch: &Channel) -> WendyContainerServiceClient<Channel> {
    WendyContainerServiceClient::new(ch.clone())
}

/// A `wendy.json` for `id` running `script` under `sh -c`.
fn config(id: &str, script: &str) -> Vec<u8> {
    serde_json::json!({"appId": id, "version": "1.0.0", "run": {"args": ["sh", "-c", script]}}).to_string().into_bytes()
}

fn policy(mode: RestartPolicyMode, retries: i32) -> Option<RestartPolicy> {
    Some(RestartPolicy { mode: mode as i32, on_failure_max_retries: retries })
}

fn create(id: &str, script: &str, restart: Option<RestartPolicy>) -> CreateContainerRequest {
    CreateContainerRequest {
        image_name: IMAGE.into(),
        app_config: config(id, script),
        restart_policy: restart,
        ..Default::default()
    }
}

async fn list(ch: &Channel) -> Vec<AppContainer> {
    let mut stream = client(ch).list_containers(ListContainersRequest {}).await.expect("ListContainers").into_inner();
    let mut apps = Vec::new();
    while let Some(item) = stream.message().await.expect("ListContainers stream") {
        apps.extend(item.container);
    }
    apps
}

async fn find(ch: &Channel, name: &str) -> Option<AppContainer> {
    list(ch).await.into_iter().find(|a| a.app_name == name)
}

/// Waits until app `name` satisfies `pred`; panics with what was seen.
async fn wait_for(ch: &Channel, name: &str, what: &str, pred: impl Fn(&AppContainer) -> bool) -> AppContainer {
    let deadline = Instant::now() + STEP;
    loop {
        let app = find(ch, name).await;
        if let Some(app) = app.as_ref().filter(|a| pred(a)) {
            return app.clone();
        }
        assert!(Instant::now() < deadline, "{name}: not {what} within {STEP:?}; last seen {app:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn running(a: &AppContainer) -> bool {
    a.running_state == AppRunningState::Running as i32
}

/// Starts `name` and collects its stream's output until it ends.
async fn start_and_collect(ch: &Channel, name: &str, agent: &AgentFixture) -> (bool, String) {
    let req = StartContainerRequest { app_name: name.into(), restart_policy: None };
    let mut stream = match client(ch).start_container(req).await {
        Ok(s) => s.into_inner(),
        Err(e) => panic!("StartContainer {name}: {e:?}\nagent log:\n{}", agent.log_text()),
    };
    let mut started = false;
    let mut out = String::new();
    let collect = async {
        while let Some(msg) = stream.message().await.expect("StartContainer stream") {
            match msg.response_type {
                Some(ResponseType::Started(_)) => started = true,
                Some(ResponseType::StdoutOutput(o) | ResponseType::StderrOutput(o)) => {
                    out.push_str(&String::from_utf8_lossy(&o.data))
                }
                None => {}
            }
        }
    };
    tokio::time::timeout(STEP, collect).await.unwrap_or_else(|_| panic!("{name}: stream did not end"));
    (started, out)
}

/// The first message of an attach: the app's name.
fn attach_app(name: &str) -> AttachContainerRequest {
    AttachContainerRequest { request_type: Some(AttachType::AppName(name.into())) }
}

fn attach_stdin(data: &[u8]) -> AttachContainerRequest {
    AttachContainerRequest { request_type: Some(AttachType::StdinData(data.to_vec())) }
}

/// Step 4's attach (see the module docs).
async fn attach_reaches_stdin(lab: &AppsLab, member: &Channel, viewer: &Channel) {
    use wendy_proto::agent_v2::attach_container_request::RequestType as V2In;
    use wendy_proto::agent_v2::container_stream_response::ResponseType as V2Type;

    // Refusals: a stopped app, no name first, a Viewer.
    let e = client(member).attach_container(tokio_stream::iter([attach_app("hello")])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not running"), "{e:?}");
    let e = client(member).attach_container(tokio_stream::iter([attach_stdin(b"x\n")])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("first message must name the app"), "{e:?}");
    let e = client(viewer).attach_container(tokio_stream::iter([attach_app("hello")])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let script = "trap 'exit 0' TERM; echo ready; while read l; do echo \"got $l\"; done; echo stdin closed";
    let echoer = create("echoer", script, policy(RestartPolicyMode::No, 0));
    client(member).create_container(echoer).await.expect("CreateContainer echoer");
    let req = StartContainerRequest { app_name: "echoer".into(), restart_policy: None };
    let mut started = client(member).start_container(req).await.expect("StartContainer echoer").into_inner();
    let ready = async {
        while let Some(msg) = started.message().await.expect("StartContainer stream") {
            if matches!(&msg.response_type, Some(ResponseType::StdoutOutput(o)) if o.data == b"ready\n") {
                return;
            }
        }
        panic!("echoer ended before it was ready");
    };
    tokio::time::timeout(STEP, ready).await.expect("echoer ready");
    drop(started);

    // v1: the line sent comes back in the same stream.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(attach_app("echoer")).await.unwrap();
    let mut stream = match client(member).attach_container(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(s) => s.into_inner(),
        Err(e) => panic!("AttachContainer: {e:?}\nagent log:\n{}", lab.agent.log_text()),
    };
    let first = stream.message().await.expect("attach stream").expect("a message");
    assert!(matches!(first.response_type, Some(ResponseType::Started(_))), "{first:?}");
    tx.send(attach_stdin(b"ping\n")).await.unwrap();
    let line = tokio::time::timeout(STEP, stream.message()).await.expect("an answer").expect("stream").expect("line");
    assert!(matches!(&line.response_type, Some(ResponseType::StdoutOutput(o)) if o.data == b"got ping\n"), "{line:?}");
    drop((tx, stream));

    // v2, after the first client went away: stdin is still open.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let v2_in = |t: V2In| wendy_proto::agent_v2::AttachContainerRequest { request_type: Some(t) };
    tx.send(v2_in(V2In::AppName("echoer".into()))).await.unwrap();
    tx.send(v2_in(V2In::StdinData(b"pong\n".to_vec()))).await.unwrap();
    let mut stream = V2Client::new(member.clone())
        .attach_container(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("v2 AttachContainer")
        .into_inner();
    let first = stream.message().await.expect("v2 attach stream").expect("a message");
    assert!(matches!(first.response_type, Some(V2Type::Started(_))), "{first:?}");
    let line = tokio::time::timeout(STEP, stream.message()).await.expect("an answer").expect("stream").expect("line");
    assert!(matches!(&line.response_type, Some(V2Type::StdoutOutput(o)) if o.data == b"got pong\n"), "{line:?}");

    // Stopping the app ends the attached stream.
    client(member).stop_container(StopContainerRequest { app_name: "echoer".into() }).await.expect("stop echoer");
    let rest =
        tokio::time::timeout(STEP, async { while stream.message().await.expect("v2 attach stream").is_some() {} });
    rest.await.expect("the attach stream ends when the app stops");
    drop(tx);
    client(member)
        .delete_container(DeleteContainerRequest { app_name: "echoer".into(), ..Default::default() })
        .await
        .expect("delete echoer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_service_over_mtls_on_real_containerd() {
    wendy_tests::init();
    let Some(mut lab) = AppsLab::start(TEST).await else {
        return;
    };
    let member = lab.member_channel().await;
    let mut viewer = lab.viewer_channel().await;

    // 1. featureset says `containers` once containerd is reached
    // (`AppsLab::start` waited for it).
    lab.wait_for_containers(&viewer).await;

    // 2. Viewer lists, may not create.
    assert!(list(&viewer).await.is_empty());
    let e = client(&viewer).create_container(create("nope", "true", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("requires role Member"), "{e:?}");
    let e = client(&viewer).stop_container(StopContainerRequest { app_name: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // 3. Malformed requests name the field.
    let bad = |cfg: &str| CreateContainerRequest {
        image_name: IMAGE.into(),
        app_config: cfg.as_bytes().to_vec(),
        ..Default::default()
    };
    for (req, needle) in [
        (bad(r#"{"version":"1"}"#), "app_config: appId: required"),
        (bad(r#"{"appId":"x","entitlements":[{"type":"foo"}]}"#), "app_config: entitlements[0].type"),
        (bad("{not json"), "app_config: wendy.json"),
        (CreateContainerRequest { app_name: "../etc".into(), ..bad(r#"{"appId":"x"}"#) }, "app_name"),
    ] {
        let e = client(&member).create_container(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(needle), "{needle}: {e:?}");
    }
    let e = client(&member)
        .create_container(CreateContainerRequest { image_name: "wendy/absent:v1".into(), ..create("x", "true", None) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // 4. Create + start: the line arrives in the stream.
    let hello = create("hello", "echo hello from the app; sleep 1", policy(RestartPolicyMode::No, 0));
    client(&member).create_container(hello).await.expect("CreateContainer");
    let app = find(&member, "hello").await.expect("listed after create");
    assert_eq!((app.app_version.as_str(), running(&app)), ("1.0.0", false), "{app:?}");
    let (started, out) = start_and_collect(&member, "hello", &lab.agent).await;
    assert!(started, "no Started message");
    assert!(out.contains("hello from the app\n"), "output: {out:?}\nlog:\n{}", lab.agent.log_text());
    let app = wait_for(&viewer, "hello", "stopped", |a| !running(a)).await;
    assert_eq!(app.failure_count, 0);
    let v2 = V2Client::new(viewer.clone())
        .list_containers(wendy_proto::agent_v2::ListContainersRequest {})
        .await
        .expect("v2 ListContainers")
        .into_inner()
        .message()
        .await
        .expect("v2 stream")
        .and_then(|m| m.container)
        .expect("one app");
    assert_eq!(v2.app_name, "hello");
    assert_eq!(v2.running_state, wendy_proto::agent_v2::AppRunningState::Stopped as i32);

    // 4. AttachContainer reaches the app's stdin.
    attach_reaches_stdin(&lab, &member, &viewer).await;

    // 5. Restart policies bring killed apps back, counting the failure.
    let forever = "echo up; exec sleep 100000";
    for (name, p) in [
        ("flaky", policy(RestartPolicyMode::OnFailure, 5)),
        ("steady", policy(RestartPolicyMode::UnlessStopped, 0)),
        ("once", policy(RestartPolicyMode::No, 0)),
    ] {
        client(&member).create_container(create(name, forever, p)).await.expect("CreateContainer");
        if name == "once" {
            // v2 StartContainer, same behaviour.
            use wendy_proto::agent_v2::container_stream_response::ResponseType as V2Type;
            let req = wendy_proto::agent_v2::StartContainerRequest { app_name: name.into() };
            let mut stream = V2Client::new(member.clone()).start_container(req).await.expect("v2 start").into_inner();
            let first = stream.message().await.expect("stream").expect("a message");
            assert!(matches!(first.response_type, Some(V2Type::Started(_))), "{first:?}");
            let line = stream.message().await.expect("stream").expect("a line");
            assert!(matches!(&line.response_type, Some(V2Type::StdoutOutput(o)) if o.data == b"up\n"), "{line:?}");
        } else {
            let req = StartContainerRequest { app_name: name.into(), restart_policy: None };
            let mut stream = match client(&member).start_container(req).await {
                Ok(s) => s.into_inner(),
                Err(e) => panic!("StartContainer {name}: {e:?}\nagent log:\n{}", lab.agent.log_text()),
            };
            let first = stream.message().await.expect("stream").expect("a message");
            assert!(matches!(first.response_type, Some(ResponseType::Started(_))), "{first:?}");
        } // the stream is dropped; the app keeps running
        wait_for(&member, name, "running", running).await;
    }
    for name in ["flaky", "steady", "once"] {
        assert!(lab.ctrd.ctr_ok(&["tasks", "kill", "-a", "-s", "SIGKILL", name]), "ctr tasks kill {name}");
    }
    for name in ["flaky", "steady"] {
        let app =
            wait_for(&member, name, "running again with one failure", |a| running(a) && a.failure_count == 1).await;
        assert_eq!(app.failure_count, 1, "{app:?}");
    }
    tokio::time::sleep(wendy_agent::container_service::supervisor::INTERVAL * 2).await;
    let once = find(&member, "once").await.expect("once listed");
    assert!(!running(&once), "policy `no` must not restart: {once:?}");
    assert_eq!(once.failure_count, 0);

    // 6. Volumes and stats: a persist volume is listed with its user, cannot
    // be removed while used, and goes with its app's delete_volumes.
    let keeper = CreateContainerRequest {
        image_name: IMAGE.into(),
        app_config: serde_json::json!({
            "appId": "keeper",
            "entitlements": [{"type": "persist", "name": "store", "path": "/data"}],
            "run": {"args": ["sh", "-c", "echo kept > /data/note; echo wrote"]},
        })
        .to_string()
        .into_bytes(),
        restart_policy: policy(RestartPolicyMode::No, 0),
        ..Default::default()
    };
    let mut progress = client(&member)
        .create_container_with_progress(keeper)
        .await
        .expect("CreateContainerWithProgress keeper")
        .into_inner();
    let mut last = None;
    while let Some(msg) = progress.message().await.expect("progress stream") {
        last = msg.response_type;
    }
    assert!(matches!(last, Some(ProgressType::Completed(_))), "{last:?}");
    let (_, out) = start_and_collect(&member, "keeper", &lab.agent).await;
    assert!(out.contains("wrote\n"), "{out:?}");
    let volumes = client(&viewer).list_volumes(ListVolumesRequest {}).await.expect("ListVolumes").into_inner().volumes;
    let store_volume = volumes.iter().find(|v| v.name == "store").unwrap_or_else(|| panic!("{volumes:?}"));
    assert_eq!(store_volume.used_by, ["keeper"]);
    assert!(store_volume.size_bytes >= 5, "{store_volume:?}");
    assert!(store_volume.path.ends_with("/apps/volumes/store"), "{store_volume:?}");
    let e = client(&member).remove_volume(RemoveVolumeRequest { name: "store".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = client(&viewer).remove_volume(RemoveVolumeRequest { name: "store".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let stats = client(&viewer)
        .list_container_stats(ListContainerStatsRequest {})
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(stats.len(), 5, "{stats:?}");
    assert!(stats.iter().all(|s| s.storage_bytes > 0 && s.memory_bytes >= 0), "{stats:?}");
    client(&member)
        .delete_container(DeleteContainerRequest {
            app_name: "keeper".into(),
            delete_image: false,
            delete_volumes: true,
        })
        .await
        .expect("DeleteContainer keeper");
    let volumes = client(&viewer).list_volumes(ListVolumesRequest {}).await.expect("ListVolumes").into_inner().volumes;
    assert!(volumes.is_empty(), "delete_volumes removes the app's volume: {volumes:?}");

    // 7. Agent restart after a "reboot" of the app: started again.
    lab.agent.kill();
    assert!(lab.ctrd.ctr_ok(&["tasks", "kill", "-a", "-s", "SIGKILL", "steady"]));
    let deadline = Instant::now() + STEP;
    while !lab.ctrd.ctr_ok(&["tasks", "delete", "steady"]) {
        assert!(Instant::now() < deadline, "ctr tasks delete steady");
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.agent.start(&[]);
    let member = lab.member_channel().await;
    viewer = lab.viewer_channel().await;
    lab.wait_for_containers(&member).await;
    let app = wait_for(&member, "steady", "started at agent start", running).await;
    assert_eq!(app.failure_count, 1, "a start at agent start is not a failure: {app:?}");

    // 8. Stop stays stopped; delete leaves nothing.
    client(&member).stop_container(StopContainerRequest { app_name: "steady".into() }).await.expect("StopContainer");
    assert!(!running(&find(&member, "steady").await.expect("listed")));
    tokio::time::sleep(wendy_agent::container_service::supervisor::INTERVAL * 2).await;
    assert!(!running(&find(&member, "steady").await.expect("listed")), "a stopped app must stay stopped");
    let e = client(&member).stop_container(StopContainerRequest { app_name: "absent".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let names = ["hello", "flaky", "once", "steady"];
    for (i, name) in names.iter().enumerate() {
        let req = DeleteContainerRequest {
            app_name: (*name).into(),
            delete_image: i + 1 == names.len(),
            delete_volumes: true,
        };
        client(&member).delete_container(req).await.unwrap_or_else(|e| panic!("DeleteContainer {name}: {e:?}"));
    }
    assert!(list(&viewer).await.is_empty());
    assert!(lab.ctrd.ctr_rows(&["containers", "ls"]).is_empty());
    assert!(lab.ctrd.ctr_rows(&["images", "ls"]).is_empty(), "delete_image removes the last app's image");
    assert!(lab.agent.is_running(), "agent died; log:\n{}", lab.agent.log_text());
}

/// An unprovisioned device runs no apps (design): `Unprovision` stops the
/// running ones, and nothing starts them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprovisioning_stops_the_apps() {
    wendy_tests::init();
    let Some(mut lab) = AppsLab::start(TEST).await else {
        return;
    };
    let member = lab.member_channel().await;
    let app = create("resident", "exec sleep 600", policy(RestartPolicyMode::UnlessStopped, 0));
    client(&member).create_container(app).await.expect("CreateContainer");
    let req = StartContainerRequest { app_name: "resident".into(), restart_policy: None };
    let mut stream = client(&member).start_container(req).await.expect("StartContainer").into_inner();
    let first = tokio::time::timeout(STEP, stream.message()).await.expect("Started in time").expect("stream");
    assert!(matches!(first.and_then(|m| m.response_type), Some(ResponseType::Started(_))));
    drop(stream);
    wait_for(&member, "resident", "running", running).await;

    let admin = lab.pki.ca().user(Role::Admin);
    let admin_ch = lab.agent.mtls(&admin.credentials, &lab.ca_pem).await.expect("mTLS as Admin");
    admin_client(admin_ch).unprovision(UnprovisionRequest {}).await.expect("Unprovision");

    let running_tasks =
        || lab.ctrd.ctr_rows(&["tasks", "ls"]).into_iter().filter(|row| row.contains("RUNNING")).collect::<Vec<_>>();
    let deadline = Instant::now() + STEP;
    while !running_tasks().is_empty() {
        assert!(Instant::now() < deadline, "apps still running after Unprovision: {:?}", running_tasks());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(wendy_agent::container_service::supervisor::INTERVAL * 2).await;
    assert!(running_tasks().is_empty(), "an app ran again after Unprovision: {:?}", running_tasks());
    assert!(lab.agent.is_running(), "agent died; log:\n{}", lab.agent.log_text());
}
