//! The enrolment trust anchor: what the agent trusts pki-core with when it
//! calls `IssueCertificate` for a `StartProvisioning`.
//!
//! In this order, the first one present wins:
//! 1. the request's `ca_fingerprint` (field 100, our addition);
//! 2. `[enrollment] ca_fingerprint = <64 hex>` in the config partition's
//!    `wendy.conf`, imported into the state directory at first boot
//!    ([`PIN_FILE`]);
//! 3. the CA bundle baked into the image ([`crate::config::DEFAULT_ENROLLMENT_CA_FILE`]):
//!    pki-core must chain to one of its CAs.
//!
//! With none of them a stock request (fields 1-4, as published clients
//! send it) is refused with a message that names all three.

use std::path::Path;

use wendy_identity::fingerprint::Fingerprint;

use crate::config::Config;
use crate::state;
use crate::Error;

/// File in the state directory holding the imported fingerprint.
pub const PIN_FILE: &str = "enrollment-ca-fingerprint";
/// `wendy.conf` section of the fingerprint.
pub const CONF_SECTION: &str = "enrollment";
/// `wendy.conf` key of the fingerprint.
pub const CONF_KEY: &str = "ca_fingerprint";
/// Largest enrolment CA bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024;

/// Where the anchor came from (for logs and errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `StartProvisioning.ca_fingerprint`.
    Request,
    /// `wendy.conf [enrollment] ca_fingerprint`.
    SeedConf,
    /// The image's enrolment CA bundle.
    ImageBundle,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Request => "the request's ca_fingerprint",
            Self::SeedConf => "wendy.conf [enrollment] ca_fingerprint",
            Self::ImageBundle => "the image's enrolment CA bundle",
        })
    }
}

/// The CAs pki-core may chain to, and where that trust came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// Accepted CA fingerprints.
    pub pins: Vec<Fingerprint>,
    /// Where they came from.
    pub source: Source,
}

/// Why no anchor could be had.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// None of the three is there.
    #[error(
        "no trust anchor for pki-core: give the pki-core CA fingerprint in StartProvisioning.ca_fingerprint \
         (field 100, e.g. `wendy device provision`), or put `[enrollment] ca_fingerprint = <64 hex>` in the \
         config partition's wendy.conf, or bake the CA bundle into the image at {bundle} \
         (`scripts/build-image --enrollment-ca FILE`)"
    )]
    Missing {
        /// The bundle path looked at.
        bundle: String,
    },
    /// A fingerprint is malformed.
    #[error("{source_name}: {reason}")]
    BadFingerprint {
        /// Which anchor.
        source_name: Source,
        /// What is wrong.
        reason: String,
    },
    /// The image's bundle is unreadable or holds no CA.
    #[error("the enrolment CA bundle {path} is unusable: {reason}")]
    BadBundle {
        /// The bundle path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Resolves the anchor for a request whose `ca_fingerprint` is `requested`
/// (empty if the client sent none).
pub fn resolve(requested: &str, config: &Config) -> Result<Anchor, AnchorError> {
    let requested = requested.trim();
    if !requested.is_empty() {
        return parse(requested, Source::Request);
    }
    if let Some(text) = read_small(&config.config_dir.join(PIN_FILE), 1024) {
        return parse(text.trim(), Source::SeedConf);
    }
    let bundle = &config.enrollment_ca_file;
    match std::fs::symlink_metadata(bundle) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(AnchorError::Missing { bundle: bundle.display().to_string() })
        }
        _ => bundle_pins(bundle),
    }
}

fn parse(text: &str, source: Source) -> Result<Anchor, AnchorError> {
    let fp = text
        .parse::<Fingerprint>()
        .map_err(|e| AnchorError::BadFingerprint { source_name: source, reason: e.to_string() })?;
    Ok(Anchor { pins: vec![fp], source })
}

fn bundle_pins(path: &Path) -> Result<Anchor, AnchorError> {
    let bad = |reason: String| AnchorError::BadBundle { path: path.display().to_string(), reason };
    let text = read_small(path, MAX_BUNDLE_BYTES)
        .ok_or_else(|| bad(format!("not a readable regular file of at most {MAX_BUNDLE_BYTES} bytes")))?;
    let certs = wendy_identity::pem::certificates(&text).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(Anchor { pins: certs.iter().map(|c| Fingerprint::of_der(c)).collect(), source: Source::ImageBundle })
}

/// A regular file of at most `max` bytes as text (no symlink, no FIFO),
/// else `None`.
fn read_small(path: &Path, max: u64) -> Option<String> {
    wendy_net::safe_read::read_to_string(path, max).ok()
}

/// Imports `[enrollment] ca_fingerprint` from a `wendy.conf` text into the
/// state directory (first boot). A malformed value is refused, not stored.
pub fn import_from_conf(text: &str, config_dir: &Path) -> Result<Option<Fingerprint>, Error> {
    let Some(value) = crate::firstboot::ini_raw(text, CONF_SECTION, CONF_KEY) else {
        return Ok(None);
    };
    let fp = value
        .parse::<Fingerprint>()
        .map_err(|e| Error::Config(format!("wendy.conf [{CONF_SECTION}] {CONF_KEY}: {e}")))?;
    state::ensure_dir(config_dir)?;
    state::write_atomic(&config_dir.join(PIN_FILE), fp.to_string().as_bytes(), 0o600, false)?;
    Ok(Some(fp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config::from_lookup(|_| None).unwrap();
        c.config_dir = dir.join("state");
        c.enrollment_ca_file = dir.join("enrollment-ca.pem");
        c
    }

    #[test]
    fn order_of_anchors() {
        let t = tempfile::tempdir().unwrap();
        let c = config(t.path());
        let e = resolve("", &c).unwrap_err().to_string();
        for needle in ["ca_fingerprint", "[enrollment]", "enrollment-ca.pem"] {
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
        let fp = "ab".repeat(32);
        assert_eq!(resolve(&fp, &c).unwrap().source, Source::Request);
        assert!(matches!(resolve("zz", &c), Err(AnchorError::BadFingerprint { .. })));
        let conf = format!("[device]\nname=x\n[enrollment]\nca_fingerprint = {}\n", "cd".repeat(32));
        assert!(import_from_conf(&conf, &c.config_dir).unwrap().is_some());
        let a = resolve("", &c).unwrap();
        assert_eq!((a.source, a.pins[0].to_string()), (Source::SeedConf, "cd".repeat(32)));
        assert!(import_from_conf("[enrollment]\nca_fingerprint=nope\n", &c.config_dir).is_err());
        std::fs::remove_file(c.config_dir.join(PIN_FILE)).unwrap();
        std::fs::write(&c.enrollment_ca_file, "not pem").unwrap();
        assert!(matches!(resolve("", &c), Err(AnchorError::BadBundle { .. })));
    }
}
