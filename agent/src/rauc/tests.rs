//! Unit tests of the RAUC health gate: the command-line parser, the gate's
//! order and retries with fakes (no D-Bus), and the TLS self-probe against
//! a real rustls server on loopback.

use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use super::*;

const CMDLINE_B: &[u8] = b"BOOT_IMAGE=/vmlinuz root=/dev/vda3 rauc.slot=B console=ttyAMA0 quiet\n";

fn name(s: &str) -> BootName {
    BootName::parse(s.as_bytes()).unwrap()
}

#[test]
fn finds_the_booted_slot() {
    assert_eq!(parse_cmdline(CMDLINE_B).unwrap(), Some(name("B")));
    assert_eq!(parse_cmdline(b"rauc.slot=A").unwrap(), Some(name("A")));
    assert_eq!(parse_cmdline(b"ro\trauc.slot=A\nquiet").unwrap(), Some(name("A")));
    assert_eq!(parse_cmdline(b"rauc.slot=A rauc.slot=A").unwrap(), Some(name("A")));
    assert_eq!(parse_cmdline(b"rauc.slot=system0").unwrap().unwrap().as_str(), "system0");
    // Other parameters may hold any bytes.
    assert_eq!(parse_cmdline(b"x=\xff\xfe rauc.slot=B").unwrap(), Some(name("B")));
}

#[test]
fn no_rauc_slot_is_not_an_error() {
    for c in [&b""[..], b"\n", b"root=/dev/sda1 quiet", b"rauc.slot", b"xrauc.slot=A", b"rauc.slots=A", b"RAUC.SLOT=A"]
    {
        assert_eq!(parse_cmdline(c).unwrap(), None, "{:?}", String::from_utf8_lossy(c));
    }
}

#[test]
fn bad_boot_names_are_refused() {
    for c in [&b"rauc.slot="[..], b"rauc.slot=\"A\"", b"rauc.slot=A/B", b"rauc.slot=A\xff", b"rauc.slot=A=B"] {
        let e = parse_cmdline(c).unwrap_err();
        assert!(matches!(e, RaucError::InvalidSlot(_)), "{:?}: {e}", String::from_utf8_lossy(c));
    }
    let long = format!("rauc.slot={}", "A".repeat(MAX_BOOTNAME_BYTES + 1));
    assert!(matches!(parse_cmdline(long.as_bytes()), Err(RaucError::InvalidSlot(_))));
    let longest = format!("rauc.slot={}", "A".repeat(MAX_BOOTNAME_BYTES));
    assert!(parse_cmdline(longest.as_bytes()).unwrap().is_some());
    let e = parse_cmdline(b"rauc.slot=A rauc.slot=B").unwrap_err();
    assert!(matches!(&e, RaucError::ConflictingSlots { first, second } if first == "A" && second == "B"), "{e}");
}

/// Every prefix of a real command line parses without panicking, to what
/// the prefix says: nothing before the parameter is complete, an error for
/// the bare `rauc.slot=`, the slot after it.
#[test]
fn truncated_at_every_offset() {
    let start = CMDLINE_B.windows(SLOT_PARAM.len()).position(|w| w == SLOT_PARAM).unwrap();
    let value_at = start + SLOT_PARAM.len();
    for cut in 0..=CMDLINE_B.len() {
        let got = parse_cmdline(&CMDLINE_B[..cut]);
        match cut {
            c if c < value_at => assert!(matches!(got, Ok(None)), "cut {cut}: {got:?}"),
            c if c == value_at => assert!(matches!(got, Err(RaucError::InvalidSlot(_))), "cut {cut}: {got:?}"),
            _ => assert_eq!(got.unwrap(), Some(name("B")), "cut {cut}"),
        }
    }
}

/// Any byte in the boot name gives a slot or an error, never a panic.
#[test]
fn every_byte_in_the_value() {
    for b in 0..=u8::MAX {
        let c = [b"rauc.slot=A".as_slice(), &[b]].concat();
        match parse_cmdline(&c) {
            Ok(Some(n)) => assert!(n.as_str() == "A" || n.as_str().len() == 2, "{b:#x}: {n}"),
            Ok(None) => panic!("{b:#x}: the parameter vanished"),
            Err(e) => assert!(matches!(e, RaucError::InvalidSlot(_)), "{b:#x}: {e}"),
        }
    }
}

#[test]
fn reads_the_file_with_a_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cmdline");
    std::fs::write(&path, CMDLINE_B).unwrap();
    assert_eq!(read_booted_slot(&path).unwrap(), Some(name("B")));

    let mut exact = b"rauc.slot=A ".to_vec();
    exact.resize(MAX_CMDLINE_BYTES, b'x');
    std::fs::write(&path, &exact).unwrap();
    assert_eq!(read_booted_slot(&path).unwrap(), Some(name("A")));

    exact.push(b'x');
    std::fs::write(&path, &exact).unwrap();
    assert!(matches!(read_booted_slot(&path), Err(RaucError::CmdlineTooLarge { max: MAX_CMDLINE_BYTES, .. })));

    let missing = read_booted_slot(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(missing, RaucError::CmdlineRead { .. }), "{missing}");
    assert!(missing.to_string().contains("absent"), "{missing}");
}

#[test]
fn probe_address_follows_the_bind_address() {
    assert_eq!(probe_addr("0.0.0.0".parse().unwrap(), 50052), "127.0.0.1:50052".parse().unwrap());
    assert_eq!(probe_addr("::".parse().unwrap(), 50052), "[::1]:50052".parse().unwrap());
    assert_eq!(probe_addr("10.0.0.7".parse().unwrap(), 50052), "10.0.0.7:50052".parse().unwrap());
}

// ------------------------------------------------------------ the gate, with fakes

/// Answers from a script, then the last answer forever; counts calls.
struct Scripted<T> {
    answers: Mutex<Vec<Result<T, RaucError>>>,
    last: fn() -> Result<T, RaucError>,
    calls: AtomicU32,
}

impl<T> Scripted<T> {
    fn new(mut answers: Vec<Result<T, RaucError>>, last: fn() -> Result<T, RaucError>) -> Self {
        answers.reverse();
        Self { answers: Mutex::new(answers), last, calls: AtomicU32::new(0) }
    }

    fn next(&self) -> Result<T, RaucError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answers.lock().unwrap().pop().unwrap_or_else(|| (self.last)())
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl HealthCheck for Scripted<Healthy> {
    fn check(&self) -> impl Future<Output = Result<Healthy, RaucError>> + Send {
        let r = self.next();
        async move { r }
    }
}

impl SlotMarker for Scripted<Marked> {
    fn mark_booted_good(&self) -> impl Future<Output = Result<Marked, RaucError>> + Send {
        let r = self.next();
        async move { r }
    }
}

fn fast() -> GatePolicy {
    let retry = Retry {
        deadline: Duration::from_millis(200),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    };
    GatePolicy {
        probe_timeout: Duration::from_millis(100),
        health: retry.clone(),
        mark_timeout: Duration::ZERO,
        mark: retry,
    }
}

fn marked() -> Result<Marked, RaucError> {
    Ok(Marked { slot: "rootfs.1".into(), message: "marked slot rootfs.1 as good".into() })
}

fn failed() -> RaucError {
    RaucError::Failed { name: "org.freedesktop.DBus.Error.ServiceUnknown".into(), message: "activating".into() }
}

#[tokio::test]
async fn without_rauc_slot_nothing_is_checked_or_marked() {
    let health = Scripted::new(vec![], || Ok(Healthy::Unprovisioned));
    let marker = Scripted::new(vec![], marked);
    assert_eq!(run_gate(None, &health, &marker, &fast()).await.unwrap(), GateOutcome::NotRaucBoot);
    assert_eq!((health.calls(), marker.calls()), (0, 0));
}

#[tokio::test]
async fn marks_after_health_retrying_both() {
    let health = Scripted::new(
        vec![Err(RaucError::NotServing), Err(RaucError::Timeout { what: "probe", after: Duration::ZERO })],
        || Ok(Healthy::ServingIdentity),
    );
    let marker =
        Scripted::new(vec![Err(failed()), Err(RaucError::Timeout { what: "Mark", after: Duration::ZERO })], marked);
    let out = run_gate(Some(name("B")), &health, &marker, &fast()).await.unwrap();
    assert_eq!(
        out,
        GateOutcome::Marked { boot_name: name("B"), health: Healthy::ServingIdentity, marked: marked().unwrap() }
    );
    assert_eq!((health.calls(), marker.calls()), (3, 3));
}

#[tokio::test]
async fn never_healthy_means_never_marked() {
    let health = Scripted::new(vec![], || Err(RaucError::NotServing));
    let marker = Scripted::new(vec![], marked);
    let e = run_gate(Some(name("A")), &health, &marker, &fast()).await.unwrap_err();
    assert!(
        matches!(&e, RaucError::GaveUp { stage: "health", last, .. } if matches!(**last, RaucError::NotServing)),
        "{e}"
    );
    assert!(health.calls() > 2, "retried: {}", health.calls());
    assert_eq!(marker.calls(), 0);
}

#[tokio::test]
async fn a_stopping_agent_stops_the_gate_at_once() {
    let health = Scripted::new(vec![], || Err(RaucError::ShuttingDown));
    let marker = Scripted::new(vec![], marked);
    let e = run_gate(Some(name("A")), &health, &marker, &fast()).await.unwrap_err();
    assert!(matches!(e, RaucError::ShuttingDown), "{e}");
    assert_eq!((health.calls(), marker.calls()), (1, 0));
}

#[tokio::test]
async fn rauc_that_never_answers_is_given_up_on_in_time() {
    let health = Scripted::new(vec![], || Ok(Healthy::Unprovisioned));
    let marker = Scripted::new(vec![], || Err(failed()));
    let started = std::time::Instant::now();
    let e = run_gate(Some(name("A")), &health, &marker, &fast()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    match &e {
        RaucError::GaveUp { stage: "mark", attempts, last, .. } => {
            assert_eq!(*attempts, marker.calls());
            assert!(matches!(**last, RaucError::Failed { .. }), "{last}");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("ServiceUnknown"), "{e}");
}

#[tokio::test]
async fn a_policy_refusal_is_not_retried() {
    let health = Scripted::new(vec![], || Ok(Healthy::Unprovisioned));
    let marker = Scripted::new(vec![], || {
        Err(classify(zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from("org.freedesktop.DBus.Error.AccessDenied").unwrap(),
            Some("Rejected send message".into()),
            zbus::message::Message::method_call("/", "Mark").unwrap().build(&()).unwrap(),
        )))
    });
    let e = run_gate(Some(name("A")), &health, &marker, &fast()).await.unwrap_err();
    assert!(matches!(&e, RaucError::Refused { name, .. } if name.ends_with("AccessDenied")), "{e}");
    assert_eq!(marker.calls(), 1);
}

#[test]
fn default_policy_is_bounded() {
    let p = GatePolicy::default();
    for r in [&p.health, &p.mark] {
        assert!(r.backoff_min > Duration::ZERO && r.backoff_min <= r.backoff_max && r.backoff_max < r.deadline);
    }
    assert!(p.probe_timeout < p.health.deadline && p.mark_timeout < p.mark.deadline);
}

// ------------------------------------------------------------ the probe, against rustls

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn device_identity(ca: &wendy_identity::profile::CertificateAuthority) -> wendy_identity::tls::Credentials {
    use wendy_identity::key::{KeyAlgorithm, PrivateKey};
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let profile = wendy_identity::profile::LeafProfile::Device { organization_id: 1, asset_id: 7 };
    let leaf =
        ca.issue(&profile, &key.public_key_der(), time::OffsetDateTime::now_utc(), time::Duration::days(1)).unwrap();
    wendy_identity::tls::Credentials::from_pems(&key.to_pem(), &leaf.pem, &ca.certificate_pem()).unwrap()
}

/// The agent's own server config (client certificate mandatory) on loopback.
async fn mtls_server(credentials: &wendy_identity::tls::Credentials, ca_pem: &str) -> Server {
    let bundle = wendy_identity::bundle::TrustBundle::from_pem(ca_pem).unwrap();
    let verifier = Arc::new(wendy_identity::tls::WendyClientVerifier::new(bundle, true));
    let cert = Arc::new(crate::tls::SwappableCert::new(credentials).unwrap());
    let config = crate::tls::server_config(credentials, cert, verifier).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Refused: the probe sends no client certificate.
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    Server { addr, task }
}

#[tokio::test]
async fn probe_sees_the_identity_and_nothing_else() {
    let ca = wendy_identity::profile::CertificateAuthority::create(
        "WendyOS Device CA",
        wendy_identity::key::KeyAlgorithm::MlDsa65,
        time::Duration::days(30),
    )
    .unwrap();
    let ours = device_identity(&ca);
    let other = device_identity(&ca);
    let server = mtls_server(&ours, &ca.certificate_pem()).await;
    let timeout = Duration::from_secs(10);

    probe(server.addr, ours.chain[0].clone(), timeout).await.unwrap();
    let e = probe(server.addr, other.chain[0].clone(), timeout).await.unwrap_err();
    assert!(matches!(e, ProbeError::CertificateMismatch), "{e}");
    // The CA certificate is in the chain the server sends, but not its leaf.
    let e = probe(server.addr, ca.certificate().clone(), timeout).await.unwrap_err();
    assert!(matches!(e, ProbeError::CertificateMismatch), "{e}");

    let addr = server.addr;
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = probe(addr, ours.chain[0].clone(), timeout).await.unwrap_err();
    assert!(matches!(e, ProbeError::Connect(_)), "{e}");
}

#[tokio::test]
async fn probe_of_a_silent_listener_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cert = CertificateDer::from(vec![0x30, 0x00]);
    let started = std::time::Instant::now();
    let e = probe(addr, cert, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(listener);
}
