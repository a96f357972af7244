//! Engine errors and how they travel over gRPC: in the response body of
//! `IssueCertificate` and `RefreshCertificate` (published shape), else as a
//! status code plus the `CertificateError` in binary metadata
//! ([`wendy_proto::refusal`]).

use tonic::{Code, Status};
use wendy_proto::cloud::{CertificateError, CertificateErrorCode};
use wendy_proto::refusal::REASON_DETAIL;

/// Everything the engine can refuse or fail with. Messages never contain
/// secrets (tokens, API keys, private keys).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// An explicit asset id already has an identity (or a pending token).
    #[error("asset in use: {0}")]
    AssetInUse(String),
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
    /// The published `CertificateErrorCode` for this error. The published
    /// codes are coarser than ours; [`Error::reason`] keeps the precise one.
    pub fn certificate_error_code(&self) -> CertificateErrorCode {
        use CertificateErrorCode as C;
        match self {
            Self::InvalidCsr(_) => C::CertificateErrorInvalidCsr,
            Self::InvalidToken | Self::TokenExpired | Self::TokenAlreadyUsed => {
                C::CertificateErrorInvalidEnrollmentToken
            }
            Self::CertificateNotFound => C::CertificateErrorUnspecified,
            Self::NotFound(_) | Self::AssetInUse(_) => C::CertificateErrorUnspecified,
            Self::CertificateRevoked => C::CertificateErrorCertificateRevoked,
            Self::CertificateExpired => C::CertificateErrorCertificateExpired,
            Self::Unauthenticated(_) | Self::PermissionDenied(_) => C::CertificateErrorUnauthorized,
            Self::InvalidArgument(_) => C::CertificateErrorUnspecified,
            Self::Storage(_) | Self::Identity(_) | Self::Internal(_) => C::CertificateErrorInternal,
        }
    }

    /// The precise reason, carried in `CertificateError.details["reason"]`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidCsr(_) => "invalid_csr",
            Self::InvalidToken => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenAlreadyUsed => "token_already_used",
            Self::CertificateNotFound => "certificate_not_found",
            Self::CertificateRevoked => "certificate_revoked",
            Self::CertificateExpired => "certificate_expired",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::AssetInUse(_) => "asset_in_use",
            Self::Storage(_) | Self::Identity(_) | Self::Internal(_) => "internal",
        }
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> Code {
        match self {
            Self::InvalidCsr(_) | Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::InvalidToken | Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::TokenExpired | Self::TokenAlreadyUsed | Self::AssetInUse(_) => Code::FailedPrecondition,
            Self::CertificateNotFound | Self::NotFound(_) => Code::NotFound,
            Self::CertificateRevoked | Self::CertificateExpired | Self::PermissionDenied(_) => Code::PermissionDenied,
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

    /// The published `CertificateError` for this error (logs internal
    /// failures, whose details never reach the client).
    pub fn to_certificate_error(&self) -> CertificateError {
        if matches!(self, Error::Storage(_) | Error::Identity(_) | Error::Internal(_)) {
            tracing::error!(error = %self, "request failed");
        }
        CertificateError {
            code: self.certificate_error_code() as i32,
            message: self.public_message(),
            details: [(REASON_DETAIL.to_owned(), self.reason().to_owned())].into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        wendy_proto::refusal::status(e.grpc_code(), &e.to_certificate_error())
    }
}

/// Reads the `CertificateError` a pki-core status carries, if any.
pub fn certificate_error(status: &Status) -> Option<CertificateError> {
    wendy_proto::refusal::from_status(status)
}

/// The result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
