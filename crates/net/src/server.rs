//! The one tonic `Server` constructor: request, HTTP/2 and server-wide
//! limits (style guide §3). Every server of the agent and pki-core starts
//! from [`builder`] and only adds its services (and, for the agent, its
//! role layer).

use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::limits::*;

/// The server type [`builder`] returns.
pub type LimitedServer = Server<Stack<GlobalConcurrencyLimitLayer, Identity>>;

/// A `Server` with every limit set:
/// - requests: per connection and per server as `limits` says
///   ([`ServerLimits::DEVICE`] or [`ServerLimits::SERVICE`]), excess shed with
///   RESOURCE_EXHAUSTED (nothing queues), [`REQUEST_TIMEOUT`];
/// - HTTP/2: streams per connection as `limits` says, [`MAX_HEADER_LIST_BYTES`],
///   [`MAX_FRAME_BYTES`], reset-stream caps, keepalive PINGs (a dead peer is
///   closed after [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`]) and
///   [`MAX_CONNECTION_AGE`] (a live but idle one gets GOAWAY).
///
/// Message-size limits stay per service (`max_decoding_message_size`).
pub fn builder(limits: ServerLimits) -> LimitedServer {
    Server::builder()
        .concurrency_limit_per_connection(limits.requests_per_connection)
        .load_shed(true)
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(limits.concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .layer(GlobalConcurrencyLimitLayer::new(limits.requests_per_server))
}
