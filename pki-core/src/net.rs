//! The frontend's connections: the shared capped accept loop
//! ([`wendy_net::listener`], decision 0083), TLS 1.3 unless plaintext was
//! asked for. Each connection carries a [`PeerInfo`] that tonic puts in
//! every request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use wendy_net::limits::Limits;
use wendy_net::listener::{PlainConn, TlsConn};

/// What the transport knows about a caller.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The remote address.
    pub remote: Option<SocketAddr>,
    /// The client certificate chain, if the client presented one (it has
    /// passed the TLS-layer verifier).
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// A frontend connection: TLS, or plaintext in compat mode. Either holds
/// its slots in the listener's caps until tonic drops it.
#[derive(Debug)]
pub enum Conn {
    /// TLS 1.3.
    Tls(Box<TlsConn>),
    /// Plaintext (`--insecure-plaintext`).
    Plain(PlainConn),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Tls(s) => PeerInfo {
                remote: Some(s.peer_addr()),
                certificates: s
                    .get_ref()
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())),
            },
            Conn::Plain(s) => PeerInfo { remote: Some(s.peer_addr()), certificates: None },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Plain(s) => s.is_write_vectored(),
        }
    }
}

/// The frontend's connections.
pub type Incoming = Pin<Box<dyn futures::Stream<Item = io::Result<Conn>> + Send>>;

/// Accepts connections on `listener` through the shared capped accept loop
/// ([`wendy_net::listener`]: connection, per-peer and handshake caps,
/// handshake and preface deadlines, aggregated refusal logs), handshaking
/// TLS with `acceptor` unless it is `None` (plaintext). The stream never
/// ends with an error, so the server keeps serving.
pub fn incoming(listener: TcpListener, acceptor: Option<TlsAcceptor>) -> Incoming {
    use futures::StreamExt;
    match acceptor {
        None => Box::pin(
            wendy_net::listener::plaintext(listener, Limits::service(), "pkicore-frontend")
                .incoming
                .map(|r| r.map(Conn::Plain)),
        ),
        Some(acceptor) => Box::pin(
            wendy_net::listener::tls(listener, acceptor, Limits::service(), "pkicore-frontend")
                .incoming
                .map(|r| r.map(|c| Conn::Tls(Box::new(c)))),
        ),
    }
}
