//! The WendyOS wire contract.
//!
//! Package and message names, and field numbers, are those of the published
//! WendyOS protocol wherever we implement the same call. Our own additions
//! live in their own package (`pkicore.v1`) or use field numbers >= 100.
#![allow(clippy::large_enum_variant, missing_docs)]

/// `wendy.agent.services.v1`: the device agent's services.
pub mod agent {
    tonic::include_proto!("wendy.agent.services.v1");
}

/// `wendycloud.v1`: the certificate service pki-core's wendy frontend serves.
pub mod cloud {
    tonic::include_proto!("wendycloud.v1");
}

/// `pkicore.v1`: pki-core's own administration and CRL services.
pub mod pkicore {
    tonic::include_proto!("pkicore.v1");
}

/// Metadata key under which pki-core returns a prost-encoded
/// [`cloud::CertificateError`] with every failed `CertificateService` call.
pub const CERTIFICATE_ERROR_METADATA_KEY: &str = "wendycloud-certificate-error-bin";

/// Largest gRPC message any WendyOS endpoint accepts or sends. Certificates
/// and CSRs are a few KiB even with ML-DSA-87; 256 KiB leaves room for CA
/// bundles and CRLs while refusing oversized requests early.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
