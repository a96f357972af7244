//! End-to-end tests of the handler over the in-memory store: every
//! endpoint's happy path and each refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::digest::Digest;
use super::manifests::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::memory::MemoryStore;
use super::names::RepoName;
use super::quota::SpaceCheck;
use super::{Access, Action, Authorize, Limits, Registry};

const ROLE: &str = "x-test-role";

#[derive(Clone)]
struct FakeSpace(Arc<AtomicU64>);

impl SpaceCheck for FakeSpace {
    fn available(&self) -> std::io::Result<u64> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

/// Viewer pulls, Member pushes; no header is no identity.
struct RoleHeader;

impl Authorize for RoleHeader {
    fn check(&self, request: &http::request::Parts, _repo: Option<&RepoName>, action: Action) -> Access {
        match (request.headers.get(ROLE).and_then(|v| v.to_str().ok()), action) {
            (None, _) => Access::Unauthenticated,
            (Some("member"), _) | (Some("viewer"), Action::Pull) => Access::Granted,
            _ => Access::Forbidden,
        }
    }
}

type Reg = Registry<MemoryStore, FakeSpace, RoleHeader>;

struct T {
    reg: Reg,
    store: MemoryStore,
    space: Arc<AtomicU64>,
}

fn setup(limits: Limits) -> T {
    let store = MemoryStore::default();
    let space = Arc::new(AtomicU64::new(u64::MAX));
    let reg = Registry::new(store.clone(), FakeSpace(space.clone()), RoleHeader, limits);
    T { reg, store, space }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
}

impl T {
    async fn call_as(
        &self,
        role: Option<&str>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut b = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(uri);
        if let Some(r) = role {
            b = b.header(ROLE, r);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = self.reg.handle(b.body(Full::new(Bytes::copy_from_slice(body))).unwrap()).await;
        let (parts, body) = r.into_parts();
        assert_eq!(parts.headers.get("docker-distribution-api-version").unwrap(), "registry/2.0");
        Resp { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.call_as(Some("member"), method, uri, headers, body).await
    }

    /// A monolithic upload; returns the digest.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        let r = self.call("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.call("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("content-type", media_type)], body).await
    }
}

fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let desc =
        |mt: &str, d: &[u8]| serde_json::json!({"mediaType": mt, "digest": Digest::of(d).as_str(), "size": d.len()});
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

fn index(media_type: &str, children: &[&[u8]]) -> Vec<u8> {
    let m: Vec<_> = children
        .iter()
        .map(|c| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(c).as_str(), "size": c.len()}))
        .collect();
    serde_json::json!({"schemaVersion": 2, "mediaType": media_type, "manifests": m}).to_string().into_bytes()
}

const CONFIG: &[u8] = br#"{"architecture":"arm64","os":"linux"}"#;
const LAYER: &[u8] = b"a layer's tar bytes, more or less";

#[tokio::test]
async fn push_then_pull() {
    let t = setup(Limits::default());
    let r = t.call("GET", "/v2/", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);

    let config = t.push_blob("apps/hello", CONFIG).await;
    // The layer through a session and one PUT with the whole body.
    let r = t.call("POST", "/v2/apps/hello/blobs/uploads/", &[], b"").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").to_owned();
    assert!(location.starts_with("/v2/apps/hello/blobs/uploads/"));
    let layer = Digest::of(LAYER);
    let r = t.call("PUT", &format!("{location}?digest={}", layer.as_str().replace(':', "%3A")), &[], LAYER).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), layer.as_str());
    assert_eq!(r.header("location"), format!("/v2/apps/hello/blobs/{layer}"));

    let manifest = image_manifest(CONFIG, &[LAYER]);
    let r = t.put_manifest("apps/hello", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let md = Digest::of(&manifest);
    assert_eq!(r.header("docker-content-digest"), md.as_str());
    assert_eq!(r.header("location"), format!("/v2/apps/hello/manifests/{md}"));

    // Pull, as a Viewer.
    let viewer = Some("viewer");
    for reference in ["v1", md.as_str()] {
        let r = t.call_as(viewer, "GET", &format!("/v2/apps/hello/manifests/{reference}"), &[], b"").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), md.as_str());
        assert_eq!(r.body, manifest);
    }
    let r = t.call_as(viewer, "HEAD", "/v2/apps/hello/manifests/v1", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), manifest.len().to_string());
    assert!(r.body.is_empty());

    let r = t.call_as(viewer, "HEAD", &format!("/v2/apps/hello/blobs/{config}"), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), CONFIG.len().to_string());
    assert_eq!(r.header("docker-content-digest"), config.as_str());
    let r = t.call_as(viewer, "GET", &format!("/v2/apps/hello/blobs/{layer}"), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, LAYER);

    let r = t.call_as(viewer, "GET", "/v2/apps/hello/tags/list", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"name": "apps/hello", "tags": ["v1"]}));

    // Unknown things are 404 with the spec's codes.
    let r = t.call("GET", "/v2/apps/hello/manifests/v2", &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    let r = t.call("HEAD", &format!("/v2/apps/hello/blobs/{}", Digest::of(b"nope")), &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = t.call("GET", &format!("/v2/apps/hello/blobs/{}", Digest::of(b"nope")), &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    assert_eq!(t.store.partial_uploads(), 0);
    assert_eq!(t.reg.sessions(), 0);
}

#[tokio::test]
async fn chunked_upload_with_range_checks() {
    let t = setup(Limits::default());
    let data = b"0123456789abcdefghij";
    let r = t.call("POST", "/v2/repo/blobs/uploads/", &[("content-length", "0")], b"").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-0");
    let loc = r.header("location").to_owned();
    assert_eq!(loc.rsplit('/').next(), Some(r.header("docker-upload-uuid")));

    let r = t.call("PATCH", &loc, &[("content-range", "0-4"), ("content-length", "5")], &data[..5]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.header("range"), "0-4");
    assert_eq!(r.header("location"), loc);

    // Out of order: 416 with the current range; the session survives.
    let r = t.call("PATCH", &loc, &[("content-range", "6-9")], &data[6..10]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("range"), "0-4");
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    let r = t.call("PATCH", &loc, &[("content-range", "garbage")], &data[5..10]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = t.call("PATCH", &loc, &[("content-range", "5-4")], &data[5..10]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // Streaming PATCH without Content-Range (as containerd sends it).
    let r = t.call("PATCH", &loc, &[], &data[5..10]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-9");

    let r = t.call("GET", &loc, &[], b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), "0-9");

    let d = Digest::of(data);
    let r = t.call("PUT", &format!("{loc}?digest={d}"), &[("content-range", "10-19")], &data[10..]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(t.store.has_blob(&d));
    assert_eq!(t.reg.sessions(), 0);
    assert_eq!(t.store.partial_uploads(), 0);
    // The session is gone.
    let r = t.call("PATCH", &loc, &[], b"x").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"));

    // A range that cannot be a length; a chunk over the blob cap (which
    // aborts the session).
    let loc = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await.header("location").to_owned();
    let r = t.call("PATCH", &loc, &[("content-range", &format!("0-{}", u64::MAX))], b"x").await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = t.call("PATCH", &loc, &[("content-range", &format!("0-{}", u64::MAX - 1))], b"x").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"));
    assert_eq!(t.reg.sessions(), 0);
    assert_eq!(t.store.partial_uploads(), 0);
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing() {
    let t = setup(Limits::default());
    let wrong = Digest::of(b"something else");
    let r = t.call("POST", &format!("/v2/repo/blobs/uploads/?digest={wrong}"), &[], LAYER).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    assert!(!t.store.has_blob(&wrong) && !t.store.has_blob(&Digest::of(LAYER)));
    assert_eq!(t.store.partial_bytes(), 0);

    let r = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    let loc = r.header("location").to_owned();
    assert_eq!(t.call("PATCH", &loc, &[], LAYER).await.status, StatusCode::ACCEPTED);
    assert!(t.store.partial_bytes() > 0);
    let r = t.call("PUT", &format!("{loc}?digest={wrong}"), &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    assert_eq!(t.store.partial_bytes(), 0);
    assert_eq!(t.reg.sessions(), 0);
    assert!(!t.store.has_blob(&wrong));

    // A body shorter than its Content-Length is refused too.
    let d = Digest::of(LAYER);
    let r = t.call("POST", &format!("/v2/repo/blobs/uploads/?digest={d}"), &[("content-length", "999")], LAYER).await;
    assert_eq!(r.code(), "SIZE_INVALID");
    assert_eq!(t.store.partial_bytes(), 0);
}

#[tokio::test]
async fn only_sha256_digests() {
    let t = setup(Limits::default());
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    for (m, uri) in [
        ("HEAD", format!("/v2/repo/blobs/{sha512}")),
        ("GET", format!("/v2/repo/manifests/{sha512}")),
        ("POST", format!("/v2/repo/blobs/uploads/?digest={sha512}")),
        ("GET", "/v2/repo/blobs/sha256:ABC".to_owned()),
    ] {
        let r = t.call(m, &uri, &[], b"").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m} {uri}");
        if m != "HEAD" {
            assert_eq!(r.code(), "DIGEST_INVALID", "{m} {uri}");
        }
    }
    let r = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    let r = t.call("PUT", r.header("location"), &[], b"").await;
    assert_eq!(r.code(), "DIGEST_INVALID"); // no ?digest=
    assert_eq!(t.store.partial_bytes(), 0);
}

#[tokio::test]
async fn names_are_validated() {
    let t = setup(Limits::default());
    let long = "a".repeat(256);
    for uri in ["/v2/Repo/tags/list", "/v2/a..b/manifests/v1", &format!("/v2/{long}/tags/list"), "/v2/a/manifests/-bad"]
    {
        let r = t.call("GET", uri, &[], b"").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(["NAME_INVALID", "MANIFEST_INVALID"].contains(&r.code().as_str()), "{uri}");
    }
    let r = t.call("GET", "/v2/a/unknown", &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = t.call("GET", "/other", &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifests_with_missing_blobs_are_refused() {
    let t = setup(Limits::default());
    t.push_blob("repo", CONFIG).await;
    let manifest = image_manifest(CONFIG, &[LAYER]);
    let r = t.put_manifest("repo", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(t.call("GET", "/v2/repo/manifests/v1", &[], b"").await.status, StatusCode::NOT_FOUND);

    // An index whose child is missing; then with it.
    t.push_blob("repo", LAYER).await;
    let idx = index(OCI_INDEX, &[&manifest]);
    let r = t.put_manifest("repo", "multi", OCI_INDEX, &idx).await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    let md = Digest::of(&manifest);
    assert_eq!(t.put_manifest("repo", md.as_str(), OCI_MANIFEST, &manifest).await.status, StatusCode::CREATED);
    assert_eq!(t.put_manifest("repo", "multi", OCI_INDEX, &idx).await.status, StatusCode::CREATED);
    // A Docker list too, whose type the header alone gives.
    let list = index(DOCKER_LIST, &[&manifest]);
    assert_eq!(t.put_manifest("repo", "list", DOCKER_LIST, &list).await.status, StatusCode::CREATED);
    let r = t.call("GET", "/v2/repo/manifests/list", &[], b"").await;
    assert_eq!(r.header("content-type"), DOCKER_LIST);

    // A descriptor with the wrong size.
    let mut v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    v["layers"][0]["size"] = 1.into();
    let r = t.put_manifest("repo", "v2", OCI_MANIFEST, v.to_string().as_bytes()).await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
}

#[tokio::test]
async fn malformed_and_oversized_manifests_are_refused() {
    let limits = Limits { max_manifest_bytes: 1024, ..Limits::default() };
    let t = setup(limits);
    t.push_blob("repo", CONFIG).await;
    t.push_blob("repo", LAYER).await;
    let manifest = image_manifest(CONFIG, &[LAYER]);

    let r = t.put_manifest("repo", "v1", OCI_MANIFEST, b"{not json").await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = t.put_manifest("repo", "v1", DOCKER_MANIFEST, &manifest).await;
    assert_eq!(r.code(), "MANIFEST_INVALID"); // header and field disagree
    let r = t.put_manifest("repo", "v1", "application/vnd.docker.distribution.manifest.v1+prettyjws", b"{}").await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = t.put_manifest("repo", Digest::of(b"other").as_str(), OCI_MANIFEST, &manifest).await;
    assert_eq!(r.code(), "DIGEST_INVALID");

    let big = vec![b' '; 2048];
    let r = t.put_manifest("repo", "v1", OCI_MANIFEST, &big).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"));
    let r = t
        .call("PUT", "/v2/repo/manifests/v1", &[("content-type", OCI_MANIFEST), ("content-length", "5000000")], b"")
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(t.put_manifest("repo", "v1", OCI_MANIFEST, &manifest).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn quota_refuses_before_the_disk_fills_and_keeps_serving() {
    let t = setup(Limits::default());
    let d = Digest::of(LAYER);
    // Monolithic with a declared size over the quota.
    t.space.store(10, Ordering::SeqCst);
    let len = LAYER.len().to_string();
    let r = t.call("POST", &format!("/v2/repo/blobs/uploads/?digest={d}"), &[("content-length", &len)], LAYER).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::INSUFFICIENT_STORAGE, "DENIED"));
    assert_eq!(t.store.partial_uploads(), 0);

    // A streaming chunk (no length) is checked piece by piece; the session
    // is aborted and its bytes removed.
    t.space.store(1000, Ordering::SeqCst);
    let r = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    let loc = r.header("location").to_owned();
    assert_eq!(t.call("PATCH", &loc, &[], b"12345").await.status, StatusCode::ACCEPTED);
    t.space.store(3, Ordering::SeqCst);
    let r = t.call("PATCH", &loc, &[], LAYER).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::INSUFFICIENT_STORAGE, "DENIED"));
    assert_eq!(t.store.partial_bytes(), 0);
    assert_eq!(t.reg.sessions(), 0);
    // A device at its reserve starts no upload.
    t.space.store(0, Ordering::SeqCst);
    let r = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);

    // With room again, the registry serves as before.
    t.space.store(u64::MAX, Ordering::SeqCst);
    t.push_blob("repo", LAYER).await;
    assert_eq!(t.call("GET", "/v2/", &[], b"").await.status, StatusCode::OK);
}

#[tokio::test]
async fn session_cap_and_idle_expiry() {
    let limits = Limits { max_sessions: 2, session_idle: Duration::from_secs(60), ..Limits::default() };
    let t = setup(limits);
    let a = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await.header("location").to_owned();
    let _b = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    let r = t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    // A monolithic upload needs no session.
    t.push_blob("repo", CONFIG).await;
    // Another repository cannot use the session.
    let other = a.replace("/v2/repo/", "/v2/other/");
    assert_eq!(t.call("PATCH", &other, &[], b"x").await.code(), "BLOB_UPLOAD_UNKNOWN");

    assert_eq!(t.call("PATCH", &a, &[], b"data").await.status, StatusCode::ACCEPTED);
    t.reg.expire_sessions_at(Instant::now() + Duration::from_secs(61)).await;
    assert_eq!(t.reg.sessions(), 0);
    assert_eq!(t.store.partial_uploads(), 0);
    assert_eq!(t.call("PATCH", &a, &[], b"x").await.code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(t.call("POST", "/v2/repo/blobs/uploads/", &[], b"").await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn roles() {
    let t = setup(Limits::default());
    let r = t.call_as(None, "GET", "/v2/", &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let r = t.call_as(None, "GET", "/v2/Bad/tags/list", &[], b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = t.call_as(Some("viewer"), "POST", "/v2/repo/blobs/uploads/", &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    let r = t.call_as(Some("viewer"), "PUT", "/v2/repo/manifests/v1", &[], b"{}").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = t.call_as(Some("stranger"), "GET", "/v2/repo/tags/list", &[], b"").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(t.call_as(Some("viewer"), "GET", "/v2/repo/tags/list", &[], b"").await.status, StatusCode::OK);
    assert_eq!(t.reg.sessions(), 0);
}

#[tokio::test]
async fn delete_cancel_and_mount() {
    let t = setup(Limits::default());
    let d = t.push_blob("a", LAYER).await;
    let r = t.call("DELETE", &format!("/v2/a/blobs/{d}"), &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
    let r = t.call("DELETE", "/v2/a/manifests/v1", &[], b"").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // Cancel drops the session and its bytes.
    let loc = t.call("POST", "/v2/a/blobs/uploads/", &[], b"").await.header("location").to_owned();
    t.call("PATCH", &loc, &[], b"partial").await;
    assert_eq!(t.call("DELETE", &loc, &[], b"").await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.store.partial_uploads(), 0);
    assert_eq!(t.call("GET", &loc, &[], b"").await.code(), "BLOB_UPLOAD_UNKNOWN");

    // Mount of a known blob: 201; of an unknown one: a new session.
    let r = t.call("POST", &format!("/v2/b/blobs/uploads/?mount={d}&from=a"), &[], b"").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/b/blobs/{d}"));
    let r = t.call("POST", &format!("/v2/b/blobs/uploads/?mount={}&from=a", Digest::of(b"x")), &[], b"").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = t.call("POST", &format!("/v2/b/blobs/uploads/?mount={d}&from=Bad"), &[], b"").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn tags_are_paginated() {
    let t = setup(Limits::default());
    t.push_blob("repo", CONFIG).await;
    t.push_blob("repo", LAYER).await;
    let manifest = image_manifest(CONFIG, &[LAYER]);
    for tag in ["c", "a", "b"] {
        assert_eq!(t.put_manifest("repo", tag, OCI_MANIFEST, &manifest).await.status, StatusCode::CREATED);
    }
    let tags = |r: &Resp| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["tags"].clone();
    let r = t.call("GET", "/v2/repo/tags/list?n=2", &[], b"").await;
    assert_eq!(tags(&r), serde_json::json!(["a", "b"]));
    assert_eq!(r.header("link"), "</v2/repo/tags/list?n=2&last=b>; rel=\"next\"");
    let r = t.call("GET", "/v2/repo/tags/list?n=2&last=b", &[], b"").await;
    assert_eq!(tags(&r), serde_json::json!(["c"]));
    assert_eq!(r.header("link"), "");
    let r = t.call("GET", "/v2/empty/tags/list", &[], b"").await;
    assert_eq!(tags(&r), serde_json::json!([]));
}

#[test]
fn the_handler_future_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let t = setup(Limits::default());
    assert_send(t.reg.handle(Request::new(Full::new(Bytes::new()))));
}
