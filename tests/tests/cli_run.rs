//! Issue 14: `wendy run`, the real `wendy` binary against a real agent over
//! mTLS, its registry on the device port, a real containerd and runc, and
//! the real podman and skopeo.
//!
//! The shared setup ([`wendy_tests::apps::AppsLab`]): a private containerd,
//! an agent provisioned on loopback in its own network namespace (its
//! registry there on port 5055, which `WENDY_REGISTRY_PORT` tells the agent
//! and the CLI), a Member and a Viewer login. Then,
//! through `wendy` only:
//! 1. `wendy run DIR --restart no`: DIR has a `Containerfile` (`FROM
//!    scratch`, the host's static busybox) and a `wendy.json`; podman builds
//!    it for the device's platform, the push goes over mTLS, and the app's
//!    line arrives on stdout; the command ends when the app exits. The time
//!    from the command's start to that line is printed;
//! 2. `wendy run --image oci-archive:FILE --name ticker --json` (an image
//!    built elsewhere, with a 32 MiB layer, no `wendy.json`): one JSON
//!    object; the app runs; the push throughput is printed; the same run
//!    again skips every blob;
//! 3. refusals: the Viewer's run is refused with the role message (exit 5)
//!    and leaves nothing; no Containerfile and no `--image` is a usage error
//!    (exit 2) before anything is dialled.
//!
//! Needs root, containerd, runc, podman, skopeo and the built `wendy` and
//! `wendy-agent`; prints `SKIP` and passes without them (fails under
//! `WENDY_TEST_STRICT=1`).

#[path = "cli_common.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cli;
use wendy_proto::contract::REGISTRY_PORT_ENV;
use wendy_tests::apps::{AppsLab, STEP};

const TEST: &str = "cli_run";
const USAGE: i32 = 2;
const DENIED: i32 = 5;

/// The agent's registry port in this test (not the default, so the CLI's
/// `WENDY_REGISTRY_PORT` is what finds it).
const REGISTRY_PORT: u16 = 5055;

/// Size of the ticker image's big layer, for a throughput worth measuring.
const BIG_LAYER: usize = 32 * 1024 * 1024;

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An app directory: `Containerfile` (busybox from `scratch`, `CMD` =
/// `script`), plus `extra` files, and `wendy.json` if given.
fn app_dir(dir: &Path, script: &str, extra: &[(&str, &[u8])], config: Option<serde_json::Value>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let busybox = wendy_tests::containerd::on_path("busybox").expect("busybox");
    std::fs::copy(busybox, dir.join("busybox")).expect("copy busybox");
    let mut file = String::from("FROM scratch\nCOPY busybox /bin/busybox\n");
    for (name, data) in extra {
        std::fs::write(dir.join(name), data).expect("write");
        file.push_str(&format!("COPY {name} /{name}\n"));
    }
    let cmd = serde_json::json!(["sh", "-c", script]);
    file.push_str(&format!("ENTRYPOINT [\"/bin/busybox\"]\nCMD {cmd}\n"));
    std::fs::write(dir.join("Containerfile"), file).expect("Containerfile");
    if let Some(c) = config {
        std::fs::write(dir.join("wendy.json"), c.to_string()).expect("wendy.json");
    }
}

/// `wendy run ARGS` in the lab's namespace, streaming: waits for the first
/// stdout line, then (if `interrupt`) sends SIGINT (Ctrl-C), and waits for
/// the end. Returns the time to the first line, that line, and the run's
/// exit code and stderr.
fn run_streaming(cli: &Cli, lab: &AppsLab, args: &[&str], interrupt: bool) -> (Duration, String, i32, String) {
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.ns.name()])
        .arg(common::wendy_bin())
        .args(args)
        .env("XDG_CONFIG_HOME", &cli.xdg)
        .envs(cli.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wendy run");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((start.elapsed(), line));
        }
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let first = rx.recv_timeout(STEP * 3);
    if interrupt {
        // `ip netns exec` execs, so the child is `wendy` itself.
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wendy run did not end (interrupt: {interrupt}); first line {first:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = err.join().unwrap_or_default();
    let (elapsed, line) = first.unwrap_or_else(|_| {
        panic!("no output line from wendy run; stderr:\n{stderr}\nagent log:\n{}", lab.agent.log_text())
    });
    (elapsed, line, status.code().unwrap_or(-1), stderr)
}

/// `podman build` of `dir` as `name`, saved as an oci-archive at `out`.
fn oci_archive(dir: &Path, name: &str, out: &Path) {
    run_ok(Command::new("podman").args(["build", "--quiet", "-t", name]).arg(dir));
    run_ok(Command::new("podman").args(["save", "--format", "oci-archive", "-o"]).arg(out).arg(name));
    let _ = Command::new("podman").args(["rmi", name]).output();
}

fn has_tools() -> bool {
    for tool in ["podman", "skopeo"] {
        if wendy_tests::containerd::on_path(tool).is_none() {
            wendy_tests::skip(TEST, &format!("`{tool}` is not installed (scripts/setup installs it)"));
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wendy_run_builds_pushes_and_streams() {
    wendy_tests::init();
    if common::optional_bin("wendy", TEST).is_none() || !has_tools() {
        return;
    }
    // The registry on another port than the default, which the CLI is told.
    let port = REGISTRY_PORT.to_string();
    let Some(lab) = AppsLab::start_with(TEST, &[(REGISTRY_PORT_ENV, &port)]).await else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let member = Cli::new(&t.path().join("member")).in_netns(&lab.ns).with_env(REGISTRY_PORT_ENV, &port);
    let viewer = Cli::new(&t.path().join("viewer")).in_netns(&lab.ns).with_env(REGISTRY_PORT_ENV, &port);
    lab.write_cli_login(&lab.member, &member.config_dir());
    lab.write_cli_login(&lab.viewer, &viewer.config_dir());
    let dev = format!("127.0.0.1:{}", lab.agent.port);

    // 1. A Containerfile and wendy.json: build, push, run, its line, exit.
    let hello = t.path().join("hello");
    app_dir(&hello, "echo hello from wendy run", &[], Some(serde_json::json!({"appId": "hello", "version": "1.0.0"})));
    let hello_dir = hello.to_str().unwrap();
    let (first_line_after, line, code, stderr) =
        run_streaming(&member, &lab, &["run", hello_dir, "--restart", "no", "--device", &dev], false);
    assert_eq!(line, "hello from wendy run", "stderr:\n{stderr}");
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(stderr.contains("pushed wendy/hello:1.0.0") && stderr.contains("exited"), "{stderr}");
    eprintln!(
        "MEASURE wendy run (podman build, skopeo, push, create, start) to first output line: {:.2}s",
        first_line_after.as_secs_f64()
    );
    let images = lab.ctrd.ctr_rows(&["images", "ls", "-q"]);
    assert!(images.iter().any(|i| i == "wendy/hello:1.0.0"), "{images:?}");

    // 2. An image built elsewhere, as an oci-archive, detached with --json.
    let ticker = t.path().join("ticker");
    // Incompressible (xorshift), so the layer stays its size in the archive.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..BIG_LAYER / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    app_dir(&ticker, "while true; do echo tick; sleep 1; done", &[("big", &big)], None);
    let archive = t.path().join("ticker.tar");
    oci_archive(&ticker, "localhost/cli-run-ticker:1", &archive);
    let reference = format!("oci-archive:{}", archive.display());
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let args = ["run", empty.to_str().unwrap(), "--image", &reference, "--name", "ticker", "--device", &dev, "--json"];
    let r = member.run(&args);
    r.expect_code(0);
    let j = r.json();
    assert_eq!(j["app"], "ticker", "{j}");
    assert_eq!(j["image"], "wendy/ticker:latest", "{j}");
    assert!(j["digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{j}");
    let pushed = j["pushed_bytes"].as_u64().unwrap_or(0);
    let seconds = j["push_seconds"].as_f64().unwrap_or(0.0);
    assert!(pushed > BIG_LAYER as u64, "{j}");
    eprintln!(
        "MEASURE registry push over mTLS on loopback: {pushed} bytes in {seconds:.2}s = {:.1} MiB/s",
        pushed as f64 / seconds.max(1e-9) / (1024.0 * 1024.0)
    );
    let list = member.run(&["apps", "list", "--device", &dev, "--json"]);
    list.expect_code(0);
    let apps = list.json()["apps"].clone();
    let ticker_app = apps.as_array().and_then(|a| a.iter().find(|x| x["name"] == "ticker")).cloned();
    assert_eq!(ticker_app.as_ref().map(|a| a["state"].clone()), Some("running".into()), "{apps}");
    // The same image again: every blob is there already.
    let again = member.run(&args);
    again.expect_code(0);
    // Config, busybox layer, big layer: all there; only the manifest goes.
    assert_eq!(again.json()["skipped_blobs"], 3, "{again:#?}");
    assert!(again.json()["pushed_bytes"].as_u64().is_some_and(|b| b < 4096), "{again:#?}");
    assert_eq!(again.json()["digest"], j["digest"]);

    // Not detached: its output until Ctrl-C, which stops it.
    let interactive = ["run", empty.to_str().unwrap(), "--image", &reference, "--name", "ticker2", "--device", &dev];
    let (_, line, code, stderr) = run_streaming(&member, &lab, &interactive, true);
    assert_eq!((line.as_str(), code), ("tick", 0), "{stderr}");
    assert!(stderr.contains("app \"ticker2\" stopped"), "{stderr}");
    let list = member.run(&["apps", "list", "--device", &dev, "--json"]);
    let state = list.json()["apps"].as_array().and_then(|a| a.iter().find(|x| x["name"] == "ticker2").cloned());
    assert_eq!(state.map(|a| a["state"].clone()), Some("stopped".into()), "{list:#?}");

    // 3. Refusals.
    viewer
        .run(&["run", empty.to_str().unwrap(), "--image", &reference, "--name", "viewers", "--device", &dev])
        .expect_code(DENIED)
        .expect_stderr(&["permission denied", "your certificate's role is Viewer"]);
    assert!(!lab.ctrd.ctr_rows(&["images", "ls", "-q"]).iter().any(|i| i.starts_with("wendy/viewers")));
    member
        .run(&["run", empty.to_str().unwrap(), "--name", "x", "--device", "192.0.2.1"])
        .expect_code(USAGE)
        .expect_stderr(&["no Containerfile or Dockerfile", "--image"]);

    let rm = member.run(&["apps", "rm", "ticker", "--device", &dev]);
    rm.expect_code(0);
}

/// A push the device's space reserve refuses: the registry's 507 `DENIED`
/// and its message reach the user (exit 1), and no app is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wendy_run_shows_the_quota_refusal() {
    wendy_tests::init();
    if common::optional_bin("wendy", TEST).is_none() || !has_tools() {
        return;
    }
    let reserve = u64::MAX.to_string();
    let Some(lab) = AppsLab::start_with(TEST, &[("WENDY_DATA_RESERVE_BYTES", &reserve)]).await else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let member = Cli::new(&t.path().join("member")).in_netns(&lab.ns);
    lab.write_cli_login(&lab.member, &member.config_dir());
    let dev = format!("127.0.0.1:{}", lab.agent.port);
    let app = t.path().join("app");
    app_dir(&app, "echo never", &[], Some(serde_json::json!({"appId": "full"})));
    let r = member.run(&["run", app.to_str().unwrap(), "--device", &dev, "--json"]);
    r.expect_code(1).expect_stderr(&["DENIED", "reserve", "wendy apps rm"]);
    eprintln!("the quota refusal as `wendy run` shows it: {}", r.stderr.trim());
    let list = member.run(&["apps", "list", "--device", &dev, "--json"]);
    assert_eq!(list.json()["apps"], serde_json::json!([]), "{list:#?}");
}
