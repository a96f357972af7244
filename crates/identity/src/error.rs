use std::fmt;

/// Everything that can go wrong with keys, certificates, CSRs, CRLs and
/// bundles. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is not valid PEM, or holds no object of the expected kind.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// The input is larger than this library accepts.
    #[error("input too large: {actual} bytes (limit {limit})")]
    TooLarge {
        /// Bytes given.
        actual: usize,
        /// Bytes accepted.
        limit: usize,
    },
    /// A private key could not be parsed or is of an unsupported algorithm.
    #[error("invalid private key: {0}")]
    Key(String),
    /// A certificate is malformed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A CSR is malformed.
    #[error("invalid CSR: {0}")]
    Csr(String),
    /// A CSR's signature does not verify under its own public key.
    #[error("CSR proof of possession failed: the signature does not verify under the CSR's public key")]
    CsrSignature,
    /// A CRL is malformed or its signature does not verify.
    #[error("invalid CRL: {0}")]
    Crl(String),
    /// An unsupported or unknown algorithm.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// A CA fingerprint is not 64 hex digits.
    #[error("invalid CA fingerprint {0:?}: expected 64 hex digits (SHA-256), colons optional")]
    Fingerprint(String),
    /// An unknown role name.
    #[error("unknown role {0:?}: expected Owner, Admin, Member or Viewer")]
    Role(String),
    /// Building a certificate, CSR or CRL failed.
    #[error("could not build {what}: {reason}")]
    Build {
        /// What was being built.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The device holds no certificate chain; TLS cannot be configured.
    #[error("no certificate chain (chainPem is empty): refusing to build a TLS config; the device may need to be re-provisioned")]
    EmptyChain,
}

impl Error {
    pub(crate) fn build(what: &'static str, reason: impl fmt::Display) -> Self {
        Self::Build { what, reason: reason.to_string() }
    }
}
