//! Private keys: ML-DSA-65 by default, ML-DSA-44/87 and ECDSA P-256 too.
//! Stored as PKCS#8 PEM (`PRIVATE KEY`), the form OpenSSL 3.5 reads and
//! writes.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, PqdsaKeyPair, PqdsaSigningAlgorithm, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rcgen::PublicKeyData;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::Error;

/// A signature algorithm for keys we make and accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ML-DSA-44 (FIPS 204).
    MlDsa44,
    /// ML-DSA-65 (FIPS 204): the default for CAs and leaves.
    #[default]
    MlDsa65,
    /// ML-DSA-87 (FIPS 204).
    MlDsa87,
    /// ECDSA over P-256 with SHA-256, as existing WendyOS agents use.
    EcdsaP256,
}

impl KeyAlgorithm {
    /// Every supported algorithm, in the order keys are tried when parsing.
    pub const ALL: [KeyAlgorithm; 4] = [Self::MlDsa65, Self::MlDsa44, Self::MlDsa87, Self::EcdsaP256];

    /// The canonical lowercase name: `ml-dsa-65`, `ecdsa-p256`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::MlDsa44 => "ml-dsa-44",
            Self::MlDsa65 => "ml-dsa-65",
            Self::MlDsa87 => "ml-dsa-87",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }

    fn ml_dsa_signing(self) -> Option<&'static PqdsaSigningAlgorithm> {
        match self {
            Self::MlDsa44 => Some(&aws_lc_rs::signature::ML_DSA_44_SIGNING),
            Self::MlDsa65 => Some(&aws_lc_rs::signature::ML_DSA_65_SIGNING),
            Self::MlDsa87 => Some(&aws_lc_rs::signature::ML_DSA_87_SIGNING),
            Self::EcdsaP256 => None,
        }
    }

    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::MlDsa44 => &rcgen::PKCS_ML_DSA_44,
            Self::MlDsa65 => &rcgen::PKCS_ML_DSA_65,
            Self::MlDsa87 => &rcgen::PKCS_ML_DSA_87,
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let norm: String = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        match norm.as_str() {
            "ml-dsa-44" | "mldsa44" => Ok(Self::MlDsa44),
            "ml-dsa-65" | "mldsa65" => Ok(Self::MlDsa65),
            "ml-dsa-87" | "mldsa87" => Ok(Self::MlDsa87),
            "ecdsa-p256" | "p256" | "p-256" | "ecdsa" => Ok(Self::EcdsaP256),
            _ => Err(Error::UnsupportedAlgorithm(s.chars().take(40).collect())),
        }
    }
}

/// A private key with its public half. Never printed: `Debug` shows only the
/// algorithm.
pub struct PrivateKey {
    inner: KeyInner,
    algorithm: KeyAlgorithm,
    /// PKCS#8 DER, wiped on drop.
    pkcs8: Zeroizing<Vec<u8>>,
}

enum KeyInner {
    MlDsa(PqdsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

impl PrivateKey {
    /// Generates a fresh key.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, Error> {
        let failed = |_| Error::Key("key generation failed".into());
        let inner = match algorithm.ml_dsa_signing() {
            Some(alg) => KeyInner::MlDsa(PqdsaKeyPair::generate(alg).map_err(failed)?),
            None => KeyInner::Ecdsa(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(failed)?),
        };
        Self::from_inner(inner, algorithm)
    }

    fn from_inner(inner: KeyInner, algorithm: KeyAlgorithm) -> Result<Self, Error> {
        let doc = match &inner {
            KeyInner::MlDsa(k) => k.to_pkcs8v1(),
            KeyInner::Ecdsa(k) => k.to_pkcs8v1(),
        }
        .map_err(|_| Error::Key("could not serialise the key as PKCS#8".into()))?;
        Ok(Self { inner, algorithm, pkcs8: Zeroizing::new(doc.as_ref().to_vec()) })
    }

    /// Parses a PKCS#8 `PRIVATE KEY` PEM of any supported algorithm.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        use rustls_pki_types::pem::PemObject;
        crate::pem::check_size(pem.as_bytes())?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::Key(format!("expected a PKCS#8 PRIVATE KEY PEM block: {e}")))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// Parses a PKCS#8 DER private key of any supported algorithm.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        for algorithm in KeyAlgorithm::ALL {
            let inner = match algorithm.ml_dsa_signing() {
                Some(alg) => PqdsaKeyPair::from_pkcs8(alg, der).ok().map(KeyInner::MlDsa),
                None => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der).ok().map(KeyInner::Ecdsa),
            };
            if let Some(inner) = inner {
                return Self::from_inner(inner, algorithm);
            }
        }
        Err(Error::Key("not a PKCS#8 ML-DSA-44/65/87 or ECDSA P-256 private key".into()))
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// PKCS#8 PEM. The returned string is wiped when dropped.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pem::encode("PRIVATE KEY", &self.pkcs8))
    }

    /// The key as rustls wants it.
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()))
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.subject_public_key_info()
    }

    /// The public key as a `PUBLIC KEY` PEM.
    pub fn public_key_pem(&self) -> String {
        crate::pem::encode("PUBLIC KEY", &self.public_key_der())
    }

    /// Signs `message` (ML-DSA with an empty context; ECDSA with SHA-256).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = |_| Error::Key("signing failed".into());
        match &self.inner {
            KeyInner::MlDsa(k) => {
                let mut sig = vec![0u8; k.algorithm().signature_len()];
                let n = k.sign(message, &mut sig).map_err(failed)?;
                sig.truncate(n);
                Ok(sig)
            }
            KeyInner::Ecdsa(k) => Ok(k.sign(&SystemRandom::new(), message).map_err(failed)?.as_ref().to_vec()),
        }
    }
}

impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        match &self.inner {
            KeyInner::MlDsa(k) => k.public_key().as_ref(),
            KeyInner::Ecdsa(k) => k.public_key().as_ref(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen()
    }
}

impl rcgen::SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        PrivateKey::sign(self, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A public key parsed from a DER SubjectPublicKeyInfo, of a supported
/// algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    bits: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo; trailing bytes are an error.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        use x509_parser::prelude::FromDer;
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::Key(format!("public key: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::Key("trailing bytes after the public key".into()));
        }
        let algorithm = crate::csr::spki_algorithm(&spki)?;
        Ok(Self { algorithm, bits: spki.subject_public_key.data.to_vec() })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }
}

impl PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips_through_pem() {
        for alg in KeyAlgorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(again.algorithm(), alg);
            assert_eq!(again.public_key_der(), key.public_key_der());
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("PRIVATE"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(PrivateKey::from_pem("").is_err());
        assert!(PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
        assert!(PrivateKey::from_pkcs8_der(&[0x30, 0x03, 0x02, 0x01]).is_err());
    }

    #[test]
    fn algorithm_names_parse() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.name().parse::<KeyAlgorithm>().unwrap(), alg);
        }
        assert!("rsa".parse::<KeyAlgorithm>().is_err());
    }
}
