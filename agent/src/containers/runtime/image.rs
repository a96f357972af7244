//! The image side of the runtime, pure: parsing an image index, manifest
//! and config (OCI image spec, and Docker's schema 2, which has the same
//! shape), picking the host's platform from an index, the layer chain ids
//! and the image's `User`.
//!
//! Everything here reads bytes that a client pushed, so it is hostile
//! input: sizes are capped by the caller before parsing, every digest is
//! parsed ([`Digest::parse`]), and anything unexpected is an
//! [`ImageError`], never a panic.

use std::collections::HashMap;

use containerd_client::types::Descriptor;
use serde::Deserialize;

use crate::containers::{ImageConfig, ProcessUser};
use crate::registry::digest::{Digest, Hasher};
use crate::registry::manifests::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// The largest image config the runtime reads (configs carry the build
/// history, so they can be larger than a manifest).
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// The most layers an image may have (Docker's and overlayfs's practical
/// limit is about 128; more is an attack on the snapshotter).
pub const MAX_LAYERS: usize = 128;

/// Why an image cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A manifest, index or config that is not what its media type says.
    #[error("{what}: {reason}")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A manifest media type the runtime does not know.
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    /// The index has no image for this device's platform.
    #[error("no image for {0} in the index")]
    NoPlatform(String),
    /// The manifest's layers and the config's `diff_ids` differ in number.
    #[error("the manifest has {layers} layers, the config {diff_ids} diff_ids")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },
    /// More than [`MAX_LAYERS`] layers.
    #[error("{0} layers (at most {MAX_LAYERS})")]
    TooManyLayers(usize),
    /// The config's `os` or `architecture` is not this device's.
    #[error("the image is for {0}, this device is {1}")]
    WrongPlatform(String, String),
    /// A `User` the runtime cannot resolve (a name other than `root`: names
    /// would need the image's `/etc/passwd`).
    #[error("image User {0:?}: only numeric uid[:gid] or root is supported")]
    User(String),
}

impl ImageError {
    fn malformed(what: &'static str, reason: impl ToString) -> Self {
        Self::Malformed { what, reason: reason.to_string() }
    }
}

/// An OS and CPU, as image indexes name them (Go's `GOOS`/`GOARCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `os`, always `linux` here.
    pub os: &'static str,
    /// `architecture`: `amd64`, `arm64`, `arm`, ...
    pub architecture: &'static str,
    /// The `variant` preferred when an index offers several (`v8` for
    /// arm64, `v7` for arm).
    pub variant: Option<&'static str>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// The platform this agent was built for.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform { os: "linux", architecture, variant }
}

/// A descriptor, as manifests and indexes write them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Desc {
    /// `mediaType`.
    #[serde(default)]
    pub media_type: String,
    /// `digest`, checked by [`check_desc`].
    pub digest: String,
    /// `size`.
    pub size: i64,
    /// `platform`, in an index.
    #[serde(default)]
    pub platform: Option<DescPlatform>,
}

/// `platform` of an index entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct DescPlatform {
    /// `os`.
    #[serde(default)]
    pub os: String,
    /// `architecture`.
    #[serde(default)]
    pub architecture: String,
    /// `variant`.
    #[serde(default)]
    pub variant: String,
}

impl Desc {
    /// The descriptor containerd's API takes.
    pub fn to_containerd(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

/// A descriptor from containerd (an image's target).
pub fn from_containerd(d: &Descriptor) -> Desc {
    Desc { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size, platform: None }
}

/// A parsed manifest document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// An index (manifest list): its entries.
    Index(Vec<Desc>),
    /// An image manifest: its config and layers, in order.
    Manifest {
        /// The config blob.
        config: Desc,
        /// The layers, base first.
        layers: Vec<Desc>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Option<Vec<Desc>>,
}

/// Parses manifest or index `bytes`; `media_type` is the descriptor's
/// (empty if unknown: then the document's own `mediaType`, then its shape,
/// decide).
pub fn parse_document(media_type: &str, bytes: &[u8]) -> Result<Document, ImageError> {
    const WHAT: &str = "manifest";
    let raw: RawDocument = serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(WHAT, e))?;
    let media_type = if media_type.is_empty() { raw.media_type.as_str() } else { media_type };
    let is_index = match media_type {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => raw.manifests.is_some(),
        other => return Err(ImageError::MediaType(other.chars().take(128).collect())),
    };
    if is_index {
        let entries = raw.manifests.ok_or_else(|| ImageError::malformed("index", "no manifests"))?;
        entries.iter().try_for_each(|d| check_desc("index entry", d))?;
        return Ok(Document::Index(entries));
    }
    let config = raw.config.ok_or_else(|| ImageError::malformed(WHAT, "no config"))?;
    let layers = raw.layers.unwrap_or_default();
    if layers.len() > MAX_LAYERS {
        return Err(ImageError::TooManyLayers(layers.len()));
    }
    check_desc("config", &config)?;
    layers.iter().try_for_each(|d| check_desc("layer", d))?;
    Ok(Document::Manifest { config, layers })
}

/// A descriptor's digest is a digest and its size is not negative.
pub fn check_desc(what: &'static str, d: &Desc) -> Result<(), ImageError> {
    Digest::parse(&d.digest).map_err(|e| ImageError::malformed(what, format!("digest {:.80}: {e}", d.digest)))?;
    if d.size < 0 {
        return Err(ImageError::malformed(what, format!("negative size {}", d.size)));
    }
    Ok(())
}

/// The entry of an index for `platform`: same `os` and `architecture`;
/// among several, the one with the preferred variant, else the first.
/// Nested indexes are not followed (the caller refuses them).
pub fn select_platform<'a>(entries: &'a [Desc], platform: &Platform) -> Option<&'a Desc> {
    let matching: Vec<&Desc> = entries
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture))
        .collect();
    let preferred =
        matching.iter().find(|d| d.platform.as_ref().is_some_and(|p| platform.variant.is_some_and(|v| p.variant == v)));
    preferred.or(matching.first()).copied()
}

/// What the runtime takes from an image's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedConfig {
    /// What the process gets ([`ImageConfig`]).
    pub image: ImageConfig,
    /// `rootfs.diff_ids`: the digests of the uncompressed layers.
    pub diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<RawProcess>,
    rootfs: RawRootfs,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawProcess {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    typ: String,
    diff_ids: Vec<String>,
}

/// Parses an image config and checks it is for `platform` (an empty `os`
/// or `architecture` is taken as matching: some builders leave them out).
pub fn parse_config(bytes: &[u8], platform: &Platform) -> Result<ParsedConfig, ImageError> {
    const WHAT: &str = "image config";
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(WHAT, e))?;
    let os_ok = raw.os.is_empty() || raw.os == platform.os;
    let arch_ok = raw.architecture.is_empty() || raw.architecture == platform.architecture;
    if !os_ok || !arch_ok {
        let image: String = format!("{}/{}", raw.os, raw.architecture).chars().take(64).collect();
        return Err(ImageError::WrongPlatform(image, platform.to_string()));
    }
    if raw.rootfs.typ != "layers" {
        return Err(ImageError::malformed(WHAT, format!("rootfs.type {:.32}", raw.rootfs.typ)));
    }
    if raw.rootfs.diff_ids.len() > MAX_LAYERS {
        return Err(ImageError::TooManyLayers(raw.rootfs.diff_ids.len()));
    }
    let diff_ids = raw
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| ImageError::malformed(WHAT, format!("diff_id {d:.80}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let process = raw.config.unwrap_or_default();
    let image = ImageConfig {
        entrypoint: process.entrypoint.unwrap_or_default(),
        cmd: process.cmd.unwrap_or_default(),
        env: process.env.unwrap_or_default(),
        working_dir: process.working_dir.unwrap_or_default(),
        user: parse_user(process.user.as_deref().unwrap_or(""))?,
    };
    Ok(ParsedConfig { image, diff_ids })
}

/// The image's `User`: empty or `root` is uid 0; `uid` or `uid:gid` in
/// numbers (gid 0 when absent, as Docker does without a passwd entry);
/// `root:gid` too. Names need the image's `/etc/passwd` and are refused.
pub fn parse_user(user: &str) -> Result<ProcessUser, ImageError> {
    let refused = || ImageError::User(user.chars().take(64).collect());
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = match u {
        "" | "root" => 0,
        n => n.parse::<u32>().map_err(|_| refused())?,
    };
    let gid = match g {
        None => 0,
        Some("root") => 0,
        Some(n) => n.parse::<u32>().map_err(|_| refused())?,
    };
    Ok(ProcessUser { uid, gid, additional_gids: Vec::new() })
}

/// The chain ids of a layer stack (OCI image spec, "Layer ChainID"):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1)
/// + " " + DiffID(Ln))`. One per layer; the last names the whole stack.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let mut h = Hasher::new();
                h.update(parent.as_str().as_bytes());
                h.update(b" ");
                h.update(diff_id.as_str().as_bytes());
                h.finish()
            }
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let (a, b, c) = (digest("a"), digest("b"), digest("c"));
        let chain = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert_eq!(chain[2], Digest::of(format!("{} {c}", chain[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("").unwrap(), ProcessUser::default());
        assert_eq!(parse_user("root").unwrap(), ProcessUser::default());
        let u = parse_user("1000:100").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 100));
        let u = parse_user("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 0));
        for bad in ["nobody", "1000:users", "-1", "1:2:3", "99999999999"] {
            assert!(matches!(parse_user(bad), Err(ImageError::User(_))), "{bad}");
        }
    }

    fn entry(arch: &str, variant: &str, d: &str) -> Desc {
        Desc {
            media_type: OCI_MANIFEST.into(),
            digest: digest(d).to_string(),
            size: 1,
            platform: Some(DescPlatform { os: "linux".into(), architecture: arch.into(), variant: variant.into() }),
        }
    }

    #[test]
    fn platform_selection_prefers_the_variant() {
        let arm = Platform { os: "linux", architecture: "arm", variant: Some("v7") };
        let entries = [entry("amd64", "", "x"), entry("arm", "v6", "v6"), entry("arm", "v7", "v7")];
        assert_eq!(select_platform(&entries, &arm).unwrap().digest, digest("v7").to_string());
        let amd = Platform { os: "linux", architecture: "amd64", variant: None };
        assert_eq!(select_platform(&entries, &amd).unwrap().digest, digest("x").to_string());
        let arm64 = Platform { os: "linux", architecture: "arm64", variant: Some("v8") };
        assert!(select_platform(&entries, &arm64).is_none());
        let only_v6 = [entry("arm", "v6", "v6")];
        assert_eq!(select_platform(&only_v6, &arm).unwrap().digest, digest("v6").to_string());
    }

    #[test]
    fn documents() {
        let (c, l) = (digest("c"), digest("l"));
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.as_str(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.as_str(), "size": 3}],
        })
        .to_string();
        let Document::Manifest { config, layers } = parse_document("", m.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!((config.digest.as_str(), layers.len()), (c.as_str(), 1));
        let i = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": c.as_str(), "size": 5, "platform": {"os": "linux", "architecture": "arm64"}}
        ]})
        .to_string();
        assert!(matches!(parse_document("", i.as_bytes()).unwrap(), Document::Index(v) if v.len() == 1));
        assert!(matches!(parse_document(OCI_INDEX, i.as_bytes()).unwrap(), Document::Index(_)));
        // Refusals: bad media type, bad digest, negative size, not JSON.
        assert!(matches!(parse_document("text/plain", m.as_bytes()), Err(ImageError::MediaType(_))));
        let bad = m.replace(l.as_str(), "sha256:zz");
        assert!(matches!(parse_document("", bad.as_bytes()), Err(ImageError::Malformed { .. })));
        let neg = m.replace("\"size\":3", "\"size\":-3");
        assert!(matches!(parse_document("", neg.as_bytes()), Err(ImageError::Malformed { .. })), "{neg}");
        for cut in 0..m.len() {
            assert!(parse_document("", &m.as_bytes()[..cut]).is_err(), "truncated at {cut}");
        }
    }

    #[test]
    fn configs() {
        let host = Platform { os: "linux", architecture: "amd64", variant: None };
        let d = digest("layer");
        let c = serde_json::json!({
            "os": "linux", "architecture": "amd64",
            "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "hi"], "Env": ["A=b"], "WorkingDir": "/w", "User": "1:2"},
            "rootfs": {"type": "layers", "diff_ids": [d.as_str()]},
        })
        .to_string();
        let p = parse_config(c.as_bytes(), &host).unwrap();
        assert_eq!(p.diff_ids, vec![d.clone()]);
        assert_eq!(p.image.entrypoint, ["/bin/busybox"]);
        assert_eq!(p.image.cmd, ["echo", "hi"]);
        assert_eq!(p.image.working_dir, "/w");
        assert_eq!((p.image.user.uid, p.image.user.gid), (1, 2));
        let arm = Platform { os: "linux", architecture: "arm64", variant: None };
        assert!(matches!(parse_config(c.as_bytes(), &arm), Err(ImageError::WrongPlatform(..))));
        let no_process = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": []}}).to_string();
        assert_eq!(parse_config(no_process.as_bytes(), &host).unwrap().image, ImageConfig::default());
        for cut in 0..c.len() {
            assert!(parse_config(&c.as_bytes()[..cut], &host).is_err(), "truncated at {cut}");
        }
    }
}
