//! Engine errors and how they travel over gRPC: a status code plus a
//! prost-encoded `CertificateError` in the
//! [`wendy_proto::CERTIFICATE_ERROR_METADATA_KEY`] binary metadata.

use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use wendy_proto::cloud::{CertificateError, CertificateErrorCode};

/// Everything the engine can refuse or fail with. Messages never contain
/// secrets (tokens, API keys, private keys).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CSR is malformed, or its proof of possession failed.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The enrolment token is unknown or malformed.
    #[error("invalid enrollment token")]
    InvalidToken,
    /// The enrolment token has expired.
    #[error("enrollment token expired")]
    TokenExpired,
    /// The enrolment token was used already.
    #[error("enrollment token already used")]
    TokenAlreadyUsed,
    /// No such certificate.
    #[error("certificate not found")]
    CertificateNotFound,
    /// The certificate is revoked.
    #[error("certificate revoked")]
    CertificateRevoked,
    /// The certificate has expired.
    #[error("certificate expired")]
    CertificateExpired,
    /// Missing or wrong credentials (API key or client certificate).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A request field is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Something that does not exist (a CA, an API key).
    #[error("not found: {0}")]
    NotFound(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] crate::store::StoreError),
    /// Certificate machinery failed.
    #[error("identity: {0}")]
    Identity(#[from] wendy_identity::Error),
    /// Anything else on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The published `CertificateErrorCode` for this error.
    pub fn certificate_error_code(&self) -> CertificateErrorCode {
        match self {
            Self::InvalidCsr(_) => CertificateErrorCode::InvalidCsr,
            Self::InvalidToken => CertificateErrorCode::InvalidToken,
            Self::TokenExpired => CertificateErrorCode::TokenExpired,
            Self::TokenAlreadyUsed => CertificateErrorCode::TokenAlreadyUsed,
            Self::CertificateNotFound | Self::NotFound(_) => CertificateErrorCode::CertificateNotFound,
            Self::CertificateRevoked => CertificateErrorCode::CertificateRevoked,
            Self::CertificateExpired => CertificateErrorCode::CertificateExpired,
            Self::Unauthenticated(_) | Self::PermissionDenied(_) => CertificateErrorCode::PermissionDenied,
            Self::InvalidArgument(_) => CertificateErrorCode::Unspecified,
            Self::Storage(_) | Self::Identity(_) | Self::Internal(_) => CertificateErrorCode::Internal,
        }
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> Code {
        match self {
            Self::InvalidCsr(_) | Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::InvalidToken | Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::TokenExpired | Self::TokenAlreadyUsed => Code::FailedPrecondition,
            Self::CertificateNotFound | Self::NotFound(_) => Code::NotFound,
            Self::CertificateRevoked | Self::CertificateExpired | Self::PermissionDenied(_) => {
                Code::PermissionDenied
            }
            Self::Storage(_) | Self::Identity(_) | Self::Internal(_) => Code::Internal,
        }
    }

    /// The message a client sees. Internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Self::Storage(_) | Self::Identity(_) | Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        if matches!(e, Error::Storage(_) | Error::Identity(_) | Error::Internal(_)) {
            tracing::error!(error = %e, "request failed");
        }
        let detail = CertificateError {
            code: e.certificate_error_code() as i32,
            message: e.public_message(),
            details: Default::default(),
        };
        let mut status = Status::new(e.grpc_code(), detail.message.clone());
        status
            .metadata_mut()
            .insert_bin(wendy_proto::CERTIFICATE_ERROR_METADATA_KEY, MetadataValue::from_bytes(&detail.encode_to_vec()));
        status
    }
}

/// Reads the `CertificateError` a pki-core status carries, if any.
pub fn certificate_error(status: &Status) -> Option<CertificateError> {
    let value = status.metadata().get_bin(wendy_proto::CERTIFICATE_ERROR_METADATA_KEY)?;
    let bytes = value.to_bytes().ok()?;
    CertificateError::decode(bytes.as_ref()).ok()
}

/// The result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
