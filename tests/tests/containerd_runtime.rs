//! Issue 14: the app runtime (`containers::runtime`) over the real
//! containerd and runc.
//!
//! The test starts its own `containerd` (own root, state and socket, no CRI
//! plugin) and builds a tiny image here, `FROM scratch` with a static
//! busybox (`/bin/busybox` from Debian's `busybox-static`, plus a few
//! applet links): one gzip layer, a config and a manifest pushed into
//! containerd's store through the registry's `ContainerdStore` (no network
//! pull), tagged `v1`, and an index pointing at it for this host's platform,
//! tagged `index`. Then, through `Runtime` only:
//! 1. output: an app that writes to stdout and stderr and exits 7 (run from
//!    the index): its lines arrive in its output stream, the exit code
//!    comes back from `wait`, `list` reports it exited with 7; unpacking
//!    twice adds no snapshot;
//! 2. network: without `network` the app sees only `lo` in
//!    `/sys/class/net` and `nc` cannot reach a listener the test opens on
//!    the host's non-loopback address (the listener sees no connection);
//!    with `network` (`mode: host`) it sees the host's interfaces and the
//!    listener receives its line;
//! 3. seccomp: in the default sandbox `/proc/self/status` says `Seccomp: 2`
//!    and `NoNewPrivs: 1`, and both `busybox unshare -n true` and
//!    `busybox unshare true` fail. The second asks for no namespace and
//!    needs no capability (it succeeds on the host, checked here), so only
//!    the seccomp filter refuses it; the root is read-only;
//! 4. persist: a file written to a `persist` volume by one container is read
//!    by a re-created container of the same app;
//! 5. stop and delete: `stop` ends an app that ignores `SIGTERM` (busybox
//!    `sleep` as pid 1) with `SIGKILL` after the timeout (137), and one that
//!    traps it within the timeout (0); deleting every app and its image
//!    leaves no container, task, snapshot, image, content, lease or log
//!    file (checked with containerd's own `ctr`), although the image was
//!    pushed with the registry's default 24 h upload leases: storing a
//!    manifest releases its blobs' leases.
//!
//! Needs root and `containerd`, `containerd-shim-runc-v2`, `runc`, `ctr`,
//! `busybox` (static), `tar`, `gzip` and `ip`; without them it prints
//! `SKIP` and passes (fails under `WENDY_TEST_STRICT=1`).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;
use wendy_agent::containers::app_config;
use wendy_agent::containers::containerd::ContainerdStore;
use wendy_agent::containers::runtime::image::host_platform;
use wendy_agent::containers::runtime::logs::Follow;
use wendy_agent::containers::runtime::{AppState, NewApp, RestartPolicy, Runtime, RuntimeError, RuntimeOptions};
use wendy_agent::registry::manifests::{OCI_INDEX, OCI_MANIFEST};
use wendy_tests::containerd::{import_busybox, on_path, push_manifest, Containerd};

const TEST: &str = "containerd_runtime";
const REPO: &str = "wendy/busybox";
const IMAGE: &str = "wendy/busybox:v1";
const INDEX_IMAGE: &str = "wendy/busybox:index";
/// Every app prints this last, so a reader knows its output is complete.
const END: &str = "__end__";
/// The bound on every step that waits for an app.
const STEP: Duration = Duration::from_secs(60);

/// Builds the busybox image and stores it as [`IMAGE`] and, behind an
/// index for this platform, [`INDEX_IMAGE`].
async fn import_image(store: &ContainerdStore, dir: &Path) {
    let (manifest_digest, size) = import_busybox(store, dir, REPO, "v1").await;
    let platform = host_platform();
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest.as_str(), "size": size,
                       "platform": {"os": "linux", "architecture": platform.architecture}}],
    });
    push_manifest(store, REPO, "index", OCI_INDEX, index).await;
}

/// A validated config for app `id` running `script` under `sh -c`, with
/// `entitlements` (JSON array items).
fn app(id: &str, image: &str, entitlements: &str, script: &str) -> NewApp {
    let json = serde_json::json!({
        "appId": id,
        "entitlements": serde_json::from_str::<serde_json::Value>(&format!("[{entitlements}]")).expect("entitlements"),
        "run": {"args": ["sh", "-c", script]},
    });
    let config = app_config::parse(json.to_string().as_bytes()).expect("valid wendy.json");
    NewApp::new(config, image)
}

/// The app's output lines until [`END`], following its log.
async fn output_until_end(rt: &Runtime, name: &str) -> Vec<String> {
    let mut stream = Box::pin(rt.output(name, Follow::Yes).expect("output"));
    let mut lines = Vec::new();
    let collect = async {
        while let Some(line) = stream.next().await {
            let line = String::from_utf8_lossy(&line.expect("log line")).into_owned();
            if line == END {
                return;
            }
            lines.push(line);
        }
    };
    if tokio::time::timeout(STEP, collect).await.is_err() {
        panic!("{name}: no {END} within {STEP:?}; output so far: {lines:?}");
    }
    lines
}

/// Creates and starts `app`, returns its output up to [`END`] and its exit
/// code.
async fn run_app(rt: &Runtime, app: &NewApp) -> (Vec<String>, u32) {
    rt.create(app).await.unwrap_or_else(|e| panic!("create {}: {e}", app.name));
    rt.start(&app.name).await.unwrap_or_else(|e| panic!("start {}: {e}", app.name));
    let lines = output_until_end(rt, &app.name).await;
    let exit = tokio::time::timeout(STEP, rt.wait(&app.name)).await.expect("wait in time").expect("wait");
    (lines, exit.code)
}

/// The host's first global IPv4 address (`ip -o -4 addr show scope global`).
fn host_address() -> Option<IpAddr> {
    let out = Command::new("ip").args(["-o", "-4", "addr", "show", "scope", "global"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(str::to_owned))
        .filter_map(|cidr| cidr.split('/').next().and_then(|a| a.parse().ok()))
        .next()
}

/// A TCP listener on `addr`; each connection's first line is recorded.
async fn listener(addr: IpAddr) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind((addr, 0)).await.expect("bind listener");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(sock);
            let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            record.lock().expect("lock").push(format!("connection: {}", line.trim()));
        }
    });
    (port, seen)
}

fn net_lines(lines: &[String]) -> Vec<&str> {
    lines.iter().filter_map(|l| l.strip_prefix("net:")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_run_sandboxed_on_real_containerd() {
    let Some(ctrd) = Containerd::start(TEST) else {
        return;
    };
    let Some(host_ip) = host_address() else {
        wendy_tests::skip(TEST, "this host has no global IPv4 address for the network check");
        return;
    };
    let started = Instant::now();
    let store = ContainerdStore::connect(&ctrd.socket).await.expect("connect to containerd");
    let dir = ctrd.dir.path().to_owned();
    // With the default upload lease (24 h): storing the manifests releases
    // their blobs' leases, so deleting the images frees everything.
    import_image(&store, &dir.join("image")).await;
    assert_eq!(ctrd.ctr_rows(&["leases", "ls"]), Vec::<String>::new(), "the images root every pushed blob");
    let volumes = dir.join("volumes");
    let logs = dir.join("logs");
    let rt =
        Runtime::new(&store, RuntimeOptions { log_dir: logs.clone(), volumes_root: volumes.clone() }).expect("runtime");

    // Unpacking is idempotent: the second run finds the chain.
    let first = rt.unpack(IMAGE).await.expect("unpack");
    let snapshots = ctrd.ctr_rows(&["snapshots", "ls"]);
    let second = rt.unpack(INDEX_IMAGE).await.expect("unpack again, through the index");
    assert_eq!(first, second);
    assert_eq!(ctrd.ctr_rows(&["snapshots", "ls"]), snapshots);
    assert_eq!(snapshots.len(), 1, "one layer, one snapshot: {snapshots:?}");
    assert!(snapshots[0].contains(first.chain_id.as_ref().expect("a chain").as_str()), "{snapshots:?}");
    assert!(matches!(rt.unpack("wendy/absent:v1").await, Err(RuntimeError::ImageNotFound(_))));

    // 1. Output and exit code.
    // The pause after the stderr line: the runc shim (containerd 1.6) gives
    // the stdout copier the log file itself and the stderr copier a shared
    // handle to it, so when stdout reaches its end first it closes the file
    // under a stderr line not yet copied, which is then lost (seen here one
    // run in four). Apps are subject to it too; see the runtime's docs.
    let script = format!("echo to-stderr >&2; sleep 0.5; echo hello from wendy; echo {END}; exit 7");
    let echo = app("echo", INDEX_IMAGE, "", &script);
    let (lines, code) = run_app(&rt, &echo).await;
    assert!(lines.contains(&"hello from wendy".to_owned()), "{lines:?}");
    assert_eq!(code, 7);
    assert_eq!(rt.state("echo").await.expect("state"), AppState::Exited { code: 7 });
    // The shim copies stdout and stderr in two goroutines, so the stderr
    // line may land after END and even after the exit: poll the file.
    let mut all = Vec::new();
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        all = rt.output("echo", Follow::No).expect("output").collect::<Vec<_>>().await;
        if all.iter().any(|l| l.as_ref().is_ok_and(|l| l == "to-stderr")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all.iter().any(|l| l.as_ref().is_ok_and(|l| l == "to-stderr")), "stderr in the log: {all:?}");
    let listed = rt.list().await.expect("list");
    let e = listed.iter().find(|a| a.name == "echo").expect("echo listed");
    assert_eq!((e.image.as_str(), e.state, e.restart), (INDEX_IMAGE, AppState::Exited { code: 7 }, RestartPolicy::No));
    assert!(matches!(rt.create(&echo).await, Err(RuntimeError::AlreadyExists(_))));
    let mut bad = echo.clone();
    bad.name = "../escape".into();
    assert!(matches!(rt.create(&bad).await, Err(RuntimeError::BadName(_))));

    // 2. Network: only loopback without the entitlement, the host's with it.
    let (port, seen) = listener(host_ip).await;
    let script = format!(
        "for i in /sys/class/net/*; do echo net:${{i##*/}}; done; \
         echo ping | nc -w 3 {host_ip} {port} && echo CONNECTED || echo NOT-CONNECTED; echo {END}"
    );
    let (lines, _) = run_app(&rt, &app("nonet", IMAGE, "", &script)).await;
    assert_eq!(net_lines(&lines), ["lo"], "{lines:?}");
    assert!(lines.contains(&"NOT-CONNECTED".to_owned()), "{lines:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.lock().expect("lock").is_empty(), "a sandboxed app reached the host: {seen:?}");
    let (lines, _) = run_app(&rt, &app("hostnet", IMAGE, r#"{"type":"network","mode":"host"}"#, &script)).await;
    assert!(net_lines(&lines).len() > 1 && net_lines(&lines).contains(&"lo"), "{lines:?}");
    assert!(lines.contains(&"CONNECTED".to_owned()), "{lines:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().expect("lock").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*seen.lock().expect("lock"), ["connection: ping"]);

    // 3. Seccomp: unshare is refused even without namespace flags.
    let host_unshare = Command::new(on_path("busybox").expect("busybox")).args(["unshare", "true"]).status();
    assert!(host_unshare.is_ok_and(|s| s.success()), "busybox unshare true must work on the host");
    let script = format!(
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
         unshare -n true && echo unshare-n:allowed || echo unshare-n:denied; \
         unshare true && echo unshare:allowed || echo unshare:denied; \
         touch /rootfs-write 2>/dev/null && echo root:writable || echo root:read-only; echo {END}"
    );
    let (lines, _) = run_app(&rt, &app("sandboxed", IMAGE, "", &script)).await;
    let squeezed: Vec<String> = lines.iter().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    for want in ["Seccomp: 2", "NoNewPrivs: 1", "unshare-n:denied", "unshare:denied", "root:read-only"] {
        assert!(squeezed.iter().any(|l| l == want), "{want:?} missing from {lines:?}");
    }

    // 4. Persist: the volume outlives the container.
    let persist = r#"{"type":"persist","name":"data","path":"/data"}"#;
    let script = format!(
        "if [ -f /data/note ]; then echo found:$(cat /data/note); else echo absent; fi; \
         echo written-by-first > /data/note; echo {END}"
    );
    let keeper = app("keeper", IMAGE, persist, &script);
    let (lines, code) = run_app(&rt, &keeper).await;
    assert_eq!((lines.as_slice(), code), (["absent".to_owned()].as_slice(), 0));
    assert_eq!(std::fs::read_to_string(volumes.join("data/note")).expect("note on the host"), "written-by-first\n");
    rt.delete("keeper", false).await.expect("delete keeper");
    assert!(matches!(rt.state("keeper").await, Err(RuntimeError::NotFound(_))));
    let (lines, _) = run_app(&rt, &keeper).await;
    assert_eq!(lines, ["found:written-by-first"]);

    // 5. Stop: SIGKILL after the timeout for an app that ignores SIGTERM
    // (sleep as pid 1), SIGTERM alone for one that handles it.
    let mut sleeper = app("sleeper", IMAGE, "", "exec sleep 600");
    sleeper.restart = RestartPolicy::OnFailure { max_retries: 3 };
    rt.create(&sleeper).await.expect("create sleeper");
    let pid = rt.start("sleeper").await.expect("start sleeper");
    assert_eq!(rt.state("sleeper").await.expect("state"), AppState::Running { pid });
    assert!(matches!(rt.start("sleeper").await, Err(RuntimeError::AlreadyRunning(_))));
    let t = Instant::now();
    let code = rt.stop("sleeper", Duration::from_secs(1)).await.expect("stop sleeper");
    assert_eq!(code, Some(128 + libc::SIGKILL as u32));
    assert!(t.elapsed() >= Duration::from_secs(1), "SIGKILL before the timeout");
    let listed = rt.list().await.expect("list");
    let s = listed.iter().find(|a| a.name == "sleeper").expect("sleeper listed");
    assert_eq!((s.state, s.restart, s.stopped_on_purpose), (AppState::Stopped, sleeper.restart, true));
    let script = format!("trap 'echo got-term; echo {END}; exit 0' TERM; echo ready; while true; do sleep 1; done");
    let graceful = app("graceful", IMAGE, "", &script);
    rt.create(&graceful).await.expect("create graceful");
    rt.start("graceful").await.expect("start graceful");
    let mut out = Box::pin(rt.output("graceful", Follow::Yes).expect("output"));
    let ready = tokio::time::timeout(STEP, out.next()).await.expect("ready in time");
    assert_eq!(ready.expect("a line").expect("read"), "ready");
    let t = Instant::now();
    assert_eq!(rt.stop("graceful", Duration::from_secs(30)).await.expect("stop graceful"), Some(0));
    assert!(t.elapsed() < Duration::from_secs(30), "graceful stop took {:?}", t.elapsed());
    assert_eq!(output_until_end(&rt, "graceful").await, ["ready", "got-term"]);
    // A running app is deleted too (killed first).
    rt.start("sleeper").await.expect("restart sleeper");
    assert!(!rt.list().await.expect("list").iter().find(|a| a.name == "sleeper").expect("listed").stopped_on_purpose);

    // Delete everything, images included: nothing is left.
    let names: Vec<String> = rt.list().await.expect("list").into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["echo", "graceful", "hostnet", "keeper", "nonet", "sandboxed", "sleeper"]);
    for name in &names {
        rt.delete(name, true).await.unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }
    assert!(rt.list().await.expect("list").is_empty());
    assert_eq!(ctrd.ctr_rows(&["containers", "ls", "-q"]), Vec::<String>::new());
    assert_eq!(ctrd.ctr_rows(&["tasks", "ls"]), Vec::<String>::new());
    assert_eq!(ctrd.ctr_rows(&["images", "ls", "-q"]), Vec::<String>::new());
    assert_eq!(ctrd.ctr_rows(&["snapshots", "ls"]), Vec::<String>::new());
    assert_eq!(ctrd.ctr_rows(&["content", "ls"]), Vec::<String>::new());
    assert_eq!(ctrd.ctr_rows(&["leases", "ls"]), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(&logs).expect("log dir").collect();
    assert!(left.is_empty(), "log files left: {left:?}");
    assert!(volumes.join("data/note").exists(), "persist volumes are kept");

    eprintln!("{TEST}: unpack, five sandbox checks and clean-up against containerd took {:?}", started.elapsed());
}
