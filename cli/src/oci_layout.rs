//! A local OCI image layout (`oci:DIR:TAG`, as `skopeo copy` writes it),
//! read into what a push sends: the blobs (config and layers, by file,
//! never loaded) and the manifests (small, read whole), children first.
//!
//! The layout is `DIR/oci-layout`, `DIR/index.json` (the entry whose
//! annotation `org.opencontainers.image.ref.name` is TAG) and
//! `DIR/blobs/sha256/<hex>`. The entry is an image manifest or an index of
//! them (one level: an index of indexes is refused). Every digest must be a
//! `sha256:` with 64 lowercase hex digits before it becomes a path, every
//! blob file must have its descriptor's size, and JSON documents are read
//! with a size cap ([`MAX_DOCUMENT_BYTES`]); nothing here panics on a
//! corrupt layout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The largest `index.json`, manifest or image config read.
pub const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// The annotation naming a tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Why a layout cannot be pushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A file could not be read (missing, too large, not a regular file).
    #[error("OCI layout: {0}")]
    Read(#[from] wendy_net::safe_read::ReadError),
    /// A JSON document is malformed.
    #[error("OCI layout: {what}: {reason}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's words.
        reason: String,
    },
    /// `index.json` has no entry for the tag.
    #[error("OCI layout: no image tagged {tag:?} in index.json (tags: {})", if found.is_empty() { "none".to_owned() } else { found.join(", ") })]
    NoTag {
        /// The tag asked for.
        tag: String,
        /// The tags present.
        found: Vec<String>,
    },
    /// A digest that is not `sha256:<64 lowercase hex>`.
    #[error("OCI layout: {what}: digest {digest:?} is not sha256:<64 hex digits>")]
    BadDigest {
        /// Where it was.
        what: String,
        /// The digest (cut short).
        digest: String,
    },
    /// A manifest media type this push does not handle.
    #[error("OCI layout: {what}: unsupported media type {media_type:?}")]
    MediaType {
        /// Where it was.
        what: String,
        /// The type.
        media_type: String,
    },
    /// A blob file whose size is not its descriptor's.
    #[error("OCI layout: blob {digest} is {actual} bytes, its descriptor says {expected}")]
    Size {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
}

/// A blob to push, read from its file while it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its file in the layout.
    pub path: PathBuf,
}

/// A manifest or index to push, with its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its media type (the `Content-Type` of the `PUT`).
    pub media_type: String,
    /// The document as stored.
    pub bytes: Vec<u8>,
}

/// Everything a push of one tag sends, in order: the blobs, then the
/// child manifests (by digest), then the tagged one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Config and layer blobs, each once.
    pub blobs: Vec<Blob>,
    /// An index's child manifests, pushed by digest.
    pub children: Vec<Manifest>,
    /// The tagged manifest or index.
    pub top: Manifest,
    /// The platforms the image is for, as `os/arch[/variant]`, where the
    /// layout says (an index's entries, a manifest's config).
    pub platforms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawPlatform {
    fn name(&self) -> Option<String> {
        if self.architecture.is_empty() {
            return None;
        }
        let os = if self.os.is_empty() { "linux" } else { &self.os };
        Some(match self.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{os}/{}/{v}", self.architecture),
            _ => format!("{os}/{}", self.architecture),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits (so it is a
/// safe file name too).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The file of blob `digest` in the layout at `dir`.
fn blob_path(dir: &Path, what: &str, digest: &str) -> Result<PathBuf, LayoutError> {
    if !is_sha256_digest(digest) {
        return Err(LayoutError::BadDigest { what: what.to_owned(), digest: digest.chars().take(80).collect() });
    }
    Ok(dir.join("blobs").join("sha256").join(&digest["sha256:".len()..]))
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, LayoutError> {
    serde_json::from_slice(bytes).map_err(|e| LayoutError::Json { what: what.to_owned(), reason: e.to_string() })
}

/// Reads the document `d` points at; its media type is the descriptor's,
/// else the document's own.
fn read_document(dir: &Path, what: &str, d: &RawDescriptor) -> Result<(Manifest, RawDocument), LayoutError> {
    let path = blob_path(dir, what, &d.digest)?;
    let bytes = wendy_net::safe_read::read(&path, MAX_DOCUMENT_BYTES)?;
    if bytes.len() as u64 != d.size {
        return Err(LayoutError::Size { digest: d.digest.clone(), expected: d.size, actual: bytes.len() as u64 });
    }
    let doc: RawDocument = parse(what, &bytes)?;
    let media_type = if d.media_type.is_empty() { doc.media_type.clone() } else { d.media_type.clone() };
    Ok((Manifest { digest: d.digest.clone(), media_type, bytes }, doc))
}

/// The blob `d`, checked against its file.
fn blob(dir: &Path, what: &str, d: &RawDescriptor) -> Result<Blob, LayoutError> {
    let path = blob_path(dir, what, &d.digest)?;
    let actual = std::fs::symlink_metadata(&path)
        .map_err(|source| wendy_net::safe_read::ReadError::Io { op: "stat", path: path.clone(), source })?
        .len();
    if actual != d.size {
        return Err(LayoutError::Size { digest: d.digest.clone(), expected: d.size, actual });
    }
    Ok(Blob { digest: d.digest.clone(), size: d.size, path })
}

/// Adds the config and layers of image manifest `doc` to `blobs` (each
/// digest once); returns the config's platform, if it names one.
fn image_blobs(
    dir: &Path,
    what: &str,
    doc: &RawDocument,
    seen: &mut BTreeSet<String>,
    blobs: &mut Vec<Blob>,
) -> Result<Option<String>, LayoutError> {
    let config =
        doc.config.as_ref().ok_or_else(|| LayoutError::Json { what: what.to_owned(), reason: "no config".into() })?;
    let platform = match wendy_net::safe_read::read(&blob_path(dir, what, &config.digest)?, MAX_DOCUMENT_BYTES) {
        Ok(bytes) => serde_json::from_slice::<RawPlatform>(&bytes).ok().and_then(|p| p.name()),
        Err(_) => None,
    };
    for (i, d) in std::iter::once(config).chain(&doc.layers).enumerate() {
        let what = if i == 0 { format!("{what} config") } else { format!("{what} layer {}", i - 1) };
        if seen.insert(d.digest.clone()) {
            blobs.push(blob(dir, &what, d)?);
        }
    }
    Ok(platform)
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Reads the layout at `dir` and plans the push of `tag`.
pub fn plan(dir: &Path, tag: &str) -> Result<Plan, LayoutError> {
    let index_bytes = wendy_net::safe_read::read(&dir.join("index.json"), MAX_DOCUMENT_BYTES)?;
    let index: RawDocument = parse("index.json", &index_bytes)?;
    let entries = index.manifests.unwrap_or_default();
    let tag_of = |d: &RawDescriptor| d.annotations.get(REF_NAME_ANNOTATION).cloned();
    let Some(entry) = entries.iter().find(|d| tag_of(d).as_deref() == Some(tag)) else {
        return Err(LayoutError::NoTag { tag: tag.to_owned(), found: entries.iter().filter_map(tag_of).collect() });
    };
    let (top, doc) = read_document(dir, &format!("manifest {tag}"), entry)?;
    let mut seen = BTreeSet::new();
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut platforms = Vec::new();
    if is_manifest(&top.media_type) {
        platforms.extend(image_blobs(dir, "manifest", &doc, &mut seen, &mut blobs)?);
    } else if is_index(&top.media_type) {
        for (i, d) in doc.manifests.as_deref().unwrap_or_default().iter().enumerate() {
            let what = format!("index entry {i}");
            let (child, child_doc) = read_document(dir, &what, d)?;
            if !is_manifest(&child.media_type) {
                return Err(LayoutError::MediaType { what, media_type: child.media_type });
            }
            let from_config = image_blobs(dir, &what, &child_doc, &mut seen, &mut blobs)?;
            platforms.extend(d.platform.as_ref().and_then(RawPlatform::name).or(from_config));
            children.push(child);
        }
    } else {
        return Err(LayoutError::MediaType { what: format!("manifest {tag}"), media_type: top.media_type });
    }
    Ok(Plan { blobs, children, top, platforms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// Writes `bytes` as a blob; returns its descriptor JSON.
    fn put(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let d = digest(bytes);
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }

    fn image(dir: &Path, arch: &str, layer: &[u8]) -> serde_json::Value {
        let config = serde_json::json!({"architecture": arch, "os": "linux"}).to_string();
        let c = put(dir, "application/vnd.oci.image.config.v1+json", config.as_bytes());
        let l = put(dir, "application/vnd.oci.image.layer.v1.tar", layer);
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": c, "layers": [l]});
        put(dir, OCI_MANIFEST, m.to_string().as_bytes())
    }

    fn index_json(dir: &Path, mut entry: serde_json::Value, tag: &str) {
        entry["annotations"] = serde_json::json!({REF_NAME_ANNOTATION: tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    #[test]
    fn manifest_plan_lists_config_then_layers() {
        let t = tempfile::tempdir().unwrap();
        let m = image(t.path(), "arm64", b"layer bytes");
        index_json(t.path(), m.clone(), "1.0.0");
        let plan = plan(t.path(), "1.0.0").unwrap();
        assert_eq!(plan.top.digest, m["digest"]);
        assert_eq!(plan.top.media_type, OCI_MANIFEST);
        assert_eq!(plan.blobs.len(), 2);
        assert_eq!(plan.blobs[1].digest, digest(b"layer bytes"));
        assert_eq!(plan.blobs[1].size, 11);
        assert!(plan.children.is_empty());
        assert_eq!(plan.platforms, ["linux/arm64"]);
    }

    #[test]
    fn index_plan_pushes_children_and_shares_blobs() {
        let t = tempfile::tempdir().unwrap();
        let a = image(t.path(), "arm64", b"same layer");
        let b = image(t.path(), "amd64", b"same layer");
        let mut entries = vec![a, b];
        entries[0]["platform"] = serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"});
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let top = put(t.path(), OCI_INDEX, idx.to_string().as_bytes());
        index_json(t.path(), top, "latest");
        let plan = plan(t.path(), "latest").unwrap();
        assert_eq!(plan.top.media_type, OCI_INDEX);
        assert_eq!(plan.children.len(), 2);
        // Two configs, one shared layer.
        assert_eq!(plan.blobs.len(), 3);
        assert_eq!(plan.platforms, ["linux/arm/v7", "linux/amd64"]);
    }

    #[test]
    fn refusals_name_the_problem() {
        let t = tempfile::tempdir().unwrap();
        let e = plan(t.path(), "x").unwrap_err();
        assert!(e.to_string().contains("index.json") && e.to_string().contains("no such file"), "{e}");

        let m = image(t.path(), "arm64", b"layer");
        index_json(t.path(), m.clone(), "1.0.0");
        let e = plan(t.path(), "2.0.0").unwrap_err();
        assert!(e.to_string().contains("\"2.0.0\"") && e.to_string().contains("1.0.0"), "{e}");

        // A digest that would leave the blobs directory.
        let mut bad = m.clone();
        bad["digest"] = serde_json::json!("sha256:../../etc/passwd");
        index_json(t.path(), bad, "bad");
        assert!(matches!(plan(t.path(), "bad").unwrap_err(), LayoutError::BadDigest { .. }));

        // A size that does not match the file.
        let mut short = m.clone();
        short["size"] = serde_json::json!(1);
        index_json(t.path(), short, "short");
        assert!(matches!(plan(t.path(), "short").unwrap_err(), LayoutError::Size { .. }));

        // Not a manifest.
        let other = put(t.path(), "text/plain", b"{}");
        index_json(t.path(), other, "text");
        assert!(matches!(plan(t.path(), "text").unwrap_err(), LayoutError::MediaType { .. }));

        // Malformed JSON.
        std::fs::write(t.path().join("index.json"), "{").unwrap();
        assert!(matches!(plan(t.path(), "x").unwrap_err(), LayoutError::Json { .. }));
    }

    #[test]
    fn truncated_index_never_panics() {
        let t = tempfile::tempdir().unwrap();
        let m = image(t.path(), "arm64", b"layer");
        index_json(t.path(), m, "1");
        let whole = std::fs::read(t.path().join("index.json")).unwrap();
        for n in 0..whole.len() {
            std::fs::write(t.path().join("index.json"), &whole[..n]).unwrap();
            assert!(plan(t.path(), "1").is_err());
        }
    }

    #[test]
    fn digests() {
        assert!(is_sha256_digest(&digest(b"")));
        assert!(!is_sha256_digest(&digest(b"").to_uppercase()));
        assert!(!is_sha256_digest("sha512:00"));
        assert!(!is_sha256_digest("sha256:"));
    }
}
