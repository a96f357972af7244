//! Plumbing that the agent, pki-core and the CLI share, written once so a
//! limit cannot be present in one copy and missing in another (issue 11,
//! decision 0083):
//!
//! - [`limits`]: every cap and timeout, defined once.
//! - [`listener`]: the capped accept loop (global and per-peer connection
//!   caps, per-peer rate, a cap on concurrent handshakes, handshake and
//!   HTTP/2 preface deadlines, EMFILE back-off, aggregated refusal logs).
//! - [`server`]: the one tonic `Server` constructor with request and HTTP/2
//!   limits.
//! - [`safe_read`]: reading files an attacker may have planted (FIFOs,
//!   symlinks, huge files) without blocking, following or exhausting memory.
//! - [`atomic_write`]: temp file, fsync, rename, fsync the directory.
//! - [`addr`]: the one `HOST[:PORT]` grammar.
//! - [`connect`]: client channels with their connect, handshake and call
//!   timeouts.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addr;
pub mod atomic_write;
pub mod connect;
pub mod limits;
pub mod listener;
mod peers;
pub mod refusals;
pub mod safe_read;
pub mod server;
