//! The RAUC health gate: mark the booted A/B slot good, but only once the
//! agent is healthy in it.
//!
//! The image boots its root slots through RAUC's GRUB backend. On every
//! boot GRUB sets `<bootname>_TRY=1` for the slot it picks and passes
//! `rauc.slot=<bootname>` (`A` or `B`) on the kernel command line. A slot
//! that was tried but never marked good is skipped at the next boot: the
//! boot loader falls back to the other slot. After an OTA update that is
//! what rolls a broken image back, so the mark must say "this slot works",
//! not merely "this slot booted".
//!
//! [`health_gate`] runs once per agent start, spawned after `READY=1`:
//! 1. It reads the booted slot from `/proc/cmdline` ([`read_booted_slot`]).
//!    Without `rauc.slot=` the system was not booted through RAUC's boot
//!    loader (a host, a test): one info line, nothing else.
//! 2. It waits until the agent is healthy ([`DaemonHealth`]): the server
//!    and its accept loop run, and, if the device is provisioned, a TLS
//!    self-probe of the mTLS port sees the identity's own certificate
//!    (byte-equal leaf, and a valid TLS 1.3 `CertificateVerify` over it).
//!    Each probe is bounded by [`GatePolicy::probe_timeout`]; failed checks
//!    are retried with backoff for [`GatePolicy::health`]'s deadline.
//! 3. It calls `de.pengutronix.rauc.Installer.Mark("good", "booted")` on the
//!    system bus through a [`SlotMarker`] ([`RaucDbus`] in the daemon, a fake
//!    in tests), each call bounded by [`GatePolicy::mark_timeout`] and
//!    retried with backoff for [`GatePolicy::mark`]'s deadline: RAUC is
//!    D-Bus activated and may take long to start under emulation.
//!
//! If the agent never becomes healthy or RAUC never answers, the gate gives
//! up with a warning and the slot stays unmarked: the boot loader returns to
//! the other slot at the next boot. Nothing here panics; every failure is a
//! [`RaucError`].
//!
//! The probe presents no client certificate (with TLS 1.3 the client has the
//! server's certificate and signature before the server asks for the
//! client's), so the listener counts one refused handshake for it ("peer
//! sent no certificates") in its periodic refusal summary. The gate stops
//! probing after the first success, so that is one summary line per boot.

use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::daemon::Daemon;
use crate::dbus::RaucInstallerProxy;

/// RAUC's system configuration. The `rauc` feature is reported in
/// `featureset` only when this file exists.
pub const SYSTEM_CONF: &str = "/etc/rauc/system.conf";

/// The kernel command line.
pub const CMDLINE: &str = "/proc/cmdline";

/// The most of [`CMDLINE`] that is read. Kernels cap the command line at
/// 4 KiB or less (`COMMAND_LINE_SIZE`); anything longer is not a command line.
pub const MAX_CMDLINE_BYTES: usize = 8192;

/// The longest boot name accepted in `rauc.slot=`.
pub const MAX_BOOTNAME_BYTES: usize = 64;

/// The kernel parameter GRUB sets to the booted slot's boot name.
const SLOT_PARAM: &[u8] = b"rauc.slot=";

/// What RAUC's `Mark` is asked: this state ...
const MARK_STATE: &str = "good";
/// ... for this slot.
const MARK_SLOT: &str = "booted";

/// D-Bus errors that no retry can fix: the policy or the interface says no.
const PERMANENT_DBUS_ERRORS: &[&str] = &[
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.AuthFailed",
    "org.freedesktop.DBus.Error.InvalidArgs",
    "org.freedesktop.DBus.Error.InvalidSignature",
    "org.freedesktop.DBus.Error.NotSupported",
    "org.freedesktop.DBus.Error.UnknownInterface",
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.UnknownObject",
];

/// Everything that can stop the gate. Retriable variants (see
/// [`RaucError::is_retriable`]) are retried until their stage's deadline,
/// then wrapped in [`RaucError::GaveUp`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaucError {
    /// The kernel command line could not be read.
    #[error("cannot read {path}: {source}")]
    CmdlineRead {
        /// The file read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel command line is longer than [`MAX_CMDLINE_BYTES`].
    #[error("{path} is longer than {max} bytes")]
    CmdlineTooLarge {
        /// The file read.
        path: PathBuf,
        /// The cap.
        max: usize,
    },
    /// `rauc.slot=` carries no usable boot name.
    #[error("invalid rauc.slot= on the kernel command line: {0}")]
    InvalidSlot(String),
    /// `rauc.slot=` is given twice with different boot names.
    #[error("the kernel command line names two booted slots: rauc.slot={first} and rauc.slot={second}")]
    ConflictingSlots {
        /// The first boot name.
        first: String,
        /// The other one.
        second: String,
    },
    /// The agent is stopping; nothing is marked.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// The agent can never be healthy in this build (Cargo feature
    /// `test-unhealthy`, for the rollback test only).
    #[error("this agent is built never to report healthy (test-only feature test-unhealthy)")]
    NeverHealthy,
    /// The agent's gRPC server or its accept loop is not running.
    #[error("the agent's server is not running")]
    NotServing,
    /// The mTLS self-probe failed.
    #[error("mTLS self-probe of {addr}: {error}")]
    Probe {
        /// The address probed.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        error: ProbeError,
    },
    /// The system bus could not be reached, or the call failed below D-Bus
    /// (connection lost, I/O error).
    #[error("system D-Bus: {0}")]
    Bus(#[source] zbus::Error),
    /// RAUC (or the bus on its behalf) answered with an error that may pass:
    /// the service is still being activated, busy, or failed this time.
    #[error("RAUC answered {name}: {message}")]
    Failed {
        /// The D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The bus refused the call in a way no retry changes (access denied by
    /// the bus policy, no such method or object).
    #[error("the call was refused with {name}: {message}")]
    Refused {
        /// The D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// A bounded step took longer than its timeout.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// Which step.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A stage kept failing until its deadline.
    #[error("{stage}: gave up after {attempts} attempts in {waited:?}; last error: {last}")]
    GaveUp {
        /// Which stage ("health", "mark").
        stage: &'static str,
        /// How many attempts were made.
        attempts: u32,
        /// How long the stage ran.
        waited: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<RaucError>,
    },
}

impl RaucError {
    /// Whether trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Self::NotServing | Self::Probe { .. } | Self::Bus(_) | Self::Failed { .. } | Self::Timeout { .. }
        )
    }
}

/// Why the mTLS self-probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The daemon holds no server certificate to compare with.
    #[error("the daemon holds no server certificate")]
    NoIdentityCertificate,
    /// The TLS client configuration could not be built.
    #[error("cannot build the probe's TLS configuration: {0}")]
    Config(String),
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The server presented a certificate other than the identity's.
    #[error("the listener presents a certificate that is not the device identity's")]
    CertificateMismatch,
    /// The handshake failed before the server proved its identity.
    #[error("handshake: {0}")]
    Handshake(String),
    /// Connect and handshake took longer than the probe timeout.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
}

/// The booted slot's boot name, as `rauc.slot=` gives it (`A`, `B`):
/// 1 to [`MAX_BOOTNAME_BYTES`] ASCII letters, digits, `.`, `_` or `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootName(String);

impl BootName {
    /// Checks `value` (the bytes after `rauc.slot=`).
    pub fn parse(value: &[u8]) -> Result<Self, RaucError> {
        if value.is_empty() {
            return Err(RaucError::InvalidSlot("empty boot name".into()));
        }
        if value.len() > MAX_BOOTNAME_BYTES {
            return Err(RaucError::InvalidSlot(format!("boot name longer than {MAX_BOOTNAME_BYTES} bytes")));
        }
        if let Some(bad) = value.iter().find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))) {
            return Err(RaucError::InvalidSlot(format!("byte 0x{bad:02x} is not allowed in a boot name")));
        }
        // Every byte is ASCII (checked above), so this cannot fail; the
        // lossy conversion keeps it panic-free all the same.
        Ok(Self(String::from_utf8_lossy(value).into_owned()))
    }

    /// The boot name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BootName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The booted slot named by a kernel command line: `Ok(None)` without
/// `rauc.slot=`. Parameters are separated by ASCII whitespace; a repeated
/// `rauc.slot=` must repeat the same boot name. Other parameters may hold
/// any bytes.
pub fn parse_cmdline(cmdline: &[u8]) -> Result<Option<BootName>, RaucError> {
    let mut found: Option<BootName> = None;
    for word in cmdline.split(|b| b.is_ascii_whitespace()) {
        let Some(value) = word.strip_prefix(SLOT_PARAM) else { continue };
        let name = BootName::parse(value)?;
        match &found {
            Some(first) if *first != name => {
                return Err(RaucError::ConflictingSlots { first: first.0.clone(), second: name.0 })
            }
            _ => found = Some(name),
        }
    }
    Ok(found)
}

/// Reads at most [`MAX_CMDLINE_BYTES`] of `path` (normally [`CMDLINE`]) and
/// parses it with [`parse_cmdline`].
pub fn read_booted_slot(path: &Path) -> Result<Option<BootName>, RaucError> {
    let read_error = |source| RaucError::CmdlineRead { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // One byte over the cap tells "exactly at the cap" from "too long".
    file.take(MAX_CMDLINE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() > MAX_CMDLINE_BYTES {
        return Err(RaucError::CmdlineTooLarge { path: path.to_owned(), max: MAX_CMDLINE_BYTES });
    }
    parse_cmdline(&bytes)
}

/// What RAUC reports after marking a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marked {
    /// The slot marked (e.g. `rootfs.0`).
    pub slot: String,
    /// RAUC's description of what it did.
    pub message: String,
}

/// Marks the booted slot good: RAUC over D-Bus in the daemon
/// ([`RaucDbus`]), a fake in unit tests.
pub trait SlotMarker: Send + Sync {
    /// One attempt to mark the booted slot good.
    fn mark_booted_good(&self) -> impl Future<Output = Result<Marked, RaucError>> + Send;
}

/// [`SlotMarker`] over RAUC's D-Bus API on the system bus: a fresh
/// connection per attempt (RAUC may still be starting), no property cache.
#[derive(Clone, Debug)]
pub struct RaucDbus {
    timeout: Duration,
}

impl RaucDbus {
    /// Each attempt (connect, activate RAUC, `Mark`) is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    async fn mark_once(&self) -> Result<Marked, RaucError> {
        let conn = zbus::Connection::system().await.map_err(RaucError::Bus)?;
        let installer = RaucInstallerProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(RaucError::Bus)?;
        let (slot, message) = installer.mark(MARK_STATE, MARK_SLOT).await.map_err(classify)?;
        Ok(Marked { slot, message })
    }
}

impl SlotMarker for RaucDbus {
    fn mark_booted_good(&self) -> impl Future<Output = Result<Marked, RaucError>> + Send {
        let timeout = self.timeout;
        async move {
            tokio::time::timeout(timeout, self.mark_once())
                .await
                .unwrap_or(Err(RaucError::Timeout { what: "RAUC Mark", after: timeout }))
        }
    }
}

/// Sorts a zbus error into [`RaucError::Refused`] (permanent),
/// [`RaucError::Failed`] (an error reply that may pass) or
/// [`RaucError::Bus`].
fn classify(e: zbus::Error) -> RaucError {
    match e {
        zbus::Error::MethodError(name, detail, _) => {
            let name = name.to_string();
            let message = detail.unwrap_or_default();
            if PERMANENT_DBUS_ERRORS.contains(&name.as_str()) {
                RaucError::Refused { name, message }
            } else {
                RaucError::Failed { name, message }
            }
        }
        other => RaucError::Bus(other),
    }
}

/// What a successful health check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Healthy {
    /// Unprovisioned: READY and serving suffice.
    Unprovisioned,
    /// Provisioned, and the mTLS port presents the identity's certificate.
    ServingIdentity,
}

/// Whether the agent is healthy: the daemon ([`DaemonHealth`]), a fake in
/// unit tests.
pub trait HealthCheck: Send + Sync {
    /// One check.
    fn check(&self) -> impl Future<Output = Result<Healthy, RaucError>> + Send;
}

/// The daemon's health, checked from outside its listener: see the module
/// docs.
#[derive(Debug)]
pub struct DaemonHealth {
    daemon: Weak<Daemon>,
    probe_timeout: Duration,
}

impl DaemonHealth {
    /// Checks `daemon`, each TLS probe bounded by `probe_timeout`.
    pub fn new(daemon: Weak<Daemon>, probe_timeout: Duration) -> Self {
        Self { daemon, probe_timeout }
    }

    async fn check_once(&self) -> Result<Healthy, RaucError> {
        if cfg!(feature = "test-unhealthy") {
            return Err(RaucError::NeverHealthy);
        }
        let daemon = self.daemon.upgrade().ok_or(RaucError::ShuttingDown)?;
        if !daemon.is_serving() {
            return Err(RaucError::NotServing);
        }
        let Some(identity) = daemon.identity() else { return Ok(Healthy::Unprovisioned) };
        let addr = probe_addr(daemon.config().bind, daemon.config().mtls_port());
        let expected = identity.cert.leaf();
        // Don't keep the daemon alive across the probe.
        drop(identity);
        drop(daemon);
        let expected = expected.ok_or(RaucError::Probe { addr, error: ProbeError::NoIdentityCertificate })?;
        probe(addr, expected, self.probe_timeout)
            .await
            .map(|()| Healthy::ServingIdentity)
            .map_err(|error| RaucError::Probe { addr, error })
    }
}

impl HealthCheck for DaemonHealth {
    fn check(&self) -> impl Future<Output = Result<Healthy, RaucError>> + Send {
        self.check_once()
    }
}

/// Where the listener bound to `bind` is reached locally: the loopback
/// address of its family when it listens on all addresses, else `bind`.
pub fn probe_addr(bind: IpAddr, port: u16) -> SocketAddr {
    let ip = match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, port)
}

/// Connects to `addr` and runs a TLS 1.3 handshake without a client
/// certificate, within `timeout`. Succeeds once the server has presented
/// `expected` as its leaf and signed the handshake with its key, whatever
/// the server then says about the missing client certificate.
pub async fn probe(addr: SocketAddr, expected: CertificateDer<'static>, timeout: Duration) -> Result<(), ProbeError> {
    let verifier = Arc::new(PinnedLeaf::new(expected));
    let config =
        wendy_identity::tls::client_config(verifier.clone(), None).map_err(|e| ProbeError::Config(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(addr.ip().into());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(ProbeError::Connect)?;
        connector.connect(name, tcp).await.map(drop).map_err(|e| ProbeError::Handshake(e.to_string()))
    };
    let outcome = tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(ProbeError::Timeout(timeout)));
    if verifier.proven() {
        return Ok(());
    }
    if verifier.mismatch.load(Ordering::Relaxed) {
        return Err(ProbeError::CertificateMismatch);
    }
    // A handshake that "succeeded" without the checks having run would be a
    // rustls surprise: not healthy.
    outcome.and(Err(ProbeError::Handshake("the server's certificate was not checked".into())))
}

/// The probe's server-certificate check: the leaf must be byte-equal to the
/// identity's, and the handshake signature valid for it. Records what it saw.
#[derive(Debug)]
struct PinnedLeaf {
    expected: CertificateDer<'static>,
    matched: AtomicBool,
    mismatch: AtomicBool,
    signed: AtomicBool,
}

impl PinnedLeaf {
    fn new(expected: CertificateDer<'static>) -> Self {
        Self {
            expected,
            matched: AtomicBool::new(false),
            mismatch: AtomicBool::new(false),
            signed: AtomicBool::new(false),
        }
    }

    /// The server presented the expected leaf and proved it holds its key.
    fn proven(&self) -> bool {
        self.matched.load(Ordering::Relaxed) && self.signed.load(Ordering::Relaxed)
    }
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            self.matched.store(true, Ordering::Relaxed);
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch.store(true, Ordering::Relaxed);
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let valid = wendy_identity::tls::tls13_signature(message, cert, dss)?;
        if cert.as_ref() == self.expected.as_ref() {
            self.signed.store(true, Ordering::Relaxed);
        }
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        wendy_identity::tls::supported_schemes()
    }
}

/// Retries for one stage: backoff from `backoff_min`, doubling up to
/// `backoff_max`, until `deadline` has passed since the first attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// How long the stage may take in all.
    pub deadline: Duration,
    /// The first pause.
    pub backoff_min: Duration,
    /// The longest pause.
    pub backoff_max: Duration,
}

/// The gate's timeouts and retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatePolicy {
    /// Connect plus handshake of one mTLS self-probe.
    pub probe_timeout: Duration,
    /// Waiting for health.
    pub health: Retry,
    /// One D-Bus `Mark` attempt (connect, activation, call).
    pub mark_timeout: Duration,
    /// Marking.
    pub mark: Retry,
}

impl Default for GatePolicy {
    /// Generous for emulated boards: ML-DSA handshakes and D-Bus activation
    /// are slow under QEMU TCG. The dbus-daemon's own activation timeout is
    /// 25 s, so one `Mark` attempt gets 30 s.
    fn default() -> Self {
        Self {
            probe_timeout: Duration::from_secs(10),
            health: Retry {
                deadline: Duration::from_secs(300),
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(30),
            },
            mark_timeout: Duration::from_secs(30),
            mark: Retry {
                deadline: Duration::from_secs(300),
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(30),
            },
        }
    }
}

/// Runs `op` until it succeeds, fails permanently, or `retry.deadline`
/// would pass before the next attempt. The first retriable failure is
/// logged at info, later ones at debug. Returns the value and the number
/// of attempts.
async fn with_retries<T, F, Fut>(stage: &'static str, retry: &Retry, mut op: F) -> Result<(T, u32), RaucError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RaucError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = retry.backoff_min;
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let error = match op().await {
            Ok(v) => return Ok((v, attempts)),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(e) => e,
        };
        let waited = started.elapsed();
        if waited.saturating_add(pause) > retry.deadline {
            return Err(RaucError::GaveUp { stage, attempts, waited, last: Box::new(error) });
        }
        if attempts == 1 {
            tracing::info!(stage, %error, retry_in = ?pause, "RAUC health gate: not yet, retrying");
        } else {
            tracing::debug!(stage, %error, attempts, retry_in = ?pause, "RAUC health gate: retrying");
        }
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(retry.backoff_max);
    }
}

/// How the gate ended when nothing failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateOutcome {
    /// No `rauc.slot=` on the command line: nothing to mark.
    NotRaucBoot,
    /// The slot was marked good.
    Marked {
        /// The boot name from the command line.
        boot_name: BootName,
        /// What the agent's health check found.
        health: Healthy,
        /// RAUC's answer.
        marked: Marked,
    },
}

/// The gate on explicit inputs: `booted` (from [`read_booted_slot`]), then
/// health, then the mark, as the module docs describe. Logs progress; the
/// caller logs the outcome.
pub async fn run_gate(
    booted: Option<BootName>,
    health: &impl HealthCheck,
    marker: &impl SlotMarker,
    policy: &GatePolicy,
) -> Result<GateOutcome, RaucError> {
    let Some(boot_name) = booted else { return Ok(GateOutcome::NotRaucBoot) };
    tracing::info!(slot = %boot_name, "booted from RAUC slot; it is marked good once the agent is healthy");
    let (healthy, _) = with_retries("health", &policy.health, || health.check()).await?;
    tracing::info!(slot = %boot_name, health = ?healthy, "agent healthy; marking the booted slot good");
    let (marked, _) = with_retries("mark", &policy.mark, || marker.mark_booted_good()).await?;
    Ok(GateOutcome::Marked { boot_name, health: healthy, marked })
}

/// The task `main` spawns after `READY=1`: reads [`CMDLINE`], waits for
/// health and marks the booted slot good through RAUC on the system bus,
/// with [`GatePolicy::default`]. Logs the outcome; never fails or panics.
pub async fn health_gate(daemon: Weak<Daemon>) {
    let policy = GatePolicy::default();
    let booted = match read_booted_slot(Path::new(CMDLINE)) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "RAUC health gate: cannot tell the booted slot; it is not marked good");
            return;
        }
    };
    let update_dir = match daemon.upgrade() {
        Some(d) => d.config().update_dir.clone(),
        None => return,
    };
    if let Some(b) = &booted {
        if let Some(r) = crate::os_update::record::note_boot(&update_dir, b.as_str()) {
            tracing::warn!(version = %r.version, slot = %r.slot, reason = %r.message, "the last OS update was rolled back");
        }
    }
    let health = DaemonHealth::new(daemon, policy.probe_timeout);
    let marker = RaucDbus::new(policy.mark_timeout);
    match run_gate(booted.clone(), &health, &marker, &policy).await {
        Ok(GateOutcome::NotRaucBoot) => {
            tracing::info!("no rauc.slot= on the kernel command line (not booted through RAUC's boot loader): no slot to mark good");
        }
        Ok(GateOutcome::Marked { boot_name, marked, .. }) => {
            tracing::info!(
                slot = %boot_name,
                rauc_slot = %marked.slot,
                message = %marked.message,
                "RAUC marked the booted slot good"
            );
            crate::os_update::record::note_good(&update_dir, boot_name.as_str());
        }
        Err(RaucError::ShuttingDown) => {
            tracing::info!("RAUC health gate: the agent stopped before the slot was marked good");
        }
        Err(e) => match booted.filter(|b| crate::os_update::record::is_trial_boot(&update_dir, b.as_str())) {
            Some(b) => roll_back(&update_dir, &b, &e, &policy).await,
            None => tracing::warn!(
                error = %e,
                "RAUC health gate: the booted slot is not marked good; the boot loader falls back to the other slot at the next boot"
            ),
        },
    }
}

/// The first boot of a newly installed slot never became healthy: record
/// why, mark the slot bad (so the boot loader skips it) and reboot into the
/// old slot.
async fn roll_back(update_dir: &Path, booted: &BootName, error: &RaucError, policy: &GatePolicy) {
    use crate::os_update::record::{self, Outcome, Record};
    tracing::error!(slot = %booted, error = %error, "the newly installed slot is not healthy: rolling back to the other slot");
    let last = record::load(update_dir);
    let version = last.as_ref().map(|r| r.version.clone()).unwrap_or_default();
    let mut rolled = Record::new(
        Outcome::RolledBack,
        &version,
        booted.as_str(),
        &format!("slot {booted} booted but the agent was not healthy: {error}; the device returned to the other slot"),
    );
    if let Some(last) = &last {
        rolled = rolled.timed_like(last);
    }
    record::store(update_dir, &rolled);
    // The gate can give up right after READY, early in the boot: the system
    // bus or RAUC may not answer yet, so both calls are retried like Mark.
    let mark_bad = || async {
        let once = async {
            let conn = zbus::Connection::system().await.map_err(RaucError::Bus)?;
            let installer = RaucInstallerProxy::new(&conn).await.map_err(RaucError::Bus)?;
            installer.mark("bad", MARK_SLOT).await.map_err(classify)
        };
        tokio::time::timeout(policy.mark_timeout, once)
            .await
            .unwrap_or(Err(RaucError::Timeout { what: "RAUC Mark bad", after: policy.mark_timeout }))
    };
    match with_retries("mark bad", &policy.mark, mark_bad).await {
        Ok(((slot, message), _)) => tracing::warn!(rauc_slot = %slot, %message, "RAUC marked the booted slot bad"),
        Err(e) => {
            tracing::error!(error = %e, "could not mark the booted slot bad; its try flag still makes the boot loader skip it")
        }
    }
    let reboot = || async {
        tokio::time::timeout(policy.mark_timeout, crate::os_update::reboot_now("rolling back an unhealthy OS update"))
            .await
            .unwrap_or(Err(zbus::Error::Failure("timed out".into())))
            .map_err(classify)
    };
    if let Err(e) = with_retries("reboot", &policy.mark, reboot).await {
        tracing::error!(error = %e, "could not start the reboot; the slot rolls back at the boot deadline or the next boot");
    }
}

#[cfg(test)]
mod tests;
