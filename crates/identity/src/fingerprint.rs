//! CA fingerprints: the SHA-256 of the CA certificate's DER, written as 64
//! lowercase hex digits. Inputs are accepted with or without colons, in
//! either case.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::Error;

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let trimmed = s.trim();
        let hex_digits: String = trimmed.chars().filter(|c| *c != ':').collect();
        if hex_digits.len() != 64 {
            return Err(Error::Fingerprint(trimmed.chars().take(100).collect()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&hex_digits, &mut out)
            .map_err(|_| Error::Fingerprint(trimmed.chars().take(100).collect()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_colons() {
        let fp = Fingerprint::of_der(b"hello");
        let plain = fp.to_string();
        assert_eq!(plain.len(), 64);
        assert!(plain.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        let colons: String = plain
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(plain.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn rejects_wrong_lengths_and_digits() {
        assert!("abcd".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
        assert!("".parse::<Fingerprint>().is_err());
    }
}
