//! Refusals of the certificate service, however they travel.
//!
//! `IssueCertificate` and `RefreshCertificate` carry a refusal in their
//! response body (`error`, with gRPC status OK), as the published protocol
//! does. Calls without such a field carry a non-OK status with the same
//! [`CertificateError`] in the [`CERTIFICATE_ERROR_METADATA_KEY`] binary
//! metadata. This module is the one encoder and decoder of both.

use prost::Message;
use tonic::metadata::MetadataValue;

use crate::cloud::{
    Certificate, CertificateError, CertificateErrorCode, IssueCertificateResponse, RefreshCertificateResponse,
};
use crate::CERTIFICATE_ERROR_METADATA_KEY;

/// Details key naming the precise reason behind a coarse published code
/// (for example `token_expired` behind `CERTIFICATE_ERROR_INVALID_ENROLLMENT_TOKEN`).
pub const REASON_DETAIL: &str = "reason";

/// A status with `code`, `error.message` as its message and `error` in the
/// binary metadata.
pub fn status(code: tonic::Code, error: &CertificateError) -> tonic::Status {
    let mut status = tonic::Status::new(code, error.message.clone());
    status.metadata_mut().insert_bin(CERTIFICATE_ERROR_METADATA_KEY, MetadataValue::from_bytes(&error.encode_to_vec()));
    status
}

/// The [`CertificateError`] a status carries, if any.
pub fn from_status(status: &tonic::Status) -> Option<CertificateError> {
    let value = status.metadata().get_bin(CERTIFICATE_ERROR_METADATA_KEY)?;
    let bytes = value.to_bytes().ok()?;
    CertificateError::decode(bytes.as_ref()).ok()
}

/// The published code of `error` (unknown numbers read as unspecified).
pub fn code(error: &CertificateError) -> CertificateErrorCode {
    CertificateErrorCode::try_from(error.code).unwrap_or(CertificateErrorCode::CertificateErrorUnspecified)
}

/// `CERTIFICATE_ERROR_X: message (reason: y)`, for logs and users.
pub fn describe(error: &CertificateError) -> String {
    let mut out = format!("{}: {}", code(error).as_str_name(), error.message);
    if let Some(reason) = error.details.get(REASON_DETAIL) {
        out.push_str(&format!(" (reason: {reason})"));
    }
    out
}

/// Whether a body `error` field says the call was refused.
fn is_set(error: &Option<CertificateError>) -> bool {
    error.as_ref().is_some_and(|e| e.code != 0 || !e.message.is_empty())
}

fn missing() -> CertificateError {
    CertificateError {
        code: CertificateErrorCode::CertificateErrorInternal as i32,
        message: "the response carries neither a certificate nor an error".into(),
        details: Default::default(),
    }
}

impl IssueCertificateResponse {
    /// The certificate, or the refusal the body carries.
    pub fn into_result(self) -> Result<Certificate, CertificateError> {
        if is_set(&self.error) {
            return Err(self.error.unwrap_or_else(missing));
        }
        self.certificate.ok_or_else(missing)
    }

    /// A refusal in the published shape.
    pub fn refused(error: CertificateError) -> Self {
        Self { error: Some(error), ..Default::default() }
    }
}

impl RefreshCertificateResponse {
    /// The certificate, or the refusal the body carries.
    pub fn into_result(self) -> Result<Certificate, CertificateError> {
        if is_set(&self.error) {
            return Err(self.error.unwrap_or_else(missing));
        }
        self.certificate.ok_or_else(missing)
    }

    /// A refusal in the published shape.
    pub fn refused(error: CertificateError) -> Self {
        Self { error: Some(error), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: CertificateErrorCode) -> CertificateError {
        CertificateError {
            code: code as i32,
            message: "no".into(),
            details: [(REASON_DETAIL.to_owned(), "token_expired".to_owned())].into(),
        }
    }

    #[test]
    fn status_round_trip() {
        let e = err(CertificateErrorCode::CertificateErrorInvalidEnrollmentToken);
        let s = status(tonic::Code::FailedPrecondition, &e);
        assert_eq!(from_status(&s), Some(e.clone()));
        assert_eq!(describe(&e), "CERTIFICATE_ERROR_INVALID_ENROLLMENT_TOKEN: no (reason: token_expired)");
        assert_eq!(from_status(&tonic::Status::internal("x")), None);
    }

    #[test]
    fn body_refusals() {
        let r = IssueCertificateResponse::refused(err(CertificateErrorCode::CertificateErrorInvalidCsr));
        assert_eq!(code(&r.into_result().unwrap_err()), CertificateErrorCode::CertificateErrorInvalidCsr);
        let empty = IssueCertificateResponse::default();
        assert_eq!(code(&empty.into_result().unwrap_err()), CertificateErrorCode::CertificateErrorInternal);
        let ok = IssueCertificateResponse {
            certificate: Some(Certificate { id: 3, ..Default::default() }),
            error: Some(CertificateError::default()),
            ..Default::default()
        };
        assert_eq!(ok.into_result().unwrap().id, 3);
        let r = RefreshCertificateResponse::refused(err(CertificateErrorCode::CertificateErrorCertificateRevoked));
        assert_eq!(code(&r.into_result().unwrap_err()), CertificateErrorCode::CertificateErrorCertificateRevoked);
    }
}
