//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm this
//! registry accepts (the OCI image spec's registered `sha256` encoding).
//! Anything else (`sha512:`, upper-case hex, a short hex) is refused with
//! `DIGEST_INVALID` before a byte is stored.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The one accepted algorithm, with its separator.
pub const SHA256_PREFIX: &str = "sha256:";

/// Hex characters of a SHA-256 digest.
const SHA256_HEX_LEN: usize = 64;

/// A validated `sha256:` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest this registry accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// Not `algorithm:hex`.
    #[error("not a digest (algorithm:hex)")]
    Malformed,
    /// An algorithm other than sha256.
    #[error("digest algorithm {0:?} is not supported, only sha256")]
    UnsupportedAlgorithm(String),
    /// sha256 with a hex part that is not 64 lower-case hex characters.
    #[error("a sha256 digest has 64 lower-case hex characters")]
    BadHex,
}

impl Digest {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed);
        };
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'));
        if !algorithm_ok || hex.is_empty() {
            return Err(DigestError::Malformed);
        }
        if algorithm != &SHA256_PREFIX[..SHA256_PREFIX.len() - 1] {
            return Err(DigestError::UnsupportedAlgorithm(algorithm.chars().take(32).collect()));
        }
        if hex.len() != SHA256_HEX_LEN || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex);
        }
        Ok(Self(s.to_owned()))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(data);
        hasher.finish()
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[SHA256_PREFIX.len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An incremental SHA-256 that ends in a [`Digest`].
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(sha256)")
    }
}

impl Hasher {
    /// An empty hash.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(format!("{SHA256_PREFIX}{}", hex::encode(self.0.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn computes_and_parses_sha256() {
        let d = Digest::of(b"");
        assert_eq!(d.as_str(), EMPTY);
        assert_eq!(Digest::parse(EMPTY), Ok(d.clone()));
        assert_eq!(d.hex().len(), 64);
        let mut h = Hasher::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), Digest::of(b"abc"));
    }

    #[test]
    fn refuses_other_algorithms_and_bad_hex() {
        assert!(matches!(Digest::parse("sha512:abcd"), Err(DigestError::UnsupportedAlgorithm(_))));
        assert_eq!(Digest::parse(&EMPTY.to_uppercase().replace("SHA256", "sha256")), Err(DigestError::BadHex));
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::BadHex));
        assert_eq!(Digest::parse("sha256"), Err(DigestError::Malformed));
        assert_eq!(Digest::parse(":abc"), Err(DigestError::Malformed));
        assert_eq!(Digest::parse("sha256:"), Err(DigestError::Malformed));
        assert_eq!(Digest::parse("sha 256:ab"), Err(DigestError::Malformed));
    }
}
