//! Enrolment: validating `StartProvisioning`, making the device key and CSR
//! on the device, and asking pki-core for the certificate.

use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::device_common_name;
use wendy_identity::tls::Credentials;
use wendy_identity::verify::CertificateInfo;
use wendy_proto::agent::StartProvisioningRequest;
use wendy_proto::cloud::{CertificateError, CertificateErrorCode};
use wendy_proto::cloud::{IssueCertificateRequest, RefreshCertificateRequest};

use crate::anchor::{Anchor, AnchorError};
use crate::cloud::{self, Security};
use crate::crash;
use crate::state::Provisioning;

/// Longest enrolment token accepted.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest device name accepted.
pub const MAX_NAME_BYTES: usize = 63;

/// A `StartProvisioning` request whose fields all checked out.
#[derive(Clone)]
pub struct Request {
    /// Organization id (> 0).
    pub organization_id: i32,
    /// Asset id (> 0).
    pub asset_id: i32,
    /// pki-core, normalized `host:port`.
    pub cloud_host: String,
    /// The one-time token. Never logged.
    token: String,
    /// The request's `ca_fingerprint` (checked), empty if none was sent.
    pub ca_fingerprint: String,
    /// Whether the client asked for plaintext enrolment.
    pub allow_plaintext: bool,
    /// The device name for the advertisement, if given.
    pub device_name: Option<String>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("organization_id", &self.organization_id)
            .field("asset_id", &self.asset_id)
            .field("cloud_host", &self.cloud_host)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("device_name", &self.device_name)
            .finish_non_exhaustive()
    }
}

/// What went wrong during enrolment. Each maps to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A request field is invalid.
    #[error("invalid StartProvisioning request: {0}")]
    Invalid(String),
    /// The device has no trust anchor for pki-core, or a bad one.
    #[error(transparent)]
    NoAnchor(#[from] AnchorError),
    /// pki-core could not be reached (network, TLS, pin mismatch).
    #[error(transparent)]
    Unreachable(#[from] cloud::ChannelError),
    /// pki-core refused the request.
    #[error("pki-core refused the certificate: {}", wendy_proto::refusal::describe(.0))]
    Refused(CertificateError),
    /// pki-core failed without saying why (a gRPC status without detail).
    #[error("pki-core failed: {0}")]
    Failed(String),
    /// pki-core answered with something unusable.
    #[error("pki-core returned an unusable certificate: {0}")]
    BadResponse(String),
    /// Local key or CSR generation failed.
    #[error("could not make the device key or CSR: {0}")]
    Local(#[from] wendy_identity::Error),
}

impl EnrollError {
    /// pki-core's answer to a failed call: the `CertificateError` it
    /// carries, else the bare status.
    pub fn from_status(status: &tonic::Status) -> Self {
        match wendy_proto::refusal::from_status(status) {
            Some(e) => Self::Refused(e),
            None => Self::Failed(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

impl From<EnrollError> for tonic::Status {
    /// A refusal by pki-core is FAILED_PRECONDITION with pki-core's
    /// `CertificateError` forwarded ([`wendy_proto::refusal`]).
    fn from(e: EnrollError) -> Self {
        let msg = e.to_string();
        match e {
            EnrollError::Invalid(_) => tonic::Status::invalid_argument(msg),
            EnrollError::NoAnchor(AnchorError::BadFingerprint { .. }) => tonic::Status::invalid_argument(msg),
            EnrollError::NoAnchor(_) => tonic::Status::failed_precondition(msg),
            EnrollError::Unreachable(cloud::ChannelError::BadHost(_)) => tonic::Status::invalid_argument(msg),
            EnrollError::Unreachable(cloud::ChannelError::Untrusted { .. }) => tonic::Status::failed_precondition(msg),
            EnrollError::Unreachable(_) | EnrollError::Failed(_) => tonic::Status::unavailable(msg),
            EnrollError::Refused(error) => {
                let forwarded = CertificateError { message: msg, ..error };
                wendy_proto::refusal::status(tonic::Code::FailedPrecondition, &forwarded)
            }
            EnrollError::BadResponse(_) => tonic::Status::failed_precondition(msg),
            EnrollError::Local(_) => tonic::Status::internal(msg),
        }
    }
}

/// Whether a refusal means the enrolment token is spent or bad (the retry
/// needs a new one), as opposed to a transient failure.
pub fn is_token_refusal(e: &EnrollError) -> bool {
    matches!(e, EnrollError::Refused(c) if wendy_proto::refusal::code(c) == CertificateErrorCode::CertificateErrorInvalidEnrollmentToken)
}

/// Checks every field of `req`.
pub fn validate(req: &StartProvisioningRequest) -> Result<Request, EnrollError> {
    let invalid = |s: String| Err(EnrollError::Invalid(s));
    if req.organization_id <= 0 {
        return invalid(format!("organization_id must be positive, got {}", req.organization_id));
    }
    if req.asset_id <= 0 {
        return invalid(format!("asset_id must be positive, got {}", req.asset_id));
    }
    let token = req.enrollment_token.trim();
    if token.is_empty() {
        return invalid("enrollment_token is empty".into());
    }
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid(format!("enrollment_token must be at most {MAX_TOKEN_BYTES} printable ASCII characters"));
    }
    if req.cloud_host.trim().is_empty() {
        return invalid("cloud_host is empty".into());
    }
    let cloud_host = cloud::normalize_host(&req.cloud_host).map_err(|e| EnrollError::Invalid(e.to_string()))?;
    let ca_fingerprint = req.ca_fingerprint.trim();
    if !ca_fingerprint.is_empty() {
        ca_fingerprint.parse::<Fingerprint>().map_err(|e| EnrollError::Invalid(format!("ca_fingerprint: {e}")))?;
    }
    let name = req.device_name.trim();
    let device_name = if name.is_empty() {
        None
    } else if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return invalid(format!("device_name must be at most {MAX_NAME_BYTES} bytes without control characters"));
    } else {
        Some(name.to_owned())
    };
    Ok(Request {
        organization_id: req.organization_id,
        asset_id: req.asset_id,
        cloud_host,
        token: token.to_owned(),
        ca_fingerprint: ca_fingerprint.to_owned(),
        allow_plaintext: req.allow_plaintext_enrollment,
        device_name,
    })
}

/// How the device will talk to pki-core for this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// TLS to a pki-core chaining to the anchor.
    Pinned(Anchor),
    /// Plaintext (explicit compatibility option, no anchor).
    Plaintext,
}

/// The trust for `req`: its own fingerprint, else the stored anchors, else
/// plaintext if (and only if) the request asked for it.
pub fn trust(req: &Request, config: &crate::config::Config) -> Result<Trust, EnrollError> {
    if req.ca_fingerprint.is_empty() && req.allow_plaintext {
        return Ok(Trust::Plaintext);
    }
    Ok(Trust::Pinned(crate::anchor::resolve(&req.ca_fingerprint, config)?))
}

/// Makes the device key and CSR, calls `IssueCertificate`, and returns the
/// identity to store. Nothing is written here.
pub async fn enroll(req: &Request, trust: &Trust, algorithm: KeyAlgorithm) -> Result<Provisioning, EnrollError> {
    let key = PrivateKey::generate(algorithm)?;
    crash::point("after-keygen");
    let cn = device_common_name(req.organization_id, req.asset_id);
    let csr = wendy_identity::csr::build(&key, &cn)?;
    let security = match trust {
        Trust::Pinned(anchor) => {
            tracing::info!(anchor = %anchor.source, "verifying pki-core against the enrolment trust anchor");
            Security::Pinned { pins: anchor.pins.clone(), client: None }
        }
        Trust::Plaintext => {
            tracing::warn!(cloud_host = %req.cloud_host, "enrolling over PLAINTEXT (allow_plaintext_enrollment)");
            Security::Plaintext
        }
    };
    let channel = cloud::connect(&req.cloud_host, security).await?;
    let cert = cloud::certificates(channel)
        .issue_certificate(IssueCertificateRequest { pem_csr: csr, enrollment_token: req.token.clone() })
        .await
        .map_err(|s| EnrollError::from_status(&s))?
        .into_inner()
        .into_result()
        .map_err(EnrollError::Refused)?;
    crash::point("after-issue");
    let p = Provisioning {
        enrolled: true,
        cloud_host: req.cloud_host.clone(),
        org_id: req.organization_id,
        asset_id: req.asset_id,
        key_pem: key.to_pem().to_string(),
        cert_pem: cert.pem_certificate,
        chain_pem: cert.pem_certificate_chain,
    };
    check_identity(&p, Some(&cn)).map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    Ok(p)
}

/// Checks that a stored or received identity is usable: the key matches the
/// certificate, the chain is there (else [`wendy_identity::Error::EmptyChain`]),
/// and the certificate names `expected_cn` if given.
pub fn check_identity(p: &Provisioning, expected_cn: Option<&str>) -> Result<Credentials, wendy_identity::Error> {
    let credentials = Credentials::from_pems(&p.key_pem, &p.cert_pem, &p.chain_pem)?;
    let info = CertificateInfo::from_der(&credentials.chain[0])?;
    if let Some(cn) = expected_cn {
        if info.common_name.as_deref() != Some(cn) {
            return Err(wendy_identity::Error::Certificate(format!(
                "the certificate names {:?}, expected {cn:?}",
                info.common_name.unwrap_or_default()
            )));
        }
    }
    if !info.server_auth {
        return Err(wendy_identity::Error::Certificate("the device certificate lacks serverAuth".into()));
    }
    // The chain must be a bundle the agent can trust clients with.
    wendy_identity::bundle::TrustBundle::from_pem(&p.chain_pem)?;
    Ok(credentials)
}

/// The pin for talking to pki-core after enrolment: the last CA of the
/// stored chain (pki-core's CA).
pub fn chain_pin(p: &Provisioning) -> Result<Fingerprint, wendy_identity::Error> {
    let cas = wendy_identity::pem::certificates(&p.chain_pem)?;
    cas.last().map(|c| Fingerprint::of_der(c)).ok_or(wendy_identity::Error::EmptyChain)
}

/// Renews the device certificate with `RefreshCertificate` over mTLS: a new
/// key, a new CSR, the same subject. Returns the identity to store.
///
/// The new key has the algorithm of the current one.
pub async fn refresh(current: &Provisioning, credentials: &Credentials) -> Result<Provisioning, EnrollError> {
    let key = PrivateKey::generate(PrivateKey::from_pem(&current.key_pem)?.algorithm())?;
    let cn = device_common_name(current.org_id, current.asset_id);
    let csr = wendy_identity::csr::build(&key, &cn)?;
    let pin = chain_pin(current)?;
    let channel =
        cloud::connect(&current.cloud_host, Security::Pinned { pins: vec![pin], client: Some(credentials) }).await?;
    let cert = cloud::certificates(channel)
        .refresh_certificate(RefreshCertificateRequest { pem_csr: csr })
        .await
        .map_err(|s| EnrollError::from_status(&s))?
        .into_inner()
        .into_result()
        .map_err(EnrollError::Refused)?;
    let chain_pem = if cert.pem_certificate_chain.trim().is_empty() {
        current.chain_pem.clone()
    } else {
        cert.pem_certificate_chain
    };
    let p = Provisioning {
        enrolled: true,
        cloud_host: current.cloud_host.clone(),
        org_id: current.org_id,
        asset_id: current.asset_id,
        key_pem: key.to_pem().to_string(),
        cert_pem: cert.pem_certificate,
        chain_pem,
    };
    check_identity(&p, Some(&cn)).map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> StartProvisioningRequest {
        StartProvisioningRequest {
            organization_id: 1,
            enrollment_token: "tok".into(),
            cloud_host: "127.0.0.1:1".into(),
            asset_id: 2,
            ca_fingerprint: "ab".repeat(32),
            allow_plaintext_enrollment: false,
            device_name: "dev".into(),
        }
    }

    #[test]
    fn every_field_is_validated() {
        assert!(validate(&good()).is_ok());
        type Case = (fn(&mut StartProvisioningRequest), &'static str);
        let cases: Vec<Case> = vec![
            (|r| r.organization_id = 0, "organization_id"),
            (|r| r.asset_id = -1, "asset_id"),
            (|r| r.enrollment_token = " ".into(), "enrollment_token"),
            (|r| r.enrollment_token = "x".repeat(5000), "enrollment_token"),
            (|r| r.cloud_host = "".into(), "cloud_host"),
            (|r| r.cloud_host = "a b".into(), "invalid cloud host"),
            (|r| r.ca_fingerprint = "zz".into(), "ca_fingerprint"),
            (|r| r.device_name = "x\ny".into(), "device_name"),
        ];
        for (mutate, expect) in cases {
            let mut r = good();
            mutate(&mut r);
            let e = validate(&r).unwrap_err();
            assert!(e.to_string().contains(expect), "{e} should mention {expect}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        }
        let mut r = good();
        r.ca_fingerprint.clear();
        assert!(validate(&r).is_ok(), "a stock request (fields 1-4) is valid");
        r.allow_plaintext_enrollment = true;
        let config = crate::config::Config::from_lookup(|_| None).unwrap();
        assert_eq!(trust(&validate(&r).unwrap(), &config).unwrap(), Trust::Plaintext);
    }

    #[test]
    fn token_never_in_debug() {
        let r = validate(&good()).unwrap();
        assert!(!format!("{r:?}").contains("tok\""));
    }
}
