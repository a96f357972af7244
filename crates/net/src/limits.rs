//! Every cap and timeout of the listeners, defined once (decision 0083).
//!
//! The descriptor budget is derived from the caps: [`LIMIT_NOFILE`] is what
//! the agent's systemd unit sets (`LimitNOFILE=`), and a test checks the unit
//! against this constant.

use std::time::Duration;

/// Open connections per listener, handshakes included. The connection over
/// the cap is accepted and closed at once (one descriptor for an instant).
pub const MAX_CONNECTIONS: usize = 512;
/// Open connections per peer (an IPv4 address, or an IPv6 /64).
pub const MAX_CONNECTIONS_PER_PEER: usize = 32;
/// TLS handshakes (and HTTP/2 preface reads) in progress per listener. A
/// connection over it is closed before the ClientHello is read, so before any
/// signature is made.
pub const MAX_HANDSHAKES: usize = 16;
/// Handshakes (and preface reads) in progress per peer, so one peer cannot
/// hold every slot of [`MAX_HANDSHAKES`].
pub const MAX_HANDSHAKES_PER_PEER: usize = 4;
/// New connections a peer may open per second, sustained.
pub const PEER_CONNECTIONS_PER_SEC: u32 = 50;
/// New connections a peer may open in a burst.
pub const PEER_CONNECTION_BURST: u32 = 100;
/// Peers tracked at once (live or recently seen); bounds the peer table.
pub const MAX_TRACKED_PEERS: usize = 4096;
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take, after TCP (and TLS), to send the 24-byte
/// HTTP/2 connection preface. A stalled half-preface is closed after it.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);
/// rustls' buffer limit per TLS connection (plaintext and ciphertext).
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;
/// listen(2) backlog: a burst of connections (a flood) must not overflow the
/// accept queue and drop a legitimate client's SYN (a 1 s retransmit). The
/// kernel caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 4096;
/// TLS sessions a device's server keeps for resumption (rustls' default is
/// 256; each holds the client's certificate chain).
pub const TLS_SESSION_CACHE_ENTRIES: usize = 32;
/// How often refusals are summarised in the log (one line per interval).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// First pause after an accept error; doubled while errors last.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause after accept errors (EMFILE/ENFILE).
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Requests in flight per connection on a device; excess gets
/// RESOURCE_EXHAUSTED.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 32;
/// Requests in flight per server on a device; excess gets RESOURCE_EXHAUSTED.
pub const MAX_REQUESTS_PER_SERVER: usize = 128;
/// HTTP/2 streams a client may open at once on one connection to a device.
pub const MAX_CONCURRENT_STREAMS: u32 = 32;

/// pki-core serves a fleet, often from behind one NAT address, and clients
/// multiplex many calls on one channel: its caps are wider (see
/// [`Limits::service`] and [`ServerLimits::SERVICE`]).
pub mod service {
    /// Open connections per listener.
    pub const MAX_CONNECTIONS: usize = 2048;
    /// Open connections per peer.
    pub const MAX_CONNECTIONS_PER_PEER: usize = 512;
    /// Handshakes in progress per listener.
    pub const MAX_HANDSHAKES: usize = 64;
    /// Handshakes in progress per peer.
    pub const MAX_HANDSHAKES_PER_PEER: usize = 32;
    /// New connections per peer per second, sustained.
    pub const PEER_CONNECTIONS_PER_SEC: u32 = 200;
    /// New connections per peer in a burst.
    pub const PEER_CONNECTION_BURST: u32 = 400;
    /// Requests in flight per connection.
    pub const MAX_REQUESTS_PER_CONNECTION: usize = 256;
    /// Requests in flight per server.
    pub const MAX_REQUESTS_PER_SERVER: usize = 1024;
    /// HTTP/2 streams per connection.
    pub const MAX_CONCURRENT_STREAMS: u32 = 256;
}

/// The request and stream caps of one tonic server ([`crate::server::builder`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Requests in flight per connection.
    pub requests_per_connection: usize,
    /// Requests in flight per server.
    pub requests_per_server: usize,
    /// HTTP/2 streams per connection.
    pub concurrent_streams: u32,
}

impl ServerLimits {
    /// A device (the agent).
    pub const DEVICE: Self = Self {
        requests_per_connection: MAX_REQUESTS_PER_CONNECTION,
        requests_per_server: MAX_REQUESTS_PER_SERVER,
        concurrent_streams: MAX_CONCURRENT_STREAMS,
    };
    /// A fleet service (pki-core).
    pub const SERVICE: Self = Self {
        requests_per_connection: service::MAX_REQUESTS_PER_CONNECTION,
        requests_per_server: service::MAX_REQUESTS_PER_SERVER,
        concurrent_streams: service::MAX_CONCURRENT_STREAMS,
    };
}
/// Largest HTTP/2 header list accepted.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Largest HTTP/2 frame accepted (the protocol minimum).
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// HTTP/2 streams reset by the client before being accepted, per connection.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2 streams reset because of client protocol errors, per connection.
pub const MAX_LOCAL_ERROR_RESETS: usize = 32;
/// Deadline for a unary response (the client's `grpc-timeout` can shorten it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// HTTP/2 PING interval on an otherwise idle connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A peer that does not answer a PING within this is disconnected.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After this a connection gets GOAWAY (bounds a live but idle connection).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
/// Time a connection past its age has to finish its calls.
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(5 * 60);

/// Listeners a process has open at once (the agent's plaintext and mTLS
/// ports overlap while it switches between them).
pub const LISTENERS_PER_PROCESS: usize = 2;
/// Connections at once on the agent's OCI registry port (a push uses a few;
/// it is a listener of its own next to the gRPC ones).
pub const REGISTRY_MAX_CONNECTIONS: usize = 32;
/// Descriptors for everything but connections: journald, D-Bus, state and
/// seed files, pki-core calls, the runtime.
pub const RESERVED_DESCRIPTORS: usize = 512;
/// The process descriptor limit consistent with the caps; the agent's unit
/// sets `LimitNOFILE=` to exactly this.
pub const LIMIT_NOFILE: usize =
    LISTENERS_PER_PROCESS * MAX_CONNECTIONS + REGISTRY_MAX_CONNECTIONS + RESERVED_DESCRIPTORS;

/// What a connection must send before the listener hands it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// The HTTP/2 preface within [`Limits::preface_timeout`] (gRPC).
    Http2Preface,
    /// Anything: the server bounds the first request itself (HTTP/1.1
    /// with a header read timeout, the OCI registry).
    ServerBounded,
}

/// The caps one listener applies. [`Limits::default`] is a device's (the
/// constants above), [`Limits::service`] pki-core's; tests may shrink them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`MAX_CONNECTIONS_PER_PEER`].
    pub max_connections_per_peer: usize,
    /// See [`MAX_HANDSHAKES`].
    pub max_handshakes: usize,
    /// See [`MAX_HANDSHAKES_PER_PEER`].
    pub max_handshakes_per_peer: usize,
    /// See [`PEER_CONNECTIONS_PER_SEC`].
    pub peer_connections_per_sec: u32,
    /// See [`PEER_CONNECTION_BURST`].
    pub peer_connection_burst: u32,
    /// See [`MAX_TRACKED_PEERS`].
    pub max_tracked_peers: usize,
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`PREFACE_TIMEOUT`].
    pub preface_timeout: Duration,
    /// See [`TLS_BUFFER_LIMIT`].
    pub tls_buffer_limit: usize,
    /// See [`REFUSAL_LOG_INTERVAL`].
    pub refusal_log_interval: Duration,
    /// What a connection must send first (default the HTTP/2 preface).
    pub first_bytes: FirstBytes,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_peer: MAX_CONNECTIONS_PER_PEER,
            max_handshakes: MAX_HANDSHAKES,
            max_handshakes_per_peer: MAX_HANDSHAKES_PER_PEER,
            peer_connections_per_sec: PEER_CONNECTIONS_PER_SEC,
            peer_connection_burst: PEER_CONNECTION_BURST,
            max_tracked_peers: MAX_TRACKED_PEERS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            preface_timeout: PREFACE_TIMEOUT,
            tls_buffer_limit: TLS_BUFFER_LIMIT,
            refusal_log_interval: REFUSAL_LOG_INTERVAL,
            first_bytes: FirstBytes::Http2Preface,
        }
    }
}

impl Limits {
    /// A fleet service's listener (pki-core): see [`service`].
    pub fn service() -> Self {
        Self {
            max_connections: service::MAX_CONNECTIONS,
            max_connections_per_peer: service::MAX_CONNECTIONS_PER_PEER,
            max_handshakes: service::MAX_HANDSHAKES,
            max_handshakes_per_peer: service::MAX_HANDSHAKES_PER_PEER,
            peer_connections_per_sec: service::PEER_CONNECTIONS_PER_SEC,
            peer_connection_burst: service::PEER_CONNECTION_BURST,
            ..Self::default()
        }
    }

    /// The agent's OCI registry listener: [`REGISTRY_MAX_CONNECTIONS`],
    /// HTTP/1.1 or h2 ([`FirstBytes::ServerBounded`]).
    pub fn registry() -> Self {
        Self {
            max_connections: REGISTRY_MAX_CONNECTIONS,
            max_connections_per_peer: REGISTRY_MAX_CONNECTIONS / 2,
            max_handshakes: REGISTRY_MAX_CONNECTIONS / 2,
            max_handshakes_per_peer: REGISTRY_MAX_CONNECTIONS / 8,
            first_bytes: FirstBytes::ServerBounded,
            ..Self::default()
        }
    }
}

// The caps are consistent with each other, checked when the crate builds.
const _: () = {
    assert!(LIMIT_NOFILE >= LISTENERS_PER_PROCESS * MAX_CONNECTIONS + REGISTRY_MAX_CONNECTIONS + RESERVED_DESCRIPTORS);
    assert!(MAX_CONNECTIONS_PER_PEER < MAX_CONNECTIONS);
    assert!(MAX_HANDSHAKES < MAX_CONNECTIONS);
    assert!(MAX_HANDSHAKES_PER_PEER < MAX_HANDSHAKES);
    assert!(PEER_CONNECTION_BURST >= PEER_CONNECTIONS_PER_SEC);
    assert!(service::MAX_HANDSHAKES_PER_PEER < service::MAX_HANDSHAKES);
};
