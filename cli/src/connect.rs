//! gRPC channels: plaintext, and TLS through our own connector so that we
//! control verification (pinned pki-core CA, device CA bundle, TOFU
//! capture).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::addr::HostPort;

/// How long to wait for TCP and TLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for any single call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The fixed server name the CLI sends to devices. Devices are verified
/// against the CA bundle without a host-name check.
pub const DEVICE_SERVER_NAME: &str = "device.wendy.internal";

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP failed (refused, no route, timeout).
    #[error("{0}")]
    Tcp(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The URI had no host or port (a bug, not input).
    #[error("bad connection URI")]
    BadUri,
}

impl DialError {
    /// The rustls error behind a TLS failure, if that is what it was.
    pub fn rustls(&self) -> Option<&rustls::Error> {
        match self {
            Self::Tls(e) => e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
            _ => None,
        }
    }
}

/// Finds our [`DialError`] in a transport error's chain.
pub fn dial_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a DialError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<DialError>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

/// A short description of a transport error: ours if we made it, else
/// the innermost cause.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(d) = dial_error(e) {
        return d.to_string();
    }
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A tower service that dials TCP and runs a rustls handshake.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = Arc::clone(&self.config);
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(DialError::BadUri)?.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().ok_or(DialError::BadUri)?;
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| DialError::Tcp(std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")))?
                .map_err(DialError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
            )
            .await
            .map_err(|_| DialError::Tls(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out")))?
            .map_err(DialError::Tls)?;
            Ok(TokioIo::new(tls))
        })
    }
}

fn endpoint(addr: &HostPort) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(addr.uri())?.connect_timeout(CONNECT_TIMEOUT).timeout(CALL_TIMEOUT))
}

/// A plaintext channel (unprovisioned devices only).
pub async fn plaintext(addr: &HostPort) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect().await
}

/// A TLS channel with `config`, sending `server_name` as SNI.
pub async fn tls(
    addr: &HostPort,
    config: ClientConfig,
    server_name: &str,
) -> Result<Channel, tonic::transport::Error> {
    let server_name = ServerName::try_from(server_name.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("wendy.invalid").expect("constant is a valid DNS name"));
    let connector = TlsConnector { config: Arc::new(config), server_name };
    endpoint(addr)?.connect_with_connector(connector).await
}

/// A verifier that records the server's chain and then refuses, so the
/// connection carries nothing after the ClientHello. Used to learn a
/// server's CA before deciding to trust it.
#[derive(Debug, Default)]
pub struct CapturingVerifier {
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl CapturingVerifier {
    /// The captured chain, leaf first.
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.chain.lock().ok().and_then(|g| g.clone())
    }
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut g) = self.chain.lock() {
            *g = Some(chain);
        }
        Err(rustls::Error::General("certificate captured for the trust decision".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("certificate captured for the trust decision".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        wendy_identity::tls::supported_schemes()
    }
}

/// Connects once to `addr` with a [`CapturingVerifier`] and returns the
/// chain the server presented, leaf first.
pub async fn capture_chain(addr: &HostPort, server_name: &str) -> Result<Vec<CertificateDer<'static>>, DialError> {
    let verifier = Arc::new(CapturingVerifier::default());
    let config = wendy_identity::tls::client_config(verifier.clone(), None)
        .map_err(|e| DialError::Tls(std::io::Error::other(e.to_string())))?;
    let mut connector = TlsConnector {
        config: Arc::new(config),
        server_name: ServerName::try_from(server_name.to_owned()).map_err(|_| DialError::BadUri)?,
    };
    let uri: Uri = addr.uri().parse().map_err(|_| DialError::BadUri)?;
    let result = tower::Service::call(&mut connector, uri).await;
    match (result, verifier.chain()) {
        (_, Some(chain)) => Ok(chain),
        (Err(e), None) => Err(e),
        (Ok(_), None) => Err(DialError::Tls(std::io::Error::other("server presented no certificate"))),
    }
}
