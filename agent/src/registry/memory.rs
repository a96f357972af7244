//! An in-memory [`ContentStore`] for unit tests: committed blobs, partial
//! uploads (so tests can check that none stay behind), manifests and tags.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::digest::{Digest, Hasher};
use super::names::{Reference, RepoName, Tag};
use super::store::{BlobStream, BlobWriter, ContentStore, StoreError, StoredManifest};

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, Bytes>,
    partial: HashMap<String, Vec<u8>>,
    manifests: HashMap<(RepoName, Digest), StoredManifest>,
    tags: HashMap<RepoName, BTreeMap<String, Digest>>,
}

/// The store; clones share their contents.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Inner>>);

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap()
    }

    /// Bytes of uploads not yet committed or aborted.
    pub fn partial_bytes(&self) -> usize {
        self.lock().partial.values().map(Vec::len).sum()
    }

    /// Uploads not yet committed or aborted.
    pub fn partial_uploads(&self) -> usize {
        self.lock().partial.len()
    }

    /// Whether blob `d` is committed.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.lock().blobs.contains_key(d)
    }
}

/// One upload.
pub struct MemoryWriter {
    store: MemoryStore,
    reference: String,
    offset: u64,
}

impl BlobWriter for MemoryWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, offset: u64, data: Bytes) -> Result<u64, StoreError> {
        if offset != self.offset {
            return Err(StoreError::Offset { offset, committed: self.offset });
        }
        let mut inner = self.store.lock();
        let buf = inner.partial.get_mut(&self.reference).ok_or_else(|| StoreError::Backend("no such ref".into()))?;
        buf.extend_from_slice(&data);
        self.offset = buf.len() as u64;
        Ok(self.offset)
    }

    async fn commit(self, expected: &Digest, size: u64) -> Result<(), StoreError> {
        let mut inner = self.store.lock();
        let data = inner.partial.remove(&self.reference).ok_or_else(|| StoreError::Backend("no such ref".into()))?;
        if data.len() as u64 != size {
            return Err(StoreError::SizeMismatch { expected: size, actual: data.len() as u64 });
        }
        let mut h = Hasher::new();
        h.update(&data);
        let actual = h.finish();
        if &actual != expected {
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        inner.blobs.insert(actual, data.into());
        Ok(())
    }

    async fn abort(self) -> Result<(), StoreError> {
        self.store.lock().partial.remove(&self.reference);
        Ok(())
    }
}

impl ContentStore for MemoryStore {
    type Writer = MemoryWriter;

    async fn info(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn reader(&self, digest: &Digest) -> Result<Option<(u64, BlobStream)>, StoreError> {
        let Some(b) = self.lock().blobs.get(digest).cloned() else {
            return Ok(None);
        };
        // Two pieces, so streaming is exercised.
        let mid = b.len() / 2;
        let pieces = vec![Ok(b.slice(..mid)), Ok(b.slice(mid..))];
        Ok(Some((b.len() as u64, Box::pin(futures::stream::iter(pieces)))))
    }

    async fn writer(&self, upload_ref: &str, _total: Option<u64>) -> Result<MemoryWriter, StoreError> {
        self.lock().partial.insert(upload_ref.to_owned(), Vec::new());
        Ok(MemoryWriter { store: self.clone(), reference: upload_ref.to_owned(), offset: 0 })
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        manifest: StoredManifest,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(t) = tag {
            inner.tags.entry(repo.clone()).or_default().insert(t.as_str().to_owned(), manifest.digest.clone());
        }
        inner.manifests.insert((repo.clone(), manifest.digest.clone()), manifest);
        Ok(())
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<StoredManifest>, StoreError> {
        let inner = self.lock();
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match inner.tags.get(repo).and_then(|m| m.get(t.as_str())) {
                Some(d) => d.clone(),
                None => return Ok(None),
            },
        };
        Ok(inner.manifests.get(&(repo.clone(), digest)).cloned())
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().tags.get(repo).map(|m| m.keys().cloned().collect()).unwrap_or_default())
    }
}
