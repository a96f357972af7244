//! The OCI push client `wendy run` uses: an [`oci_layout::Plan`] to the
//! device's registry over mTLS (decision 0103).
//!
//! One HTTP/1.1 connection (hyper's client connection over the same
//! rustls config as the CLI's mTLS gRPC calls, [`crate::device::mtls_config`],
//! with ALPN `http/1.1`), opened again if the registry closes it. What it
//! sends is the OCI distribution spec's push:
//!
//! 1. `HEAD /v2/<name>/blobs/<digest>` for every blob; a 200 is skipped;
//! 2. for each missing blob, `POST /v2/<name>/blobs/uploads/`, then one
//!    `PUT <Location>?digest=<digest>` with the file streamed as the body
//!    (never loaded whole; [`CHUNK_BYTES`] at a time), counted on a
//!    progress bar (bytes, throughput); it fails once it has made no
//!    progress and had no answer for the call timeout;
//! 3. an index's child manifests by digest, then `PUT
//!    /v2/<name>/manifests/<tag>` with the manifest's media type.
//!
//! A refusal carries the registry's JSON error (`{"errors":[{"code",
//! "message"}]}`), which [`PushError::into_cli`] shows: 401 is a
//! credentials error, 403 a role error (exit 5), 507 the device's space
//! reserve.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use indicatif::{ProgressBar, ProgressStyle};
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;
use wendy_net::connect::{DialError, TlsConnector, CALL_TIMEOUT};

use crate::addr::HostPort;
use crate::connect::DEVICE_SERVER_NAME;
use crate::error::{sanitize, CliError, Hints};
use crate::oci_layout::{Blob, Manifest, Plan};

/// Bytes read from a blob file per body frame.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The most bytes of a response body read (error bodies, answers).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The body of every request.
type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// TCP or the TLS handshake failed.
    #[error("{0}")]
    Dial(DialError),
    /// The HTTP exchange failed (connection reset, malformed answer).
    #[error("{what}: {source}")]
    Http {
        /// What was being done.
        what: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The registry did not answer, or an upload made no progress, for
    /// [`CALL_TIMEOUT`].
    #[error("{what}: no answer or progress within {}s", CALL_TIMEOUT.as_secs())]
    Timeout {
        /// What was being done.
        what: String,
    },
    /// The registry refused, with its error code and message.
    #[error("{what}: the registry answered {status} {code}: {message}")]
    Refused {
        /// What was being done.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The spec's error code (`DENIED`, `DIGEST_INVALID`, ...), or the
        /// status's reason when the body had none.
        code: String,
        /// The registry's message.
        message: String,
    },
    /// An answer the spec does not allow (an upload without `Location`).
    #[error("{what}: {reason}")]
    Protocol {
        /// What was being done.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A blob file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl PushError {
    /// The CLI error for this failure when pushing to the registry at
    /// `addr`; `hints` give the role advice.
    pub fn into_cli(self, addr: &HostPort, hints: &Hints) -> CliError {
        let context = || format!("pushing to the registry of the device at {addr}");
        match self {
            Self::Dial(e) => match crate::cloud::dial("device registry", addr, &e) {
                CliError::Unreachable { what, addr, reason, .. } => CliError::Unreachable {
                    what,
                    addr,
                    reason,
                    hint: Some(
                        "the registry answers once the device is provisioned and runs containerd; check `wendy device version --json` lists `containers`".into(),
                    ),
                },
                other => other,
            },
            Self::Refused { status: 401, code, message, what } => CliError::Unauthenticated {
                context: context(),
                message: format!("{what}: {code}: {message}"),
                hint: hints.auth.clone(),
            },
            Self::Refused { status: 403, code, message, what } => CliError::PermissionDenied {
                context: context(),
                message: format!("{what}: {code}: {message}"),
                hint: hints.permission.clone(),
            },
            Self::Refused { status: 507, code, message, what } => CliError::Remote {
                context: context(),
                message: format!("{what}: {code}: {message}"),
                hint: Some("the device keeps a space reserve on its data partition; remove apps it no longer needs (`wendy apps rm`)".into()),
            },
            other => CliError::Remote { context: context(), message: other.to_string(), hint: None },
        }
    }
}

/// What a push did.
#[derive(Clone, Debug, PartialEq)]
pub struct Pushed {
    /// The tagged manifest's digest.
    pub digest: String,
    /// Bytes sent: the blobs the registry lacked, and the manifests.
    pub pushed_bytes: u64,
    /// Blobs the registry had already.
    pub skipped_blobs: usize,
    /// Wall time of the push.
    pub seconds: f64,
}

/// A client of one registry over mTLS.
pub struct RegistryClient {
    addr: HostPort,
    connector: TlsConnector,
    sender: Option<SendRequest<ReqBody>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry at `addr` with `config` (the device's mTLS
    /// config; its ALPN is set to `http/1.1` here).
    pub fn new(addr: HostPort, mut config: rustls::ClientConfig) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(DEVICE_SERVER_NAME.to_owned())
            .unwrap_or_else(|_| ServerName::try_from("wendy.invalid").expect("constant is a valid DNS name"));
        Self { addr, connector: TlsConnector::new(Arc::new(config), server_name), sender: None }
    }

    async fn connect(&mut self, what: &str) -> Result<&mut SendRequest<ReqBody>, PushError> {
        let uri: Uri = self.addr.uri().parse().map_err(|_| PushError::Dial(DialError::BadUri))?;
        let io = tower::Service::call(&mut self.connector, uri).await.map_err(PushError::Dial)?;
        let (sender, conn) =
            http1::handshake(io).await.map_err(|source| PushError::Http { what: what.to_owned(), source })?;
        tokio::spawn(async move {
            // The connection's end is seen by the next request.
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends `req` on the open connection, or a new one if the registry
    /// closed it.
    async fn send(&mut self, what: &str, req: Request<ReqBody>) -> Result<Response<Incoming>, PushError> {
        let reusable = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        let sender = match self.sender.as_mut() {
            Some(s) if reusable => s,
            _ => self.connect(what).await?,
        };
        sender.send_request(req).await.map_err(|source| PushError::Http { what: what.to_owned(), source })
    }

    /// [`Self::send`] within [`CALL_TIMEOUT`], for requests without a
    /// large body.
    async fn call(&mut self, what: &str, req: Request<ReqBody>) -> Result<Response<Incoming>, PushError> {
        tokio::time::timeout(CALL_TIMEOUT, self.send(what, req))
            .await
            .map_err(|_| PushError::Timeout { what: what.to_owned() })?
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::USER_AGENT, HeaderValue::from_static(concat!("wendy/", env!("CARGO_PKG_VERSION"))))
    }

    /// [`Self::send`] of a streamed upload: it may take as long as it
    /// makes progress, but fails once `pb` (which the body counts) has not
    /// moved for [`CALL_TIMEOUT`] and no answer came.
    async fn send_watched(
        &mut self,
        what: &str,
        req: Request<ReqBody>,
        pb: &ProgressBar,
    ) -> Result<Response<Incoming>, PushError> {
        let send = self.send(what, req);
        tokio::pin!(send);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + CALL_TIMEOUT, CALL_TIMEOUT);
        let mut last = pb.position();
        loop {
            tokio::select! {
                result = &mut send => return result,
                _ = ticks.tick() => {
                    let now = pb.position();
                    if now == last {
                        return Err(PushError::Timeout { what: what.to_owned() });
                    }
                    last = now;
                }
            }
        }
    }

    /// Whether the registry has blob `digest` in `repo`.
    pub async fn blob_exists(&mut self, repo: &str, digest: &str) -> Result<bool, PushError> {
        let what = format!("checking blob {}", short(digest));
        let req = build(self.request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")), empty())?;
        let resp = self.call(&what, req).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(refused(what, resp).await),
        }
    }

    /// Uploads `blob` to `repo`: a session, then one `PUT` streaming the
    /// file; `pb` counts the bytes as they are read.
    pub async fn upload(&mut self, repo: &str, blob: &Blob, pb: &ProgressBar) -> Result<(), PushError> {
        let what = format!("uploading blob {}", short(&blob.digest));
        let req = build(
            self.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).header(header::CONTENT_LENGTH, 0),
            empty(),
        )?;
        let resp = self.call(&what, req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(refused(what, resp).await);
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| PushError::Protocol { what: what.clone(), reason: "202 without a Location".into() })?;
        let target = upload_target(location, &blob.digest)
            .map_err(|reason| PushError::Protocol { what: what.clone(), reason })?;
        drain(resp).await;
        let file = tokio::fs::File::open(&blob.path)
            .await
            .map_err(|source| PushError::Io { path: blob.path.clone(), source })?;
        let body = file_body(file, pb.clone());
        let req = build(
            self.request(Method::PUT, &target)
                .header(header::CONTENT_LENGTH, blob.size)
                .header(header::CONTENT_TYPE, "application/octet-stream"),
            body,
        )?;
        let resp = self.send_watched(&what, req, pb).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(refused(what, resp).await);
        }
        drain(resp).await;
        Ok(())
    }

    /// Stores `manifest` in `repo` under `reference` (a tag or its digest).
    pub async fn put_manifest(&mut self, repo: &str, reference: &str, manifest: &Manifest) -> Result<(), PushError> {
        let what =
            format!("storing manifest {}", if reference.starts_with("sha256:") { short(reference) } else { reference });
        let req = build(
            self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
                .header(header::CONTENT_LENGTH, manifest.bytes.len())
                .header(header::CONTENT_TYPE, manifest.media_type.as_str()),
            Full::new(Bytes::from(manifest.bytes.clone())).map_err(|never| match never {}).boxed_unsync(),
        )?;
        let resp = self.call(&what, req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(refused(what, resp).await);
        }
        drain(resp).await;
        Ok(())
    }
}

/// Pushes `plan` to `repo:tag` through `client`; `progress` draws a bar
/// (bytes, throughput) on stderr when it is a terminal.
pub async fn push(
    client: &mut RegistryClient,
    repo: &str,
    tag: &str,
    plan: &Plan,
    progress: bool,
) -> Result<Pushed, PushError> {
    let start = Instant::now();
    let mut missing = Vec::new();
    for blob in &plan.blobs {
        if !client.blob_exists(repo, &blob.digest).await? {
            missing.push(blob);
        }
    }
    let total: u64 = missing.iter().map(|b| b.size).sum();
    let pb = bar(progress, total, format!("pushing {repo}:{tag}"));
    for blob in &missing {
        if let Err(e) = client.upload(repo, blob, &pb).await {
            pb.abandon();
            return Err(e);
        }
    }
    pb.finish_and_clear();
    let mut manifest_bytes = 0;
    for child in &plan.children {
        client.put_manifest(repo, &child.digest, child).await?;
        manifest_bytes += child.bytes.len() as u64;
    }
    client.put_manifest(repo, tag, &plan.top).await?;
    manifest_bytes += plan.top.bytes.len() as u64;
    Ok(Pushed {
        digest: plan.top.digest.clone(),
        pushed_bytes: total + manifest_bytes,
        skipped_blobs: plan.blobs.len() - missing.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A byte progress bar on stderr, hidden unless `show` (indicatif also
/// hides it when stderr is not a terminal).
fn bar(show: bool, total: u64, message: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn build(builder: http::request::Builder, body: ReqBody) -> Result<Request<ReqBody>, PushError> {
    builder.body(body).map_err(|e| PushError::Protocol { what: "building a request".into(), reason: e.to_string() })
}

/// A body that reads `file` [`CHUNK_BYTES`] at a time, counting on `pb`.
fn file_body(file: tokio::fs::File, pb: ProgressBar) -> ReqBody {
    let chunks = futures::stream::try_unfold((file, pb), |(mut file, pb)| async move {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        pb.inc(n as u64);
        Ok(Some((Frame::data(buf.freeze()), (file, pb))))
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// The `PUT` target for finishing an upload: `Location`'s path and query
/// (an absolute URL is cut to them) with `digest=` added.
pub fn upload_target(location: &str, digest: &str) -> Result<String, String> {
    let path = match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).ok_or("Location has no path")?,
        None => location,
    };
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'#') {
        return Err(format!("Location {:?} is not a usable path", sanitize(location)));
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    Ok(format!("{path}{sep}digest={}", digest.replace(':', "%3A")))
}

/// The spec's error body, `{"errors":[{"code","message"}]}`: the first
/// error's code and message, or the status's reason when there is none.
pub fn error_of(status: StatusCode, body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let reason = || status.canonical_reason().unwrap_or("error").to_owned();
    match serde_json::from_slice::<Body>(body).ok().and_then(|b| b.errors.into_iter().next()) {
        Some(e) => {
            let code = if e.code.is_empty() { reason() } else { sanitize(&e.code) };
            (code, sanitize(&e.message))
        }
        None => (reason(), sanitize(&String::from_utf8_lossy(body))),
    }
}

/// The refusal in `resp`, its body read up to [`MAX_RESPONSE_BYTES`].
async fn refused(what: String, resp: Response<Incoming>) -> PushError {
    let status = resp.status();
    let body = match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (code, message) = error_of(status, &body);
    PushError::Refused { what, status: status.as_u16(), code, message }
}

/// Reads and drops a (small) answer's body, so the connection can carry
/// the next request.
async fn drain(resp: Response<Incoming>) {
    let _ = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await;
}

/// A digest cut for messages: `sha256:` and 12 hex digits.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn upload_targets() {
        assert_eq!(
            upload_target("/v2/wendy/hello/blobs/uploads/abc", D).unwrap(),
            format!("/v2/wendy/hello/blobs/uploads/abc?digest=sha256%3A{}", &D[7..])
        );
        assert_eq!(
            upload_target("https://10.0.0.2:5000/v2/x/blobs/uploads/u?state=s", D).unwrap(),
            format!("/v2/x/blobs/uploads/u?state=s&digest=sha256%3A{}", &D[7..])
        );
        assert!(upload_target("https://h", D).is_err());
        assert!(upload_target("relative/path", D).is_err());
        assert!(upload_target("/a b", D).is_err());
        assert!(upload_target("/a\r\nX: y", D).is_err());
    }

    #[test]
    fn registry_errors_are_read() {
        let body =
            br#"{"errors":[{"code":"DENIED","message":"the data partition would go below its reserve","detail":{}}]}"#;
        assert_eq!(
            error_of(StatusCode::INSUFFICIENT_STORAGE, body),
            ("DENIED".into(), "the data partition would go below its reserve".into())
        );
        assert_eq!(error_of(StatusCode::FORBIDDEN, b"nope\x1b[31m"), ("Forbidden".into(), "nope[31m".into()));
        assert_eq!(error_of(StatusCode::FORBIDDEN, br#"{"errors":[]}"#).0, "Forbidden");
    }

    #[test]
    fn refusals_map_to_exit_codes() {
        use crate::error::Exit;
        let addr = HostPort::parse("127.0.0.1:5000", 5000).unwrap();
        let refused = |status| PushError::Refused {
            what: "storing manifest 1.0".into(),
            status,
            code: "DENIED".into(),
            message: "requires role Member".into(),
        };
        let h = Hints { permission: Some("ask an Owner".into()), ..Default::default() };
        let e = refused(403).into_cli(&addr, &h);
        assert_eq!(e.exit(), Exit::PermissionDenied);
        assert!(e.to_string().contains("requires role Member") && e.to_string().ends_with("ask an Owner"), "{e}");
        assert_eq!(refused(401).into_cli(&addr, &h).exit(), Exit::Auth);
        let e = refused(507).into_cli(&addr, &h);
        assert_eq!(e.exit(), Exit::Generic);
        assert!(e.to_string().contains("DENIED") && e.to_string().contains("reserve"), "{e}");
        let e = PushError::Dial(DialError::Tcp(std::io::ErrorKind::ConnectionRefused.into())).into_cli(&addr, &h);
        assert_eq!(e.exit(), Exit::Unreachable);
        assert!(e.to_string().contains("containers"), "{e}");
    }

    #[tokio::test]
    async fn file_bodies_stream_in_chunks_and_count() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("blob");
        let data: Vec<u8> = (0..(CHUNK_BYTES * 2 + 7)).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let pb = ProgressBar::hidden();
        let mut body = file_body(tokio::fs::File::open(&path).await.unwrap(), pb.clone());
        let mut frames = 0;
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let bytes = frame.unwrap().into_data().unwrap();
            assert!(bytes.len() <= CHUNK_BYTES);
            got.extend_from_slice(&bytes);
            frames += 1;
        }
        assert_eq!(got, data);
        assert!(frames >= 3);
        assert_eq!(pb.position(), data.len() as u64);
    }
}
