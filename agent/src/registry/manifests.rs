//! Checking a pushed manifest before it is stored: its media type (OCI
//! image manifest and index, Docker v2 schema2 manifest and list; nothing
//! else), `schemaVersion: 2`, that the `Content-Type` and the `mediaType`
//! field agree, and the descriptors it references, which the handler then
//! requires to be present (`MANIFEST_BLOB_UNKNOWN` otherwise).

use serde::Deserialize;

use super::digest::Digest;

/// The largest manifest accepted (the spec asks registries to take at
/// least 4 MiB; larger ones get 413).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 schema2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A descriptor a manifest references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referenced {
    /// The content's digest.
    pub digest: Digest,
    /// Its declared size.
    pub size: u64,
}

/// What a manifest is and what it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Its media type.
    pub media_type: &'static str,
    /// Blobs (config, layers) that must be in the store.
    pub blobs: Vec<Referenced>,
    /// Child manifests (of an index or list) that must be in the repository.
    pub children: Vec<Referenced>,
}

/// Why a manifest is refused (`MANIFEST_INVALID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("manifest is not valid JSON of its type: {0}")]
    Json(String),
    /// Neither the `Content-Type` nor a `mediaType` field says what it is.
    #[error("manifest has no media type (neither Content-Type nor mediaType)")]
    NoMediaType,
    /// A type this registry does not store.
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedType(String),
    /// `Content-Type` and `mediaType` disagree.
    #[error("Content-Type {header:?} does not match the manifest's mediaType {field:?}")]
    TypeMismatch {
        /// The header.
        header: String,
        /// The field.
        field: String,
    },
    /// `schemaVersion` is not 2.
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    /// A descriptor's digest is refused.
    #[error("descriptor digest {0:?}: not a sha256 digest")]
    Digest(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u32,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

/// The supported type equal to `s`.
fn known_type(s: &str) -> Option<&'static str> {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].into_iter().find(|t| *t == s)
}

/// Checks `bytes`, pushed with `content_type` (parameters such as
/// `; charset` ignored).
pub fn check(content_type: Option<&str>, bytes: &[u8]) -> Result<Checked, ManifestError> {
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type.map(|c| c.split(';').next().unwrap_or_default().trim()).filter(|c| !c.is_empty());
    let declared = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(f)) if h != f => {
            return Err(ManifestError::TypeMismatch { header: h.to_owned(), field: f.to_owned() })
        }
        (_, Some(t)) | (Some(t), None) => t,
        (None, None) => return Err(ManifestError::NoMediaType),
    };
    let media_type = known_type(declared).ok_or_else(|| ManifestError::UnsupportedType(declared.to_owned()))?;
    if raw.schema_version != 2 {
        return Err(ManifestError::SchemaVersion);
    }
    let convert = |d: RawDescriptor| -> Result<Referenced, ManifestError> {
        let digest =
            Digest::parse(&d.digest).map_err(|_| ManifestError::Digest(d.digest.chars().take(80).collect()))?;
        Ok(Referenced { digest, size: d.size })
    };
    let missing = |field: &str| ManifestError::Json(format!("a {media_type} needs `{field}`"));
    let (blobs, children) = if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        let manifests = raw.manifests.ok_or_else(|| missing("manifests"))?;
        (Vec::new(), manifests.into_iter().map(convert).collect::<Result<_, _>>()?)
    } else {
        let config = raw.config.ok_or_else(|| missing("config"))?;
        let layers = raw.layers.ok_or_else(|| missing("layers"))?;
        let blobs = std::iter::once(config).chain(layers).map(convert).collect::<Result<_, _>>()?;
        (blobs, Vec::new())
    };
    Ok(Checked { media_type, blobs, children })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(media_type: Option<&str>, schema: u32) -> Vec<u8> {
        let d = Digest::of(b"c");
        let mut v = serde_json::json!({
            "schemaVersion": schema,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d.as_str(), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.as_str(), "size": 1}],
        });
        if let Some(t) = media_type {
            v["mediaType"] = t.into();
        }
        v.to_string().into_bytes()
    }

    #[test]
    fn image_manifest_lists_config_and_layers() {
        let c = check(Some(OCI_MANIFEST), &image(Some(OCI_MANIFEST), 2)).unwrap();
        assert_eq!(c.media_type, OCI_MANIFEST);
        assert_eq!(c.blobs.len(), 2);
        assert!(c.children.is_empty());
        // The header alone, or the field alone, is enough.
        assert!(check(Some(OCI_MANIFEST), &image(None, 2)).is_ok());
        assert!(check(None, &image(Some(DOCKER_MANIFEST), 2)).is_ok());
        assert!(check(Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"), &image(None, 2)).is_ok());
    }

    #[test]
    fn index_lists_children() {
        let d = Digest::of(b"m");
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": d.as_str(), "size": 7}],
        });
        let c = check(None, body.to_string().as_bytes()).unwrap();
        assert_eq!(c.children, vec![Referenced { digest: d, size: 7 }]);
    }

    #[test]
    fn refusals() {
        assert!(matches!(check(None, b"not json"), Err(ManifestError::Json(_))));
        assert_eq!(check(None, &image(None, 2)), Err(ManifestError::NoMediaType));
        assert!(matches!(
            check(Some(OCI_INDEX), &image(Some(OCI_MANIFEST), 2)),
            Err(ManifestError::TypeMismatch { .. })
        ));
        assert!(matches!(
            check(Some("application/vnd.docker.distribution.manifest.v1+json"), &image(None, 1)),
            Err(ManifestError::UnsupportedType(_))
        ));
        assert_eq!(check(Some(OCI_MANIFEST), &image(None, 1)), Err(ManifestError::SchemaVersion));
        let bad = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha512:ab","size":1}]}"#;
        assert!(matches!(check(None, bad), Err(ManifestError::Digest(_))));
        assert!(matches!(check(Some(OCI_INDEX), br#"{"schemaVersion":2}"#), Err(ManifestError::Json(_))));
    }
}
