//! Routing and the endpoints: one function from `http::Request` to
//! `http::Response` ([`Registry::handle`]), for any request body type, so
//! it can sit behind hyper on the agent's mTLS acceptor.
//!
//! Every response carries `Docker-Distribution-API-Version: registry/2.0`;
//! every refusal is the spec's JSON error body.

use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::TryStreamExt;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited, StreamBody};

use super::digest::Digest;
use super::errors::{ErrorCode, RegistryError};
use super::manifests;
use super::names::{NameError, Reference, RepoName};
use super::quota::{self, QuotaError, SpaceCheck};
use super::store::{BlobWriter, ContentStore, StoreError, StoredManifest};
use super::uploads::{Held, Session, SessionError, Sessions};
use super::{Access, Action, Authorize, Limits};

/// Errors of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The header naming the API version.
pub const API_VERSION_HEADER: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// Its value.
pub const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");
/// The digest of the content in (or created by) a response.
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// An upload session's id (legacy, still read by clients).
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// The media type of blobs and errors.
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The registry: a store, a space check, a role check, limits, sessions.
pub struct Registry<S: ContentStore, Q, A> {
    store: S,
    space: Q,
    auth: A,
    limits: Limits,
    sessions: Sessions<S::Writer>,
}

impl<S: ContentStore, Q, A> std::fmt::Debug for Registry<S, Q, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("limits", &self.limits).field("sessions", &self.sessions.len()).finish()
    }
}

/// Where a request goes.
#[derive(Debug)]
enum Route {
    Base,
    Blob(RepoName, String),
    Uploads(RepoName),
    Upload(RepoName, String),
    Manifest(RepoName, String),
    Tags(RepoName),
}

impl Route {
    fn repo(&self) -> Option<&RepoName> {
        match self {
            Self::Base => None,
            Self::Blob(r, _) | Self::Uploads(r) | Self::Upload(r, _) | Self::Manifest(r, _) | Self::Tags(r) => Some(r),
        }
    }
}

/// Splits `/v2/<name>/<endpoint>`; the name may contain `/`, so the
/// endpoint is matched from the end.
fn route(path: &str) -> Result<Route, RegistryError> {
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Base);
    }
    let not_found =
        || RegistryError::new(ErrorCode::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND);
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| RepoName::parse(&segs[..k].join("/")).map_err(name_error);
    let last = percent_decode(segs[n - 1]);
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        Ok(Route::Tags(name(n - 2)?))
    } else if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let repo = name(n - 3)?;
        Ok(if last.is_empty() { Route::Uploads(repo) } else { Route::Upload(repo, last) })
    } else if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        Ok(Route::Uploads(name(n - 2)?))
    } else if n >= 3 && segs[n - 2] == "blobs" {
        Ok(Route::Blob(name(n - 2)?, last))
    } else if n >= 3 && segs[n - 2] == "manifests" {
        Ok(Route::Manifest(name(n - 2)?, last))
    } else {
        Err(not_found())
    }
}

/// Decodes `%XX` escapes (clients escape the `:` of digests); a malformed
/// escape is kept as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |x: u8| (x as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `key`, decoded.
fn query_param(parts: &Parts, key: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(&v.replace('+', " ")))
    })
}

fn name_error(e: NameError) -> RegistryError {
    match e {
        NameError::Digest(d) => RegistryError::new(ErrorCode::DigestInvalid, d.to_string()),
        NameError::BadTag => RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()),
        other => RegistryError::new(ErrorCode::NameInvalid, other.to_string()),
    }
}

fn digest_param(s: &str) -> Result<Digest, RegistryError> {
    Digest::parse(s).map_err(|e| RegistryError::new(ErrorCode::DigestInvalid, format!("{s:.80}: {e}")))
}

fn store_error(e: StoreError) -> RegistryError {
    match e {
        StoreError::DigestMismatch { .. } => RegistryError::new(ErrorCode::DigestInvalid, e.to_string()),
        StoreError::SizeMismatch { .. } => RegistryError::new(ErrorCode::SizeInvalid, e.to_string()),
        StoreError::Offset { .. } => RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string())
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE),
        StoreError::Backend(_) => {
            tracing::warn!(error = %e, "registry: content store failed");
            RegistryError::new(ErrorCode::Unknown, e.to_string())
        }
    }
}

/// The quota refusal: 507 `DENIED` (see [`quota`]).
fn quota_error(e: QuotaError) -> RegistryError {
    match e {
        QuotaError::NoSpace { .. } => {
            RegistryError::new(ErrorCode::Denied, e.to_string()).with_status(StatusCode::INSUFFICIENT_STORAGE)
        }
        QuotaError::Io(_) => RegistryError::new(ErrorCode::Unknown, e.to_string()),
    }
}

fn session_error(e: SessionError) -> RegistryError {
    match e {
        SessionError::Unknown => RegistryError::new(ErrorCode::BlobUploadUnknown, e.to_string()),
        SessionError::Busy => RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string())
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE),
        SessionError::TooMany(_) => RegistryError::new(ErrorCode::TooManyRequests, e.to_string()),
    }
}

fn unsupported(method: &Method) -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported, format!("{method} is not supported here"))
}

fn header_value(s: &str) -> HeaderValue {
    // Everything passed here is built from validated names and digests.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// `Range` as the spec reports an upload's progress: inclusive, `0-0` when
/// empty.
fn range_value(offset: u64) -> HeaderValue {
    header_value(&format!("0-{}", offset.saturating_sub(1)))
}

fn upload_location(repo: &RepoName, id: &str) -> HeaderValue {
    header_value(&format!("/v2/{repo}/blobs/uploads/{id}"))
}

/// A `Content-Length` request header, if any; a malformed one is refused.
fn content_length(parts: &Parts) -> Result<Option<u64>, RegistryError> {
    let Some(v) = parts.headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| RegistryError::new(ErrorCode::SizeInvalid, "malformed Content-Length"))
}

/// A `Content-Range: <start>-<end>` (inclusive), tolerating a `bytes `
/// or `bytes=` prefix.
fn content_range(v: &HeaderValue) -> Option<(u64, u64)> {
    let s = v.to_str().ok()?.trim();
    let s = s.strip_prefix("bytes=").or_else(|| s.strip_prefix("bytes ")).unwrap_or(s);
    let s = s.split('/').next()?;
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
    (b >= a).then_some((a, b))
}

fn response(status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn error_response(e: RegistryError) -> Response<ResponseBody> {
    let body = e.body();
    let mut r = response(e.status, full(body.clone()));
    for (name, value) in e.headers {
        r.headers_mut().insert(name, value);
    }
    r.headers_mut().insert(header::CONTENT_TYPE, JSON);
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

impl<S, Q, A> Registry<S, Q, A>
where
    S: ContentStore,
    Q: SpaceCheck,
    A: Authorize,
{
    /// A registry over `store`, refusing bytes that `space` says do not
    /// fit, for callers that `auth` admits.
    pub fn new(store: S, space: Q, auth: A, limits: Limits) -> Self {
        let sessions = Sessions::new(limits.max_sessions, limits.session_idle);
        Self { store, space, auth, limits, sessions }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Upload sessions in progress.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Drops idle sessions and aborts their writes. Called at every upload
    /// start; the caller may also run it periodically.
    pub async fn expire_sessions(&self) {
        self.expire_sessions_at(Instant::now()).await;
    }

    /// [`expire_sessions`](Self::expire_sessions) as of `now`.
    pub async fn expire_sessions_at(&self, now: Instant) {
        for writer in self.sessions.expire(now) {
            if let Err(e) = writer.abort().await {
                tracing::warn!(error = %e, "registry: aborting an expired upload");
            }
        }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let mut r = match self.dispatch(&parts, body).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(method = %parts.method, path = parts.uri.path(), error = %e, "registry: refused");
                error_response(e)
            }
        };
        r.headers_mut().insert(API_VERSION_HEADER, API_VERSION);
        r
    }

    fn authorize(&self, parts: &Parts, repo: Option<&RepoName>, action: Action) -> Result<(), RegistryError> {
        match self.auth.check(parts, repo, action) {
            Access::Granted => Ok(()),
            Access::Unauthenticated => {
                Err(RegistryError::new(ErrorCode::Unauthorized, "a client certificate is required"))
            }
            Access::Forbidden => {
                let role = match action {
                    Action::Pull => "Viewer",
                    Action::Push => "Member",
                };
                Err(RegistryError::new(ErrorCode::Denied, format!("{action:?} needs role {role} or higher")))
            }
        }
    }

    async fn dispatch<B>(&self, parts: &Parts, body: B) -> Result<Response<ResponseBody>, RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let m = &parts.method;
        let action = if m == Method::GET || m == Method::HEAD { Action::Pull } else { Action::Push };
        let route = match route(parts.uri.path()) {
            Ok(r) => r,
            Err(e) => {
                // Say nothing about names to a caller without a role.
                self.authorize(parts, None, action)?;
                return Err(e);
            }
        };
        self.authorize(parts, route.repo(), action)?;
        let head = m == Method::HEAD;
        match (route, m.clone()) {
            (Route::Base, Method::GET | Method::HEAD) => {
                let mut r = response(StatusCode::OK, if head { empty() } else { full("{}") });
                r.headers_mut().insert(header::CONTENT_TYPE, JSON);
                Ok(r)
            }
            (Route::Blob(_, d), Method::GET | Method::HEAD) => self.get_blob(&digest_param(&d)?, head).await,
            (Route::Uploads(repo), Method::POST) => self.start_upload(parts, &repo, body).await,
            (Route::Upload(repo, id), Method::GET) => self.upload_status(&repo, &id),
            (Route::Upload(repo, id), Method::PATCH) => self.patch_upload(parts, &repo, &id, body).await,
            (Route::Upload(repo, id), Method::PUT) => self.finish_upload(parts, &repo, &id, body).await,
            (Route::Upload(repo, id), Method::DELETE) => self.cancel_upload(&repo, &id).await,
            (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
                self.get_manifest(&repo, &Reference::parse(&r).map_err(name_error)?, head).await
            }
            (Route::Manifest(repo, r), Method::PUT) => {
                self.put_manifest(parts, &repo, Reference::parse(&r).map_err(name_error)?, body).await
            }
            (Route::Tags(repo), Method::GET) => self.tags(parts, &repo).await,
            (_, method) => Err(unsupported(&method)),
        }
    }

    async fn get_blob(&self, digest: &Digest, head: bool) -> Result<Response<ResponseBody>, RegistryError> {
        let unknown = || RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not on this device"));
        let (size, body) = if head {
            (self.store.info(digest).await.map_err(store_error)?.ok_or_else(unknown)?, empty())
        } else {
            let (size, stream) = self.store.reader(digest).await.map_err(store_error)?.ok_or_else(unknown)?;
            let frames = stream.map_ok(Frame::data).map_err(|e| Box::new(e) as BoxError);
            (size, StreamBody::new(frames).boxed_unsync())
        };
        let mut r = response(StatusCode::OK, body);
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        h.insert(header::CONTENT_TYPE, OCTET_STREAM);
        h.insert(CONTENT_DIGEST, header_value(digest.as_str()));
        Ok(r)
    }

    /// `201 Created` for blob `digest` of `repo`.
    fn blob_created(repo: &RepoName, digest: &Digest) -> Response<ResponseBody> {
        let mut r = response(StatusCode::CREATED, empty());
        let h = r.headers_mut();
        h.insert(header::LOCATION, header_value(&format!("/v2/{repo}/blobs/{digest}")));
        h.insert(CONTENT_DIGEST, header_value(digest.as_str()));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        r
    }

    /// A `202`/`204` describing session `id` at `offset`.
    fn session_response(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response<ResponseBody> {
        let mut r = response(status, empty());
        let h = r.headers_mut();
        h.insert(header::LOCATION, upload_location(repo, id));
        h.insert(header::RANGE, range_value(offset));
        h.insert(UPLOAD_UUID, header_value(id));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        r
    }

    /// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload
    /// (`?digest=`), or a new session.
    async fn start_upload<B>(
        &self,
        parts: &Parts,
        repo: &RepoName,
        body: B,
    ) -> Result<Response<ResponseBody>, RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.expire_sessions().await;
        if let Some(mount) = query_param(parts, "mount") {
            if let Some(r) = self.mount(parts, repo, &mount).await? {
                return Ok(r);
            }
        }
        if let Some(d) = query_param(parts, "digest") {
            let digest = digest_param(&d)?;
            let declared = content_length(parts)?;
            self.check_size(0, declared.unwrap_or(0))?;
            quota::ensure(&self.space, declared.unwrap_or(0)).map_err(quota_error)?;
            let mut writer = self.store.writer(&new_ref(), declared).await.map_err(store_error)?;
            if let Err(e) = self.write_body(&mut writer, body).await {
                abort(writer).await;
                return Err(e);
            }
            let size = writer.offset();
            if declared.is_some_and(|d| d != size) {
                abort(writer).await;
                return Err(RegistryError::new(ErrorCode::SizeInvalid, "the body is shorter than Content-Length"));
            }
            writer.commit(&digest, size).await.map_err(store_error)?;
            return Ok(Self::blob_created(repo, &digest));
        }
        // A new session. Nothing fits on a device at its reserve.
        self.sessions.ensure_room().map_err(session_error)?;
        quota::ensure(&self.space, content_length(parts)?.unwrap_or(0).max(1)).map_err(quota_error)?;
        let writer = self.store.writer(&new_ref(), None).await.map_err(store_error)?;
        let session = Session { repo: repo.clone(), writer, last_used: Instant::now() };
        match self.sessions.insert(session) {
            Ok(id) => Ok(Self::session_response(StatusCode::ACCEPTED, repo, &id, 0)),
            Err((e, session)) => {
                abort(session.writer).await;
                Err(session_error(e))
            }
        }
    }

    /// Cross-repository mount: the store is global, so a blob that exists
    /// is mounted (201) if the caller may pull `from`; anything else falls
    /// back to a new session (`None`), as the spec asks.
    async fn mount(
        &self,
        parts: &Parts,
        repo: &RepoName,
        mount: &str,
    ) -> Result<Option<Response<ResponseBody>>, RegistryError> {
        let Ok(digest) = Digest::parse(mount) else {
            return Ok(None);
        };
        if let Some(from) = query_param(parts, "from") {
            let allowed = RepoName::parse(&from).is_ok_and(|f| self.authorize(parts, Some(&f), Action::Pull).is_ok());
            if !allowed {
                return Ok(None);
            }
        }
        Ok(self.store.info(&digest).await.map_err(store_error)?.map(|_| Self::blob_created(repo, &digest)))
    }

    fn upload_status(&self, repo: &RepoName, id: &str) -> Result<Response<ResponseBody>, RegistryError> {
        let mut held = self.sessions.hold(id, repo).map_err(session_error)?;
        let session = held.as_mut().ok_or_else(|| session_error(SessionError::Unknown))?;
        session.last_used = Instant::now();
        Ok(Self::session_response(StatusCode::NO_CONTENT, repo, id, session.writer.offset()))
    }

    /// Refuses a blob that would pass [`Limits::max_blob_bytes`] (413).
    fn check_size(&self, offset: u64, more: u64) -> Result<(), RegistryError> {
        if offset.saturating_add(more) > self.limits.max_blob_bytes {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("blobs are limited to {} bytes", self.limits.max_blob_bytes),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        Ok(())
    }

    /// Writes `body` to `writer`, checking the size cap and the quota
    /// before each piece; returns the bytes written.
    async fn write_body<B>(&self, writer: &mut S::Writer, body: B) -> Result<u64, RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                RegistryError::new(ErrorCode::BlobUploadInvalid, format!("reading the body: {}", e.into()))
            })?;
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers
            };
            let len = data.remaining() as u64;
            if len == 0 {
                continue;
            }
            let offset = writer.offset();
            self.check_size(offset, len)?;
            quota::ensure(&self.space, len).map_err(quota_error)?;
            let bytes = data.copy_to_bytes(data.remaining());
            writer.write(offset, bytes).await.map_err(store_error)?;
            written += len;
        }
        Ok(written)
    }

    /// Writes a request body into the held session, after the
    /// `Content-Range` (416 if not at the session's offset) and quota
    /// checks. Any failure after the first byte aborts the session.
    async fn write_chunk<B>(
        &self,
        parts: &Parts,
        held: &mut Held<S::Writer>,
        id: &str,
        body: B,
    ) -> Result<(), RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let Some(session) = held.as_mut() else {
            return Err(session_error(SessionError::Unknown));
        };
        let offset = session.writer.offset();
        let declared = content_length(parts)?;
        let mut expected = None;
        if let Some(v) = parts.headers.get(header::CONTENT_RANGE) {
            let refuse = |why: &str| {
                RegistryError::new(ErrorCode::BlobUploadInvalid, why.to_owned())
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .with_header(header::LOCATION, upload_location(&session.repo, id))
                    .with_header(header::RANGE, range_value(offset))
                    .with_header(UPLOAD_UUID, header_value(id))
            };
            let (start, end) = content_range(v).ok_or_else(|| refuse("malformed Content-Range"))?;
            if start != offset {
                return Err(refuse(&format!("chunk starts at {start}, the upload is at {offset}")));
            }
            let len = (end - start).checked_add(1).ok_or_else(|| refuse("Content-Range out of range"))?;
            if declared.is_some_and(|d| d != len) {
                return Err(refuse("Content-Range and Content-Length disagree"));
            }
            expected = Some(len);
        }
        let precheck = match declared.or(expected) {
            Some(len) => {
                self.check_size(offset, len).and_then(|()| quota::ensure(&self.space, len).map_err(quota_error))
            }
            None => Ok(()),
        };
        let result = match precheck {
            Ok(()) => self.write_body(&mut session.writer, body).await,
            Err(e) => Err(e),
        };
        session.last_used = Instant::now();
        let result = result.and_then(|written| match expected.or(declared) {
            Some(len) if len != written => Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("{written} bytes arrived, {len} were announced"),
            )),
            _ => Ok(()),
        });
        if result.is_err() {
            if let Some(s) = held.take() {
                self.sessions.remove(id);
                abort(s.writer).await;
            }
        }
        result
    }

    async fn patch_upload<B>(
        &self,
        parts: &Parts,
        repo: &RepoName,
        id: &str,
        body: B,
    ) -> Result<Response<ResponseBody>, RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut held = self.sessions.hold(id, repo).map_err(session_error)?;
        self.write_chunk(parts, &mut held, id, body).await?;
        let offset = held.as_ref().map_or(0, |s| s.writer.offset());
        Ok(Self::session_response(StatusCode::ACCEPTED, repo, id, offset))
    }

    /// `PUT ...?digest=`: the last chunk, if any, then the commit.
    async fn finish_upload<B>(
        &self,
        parts: &Parts,
        repo: &RepoName,
        id: &str,
        body: B,
    ) -> Result<Response<ResponseBody>, RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let digest = query_param(parts, "digest")
            .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "PUT needs ?digest="))
            .and_then(|d| digest_param(&d))?;
        let mut held = self.sessions.hold(id, repo).map_err(session_error)?;
        self.write_chunk(parts, &mut held, id, body).await?;
        let session = held.take().ok_or_else(|| session_error(SessionError::Unknown))?;
        self.sessions.remove(id);
        let size = session.writer.offset();
        session.writer.commit(&digest, size).await.map_err(store_error)?;
        Ok(Self::blob_created(repo, &digest))
    }

    async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<Response<ResponseBody>, RegistryError> {
        let mut held = self.sessions.hold(id, repo).map_err(session_error)?;
        let session = held.take().ok_or_else(|| session_error(SessionError::Unknown))?;
        self.sessions.remove(id);
        abort(session.writer).await;
        Ok(response(StatusCode::NO_CONTENT, empty()))
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        head: bool,
    ) -> Result<Response<ResponseBody>, RegistryError> {
        let m = self.store.get_manifest(repo, reference).await.map_err(store_error)?.ok_or_else(|| {
            RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {repo}:{reference} is not on this device"))
        })?;
        let len = m.bytes.len();
        let mut r = response(StatusCode::OK, if head { empty() } else { full(m.bytes) });
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, header_value(&m.media_type));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(CONTENT_DIGEST, header_value(m.digest.as_str()));
        Ok(r)
    }

    async fn put_manifest<B>(
        &self,
        parts: &Parts,
        repo: &RepoName,
        reference: Reference,
        body: B,
    ) -> Result<Response<ResponseBody>, RegistryError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let max = self.limits.max_manifest_bytes;
        let too_large = || {
            RegistryError::new(ErrorCode::SizeInvalid, format!("manifests are limited to {max} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        };
        if content_length(parts)?.is_some_and(|l| l > max as u64) {
            return Err(too_large());
        }
        let bytes = match Limited::new(body, max).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(e) => return Err(RegistryError::new(ErrorCode::ManifestInvalid, format!("reading the body: {e}"))),
        };
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let checked = manifests::check(content_type, &bytes)
            .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        let digest = Digest::of(&bytes);
        let tag = match reference {
            Reference::Digest(d) if d != digest => {
                return Err(RegistryError::new(ErrorCode::DigestInvalid, format!("the manifest is {digest}, not {d}")))
            }
            Reference::Digest(_) => None,
            Reference::Tag(t) => Some(t),
        };
        for blob in &checked.blobs {
            let size = self.store.info(&blob.digest).await.map_err(store_error)?;
            self.check_referenced(blob, size, "blob")?;
        }
        for child in &checked.children {
            let found = self.store.get_manifest(repo, &Reference::Digest(child.digest.clone())).await;
            let size = found.map_err(store_error)?.map(|m| m.bytes.len() as u64);
            self.check_referenced(child, size, "manifest")?;
        }
        quota::ensure(&self.space, bytes.len() as u64).map_err(quota_error)?;
        let manifest = StoredManifest { media_type: checked.media_type.to_owned(), digest: digest.clone(), bytes };
        self.store.put_manifest(repo, tag.as_ref(), manifest).await.map_err(store_error)?;
        let mut r = response(StatusCode::CREATED, empty());
        let h = r.headers_mut();
        h.insert(header::LOCATION, header_value(&format!("/v2/{repo}/manifests/{digest}")));
        h.insert(CONTENT_DIGEST, header_value(digest.as_str()));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        Ok(r)
    }

    fn check_referenced(&self, r: &manifests::Referenced, found: Option<u64>, what: &str) -> Result<(), RegistryError> {
        match found {
            None => Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("the manifest references {what} {}, which is not on this device", r.digest),
            )),
            Some(size) if size != r.size => Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("the manifest says {what} {} has {} bytes, it has {size}", r.digest, r.size),
            )),
            Some(_) => Ok(()),
        }
    }

    /// `GET /v2/<name>/tags/list[?n=<n>&last=<tag>]`, with a `Link` to the
    /// next page when one was cut short.
    async fn tags(&self, parts: &Parts, repo: &RepoName) -> Result<Response<ResponseBody>, RegistryError> {
        let all = self.store.tags(repo).await.map_err(store_error)?;
        let n = match query_param(parts, "n") {
            Some(n) => n.parse::<usize>().map_err(|_| {
                RegistryError::new(ErrorCode::Unsupported, "n must be a number").with_status(StatusCode::BAD_REQUEST)
            })?,
            None => self.limits.max_tags_page,
        }
        .min(self.limits.max_tags_page);
        let last = query_param(parts, "last");
        let mut after: Vec<String> =
            all.into_iter().filter(|t| last.as_ref().is_none_or(|l| t.as_str() > l.as_str())).collect();
        let more = after.len() > n;
        after.truncate(n);
        let body = serde_json::json!({ "name": repo.as_str(), "tags": after }).to_string();
        let mut r = response(StatusCode::OK, full(body));
        r.headers_mut().insert(header::CONTENT_TYPE, JSON);
        if let (true, Some(l)) = (more, after.last()) {
            let link = format!("</v2/{repo}/tags/list?n={n}&last={l}>; rel=\"next\"");
            r.headers_mut().insert(header::LINK, header_value(&link));
        }
        Ok(r)
    }
}

/// A fresh content-store ref for one upload.
fn new_ref() -> String {
    format!("wendy-registry-{:032x}", rand::random::<u128>())
}

async fn abort<W: BlobWriter>(writer: W) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "registry: aborting an upload");
    }
}
