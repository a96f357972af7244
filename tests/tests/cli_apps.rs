//! Issue 14: `wendy apps list|logs|stop|rm`, the real `wendy` binary against
//! a real agent over mTLS, on a real containerd and runc.
//!
//! The shared setup ([`wendy_tests::apps::AppsLab`]): a private containerd
//! with a busybox image, an agent provisioned on loopback in its own network
//! namespace, and a Member and a Viewer identity, written as `wendy` logins
//! (`$XDG_CONFIG_HOME/wendy`). An app that prints a line, then a tick a
//! second, is created and started through the published gRPC service (as
//! `wendy run` will). Then, through `wendy` only:
//! 1. `apps list --json` shows it running with its version, restart policy
//!    and failure count; the table shows the same;
//! 2. `apps logs APP` prints its output so far and exits 0; `--follow`
//!    prints new output (a later tick) and exits 0 on Ctrl-C (SIGINT);
//!    `apps attach` of an app that echoes its stdin: a line typed into
//!    the CLI's stdin comes back on its stdout; Ctrl-C exits 0 and leaves
//!    the app running;
//! 3. `apps logs nosuch` fails (exit 1) naming the app and `wendy apps
//!    list`; a Viewer's `apps rm` and `apps stop` fail with the role message
//!    (exit 5) and leave the app alone;
//! 4. `apps stop` leaves it stopped; `apps rm` leaves `list` empty and no
//!    container and no image in containerd (`ctr`); `apps stop` of the
//!    removed app is refused naming it.
//!
//! Needs root, containerd, runc and the built `wendy` and `wendy-agent`;
//! prints `SKIP` and passes without them (fails under
//! `WENDY_TEST_STRICT=1`).

#[path = "cli_common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cli;
use tonic::transport::Channel;
use wendy_proto::agent::run_container_layers_response::ResponseType;
use wendy_proto::agent::wendy_container_service_client::WendyContainerServiceClient;
use wendy_proto::agent::{CreateContainerRequest, StartContainerRequest};
use wendy_proto::agent_shared::{RestartPolicy, RestartPolicyMode};
use wendy_tests::apps::{AppsLab, IMAGE, STEP};

const TEST: &str = "cli_apps";
const APP: &str = "greeter";
const ECHOER: &str = "echoer";
const GENERIC: i32 = 1;
const DENIED: i32 = 5;

/// Creates and starts [`APP`] through the published service, as `wendy
/// run` will, and waits for its first line in the `StartContainer` stream.
async fn create_and_start(ch: &Channel, lab: &AppsLab) {
    let script = "echo hello from the app; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done";
    let config = serde_json::json!({"appId": APP, "version": "2.1.0", "run": {"args": ["sh", "-c", script]}});
    let req = CreateContainerRequest {
        image_name: IMAGE.into(),
        app_config: config.to_string().into_bytes(),
        restart_policy: Some(RestartPolicy {
            mode: RestartPolicyMode::UnlessStopped as i32,
            on_failure_max_retries: 0,
        }),
        ..Default::default()
    };
    let mut client = WendyContainerServiceClient::new(ch.clone());
    client.create_container(req).await.unwrap_or_else(|e| panic!("CreateContainer: {e:?}"));
    let mut stream =
        match client.start_container(StartContainerRequest { app_name: APP.into(), restart_policy: None }).await {
            Ok(s) => s.into_inner(),
            Err(e) => panic!("StartContainer: {e:?}\nagent log:\n{}", lab.agent.log_text()),
        };
    let first = async {
        while let Some(msg) = stream.message().await.expect("StartContainer stream") {
            if let Some(ResponseType::StdoutOutput(o)) = msg.response_type {
                return String::from_utf8_lossy(&o.data).into_owned();
            }
        }
        panic!("the stream ended without output");
    };
    let line = tokio::time::timeout(STEP, first).await.expect("first line within STEP");
    assert_eq!(line, "hello from the app\n");
    // The stream is dropped; the app keeps running.
}

/// The `tick N` numbers in `text`.
fn ticks(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.strip_prefix("tick ")).filter_map(|n| n.trim().parse().ok()).collect()
}

/// `wendy apps list --json` as the `apps` array.
fn list(cli: &Cli, dev: &str) -> Vec<serde_json::Value> {
    let r = cli.run(&["apps", "list", "--device", dev, "--json"]);
    r.expect_code(0);
    let j = r.json();
    assert!(j["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{j}");
    j["apps"].as_array().unwrap_or_else(|| panic!("no apps array: {j}")).clone()
}

/// `wendy apps logs APP --follow` in the namespace: waits for a tick later
/// than `after`, then sends SIGINT (Ctrl-C) and expects exit 0.
fn follow_until_new_tick(cli: &Cli, lab: &AppsLab, dev: &str, after: u32) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.ns.name()])
        .arg(common::wendy_bin())
        .args(["apps", "logs", APP, "--follow", "--device", dev])
        .env("XDG_CONFIG_HOME", &cli.xdg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wendy apps logs --follow");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("--follow printed no tick after {after} within {STEP:?}; got {seen:?}")
        });
        let newer = ticks(&line).first().is_some_and(|&n| n > after);
        seen.push(line);
        if newer {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("hello from the app"), "{seen:?}");
    ctrl_c_exits_0(&mut child, "wendy apps logs --follow");
}

/// Sends SIGINT (Ctrl-C) to `child` (`ip netns exec` execs, so it is
/// `wendy` itself) and expects exit 0 within 10 s.
fn ctrl_c_exits_0(child: &mut std::process::Child, what: &str) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{what}: exit after Ctrl-C: {status:?}");
}

/// Step 2's attach (see the module docs): `wendy apps attach` to [`ECHOER`].
async fn attach_echoes(cli: &Cli, lab: &AppsLab, dev: &str) {
    let script = "echo ready; while read l; do echo \"got $l\"; done";
    let config = serde_json::json!({"appId": ECHOER, "run": {"args": ["sh", "-c", script]}});
    let req = CreateContainerRequest {
        image_name: IMAGE.into(),
        app_config: config.to_string().into_bytes(),
        ..Default::default()
    };
    let mut client = WendyContainerServiceClient::new(lab.member_channel().await);
    client.create_container(req).await.expect("CreateContainer echoer");
    let req = StartContainerRequest { app_name: ECHOER.into(), restart_policy: None };
    let mut stream = client.start_container(req).await.expect("StartContainer echoer").into_inner();
    let ready = async {
        while let Some(msg) = stream.message().await.expect("stream") {
            if matches!(&msg.response_type, Some(ResponseType::StdoutOutput(o)) if o.data == b"ready\n") {
                return;
            }
        }
        panic!("echoer ended before it was ready");
    };
    tokio::time::timeout(STEP, ready).await.expect("echoer ready");
    drop(stream);

    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.ns.name()])
        .arg(common::wendy_bin())
        .args(["apps", "attach", ECHOER, "--device", dev])
        .env("XDG_CONFIG_HOME", &cli.xdg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wendy apps attach");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Typed until it comes back: the CLI may still be connecting.
    let deadline = Instant::now() + STEP;
    loop {
        std::io::Write::write_all(&mut stdin, b"hi there\n").expect("write to wendy's stdin");
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            assert_eq!(line, "got hi there");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wendy apps attach: no echo within {STEP:?}");
        }
    }
    ctrl_c_exits_0(&mut child, "wendy apps attach");
    let apps = list(cli, dev);
    let echoer = apps.iter().find(|a| a["name"] == ECHOER).unwrap_or_else(|| panic!("echoer listed: {apps:?}"));
    assert_eq!(echoer["state"], "running", "detaching leaves the app running");
    cli.run(&["apps", "rm", ECHOER, "--device", dev]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wendy_apps_list_logs_stop_rm() {
    wendy_tests::init();
    if common::optional_bin("wendy", TEST).is_none() {
        return;
    }
    let Some(lab) = AppsLab::start(TEST).await else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let member = Cli::new(&t.path().join("member")).in_netns(&lab.ns);
    let viewer = Cli::new(&t.path().join("viewer")).in_netns(&lab.ns);
    lab.write_cli_login(&lab.member, &member.config_dir());
    lab.write_cli_login(&lab.viewer, &viewer.config_dir());
    let dev = format!("127.0.0.1:{}", lab.agent.port);
    assert!(list(&viewer, &dev).is_empty());

    create_and_start(&lab.member_channel().await, &lab).await;

    // 1. The list, as JSON and as a table.
    let apps = list(&viewer, &dev);
    assert_eq!(
        apps,
        [serde_json::json!({"name": APP, "version": "2.1.0", "state": "running",
            "restart_policy": "unless-stopped", "failure_count": 0})],
    );
    let table = viewer.run(&["apps", "list", "--device", &dev]);
    table.expect_code(0);
    let rows: Vec<Vec<&str>> = table.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [vec!["NAME", "VERSION", "STATE", "RESTART", "FAILURES"], vec![APP, "2.1.0", "running", "unless-stopped", "0"]],
        "{table:#?}"
    );

    // 2. Logs so far (exits), then --follow until Ctrl-C.
    let so_far = viewer.run(&["apps", "logs", APP, "--device", &dev]);
    so_far.expect_code(0);
    assert!(so_far.stdout.starts_with("hello from the app\n"), "{so_far:#?}");
    let last = ticks(&so_far.stdout).last().copied().unwrap_or(0);
    follow_until_new_tick(&viewer, &lab, &dev, last);
    attach_echoes(&member, &lab, &dev).await;

    // 3. Refusals: an unknown app, a Viewer changing an app.
    member.run(&["apps", "logs", "nosuch", "--device", &dev]).expect_code(GENERIC).expect_stderr(&[
        "\"nosuch\"",
        "no app named",
        "wendy apps list",
    ]);
    for args in [&["apps", "rm", APP][..], &["apps", "stop", APP]] {
        viewer.run(&[args, &["--device", &dev]].concat()).expect_code(DENIED).expect_stderr(&[
            "permission denied",
            "requires role Member",
            "your certificate's role is Viewer",
        ]);
    }
    assert_eq!(list(&viewer, &dev)[0]["state"], "running", "a refused call changes nothing");

    // 4. Stop, then rm: nothing left, image gone.
    let stopped = member.run(&["apps", "stop", APP, "--device", &dev, "--json"]);
    stopped.expect_code(0);
    assert_eq!(stopped.json()["result"], "stopped");
    assert_eq!(list(&viewer, &dev)[0]["state"], "stopped");
    let removed = member.run(&["apps", "rm", APP, "--device", &dev]);
    removed.expect_code(0);
    assert!(removed.stdout.contains("removed") && removed.stdout.contains(APP), "{removed:#?}");
    assert!(list(&viewer, &dev).is_empty());
    assert!(lab.ctrd.ctr_rows(&["containers", "ls"]).is_empty());
    assert!(lab.ctrd.ctr_rows(&["images", "ls"]).is_empty(), "`wendy apps rm` removes the image");
    member
        .run(&["apps", "stop", APP, "--device", &dev])
        .expect_code(GENERIC)
        .expect_stderr(&[&format!("{APP:?}"), "wendy apps list"]);
}
