//! The code-signing CA (decision 0069) against OpenSSL 3.5, the
//! independent X.509/CMS implementation: a code signer issued through the
//! `pkicore codesign` CLI verifies for `-purpose codesign` under the
//! code-signing CA only, a device certificate does not, and a CMS
//! signature made as RAUC makes them verifies for codesign.
//!
//! OpenSSL runs from the Debian trixie chroot that `scripts/setup` builds
//! (`$WENDY_OPENSSL_ROOT`, default `~/.cache/wendyos/openssl35-root`); the
//! test needs root (for chroot), as `scripts/test` runs it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use wendy_proto::cloud::IssueCertificateRequest;

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
        let dir = tempfile::Builder::new().prefix("codesign-").tempdir_in(root.join("tmp")).unwrap();
        let me = Self { root, dir };
        let version = me.run(&["version"]);
        assert!(String::from_utf8_lossy(&version.stdout).starts_with("OpenSSL 3.5"), "need OpenSSL 3.5");
        me
    }

    /// A file of the scratch directory, as seen from outside the chroot.
    fn host(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The same file as seen inside the chroot.
    fn inside(&self, name: &str) -> String {
        let rel = self.dir.path().strip_prefix(&self.root).unwrap();
        format!("/{}/{}", rel.display(), name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("chroot").arg(&self.root).arg("openssl").args(args).output().expect("run openssl in its chroot")
    }

    fn text(out: &Output) -> String {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "openssl {args:?} failed:\n{}", Self::text(&out));
        Self::text(&out)
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "openssl {args:?} should have failed:\n{}", Self::text(&out));
        Self::text(&out)
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs a `pkicore` admin subcommand that must fail; returns its stderr.
fn admin_fails(server: &Server, args: &[&str]) -> String {
    let out = Command::new(binary()).arg("--data-dir").arg(server.data_dir()).args(args).output().unwrap();
    assert!(!out.status.success(), "pkicore {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_accepts_our_code_signer_for_codesign_only_under_the_code_signing_ca() {
    let ssl = OpenSsl::new();
    let server = Server::start(&[]);
    let (keyring, device_ca) = (ssl.inside("keyring.pem"), ssl.inside("device-ca.pem"));

    // The keyring for images (/etc/rauc/keyring.pem) and the device CA bundle.
    server.admin(&["codesign", "ca", "--out", ssl.host("keyring.pem").to_str().unwrap()]);
    assert_eq!(mode(&ssl.host("keyring.pem")), 0o644);
    let device_bundle = server.admin(&["ca", "export"]);
    std::fs::write(ssl.host("device-ca.pem"), &device_bundle).unwrap();
    let keyring_pem = std::fs::read_to_string(ssl.host("keyring.pem")).unwrap();
    assert_eq!(keyring_pem, server.admin(&["codesign", "ca"]), "stdout and --out give the same keyring");
    assert!(!device_bundle.contains(keyring_pem.trim()), "the code-signing CA must not be in the device bundle");
    let ca_text = ssl.ok(&["x509", "-in", &keyring, "-noout", "-text"]);
    assert!(ca_text.contains("CA:TRUE") && ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
    assert!(!ca_text.contains("Digital Signature") && !ca_text.contains("Extended Key Usage"), "{ca_text}");

    // The signer's key and CSR are made by OpenSSL; only the CSR reaches pki-core.
    ssl.ok(&["genpkey", "-quiet", "-algorithm", "ML-DSA-65", "-out", &ssl.inside("signer.key")]);
    ssl.ok(&[
        "req",
        "-new",
        "-key",
        &ssl.inside("signer.key"),
        "-subj",
        "/O=Evil Corp/CN=WendyOS release signer/emailAddress=x@y",
        "-out",
        &ssl.inside("signer.csr"),
    ]);
    let csr = ssl.host("signer.csr");
    let signer_out = ssl.host("signer.pem");
    server.admin(&[
        "codesign",
        "issue",
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        signer_out.to_str().unwrap(),
        "--validity-days",
        "30",
    ]);
    assert_eq!(mode(&signer_out), 0o644);
    let signer = ssl.inside("signer.pem");
    let text = ssl.ok(&["x509", "-in", &signer, "-noout", "-text"]);
    assert!(text.contains("Subject: CN=WendyOS release signer\n"), "only the CN is taken from the CSR:\n{text}");
    assert!(text.contains("CA:FALSE") && text.contains("Code Signing"), "{text}");
    assert!(!text.contains("TLS Web Server") && !text.contains("TLS Web Client"), "{text}");
    assert!(text.contains("ML-DSA-65"), "{text}");

    // codesign under the code-signing CA: yes. Under the device CA: no.
    ssl.ok(&["verify", "-purpose", "codesign", "-CAfile", &keyring, &signer]);
    ssl.fails(&["verify", "-CAfile", &device_ca, &signer]);
    ssl.fails(&["verify", "-purpose", "codesign", "-CAfile", &device_ca, &signer]);
    // Not a TLS certificate either.
    ssl.fails(&["verify", "-purpose", "sslclient", "-CAfile", &keyring, &signer]);
    ssl.fails(&["verify", "-purpose", "sslserver", "-CAfile", &keyring, &signer]);

    // A device certificate does not verify against the code-signing CA.
    let mut anon = server.client(None).await;
    let (token, _) = asset_token(&mut anon, 0).await;
    let (_, device_csr) = key_and_csr();
    let device =
        issued(anon.issue_certificate(IssueCertificateRequest { pem_csr: device_csr, enrollment_token: token }).await);
    std::fs::write(ssl.host("device.pem"), &device.pem_certificate).unwrap();
    let device_cert = ssl.inside("device.pem");
    ssl.ok(&["verify", "-purpose", "sslclient", "-CAfile", &device_ca, &device_cert]);
    ssl.fails(&["verify", "-CAfile", &keyring, &device_cert]);
    ssl.fails(&["verify", "-purpose", "codesign", "-CAfile", &keyring, &device_cert]);
    ssl.fails(&["verify", "-purpose", "codesign", "-CAfile", &device_ca, &device_cert]);

    // A CMS signature as `rauc bundle` makes it round-trips for codesign.
    std::fs::write(ssl.host("manifest"), b"[update]\ncompatible=wendyos-test\n").unwrap();
    ssl.ok(&[
        "cms",
        "-sign",
        "-md",
        "sha512",
        "-nodetach",
        "-binary",
        "-nosmimecap",
        "-in",
        &ssl.inside("manifest"),
        "-signer",
        &signer,
        "-inkey",
        &ssl.inside("signer.key"),
        "-outform",
        "DER",
        "-out",
        &ssl.inside("manifest.cms"),
    ]);
    let verify = |ca: &str| {
        vec![
            "cms".to_owned(),
            "-verify".into(),
            "-purpose".into(),
            "codesign".into(),
            "-CAfile".into(),
            ca.to_owned(),
            "-binary".into(),
            "-inform".into(),
            "DER".into(),
            "-in".into(),
            ssl.inside("manifest.cms"),
            "-out".into(),
            ssl.inside("manifest.out"),
        ]
    };
    let args = verify(&keyring);
    ssl.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read(ssl.host("manifest.out")).unwrap(), b"[update]\ncompatible=wendyos-test\n");
    let args = verify(&device_ca);
    ssl.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // Refusals reach the CLI with their reason, and nothing is written.
    ssl.ok(&[
        "genpkey",
        "-quiet",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &ssl.inside("ec.key"),
    ]);
    ssl.ok(&["req", "-new", "-key", &ssl.inside("ec.key"), "-subj", "/CN=ec", "-out", &ssl.inside("ec.csr")]);
    let refused_out = ssl.host("refused.pem");
    let ec_csr = ssl.host("ec.csr");
    let err = admin_fails(
        &server,
        &["codesign", "issue", "--csr", ec_csr.to_str().unwrap(), "--out", refused_out.to_str().unwrap()],
    );
    assert!(err.contains("must be ML-DSA-65"), "{err}");
    let err = admin_fails(
        &server,
        &[
            "codesign",
            "issue",
            "--csr",
            csr.to_str().unwrap(),
            "--out",
            refused_out.to_str().unwrap(),
            "--validity-days",
            "3650",
        ],
    );
    assert!(err.contains("1 to 1825 days"), "{err}");
    std::fs::write(ssl.host("junk.csr"), "not a CSR").unwrap();
    let junk = ssl.host("junk.csr");
    let err = admin_fails(
        &server,
        &["codesign", "issue", "--csr", junk.to_str().unwrap(), "--out", refused_out.to_str().unwrap()],
    );
    assert!(err.contains("invalid CSR"), "{err}");
    assert!(!refused_out.exists());

    // Revocation: the signer is listed in the code-signing CA's CRL, which
    // OpenSSL checks with -crl_check.
    let serial = ssl.ok(&["x509", "-in", &signer, "-noout", "-serial"]);
    let serial = serial.trim().strip_prefix("serial=").expect("openssl prints serial=").to_ascii_uppercase();
    let listed = server.admin(&["cert", "list"]);
    let signer_id = listed
        .lines()
        .find(|l| l.contains(&format!("serial {serial} ")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("cert list does not name the signer {serial}:\n{listed}"))
        .to_owned();
    server.admin(&["cert", "revoke", &signer_id, "--reason", "keyCompromise"]);
    server.admin(&[
        "codesign",
        "ca",
        "--out",
        ssl.host("keyring2.pem").to_str().unwrap(),
        "--crl-out",
        ssl.host("codesign.crl").to_str().unwrap(),
    ]);
    let crl = ssl.inside("codesign.crl");
    ssl.ok(&["crl", "-in", &crl, "-CAfile", &keyring, "-noout"]);
    let err =
        ssl.fails(&["verify", "-purpose", "codesign", "-crl_check", "-CAfile", &keyring, "-CRLfile", &crl, &signer]);
    assert!(err.contains("revoked"), "{err}");
}
