//! gRPC channels to pki-core.
//!
//! pki-core is reached at the `cloud_host` the device was given, over TLS
//! 1.3 with its CA pinned by fingerprint and its server name checked
//! ([`wendy_identity::PKICORE_SERVER_NAME`]). Once provisioned the device
//! presents its own certificate (mTLS) for renewal and CRL fetches.
//! Plaintext is possible only when the caller explicitly allows it.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tonic::transport::Channel;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::tls::{client_config, Credentials, PinnedCaServerVerifier};
use wendy_proto::cloud::certificate_service_client::CertificateServiceClient;
use wendy_proto::pkicore::crl_service_client::CrlServiceClient;

/// How long connecting to pki-core may take (TCP, then TLS).
pub const CONNECT_TIMEOUT: Duration = wendy_net::connect::CONNECT_TIMEOUT;
/// How long one call to pki-core may take.
pub const CALL_TIMEOUT: Duration = wendy_net::connect::CALL_TIMEOUT;

/// How the device protects its connection to pki-core.
pub enum Security<'a> {
    /// TLS pinning pki-core's CA, optionally presenting device credentials.
    Pinned {
        /// The accepted CA fingerprints (pki-core must chain to one).
        pins: Vec<Fingerprint>,
        /// Device credentials for mTLS.
        client: Option<&'a Credentials>,
    },
    /// No TLS (explicit compatibility option for enrolment only).
    Plaintext,
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// `cloud_host` is not a valid `host:port`.
    #[error("invalid cloud host {0:?}: expected host:port")]
    BadHost(String),
    /// The TLS client config could not be built.
    #[error(transparent)]
    Tls(#[from] wendy_identity::Error),
    /// pki-core answered, but its certificate does not chain to a trusted CA.
    #[error("pki-core at {host} is not trusted: its certificate does not chain to the CA {pins} ({reason})")]
    Untrusted {
        /// The address.
        host: String,
        /// The accepted fingerprints.
        pins: String,
        /// The TLS error.
        reason: String,
    },
    /// Connecting failed (TCP, TLS, HTTP/2).
    #[error("could not reach pki-core at {host}: {reason}")]
    Connect {
        /// The address.
        host: String,
        /// The full error chain.
        reason: String,
    },
}

/// Normalizes `cloud_host` (`host[:port]`, optional `http(s)://`) to
/// `host:port`, defaulting to pki-core's port.
pub fn normalize_host(cloud_host: &str) -> Result<String, ChannelError> {
    let bad = || ChannelError::BadHost(cloud_host.chars().take(300).collect());
    let trimmed = cloud_host.trim();
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if rest.len() > 300 {
        return Err(bad());
    }
    wendy_net::addr::HostPort::parse(rest, wendy_proto::contract::DEFAULT_PKICORE_PORT)
        .map(|a| a.to_string())
        .map_err(|_| bad())
}

/// A channel to pki-core at `cloud_host`.
pub async fn connect(cloud_host: &str, security: Security<'_>) -> Result<Channel, ChannelError> {
    let host = normalize_host(cloud_host)?;
    let addr = wendy_net::addr::HostPort::parse(&host, wendy_proto::contract::DEFAULT_PKICORE_PORT)
        .map_err(|_| ChannelError::BadHost(host.clone()))?;
    let mut pinned = String::new();
    let result = match security {
        Security::Plaintext => wendy_net::connect::plaintext(&addr).await,
        Security::Pinned { pins, client } => {
            pinned = pins.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or ");
            let verifier = Arc::new(PinnedCaServerVerifier::any_of(pins, Some(wendy_identity::PKICORE_SERVER_NAME)));
            let config = Arc::new(client_config(verifier, client)?);
            let name = ServerName::try_from(wendy_identity::PKICORE_SERVER_NAME)
                .map_err(|e| ChannelError::Tls(wendy_identity::Error::Tls(e.to_string())))?;
            wendy_net::connect::tls(&addr, config, name).await
        }
    };
    result.map_err(|e| {
        if is_certificate_error(&e) {
            ChannelError::Untrusted { host, pins: pinned, reason: error_chain(&e) }
        } else {
            ChannelError::Connect { host, reason: error_chain(&e) }
        }
    })
}

/// Whether `e` failed because the server's certificate was refused.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(dial) = wendy_net::connect::dial_error(e) {
        return matches!(dial.rustls(), Some(rustls::Error::InvalidCertificate(_)));
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        });
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        next = err.source();
    }
    false
}

/// The certificate service client on `channel`, with the message limit.
pub fn certificates(channel: Channel) -> CertificateServiceClient<Channel> {
    wendy_proto::limited!(CertificateServiceClient::new(channel))
}

/// The CRL service client on `channel`, with the message limit.
pub fn crls(channel: Channel) -> CrlServiceClient<Channel> {
    wendy_proto::limited!(CrlServiceClient::new(channel))
}

/// An error and all its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A readable message for a failed pki-core call: the status message plus
/// the `CertificateError` pki-core attaches, if any.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut msg = format!("{:?}: {}", status.code(), status.message());
    if let Some(detail) = wendy_proto::refusal::from_status(status) {
        msg.push_str(&format!(" ({})", wendy_proto::refusal::describe(&detail)));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("10.0.0.1:7000").unwrap(), "10.0.0.1:7000");
        assert_eq!(normalize_host("https://pki.local/").unwrap(), "pki.local:50051");
        assert_eq!(normalize_host("[::1]:9").unwrap(), "[::1]:9");
        for bad in ["", " ", "a b:1", "h:0", "h:99999", "u@h:1", "h/x:1", "\u{0}"] {
            assert!(normalize_host(bad).is_err(), "{bad:?}");
        }
    }
}
