//! Issue 14: the on-device registry over the real containerd.
//!
//! The test starts its own `containerd` (own root, state, socket and a
//! config without the CRI plugin, so it needs no CNI) and drives
//! `Registry::handle` in-process over `ContainerdStore`, with no TLS and a
//! role check that grants everything:
//! - a tiny OCI image (config by a monolithic upload, one tar.gz layer by a
//!   chunked upload, the manifest under a tag) is pushed; containerd's own
//!   client (`ctr`, namespace `wendy`) then sees the image `<repo>:<tag>`
//!   pointing at the manifest and reads back every blob;
//! - each committed blob is held by a lease labelled `sh.wendy.upload=<digest>`
//!   (`ctr leases ls`) until the manifest that references it is stored;
//!   then those leases are gone (the image roots the blobs), while a blob
//!   pushed without a manifest keeps its lease;
//! - the image is pulled back through the handler (manifest by tag and by
//!   digest, blobs, tags);
//! - a blob whose bytes do not match its digest is refused and leaves no
//!   ingest (`ctr content active`, i.e. `Content/ListStatuses`, is empty)
//!   and no lease behind;
//! - a manifest naming a blob that is not there is refused, and no image
//!   is created.
//!
//! Needs root and what `wendy_tests::containerd::Containerd` needs
//! (`scripts/setup` installs it); without them it prints `SKIP` and
//! passes (fails under `WENDY_TEST_STRICT=1`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use wendy_agent::containers::containerd::{ContainerdStore, LABEL_UPLOAD};
use wendy_agent::registry::digest::Digest;
use wendy_agent::registry::manifests::OCI_MANIFEST;
use wendy_agent::registry::names::RepoName;
use wendy_agent::registry::quota::SpaceCheck;
use wendy_agent::registry::{Access, Action, Authorize, Limits, Registry};
use wendy_tests::containerd::Containerd;

const TEST: &str = "containerd_registry";
const REPO: &str = "wendy/hello";
const TAG: &str = "v1";

/// Everyone may do everything (the mTLS role check is tested elsewhere).
struct AllowAll;

impl Authorize for AllowAll {
    fn check(&self, _: &http::request::Parts, _: Option<&RepoName>, _: Action) -> Access {
        Access::Granted
    }
}

/// Unlimited space (the quota is unit-tested).
struct Unlimited;

impl SpaceCheck for Unlimited {
    fn available(&self) -> std::io::Result<u64> {
        Ok(u64::MAX)
    }
}

/// A tar.gz holding one file, `hello.txt`.
fn layer(dir: &Path) -> Vec<u8> {
    let src = dir.join("layer-src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("hello.txt"), b"hello from a wendy app\n").expect("write");
    let out = dir.join("layer.tar.gz");
    let status = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-czf"])
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("hello.txt")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed");
    std::fs::read(out).expect("read layer")
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
}

type Reg = Registry<ContainerdStore, Unlimited, AllowAll>;

async fn call(reg: &Reg, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).expect("request");
    let resp = reg.handle(req).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// Monolithic upload: `POST ...?digest=` with the whole body.
async fn push_monolithic(reg: &Reg, data: &[u8], digest: &Digest) -> Answer {
    let uri = format!("/v2/{REPO}/blobs/uploads/?digest={digest}");
    call(reg, "POST", &uri, &[("content-length", &data.len().to_string())], data).await
}

/// Chunked upload: a session, one `PATCH` per piece but the last, and the
/// last piece with the final `PUT ?digest=`.
async fn push_chunked(reg: &Reg, data: &[u8], digest: &Digest, piece: usize) -> Answer {
    let start = call(reg, "POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], b"").await;
    assert_eq!(start.status, StatusCode::ACCEPTED, "{:?}", start.body);
    let mut location = start.header("location").to_owned();
    let pieces: Vec<&[u8]> = data.chunks(piece.max(1)).collect();
    let mut offset = 0;
    for p in &pieces[..pieces.len().saturating_sub(1)] {
        let range = format!("{}-{}", offset, offset + p.len() - 1);
        let len = p.len().to_string();
        let r = call(reg, "PATCH", &location, &[("content-range", &range), ("content-length", &len)], p).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "PATCH {range}: {:?}", r.body);
        assert_eq!(r.header("range"), format!("0-{}", offset + p.len() - 1));
        location = r.header("location").to_owned();
        offset += p.len();
    }
    let last = pieces.last().copied().unwrap_or_default();
    let sep = if location.contains('?') { '&' } else { '?' };
    let uri = format!("{location}{sep}digest={digest}");
    let mut headers = vec![];
    let (range, len) = (format!("{}-{}", offset, offset + last.len().max(1) - 1), last.len().to_string());
    if !last.is_empty() {
        headers.push(("content-range", range.as_str()));
        headers.push(("content-length", len.as_str()));
    }
    call(reg, "PUT", &uri, &headers, last).await
}

/// How many of containerd's leases are labelled [`LABEL_UPLOAD`]`=digest`.
fn upload_leases(ctrd: &Containerd, digest: &Digest) -> usize {
    let label = format!("{LABEL_UPLOAD}={digest}");
    let leases = ctrd.ctr_text(&["leases", "ls"]);
    leases.lines().filter(|l| l.split_whitespace().any(|w| w.split(',').any(|kv| kv == label))).count()
}

fn manifest(config: (&Digest, usize), layers: &[(&Digest, usize)]) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0.as_str(), "size": config.1},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.as_str(), "size": s,
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pushes_into_and_pulls_from_real_containerd() {
    let Some(ctrd) = Containerd::start(TEST) else {
        return;
    };
    let started = Instant::now();
    let store = ContainerdStore::connect(&ctrd.socket).await.expect("connect to containerd");
    let reg = Registry::new(store, Unlimited, AllowAll, Limits::default());

    let layer = layer(ctrd.dir.path());
    let layer_digest = Digest::of(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/cat", "/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string()
    .into_bytes();
    let config_digest = Digest::of(&config);

    // Push: the config monolithically, the layer in three chunks.
    let r = push_monolithic(&reg, &config, &config_digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), config_digest.as_str());
    let r = push_chunked(&reg, &layer, &layer_digest, layer.len().div_ceil(3)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(reg.sessions(), 0);
    // Pushing what exists is success (containerd: AlreadyExists).
    let r = push_monolithic(&reg, &config, &config_digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Until a manifest roots them, the blobs are held by leases labelled
    // with their digests (the config's two uploads each have one).
    assert_eq!(upload_leases(&ctrd, &config_digest), 2, "{}", ctrd.ctr_text(&["leases", "ls"]));
    assert_eq!(upload_leases(&ctrd, &layer_digest), 1, "{}", ctrd.ctr_text(&["leases", "ls"]));
    // A blob no manifest references.
    let loose = b"a blob no manifest references".to_vec();
    let loose_digest = Digest::of(&loose);
    let r = push_monolithic(&reg, &loose, &loose_digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    let m = manifest((&config_digest, config.len()), &[(&layer_digest, layer.len())]);
    let m_digest = Digest::of(&m);
    let r = call(&reg, "PUT", &format!("/v2/{REPO}/manifests/{TAG}"), &[("content-type", OCI_MANIFEST)], &m).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), m_digest.as_str());
    // The image roots the config and the layer now: their leases are
    // released; the loose blob keeps its own (it expires by itself).
    let leases = ctrd.ctr_text(&["leases", "ls"]);
    assert_eq!(upload_leases(&ctrd, &config_digest), 0, "{leases}");
    assert_eq!(upload_leases(&ctrd, &layer_digest), 0, "{leases}");
    assert_eq!(upload_leases(&ctrd, &loose_digest), 1, "{leases}");
    assert_eq!(ctrd.ctr_rows(&["leases", "ls"]).len(), 1, "only the loose blob's lease is left: {leases}");
    assert_eq!(ctrd.ctr(&["content", "get", loose_digest.as_str()]), loose);

    // containerd's own view: the image, its target, the bytes, the labels.
    let images = ctrd.ctr_text(&["images", "ls"]);
    let line = images
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("{REPO}:{TAG}")))
        .unwrap_or_else(|| panic!("no image {REPO}:{TAG} in containerd:\n{images}"));
    assert!(line.contains(OCI_MANIFEST) && line.contains(m_digest.as_str()), "{line}");
    assert_eq!(ctrd.ctr(&["content", "get", m_digest.as_str()]), m);
    assert_eq!(ctrd.ctr(&["content", "get", config_digest.as_str()]), config);
    assert_eq!(ctrd.ctr(&["content", "get", layer_digest.as_str()]), layer);
    let content = ctrd.ctr_text(&["content", "ls"]);
    let m_line = content.lines().find(|l| l.starts_with(m_digest.as_str())).expect("manifest in content ls");
    assert!(m_line.contains(&format!("containerd.io/gc.ref.content.config={config_digest}")), "{m_line}");
    assert!(m_line.contains(&format!("containerd.io/gc.ref.content.l.0={layer_digest}")), "{m_line}");
    // The image is complete as far as containerd is concerned.
    let check = ctrd.ctr_text(&["images", "check"]);
    assert!(check.lines().any(|l| l.starts_with(&format!("{REPO}:{TAG}")) && l.contains("complete")), "{check}");

    // Pull it back through the handler.
    let accept = [("accept", OCI_MANIFEST)];
    let r = call(&reg, "GET", &format!("/v2/{REPO}/manifests/{TAG}"), &accept, b"").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, m);
    assert_eq!(r.header("content-type"), OCI_MANIFEST);
    assert_eq!(r.header("docker-content-digest"), m_digest.as_str());
    let r = call(&reg, "GET", &format!("/v2/{REPO}/manifests/{m_digest}"), &accept, b"").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, m);
    let r = call(&reg, "GET", &format!("/v2/other/manifests/{m_digest}"), &accept, b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a manifest belongs to its repository");
    let r = call(&reg, "GET", &format!("/v2/{REPO}/blobs/{layer_digest}"), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, layer);
    let r = call(&reg, "HEAD", &format!("/v2/{REPO}/blobs/{config_digest}"), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), config.len().to_string());
    let r = call(&reg, "GET", &format!("/v2/{REPO}/tags/list"), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    let tags: serde_json::Value = serde_json::from_slice(&r.body).expect("tags json");
    assert_eq!(tags["tags"], serde_json::json!([TAG]));
    let r = call(&reg, "GET", &format!("/v2/{REPO}/blobs/{}", Digest::of(b"absent")), &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));

    // A digest mismatch, monolithic and chunked: refused, nothing left.
    let leases_before = ctrd.ctr_text(&["leases", "ls", "-q"]).lines().count();
    let wrong = Digest::of(b"something else");
    let r = push_monolithic(&reg, b"these bytes", &wrong).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"), "{:?}", r.body);
    let r = push_chunked(&reg, b"these other bytes", &wrong, 5).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"), "{:?}", r.body);
    assert_eq!(ctrd.ctr_text(&["content", "active"]).lines().filter(|l| !l.starts_with("REF")).count(), 0);
    assert_eq!(ctrd.ctr_text(&["leases", "ls", "-q"]).lines().count(), leases_before, "a refused upload's lease");
    assert!(!ctrd.ctr_ok(&["content", "get", wrong.as_str()]));
    // A cancelled session leaves nothing either.
    let start = call(&reg, "POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], b"").await;
    let location = start.header("location").to_owned();
    let r = call(&reg, "PATCH", &location, &[("content-range", "0-3")], b"abcd").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(ctrd.ctr_text(&["content", "active"]).lines().filter(|l| !l.starts_with("REF")).count(), 1);
    let r = call(&reg, "DELETE", &location, &[], b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(ctrd.ctr_text(&["content", "active"]).lines().filter(|l| !l.starts_with("REF")).count(), 0);

    // A manifest naming a missing blob: refused, no image.
    let missing = Digest::of(b"never pushed");
    let bad = manifest((&config_digest, config.len()), &[(&missing, 12)]);
    let r = call(&reg, "PUT", &format!("/v2/{REPO}/manifests/bad"), &[("content-type", OCI_MANIFEST)], &bad).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"), "{:?}", r.body);
    let images = ctrd.ctr_text(&["images", "ls", "-q"]);
    assert_eq!(images.lines().collect::<Vec<_>>(), vec![format!("{REPO}:{TAG}")], "{images}");
    assert!(!ctrd.ctr_ok(&["content", "get", Digest::of(&bad).as_str()]));

    eprintln!("{TEST}: push, check, pull and refusals against containerd took {:?}", started.elapsed());
}
