//! The capped accept loop every server uses (style guide §3).
//!
//! For each TCP connection, in the accept task, before anything costly:
//! 1. a slot in the listener's cap ([`Limits::max_connections`], a
//!    semaphore permit the connection holds until it is dropped);
//! 2. a slot in its peer's cap and a token from its peer's rate;
//! 3. a handshake slot, global and per peer: a connection over it is closed
//!    before its ClientHello is read, so before any signature.
//!
//! Then, in a task of its own: the TLS handshake (if any) within
//! [`Limits::handshake_timeout`], and the 24-byte HTTP/2 preface within
//! [`Limits::preface_timeout`]; only then does the connection reach tonic.
//! Refusals are counted and summarised once per interval
//! ([`crate::refusals`]); accept errors (EMFILE) back off without a line
//! per attempt. Idle connections are bounded by the server's HTTP/2
//! keepalive and connection age ([`crate::server`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::{FirstBytes, Limits, ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};
use crate::peers::{PeerSlot, PeerTable};
use crate::refusals::{Refusal, Refusals};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Keeps a server's incoming stream open after its accept task is aborted:
/// tonic takes the end of the stream as a shutdown, which would cut off the
/// call that is closing the port. Drop it once the server is told to stop.
pub type IncomingGuard = Box<dyn std::any::Any + Send>;

/// A running accept loop.
pub struct Accepting<C> {
    /// The connections, for `serve_with_incoming*`.
    pub incoming: ReceiverStream<io::Result<C>>,
    /// The accept task; it owns the listener. Abort it to close the port.
    pub task: JoinHandle<()>,
    /// See [`IncomingGuard`].
    pub guard: IncomingGuard,
    /// The listener's refusal counters (also reported in the log).
    pub refusals: Arc<Refusals>,
}

/// The slots a connection holds; dropping the connection frees them.
#[derive(Debug)]
struct ConnPermit {
    _global: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// One admitted connection: the stream, its peer, and its slots in the caps.
/// Reading replays the HTTP/2 preface the listener already checked.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    peer: SocketAddr,
    preface_left: usize,
    _permit: ConnPermit,
}

/// A TLS connection from [`tls`].
pub type TlsConn = Conn<TlsStream<TcpStream>>;
/// A plaintext connection from [`plaintext`].
pub type PlainConn = Conn<TcpStream>;

impl<S> Conn<S> {
    /// The underlying stream (for a TLS connection, its session).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl Connected for PlainConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo { local_addr: self.stream.local_addr().ok(), remote_addr: Some(self.peer) }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.preface_left > 0 {
            let start = HTTP2_PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(buf.remaining());
            if let Some(bytes) = HTTP2_PREFACE.get(start..start + n) {
                buf.put_slice(bytes);
            }
            self.preface_left -= n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Binds a TCP listener on `addr` with `SO_REUSEADDR` and a
/// [`LISTEN_BACKLOG`](crate::limits::LISTEN_BACKLOG) accept queue.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(crate::limits::LISTEN_BACKLOG)
}

/// Accepts plaintext connections on `listener` under `limits`. `name`
/// labels the refusal summaries.
pub fn plaintext(listener: TcpListener, limits: Limits, name: &'static str) -> Accepting<PlainConn> {
    spawn_loop(listener, limits, name, |tcp, _| async move { Ok(tcp) })
}

/// Accepts TLS connections on `listener` under `limits`: each handshake
/// runs in its own task within the handshake deadline, with rustls' buffers
/// capped.
pub fn tls(listener: TcpListener, acceptor: TlsAcceptor, limits: Limits, name: &'static str) -> Accepting<TlsConn> {
    let timeout = limits.handshake_timeout;
    let buffer = limits.tls_buffer_limit;
    spawn_loop(listener, limits, name, move |tcp, _| {
        let accept = acceptor.accept_with(tcp, move |c| c.set_buffer_limit(Some(buffer)));
        async move {
            match tokio::time::timeout(timeout, accept).await {
                Ok(Ok(tls)) => Ok(tls),
                Ok(Err(e)) => Err((Refusal::HandshakeFailed, e.to_string())),
                Err(_) => Err((Refusal::HandshakeTimeout, String::new())),
            }
        }
    })
}

fn spawn_loop<S, H, Fut>(listener: TcpListener, limits: Limits, name: &'static str, handshake: H) -> Accepting<Conn<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = Result<S, (Refusal, String)>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let guard: IncomingGuard = Box::new(tx.clone());
    let refusals = Arc::new(Refusals::new(name));
    let counters = Arc::clone(&refusals);
    let task = tokio::spawn(async move {
        let conns = Arc::new(Semaphore::new(limits.max_connections));
        let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
        let peers = PeerTable::new(limits.clone());
        let mut report = tokio::time::interval(limits.refusal_log_interval);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        report.tick().await;
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = report.tick() => {
                    counters.report();
                    continue;
                }
            };
            let (tcp, addr) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(e) => {
                    // EMFILE/ENFILE leave the connection queued: pause rather
                    // than spin, and count rather than log each attempt.
                    counters.count_with(Refusal::AcceptError, || e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            // Every refusal below drops `tcp`: one close(2), nothing else.
            let Ok(global) = Arc::clone(&conns).try_acquire_owned() else {
                counters.count(Refusal::OverCapacity);
                continue;
            };
            let slot = match peers.admit(addr.ip()) {
                Ok(s) => s,
                Err(r) => {
                    counters.count(r);
                    continue;
                }
            };
            let peer_handshake = match slot.begin_handshake() {
                Ok(h) => h,
                Err(r) => {
                    counters.count(r);
                    continue;
                }
            };
            let Ok(handshake_permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                counters.count(Refusal::HandshakesBusy);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let permit = ConnPermit { _global: global, _peer: slot };
            let started = handshake(tcp, addr);
            let tx = tx.clone();
            let counters = Arc::clone(&counters);
            let preface_timeout = limits.preface_timeout;
            let first_bytes = limits.first_bytes;
            tokio::spawn(async move {
                let stream = match started.await {
                    Ok(s) => s,
                    Err((r, detail)) => {
                        counters.count_with(r, || format!("{addr}: {detail}"));
                        return;
                    }
                };
                let mut conn = Conn { stream, peer: addr, preface_left: 0, _permit: permit };
                if first_bytes == FirstBytes::ServerBounded {
                    drop(handshake_permit);
                    drop(peer_handshake);
                    let _ = tx.send(Ok(conn)).await;
                    return;
                }
                match tokio::time::timeout(preface_timeout, read_preface(&mut conn.stream)).await {
                    Ok(Ok(())) => conn.preface_left = HTTP2_PREFACE.len(),
                    Ok(Err(e)) => {
                        counters.count_with(Refusal::NotHttp2, || format!("{addr}: {e}"));
                        return;
                    }
                    Err(_) => {
                        counters.count(Refusal::PrefaceTimeout);
                        return;
                    }
                }
                drop(handshake_permit);
                drop(peer_handshake);
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    Accepting { incoming: ReceiverStream::new(rx), task, guard, refusals }
}

async fn read_preface<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<()> {
    let mut got = [0u8; 24];
    stream.read_exact(&mut got).await?;
    if &got == HTTP2_PREFACE {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidData, "the first bytes are not the HTTP/2 preface"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;

    async fn bound() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn preface_is_checked_and_replayed() {
        let (l, addr) = bound().await;
        let mut acc = plaintext(l, Limits::default(), "t");
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(HTTP2_PREFACE).await.unwrap();
        c.write_all(b"rest").await.unwrap();
        let mut conn = acc.incoming.next().await.unwrap().unwrap();
        let mut got = [0u8; 28];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..24], HTTP2_PREFACE);
        assert_eq!(&got[24..], b"rest");
    }

    #[tokio::test]
    async fn stalled_preface_and_over_cap_are_dropped() {
        let (l, addr) = bound().await;
        let limits = Limits { max_connections: 2, preface_timeout: Duration::from_millis(200), ..Limits::default() };
        let acc = plaintext(l, limits, "t");
        let mut a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"PRI * HTTP").await.unwrap();
        // The third is over the cap: closed at once.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
        // The half-preface is closed after the deadline.
        let n = tokio::time::timeout(Duration::from_secs(2), a.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let counts = acc.refusals.take();
        assert!(counts.contains(&("over_capacity", 1)), "{counts:?}");
        assert!(counts.iter().any(|(k, _)| *k == "preface_timeout"), "{counts:?}");
    }

    #[tokio::test]
    async fn per_peer_cap_frees_on_drop() {
        let (l, addr) = bound().await;
        let limits = Limits { max_connections_per_peer: 1, ..Limits::default() };
        let mut acc = plaintext(l, limits, "t");
        let mut a = TcpStream::connect(addr).await.unwrap();
        a.write_all(HTTP2_PREFACE).await.unwrap();
        let conn = acc.incoming.next().await.unwrap().unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), b.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "second connection from the same peer is refused");
        drop(conn);
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(HTTP2_PREFACE).await.unwrap();
        assert!(acc.incoming.next().await.unwrap().is_ok());
    }
}
