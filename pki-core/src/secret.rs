//! Random secrets (enrolment tokens, API keys) and their stored hashes.
//! Only SHA-256 hashes are stored; secrets are shown once.

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix of enrolment tokens, so they are recognisable in a paste buffer.
pub const TOKEN_PREFIX: &str = "wet_";

/// Prefix of generated API keys.
pub const API_KEY_PREFIX: &str = "wak_";

/// A fresh random secret: `prefix` plus 32 random bytes as hex.
pub fn generate(prefix: &str) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(format!("{prefix}{}", hex::encode(bytes.as_ref())))
}

/// The stored form of a secret: lowercase hex SHA-256.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// A short random identifier (16 hex digits) for records.
pub fn random_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_hashes_stable() {
        let a = generate(TOKEN_PREFIX);
        let b = generate(TOKEN_PREFIX);
        assert_ne!(*a, *b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash(&a), hash(&a));
        assert_eq!(hash(&a).len(), 64);
    }
}
