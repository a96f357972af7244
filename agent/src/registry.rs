//! The on-device OCI registry (feature `apps`, in progress): the protocol
//! core that `wendy run` pushes images through (issue 14, design "OCI
//! registry for apps").
//!
//! This is the request handling only, independent of transport and
//! storage: [`handler::Registry::handle`] takes an `http::Request` and
//! answers an `http::Response`, so the caller serves it behind the agent's
//! mTLS acceptor on `WENDY_REGISTRY_PORT`; the bytes go to a
//! [`store::ContentStore`], which on the device is containerd's content
//! store (no second copy).
//!
//! What it implements of the OCI distribution spec is what push and pull
//! need: `GET /v2/`; blob `HEAD`/`GET`; uploads (monolithic `POST
//! ?digest=`, sessions with chunked `PATCH` and a final `PUT ?digest=`,
//! status `GET`, cancel `DELETE`, cross-repository `mount=`); manifest
//! `HEAD`/`GET`/`PUT` for OCI image manifests and indexes and Docker v2
//! schema2 manifests and lists; `tags/list`. Deletion answers 405
//! `UNSUPPORTED`: images are removed through the container service.
//!
//! What it refuses, before anything is stored:
//! - a name, tag or digest outside the spec's grammar, or any digest but
//!   `sha256` ([`names`], [`digest`]);
//! - a blob whose bytes do not match its digest: `DIGEST_INVALID`, and the
//!   partial blob is removed ([`store::BlobWriter::commit`]);
//! - a manifest whose blobs or child manifests are missing
//!   (`MANIFEST_BLOB_UNKNOWN`), malformed or of another type
//!   (`MANIFEST_INVALID`), or larger than [`manifests::MAX_MANIFEST_BYTES`]
//!   (413 `SIZE_INVALID`) ([`manifests`]);
//! - bytes that would take the data partition below its reserve: 507
//!   `DENIED`, checked before each piece is written ([`quota`]);
//! - more than [`Limits::max_sessions`] uploads at once (429
//!   `TOOMANYREQUESTS`); idle sessions expire ([`uploads`]);
//! - a caller without the role: [`Authorize`] maps [`Action::Pull`] and
//!   [`Action::Push`] onto roles (Viewer pulls, Member pushes); 401
//!   `UNAUTHORIZED` without an identity, 403 `DENIED` without the role.
//!
//! Modules, one concern each:
//! - [`digest`]: `sha256:` digests and hashing;
//! - [`names`]: repository names, tags, references;
//! - [`errors`]: the spec's error codes and JSON error body;
//! - [`store`]: the storage trait and how it maps onto containerd;
//! - [`quota`]: the space check;
//! - [`uploads`]: the upload session table;
//! - [`manifests`]: checking a pushed manifest;
//! - [`handler`]: routing and the endpoints;
//! - [`serve`]: the device's HTTPS listener with client certificates.

pub mod digest;
pub mod errors;
pub mod handler;
pub mod manifests;
pub mod names;
pub mod quota;
pub mod serve;
pub mod store;
pub mod uploads;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use handler::Registry;
use names::RepoName;

/// The largest blob accepted by default (the quota usually bites first).
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// The most tags one `tags/list` answer carries by default.
pub const DEFAULT_MAX_TAGS_PAGE: usize = 1000;

/// What a request does to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read: `GET`/`HEAD` of blobs, manifests, tags, `/v2/`.
    Pull,
    /// Write: uploads and manifest `PUT`.
    Push,
}

/// The caller's verdict on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Go ahead.
    Granted,
    /// No identity (401 `UNAUTHORIZED`).
    Unauthenticated,
    /// An identity without the role (403 `DENIED`).
    Forbidden,
}

/// The role check, supplied by the caller (which knows the peer's
/// certificate, e.g. from the request's extensions).
pub trait Authorize: Send + Sync + 'static {
    /// May this request do `action` to `repo` (`None` for `/v2/`)?
    fn check(&self, request: &http::request::Parts, repo: Option<&RepoName>, action: Action) -> Access;
}

/// The registry's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest manifest body.
    pub max_manifest_bytes: usize,
    /// The largest blob.
    pub max_blob_bytes: u64,
    /// Concurrent upload sessions.
    pub max_sessions: usize,
    /// A session without a request for this long is dropped.
    pub session_idle: Duration,
    /// The most tags per `tags/list` answer.
    pub max_tags_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: manifests::MAX_MANIFEST_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_sessions: uploads::DEFAULT_MAX_SESSIONS,
            session_idle: uploads::DEFAULT_IDLE,
            max_tags_page: DEFAULT_MAX_TAGS_PAGE,
        }
    }
}
