//! Acceptance 4: an operator-provisioned credential decrypts with its
//! passphrase, and the key's public half is byte-identical to the SPKI
//! pki-core stored; neither the key nor the passphrase is persisted.

mod common;

use std::io::Read;

use age::secrecy::SecretString;
use common::*;
use wendy_identity::key::PrivateKey;
use wendy_identity::verify::CertificateInfo;

#[test]
fn provisioned_credential_round_trip() {
    let server = Server::start(&[]);
    let out = server.dir.path().join("cred");
    let passphrase = server
        .admin(&["credential", "provision", "--role", "Member", "--name", "kiosk-7", "--out", out.to_str().unwrap()])
        .trim()
        .to_owned();
    assert_eq!(passphrase.split('-').count(), 4);

    // Standard age v1 scrypt file, armored.
    let file = std::fs::read(out.join("key.age")).unwrap();
    assert!(file.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(&file[..])).unwrap();
    assert!(decryptor.is_scrypt());
    let identity = age::scrypt::Identity::new(SecretString::from(passphrase.clone()));
    let mut pkcs8 = String::new();
    decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).unwrap().read_to_string(&mut pkcs8).unwrap();
    let key = PrivateKey::from_pem(&pkcs8).unwrap();

    // The stored certificate's SPKI is the key's public half, byte for byte.
    let db = server.data_dir().join(pkicore::DATABASE_NAME);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String =
        conn.query_row("SELECT certificate_pem FROM certificates WHERE user_id = 'kiosk-7'", [], |r| r.get(0)).unwrap();
    let stored_info = CertificateInfo::from_pem(&stored).unwrap();
    assert_eq!(stored_info.public_key_der, key.public_key_der());
    assert_eq!(stored_info.role, Some(wendy_identity::role::Role::Member));
    let written = CertificateInfo::from_pem(&std::fs::read_to_string(out.join("cert.pem")).unwrap()).unwrap();
    assert_eq!(written.public_key_der, key.public_key_der());
    drop(conn);

    // Nothing in the data directory holds the private key or passphrase.
    for entry in walk(&server.data_dir()) {
        assert!(!file_contains(&entry, b"PRIVATE KEY") || entry.starts_with(server.data_dir().join("ca")), "{entry:?}");
        assert!(!file_contains(&entry, passphrase.as_bytes()), "{entry:?}");
        assert!(!file_contains(&entry, pkcs8.trim().lines().nth(1).unwrap().as_bytes()), "{entry:?}");
    }

    // Device credentials too.
    let out2 = server.dir.path().join("cred2");
    let pass2 = server
        .admin(&["credential", "provision", "--role", "Admin", "--device", "42", "--out", out2.to_str().unwrap()])
        .trim()
        .to_owned();
    assert_ne!(pass2, passphrase);
    let info = CertificateInfo::from_pem(&std::fs::read_to_string(out2.join("cert.pem")).unwrap()).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("sh/wendy/1/42"));
    let wrong = age::scrypt::Identity::new(SecretString::from("wrong-pass-phrase-here".to_owned()));
    let file2 = std::fs::read(out2.join("key.age")).unwrap();
    let d2 = age::Decryptor::new(age::armor::ArmoredReader::new(&file2[..])).unwrap();
    assert!(d2.decrypt(std::iter::once(&wrong as &dyn age::Identity)).is_err());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Runs the admin CLI and returns (success, stderr).
fn admin_result(server: &Server, args: &[&str]) -> (bool, String) {
    let out =
        std::process::Command::new(binary()).arg("--data-dir").arg(server.data_dir()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Issue 11, acceptance 5: an explicit asset id is reserved (no token ever
/// gets it), a second identity for it is refused, and replacing it revokes
/// the old certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_asset_id_is_reserved_and_replacing_it_revokes_the_old_identity() {
    let server = Server::start(&[]);
    let out = |n: &str| server.dir.path().join(n).to_str().unwrap().to_owned();
    let provision = |dir: &str, asset: &str, replace: bool| {
        let mut args = vec!["credential", "provision", "--role", "Admin", "--device", asset, "--out", dir];
        if replace {
            args.push("--replace");
        }
        admin_result(&server, &args)
    };
    assert!(provision(&out("a"), "77", false).0);

    let mut anon = server.client(None).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let (_, asset) = asset_token(&mut anon, 0).await;
        assert!(asset != 77 && seen.insert(asset), "token got asset {asset} twice or the reserved 77");
    }

    // A second identity for 77 is refused, naming the way out.
    let (ok, err) = provision(&out("b"), "77", false);
    assert!(!ok && err.contains("asset 77") && err.contains("--replace"), "{err}");
    // So is an asset with an unused token.
    let (_, pending) = asset_token(&mut anon, 0).await;
    let (ok, err) = provision(&out("c"), &pending.to_string(), false);
    assert!(!ok && err.contains("1 unused enrolment token"), "{err}");

    // Replacing revokes the old certificate and the new one is active.
    let (ok, err) = provision(&out("d"), "77", true);
    assert!(ok, "{err}");
    let conn = rusqlite::Connection::open(server.data_dir().join(pkicore::DATABASE_NAME)).unwrap();
    let statuses: Vec<(String, i32)> = conn
        .prepare("SELECT status, revocation_reason FROM certificates WHERE kind = 'device' AND asset_id = 77 ORDER BY number")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(statuses, vec![("revoked".to_owned(), 4), ("active".to_owned(), 0)]);
}
