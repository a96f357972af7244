//! Typed errors and the exit codes they map to.
//!
//! Every error says what went wrong and, where there is one, what to do
//! next. The exit codes are documented in `cli/README.md` and are part of
//! the CLI's interface: scripts may rely on them.

use std::fmt;
use std::path::PathBuf;

use wendy_proto::cloud::{CertificateError, CertificateErrorCode};

/// The process exit codes `wendy` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Anything not covered below.
    Generic = 1,
    /// Bad command line.
    Usage = 2,
    /// Missing, expired or refused credentials (CLI certificate, API key,
    /// enrolment token).
    Auth = 3,
    /// A device or pki-core could not be reached, or no device was found.
    Unreachable = 4,
    /// The peer understood who we are and said no (role too low).
    PermissionDenied = 5,
    /// Trust failure: CA fingerprint mismatch, unverifiable peer, or the
    /// user declined to trust a new CA.
    Trust = 6,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Everything that can make a `wendy` command fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line is inconsistent in a way clap cannot check.
    #[error("{0}")]
    Usage(String),
    /// No CLI certificate is stored.
    #[error("no CLI certificate in {}; run `wendy auth login-local --cloud HOST:PORT --api-key KEY` first", dir.display())]
    NotLoggedIn {
        /// The config directory searched.
        dir: PathBuf,
    },
    /// The stored CLI certificate has expired.
    #[error("CLI certificate expired at {not_after}; run `wendy auth login-local` to get a new one (`wendy auth refresh` only works before expiry)")]
    CertificateExpired {
        /// notAfter, RFC 3339.
        not_after: String,
    },
    /// A peer refused our credentials (API key, token or certificate).
    #[error("{context}: {message}{}", hint_suffix(hint))]
    Unauthenticated {
        /// What we were doing.
        context: String,
        /// What the peer said.
        message: String,
        /// What to do next.
        hint: Option<String>,
    },
    /// A peer refused the operation for our role.
    #[error("{context}: permission denied: {message}{}", hint_suffix(hint))]
    PermissionDenied {
        /// What we were doing.
        context: String,
        /// What the peer said.
        message: String,
        /// What to do next.
        hint: Option<String>,
    },
    /// A peer could not be reached.
    #[error("cannot reach {what} at {addr}: {reason}{}", hint_suffix(hint))]
    Unreachable {
        /// "device" or "pki-core".
        what: &'static str,
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
        /// What to do next.
        hint: Option<String>,
    },
    /// The presented CA does not match the pinned or expected fingerprint.
    #[error("pki-core at {addr} presented CA fingerprint {presented}, but {expected_source} is {expected}; refusing to talk to it. If the CA really changed, check the fingerprint with `pkicore ca list` and run `wendy auth logout` then `wendy auth login-local` again")]
    FingerprintMismatch {
        /// host:port.
        addr: String,
        /// What the server showed.
        presented: String,
        /// What we expected.
        expected: String,
        /// "--ca-fingerprint" or "the pinned fingerprint".
        expected_source: &'static str,
    },
    /// A TLS peer could not be verified.
    #[error("cannot verify {what} at {addr}: {reason}{}", hint_suffix(hint))]
    Untrusted {
        /// "device" or "pki-core".
        what: &'static str,
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
        /// What to do next.
        hint: Option<String>,
    },
    /// First contact without a terminal to ask and without `--ca-fingerprint`.
    #[error("pki-core at {addr} is not trusted yet and there is no terminal to ask; pass --ca-fingerprint FP (presented: {presented}). Find the real fingerprint where pki-core runs: `pkicore serve` prints \"CA fingerprint: ...\" at start, and `pkicore ca list` shows it")]
    NeedFingerprint {
        /// host:port.
        addr: String,
        /// The fingerprint shown, for comparison only.
        presented: String,
    },
    /// The user answered no to the trust prompt.
    #[error("not trusting pki-core at {addr}; nothing was stored")]
    TrustDeclined {
        /// host:port.
        addr: String,
    },
    /// A remote call failed for another reason.
    #[error("{context}: {message}{}", hint_suffix(hint))]
    Remote {
        /// What we were doing.
        context: String,
        /// What the peer said.
        message: String,
        /// What to do next.
        hint: Option<String>,
    },
    /// No device, or more than one, matched.
    #[error("{0}")]
    DeviceSelection(String),
    /// Stored configuration is unreadable or corrupt.
    #[error("config {}: {reason}; fix or remove it (`wendy auth logout` removes the credentials)", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A local I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Keys, CSRs, certificates.
    #[error("{context}: {source}")]
    Identity {
        /// What we were doing.
        context: String,
        /// The error.
        #[source]
        source: wendy_identity::Error,
    },
    /// mDNS failure.
    #[error("mDNS: {0}")]
    Mdns(String),
    /// A local tool (`podman`, `skopeo`) is missing or failed.
    #[error("{message}{}", hint_suffix(hint))]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What went wrong.
        message: String,
        /// What to do next.
        hint: Option<String>,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("; {h}"),
        None => String::new(),
    }
}

impl CliError {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) => Exit::Usage,
            Self::NotLoggedIn { .. } | Self::CertificateExpired { .. } | Self::Unauthenticated { .. } => Exit::Auth,
            Self::PermissionDenied { .. } => Exit::PermissionDenied,
            Self::Unreachable { .. } => Exit::Unreachable,
            Self::DeviceSelection(_) => Exit::Unreachable,
            Self::FingerprintMismatch { .. }
            | Self::Untrusted { .. }
            | Self::NeedFingerprint { .. }
            | Self::TrustDeclined { .. } => Exit::Trust,
            Self::Remote { .. }
            | Self::Config { .. }
            | Self::Io { .. }
            | Self::Identity { .. }
            | Self::Mdns(_)
            | Self::Tool { .. } => Exit::Generic,
        }
    }

    /// An I/O error with context.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Self::Io { context: context.to_string(), source }
    }

    /// An identity-library error with context.
    pub fn identity(context: impl fmt::Display, source: wendy_identity::Error) -> Self {
        Self::Identity { context: context.to_string(), source }
    }

    /// Maps a failed gRPC call to an error. `context` says what we were
    /// doing; `hints` supplies role-specific advice. A `CertificateError`
    /// the status carries ([`wendy_proto::refusal`]) says more than the code.
    pub fn from_status(context: impl fmt::Display, status: &tonic::Status, hints: &Hints) -> Self {
        let context = context.to_string();
        if let Some(detail) = wendy_proto::refusal::from_status(status) {
            if let Some(e) = Self::refusal(&context, status.code(), &detail, hints) {
                return e;
            }
        }
        let message =
            if status.message().is_empty() { format!("{:?}", status.code()) } else { sanitize(status.message()) };
        match status.code() {
            tonic::Code::Unauthenticated => Self::Unauthenticated { context, message, hint: hints.auth.clone() },
            tonic::Code::PermissionDenied => {
                Self::PermissionDenied { context, message, hint: hints.permission.clone() }
            }
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                if let Some(alert) = tls_alert(status) {
                    return Self::Unauthenticated {
                        context,
                        message: format!("the peer refused our certificate ({alert})"),
                        hint: Some(
                            "check `wendy auth status`; run `wendy auth login-local` against the pki-core that provisioned the device".into(),
                        ),
                    };
                }
                let hint = hints.unavailable.clone().or_else(|| Some("is the peer still running?".into()));
                Self::Remote { context, message, hint }
            }
            _ => {
                if let Some(alert) = tls_alert(status) {
                    return Self::Unauthenticated {
                        context,
                        message: format!("the peer refused our certificate ({alert})"),
                        hint: Some("check `wendy auth status`".into()),
                    };
                }
                Self::Remote { context, message, hint: None }
            }
        }
    }

    /// Maps a refusal carried in a response body (`IssueCertificate`,
    /// `RefreshCertificate`).
    pub fn from_refusal(context: impl fmt::Display, detail: &CertificateError, hints: &Hints) -> Self {
        let context = context.to_string();
        Self::refusal(&context, tonic::Code::Ok, detail, hints).unwrap_or_else(|| Self::Remote {
            context,
            message: sanitize(&wendy_proto::refusal::describe(detail)),
            hint: None,
        })
    }

    /// The error a published refusal code means, if it decides one. The
    /// gRPC `code` tells "who are you?" apart from "no" for UNAUTHORIZED.
    fn refusal(context: &str, code: tonic::Code, detail: &CertificateError, hints: &Hints) -> Option<Self> {
        let context = context.to_owned();
        let message = sanitize(if detail.message.is_empty() { "refused" } else { &detail.message });
        match wendy_proto::refusal::code(detail) {
            CertificateErrorCode::CertificateErrorInvalidEnrollmentToken => {
                Some(Self::Unauthenticated { context, message, hint: Some(TOKEN_HINT.into()) })
            }
            CertificateErrorCode::CertificateErrorUnauthorized if code == tonic::Code::PermissionDenied => {
                Some(Self::PermissionDenied { context, message, hint: hints.permission.clone() })
            }
            CertificateErrorCode::CertificateErrorUnauthorized => {
                let permission = detail.details.get(wendy_proto::refusal::REASON_DETAIL).map(String::as_str)
                    == Some("permission_denied");
                Some(if permission {
                    Self::PermissionDenied { context, message, hint: hints.permission.clone() }
                } else {
                    Self::Unauthenticated { context, message, hint: hints.auth.clone() }
                })
            }
            CertificateErrorCode::CertificateErrorCertificateRevoked
            | CertificateErrorCode::CertificateErrorCertificateExpired => Some(Self::Unauthenticated {
                context,
                message,
                hint: Some("run `wendy auth login-local` to get a new CLI certificate".into()),
            }),
            CertificateErrorCode::CertificateErrorInvalidCsr
            | CertificateErrorCode::CertificateErrorInvalidCommonName => {
                Some(Self::Remote { context, message, hint: None })
            }
            _ => None,
        }
    }
}

/// Advice for a refused enrolment token.
const TOKEN_HINT: &str = "enrolment tokens are single-use and short-lived; run the command again for a new one";

/// Advice attached to status mappings, depending on the command.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    /// For Unauthenticated.
    pub auth: Option<String>,
    /// For PermissionDenied.
    pub permission: Option<String>,
    /// For UNAVAILABLE from a peer that answered (e.g. the device could
    /// not reach pki-core); default "is the peer still running?".
    pub unavailable: Option<String>,
}

/// A TLS alert the peer sent, found in the status's error chain or message.
fn tls_alert(status: &tonic::Status) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(rustls::Error::AlertReceived(a)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS alert {a:?}"));
        }
        source = e.source();
    }
    let m = status.message();
    m.contains("received fatal alert").then(|| m.to_owned())
}

/// Keeps remote messages printable: no control characters, bounded length.
pub fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() || *c == ' ').take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_detail(code: tonic::Code, detail: CertificateErrorCode, msg: &str) -> tonic::Status {
        let e = CertificateError { code: detail as i32, message: msg.into(), details: Default::default() };
        wendy_proto::refusal::status(code, &e)
    }

    #[test]
    fn codes_map_to_exits() {
        let h = Hints::default();
        let e = CliError::from_status("x", &tonic::Status::unauthenticated("bad key"), &h);
        assert_eq!(e.exit(), Exit::Auth);
        let e = CliError::from_status("x", &tonic::Status::permission_denied("Viewer"), &h);
        assert_eq!(e.exit(), Exit::PermissionDenied);
        let e = CliError::from_status("x", &tonic::Status::internal("boom"), &h);
        assert_eq!(e.exit(), Exit::Generic);
    }

    #[test]
    fn certificate_error_detail_wins() {
        let s = status_with_detail(
            tonic::Code::FailedPrecondition,
            CertificateErrorCode::CertificateErrorInvalidEnrollmentToken,
            "token used",
        );
        let e = CliError::from_status("issuing", &s, &Hints::default());
        assert_eq!(e.exit(), Exit::Auth);
        assert!(e.to_string().contains("token used") && e.to_string().contains("single-use"), "{e}");
        let s = status_with_detail(
            tonic::Code::PermissionDenied,
            CertificateErrorCode::CertificateErrorUnauthorized,
            "role too low",
        );
        let e = CliError::from_status("minting", &s, &Hints::default());
        assert_eq!(e.exit(), Exit::PermissionDenied);
    }

    #[test]
    fn unauthenticated_code_beats_permission_detail() {
        let s = status_with_detail(
            tonic::Code::Unauthenticated,
            CertificateErrorCode::CertificateErrorUnauthorized,
            "unknown API key",
        );
        let h = Hints { auth: Some("check --api-key".into()), ..Default::default() };
        let e = CliError::from_status("minting", &s, &h);
        assert_eq!(e.exit(), Exit::Auth);
        assert!(e.to_string().ends_with("check --api-key"), "{e}");
    }

    #[test]
    fn unavailable_hint_names_the_cause() {
        let h = Hints { unavailable: Some("can the device reach pki-core?".into()), ..Default::default() };
        let e = CliError::from_status("provisioning", &tonic::Status::unavailable("could not reach pki-core"), &h);
        assert!(e.to_string().ends_with("can the device reach pki-core?"), "{e}");
        let e = CliError::from_status("x", &tonic::Status::unavailable("gone"), &Hints::default());
        assert!(e.to_string().ends_with("is the peer still running?"), "{e}");
    }

    #[test]
    fn body_refusals_map_like_statuses() {
        let d = CertificateError {
            code: CertificateErrorCode::CertificateErrorInvalidEnrollmentToken as i32,
            message: "enrollment token expired".into(),
            details: Default::default(),
        };
        assert_eq!(CliError::from_refusal("logging in", &d, &Hints::default()).exit(), Exit::Auth);
    }

    #[test]
    fn garbage_detail_is_ignored() {
        use wendy_proto::CERTIFICATE_ERROR_METADATA_KEY;
        let mut s = tonic::Status::unauthenticated("nope");
        s.metadata_mut().insert_bin(
            CERTIFICATE_ERROR_METADATA_KEY,
            tonic::metadata::MetadataValue::from_bytes(&[0xff, 0xff, 0xff]),
        );
        let e = CliError::from_status("x", &s, &Hints::default());
        assert_eq!(e.exit(), Exit::Auth);
        assert!(e.to_string().contains("nope"));
    }

    #[test]
    fn hints_are_appended() {
        let h = Hints { permission: Some("log in with --role Admin".into()), ..Default::default() };
        let e = CliError::from_status("unenrolling", &tonic::Status::permission_denied("Viewer may not"), &h);
        let m = e.to_string();
        assert!(m.contains("Viewer may not") && m.ends_with("log in with --role Admin"), "{m}");
    }

    #[test]
    fn sanitize_strips_control_chars() {
        assert_eq!(sanitize("a\x1b[31mb\nc"), "a[31mbc");
        assert_eq!(sanitize(&"x".repeat(1000)).len(), 500);
    }

    #[test]
    fn trust_errors_exit_6() {
        let e = CliError::NeedFingerprint { addr: "h:1".into(), presented: "ab".into() };
        assert_eq!(e.exit(), Exit::Trust);
        assert!(e.to_string().contains("pkicore ca list"));
    }
}
