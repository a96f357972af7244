//! Interop with OpenSSL 3.5, an independent TLS/X.509 implementation.
//!
//! OpenSSL runs from a Debian trixie chroot that `scripts/setup` builds
//! (`$WENDY_OPENSSL_ROOT`, default `~/.cache/wendyos/openssl35-root`).
//! These tests need root (for chroot); `scripts/test` runs as root.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::*;
use time::{Duration, OffsetDateTime};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::{self, RevokedEntry};
use wendy_identity::csr::{self, VerifiedCsr};
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::CertificateAuthority;
use wendy_identity::role::Role;
use wendy_identity::tls::{self, BundleServerVerifier, Credentials, WendyClientVerifier};

/// A scratch directory inside the OpenSSL chroot, removed on drop.
struct OpenSsl {
    root: PathBuf,
    dir: tempfile::TempDir,
}

impl OpenSsl {
    fn new() -> Self {
        let root = std::env::var_os("WENDY_OPENSSL_ROOT").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/wendyos/openssl35-root")
        });
        assert!(
            root.join("usr/bin/openssl").exists(),
            "OpenSSL 3.5 peer missing at {}: run scripts/setup",
            root.display()
        );
        let dir = tempfile::Builder::new().prefix("interop-").tempdir_in(root.join("tmp")).unwrap();
        let me = Self { root, dir };
        let version = me.run(&["version"]);
        assert!(String::from_utf8_lossy(&version.stdout).starts_with("OpenSSL 3.5"), "need OpenSSL 3.5");
        me
    }

    /// Writes a file into the scratch dir; returns its path inside the chroot.
    fn put(&self, name: &str, contents: &str) -> String {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
        self.inside(name)
    }

    fn inside(&self, name: &str) -> String {
        let rel = self.dir.path().strip_prefix(&self.root).unwrap();
        format!("/{}/{}", rel.display(), name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.root).arg("openssl").args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run openssl in its chroot")
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "openssl {args:?} failed:\n{text}");
        text
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Pki {
    ca: CertificateAuthority,
    device_key: PrivateKey,
    device_pem: String,
    user_key: PrivateKey,
    user_pem: String,
}

fn pki() -> Pki {
    let ca = ca("WendyOS Interop CA");
    let now = OffsetDateTime::now_utc();
    let (device_key, device) = leaf_at(&ca, &device_profile(), now, Duration::days(30));
    let (user_key, user) = leaf_at(&ca, &user_profile(Role::Admin), now, Duration::days(30));
    Pki { ca, device_key, device_pem: device.pem, user_key, user_pem: user.pem }
}

#[test]
fn openssl_verify_accepts_device_and_user_chains() {
    let ssl = OpenSsl::new();
    let p = pki();
    let ca = ssl.put("ca.pem", &p.ca.certificate_pem());
    let device = ssl.put("device.pem", &p.device_pem);
    let user = ssl.put("user.pem", &p.user_pem);
    assert!(ssl.run_ok(&["verify", "-CAfile", &ca, "-purpose", "sslserver", &device]).contains(": OK"));
    assert!(ssl.run_ok(&["verify", "-CAfile", &ca, "-purpose", "sslclient", &device]).contains(": OK"));
    assert!(ssl.run_ok(&["verify", "-CAfile", &ca, "-purpose", "sslclient", &user]).contains(": OK"));
    // And it must refuse a user cert as a server: the check has teeth.
    assert!(!ssl.run(&["verify", "-CAfile", &ca, "-purpose", "sslserver", &user]).status.success());
    let text = ssl.run_ok(&["x509", "-in", &user, "-noout", "-subject", "-text"]);
    assert!(text.contains("wendy-role=Admin"), "{text}");
    assert!(text.contains("ML-DSA-65"), "{text}");
}

#[test]
fn openssl_req_verify_accepts_our_csrs() {
    let ssl = OpenSsl::new();
    for alg in KeyAlgorithm::ALL {
        let key = PrivateKey::generate(alg).unwrap();
        let path = ssl.put("req.pem", &csr::build(&key, "sh/wendy/1/42").unwrap());
        let out = ssl.run_ok(&["req", "-verify", "-in", &path, "-noout"]);
        assert!(out.contains("verify OK"), "{alg}: {out}");
    }
}

#[test]
fn openssl_crl_parses_our_crl_and_lists_the_revoked_serial() {
    let ssl = OpenSsl::new();
    let p = pki();
    let revoked = wendy_identity::verify::CertificateInfo::from_pem(&p.user_pem).unwrap().serial_hex;
    let t = OffsetDateTime::now_utc();
    let pem = crl::build(
        &p.ca,
        &[RevokedEntry { serial_hex: revoked.clone(), revoked_at: t }],
        3,
        t - Duration::minutes(1),
        t + Duration::days(1),
    )
    .unwrap();
    let crl = ssl.put("crl.pem", &pem);
    let ca = ssl.put("ca.pem", &p.ca.certificate_pem());
    let text = ssl.run_ok(&["crl", "-in", &crl, "-CAfile", &ca, "-noout", "-text"]);
    assert!(text.contains("verify OK"), "{text}");
    assert!(text.to_ascii_lowercase().contains(&format!("serial number: {revoked}")), "{revoked} not in:\n{text}");
    // And OpenSSL's own verify honours it.
    let user = ssl.put("user.pem", &p.user_pem);
    let out = ssl.run(&["verify", "-crl_check", "-CAfile", &ca, "-CRLfile", &crl, &user]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked")
            || String::from_utf8_lossy(&out.stderr).contains("revoked")
    );
}

#[test]
fn we_accept_openssl_keys_and_csrs() {
    let ssl = OpenSsl::new();
    let key_path = ssl.inside("okey.pem");
    let csr_path = ssl.inside("ocsr.pem");
    ssl.run_ok(&["genpkey", "-algorithm", "ML-DSA-65", "-out", &key_path]);
    ssl.run_ok(&["req", "-new", "-key", &key_path, "-subj", "/CN=sh\\/wendy\\/1\\/7", "-out", &csr_path]);
    let csr = VerifiedCsr::from_pem(&ssl.read("ocsr.pem")).unwrap();
    assert_eq!(csr.algorithm, KeyAlgorithm::MlDsa65);
    let key = PrivateKey::from_pem(&ssl.read("okey.pem")).unwrap();
    assert_eq!(key.public_key_der(), csr.public_key_der);
    // And OpenSSL reads the keys we write.
    let ours = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let ours_path = ssl.put("ours.pem", &ours.to_pem());
    let pub_pem = ssl.run_ok(&["pkey", "-in", &ours_path, "-pubout"]);
    assert!(pub_pem.contains(ours.public_key_pem().trim()), "OpenSSL derived a different public key");
}

/// Reads `child`'s stdout until s_server says ACCEPT, then keeps collecting
/// the rest in a thread (joined for the transcript).
fn wait_accepting(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("openssl s_server exited before accepting:\n{seen}");
        }
        seen.push_str(&line);
        if line.starts_with("ACCEPT") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        seen + &rest
    })
}

#[test]
fn rustls_client_to_openssl_s_server_mutual_ml_dsa_and_mlkem() {
    let ssl = OpenSsl::new();
    let p = pki();
    let ca = ssl.put("ca.pem", &p.ca.certificate_pem());
    let cert = ssl.put("device.pem", &p.device_pem);
    let key = ssl.put("device.key", &p.device_key.to_pem());
    let port = free_port();
    let accept = format!("127.0.0.1:{port}");
    let mut server = ssl
        .command(&[
            "s_server",
            "-accept",
            &accept,
            "-naccept",
            "1",
            "-tls1_3",
            "-cert",
            &cert,
            "-key",
            &key,
            "-CAfile",
            &ca,
            "-Verify",
            "1",
            "-verify_return_error",
            "-groups",
            "X25519MLKEM768",
            "-www",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let transcript = wait_accepting(&mut server);

    let bundle = TrustBundle::from_pem(&p.ca.certificate_pem()).unwrap();
    let creds = Credentials::from_pems(&p.user_key.to_pem(), &p.user_pem, &p.ca.certificate_pem()).unwrap();
    let mut config = tls::client_config(Arc::new(BundleServerVerifier::new(bundle)), Some(&creds)).unwrap();
    config.alpn_protocols.clear();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "device.wendy.internal".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(StdDuration::from_secs(20))).unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut page = Vec::new();
    let _ = stream.read_to_end(&mut page);
    let page = String::from_utf8_lossy(&page).into_owned();
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let group = conn.negotiated_key_exchange_group().unwrap().name();
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
    drop(sock);
    let _ = server.wait();
    let text = transcript.join().unwrap();
    // s_server -www reports the session it saw, including our client cert.
    assert!(page.contains("200 ok"), "s_server status page missing:\n{page}\n{text}");
    assert!(page.contains("X25519MLKEM768"), "hybrid group not reported:\n{page}");
    assert!(page.contains("Client certificate"), "s_server saw no client certificate:\n{page}");
    assert!(page.contains("Peer signature type: mldsa65"), "client did not sign with ML-DSA-65:\n{page}");
    assert!(page.contains(p.user_pem.lines().nth(1).unwrap()), "s_server shows a different client certificate");
    assert!(!text.contains("verify error"), "{text}");
}

#[test]
fn openssl_s_client_to_rustls_server_mutual_ml_dsa_and_mlkem() {
    let ssl = OpenSsl::new();
    let p = pki();
    let ca = ssl.put("ca.pem", &p.ca.certificate_pem());
    let cert = ssl.put("user.pem", &p.user_pem);
    let key = ssl.put("user.key", &p.user_key.to_pem());

    let bundle = TrustBundle::from_pem(&p.ca.certificate_pem()).unwrap();
    let verifier = Arc::new(WendyClientVerifier::new(bundle, true));
    let creds = Credentials::from_pems(&p.device_key.to_pem(), &p.device_pem, &p.ca.certificate_pem()).unwrap();
    let mut config = tls::server_config(&creds, verifier).unwrap();
    config.alpn_protocols.clear();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || -> Result<(String, rustls::NamedGroup), String> {
        let (mut sock, _) = listener.accept().map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(StdDuration::from_secs(20))).unwrap();
        let mut conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        let mut stream = rustls::Stream::new(&mut conn, &mut sock);
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).map_err(|e| e.to_string())?;
        stream.write_all(b"hello from rustls\n").map_err(|e| e.to_string())?;
        let group = conn.negotiated_key_exchange_group().map(|g| g.name()).ok_or("no group")?;
        let peer = conn.peer_certificates().map(|c| c.len()).unwrap_or(0);
        if peer == 0 {
            return Err("no client certificate".into());
        }
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
        Ok((line, group))
    });

    let connect = format!("127.0.0.1:{port}");
    let mut client = ssl
        .command(&[
            "s_client",
            "-connect",
            &connect,
            "-tls1_3",
            "-cert",
            &cert,
            "-key",
            &key,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-groups",
            "X25519MLKEM768:X25519",
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client.stdin.as_mut().unwrap().write_all(b"hello from openssl\n").unwrap();
    drop(client.stdin.take());
    let (line, group) = server.join().unwrap().unwrap();
    let mut stdout = String::new();
    client.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let _ = client.wait();
    assert_eq!(line.trim(), "hello from openssl");
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
    assert!(stdout.contains("hello from rustls"), "{stdout}");
    assert!(stdout.contains("X25519MLKEM768"), "s_client did not report the hybrid group:\n{stdout}");
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    assert!(stdout.contains("ML-DSA-65") || stdout.to_ascii_lowercase().contains("mldsa65"), "{stdout}");
}
