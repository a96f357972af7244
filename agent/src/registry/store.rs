//! Where the registry keeps its bytes: the [`ContentStore`] trait.
//!
//! The trait is shaped after containerd's content service
//! (`containerd.services.content.v1.Content`) and images service, which the
//! real implementation calls over gRPC in namespace `wendy`:
//!
//! | trait                          | containerd                                                |
//! |--------------------------------|-----------------------------------------------------------|
//! | [`ContentStore::info`]         | `Content/Info` (`NotFound` → `None`)                      |
//! | [`ContentStore::reader`]       | `Content/Read` (a stream of `ReadContentResponse.data`)   |
//! | [`ContentStore::writer`]       | `Content/Write` opened with `ref` = the upload session's id, `total` if known; the first `STAT` returns the committed offset |
//! | [`BlobWriter::write`]          | `WriteContentRequest{action: WRITE, offset, data}`; `WriteContentResponse.offset` is the new committed offset |
//! | [`BlobWriter::commit`]         | `WriteContentRequest{action: COMMIT, expected, total}`: containerd verifies digest and size and either moves the data under the digest or fails; on failure the implementation calls `Content/Abort(ref)` so nothing partial stays. `AlreadyExists` is success |
//! | [`BlobWriter::abort`]          | `Content/Abort(ref)`                                      |
//! | [`ContentStore::put_manifest`] | the manifest bytes written as content (as a blob, with `containerd.io/gc.ref.content.*` labels naming config, layers or children), then `Images/Create`/`Update` of `<repo>:<tag>` with target `{media_type, digest, size}` |
//! | [`ContentStore::get_manifest`] | a tag: `Images/Get` → target → `Content/Read`; a digest: `Content/Read` |
//! | [`ContentStore::tags`]         | `Images/List` filtered on `name~="^<repo>:"`              |
//!
//! The real implementation should run each upload under a containerd lease
//! (`Leases/Create`, gRPC metadata `containerd-lease`), so its blobs are not
//! garbage-collected between the blob upload and the manifest that roots
//! them.
//!
//! Blobs are global to the store (containerd's content store is one per
//! namespace); manifests and tags belong to a repository.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use super::digest::Digest;
use super::names::{Reference, RepoName, Tag};

/// A blob's bytes, in pieces.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// Why the content store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A write not at the committed offset (containerd: `OutOfRange`).
    #[error("write at offset {offset}, but {committed} bytes are committed")]
    Offset {
        /// The offset asked for.
        offset: u64,
        /// The committed offset.
        committed: u64,
    },
    /// The written bytes do not hash to the expected digest. The partial
    /// data is gone.
    #[error("content is {actual}, expected {expected}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes are.
        actual: Digest,
    },
    /// The written bytes are not the expected size. The partial data is
    /// gone.
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// What the client said.
        expected: u64,
        /// What was written.
        actual: u64,
    },
    /// The store itself failed (I/O, containerd unreachable).
    #[error("content store: {0}")]
    Backend(String),
}

/// A manifest as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredManifest {
    /// Its media type (`Content-Type` when served).
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: Digest,
    /// The manifest, exactly as pushed.
    pub bytes: Bytes,
}

/// One upload in progress (containerd: one `Write` ref). Writes are
/// sequential: each starts at [`offset`](Self::offset).
pub trait BlobWriter: Send + 'static {
    /// Bytes committed so far.
    fn offset(&self) -> u64;

    /// Writes `data` at `offset`, which must equal [`offset`](Self::offset)
    /// ([`StoreError::Offset`] otherwise); returns the new offset.
    fn write(&mut self, offset: u64, data: Bytes) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Verifies that the bytes are `size` long and hash to `expected`, and
    /// makes them visible as that blob. On any error the partial bytes are
    /// removed. Content that is already present is success.
    fn commit(self, expected: &Digest, size: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops the upload and every byte of it.
    fn abort(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Blob and manifest storage for the registry.
pub trait ContentStore: Send + Sync + 'static {
    /// An upload in progress.
    type Writer: BlobWriter;

    /// The size of a committed blob, or `None` if absent.
    fn info(&self, digest: &Digest) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// A committed blob's size and bytes, or `None` if absent.
    fn reader(&self, digest: &Digest) -> impl Future<Output = Result<Option<(u64, BlobStream)>, StoreError>> + Send;

    /// Opens an upload named `upload_ref` (unique per session); `total` is
    /// the declared size if the client gave one.
    fn writer(
        &self,
        upload_ref: &str,
        total: Option<u64>,
    ) -> impl Future<Output = Result<Self::Writer, StoreError>> + Send;

    /// Stores a manifest in `repo` under its digest and, with `tag`, points
    /// the tag at it. The handler has checked it and everything it
    /// references.
    fn put_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        manifest: StoredManifest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A manifest of `repo` by tag or digest, or `None`.
    fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> impl Future<Output = Result<Option<StoredManifest>, StoreError>> + Send;

    /// The tags of `repo`, sorted; empty if none.
    fn tags(&self, repo: &RepoName) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}
