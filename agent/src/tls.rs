//! The mTLS listener.
//!
//! - The server certificate sits behind [`SwappableCert`], a rustls
//!   `ResolvesServerCert` whose key can be replaced while the server runs:
//!   renewal takes effect at the next handshake, live connections keep theirs.
//! - Client certificates go through [`WendyClientVerifier`] (rollover
//!   semantics, clientAuth, CRLs that can be replaced at run time).
//! - Handshakes run in their own tasks; each finished connection carries a
//!   [`PeerInfo`] that [`crate::authz`] reads on every call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;
use wendy_identity::role::Role;
use wendy_identity::tls::{Credentials, WendyClientVerifier};
use wendy_identity::verify::CertificateInfo;

use crate::Error;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server certificate that can be replaced at run time.
#[derive(Debug)]
pub struct SwappableCert(ArcSwap<CertifiedKey>);

impl SwappableCert {
    /// Loads `credentials`.
    pub fn new(credentials: &Credentials) -> Result<Self, Error> {
        Ok(Self(ArcSwap::from_pointee(certified_key(credentials)?)))
    }

    /// Replaces the certificate for every later handshake.
    pub fn swap(&self, credentials: &Credentials) -> Result<(), Error> {
        self.0.store(Arc::new(certified_key(credentials)?));
        Ok(())
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn certified_key(credentials: &Credentials) -> Result<CertifiedKey, Error> {
    CertifiedKey::from_der(credentials.chain.clone(), credentials.key.to_rustls(), &wendy_identity::tls::provider())
        .map_err(|e| Error::Identity(wendy_identity::Error::Tls(e.to_string())))
}

/// The server config: the identity crate's TLS 1.3 config with the
/// certificate resolved through `cert`.
pub fn server_config(
    credentials: &Credentials,
    cert: Arc<SwappableCert>,
    verifier: Arc<WendyClientVerifier>,
) -> Result<ServerConfig, Error> {
    let mut config = wendy_identity::tls::server_config(credentials, verifier)?;
    config.cert_resolver = cert;
    Ok(config)
}

/// Who is on the other end of an mTLS connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address.
    pub addr: Option<SocketAddr>,
    /// The client certificate's common name.
    pub common_name: Option<String>,
    /// The role in the client certificate, if any.
    pub role: Option<Role>,
    /// The client certificate's serial (hex).
    pub serial: Option<String>,
}

/// One accepted mTLS connection.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Keeps a server's incoming stream open after its accept task is aborted:
/// tonic takes the end of the stream as a shutdown, which would cut off the
/// call that is closing the port. Drop it once the server is told to stop.
pub type IncomingGuard = Box<dyn std::any::Any + Send>;

/// Accepts TCP connections on `listener`, runs each TLS handshake in its own
/// task, and yields finished connections. The returned task owns the
/// listener; abort it to stop listening.
pub fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>>,
    tokio::task::JoinHandle<()>,
    IncomingGuard,
) {
    let (tx, rx) = mpsc::channel(64);
    let guard: IncomingGuard = Box::new(tx.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = peer_info(&stream, addr);
                        tracing::debug!(%addr, cn = ?peer.common_name, role = ?peer.role, "mTLS connection");
                        let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                    }
                    Ok(Err(e)) => tracing::info!(%addr, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task, guard)
}

/// Accepts plaintext TCP connections on `listener` and yields them. The
/// returned task owns the listener; abort it to close the port at once
/// while the server finishes in-flight calls.
pub fn tcp_accept_loop(
    listener: TcpListener,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<TcpStream>>,
    tokio::task::JoinHandle<()>,
    IncomingGuard,
) {
    let (tx, rx) = mpsc::channel(64);
    let guard: IncomingGuard = Box::new(tx.clone());
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    if tx.send(Ok(tcp)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task, guard)
}

fn peer_info(stream: &tokio_rustls::server::TlsStream<TcpStream>, addr: SocketAddr) -> PeerInfo {
    let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
    let info = leaf.and_then(|der| CertificateInfo::from_der(der).ok());
    PeerInfo {
        addr: Some(addr),
        common_name: info.as_ref().and_then(|i| i.common_name.clone()),
        role: info.as_ref().and_then(|i| i.role),
        serial: info.map(|i| i.serial_hex),
    }
}
