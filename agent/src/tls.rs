//! The mTLS listener.
//!
//! - The server certificate sits behind [`SwappableCert`], a rustls
//!   `ResolvesServerCert` whose key can be replaced while the server runs:
//!   renewal takes effect at the next handshake, live connections keep theirs.
//! - Client certificates go through [`WendyClientVerifier`] (rollover
//!   semantics, clientAuth, CRLs that can be replaced at run time).
//! - Connections come through the shared capped accept loop
//!   ([`wendy_net::listener`], decision 0083); each finished connection
//!   carries a [`PeerInfo`] that [`crate::authz`] reads on every call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tonic::transport::server::Connected;
use wendy_identity::role::Role;
use wendy_identity::tls::{Credentials, WendyClientVerifier};
use wendy_identity::verify::CertificateInfo;
use wendy_net::limits::Limits;

use crate::Error;

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

    /// The leaf certificate (DER) the next handshake presents, if any.
    pub fn leaf(&self) -> Option<rustls_pki_types::CertificateDer<'static>> {
        self.0.load().cert.first().cloned()
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
    // Each stored session holds the client's certificate chain (ML-DSA: kB
    // each); rustls' default of 256 entries is megabytes on a device.
    config.session_storage =
        rustls::server::ServerSessionMemoryCache::new(wendy_net::limits::TLS_SESSION_CACHE_ENTRIES);
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

/// One accepted mTLS connection; it holds its slots in the listener's caps
/// until tonic drops it.
pub struct TlsConnection {
    conn: wendy_net::listener::TlsConn,
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
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}

pub use wendy_net::listener::IncomingGuard;

/// The mTLS connections a listener yields.
pub type TlsIncoming = futures::stream::Map<
    tokio_stream::wrappers::ReceiverStream<std::io::Result<wendy_net::listener::TlsConn>>,
    fn(std::io::Result<wendy_net::listener::TlsConn>) -> std::io::Result<TlsConnection>,
>;

/// Accepts mTLS connections on `listener` through the shared capped accept
/// loop ([`wendy_net::listener`]: connection, per-peer and handshake caps,
/// handshake and preface deadlines, aggregated refusal logs). The returned
/// task owns the listener; abort it to stop listening.
pub fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> (TlsIncoming, tokio::task::JoinHandle<()>, IncomingGuard) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accepting = wendy_net::listener::tls(listener, acceptor, Limits::default(), "agent-mtls");
    let with_peer: fn(std::io::Result<wendy_net::listener::TlsConn>) -> std::io::Result<TlsConnection> = |r| {
        r.map(|conn| {
            let peer = peer_info(&conn);
            tracing::debug!(addr = %conn.peer_addr(), cn = ?peer.common_name, role = ?peer.role, "mTLS connection");
            TlsConnection { conn, peer }
        })
    };
    (futures::StreamExt::map(accepting.incoming, with_peer), accepting.task, accepting.guard)
}

/// Accepts plaintext TCP connections on `listener` through the shared
/// capped accept loop. The returned task owns the listener; abort it to
/// close the port at once while the server finishes in-flight calls.
pub fn tcp_accept_loop(
    listener: TcpListener,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<wendy_net::listener::PlainConn>>,
    tokio::task::JoinHandle<()>,
    IncomingGuard,
) {
    let accepting = wendy_net::listener::plaintext(listener, Limits::default(), "agent-plaintext");
    (accepting.incoming, accepting.task, accepting.guard)
}

/// The verified client certificate of `conn`, as the role checks read it.
pub(crate) fn peer_info(conn: &wendy_net::listener::TlsConn) -> PeerInfo {
    let addr = conn.peer_addr();
    let leaf = conn.get_ref().get_ref().1.peer_certificates().and_then(|c| c.first());
    let info = leaf.and_then(|der| CertificateInfo::from_der(der).ok());
    PeerInfo {
        addr: Some(addr),
        common_name: info.as_ref().and_then(|i| i.common_name.clone()),
        role: info.as_ref().and_then(|i| i.role),
        serial: info.map(|i| i.serial_hex),
    }
}
