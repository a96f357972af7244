//! Shared helpers for the cross-component tests.
//!
//! - [`bins`]: finding the workspace's binaries (`cargo build --workspace`
//!   must have run; `scripts/test` does, and `cargo test --workspace` builds
//!   `wendy-agent` and `pkicore` through their own integration tests);
//! - [`netns`]: a private network namespace per test, and sockets inside it;
//! - [`avahi`]: a private `dbus-daemon` + `avahi-daemon` in a namespace, and
//!   `avahi-browse`;
//! - [`notify`]: a `NOTIFY_SOCKET` receiver (real sd_notify);
//! - [`fake_pki`]: an in-process `CertificateService`/`CrlService` with its
//!   own CA, for tests that need no real pki-core;
//! - [`pkicore`]: the real `pkicore serve all --dev` and calls to it;
//! - [`agent`]: spawning `wendy-agent` and talking to it.

pub mod agent;
pub mod avahi;
pub mod bins;
pub mod fake_pki;
pub mod netns;
pub mod notify;
pub mod pkicore;

/// Installs the rustls crypto provider once (aws-lc-rs).
pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
