//! The distribution spec's error codes and its JSON error body
//! (`{"errors":[{"code","message","detail"}]}`).

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;

/// An error code of the distribution spec (plus `UNKNOWN`, the Docker
/// registry's code for a server-side failure, which the spec lacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The blob is not in the registry.
    BlobUnknown,
    /// The upload is malformed (bad range, short body).
    BlobUploadInvalid,
    /// No such upload session (never started, finished, or expired).
    BlobUploadUnknown,
    /// The content does not match its digest, or the digest is refused.
    DigestInvalid,
    /// A blob or child manifest the manifest references is missing.
    ManifestBlobUnknown,
    /// The manifest is malformed or of an unsupported type.
    ManifestInvalid,
    /// The manifest is not in the registry.
    ManifestUnknown,
    /// The repository name is invalid.
    NameInvalid,
    /// The repository is not known.
    NameUnknown,
    /// A size is wrong or over a limit.
    SizeInvalid,
    /// The caller is not authenticated.
    Unauthorized,
    /// The caller may not do this, or the device refuses the bytes (quota).
    Denied,
    /// The operation is not supported.
    Unsupported,
    /// Too many concurrent uploads.
    TooManyRequests,
    /// A failure on the device (content store).
    Unknown,
}

impl ErrorCode {
    /// The code as the JSON body spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec pairs with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BlobUnknown | Self::BlobUploadUnknown | Self::ManifestUnknown | Self::NameUnknown => {
                StatusCode::NOT_FOUND
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid => StatusCode::BAD_REQUEST,
        }
    }
}

/// A refusal: status, code, message and any headers the spec asks for
/// (e.g. `Range` on a 416).
#[derive(Clone, Debug)]
pub struct RegistryError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The spec's code.
    pub code: ErrorCode,
    /// A message for the operator; clients print it.
    pub message: String,
    /// Extra response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RegistryError {
    /// `code` with its usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), headers: Vec::new() }
    }

    /// The same refusal with another status (413, 416, 507).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
        });
        body.to_string().into_bytes()
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code.as_str(), self.message)
    }
}

impl std::error::Error for RegistryError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_spec_shape() {
        let e = RegistryError::new(ErrorCode::BlobUnknown, "no such blob");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "no such blob");
    }
}
