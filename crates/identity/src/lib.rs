//! Device and user identity for WendyOS.
//!
//! Everything about keys, certificates and TLS that the agent, the CLI and
//! pki-core share lives here, so that all three agree byte for byte:
//!
//! - [`key`]: ML-DSA-44/65/87 and ECDSA P-256 keys as PKCS#8 PEM;
//! - [`csr`]: building CSRs and verifying their proof of possession;
//! - [`profile`]: the CA, device, user and server certificate profiles;
//! - [`crl`]: building and parsing CRLs;
//! - [`bundle`]: trust bundles that may hold several CAs with one subject;
//! - [`verify`]: the WendyOS client-certificate semantics (rollover, exact
//!   error messages, clientAuth, revocation, roles);
//! - [`tls`]: rustls configs, TLS 1.3 only, X25519MLKEM768 preferred;
//! - [`fingerprint`]: CA fingerprints (SHA-256 of the DER, lowercase hex).
//!
//! Parsing never panics on input: hostile bytes give an [`Error`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod crl;
pub mod csr;
mod error;
pub mod fingerprint;
pub mod key;
pub mod pem;
pub mod profile;
pub mod role;
pub mod tls;
pub mod verify;

pub use error::Error;

/// The subject common name prefix of every device certificate:
/// `sh/wendy/<organization id>/<asset id>`.
pub const DEVICE_CN_PREFIX: &str = "sh/wendy/";

/// The DNS name pki-core's TLS server certificate carries, and that clients
/// verify after pinning the CA fingerprint. Device certificates never carry
/// it, so a device cannot impersonate pki-core.
pub const PKICORE_SERVER_NAME: &str = "pki-core.wendy.internal";
