//! A TLS hop for clients that cannot do our TLS (ML-DSA certificates,
//! X25519MLKEM768), such as Python grpcio on BoringSSL: `socat` from the
//! OpenSSL 3.5 trixie chroot (`scripts/setup`, decision 0005) listens for
//! plaintext h2c on a free loopback port inside the test's namespace and
//! forwards every connection over TLS 1.3 to the server, verifying it against
//! a CA file and optionally presenting a client certificate.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// How long socat may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The OpenSSL 3.5 chroot: `$WENDY_OPENSSL_ROOT`, else
/// `<wendy cache>/openssl35-root`.
pub fn openssl_root() -> PathBuf {
    std::env::var_os("WENDY_OPENSSL_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::wendy_cache().join("openssl35-root"))
}

/// The chroot if it has `socat`; else why not.
pub fn socat_root() -> Result<PathBuf, String> {
    let root = openssl_root();
    if root.join("usr/bin/socat").is_file() && root.join("usr/bin/openssl").is_file() {
        Ok(root)
    } else {
        Err(format!("no socat/openssl in the OpenSSL 3.5 chroot {} (run scripts/setup)", root.display()))
    }
}

/// How the hop checks the server's certificate name. The chain is always
/// verified against the CA file (`verify=1`).
#[derive(Clone, Debug)]
pub enum PeerName {
    /// A host name: sent as SNI, and a DNS SAN (or the subject CN) must
    /// equal it. For pki-core: [`wendy_identity::PKICORE_SERVER_NAME`].
    Host(String),
    /// No SNI; the subject CN must equal this exactly. For devices, whose
    /// certificates name the asset (`sh/wendy/<org>/<asset>`), not a host
    /// (decision 0004).
    CommonName(String),
}

/// A client certificate for the hop to present.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// Leaf first, then the chain (PEM).
    pub chain_pem: String,
    /// The private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// A running hop; socat (and its per-connection children) are killed on drop.
pub struct TlsHop {
    child: Child,
    /// Where plaintext h2c clients connect (inside the namespace).
    pub listen: SocketAddr,
    /// socat's log (`-d -d`).
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsHop {
    /// Starts `socat` inside `ns`, forwarding a free port on 127.0.0.1 to
    /// `upstream` over TLS; `log` receives socat's notices. Panics if the
    /// chroot lacks socat (check [`socat_root`] first) or socat does not listen.
    pub fn start(
        ns: &Netns,
        upstream: SocketAddr,
        ca_pem: &str,
        peer: &PeerName,
        client: Option<&ClientCert>,
        log: &Path,
    ) -> Self {
        let root = socat_root().unwrap_or_else(|e| panic!("{e}"));
        let dir =
            tempfile::Builder::new().prefix("tlshop-").tempdir_in(root.join("tmp")).expect("tempdir in the chroot");
        let inside = |name: &str, contents: &str| {
            std::fs::write(dir.path().join(name), contents).expect("write hop file");
            format!("/{}/{name}", dir.path().strip_prefix(&root).expect("inside root").display())
        };
        let mut target = format!(
            "OPENSSL:{}:{},cafile={},verify=1,min-version=TLS1.3",
            upstream.ip(),
            upstream.port(),
            inside("ca.pem", ca_pem)
        );
        match peer {
            PeerName::Host(name) => target.push_str(&format!(",commonname={name},snihost={name}")),
            PeerName::CommonName(cn) => target.push_str(&format!(",commonname={cn},no-sni=1")),
        }
        if let Some(c) = client {
            let cert = inside("client-chain.pem", &c.chain_pem);
            let key = inside("client-key.pem", &c.key_pem);
            target.push_str(&format!(",cert={cert},key={key}"));
        }
        // A port that was free inside the namespace a moment ago.
        let port = ns.bind(SocketAddr::from(([127, 0, 0, 1], 0))).local_addr().expect("local addr").port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("hop log");
        let child = ns
            .command("chroot")
            .arg(&root)
            .args(["socat", "-d", "-d"])
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .process_group(0)
            .spawn()
            .expect("spawn socat in the OpenSSL chroot");
        let mut me = Self { child, listen, log: log.to_path_buf(), _dir: dir };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while !me.listening() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("socat exited ({status}) before listening on {listen}; log:\n{}", me.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "socat does not listen on {listen} after {LISTEN_TIMEOUT:?}; log:\n{}",
                me.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// Whether socat listens: its namespace's `/proc/<pid>/net/tcp` has a
    /// LISTEN socket on our port (no probe connection, which would make
    /// socat dial the server).
    fn listening(&self) -> bool {
        let want = format!("0100007F:{:04X}", self.listen.port());
        std::fs::read_to_string(format!("/proc/{}/net/tcp", self.child.id())).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
        })
    }

    /// Everything socat logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsHop {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group we created for socat.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
