//! Shared helpers for the cross-component tests.
//!
//! - [`bins`]: finding the workspace's binaries (`cargo build --workspace`
//!   must have run; `scripts/test` does, and `cargo test --workspace` builds
//!   `wendy-agent` and `pkicore` through their own integration tests);
//! - [`netns`]: a private network namespace per test, and sockets inside it;
//! - [`avahi`]: a private `dbus-daemon` + `avahi-daemon` in a namespace, and
//!   `avahi-browse`;
//! - [`notify`]: a `NOTIFY_SOCKET` receiver (real sd_notify);
//! - [`containerd`]: a private `containerd` and a busybox image in it;
//! - [`apps`]: an agent provisioned on loopback over that containerd, with
//!   a Member and a Viewer identity (the app tests' shared setup);
//! - [`fake_pki`]: an in-process `CertificateService`/`CrlService` with its
//!   own CA, for tests that need no real pki-core;
//! - [`pkicore`]: the real `pkicore serve all --dev` and calls to it;
//! - [`agent`]: spawning `wendy-agent` and talking to it;
//! - [`tlshop`]: a socat (OpenSSL 3.5) TLS hop for clients that cannot do
//!   ML-DSA TLS;
//! - [`pyclient`]: the published-protocol Python client (`tests/compat`).

pub mod agent;
pub mod apps;
pub mod avahi;
pub mod bins;
pub mod containerd;
pub mod fake_pki;
pub mod netns;
pub mod notify;
pub mod pkicore;
pub mod pyclient;
pub mod tlshop;

/// Installs the rustls crypto provider once (aws-lc-rs).
pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The host cache `scripts/setup` fills: `$WENDY_CACHE`, else
/// `$XDG_CACHE_HOME/wendyos`, else `~/.cache/wendyos`.
pub fn wendy_cache() -> std::path::PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    env("WENDY_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("wendyos")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/wendyos")))
        .unwrap_or_else(|| "/root/.cache/wendyos".into())
}

/// Reports why `test` cannot run here. Under `WENDY_TEST_STRICT=1` (set by
/// `scripts/test`, so CI never passes by skipping) that is a failure.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("WENDY_TEST_STRICT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {why} (WENDY_TEST_STRICT=1 forbids skipping)");
    }
    eprintln!("SKIP {test}: {why}");
}
