//! Client channels with their timeouts, written once: TCP within
//! [`CONNECT_TIMEOUT`], then the rustls handshake within [`CONNECT_TIMEOUT`]
//! again, each failure classified ([`DialError`]); every call within
//! [`CALL_TIMEOUT`]. Verification is the caller's `ClientConfig` (pinned
//! pki-core CA, device CA bundle, TOFU capture).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::addr::HostPort;

/// How long to wait for TCP, and then for the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for any single call's response.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection could not be made. Exhaustive on purpose: the CLI maps
/// each variant to its own message.
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

/// Finds a [`DialError`] in a transport error's chain.
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

/// A short description of a transport error: the [`DialError`] if there is
/// one, else the innermost cause.
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

/// A tower service that dials TCP and runs a rustls handshake, each within
/// [`CONNECT_TIMEOUT`].
#[derive(Clone, Debug)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    /// Handshakes with `config`, sending `server_name` as SNI.
    pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self { config, server_name }
    }
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

/// A plaintext channel to `addr`.
pub async fn plaintext(addr: &HostPort) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect().await
}

/// A TLS channel to `addr` with `config`, sending `server_name` as SNI.
pub async fn tls(
    addr: &HostPort,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect_with_connector(TlsConnector::new(config, server_name)).await
}
