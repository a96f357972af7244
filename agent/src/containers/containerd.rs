//! The one place the agent talks to containerd: the connection (a Unix
//! socket, [`socket_path`]), the namespace every call runs in
//! ([`NAMESPACE`]), and [`ContainerdStore`], the registry's
//! [`ContentStore`] over containerd's content, images and leases services,
//! so a pushed image lands in containerd's own store (no second copy).
//!
//! Every request carries the gRPC metadata `containerd-namespace: wendy`;
//! writes made for an upload also carry `containerd-lease: <id>`.
//!
//! How the trait maps onto containerd (see also [`crate::registry::store`]):
//!
//! | trait                          | containerd calls |
//! |--------------------------------|------------------|
//! | [`ContentStore::info`]         | `Content/Info`; `NotFound` → `None` |
//! | [`ContentStore::reader`]       | `Content/Info` (size), then the `Content/Read` stream |
//! | [`ContentStore::writer`]       | `Leases/Create` (the upload's lease), then a `Content/Write` stream opened with `STAT{ref, total}` under that lease |
//! | [`BlobWriter::write`]          | `WRITE{offset, data}` on the open stream, in pieces of at most [`WRITE_CHUNK`] bytes; each answer's `offset` is the new committed offset |
//! | [`BlobWriter::commit`]         | `STAT` (containerd's size and digest of the bytes so far; a mismatch aborts and is [`StoreError::SizeMismatch`]/[`StoreError::DigestMismatch`]), then `COMMIT{offset, total, expected}`; `AlreadyExists` is success (the existing blob is added to the lease). Then the blob's lease: `Leases/Create` labelled [`LABEL_UPLOAD`]`=<digest>`, `Leases/AddResource` of the blob, `Leases/Delete` of the upload's lease. Any failure before that: `Content/Abort(ref)` and `Leases/Delete` |
//! | [`BlobWriter::abort`]          | the stream closed, `Content/Abort(ref)`, `Leases/Delete` |
//! | [`ContentStore::put_manifest`] | `Leases/Create`, `Leases/AddResource` for every blob and child it references, the bytes written as content with `containerd.io/gc.ref.content.{config,l.<i>,m.<i>}` labels (`Content/Update` of those labels if it already existed), `Images/Create` (on `AlreadyExists`: `Images/Update`) of `<repo>:<tag>`, or `<repo>@<digest>` when pushed by digest; once the image exists, `Leases/List labels."sh.wendy.upload"=="<digest>"` for every referenced digest and `Leases/Delete` of each lease found; then `Leases/Delete` of the push's lease |
//! | [`ContentStore::get_manifest`] | a tag: `Images/Get <repo>:<tag>` → target → `Content/Read`; a digest: `Images/List name~="^<repo>[:@]"`, the image whose target is that digest → `Content/Read` |
//! | [`ContentStore::tags`]         | `Images/List name~="^<repo>:"`, the part after the `:` |
//!
//! Leases: containerd's garbage collector removes content that nothing
//! roots. A blob is rooted by an image only once a manifest that references
//! it is pushed, which may be long after its upload, so each upload holds
//! its own lease, labelled `containerd.io/gc.expire` at
//! [`DEFAULT_UPLOAD_LEASE`] (24 h, [`ContainerdStore::with_upload_lease`])
//! from its creation:
//! - the upload's lease is created when the upload opens (it holds the
//!   partial bytes) and deleted at once when the upload is aborted or its
//!   commit fails;
//! - after a successful commit the blob moves to a lease of its own,
//!   labelled [`LABEL_UPLOAD`]`=<digest>` (a lease cannot be relabelled,
//!   and a chunked upload learns its digest only at the end), and the
//!   upload's lease is deleted. Should that fail, the upload's lease keeps
//!   the blob instead (logged; it only means the blob is not released
//!   early). The same blob uploaded twice, even at once, gets two such
//!   leases;
//! - once a manifest that references the blob is stored and its image
//!   exists ([`ContentStore::put_manifest`]), every lease labelled with
//!   the digest of its config, a layer or a child is deleted, so the image
//!   alone roots the blob and deleting the image frees it. A failure there
//!   is logged, not returned: the push succeeded and the lease expires
//!   anyway. A lease taken by an upload that commits while the manifest
//!   is being stored may survive it, until it expires;
//! - a blob no manifest ever references is collected once its lease
//!   expires. The expiry also bounds what a crash leaves behind:
//!   containerd drops an expired lease by itself.
//!
//! A manifest push runs under a second, short lease ([`MANIFEST_LEASE`],
//! deleted as soon as the image exists): it holds the manifest bytes and
//! every blob and child they reference from the moment they are checked
//! until the image roots them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image, Info, InfoRequest, ListImagesRequest,
    ListRequest as ListLeasesRequest, ReadContentRequest, Resource, UpdateImageRequest, UpdateRequest, WriteAction,
    WriteContentRequest, WriteContentResponse,
};
use containerd_client::types::Descriptor;
use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::registry::digest::Digest;
use crate::registry::manifests::{self, MAX_MANIFEST_BYTES};
use crate::registry::names::{Reference, RepoName, Tag};
use crate::registry::store::{BlobStream, BlobWriter, ContentStore, StoreError, StoredManifest};

/// containerd's socket when `WENDY_CONTAINERD_SOCKET` is unset.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// The environment variable that overrides [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "WENDY_CONTAINERD_SOCKET";

/// The containerd namespace of everything the agent does.
pub const NAMESPACE: &str = "wendy";

/// The gRPC metadata key naming the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The gRPC metadata key naming the lease a call runs under.
pub const LEASE_HEADER: &str = "containerd-lease";

/// How long an upload's lease protects its blob (see the module docs).
pub const DEFAULT_UPLOAD_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// The label of a committed blob's lease: the blob's digest, by which a
/// manifest push finds the leases to release (see the module docs).
pub const LABEL_UPLOAD: &str = "sh.wendy.upload";

/// The expiry of a manifest push's lease, a backstop should the agent die
/// before deleting it.
pub const MANIFEST_LEASE: Duration = Duration::from_secs(60 * 60);

/// The largest piece of a blob sent in one `WriteContentRequest` (the gRPC
/// message limits are 4 MiB by default).
pub const WRITE_CHUNK: usize = 1024 * 1024;

/// containerd's lease label that sets an expiry (RFC 3339, UTC).
const GC_EXPIRE: &str = "containerd.io/gc.expire";

/// The prefix of containerd's labels that root other content.
const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";

/// The socket to use: `$WENDY_CONTAINERD_SOCKET` if set and not empty, else
/// [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    std::env::var_os(SOCKET_ENV).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Why a containerd call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerdError {
    /// The socket cannot be reached.
    #[error("cannot connect to containerd at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call was refused or failed.
    #[error("containerd {call}: {} ({:?})", status.message(), status.code())]
    Call {
        /// The service method, e.g. `Content/Write`.
        call: &'static str,
        /// containerd's answer.
        status: Status,
    },
    /// containerd answered something this client cannot use.
    #[error("containerd {call}: unexpected answer: {detail}")]
    Protocol {
        /// The service method.
        call: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl ContainerdError {
    fn call(call: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| Self::Call { call, status }
    }

    fn protocol(call: &'static str, detail: impl Into<String>) -> Self {
        Self::Protocol { call, detail: detail.into() }
    }

    /// containerd's status code, if containerd answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

impl From<ContainerdError> for StoreError {
    fn from(e: ContainerdError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// `Ok(None)` for `NotFound`.
fn not_found_is_none<T>(r: Result<T, ContainerdError>) -> Result<Option<T>, ContainerdError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(Code::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A size from containerd (an `int64`) as bytes.
fn size_of(call: &'static str, size: i64) -> Result<u64, ContainerdError> {
    u64::try_from(size).map_err(|_| ContainerdError::protocol(call, format!("negative size {size}")))
}

/// A size for containerd (an `int64`).
fn to_i64(call: &'static str, size: u64) -> Result<i64, ContainerdError> {
    i64::try_from(size).map_err(|_| ContainerdError::protocol(call, format!("size {size} is out of range")))
}

/// `now + ttl` as RFC 3339 UTC, the format of `containerd.io/gc.expire`.
pub fn expiry(ttl: Duration) -> String {
    rfc3339(SystemTime::now() + ttl)
}

/// `t` as RFC 3339 UTC, to the second (the format of
/// `containerd.io/gc.expire`).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A fresh ref for content the store writes itself (manifests).
fn new_ref(kind: &str) -> String {
    format!("wendy-registry-{kind}-{:032x}", rand::random::<u128>())
}

/// A regular expression matching `repo` literally: repository names are
/// `[a-z0-9._/-]`, of which only `.` is special (written `[.]`, so no
/// backslash has to survive containerd's filter quoting).
fn repo_regex(repo: &RepoName) -> String {
    repo.as_str().replace('.', "[.]")
}

/// The `containerd.io/gc.ref.content.*` labels of a manifest: its config,
/// layers and child manifests, so containerd's collector keeps them while
/// the manifest is rooted.
fn gc_labels(manifest: &StoredManifest) -> Result<HashMap<String, String>, ContainerdError> {
    let checked = manifests::check(Some(&manifest.media_type), &manifest.bytes)
        .map_err(|e| ContainerdError::protocol("manifest labels", e.to_string()))?;
    let mut labels = HashMap::new();
    let mut blobs = checked.blobs.iter();
    if let Some(config) = blobs.next() {
        labels.insert(format!("{GC_REF_CONTENT}.config"), config.digest.to_string());
    }
    for (i, layer) in blobs.enumerate() {
        labels.insert(format!("{GC_REF_CONTENT}.l.{i}"), layer.digest.to_string());
    }
    for (i, child) in checked.children.iter().enumerate() {
        labels.insert(format!("{GC_REF_CONTENT}.m.{i}"), child.digest.to_string());
    }
    Ok(labels)
}

/// The registry's store over containerd (namespace [`NAMESPACE`]). Clones
/// share the connection.
#[derive(Clone, Debug)]
pub struct ContainerdStore {
    channel: Channel,
    namespace: AsciiMetadataValue,
    upload_lease: Duration,
}

impl ContainerdStore {
    /// Connects to containerd at `socket`.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, ContainerdError> {
        let socket = socket.as_ref();
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|source| ContainerdError::Connect { socket: socket.to_owned(), source })?;
        Ok(Self::from_channel(channel))
    }

    /// Connects to containerd at [`socket_path`].
    pub async fn connect_default() -> Result<Self, ContainerdError> {
        Self::connect(socket_path()).await
    }

    /// A store over an open channel to containerd.
    pub fn from_channel(channel: Channel) -> Self {
        Self { channel, namespace: MetadataValue::from_static(NAMESPACE), upload_lease: DEFAULT_UPLOAD_LEASE }
    }

    /// Sets how long an upload's lease protects its blob (default
    /// [`DEFAULT_UPLOAD_LEASE`]).
    pub fn with_upload_lease(mut self, ttl: Duration) -> Self {
        self.upload_lease = ttl;
        self
    }

    /// The channel, for other containerd clients in the agent.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `msg` with the namespace and, if given, the lease as metadata.
    fn request<T>(&self, msg: T, lease: Option<&str>) -> Result<tonic::Request<T>, ContainerdError> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = lease {
            let value = lease
                .parse::<AsciiMetadataValue>()
                .map_err(|_| ContainerdError::protocol("Leases/Create", format!("lease id {lease:?} is not ASCII")))?;
            req.metadata_mut().insert(LEASE_HEADER, value);
        }
        Ok(req)
    }

    fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(2 * WRITE_CHUNK + 64 * 1024)
    }

    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    /// Creates a lease that expires after `ttl`, labelled [`LABEL_UPLOAD`]
    /// `= blob` if given; returns its id.
    async fn create_lease(&self, ttl: Duration, blob: Option<&Digest>) -> Result<String, ContainerdError> {
        const CALL: &str = "Leases/Create";
        let mut labels = HashMap::from([(GC_EXPIRE.to_owned(), expiry(ttl))]);
        if let Some(blob) = blob {
            labels.insert(LABEL_UPLOAD.to_owned(), blob.to_string());
        }
        let req = self.request(CreateLeaseRequest { id: String::new(), labels }, None)?;
        let lease = self.leases().create(req).await.map_err(ContainerdError::call(CALL))?.into_inner().lease;
        match lease {
            Some(l) if !l.id.is_empty() => Ok(l.id),
            _ => Err(ContainerdError::protocol(CALL, "no lease id")),
        }
    }

    /// Deletes lease `id` (its resources become collectable); a lease
    /// that is already gone is fine.
    async fn delete_lease(&self, id: &str) -> Result<(), ContainerdError> {
        let req = self.request(DeleteLeaseRequest { id: id.to_owned(), sync: false }, None)?;
        let r = self.leases().delete(req).await.map(drop).map_err(ContainerdError::call("Leases/Delete"));
        not_found_is_none(r).map(drop)
    }

    /// [`delete_lease`](Self::delete_lease), logging instead of failing.
    async fn release_lease(&self, id: &str) {
        if let Err(e) = self.delete_lease(id).await {
            tracing::warn!(lease = id, error = %e, "containerd: deleting a lease");
        }
    }

    /// Moves committed blob `digest` from the upload's lease `upload`
    /// to a new lease labelled with its digest; on failure the upload's
    /// lease keeps it (logged).
    async fn label_blob(&self, upload: &str, digest: &Digest) {
        let labelled = async {
            let id = self.create_lease(self.upload_lease, Some(digest)).await?;
            if let Err(e) = self.lease_content(&id, digest.as_str()).await {
                self.release_lease(&id).await;
                return Err(e);
            }
            Ok::<_, ContainerdError>(())
        };
        match labelled.await {
            Ok(()) => self.release_lease(upload).await,
            Err(e) => tracing::warn!(
                lease = upload, %digest, error = %e,
                "containerd: labelling a blob's lease; the upload's lease keeps it until it expires"
            ),
        }
    }

    /// Deletes every lease labelled [`LABEL_UPLOAD`] with one of `digests`,
    /// logging failures: the blobs' image roots them now.
    async fn release_blobs(&self, digests: &[String]) {
        if digests.is_empty() {
            return;
        }
        // Filters are alternatives: a lease matching any of them is listed.
        let filters = digests.iter().map(|d| format!("labels.\"{LABEL_UPLOAD}\"==\"{d}\"")).collect();
        let listed = match self.request(ListLeasesRequest { filters }, None) {
            Ok(req) => self.leases().list(req).await.map_err(ContainerdError::call("Leases/List")),
            Err(e) => Err(e),
        };
        match listed {
            Ok(resp) => {
                for lease in resp.into_inner().leases {
                    self.release_lease(&lease.id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "containerd: listing the leases of a manifest's blobs"),
        }
    }

    /// Adds content `digest` to lease `id`.
    async fn lease_content(&self, id: &str, digest: &str) -> Result<(), ContainerdError> {
        let resource = Resource { id: digest.to_owned(), r#type: "content".to_owned() };
        let req = self.request(AddResourceRequest { id: id.to_owned(), resource: Some(resource) }, None)?;
        self.leases().add_resource(req).await.map_err(ContainerdError::call("Leases/AddResource"))?;
        Ok(())
    }

    /// `Content/Info` of `digest`, or `None`.
    async fn content_info(&self, digest: &str) -> Result<Option<Info>, ContainerdError> {
        const CALL: &str = "Content/Info";
        let req = self.request(InfoRequest { digest: digest.to_owned() }, None)?;
        let r = self.content().info(req).await.map_err(ContainerdError::call(CALL));
        match not_found_is_none(r)? {
            Some(resp) => resp.into_inner().info.map(Some).ok_or_else(|| ContainerdError::protocol(CALL, "no info")),
            None => Ok(None),
        }
    }

    /// The `Content/Read` stream of `digest` from offset 0, `size` bytes
    /// at most (0: all).
    async fn read_stream(&self, digest: &str, size: i64) -> Result<BlobStream, ContainerdError> {
        const CALL: &str = "Content/Read";
        let req = self.request(ReadContentRequest { digest: digest.to_owned(), offset: 0, size }, None)?;
        let stream = self.content().read(req).await.map_err(ContainerdError::call(CALL))?.into_inner();
        Ok(Box::pin(
            stream
                .map_ok(|r| Bytes::from(r.data))
                .map_err(|status| StoreError::from(ContainerdError::Call { call: CALL, status })),
        ))
    }

    /// Reads a whole manifest `target` (at most [`MAX_MANIFEST_BYTES`]) and
    /// checks its digest; `None` if the content is gone.
    async fn read_manifest(&self, target: &Descriptor) -> Result<Option<StoredManifest>, ContainerdError> {
        const CALL: &str = "Content/Read";
        let digest = Digest::parse(&target.digest)
            .map_err(|e| ContainerdError::protocol(CALL, format!("image target {:.80}: {e}", target.digest)))?;
        let size = size_of(CALL, target.size)?;
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(ContainerdError::protocol(CALL, format!("manifest {digest} has {size} bytes")));
        }
        if self.content_info(digest.as_str()).await?.is_none() {
            return Ok(None);
        }
        let mut stream = self.read_stream(digest.as_str(), target.size).await?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(piece) = stream.try_next().await.map_err(|e| ContainerdError::protocol(CALL, e.to_string()))? {
            if bytes.len() + piece.len() > MAX_MANIFEST_BYTES {
                return Err(ContainerdError::protocol(CALL, format!("manifest {digest} is larger than its target")));
            }
            bytes.extend_from_slice(&piece);
        }
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(ContainerdError::protocol(CALL, format!("content {digest} reads back as {actual}")));
        }
        Ok(Some(StoredManifest { media_type: target.media_type.clone(), digest, bytes: Bytes::from(bytes) }))
    }

    /// Writes `bytes` as content `digest` with `labels`, under `lease`.
    /// Content that already exists gets the labels.
    async fn put_content(
        &self,
        lease: &str,
        digest: &Digest,
        bytes: &Bytes,
        labels: HashMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let upload_ref = new_ref("manifest");
        let total = to_i64("Content/Write", bytes.len() as u64)?;
        let mut stream = WriteStream::open(self, &upload_ref, lease, total).await?;
        let result = async {
            let mut offset = 0u64;
            for piece in bytes.chunks(WRITE_CHUNK) {
                offset = stream.write(offset, Bytes::copy_from_slice(piece)).await?;
            }
            stream.commit(offset, digest, labels.clone()).await
        }
        .await;
        stream.close().await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(Code::AlreadyExists) => {
                self.abort_ref(&upload_ref).await;
                self.update_labels(digest, labels).await
            }
            Err(e) => {
                self.abort_ref(&upload_ref).await;
                Err(e)
            }
        }
    }

    /// Sets `labels` on content `digest`, leaving its other labels.
    async fn update_labels(&self, digest: &Digest, labels: HashMap<String, String>) -> Result<(), ContainerdError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info { digest: digest.to_string(), labels, ..Default::default() };
        let mask = prost_types::FieldMask { paths };
        let req = self.request(UpdateRequest { info: Some(info), update_mask: Some(mask) }, None)?;
        self.content().update(req).await.map_err(ContainerdError::call("Content/Update"))?;
        Ok(())
    }

    /// `Content/Abort(ref)`, logging a failure; an unknown ref is fine.
    async fn abort_ref(&self, upload_ref: &str) {
        let r = match self.request(AbortRequest { r#ref: upload_ref.to_owned() }, None) {
            Ok(req) => self.content().abort(req).await.map(drop).map_err(ContainerdError::call("Content/Abort")),
            Err(e) => Err(e),
        };
        if let Err(e) = not_found_is_none(r) {
            tracing::warn!(upload_ref, error = %e, "containerd: aborting a write");
        }
    }

    /// Points image `name` at `target`, creating it if needed.
    async fn set_image(&self, name: String, target: Descriptor) -> Result<(), ContainerdError> {
        let image = Image { name, target: Some(target), ..Default::default() };
        let req = self.request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }, None)?;
        match self.images().create(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                let mask = prost_types::FieldMask { paths: vec!["target".to_owned()] };
                let update =
                    UpdateImageRequest { image: Some(image), update_mask: Some(mask), source_date_epoch: None };
                let req = self.request(update, None)?;
                self.images().update(req).await.map_err(ContainerdError::call("Images/Update"))?;
                Ok(())
            }
            Err(status) => Err(ContainerdError::Call { call: "Images/Create", status }),
        }
    }

    /// The images whose names match `filter`.
    async fn list_images(&self, filter: String) -> Result<Vec<Image>, ContainerdError> {
        let req = self.request(ListImagesRequest { filters: vec![filter] }, None)?;
        Ok(self.images().list(req).await.map_err(ContainerdError::call("Images/List"))?.into_inner().images)
    }

    async fn put_manifest_leased(
        &self,
        lease: &str,
        repo: &RepoName,
        tag: Option<&Tag>,
        manifest: &StoredManifest,
    ) -> Result<Vec<String>, ContainerdError> {
        let labels = gc_labels(manifest)?;
        let referenced: Vec<String> = labels.values().cloned().collect();
        for digest in &referenced {
            self.lease_content(lease, digest).await?;
        }
        self.put_content(lease, &manifest.digest, &manifest.bytes, labels).await?;
        let name = match tag {
            Some(t) => format!("{repo}:{t}"),
            None => format!("{repo}@{}", manifest.digest),
        };
        let target = Descriptor {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.to_string(),
            size: to_i64("Images/Create", manifest.bytes.len() as u64)?,
            annotations: HashMap::new(),
        };
        self.set_image(name, target).await?;
        Ok(referenced)
    }
}

/// An open `Content/Write` stream: requests go in over a channel, answers
/// come back one per request.
struct WriteStream {
    upload_ref: String,
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    rx: Streaming<WriteContentResponse>,
}

impl WriteStream {
    const CALL: &'static str = "Content/Write";

    /// Opens the stream for `upload_ref` under `lease` with a `STAT`
    /// (`total` if known, else 0); returns it and containerd's answer.
    async fn open(store: &ContainerdStore, upload_ref: &str, lease: &str, total: i64) -> Result<Self, ContainerdError> {
        Ok(Self::open_stat(store, upload_ref, lease, total).await?.0)
    }

    async fn open_stat(
        store: &ContainerdStore,
        upload_ref: &str,
        lease: &str,
        total: i64,
    ) -> Result<(Self, WriteContentResponse), ContainerdError> {
        let (tx, requests) = mpsc::channel(2);
        let stat = WriteContentRequest {
            action: WriteAction::Stat.into(),
            r#ref: upload_ref.to_owned(),
            total,
            ..Default::default()
        };
        // Queued before the call: containerd answers headers with the first
        // response, which needs the first request.
        tx.send(stat).await.map_err(|_| ContainerdError::protocol(Self::CALL, "request channel closed"))?;
        let req = store.request(ReceiverStream::new(requests), Some(lease))?;
        let rx = store.content().write(req).await.map_err(ContainerdError::call(Self::CALL))?.into_inner();
        let mut stream = Self { upload_ref: upload_ref.to_owned(), tx: Some(tx), rx };
        let status = stream.answer().await?;
        Ok((stream, status))
    }

    /// The next answer; the stream's error status if it ended.
    async fn answer(&mut self) -> Result<WriteContentResponse, ContainerdError> {
        match self.rx.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(ContainerdError::protocol(Self::CALL, "the stream ended early")),
            Err(status) => Err(ContainerdError::Call { call: Self::CALL, status }),
        }
    }

    /// Sends `req` and waits for its answer.
    async fn round_trip(&mut self, req: WriteContentRequest) -> Result<WriteContentResponse, ContainerdError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(req).await.is_ok(),
            None => false,
        };
        if !sent {
            // The call is over; its status says why.
            self.tx = None;
            return Err(self.answer().await.err().unwrap_or_else(|| ContainerdError::protocol(Self::CALL, "closed")));
        }
        self.answer().await
    }

    /// `STAT`: containerd's offset and digest of the bytes so far.
    async fn stat(&mut self) -> Result<WriteContentResponse, ContainerdError> {
        let req = WriteContentRequest {
            action: WriteAction::Stat.into(),
            r#ref: self.upload_ref.clone(),
            ..Default::default()
        };
        self.round_trip(req).await
    }

    /// Writes `data` at `offset`; returns the new offset.
    async fn write(&mut self, offset: u64, data: Bytes) -> Result<u64, ContainerdError> {
        let expect = offset + data.len() as u64;
        let req = WriteContentRequest {
            action: WriteAction::Write.into(),
            r#ref: self.upload_ref.clone(),
            offset: to_i64(Self::CALL, offset)?,
            data: data.to_vec(),
            ..Default::default()
        };
        let answer = self.round_trip(req).await?;
        let new = size_of(Self::CALL, answer.offset)?;
        if new != expect {
            return Err(ContainerdError::protocol(
                Self::CALL,
                format!("offset {new} after a write, expected {expect}"),
            ));
        }
        Ok(new)
    }

    /// `COMMIT` of the `size` bytes written as `expected`. The offset is
    /// always sent: containerd truncates on a write at offset 0.
    async fn commit(
        &mut self,
        size: u64,
        expected: &Digest,
        labels: HashMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let size = to_i64(Self::CALL, size)?;
        let req = WriteContentRequest {
            action: WriteAction::Commit.into(),
            r#ref: self.upload_ref.clone(),
            total: size,
            expected: expected.to_string(),
            offset: size,
            labels,
            ..Default::default()
        };
        self.round_trip(req).await.map(drop)
    }

    /// Ends the stream and waits for containerd to close its writer (and
    /// release the ref's lock).
    async fn close(mut self) {
        self.tx = None;
        while let Ok(Some(_)) = self.rx.message().await {}
    }
}

/// One upload into containerd: a `Content/Write` stream on its own ref,
/// under its own lease (see the module docs).
pub struct ContainerdWriter {
    store: ContainerdStore,
    upload_ref: String,
    lease: String,
    total: i64,
    offset: u64,
    stream: Option<WriteStream>,
}

impl std::fmt::Debug for ContainerdWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdWriter")
            .field("upload_ref", &self.upload_ref)
            .field("lease", &self.lease)
            .field("offset", &self.offset)
            .finish()
    }
}

impl ContainerdWriter {
    /// The ingest ref in containerd's content store.
    pub fn upload_ref(&self) -> &str {
        &self.upload_ref
    }

    /// The lease the upload runs under.
    pub fn lease(&self) -> &str {
        &self.lease
    }

    /// The open stream, reopened (resuming at containerd's offset) if an
    /// earlier error closed it.
    async fn stream(&mut self) -> Result<&mut WriteStream, ContainerdError> {
        if self.stream.is_none() {
            let (stream, status) =
                WriteStream::open_stat(&self.store, &self.upload_ref, &self.lease, self.total).await?;
            self.offset = size_of(WriteStream::CALL, status.offset)?;
            self.stream = Some(stream);
        }
        self.stream.as_mut().ok_or_else(|| ContainerdError::protocol(WriteStream::CALL, "no stream"))
    }

    async fn write_all(&mut self, data: Bytes) -> Result<u64, ContainerdError> {
        let mut offset = self.offset;
        let stream = self.stream().await?;
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(WRITE_CHUNK));
            offset = stream.write(offset, piece).await?;
        }
        Ok(offset)
    }

    async fn close_stream(&mut self) {
        if let Some(s) = self.stream.take() {
            s.close().await;
        }
    }

    /// Drops the partial bytes and the lease.
    async fn discard(mut self) {
        self.close_stream().await;
        self.store.abort_ref(&self.upload_ref).await;
        self.store.release_lease(&self.lease).await;
    }

    async fn try_commit(&mut self, expected: &Digest, size: u64) -> Result<(), StoreError> {
        let stat = self.stream().await?.stat().await?;
        let actual_size = size_of(WriteStream::CALL, stat.offset)?;
        if actual_size != size {
            return Err(StoreError::SizeMismatch { expected: size, actual: actual_size });
        }
        let actual = Digest::parse(&stat.digest).map_err(|e| {
            ContainerdError::protocol(WriteStream::CALL, format!("digest {:.80} of the upload: {e}", stat.digest))
        })?;
        if &actual != expected {
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        let stream = self.stream().await?;
        match stream.commit(size, expected, HashMap::new()).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(Code::AlreadyExists) => {
                // containerd dropped the ingest; keep the existing blob
                // alive until a manifest roots it.
                self.store.lease_content(&self.lease, expected.as_str()).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl BlobWriter for ContainerdWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, offset: u64, data: Bytes) -> Result<u64, StoreError> {
        if offset != self.offset {
            return Err(StoreError::Offset { offset, committed: self.offset });
        }
        match self.write_all(data).await {
            Ok(new) => {
                self.offset = new;
                Ok(new)
            }
            Err(e) => {
                // The stream is unusable; the next call reopens it at
                // containerd's offset.
                self.close_stream().await;
                Err(e.into())
            }
        }
    }

    async fn commit(mut self, expected: &Digest, size: u64) -> Result<(), StoreError> {
        let result = self.try_commit(expected, size).await;
        match result {
            Ok(()) => {
                self.close_stream().await;
                // The blob must outlive the wait for its manifest: it moves
                // to a lease the manifest push can find by its digest.
                self.store.label_blob(&self.lease, expected).await;
                Ok(())
            }
            Err(e) => {
                self.discard().await;
                Err(e)
            }
        }
    }

    async fn abort(self) -> Result<(), StoreError> {
        self.discard().await;
        Ok(())
    }
}

impl ContentStore for ContainerdStore {
    type Writer = ContainerdWriter;

    async fn info(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.content_info(digest.as_str()).await? {
            Some(info) => Ok(Some(size_of("Content/Info", info.size)?)),
            None => Ok(None),
        }
    }

    async fn reader(&self, digest: &Digest) -> Result<Option<(u64, BlobStream)>, StoreError> {
        let Some(info) = self.content_info(digest.as_str()).await? else {
            return Ok(None);
        };
        let size = size_of("Content/Info", info.size)?;
        match not_found_is_none(self.read_stream(digest.as_str(), 0).await)? {
            Some(stream) => Ok(Some((size, stream))),
            None => Ok(None),
        }
    }

    async fn writer(&self, upload_ref: &str, total: Option<u64>) -> Result<ContainerdWriter, StoreError> {
        let total = to_i64(WriteStream::CALL, total.unwrap_or(0))?;
        let lease = self.create_lease(self.upload_lease, None).await?;
        let mut writer = ContainerdWriter {
            store: self.clone(),
            upload_ref: upload_ref.to_owned(),
            lease,
            total,
            offset: 0,
            stream: None,
        };
        if let Err(e) = writer.stream().await {
            writer.discard().await;
            return Err(e.into());
        }
        Ok(writer)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        manifest: StoredManifest,
    ) -> Result<(), StoreError> {
        let lease = self.create_lease(MANIFEST_LEASE, None).await?;
        let result = self.put_manifest_leased(&lease, repo, tag, &manifest).await;
        // The image roots everything now (or nothing was stored).
        if let Ok(referenced) = &result {
            self.release_blobs(referenced).await;
        }
        self.release_lease(&lease).await;
        result.map(drop).map_err(StoreError::from)
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<StoredManifest>, StoreError> {
        let target = match reference {
            Reference::Tag(t) => {
                let req = self.request(GetImageRequest { name: format!("{repo}:{t}") }, None)?;
                let r = self.images().get(req).await.map_err(ContainerdError::call("Images/Get"));
                not_found_is_none(r)?.and_then(|resp| resp.into_inner().image).and_then(|i| i.target)
            }
            Reference::Digest(d) => {
                let images = self.list_images(format!("name~=\"^{}[:@]\"", repo_regex(repo))).await?;
                images.into_iter().filter_map(|i| i.target).find(|t| t.digest == d.as_str())
            }
        };
        match target {
            Some(t) => Ok(self.read_manifest(&t).await?),
            None => Ok(None),
        }
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, StoreError> {
        let images = self.list_images(format!("name~=\"^{}:\"", repo_regex(repo))).await?;
        let prefix = format!("{repo}:");
        let mut tags: Vec<String> = images
            .into_iter()
            .filter_map(|i| i.name.strip_prefix(&prefix).map(str::to_owned))
            .filter(|t| Tag::parse(t).is_ok())
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_defaults_and_regex() {
        assert_eq!(DEFAULT_SOCKET, "/run/containerd/containerd.sock");
        let repo = RepoName::parse("org/my.app_x").unwrap();
        assert_eq!(repo_regex(&repo), "org/my[.]app_x");
        let e = expiry(Duration::from_secs(0));
        assert_eq!(e.len(), "2026-01-01T00:00:00Z".len());
        assert!(e.ends_with('Z'));
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn gc_labels_name_config_layers_and_children() {
        let (c, l0, l1) = (Digest::of(b"c"), Digest::of(b"l0"), Digest::of(b"l1"));
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifests::OCI_MANIFEST,
            "config": {"digest": c.as_str(), "size": 1},
            "layers": [{"digest": l0.as_str(), "size": 2}, {"digest": l1.as_str(), "size": 2}],
        })
        .to_string();
        let m = StoredManifest {
            media_type: manifests::OCI_MANIFEST.into(),
            digest: Digest::of(body.as_bytes()),
            bytes: body.into(),
        };
        let labels = gc_labels(&m).unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], c.as_str());
        assert_eq!(labels["containerd.io/gc.ref.content.l.0"], l0.as_str());
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], l1.as_str());
    }
}
