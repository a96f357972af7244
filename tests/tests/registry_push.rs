//! Issue 14: the agent's OCI registry on its own port (5000, mTLS only),
//! with a standard OCI client.
//!
//! A real containerd and a provisioned agent ([`AppsLab`]); `skopeo`
//! (containers/image, what podman and buildah push with) speaks HTTP to an
//! OpenSSL 3.5 `socat` hop ([`TlsHop`]) that carries it over TLS 1.3 with
//! the user's ML-DSA certificate to the registry: Go's TLS cannot do
//! ML-DSA, the hop is the standard client's TLS, nothing else changes.
//! - A Member pushes an OCI image layout; containerd (`ctr`, namespace
//!   `wendy`) then has the image under its repository and tag, and a Viewer
//!   pulls it back unchanged.
//! - A Viewer's push is refused (403 `DENIED`, role Member named) and
//!   leaves no image.
//! - A push that would take the data partition below its reserve
//!   (`WENDY_DATA_RESERVE_BYTES` larger than the disk) is refused with 507
//!   before anything is stored: no image, no ingest left in containerd; the
//!   registry keeps serving (the same Viewer reads an image afterwards).
//!
//! Needs root, containerd, runc, skopeo and the OpenSSL chroot with socat
//! (`scripts/setup`); without them it prints `SKIP` and passes (fails under
//! `WENDY_TEST_STRICT=1`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use wendy_tests::apps::{AppsLab, IMAGE};
use wendy_tests::containerd::{on_path, write_busybox_layout};
use wendy_tests::fake_pki::UserCert;
use wendy_tests::tlshop::{socat_root, ClientCert, PeerName, TlsHop};

const TEST: &str = "registry_push";

/// Whether this host has what the test needs besides containerd.
fn tools() -> bool {
    if on_path("skopeo").is_none() {
        wendy_tests::skip(TEST, "no skopeo (scripts/setup installs it)");
        return false;
    }
    if let Err(e) = socat_root() {
        wendy_tests::skip(TEST, &e);
        return false;
    }
    true
}

/// Waits until the agent's registry port listens.
fn wait_registry(lab: &AppsLab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.ns.is_listening(lab.registry_addr()) {
        assert!(Instant::now() < deadline, "the registry does not listen; agent log:\n{}", lab.agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hop to the registry presenting `user`'s certificate.
fn hop(lab: &AppsLab, user: &UserCert, log: &Path) -> TlsHop {
    let client = ClientCert { chain_pem: user.cert_pem.clone(), key_pem: user.key_pem.clone() };
    TlsHop::start(&lab.ns, lab.registry_addr(), &lab.ca_pem, &PeerName::CommonName(lab.device_cn()), Some(&client), log)
}

/// `skopeo ARGS` inside the lab's namespace.
fn skopeo(lab: &AppsLab, args: &[&str]) -> Output {
    lab.ns
        .command("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo {args:?}: {e}"))
}

fn describe(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `docker://` reference of `repo:tag` behind `hop`.
fn remote(hop: SocketAddr, repo_tag: &str) -> String {
    format!("docker://{hop}/{repo_tag}")
}

fn images(lab: &AppsLab) -> Vec<String> {
    lab.ctrd.ctr_rows(&["images", "ls", "-q"])
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_client_pushes_and_pulls_over_mtls() {
    if !tools() {
        return;
    }
    let Some(lab) = AppsLab::start(TEST).await else { return };
    wait_registry(&lab);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let digest = write_busybox_layout(&layout, "v1");
    let src = format!("oci:{}:v1", layout.display());

    // A Member pushes.
    let member = hop(&lab, &lab.member, &tmp.path().join("hop-member.log"));
    let t0 = Instant::now();
    let push = skopeo(&lab, &["copy", "--dest-tls-verify=false", &src, &remote(member.listen, "wendy/pushed:v1")]);
    let took = t0.elapsed();
    assert!(push.status.success(), "skopeo push as Member: {}\nhop log:\n{}", describe(&push), member.log_text());
    let bytes: u64 =
        std::fs::read_dir(layout.join("blobs/sha256")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    eprintln!(
        "{TEST}: skopeo pushed {bytes} bytes through the TLS hop in {:.2} s ({:.1} MiB/s)",
        took.as_secs_f64(),
        bytes as f64 / 1048576.0 / took.as_secs_f64()
    );
    let listed = images(&lab);
    assert!(listed.iter().any(|i| i == "wendy/pushed:v1"), "containerd images after the push: {listed:?}");
    let target = lab.ctrd.ctr_text(&["images", "ls"]);
    assert!(target.contains(digest.as_str()), "the image does not point at the pushed manifest {digest}:\n{target}");

    // A Viewer pulls it back: the same manifest.
    let viewer = hop(&lab, &lab.viewer, &tmp.path().join("hop-viewer.log"));
    let out = tmp.path().join("pulled");
    let pull = skopeo(
        &lab,
        &[
            "copy",
            "--src-tls-verify=false",
            &remote(viewer.listen, "wendy/pushed:v1"),
            &format!("oci:{}:v1", out.display()),
        ],
    );
    assert!(pull.status.success(), "skopeo pull as Viewer: {}\nhop log:\n{}", describe(&pull), viewer.log_text());
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "pulled index: {index}");

    // A Viewer may not push.
    let denied = skopeo(&lab, &["copy", "--dest-tls-verify=false", &src, &remote(viewer.listen, "wendy/viewer:v1")]);
    let text = describe(&denied);
    assert!(!denied.status.success(), "a Viewer pushed: {text}");
    assert!(text.contains("denied") || text.contains("DENIED"), "the refusal does not say denied: {text}");
    assert!(text.contains("Member"), "the refusal does not name role Member: {text}");
    assert!(!images(&lab).iter().any(|i| i == "wendy/viewer:v1"), "the Viewer's push left an image");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_over_the_reserve_is_refused_before_anything_is_stored() {
    if !tools() {
        return;
    }
    // A reserve no disk has: every byte is over it.
    let Some(lab) = AppsLab::start_with(TEST, &[("WENDY_DATA_RESERVE_BYTES", &u64::MAX.to_string())]).await else {
        return;
    };
    wait_registry(&lab);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    write_busybox_layout(&layout, "v1");
    let member = hop(&lab, &lab.member, &tmp.path().join("hop-member.log"));
    let push = skopeo(
        &lab,
        &[
            "copy",
            "--retry-times=0",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &remote(member.listen, "wendy/big:v1"),
        ],
    );
    let text = describe(&push);
    assert!(!push.status.success(), "a push over the reserve succeeded: {text}");
    assert!(text.contains("507") || text.contains("space"), "the refusal does not say why: {text}");
    assert!(!images(&lab).iter().any(|i| i == "wendy/big:v1"), "the refused push left an image");
    let active = lab.ctrd.ctr_rows(&["content", "active"]);
    assert!(active.is_empty(), "the refused push left ingests: {active:?}");

    // Still serving: the image the lab imported reads fine.
    let inspect = skopeo(&lab, &["inspect", "--tls-verify=false", &remote(member.listen, IMAGE)]);
    assert!(inspect.status.success(), "the registry stopped serving after the refusal: {}", describe(&inspect));
}
