//! Repository names and manifest references, validated per the OCI
//! distribution spec:
//! - a name is `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` components joined by
//!   `/`, at most [`MAX_NAME_BYTES`] long (the cap clients apply);
//! - a tag is `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`;
//! - a reference is a tag or a [`Digest`].

use std::fmt;

use super::digest::{Digest, DigestError};

/// The longest repository name accepted.
pub const MAX_NAME_BYTES: usize = 255;

/// The longest tag (the spec's regex allows 128 characters).
pub const MAX_TAG_BYTES: usize = 128;

/// A validated repository name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A validated tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What a manifest is addressed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

/// Why a name or reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The repository name does not match the spec's grammar.
    #[error("repository name is not [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* components joined by '/'")]
    BadName,
    /// The repository name is too long.
    #[error("repository name is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// The tag does not match `[a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}`.
    #[error("tag is not [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    BadTag,
    /// The reference looks like a digest but is not one we accept.
    #[error("{0}")]
    Digest(#[from] DigestError),
}

impl RepoName {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_NAME_BYTES {
            return Err(NameError::NameTooLong);
        }
        if s.is_empty() || !s.split('/').all(component_ok) {
            return Err(NameError::BadName);
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: alphanumeric runs separated by `.`, `_`, `__` or
/// one or more `-`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // An alphanumeric run.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Tag {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
        let rest_ok = b.iter().skip(1).all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'));
        if !first_ok || !rest_ok || b.len() > MAX_TAG_BYTES {
            return Err(NameError::BadTag);
        }
        Ok(Self(s.to_owned()))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Reference {
    /// A digest if `s` has a `:` (tags cannot), else a tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Self::Digest(Digest::parse(s)?))
        } else {
            Ok(Self::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => t.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "hello", "org/app", "a.b_c__d---e/f0", "library/alpine", "0/1/2"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a._b", "a b", "a:b", "../a", "a/.."] {
            assert_eq!(RepoName::parse(bad), Err(NameError::BadName), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(MAX_NAME_BYTES)).is_ok());
        assert_eq!(RepoName::parse(&"a".repeat(MAX_NAME_BYTES + 1)), Err(NameError::NameTooLong));
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse("v1.0_rc-2").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(&"t".repeat(MAX_TAG_BYTES)).is_ok());
        for bad in ["", ".x", "-x", "a/b", "a b", &"t".repeat(MAX_TAG_BYTES + 1)] {
            assert_eq!(Tag::parse(bad), Err(NameError::BadTag), "{bad}");
        }
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = Digest::of(b"x");
        assert_eq!(Reference::parse(d.as_str()), Ok(Reference::Digest(d)));
        assert!(matches!(Reference::parse("md5:abcd"), Err(NameError::Digest(_))));
    }
}
