//! Talking to pki-core's `wendycloud.v1.CertificateService`: pinning its CA
//! (trust on first use, like ssh), API-key requests and mTLS refresh.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::transport::Channel;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::tls::{client_config, Credentials, PinnedCaServerVerifier};
use wendy_identity::verify::CertificateInfo;
use wendy_identity::PKICORE_SERVER_NAME;
use wendy_proto::cloud::certificate_service_client::CertificateServiceClient;
use wendy_proto::contract::AUTHORIZATION_HEADER;

use crate::addr::HostPort;
use crate::connect::{self, DialError};
use crate::error::CliError;

/// A connected, pinned certificate-service client.
pub type CloudClient = CertificateServiceClient<Channel>;

/// The CA a server presented: the last self-signed certificate in its
/// chain (or the last certificate if none is self-signed).
#[derive(Debug)]
pub struct PresentedCa {
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Its subject, for the prompt.
    pub subject: String,
}

/// Picks the CA out of a presented chain.
pub fn presented_ca(chain: &[CertificateDer<'_>]) -> Option<PresentedCa> {
    let parsed: Vec<_> = chain.iter().filter_map(|c| CertificateInfo::from_der(c).ok().map(|i| (c, i))).collect();
    let (der, info) = parsed.iter().rev().find(|(_, i)| i.subject_der == i.issuer_der).or_else(|| parsed.last())?;
    Some(PresentedCa { fingerprint: Fingerprint::of_der(der), subject: info.subject.clone() })
}

/// Where an expected fingerprint came from.
#[derive(Clone, Copy, Debug)]
pub enum Expected {
    /// `--ca-fingerprint`.
    Flag(Fingerprint),
    /// `config.json` from an earlier login.
    Pinned(Fingerprint),
    /// Nothing: ask at the terminal.
    Ask,
}

/// Learns which CA pki-core at `addr` presents and decides whether to
/// trust it. Returns the fingerprint to pin. Nothing but a ClientHello is
/// sent before the decision.
pub async fn decide_trust(addr: &HostPort, expected: Expected) -> Result<Fingerprint, CliError> {
    let chain = connect::capture_chain(addr, PKICORE_SERVER_NAME).await.map_err(|e| dial("pki-core", addr, &e))?;
    let ca = presented_ca(&chain).ok_or_else(|| CliError::Untrusted {
        what: "pki-core",
        addr: addr.to_string(),
        reason: "its certificate chain holds no parseable certificate".into(),
        hint: None,
    })?;
    match expected {
        Expected::Flag(fp) | Expected::Pinned(fp) if fp == ca.fingerprint => Ok(fp),
        Expected::Flag(fp) => Err(mismatch(addr, &ca, fp, "--ca-fingerprint")),
        Expected::Pinned(fp) => Err(mismatch(addr, &ca, fp, "the pinned fingerprint")),
        Expected::Ask => {
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                return Err(CliError::NeedFingerprint {
                    addr: addr.to_string(),
                    presented: ca.fingerprint.to_string(),
                });
            }
            if ask(addr, &ca)? {
                Ok(ca.fingerprint)
            } else {
                Err(CliError::TrustDeclined { addr: addr.to_string() })
            }
        }
    }
}

fn mismatch(addr: &HostPort, ca: &PresentedCa, expected: Fingerprint, source: &'static str) -> CliError {
    CliError::FingerprintMismatch {
        addr: addr.to_string(),
        presented: ca.fingerprint.to_string(),
        expected: expected.to_string(),
        expected_source: source,
    }
}

fn ask(addr: &HostPort, ca: &PresentedCa) -> Result<bool, CliError> {
    let mut err = std::io::stderr().lock();
    let io = |e| CliError::io("prompting", e);
    writeln!(err, "The authenticity of pki-core at {addr} can't be established.").map_err(io)?;
    writeln!(err, "Its CA is {}", ca.subject).map_err(io)?;
    writeln!(err, "CA fingerprint (SHA-256): {}", ca.fingerprint).map_err(io)?;
    writeln!(err, "Compare it with what `pkicore serve` printed (\"CA fingerprint: ...\") or `pkicore ca list`.")
        .map_err(io)?;
    loop {
        write!(err, "Trust this CA and continue (yes/no)? ").map_err(io)?;
        err.flush().map_err(io)?;
        let mut line = String::new();
        let n = std::io::stdin().lock().read_line(&mut line).map_err(io)?;
        match line.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" => return Ok(true),
            "no" | "n" => return Ok(false),
            _ if n == 0 => return Ok(false),
            _ => writeln!(err, "Please type 'yes' or 'no'.").map_err(io)?,
        }
    }
}

/// Connects to pki-core at `addr`, verifying it against `pin`, and
/// presenting `credentials` if given (for RefreshCertificate).
pub async fn connect(
    addr: &HostPort,
    pin: Fingerprint,
    credentials: Option<&Credentials>,
) -> Result<CloudClient, CliError> {
    let verifier = Arc::new(PinnedCaServerVerifier::new(pin, Some(PKICORE_SERVER_NAME)));
    let config = client_config(verifier, credentials).map_err(|e| CliError::identity("building the TLS config", e))?;
    match connect::tls(addr, config, PKICORE_SERVER_NAME).await {
        Ok(ch) => Ok(wendy_proto::limited!(CertificateServiceClient::new(ch))),
        Err(e) => {
            let err = connect_error("pki-core", addr, &e);
            if matches!(err, CliError::Untrusted { .. }) {
                // Say what it presented instead, if it presented something else.
                if let Err(mismatch @ CliError::FingerprintMismatch { .. }) =
                    decide_trust(addr, Expected::Pinned(pin)).await
                {
                    return Err(mismatch);
                }
            }
            Err(err)
        }
    }
}

/// Maps a transport error from connecting to `what` at `addr`.
pub fn connect_error(what: &'static str, addr: &HostPort, e: &tonic::transport::Error) -> CliError {
    match connect::dial_error(e) {
        Some(d) => dial(what, addr, d),
        None => CliError::Unreachable {
            what,
            addr: addr.to_string(),
            reason: connect::describe(e),
            hint: Some(format!("check the address and that the {what} is running and reachable")),
        },
    }
}

/// Maps a dial error.
pub fn dial(what: &'static str, addr: &HostPort, e: &DialError) -> CliError {
    match e {
        DialError::Tcp(io) => CliError::Unreachable {
            what,
            addr: addr.to_string(),
            reason: io.to_string(),
            hint: Some(format!("check the address and that the {what} is running and reachable")),
        },
        DialError::Tls(_) => {
            let reason = match e.rustls() {
                Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
                    format!("its certificate was refused: {o}")
                }
                Some(rustls::Error::InvalidCertificate(c)) => format!("its certificate was refused: {c:?}"),
                Some(other) => other.to_string(),
                None => e.to_string(),
            };
            CliError::Untrusted { what, addr: addr.to_string(), reason, hint: None }
        }
        DialError::BadUri => CliError::Usage(format!("cannot connect to {addr}: bad address")),
    }
}

/// Wraps `message` in a request carrying `authorization: Bearer <key>`.
/// The key is never printed, not even when it is malformed.
pub fn with_api_key<T>(message: T, api_key: &str) -> Result<tonic::Request<T>, CliError> {
    let mut req = tonic::Request::new(message);
    let value = format!("Bearer {}", api_key.trim())
        .parse()
        .map_err(|_| CliError::Usage("the API key holds characters that cannot go in a gRPC header".into()))?;
    req.metadata_mut().insert(AUTHORIZATION_HEADER, value);
    Ok(req)
}

/// The hints for API-key calls.
pub fn api_key_hints() -> crate::error::Hints {
    crate::error::Hints {
        auth: Some("check --api-key (or WENDY_API_KEY); `pkicore serve all --dev` uses the dev key".into()),
        permission: Some("this API key's role is too low for that; use a key with a higher role".into()),
        unavailable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wendy_identity::key::{KeyAlgorithm, PrivateKey};
    use wendy_identity::profile::CertificateAuthority;

    #[test]
    fn api_key_goes_in_bearer_header() {
        let r = with_api_key((), "k123").unwrap();
        assert_eq!(r.metadata().get(AUTHORIZATION_HEADER).unwrap(), "Bearer k123");
        let e = with_api_key((), "bad\nkey-secret").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn presented_ca_picks_self_signed() {
        let ca = CertificateAuthority::create_with_key(
            "Test CA",
            PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap(),
            time::OffsetDateTime::now_utc(),
            time::Duration::days(1),
        )
        .unwrap();
        let chain = vec![ca.certificate().clone()];
        let p = presented_ca(&chain).unwrap();
        assert_eq!(p.fingerprint, ca.fingerprint());
        assert!(presented_ca(&[CertificateDer::from(vec![1u8, 2, 3])]).is_none());
    }
}
