//! pki-core: the self-hosted WendyOS PKI engine.
//!
//! - [`engine`]: issuance, renewal, revocation, tokens, CA rotation;
//! - [`store`]: persistence behind a trait, SQLite by default;
//! - [`frontend`]: the `wendycloud.v1.CertificateService` and CRL service;
//! - [`admin`]: the local admin API on a Unix socket;
//! - [`net`]: TLS accept loop that hands peer certificates to handlers;
//! - [`client`]: channels to the frontend (TLS, pinned CA) and admin socket;
//! - [`credential`]: operator-provisioned keys wrapped in age/scrypt;
//! - [`config`]: the YAML configuration of `serve wendy`;
//! - [`serve`]: wiring it all together.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod ca;
pub mod client;
pub mod config;
pub mod credential;
pub mod engine;
pub mod error;
pub mod frontend;
pub mod net;
pub mod revocation;
pub mod secret;
pub mod serve;
pub mod store;

pub use error::Error;

/// Name of the admin socket inside the data directory.
pub const ADMIN_SOCKET_NAME: &str = "admin.sock";

/// Name of the SQLite database inside the data directory.
pub const DATABASE_NAME: &str = "pkicore.db";

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/pkicore";

/// Environment variable that overrides the data directory.
pub const DATA_DIR_ENV: &str = "PKICORE_DATA_DIR";
